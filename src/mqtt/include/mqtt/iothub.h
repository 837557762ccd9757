/* iothub.h — IoT Hub's MQTT conventions as unmodified module SDKs speak them: CONNECT user name,
 * topic classification, property bags, topic builders. README.md lists what we accept and emit. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"
#include "mqtt/codec.h"

#define IOTHUB_USERNAME_PARAMS_MAX 16 /* query parameters in a CONNECT user name */
#define IOTHUB_APP_PROPS_MAX 64       /* application properties in one property bag */

struct iothub_kv {
    struct mqtt_str key;
    struct mqtt_str value;
};

/* ---- CONNECT user name ---- */

/* "<host>/<deviceId>/<moduleId>/?api-version=<v>&DeviceClientType=<t>" or the device form
 * "<host>/<deviceId>/?api-version=...". Spans point into the user name, query values still
 * percent-encoded as sent (decode with lstr_url_decode() where a value is used). */
struct iothub_username {
    struct mqtt_str host;
    struct mqtt_str device_id;
    struct mqtt_str module_id; /* len 0: a device identity */
    struct mqtt_str api_version;
    struct iothub_kv params[IOTHUB_USERNAME_PARAMS_MAX]; /* all of them, api-version included */
    size_t n_params;
};

/* -EINVAL with "user name: ..." when the shape is wrong or api-version is missing; -E2BIG past
 * IOTHUB_USERNAME_PARAMS_MAX parameters. */
int iothub_username_parse(const char *s, size_t n, struct iothub_username *ret, struct lerr *e);
/* The (last) value of query parameter key, as sent. */
bool iothub_username_param(const struct iothub_username *u, const char *key,
                           struct mqtt_str *ret_value);
/* What a module client sends; client_type is percent-encoded here. */
int iothub_username_build(struct lbuf *b, struct mqtt_str host, struct mqtt_str device_id,
                          struct mqtt_str module_id, struct mqtt_str api_version,
                          struct mqtt_str client_type);

/* ---- topics ---- */

enum iothub_topic_kind {
    IOTHUB_TOPIC_UNKNOWN = 0,
    /* published by clients */
    IOTHUB_TOPIC_DEVICE_EVENTS, /* devices/<d>/messages/events/<bag> */
    IOTHUB_TOPIC_MODULE_EVENTS, /* devices/<d>/modules/<m>/messages/events/<bag> */
    IOTHUB_TOPIC_TWIN_GET,      /* $iothub/twin/GET/?$rid=<rid> */
    IOTHUB_TOPIC_TWIN_REPORTED, /* $iothub/twin/PATCH/properties/reported/?$rid=<rid>[&$version=] */
    IOTHUB_TOPIC_METHOD_RESPONSE, /* $iothub/methods/res/<status>/?$rid=<rid> */
    /* published by the hub */
    IOTHUB_TOPIC_MODULE_INPUT,   /* devices/<d>/modules/<m>/inputs/<input>/<bag> */
    IOTHUB_TOPIC_TWIN_RESPONSE,  /* $iothub/twin/res/<status>/?$rid=<rid>[&$version=<v>] */
    IOTHUB_TOPIC_TWIN_DESIRED,   /* $iothub/twin/PATCH/properties/desired/?$version=<v> */
    IOTHUB_TOPIC_METHOD_REQUEST, /* $iothub/methods/POST/<method>/?$rid=<rid> */
    IOTHUB_TOPIC_DEVICEBOUND,    /* devices/<d>/messages/devicebound/<bag>: cloud-to-device */
};

struct iothub_topic {
    enum iothub_topic_kind kind;
    struct mqtt_str device_id; /* events, input, devicebound */
    struct mqtt_str module_id; /* module events, input */
    struct mqtt_str input;     /* input */
    struct mqtt_str method;    /* method request */
    struct mqtt_str propbag;   /* events, input, devicebound: still encoded, no trailing '/' */
    struct mqtt_str rid;       /* request id, as sent (echo it verbatim) */
    int status;                /* twin/method responses */
    bool has_version;
    uint64_t version; /* $version */
};

/* Classify a topic name. Topics of no known shape are IOTHUB_TOPIC_UNKNOWN (return 0); a known
 * shape with bad parts ("$iothub/twin/GET: missing $rid", a non-numeric status or $version)
 * is -EINVAL. Spans point into t. */
int iothub_topic_parse(const char *t, size_t n, struct iothub_topic *ret, struct lerr *e);
const char *iothub_topic_kind_name(enum iothub_topic_kind kind);

/* ---- property bags ---- */

/* System properties, by their wire keys ("$.mid"; sent as "%24.mid"). */
enum iothub_sysprop {
    IOTHUB_PROP_MESSAGE_ID,           /* $.mid */
    IOTHUB_PROP_CORRELATION_ID,       /* $.cid */
    IOTHUB_PROP_USER_ID,              /* $.uid */
    IOTHUB_PROP_TO,                   /* $.to */
    IOTHUB_PROP_EXPIRY_TIME_UTC,      /* $.exp */
    IOTHUB_PROP_CONTENT_TYPE,         /* $.ct */
    IOTHUB_PROP_CONTENT_ENCODING,     /* $.ce */
    IOTHUB_PROP_OUTPUT_NAME,          /* $.on */
    IOTHUB_PROP_CONNECTION_DEVICE_ID, /* $.cdid */
    IOTHUB_PROP_CONNECTION_MODULE_ID, /* $.cmid */
    IOTHUB_PROP_INTERFACE_ID,         /* $.ifid */
    IOTHUB_PROP_CREATION_TIME_UTC,    /* $.ctime */
    IOTHUB_PROP_COMPONENT_NAME,       /* $.sub */
    IOTHUB_PROP_MESSAGE_SCHEMA,       /* $.schema */
    IOTHUB_PROP_DIAG_ID,              /* $.diagid */
    IOTHUB_PROP_DIAG_CONTEXT,         /* $.diagctx */
    IOTHUB_PROP_COUNT
};

/* "$.mid", ... */
const char *iothub_sysprop_key(enum iothub_sysprop p);

struct iothub_props {
    struct mqtt_str sys[IOTHUB_PROP_COUNT]; /* ptr NULL: absent */
    struct iothub_kv app[IOTHUB_APP_PROPS_MAX];
    size_t n_app;
};

/* Parse "k=v&k2=v2" (no leading '?'). Keys and values are percent-decoded into scratch (which must
 * hold at least n bytes; decoding never grows) and *ret points there. Rules: empty pairs are
 * skipped; "k" alone has an empty value; a '%' not followed by two hex digits is kept literally
 * and '+' stays '+'; decoded keys and values must be UTF-8 without U+0000; an empty key is an
 * error; a repeated key keeps its last value (as sdk-c's and the .NET SDK's maps do). Keys of the
 * sysprop table become system properties, every other key an application property.
 * -EINVAL/-EILSEQ with "property bag: ...", -E2BIG past 65535 bytes or IOTHUB_APP_PROPS_MAX. */
int iothub_props_parse(const char *bag, size_t n, char *scratch, size_t scratch_size,
                       struct iothub_props *ret, struct lerr *e);

/* Append the bag: system properties first (keys "%24.mid", ...), then application properties;
 * everything but [A-Za-z0-9._-] percent-encoded, which every SDK decoder accepts (sdk-c's
 * URL_Decode rejects anything else raw) and keeps '/', '&', '=', '+', '#' out of the topic. */
int iothub_props_encode(struct lbuf *b, const struct iothub_props *p);

/* Topic builders append one topic name to b; on failure b is unchanged. Ids must be non-empty and
 * free of '/', '+', '#'; rid also of '&'; the result must be a valid topic name (-EINVAL) of at
 * most 65535 bytes (-E2BIG). */

/* Hub → module: devices/<d>/modules/<m>/inputs/<input>/<bag>. The bag never carries $.on (the
 * receiver has no use for the sender's output name; IoT Edge drops it too). */
int iothub_topic_module_input(struct lbuf *b, struct mqtt_str device_id, struct mqtt_str module_id,
                              struct mqtt_str input, const struct iothub_props *props);
/* Hub → leaf device (a cloud-to-device message): devices/<d>/messages/devicebound/<bag>, the bag
 * with every system and application property as IoT Hub sends them. */
int iothub_topic_devicebound(struct lbuf *b, struct mqtt_str device_id,
                             const struct iothub_props *props);
/* $iothub/twin/res/<status>/?$rid=<rid>[&$version=<v>] (has_version selects the suffix). */
int iothub_topic_twin_response(struct lbuf *b, int status, struct mqtt_str rid, bool has_version,
                               uint64_t version);
/* $iothub/twin/PATCH/properties/desired/?$version=<v> */
int iothub_topic_twin_desired(struct lbuf *b, uint64_t version);
/* $iothub/methods/POST/<method>/?$rid=<rid> */
int iothub_topic_method_request(struct lbuf *b, struct mqtt_str method, struct mqtt_str rid);

/* Module → hub: devices/<d>/modules/<m>/messages/events/<bag> (device form when module_id is
 * empty); props may be NULL. */
int iothub_topic_events(struct lbuf *b, struct mqtt_str device_id, struct mqtt_str module_id,
                        const struct iothub_props *props);
/* $iothub/twin/GET/?$rid=<rid> */
int iothub_topic_twin_get(struct lbuf *b, struct mqtt_str rid);
/* $iothub/twin/PATCH/properties/reported/?$rid=<rid> */
int iothub_topic_twin_reported(struct lbuf *b, struct mqtt_str rid);
/* $iothub/methods/res/<status>/?$rid=<rid> */
int iothub_topic_method_response(struct lbuf *b, int status, struct mqtt_str rid);
