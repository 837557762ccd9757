/* config.h — ledge's configuration file (/etc/ledge/config.yaml): the typed settings with their
 * defaults, a YAML loader that validates every key (each error names file, line and key), and a
 * JSON view for `ledge system info`. Every key is documented in docs/configuration.md. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/str.h"

#define CONFIG_DEFAULT_PATH "/etc/ledge/config.yaml"

/* Bounds on what a config file can make the loader build. */
#define CONFIG_MAX_FILE_SIZE (1024 * 1024) /* bytes of YAML */
#define CONFIG_MAX_DEPTH 16                /* nested mappings/sequences */
#define CONFIG_MAX_NODES 20000             /* scalars + mappings + sequences */
#define CONFIG_MAX_LIST 256                /* items in one list setting */
#define CONFIG_MAX_ERRORS 100              /* messages before the loader gives up */

enum config_log_level {
    CONFIG_LOG_ERROR,
    CONFIG_LOG_WARN,
    CONFIG_LOG_INFO,
    CONFIG_LOG_DEBUG,
    CONFIG_LOG_TRACE,
};

/* Where the device's identity comes from. Exactly one source may be configured. */
enum config_identity {
    /* None configured: a local-only device. ledged generates a device key on first start and
     * keeps it under state_dir; device.key stays NULL here. */
    CONFIG_IDENTITY_GENERATED,
    CONFIG_IDENTITY_KEY,               /* device.key (with device.id and device.iothub_hostname) */
    CONFIG_IDENTITY_CONNECTION_STRING, /* parsed into device.id, .iothub_hostname and .key */
    CONFIG_IDENTITY_X509,              /* device.x509.cert_file + key_file */
};

enum config_fsync {
    CONFIG_FSYNC_ALWAYS,   /* fsync before every acknowledgement */
    CONFIG_FSYNC_INTERVAL, /* group commit: at most every hub.fsync_interval */
};

enum config_protocol {
    CONFIG_PROTOCOL_MQTT,
};

/* upstream.iothub: is the upstream IoT Hub (per-identity sessions, twins, deployments)? */
enum config_iothub {
    CONFIG_IOTHUB_AUTO, /* yes when upstream.host is device.iothub_hostname */
    CONFIG_IOTHUB_TRUE,
    CONFIG_IOTHUB_FALSE, /* a plain MQTT broker: telemetry only */
};

/* certificates.renew_before: either a percentage of the certificate's lifetime or a fixed
 * duration before expiry; exactly one of the two is non-zero. */
struct config_renew {
    int percent; /* 1..99, or 0 */
    int64_t ms;  /* > 0, or 0 */
};

struct config_device {
    char *id;
    char *iothub_hostname; /* always contains a dot (the Azure C SDK requires one) */
    char *gateway_hostname;
    enum config_identity identity;
    /* Secret: base64 symmetric key for KEY and CONNECTION_STRING identities, else NULL.
     * Never printed; wiped by config_free(). */
    char *key;
    struct {
        char *cert_file;
        char *key_file;
    } x509;
};

struct config_engine {
    char *type; /* the engine backend that runs container modules: "docker", "oci" */
    char *uri;  /* unix:///path or http://host:port */
    char *network;
    char *runtime;             /* oci: "auto", "crun", "runc" or an absolute path */
    char *subnet;              /* oci: the module network's IPv4 CIDR */
    char *cni_path;            /* oci: the CNI plugins' directory */
    bool userns;               /* oci: containers in a user namespace */
    int64_t image_gc_after_ms; /* oci: images no container uses go after this long; 0 never */
    uint64_t log_max_size;
    int log_max_files;
    int64_t stop_timeout_ms;
    int64_t pull_timeout_ms;
};

struct config_agent {
    int64_t backoff_base_ms;
    int64_t backoff_max_ms;
    int max_restarts; /* 0 = no limit */
    int64_t reset_after_ms;
    char *hub_program;
    int64_t hung_start_timeout_ms;
    int64_t deploy_timeout_ms; /* atomic deployments: its modules must run within this */
    int64_t deploy_settle_ms;  /* and have run this long */
};

struct config_management {
    char *socket;
    char *group;
    int max_connections;
    int64_t request_timeout_ms;
    uint64_t max_body;
};

struct config_workload {
    char *dir;
    int max_concurrent;
    uint64_t max_body;
};

struct config_certificates {
    char *ca_cert; /* both or neither of ca_cert/ca_key; NULL = ledge generates its own CA */
    char *ca_key;
    char *ca_chain;
    int64_t ca_lifetime_ms;
    int64_t cert_lifetime_ms;
    struct config_renew renew_before;
    struct lstrv extra_names;
    struct lstrv trusted_ca_files;
};

struct config_hub {
    char *bind;
    int tls_port;
    int plain_port;     /* 0 = off; when on, the hub listens on loopback only */
    int websocket_port; /* MQTT over WebSockets (TLS) on hub.bind; 0 = off */
    int amqp_port;      /* AMQP 1.0 over TLS (AMQPS) on hub.bind; 0 = off */
    char *control_socket;
    int max_connections;
    uint64_t max_packet_size;
    int max_inflight;
    int max_subscriptions;
    uint64_t max_queued_bytes;
    char *store_dir;
    enum config_fsync fsync;
    int64_t fsync_interval_ms;
    int64_t max_token_lifetime_ms; /* SAS tokens expiring further out are refused */
    char *x509_device_ca;          /* PEM file of CAs for CA-signed leaf devices, or NULL */
};

struct config_upstream {
    bool enabled;
    char *host;   /* NULL unless enabled (or set) */
    char *parent; /* upstream.parent: a parent ledge (nested edge, docs/nested.md), or NULL */
    int port;
    bool tls;
    char *ca_file; /* NULL = the system's trusted CAs */
    char *topic;
    enum config_protocol protocol;
    int64_t keepalive_ms; /* whole seconds */
    int64_t token_lifetime_ms;
    enum config_iothub iothub_mode;
    int max_module_sessions; /* modules' own upstream sessions at once (the hub's cloud.c) */
    int max_device_sessions; /* leaf devices' own upstream sessions at once (cloud.c) */
    bool iothub;             /* resolved: enabled and the upstream is IoT Hub (iothub_mode) */
};

struct config_check {
    uint64_t min_free_memory;
    uint64_t min_free_disk;
    char *ntp_server;
    int64_t ntp_timeout_ms;
    char *os_release;
    char *meminfo;
    /* Where the host is read from; tests point these elsewhere. */
    char *cpuinfo;
    char *dmi_dir;
    char *kvm_device;
    char *cgroup_dir;
    char *engine_config; /* the engine's own config file (daemon.json) */
};

struct config_metrics {
    bool enabled;
    char *listen;   /* "IPv4:port" or "[IPv6]:port" */
    int max_series; /* per labelled family table: the hub's counters, the agent's modules */
};

struct config_vm {
    char *dir;
    uint64_t default_memory;
    int default_cpus;
    uint64_t default_disk;
};

struct config_dashboard {
    bool enabled;
    char *listen;              /* "ADDR:PORT" or "[ADDR6]:PORT"; TLS unless ADDR is loopback */
    int64_t token_lifetime_ms; /* `ledge dashboard token` without --expires */
    int64_t session_idle_ms;
    int64_t chart_interval_ms; /* a sample for the charts this often; an hour of them is kept */
    char *assets; /* NULL: found beside ledged (a build tree) or the installed folder */
};

/* The parent side of nested edge: a registry API v2 proxy on listen (TLS with the device's server
 * certificate) to target (docs/registry-proxy.md). Off while listen or target is NULL. */
struct config_registry_proxy {
    char *listen;         /* "ADDR:PORT" */
    char *target;         /* "https://HOST[:PORT]", HOST maybe "$upstream:PORT" */
    char *target_ca_file; /* NULL: the system's CAs (upstream.ca_file for $upstream) */
    int max_connections;
    int64_t idle_timeout_ms;
};

/* Owns every string it points to; release with config_free(). After a successful load or
 * config_defaults() every path is absolute and every derived default is filled in. */
struct ledge_config {
    char *state_dir;
    char *run_dir;
    enum config_log_level log_level;
    struct config_device device;
    struct config_engine engine;
    struct config_agent agent;
    struct config_management management;
    struct config_workload workload;
    struct config_certificates certificates;
    struct config_hub hub;
    struct config_upstream upstream;
    struct config_check check;
    struct config_metrics metrics;
    struct config_vm vm;
    struct config_dashboard dashboard;
    struct config_registry_proxy registry_proxy;
};

/* All defaults, with derived paths and host names resolved. -ENOMEM only. */
int config_defaults(struct ledge_config *c);

/* Parse and validate len bytes of YAML. origin names the text in messages ("config.yaml:12:
 * ..."). On success fills *c (free with config_free()) and returns 0. On failure leaves *c
 * untouched, appends every problem found (up to CONFIG_MAX_ERRORS) to errors (which may be
 * NULL), one message per entry, and returns -EINVAL (-ENOMEM when out of memory). Empty text
 * means all defaults. */
int config_load_string(const char *text, size_t len, const char *origin, struct ledge_config *c,
                       struct lstrv *errors);

/* Read and load path (at most CONFIG_MAX_FILE_SIZE bytes). A missing or unreadable file is an
 * error with a message, returning -errno (-ENOENT when absent). */
int config_load_file(const char *path, struct ledge_config *c, struct lstrv *errors);

/* As config_load_file(), except that an absent file means all defaults: returns 1 then (0 when
 * the file was loaded), so ledged can start without /etc/ledge/config.yaml. */
int config_load_file_or_defaults(const char *path, struct ledge_config *c, struct lstrv *errors);

/* Free everything c owns, wiping secrets first; leaves c zeroed. Accepts a zeroed struct. */
void config_free(struct ledge_config *c);

/* The settings as a JSON object shaped like the YAML file (durations as "30s", sizes as
 * "10MiB"), plus device.identity. Secrets become "<redacted>" when redact_secrets. NULL on
 * ENOMEM. */
json_t *config_to_json(const struct ledge_config *c, bool redact_secrets);

/* Names used in the file and in messages. */
const char *config_log_level_name(enum config_log_level l);
const char *config_identity_name(enum config_identity id);
