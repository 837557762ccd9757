/* amqp_map.c — link addresses, CBS put-token, message ids and messages between AMQP (Qpid Proton's
 * codec) and the hub's types (amqp_map.h). No I/O. */
#include "amqp_map.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/str.h"
#include "base/timeutil.h"

static bool take(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || strncasecmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

/* One path segment: non-empty, up to the next '/' or the end. */
static bool segment(const char **p, const char *end, struct mqtt_str *ret)
{
    const char *s = *p;
    while (*p < end && **p != '/')
        (*p)++;
    if (*p == s)
        return false;
    *ret = (struct mqtt_str){s, (size_t)(*p - s)};
    return true;
}

int amqp_addr_parse(const char *s, size_t n, struct amqp_addr *ret)
{
    *ret = (struct amqp_addr){AMQP_ADDR_UNKNOWN, {NULL, 0}, {NULL, 0}};
    if (!s)
        return 0;
    const char *q = memchr(s, '?', n);
    const char *end = q ? q : s + n;
    const char *p = s;
    if ((size_t)(end - p) == 4 && memcmp(p, "$cbs", 4) == 0) {
        ret->kind = AMQP_ADDR_CBS;
        return 0;
    }
    /* An absolute address names the host first: amqps://<host>/devices/... */
    if (take(&p, end, "amqps://") || take(&p, end, "amqp://") || take(&p, end, "wss://")) {
        while (p < end && *p != '/')
            p++;
    }
    struct amqp_addr a = {AMQP_ADDR_UNKNOWN, {NULL, 0}, {NULL, 0}};
    if (!take(&p, end, "/devices/") || !segment(&p, end, &a.device))
        return 0;
    if (take(&p, end, "/modules/") && !segment(&p, end, &a.module))
        return 0;
    enum amqp_addr_kind kind;
    if (take(&p, end, "/messages/events"))
        kind = AMQP_ADDR_EVENTS;
    else if (take(&p, end, "/messages/devicebound"))
        kind = AMQP_ADDR_DEVICEBOUND;
    else if (take(&p, end, "/methods/devicebound"))
        kind = AMQP_ADDR_METHODS;
    else if (take(&p, end, "/twin"))
        kind = AMQP_ADDR_TWIN;
    else
        return 0;
    take(&p, end, "/");
    if (p != end)
        return 0;
    if (kind == AMQP_ADDR_DEVICEBOUND && a.module.len)
        return 0; /* modules have inputs, not cloud-to-device messages */
    a.kind = kind;
    *ret = a;
    return 0;
}

int amqp_audience_parse(const char *s, size_t n, char *scratch, size_t scratch_size,
                        struct amqp_addr *ret)
{
    if (!s || scratch_size < n + 2)
        return -EINVAL;
    /* Percent-decoding never grows. */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = lstr_hexval(s[i + 1])) >= 0 &&
            (lo = lstr_hexval(s[i + 2])) >= 0) {
            scratch[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            scratch[k++] = s[i];
        }
        if (scratch[k - 1] == '\0')
            return -EINVAL;
    }
    scratch[k] = '\0';
    const char *p = scratch, *end = scratch + k;
    /* <host>/devices/<d>[/modules/<m>] */
    while (p < end && *p != '/')
        p++;
    if (p == scratch)
        return -EINVAL;
    struct amqp_addr a = {AMQP_ADDR_UNKNOWN, {NULL, 0}, {NULL, 0}};
    if (!take(&p, end, "/devices/") || !segment(&p, end, &a.device))
        return -EINVAL;
    if (take(&p, end, "/modules/") && !segment(&p, end, &a.module))
        return -EINVAL;
    if (p != end)
        return -EINVAL;
    *ret = a;
    return 0;
}

/* ------------------------------------------------------------------ put-token */

static bool body_bytes(pn_message_t *msg, struct mqtt_str *ret);

/* The value of key in the map d (application properties, annotations): its cursor is left on
 * it inside the map (the caller exits), or false. */
static bool map_find(pn_data_t *d, const char *key)
{
    if (!d)
        return false;
    pn_data_rewind(d);
    if (!pn_data_next(d) || pn_data_type(d) != PN_MAP)
        return false;
    size_t n = pn_data_get_map(d);
    pn_data_enter(d);
    for (size_t i = 0; i < n; i += 2) {
        if (!pn_data_next(d))
            break;
        pn_type_t kt = pn_data_type(d);
        pn_bytes_t k = kt == PN_STRING   ? pn_data_get_string(d)
                       : kt == PN_SYMBOL ? pn_data_get_symbol(d)
                                         : pn_bytes(0, NULL);
        if (!pn_data_next(d))
            break;
        if (k.start && k.size == strlen(key) && strncasecmp(k.start, key, k.size) == 0)
            return true;
    }
    pn_data_exit(d);
    return false;
}

static struct mqtt_str map_string(pn_data_t *d, const char *key)
{
    struct mqtt_str r = {NULL, 0};
    if (!map_find(d, key))
        return r;
    pn_type_t vt = pn_data_type(d);
    pn_bytes_t v = vt == PN_STRING   ? pn_data_get_string(d)
                   : vt == PN_SYMBOL ? pn_data_get_symbol(d)
                                     : pn_bytes(0, NULL);
    if (v.start)
        r = (struct mqtt_str){v.start, v.size};
    pn_data_exit(d);
    return r;
}

static bool map_int(pn_data_t *d, const char *key, long long *ret)
{
    if (!map_find(d, key))
        return false;
    bool ok = true;
    switch (pn_data_type(d)) {
    case PN_INT:
        *ret = pn_data_get_int(d);
        break;
    case PN_LONG:
        *ret = pn_data_get_long(d);
        break;
    case PN_UINT:
        *ret = pn_data_get_uint(d);
        break;
    case PN_SHORT:
        *ret = pn_data_get_short(d);
        break;
    case PN_USHORT:
        *ret = pn_data_get_ushort(d);
        break;
    case PN_STRING: {
        pn_bytes_t v = pn_data_get_string(d);
        char buf[24];
        ok = v.size > 0 && v.size < sizeof(buf);
        if (ok) {
            memcpy(buf, v.start, v.size);
            buf[v.size] = '\0';
            ok = lstr_to_i64(buf, ret) == 0;
        }
        break;
    }
    default:
        ok = false;
    }
    pn_data_exit(d);
    return ok;
}

int amqp_twin_request_parse(pn_message_t *msg, struct amqp_twin_request *ret)
{
    struct mqtt_str op = map_string(pn_message_annotations(msg), "operation");
    if (!op.ptr)
        return -EINVAL;
    struct mqtt_str res = map_string(pn_message_annotations(msg), "resource");
    if (mqtt_str_eq(op, "GET"))
        ret->op = AMQP_TWIN_GET;
    else if (mqtt_str_eq(op, "PATCH") && mqtt_str_eq(res, "/properties/reported"))
        ret->op = AMQP_TWIN_PATCH_REPORTED;
    else if (mqtt_str_eq(op, "PUT") && mqtt_str_eq(res, "/notifications/twin/properties/desired"))
        ret->op = AMQP_TWIN_SUBSCRIBE_DESIRED;
    else if (mqtt_str_eq(op, "DELETE") &&
             mqtt_str_eq(res, "/notifications/twin/properties/desired"))
        ret->op = AMQP_TWIN_UNSUBSCRIBE_DESIRED;
    else
        return -EINVAL;
    return 0;
}

int amqp_method_status(pn_message_t *msg, int *ret)
{
    long long v;
    if (!map_int(pn_message_properties(msg), "IoThub-status", &v) || v < 0 || v > 999)
        return -EINVAL;
    *ret = (int)v;
    return 0;
}

int amqp_message_body(pn_message_t *msg, struct mqtt_str *ret)
{
    return body_bytes(msg, ret) ? 0 : -EBADMSG;
}

/* The string (or symbol) value of application property key, or {NULL, 0}. */
static struct mqtt_str app_string(pn_message_t *msg, const char *key)
{
    pn_data_t *d = pn_message_properties(msg);
    struct mqtt_str none = {NULL, 0};
    if (!d)
        return none;
    pn_data_rewind(d);
    if (!pn_data_next(d) || pn_data_type(d) != PN_MAP)
        return none;
    size_t n = pn_data_get_map(d);
    pn_data_enter(d);
    struct mqtt_str r = none;
    for (size_t i = 0; i < n; i += 2) {
        if (!pn_data_next(d))
            break;
        pn_type_t kt = pn_data_type(d);
        pn_bytes_t k = kt == PN_STRING   ? pn_data_get_string(d)
                       : kt == PN_SYMBOL ? pn_data_get_symbol(d)
                                         : pn_bytes(0, NULL);
        if (!pn_data_next(d))
            break;
        if (k.start && k.size == strlen(key) && memcmp(k.start, key, k.size) == 0) {
            pn_type_t vt = pn_data_type(d);
            pn_bytes_t v = vt == PN_STRING   ? pn_data_get_string(d)
                           : vt == PN_SYMBOL ? pn_data_get_symbol(d)
                                             : pn_bytes(0, NULL);
            if (v.start)
                r = (struct mqtt_str){v.start, v.size};
            break;
        }
    }
    pn_data_exit(d);
    return r;
}

/* The body as bytes: a data section, a string or symbol value, or binary. */
static bool body_bytes(pn_message_t *msg, struct mqtt_str *ret)
{
    pn_data_t *b = pn_message_body(msg);
    *ret = (struct mqtt_str){NULL, 0};
    if (!b)
        return true;
    pn_data_rewind(b);
    if (!pn_data_next(b))
        return true; /* no body */
    pn_bytes_t v;
    switch (pn_data_type(b)) {
    case PN_BINARY:
        v = pn_data_get_binary(b);
        break;
    case PN_STRING:
        v = pn_data_get_string(b);
        break;
    case PN_SYMBOL:
        v = pn_data_get_symbol(b);
        break;
    case PN_NULL:
        return true;
    default:
        return false;
    }
    *ret = (struct mqtt_str){v.start, v.size};
    return true;
}

int amqp_put_token_parse(pn_message_t *msg, struct amqp_put_token *ret, struct lerr *err)
{
    struct mqtt_str op = app_string(msg, "operation");
    if (!mqtt_str_eq(op, "put-token"))
        return lerr_set(err, -EINVAL, "$cbs: operation is not put-token");
    struct mqtt_str type = app_string(msg, "type");
    if (!mqtt_str_eq(type, "servicebus.windows.net:sastoken") &&
        !mqtt_str_eq(type, "azure-devices.net:sastoken"))
        return lerr_set(err, -EINVAL, "$cbs: put-token of type %.*s: only SAS tokens",
                        (int)MIN(type.len, (size_t)64), type.ptr ? type.ptr : "(none)");
    struct mqtt_str name = app_string(msg, "name");
    if (!name.ptr || !name.len)
        return lerr_set(err, -EINVAL, "$cbs: put-token without a name (the audience)");
    struct mqtt_str token;
    if (!body_bytes(msg, &token) || !token.len)
        return lerr_set(err, -EINVAL, "$cbs: put-token without a token");
    if (memchr(token.ptr, '\0', token.len))
        return lerr_set(err, -EINVAL, "$cbs: the token is not text");
    *ret = (struct amqp_put_token){name, token};
    return 0;
}

/* ------------------------------------------------------------------ message ids */

static const char hexdig[] = "0123456789abcdef";

static int put_hex(char *out, size_t cap, const char *prefix, const uint8_t *p, size_t n)
{
    size_t pl = strlen(prefix);
    if (pl + 2 * n + 1 > cap)
        return -E2BIG;
    memcpy(out, prefix, pl);
    for (size_t i = 0; i < n; i++) {
        out[pl + 2 * i] = hexdig[p[i] >> 4];
        out[pl + 2 * i + 1] = hexdig[p[i] & 15];
    }
    out[pl + 2 * n] = '\0';
    return (int)(pl + 2 * n);
}

int amqp_rid_from_msgid(pn_msgid_t id, char *out, size_t cap)
{
    int n;
    switch (id.type) {
    case PN_STRING:
        if (id.u.as_bytes.size + 3 > cap)
            return -E2BIG;
        if (memchr(id.u.as_bytes.start, '\0', id.u.as_bytes.size))
            return -EINVAL;
        out[0] = 's';
        out[1] = ':';
        memcpy(out + 2, id.u.as_bytes.start, id.u.as_bytes.size);
        out[2 + id.u.as_bytes.size] = '\0';
        return (int)(2 + id.u.as_bytes.size);
    case PN_UUID:
        return put_hex(out, cap, "u:", (const uint8_t *)id.u.as_uuid.bytes, 16);
    case PN_BINARY:
        return put_hex(out, cap, "b:", (const uint8_t *)id.u.as_bytes.start, id.u.as_bytes.size);
    case PN_ULONG:
        n = snprintf(out, cap, "n:%" PRIu64, id.u.as_ulong);
        return n < 0 || (size_t)n >= cap ? -E2BIG : n;
    default:
        return -EINVAL;
    }
}

static int unhex(const char *s, size_t n, uint8_t *out)
{
    if (n % 2)
        return -EINVAL;
    for (size_t i = 0; i < n; i += 2) {
        int hi = lstr_hexval(s[i]), lo = lstr_hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i / 2] = (uint8_t)(hi * 16 + lo);
    }
    return (int)(n / 2);
}

int amqp_msgid_from_rid(const char *rid, size_t rid_len, char *storage, pn_msgid_t *ret)
{
    if (rid_len < 2 || rid[1] != ':')
        return -EINVAL;
    const char *v = rid + 2;
    size_t vn = rid_len - 2;
    pn_msgid_t id;
    memset(&id, 0, sizeof(id));
    switch (rid[0]) {
    case 's':
        memcpy(storage, v, vn);
        id.type = PN_STRING;
        id.u.as_bytes = pn_bytes(vn, storage);
        break;
    case 'u':
        if (vn != 32 || unhex(v, vn, (uint8_t *)id.u.as_uuid.bytes) != 16)
            return -EINVAL;
        id.type = PN_UUID;
        break;
    case 'b': {
        int n = unhex(v, vn, (uint8_t *)storage);
        if (n < 0)
            return n;
        id.type = PN_BINARY;
        id.u.as_bytes = pn_bytes((size_t)n, storage);
        break;
    }
    case 'n': {
        if (!vn || vn > 20)
            return -EINVAL;
        uint64_t x = 0;
        for (size_t i = 0; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9')
                return -EINVAL;
            uint64_t nx = x * 10 + (uint64_t)(v[i] - '0');
            if (nx / 10 != x)
                return -EINVAL;
            x = nx;
        }
        id.type = PN_ULONG;
        id.u.as_ulong = x;
        break;
    }
    default:
        return -EINVAL;
    }
    *ret = id;
    return 0;
}

int amqp_msgid_string(pn_msgid_t id, char *out, size_t cap)
{
    if (!cap)
        return -E2BIG;
    const uint8_t *u;
    int n;
    switch (id.type) {
    case PN_NULL:
        out[0] = '\0';
        return 0;
    case PN_STRING:
        if (id.u.as_bytes.size + 1 > cap)
            return -E2BIG;
        if (memchr(id.u.as_bytes.start, '\0', id.u.as_bytes.size))
            return -EINVAL;
        memcpy(out, id.u.as_bytes.start, id.u.as_bytes.size);
        out[id.u.as_bytes.size] = '\0';
        return (int)id.u.as_bytes.size;
    case PN_UUID:
        u = (const uint8_t *)id.u.as_uuid.bytes;
        n = snprintf(out, cap,
                     "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                     u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
                     u[13], u[14], u[15]);
        return n < 0 || (size_t)n >= cap ? -E2BIG : n;
    case PN_BINARY:
        return put_hex(out, cap, "", (const uint8_t *)id.u.as_bytes.start, id.u.as_bytes.size);
    case PN_ULONG:
        n = snprintf(out, cap, "%" PRIu64, id.u.as_ulong);
        return n < 0 || (size_t)n >= cap ? -E2BIG : n;
    default:
        return -EINVAL;
    }
}

/* ------------------------------------------------------------------ messages */

#define ID_MAX 256 /* bytes of a message or correlation id as text */

static int keep_str(struct lstrv *keep, const char *p, size_t n, const char **ret)
{
    if (memchr(p, '\0', n))
        return -EBADMSG;
    char *s = lstr_ndup(p, n);
    if (!s || lstrv_push_take(keep, s) < 0)
        return -ENOMEM;
    *ret = keep->v[keep->n - 1];
    return 0;
}

static int keep_id(struct lstrv *keep, pn_msgid_t id, const char **ret)
{
    char buf[ID_MAX * 2 + 8];
    int n = amqp_msgid_string(id, buf, sizeof(buf));
    if (n < 0)
        return -EBADMSG;
    if (n == 0)
        return 0;
    return keep_str(keep, buf, (size_t)n, ret);
}

static int keep_time(struct lstrv *keep, pn_timestamp_t t, const char **ret)
{
    if (t <= 0)
        return 0;
    char buf[LTIME_RFC3339_MAX];
    const char *s = ltime_format_rfc3339((int64_t)t, buf);
    return s ? keep_str(keep, s, strlen(s), ret) : 0;
}

/* The scalar at d's cursor as text into buf; false for a type that has none (lists, maps,
 * binary, described values). */
static bool scalar_text(pn_data_t *d, char *buf, size_t cap, struct mqtt_str *ret)
{
    pn_bytes_t b;
    int n = -1;
    switch (pn_data_type(d)) {
    case PN_STRING:
        b = pn_data_get_string(d);
        *ret = (struct mqtt_str){b.start, b.size};
        return true;
    case PN_SYMBOL:
        b = pn_data_get_symbol(d);
        *ret = (struct mqtt_str){b.start, b.size};
        return true;
    case PN_BOOL:
        n = snprintf(buf, cap, "%s", pn_data_get_bool(d) ? "true" : "false");
        break;
    case PN_UBYTE:
        n = snprintf(buf, cap, "%u", pn_data_get_ubyte(d));
        break;
    case PN_BYTE:
        n = snprintf(buf, cap, "%d", pn_data_get_byte(d));
        break;
    case PN_USHORT:
        n = snprintf(buf, cap, "%u", pn_data_get_ushort(d));
        break;
    case PN_SHORT:
        n = snprintf(buf, cap, "%d", pn_data_get_short(d));
        break;
    case PN_UINT:
        n = snprintf(buf, cap, "%" PRIu32, pn_data_get_uint(d));
        break;
    case PN_INT:
        n = snprintf(buf, cap, "%" PRId32, pn_data_get_int(d));
        break;
    case PN_ULONG:
        n = snprintf(buf, cap, "%" PRIu64, pn_data_get_ulong(d));
        break;
    case PN_LONG:
        n = snprintf(buf, cap, "%" PRId64, pn_data_get_long(d));
        break;
    case PN_FLOAT:
        n = snprintf(buf, cap, "%g", (double)pn_data_get_float(d));
        break;
    case PN_DOUBLE:
        n = snprintf(buf, cap, "%g", pn_data_get_double(d));
        break;
    case PN_TIMESTAMP: {
        char t[LTIME_RFC3339_MAX];
        const char *s = ltime_format_rfc3339((int64_t)pn_data_get_timestamp(d), t);
        n = s ? snprintf(buf, cap, "%s", s) : -1;
        break;
    }
    case PN_UUID: {
        pn_msgid_t id;
        memset(&id, 0, sizeof(id));
        id.type = PN_UUID;
        id.u.as_uuid = pn_data_get_uuid(d);
        n = amqp_msgid_string(id, buf, cap);
        break;
    }
    default:
        return false;
    }
    if (n < 0 || (size_t)n >= cap)
        return false;
    *ret = (struct mqtt_str){buf, (size_t)n};
    return true;
}

/* Message annotations the hub maps to system properties. */
static const struct {
    const char *key;
    int sys;
} annotation_props[] = {
    {"iothub-interface-id", IOTHUB_PROP_INTERFACE_ID},
    {"dt-subject", IOTHUB_PROP_COMPONENT_NAME},
    {"dt-dataschema", IOTHUB_PROP_MESSAGE_SCHEMA},
};

static int map_annotations(pn_message_t *msg, struct hub_message *m, struct lstrv *keep)
{
    pn_data_t *d = pn_message_annotations(msg);
    if (!d)
        return 0;
    pn_data_rewind(d);
    if (!pn_data_next(d) || pn_data_type(d) != PN_MAP)
        return 0;
    size_t n = pn_data_get_map(d);
    pn_data_enter(d);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i += 2) {
        if (!pn_data_next(d))
            break;
        pn_type_t kt = pn_data_type(d);
        pn_bytes_t k = kt == PN_SYMBOL   ? pn_data_get_symbol(d)
                       : kt == PN_STRING ? pn_data_get_string(d)
                                         : pn_bytes(0, NULL);
        if (!pn_data_next(d))
            break;
        char buf[64];
        struct mqtt_str v;
        if (!k.start || !scalar_text(d, buf, sizeof(buf), &v))
            continue;
        for (size_t j = 0; j < ARRAY_SIZE(annotation_props); j++)
            if (k.size == strlen(annotation_props[j].key) &&
                memcmp(k.start, annotation_props[j].key, k.size) == 0 &&
                !m->sys[annotation_props[j].sys])
                r = keep_str(keep, v.ptr, v.len, &m->sys[annotation_props[j].sys]);
    }
    pn_data_exit(d);
    return r;
}

static int map_app_props(pn_message_t *msg, struct hub_message *m, struct lstrv *keep,
                         struct lerr *err)
{
    pn_data_t *d = pn_message_properties(msg);
    if (!d)
        return 0;
    pn_data_rewind(d);
    if (!pn_data_next(d))
        return 0;
    if (pn_data_type(d) != PN_MAP)
        return lerr_set(err, -EBADMSG, "application properties are not a map");
    size_t n = pn_data_get_map(d);
    pn_data_enter(d);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i += 2) {
        if (!pn_data_next(d))
            break;
        pn_type_t kt = pn_data_type(d);
        if (kt != PN_STRING && kt != PN_SYMBOL) {
            r = lerr_set(err, -EBADMSG, "an application property's key is not a string");
            break;
        }
        pn_bytes_t k = kt == PN_STRING ? pn_data_get_string(d) : pn_data_get_symbol(d);
        if (!pn_data_next(d))
            break;
        char buf[64];
        struct mqtt_str v;
        if (!scalar_text(d, buf, sizeof(buf), &v))
            continue; /* lists, maps, binary: IoT Hub's properties are text */
        if (!k.size) {
            r = lerr_set(err, -EBADMSG, "an application property with an empty key");
            break;
        }
        if (k.size == strlen("iothub-outputname") &&
            memcmp(k.start, "iothub-outputname", k.size) == 0) {
            r = keep_str(keep, v.ptr, v.len, &m->sys[IOTHUB_PROP_OUTPUT_NAME]);
            if (r < 0)
                lerr_set(err, r, "the output name is not text");
            continue;
        }
        if (m->n_app >= HUB_MESSAGE_MAX_APP) {
            r = lerr_set(err, -EBADMSG, "more than %d application properties", HUB_MESSAGE_MAX_APP);
            break;
        }
        if ((r = keep_str(keep, k.start, k.size, &m->app_key[m->n_app])) < 0 ||
            (r = keep_str(keep, v.ptr, v.len, &m->app_value[m->n_app])) < 0) {
            lerr_set(err, r, "an application property is not text");
            break;
        }
        m->n_app++;
    }
    pn_data_exit(d);
    return r;
}

int amqp_message_to_hub(pn_message_t *msg, struct hub_message *m, struct lstrv *keep,
                        struct lerr *err)
{
    memset(m, 0, sizeof(*m));
    int r;
    if ((r = keep_id(keep, pn_message_get_id(msg), &m->sys[IOTHUB_PROP_MESSAGE_ID])) < 0 ||
        (r = keep_id(keep, pn_message_get_correlation_id(msg),
                     &m->sys[IOTHUB_PROP_CORRELATION_ID])) < 0)
        return lerr_set(err, r, "a message or correlation id that is not text");
    pn_bytes_t uid = pn_message_get_user_id(msg);
    if (uid.size && keep_str(keep, uid.start, uid.size, &m->sys[IOTHUB_PROP_USER_ID]) < 0)
        return lerr_set(err, -EBADMSG, "a user id that is not text");
    const char *s;
    if ((s = pn_message_get_address(msg)) && *s &&
        keep_str(keep, s, strlen(s), &m->sys[IOTHUB_PROP_TO]) < 0)
        return -ENOMEM;
    if ((s = pn_message_get_content_type(msg)) && *s &&
        keep_str(keep, s, strlen(s), &m->sys[IOTHUB_PROP_CONTENT_TYPE]) < 0)
        return -ENOMEM;
    if ((s = pn_message_get_content_encoding(msg)) && *s &&
        keep_str(keep, s, strlen(s), &m->sys[IOTHUB_PROP_CONTENT_ENCODING]) < 0)
        return -ENOMEM;
    if (keep_time(keep, pn_message_get_expiry_time(msg), &m->sys[IOTHUB_PROP_EXPIRY_TIME_UTC]) <
            0 ||
        keep_time(keep, pn_message_get_creation_time(msg), &m->sys[IOTHUB_PROP_CREATION_TIME_UTC]) <
            0)
        return -ENOMEM;
    if ((r = map_app_props(msg, m, keep, err)) < 0)
        return r;
    if ((r = map_annotations(msg, m, keep)) < 0)
        return lerr_set(err, r, "an annotation that is not text");
    struct mqtt_str body;
    if (!body_bytes(msg, &body))
        return lerr_set(err, -EBADMSG, "the body is neither data nor a string");
    m->body = (const uint8_t *)body.ptr;
    m->body_len = body.len;
    return 0;
}

static void put_sym_str(pn_data_t *d, const char *k, const char *v)
{
    pn_data_put_symbol(d, pn_bytes(strlen(k), k));
    pn_data_put_string(d, pn_bytes(strlen(v), v));
}

int amqp_message_from_hub(const struct hub_message *m, const char *input, pn_message_t *out)
{
    pn_message_clear(out);
    pn_msgid_t id;
    memset(&id, 0, sizeof(id));
    id.type = PN_STRING;
    if (m->sys[IOTHUB_PROP_MESSAGE_ID]) {
        id.u.as_bytes =
            pn_bytes(strlen(m->sys[IOTHUB_PROP_MESSAGE_ID]), m->sys[IOTHUB_PROP_MESSAGE_ID]);
        pn_message_set_id(out, id);
    }
    if (m->sys[IOTHUB_PROP_CORRELATION_ID]) {
        id.u.as_bytes = pn_bytes(strlen(m->sys[IOTHUB_PROP_CORRELATION_ID]),
                                 m->sys[IOTHUB_PROP_CORRELATION_ID]);
        pn_message_set_correlation_id(out, id);
    }
    if (m->sys[IOTHUB_PROP_USER_ID])
        pn_message_set_user_id(
            out, pn_bytes(strlen(m->sys[IOTHUB_PROP_USER_ID]), m->sys[IOTHUB_PROP_USER_ID]));
    if (m->sys[IOTHUB_PROP_TO])
        pn_message_set_address(out, m->sys[IOTHUB_PROP_TO]);
    if (m->sys[IOTHUB_PROP_CONTENT_TYPE])
        pn_message_set_content_type(out, m->sys[IOTHUB_PROP_CONTENT_TYPE]);
    if (m->sys[IOTHUB_PROP_CONTENT_ENCODING])
        pn_message_set_content_encoding(out, m->sys[IOTHUB_PROP_CONTENT_ENCODING]);
    int64_t t;
    if (m->sys[IOTHUB_PROP_EXPIRY_TIME_UTC] &&
        ltime_parse_rfc3339(m->sys[IOTHUB_PROP_EXPIRY_TIME_UTC], &t) == 0)
        pn_message_set_expiry_time(out, t);
    if (m->sys[IOTHUB_PROP_CREATION_TIME_UTC] &&
        ltime_parse_rfc3339(m->sys[IOTHUB_PROP_CREATION_TIME_UTC], &t) == 0)
        pn_message_set_creation_time(out, t);

    pn_data_t *ann = pn_message_annotations(out);
    pn_data_put_map(ann);
    pn_data_enter(ann);
    if (input)
        put_sym_str(ann, "x-opt-input-name", input);
    if (m->sys[IOTHUB_PROP_CONNECTION_DEVICE_ID])
        put_sym_str(ann, "iothub-connection-device-id", m->sys[IOTHUB_PROP_CONNECTION_DEVICE_ID]);
    if (m->sys[IOTHUB_PROP_CONNECTION_MODULE_ID])
        put_sym_str(ann, "iothub-connection-module-id", m->sys[IOTHUB_PROP_CONNECTION_MODULE_ID]);
    if (m->sys[HUB_SYS_CONNECTION_AUTH_METHOD])
        put_sym_str(ann, "iothub-connection-auth-method", m->sys[HUB_SYS_CONNECTION_AUTH_METHOD]);
    if (m->sys[IOTHUB_PROP_INTERFACE_ID])
        put_sym_str(ann, "iothub-interface-id", m->sys[IOTHUB_PROP_INTERFACE_ID]);
    if (m->sys[IOTHUB_PROP_COMPONENT_NAME])
        put_sym_str(ann, "dt-subject", m->sys[IOTHUB_PROP_COMPONENT_NAME]);
    if (m->sys[IOTHUB_PROP_MESSAGE_SCHEMA])
        put_sym_str(ann, "dt-dataschema", m->sys[IOTHUB_PROP_MESSAGE_SCHEMA]);
    if (m->enqueued_ms > 0) {
        pn_data_put_symbol(ann, pn_bytes(strlen("iothub-enqueuedtime"), "iothub-enqueuedtime"));
        pn_data_put_timestamp(ann, m->enqueued_ms);
    }
    pn_data_exit(ann);

    pn_data_t *props = pn_message_properties(out);
    pn_data_put_map(props);
    pn_data_enter(props);
    for (size_t i = 0; i < m->n_app; i++) {
        pn_data_put_string(props, pn_bytes(strlen(m->app_key[i]), m->app_key[i]));
        pn_data_put_string(props, pn_bytes(strlen(m->app_value[i]), m->app_value[i]));
    }
    pn_data_exit(props);

    pn_data_t *body = pn_message_body(out);
    pn_message_set_inferred(out, true); /* a data section */
    return pn_data_put_binary(body, pn_bytes(m->body_len, (const char *)m->body));
}
