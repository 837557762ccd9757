/* schema.c — every configuration key in one table (path, type, bounds, default, field), and the
 * value parsers, validators and formatters that the loader and config_to_json() run from it.
 * Adding a key means adding a row here, a field in config.h and a line in the docs. */
#include "schema.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "base/crypto.h"
#include "base/str.h"
#include "base/timeutil.h"

#define STRING_MAX 1024 /* bytes of a plain string value */
#define PATH_MAX_LEN 4095
#define SOCKET_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

/* CT_ENUM stores into enum fields through an int pointer. */
_Static_assert(sizeof(enum config_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_fsync) == sizeof(int), "enum size");
_Static_assert(sizeof(enum config_protocol) == sizeof(int), "enum size");

static const char *const log_level_names[] = {"error", "warn", "info", "debug", "trace", NULL};
static const char *const fsync_names[] = {"always", "interval", NULL};
static const char *const protocol_names[] = {"mqtt", NULL};
static const char *const iothub_names[] = {"auto", "true", "false", NULL};

#define KiB 1024LL
#define MiB (1024LL * KiB)
#define GiB (1024LL * MiB)
#define TiB (1024LL * GiB)
#define SEC 1000LL
#define MINUTE (60 * SEC)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)

static int check_network(const char *s, struct lbuf *why);
static int check_engine_type(const char *s, struct lbuf *why);
static int check_runtime(const char *s, struct lbuf *why);
static int check_subnet(const char *s, struct lbuf *why);
static int check_group(const char *s, struct lbuf *why);
static int check_ip(const char *s, struct lbuf *why);
static int check_topic(const char *s, struct lbuf *why);
static int check_abs_path(const char *s, struct lbuf *why);
static int check_listen(const char *s, struct lbuf *why);
static int check_proxy_target(const char *s, struct lbuf *why);

#define OFF(field) offsetof(struct ledge_config, field)
#define K_STR(p, field, chk, d)                                                                    \
    {                                                                                              \
        p, CT_STRING, OFF(field), 0, 0, 0, NULL, chk, d                                            \
    }
#define K_SECRET(p, field, chk)                                                                    \
    {                                                                                              \
        p, CT_STRING, OFF(field), CF_SECRET, 0, 0, NULL, chk, NULL                                 \
    }
#define K_PATH(p, field, d)                                                                        \
    {                                                                                              \
        p, CT_PATH, OFF(field), 0, 0, 0, NULL, NULL, d                                             \
    }
#define K_SOCK(p, field)                                                                           \
    {                                                                                              \
        p, CT_PATH, OFF(field), CF_SOCKET, 0, 0, NULL, NULL, NULL                                  \
    }
#define K_BOOL(p, field, d)                                                                        \
    {                                                                                              \
        p, CT_BOOL, OFF(field), 0, 0, 0, NULL, NULL, d                                             \
    }
#define K_INT(p, field, lo, hi, d)                                                                 \
    {                                                                                              \
        p, CT_INT, OFF(field), 0, lo, hi, NULL, NULL, d                                            \
    }
#define K_DUR(p, field, lo, hi, d)                                                                 \
    {                                                                                              \
        p, CT_DURATION, OFF(field), 0, lo, hi, NULL, NULL, d                                       \
    }
#define K_SECS(p, field, lo, hi, d)                                                                \
    {                                                                                              \
        p, CT_DURATION, OFF(field), CF_SECONDS, lo, hi, NULL, NULL, d                              \
    }
#define K_SIZE(p, field, lo, hi, d)                                                                \
    {                                                                                              \
        p, CT_SIZE, OFF(field), 0, lo, hi, NULL, NULL, d                                           \
    }
#define K_ENUM(p, field, names, d)                                                                 \
    {                                                                                              \
        p, CT_ENUM, OFF(field), 0, 0, 0, names, NULL, d                                            \
    }
#define K_LIST(p, field, chk)                                                                      \
    {                                                                                              \
        p, CT_STRLIST, OFF(field), 0, 0, 0, NULL, chk, NULL                                        \
    }

/* Order is the order of docs/configuration.md and of config_to_json(). A NULL default is either
 * "not set" or derived after loading (see resolve_derived() in config.c). */
const struct cfg_key cfg_keys[] = {
    K_PATH("state_dir", state_dir, "/var/lib/ledge"),
    K_PATH("run_dir", run_dir, "/run/ledge"),
    K_ENUM("log_level", log_level, log_level_names, "info"),

    K_STR("device.id", device.id, cfg_check_device_id, NULL),
    K_STR("device.iothub_hostname", device.iothub_hostname, cfg_check_iothub_hostname, NULL),
    K_STR("device.gateway_hostname", device.gateway_hostname, cfg_check_hostname, NULL),
    K_SECRET("device.key", device.key, cfg_check_device_key),
    {"device.connection_string", CT_CONNSTR, 0, CF_SECRET, 0, 0, NULL, NULL, NULL},
    K_PATH("device.x509.cert_file", device.x509.cert_file, NULL),
    K_PATH("device.x509.key_file", device.x509.key_file, NULL),

    K_STR("engine.type", engine.type, check_engine_type, "docker"),
    {"engine.uri", CT_URI, OFF(engine.uri), 0, 0, 0, NULL, NULL, "unix:///var/run/docker.sock"},
    K_STR("engine.network", engine.network, check_network, "ledge"),
    K_STR("engine.runtime", engine.runtime, check_runtime, "auto"),
    K_STR("engine.subnet", engine.subnet, check_subnet, "10.88.0.0/16"),
    K_PATH("engine.cni_path", engine.cni_path, "/usr/lib/cni"),
    K_BOOL("engine.userns", engine.userns, "false"),
    K_DUR("engine.image_gc_after", engine.image_gc_after_ms, 0, 365 * DAY, "1d"),
    K_SIZE("engine.log_max_size", engine.log_max_size, KiB, TiB, "10MiB"),
    K_INT("engine.log_max_files", engine.log_max_files, 1, 100, "3"),
    K_SECS("engine.stop_timeout", engine.stop_timeout_ms, 0, HOUR, "10s"),
    K_DUR("engine.pull_timeout", engine.pull_timeout_ms, SEC, DAY, "10m"),

    K_DUR("agent.backoff_base", agent.backoff_base_ms, 100, DAY, "10s"),
    K_DUR("agent.backoff_max", agent.backoff_max_ms, SEC, 7 * DAY, "300s"),
    K_INT("agent.max_restarts", agent.max_restarts, 0, 1000000, "20"),
    K_DUR("agent.reset_after", agent.reset_after_ms, SEC, 7 * DAY, "10m"),
    K_PATH("agent.hub_program", agent.hub_program, "/usr/lib/ledge/ledge-hub"),
    K_DUR("agent.hung_start_timeout", agent.hung_start_timeout_ms, SEC, DAY, "60s"),
    K_DUR("agent.deploy_timeout", agent.deploy_timeout_ms, SEC, DAY, "60s"),
    K_DUR("agent.deploy_settle", agent.deploy_settle_ms, 0, HOUR, "5s"),

    K_SOCK("management.socket", management.socket),
    K_STR("management.group", management.group, check_group, "ledge"),
    K_INT("management.max_connections", management.max_connections, 1, 4096, "64"),
    K_DUR("management.request_timeout", management.request_timeout_ms, SEC, HOUR, "30s"),
    K_SIZE("management.max_body", management.max_body, KiB, GiB, "4MiB"),

    K_PATH("workload.dir", workload.dir, NULL),
    K_INT("workload.max_concurrent", workload.max_concurrent, 1, 1024, "10"),
    K_SIZE("workload.max_body", workload.max_body, KiB, 64 * MiB, "64KiB"),

    K_PATH("certificates.ca_cert", certificates.ca_cert, NULL),
    K_PATH("certificates.ca_key", certificates.ca_key, NULL),
    K_PATH("certificates.ca_chain", certificates.ca_chain, NULL),
    K_DUR("certificates.ca_lifetime", certificates.ca_lifetime_ms, DAY, 36500 * DAY, "90d"),
    K_DUR("certificates.cert_lifetime", certificates.cert_lifetime_ms, HOUR, 36500 * DAY, "30d"),
    {"certificates.renew_before", CT_RENEW, OFF(certificates.renew_before), 0, MINUTE, 36500 * DAY,
     NULL, NULL, "20%"},
    K_LIST("certificates.extra_names", certificates.extra_names, cfg_check_hostname),
    K_LIST("certificates.trusted_ca_files", certificates.trusted_ca_files, check_abs_path),

    K_STR("hub.bind", hub.bind, check_ip, "0.0.0.0"),
    K_INT("hub.tls_port", hub.tls_port, 1, 65535, "8883"),
    K_INT("hub.plain_port", hub.plain_port, 0, 65535, "0"),
    K_INT("hub.websocket_port", hub.websocket_port, 0, 65535, "443"),
    K_INT("hub.amqp_port", hub.amqp_port, 0, 65535, "5671"),
    K_SOCK("hub.control_socket", hub.control_socket),
    K_INT("hub.max_connections", hub.max_connections, 1, 1000000, "1000"),
    /* 268435455 is the largest MQTT 3.1.1 remaining length. */
    K_SIZE("hub.max_packet_size", hub.max_packet_size, KiB, 268435455, "256KiB"),
    K_INT("hub.max_inflight", hub.max_inflight, 1, 65535, "100"),
    K_INT("hub.max_subscriptions", hub.max_subscriptions, 1, 100000, "32"),
    K_SIZE("hub.max_queued_bytes", hub.max_queued_bytes, MiB, 64 * TiB, "1GiB"),
    K_PATH("hub.store_dir", hub.store_dir, NULL),
    K_ENUM("hub.fsync", hub.fsync, fsync_names, "always"),
    K_DUR("hub.fsync_interval", hub.fsync_interval_ms, 1, 10 * SEC, "50ms"),
    K_SECS("hub.max_token_lifetime", hub.max_token_lifetime_ms, MINUTE, 365 * DAY, "1d"),
    K_PATH("hub.x509_device_ca", hub.x509_device_ca, NULL),

    K_BOOL("upstream.enabled", upstream.enabled, "false"),
    K_STR("upstream.host", upstream.host, cfg_check_hostname, NULL),
    K_STR("upstream.parent", upstream.parent, cfg_check_hostname, NULL),
    K_INT("upstream.port", upstream.port, 1, 65535, "8883"),
    K_BOOL("upstream.tls", upstream.tls, "true"),
    K_PATH("upstream.ca_file", upstream.ca_file, NULL),
    K_STR("upstream.topic", upstream.topic, check_topic,
          "devices/{device}/messages/events/{properties}"),
    K_ENUM("upstream.protocol", upstream.protocol, protocol_names, "mqtt"),
    K_SECS("upstream.keepalive", upstream.keepalive_ms, 0, 65535 * SEC, "60s"),
    K_SECS("upstream.token_lifetime", upstream.token_lifetime_ms, MINUTE, 30 * DAY, "1h"),
    K_ENUM("upstream.iothub", upstream.iothub_mode, iothub_names, "auto"),
    K_INT("upstream.max_module_sessions", upstream.max_module_sessions, 0, 100000, "100"),
    K_INT("upstream.max_device_sessions", upstream.max_device_sessions, 0, 100000, "100"),

    K_SIZE("check.min_free_memory", check.min_free_memory, 0, TiB, "1GiB"),
    K_SIZE("check.min_free_disk", check.min_free_disk, 0, 64 * TiB, "10GiB"),
    K_STR("check.ntp_server", check.ntp_server, cfg_check_hostname, "pool.ntp.org"),
    K_DUR("check.ntp_timeout", check.ntp_timeout_ms, 100, MINUTE, "3s"),
    K_PATH("check.os_release", check.os_release, "/etc/os-release"),
    K_PATH("check.meminfo", check.meminfo, "/proc/meminfo"),
    K_PATH("check.cpuinfo", check.cpuinfo, "/proc/cpuinfo"),
    K_PATH("check.dmi_dir", check.dmi_dir, "/sys/class/dmi/id"),
    K_PATH("check.kvm_device", check.kvm_device, "/dev/kvm"),
    K_PATH("check.cgroup_dir", check.cgroup_dir, "/sys/fs/cgroup"),
    K_PATH("check.engine_config", check.engine_config, "/etc/docker/daemon.json"),

    K_BOOL("metrics.enabled", metrics.enabled, "true"),
    K_STR("metrics.listen", metrics.listen, check_listen, "127.0.0.1:9600"),
    K_INT("metrics.max_series", metrics.max_series, 16, 1000000, "4096"),

    K_PATH("vm.dir", vm.dir, NULL),
    K_SIZE("vm.default_memory", vm.default_memory, 64 * MiB, TiB, "1024MiB"),
    K_INT("vm.default_cpus", vm.default_cpus, 1, 256, "1"),
    K_SIZE("vm.default_disk", vm.default_disk, GiB, 64 * TiB, "10GiB"),

    K_BOOL("dashboard.enabled", dashboard.enabled, "true"),
    K_STR("dashboard.listen", dashboard.listen, check_listen, "127.0.0.1:8484"),
    K_DUR("dashboard.token_lifetime", dashboard.token_lifetime_ms, MINUTE, 365 * DAY, "12h"),
    K_DUR("dashboard.session_idle", dashboard.session_idle_ms, MINUTE, 7 * DAY, "30m"),
    K_DUR("dashboard.chart_interval", dashboard.chart_interval_ms, SEC, 10 * MINUTE, "10s"),
    K_PATH("dashboard.assets", dashboard.assets, NULL),

    K_STR("registry_proxy.listen", registry_proxy.listen, check_listen, NULL),
    K_STR("registry_proxy.target", registry_proxy.target, check_proxy_target, NULL),
    K_PATH("registry_proxy.target_ca_file", registry_proxy.target_ca_file, NULL),
    K_INT("registry_proxy.max_connections", registry_proxy.max_connections, 1, 4096, "32"),
    K_DUR("registry_proxy.idle_timeout", registry_proxy.idle_timeout_ms, SEC, DAY, "60s"),
};
const size_t cfg_n_keys = ARRAY_SIZE(cfg_keys);

const struct cfg_key *cfg_find(const char *path)
{
    for (size_t i = 0; i < cfg_n_keys; i++)
        if (strcmp(cfg_keys[i].path, path) == 0)
            return &cfg_keys[i];
    return NULL;
}

bool cfg_is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < cfg_n_keys; i++)
        if (strncmp(cfg_keys[i].path, path, n) == 0 && cfg_keys[i].path[n] == '.')
            return true;
    return false;
}

/* ---- quoting and formatting ---- */

void cfg_quote(struct lbuf *out, const char *s)
{
    cfg_quote_n(out, s, strlen(s));
}

void cfg_quote_n(struct lbuf *out, const char *s, size_t n)
{
    enum { SHOWN = 60 };
    lbuf_putc(out, '"');
    size_t i;
    for (i = 0; i < n && i < SHOWN; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            lbuf_printf(out, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            lbuf_printf(out, "\\x%02x", ch);
        else
            lbuf_putc(out, (char)ch);
    }
    if (i < n)
        lbuf_puts(out, "...");
    lbuf_putc(out, '"');
}

static void why_quoted(struct lbuf *why, const char *s, const char *fmt, ...) _printf_(3, 4);
static void why_quoted(struct lbuf *why, const char *s, const char *fmt, ...)
{
    cfg_quote(why, s);
    lbuf_putc(why, ' ');
    va_list ap;
    va_start(ap, fmt);
    lbuf_vprintf(why, fmt, ap);
    va_end(ap);
}

void cfg_format_duration(int64_t ms, char buf[static 32])
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{DAY, "d"}, {HOUR, "h"}, {MINUTE, "m"}, {SEC, "s"}};
    if (ms == 0) {
        snprintf(buf, 32, "0s");
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(units); i++)
        if (ms % units[i].ms == 0) {
            snprintf(buf, 32, "%" PRId64 "%s", ms / units[i].ms, units[i].unit);
            return;
        }
    snprintf(buf, 32, "%" PRId64 "ms", ms);
}

void cfg_format_size(uint64_t bytes, char buf[static 32])
{
    static const struct {
        uint64_t n;
        const char *unit;
    } units[] = {{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}};
    if (bytes != 0)
        for (size_t i = 0; i < ARRAY_SIZE(units); i++)
            if (bytes % units[i].n == 0) {
                snprintf(buf, 32, "%" PRIu64 "%s", bytes / units[i].n, units[i].unit);
                return;
            }
    snprintf(buf, 32, "%" PRIu64, bytes);
}

/* ---- scalar parsers ---- */

/* Durations: digits, an optional fraction, and a unit (ms, s, m, h, d); "0" alone is allowed.
 * The strict grammar runs before ltime_parse_duration_ms(), which would also take strtod's
 * forms ("1e3", "0x10", "inf", leading blanks) that we do not want in a config file. */
int cfg_parse_duration(const char *s, int64_t *ret_ms)
{
    if (strcmp(s, "0") == 0) {
        *ret_ms = 0;
        return 0;
    }
    const char *p = s;
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || digits > 15)
        return -EINVAL;
    p += digits;
    if (*p == '.') {
        size_t frac = strspn(p + 1, "0123456789");
        if (frac == 0 || frac > 9)
            return -EINVAL;
        p += 1 + frac;
    }
    if (strcmp(p, "ms") != 0 && strcmp(p, "s") != 0 && strcmp(p, "m") != 0 && strcmp(p, "h") != 0 &&
        strcmp(p, "d") != 0)
        return -EINVAL;
    int64_t ms;
    int r = ltime_parse_duration_ms(s, &ms);
    if (r < 0)
        return r;
    *ret_ms = ms;
    return 0;
}

/* Sizes: a whole number of bytes with an optional unit. Every unit is a power of 1024: k, K,
 * Ki, KiB and KB all mean 1024 (likewise M, G, T, case-insensitive), the way Docker's log-opts
 * read "10m". A bare number, or one ending in B, is bytes. */
int cfg_parse_size(const char *s, uint64_t *ret)
{
    size_t digits = strspn(s, "0123456789");
    if (digits == 0 || digits > 19)
        return -EINVAL;
    const char *u = s + digits;
    unsigned shift = 0;
    if (*u) {
        const char *units = "kmgt";
        const char *hit = strchr(units, tolower((unsigned char)*u));
        if (hit && *hit) {
            shift = 10 * (unsigned)(hit - units + 1);
            u++;
            if (*u == 'i')
                u++;
        }
        if (*u == 'B')
            u++;
        if (*u || u == s + digits)
            return -EINVAL;
    }
    unsigned long long n;
    char num[20];
    memcpy(num, s, digits);
    num[digits] = 0;
    if (lstr_to_u64(num, &n) < 0)
        return -ERANGE;
    if (shift && n > (UINT64_MAX >> shift))
        return -ERANGE;
    *ret = (uint64_t)n << shift;
    return 0;
}

/* Decimal integers only: no sign but '-', no leading zeros (YAML 1.1 would read 010 as octal). */
static int parse_int(const char *s, long long *ret)
{
    const char *d = s[0] == '-' ? s + 1 : s;
    if (!*d || strspn(d, "0123456789") != strlen(d) || (d[0] == '0' && d[1]) || strlen(d) > 18)
        return -EINVAL;
    return lstr_to_i64(s, ret);
}

static int parse_bool(const char *s, bool *ret)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        *ret = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        *ret = false;
    else
        return -EINVAL;
    return 0;
}

/* ---- validators ---- */

bool cfg_is_ip(const char *s)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

/* RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens. */
bool cfg_is_hostname(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char ch = s[i];
        if (ch == '.' || ch == 0) {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return false;
            label = 0;
        } else if (isalnum((unsigned char)ch) || (ch == '-' && label > 0)) {
            label++;
        } else {
            return false;
        }
    }
    return true;
}

int cfg_check_hostname(const char *s, struct lbuf *why)
{
    if (cfg_is_hostname(s) || cfg_is_ip(s))
        return 0;
    why_quoted(why, s, "is not a valid host name or IP address");
    return -EINVAL;
}

int cfg_check_iothub_hostname(const char *s, struct lbuf *why)
{
    if (cfg_is_hostname(s) && strchr(s, '.'))
        return 0;
    why_quoted(why, s,
               "is not a fully qualified host name (it needs a dot, e.g. "
               "myhub.azure-devices.net)");
    return -EINVAL;
}

/* IoT Hub device ids: up to 128 ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ ' */
int cfg_check_device_id(const char *s, struct lbuf *why)
{
    size_t n = strlen(s);
    bool ok = n > 0 && n <= 128;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)s[i]) || strchr("-:.+%_#*?!(),=@;$'", s[i]);
    if (ok)
        return 0;
    why_quoted(why, s,
               "is not a valid device id (up to 128 letters, digits and - : . + %% _ # * ? ! ( ) "
               ", = @ ; $ ')");
    return -EINVAL;
}

/* A symmetric key as IoT Hub issues them: base64 of 16 to 64 bytes. Secret: the message never
 * contains the value. */
int cfg_check_device_key(const char *s, struct lbuf *why)
{
    struct lbuf raw = LBUF_INIT;
    int r = lcrypto_b64_decode(s, strlen(s), &raw);
    bool ok = r >= 0 && raw.len >= 16 && raw.len <= 64;
    if (raw.data)
        lcrypto_wipe(raw.data, raw.cap);
    lbuf_free(&raw);
    if (r == -ENOMEM)
        return r;
    if (ok)
        return 0;
    lbuf_puts(why, "is not a valid key: it must be base64 of 16 to 64 bytes (value not shown)");
    return -EINVAL;
}

/* The name of an engine backend; which names this ledged has is ledged's to say (the registry
 * in src/engine), so that a build with more engines needs no change here. */
static int check_engine_type(const char *s, struct lbuf *why)
{
    size_t n = strlen(s);
    if (n > 0 && n <= 32 && islower((unsigned char)s[0]) &&
        strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n)
        return 0;
    why_quoted(why, s, "is not an engine name (docker, or oci where it is built)");
    return -EINVAL;
}

/* engine.runtime: which OCI runtime the oci engine drives. */
static int check_runtime(const char *s, struct lbuf *why)
{
    if (strcmp(s, "auto") == 0 || strcmp(s, "crun") == 0 || strcmp(s, "runc") == 0 ||
        (s[0] == '/' && strlen(s) <= PATH_MAX_LEN))
        return 0;
    why_quoted(why, s, "is not auto, crun, runc or an absolute path");
    return -EINVAL;
}

/* engine.subnet: an IPv4 CIDR of /8 to /30. */
static int check_subnet(const char *s, struct lbuf *why)
{
    char addr[32], extra;
    unsigned len;
    struct in_addr a;
    if (sscanf(s, "%31[0-9.]/%u%c", addr, &len, &extra) == 2 && len >= 8 && len <= 30 &&
        inet_pton(AF_INET, addr, &a) == 1)
        return 0;
    why_quoted(why, s, "is not an IPv4 CIDR from /8 to /30 (10.88.0.0/16)");
    return -EINVAL;
}

static int check_network(const char *s, struct lbuf *why)
{
    size_t n = strlen(s);
    if (n <= 64 && isalnum((unsigned char)s[0]) &&
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n)
        return 0;
    why_quoted(why, s, "is not a valid network name (up to 64 letters, digits, _ . -)");
    return -EINVAL;
}

static int check_group(const char *s, struct lbuf *why)
{
    size_t n = strlen(s);
    if (n <= 32 && (isalpha((unsigned char)s[0]) || s[0] == '_') &&
        strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n)
        return 0;
    why_quoted(why, s, "is not a valid group name (up to 32 letters, digits, _ . -)");
    return -EINVAL;
}

static int check_ip(const char *s, struct lbuf *why)
{
    if (cfg_is_ip(s))
        return 0;
    why_quoted(why, s, "is not an IP address");
    return -EINVAL;
}

/* "ADDR:PORT" or "[ADDR6]:PORT" with a numeric address (net_hostport_parse's rule). */
/* registry_proxy.target: "https://HOST[:PORT]" (or http://), HOST a host name, an IP address
 * or "$upstream:PORT" (the parent's registry proxy, for a middle layer); no path. */
static int check_proxy_target(const char *s, struct lbuf *why)
{
    const char *h = strncmp(s, "https://", 8) == 0  ? s + 8
                    : strncmp(s, "http://", 7) == 0 ? s + 7
                                                    : NULL;
    size_t n = h ? strlen(h) : 0;
    if (n && h[n - 1] == '/')
        n--;
    bool ok = h && n > 0 && n < 300 && !memchr(h, '/', n) && !memchr(h, '@', n) &&
              !memchr(h, '?', n) && !memchr(h, '#', n);
    for (size_t i = 0; ok && i < n; i++)
        ok = h[i] > 0x20 && h[i] < 0x7f;
    if (!ok) {
        why_quoted(why, s, "is not a registry URL (https://HOST[:PORT], no path)");
        return -EINVAL;
    }
    return 0;
}

static int check_listen(const char *s, struct lbuf *why)
{
    char host[64];
    const char *colon = s[0] == '[' ? strstr(s, "]:") : strrchr(s, ':');
    size_t hlen = colon ? (size_t)(colon - s) - (s[0] == '[') : 0;
    unsigned long long port = 0;
    const char *ps = colon ? colon + (s[0] == '[' ? 2 : 1) : "";
    if (colon && hlen > 0 && hlen < sizeof(host)) {
        memcpy(host, s + (s[0] == '['), hlen);
        host[hlen] = 0;
        if (cfg_is_ip(host) && (s[0] == '[') == (strchr(host, ':') != NULL) &&
            lstr_to_u64(ps, &port) == 0 && port >= 1 && port <= 65535)
            return 0;
    }
    why_quoted(why, s, "is not ADDRESS:PORT (an IP address, [IPv6] in brackets, a port 1..65535)");
    return -EINVAL;
}

static int check_abs_path(const char *s, struct lbuf *why)
{
    if (s[0] == '/' && strlen(s) <= PATH_MAX_LEN)
        return 0;
    why_quoted(why, s, s[0] == '/' ? "is too long" : "is not an absolute path");
    return -EINVAL;
}

/* An MQTT topic name template: no wildcards, and only the placeholders the hub fills in. */
static int check_topic(const char *s, struct lbuf *why)
{
    static const char *const placeholders[] = {"{device}", "{module}", "{properties}"};
    if (strlen(s) > 256 || strpbrk(s, "+#")) {
        why_quoted(why, s, "is not a valid topic (up to 256 bytes, no + or # wildcards)");
        return -EINVAL;
    }
    for (const char *p = s; (p = strpbrk(p, "{}")); p++) {
        bool known = false;
        for (size_t i = 0; i < ARRAY_SIZE(placeholders) && !known; i++)
            if (lstr_startswith(p, placeholders[i])) {
                known = true;
                p += strlen(placeholders[i]) - 1;
            }
        if (!known) {
            why_quoted(why, s, "has an unknown placeholder (use {device}, {module}, {properties})");
            return -EINVAL;
        }
    }
    return 0;
}

/* unix:///absolute/path or http://host:port (host a name, IPv4 address or [IPv6]). */
static bool is_engine_uri(const char *s)
{
    if (lstr_startswith(s, "unix://")) {
        const char *path = s + strlen("unix://");
        return path[0] == '/' && strlen(path) <= SOCKET_PATH_MAX;
    }
    if (!lstr_startswith(s, "http://"))
        return false;
    const char *host = s + strlen("http://");
    const char *colon;
    char name[256];
    if (host[0] == '[') {
        const char *close = strchr(host, ']');
        if (!close || close[1] != ':' || (size_t)(close - host - 1) >= sizeof(name))
            return false;
        memcpy(name, host + 1, (size_t)(close - host - 1));
        name[close - host - 1] = 0;
        unsigned char addr[16];
        if (inet_pton(AF_INET6, name, addr) != 1)
            return false;
        colon = close + 1;
    } else {
        colon = strrchr(host, ':');
        if (!colon || (size_t)(colon - host) >= sizeof(name))
            return false;
        memcpy(name, host, (size_t)(colon - host));
        name[colon - host] = 0;
        if (!cfg_is_hostname(name))
            return false;
    }
    long long port;
    return parse_int(colon + 1, &port) == 0 && port >= 1 && port <= 65535;
}

/* ---- per-type set, free, JSON ---- */

const char *cfg_type_noun(const struct cfg_key *k)
{
    switch (k->type) {
    case CT_STRING:
    case CT_CONNSTR:
        return "a string";
    case CT_BOOL:
        return "true or false";
    case CT_INT:
        return "an integer";
    case CT_DURATION:
        return "a duration";
    case CT_SIZE:
        return "a size";
    case CT_PATH:
        return "an absolute path";
    case CT_ENUM:
        return "one of the names listed in the docs";
    case CT_STRLIST:
        return "a list of strings";
    case CT_URI:
        return "an engine URI";
    case CT_RENEW:
        return "a percentage or a duration";
    }
    return "a value";
}

static int set_string(char **field, const char *s, bool secret)
{
    char *copy = strdup(s);
    if (!copy)
        return -ENOMEM;
    if (*field && secret)
        lcrypto_wipe(*field, strlen(*field));
    free(*field);
    *field = copy;
    return 0;
}

static void why_range(struct lbuf *why, const char *s, const struct cfg_key *k)
{
    char lo[32], hi[32];
    if (k->type == CT_SIZE) {
        cfg_format_size((uint64_t)k->min, lo);
        cfg_format_size((uint64_t)k->max, hi);
    } else {
        cfg_format_duration(k->min, lo);
        cfg_format_duration(k->max, hi);
    }
    why_quoted(why, s, "is out of range (%s..%s)", lo, hi);
}

int cfg_set_scalar(const struct cfg_key *k, const char *s, struct ledge_config *c, struct lbuf *why)
{
    void *field = cfg_field(k, c);
    bool secret = k->flags & CF_SECRET;
    int r;

    if (!*s) {
        lbuf_puts(why, "must not be empty");
        return -EINVAL;
    }
    switch (k->type) {
    case CT_STRING:
        if (strlen(s) > STRING_MAX) {
            lbuf_printf(why, "is too long (max %d bytes)", STRING_MAX);
            return -EINVAL;
        }
        if (k->check && (r = k->check(s, why)) < 0)
            return r;
        return set_string(field, s, secret);

    case CT_PATH: {
        size_t max = (k->flags & CF_SOCKET) ? SOCKET_PATH_MAX : PATH_MAX_LEN;
        if (s[0] != '/') {
            why_quoted(why, s, "is not an absolute path");
            return -EINVAL;
        }
        if (strlen(s) > max) {
            why_quoted(why, s, "is too long (max %zu bytes%s)", max,
                       (k->flags & CF_SOCKET) ? " for a unix socket" : "");
            return -EINVAL;
        }
        return set_string(field, s, false);
    }

    case CT_URI:
        if (!is_engine_uri(s)) {
            why_quoted(why, s,
                       "is not a supported engine URI (use unix:///path or "
                       "http://host:port)");
            return -EINVAL;
        }
        return set_string(field, s, false);

    case CT_BOOL:
        if (parse_bool(s, field) < 0) {
            why_quoted(why, s, "is not a boolean (use true or false)");
            return -EINVAL;
        }
        return 0;

    case CT_INT: {
        long long v;
        if (parse_int(s, &v) < 0) {
            why_quoted(why, s, "is not an integer");
            return -EINVAL;
        }
        if (v < k->min || v > k->max) {
            lbuf_printf(why, "%lld is out of range (%" PRId64 "..%" PRId64 ")", v, k->min, k->max);
            return -EINVAL;
        }
        *(int *)field = (int)v;
        return 0;
    }

    case CT_DURATION: {
        int64_t ms;
        r = cfg_parse_duration(s, &ms);
        if (r == -EINVAL) {
            why_quoted(why, s, "is not a duration (use e.g. 300s, 5m)");
            return -EINVAL;
        }
        if (r < 0 || ms < k->min || ms > k->max) {
            why_range(why, s, k);
            return -EINVAL;
        }
        if ((k->flags & CF_SECONDS) && ms % SEC != 0) {
            why_quoted(why, s, "is not a whole number of seconds");
            return -EINVAL;
        }
        *(int64_t *)field = ms;
        return 0;
    }

    case CT_SIZE: {
        uint64_t v;
        r = cfg_parse_size(s, &v);
        if (r == -EINVAL) {
            why_quoted(why, s, "is not a size (use e.g. 512k, 10M, 1GiB)");
            return -EINVAL;
        }
        if (r < 0 || v < (uint64_t)k->min || v > (uint64_t)k->max) {
            why_range(why, s, k);
            return -EINVAL;
        }
        *(uint64_t *)field = v;
        return 0;
    }

    case CT_ENUM:
        for (int i = 0; k->names[i]; i++)
            if (strcmp(k->names[i], s) == 0) {
                *(int *)field = i;
                return 0;
            }
        why_quoted(why, s, "is not one of:");
        for (int i = 0; k->names[i]; i++)
            lbuf_printf(why, "%s %s", i ? "," : "", k->names[i]);
        return -EINVAL;

    case CT_STRLIST:
        if (strlen(s) > STRING_MAX) {
            lbuf_printf(why, "is too long (max %d bytes)", STRING_MAX);
            return -EINVAL;
        }
        if (k->check && (r = k->check(s, why)) < 0)
            return r;
        return lstrv_push(field, s);

    case CT_RENEW: {
        struct config_renew *rb = field;
        size_t n = strlen(s);
        if (s[n - 1] == '%') {
            char num[8];
            long long pct;
            if (n - 1 >= sizeof(num)) {
                why_quoted(why, s, "is out of range (1%%..99%%)");
                return -EINVAL;
            }
            memcpy(num, s, n - 1);
            num[n - 1] = 0;
            if (parse_int(num, &pct) < 0) {
                why_quoted(why, s, "is not a percentage or a duration (use e.g. 20%% or 7d)");
                return -EINVAL;
            }
            if (pct < 1 || pct > 99) {
                why_quoted(why, s, "is out of range (1%%..99%%)");
                return -EINVAL;
            }
            *rb = (struct config_renew){.percent = (int)pct};
            return 0;
        }
        int64_t ms;
        r = cfg_parse_duration(s, &ms);
        if (r == -EINVAL) {
            why_quoted(why, s, "is not a percentage or a duration (use e.g. 20%% or 7d)");
            return -EINVAL;
        }
        if (r < 0 || ms < k->min || ms > k->max) {
            why_range(why, s, k);
            return -EINVAL;
        }
        *rb = (struct config_renew){.ms = ms};
        return 0;
    }

    case CT_CONNSTR:
        break;
    }
    return -EINVAL;
}

void cfg_free_value(const struct cfg_key *k, struct ledge_config *c)
{
    void *field = cfg_field(k, c);
    switch (k->type) {
    case CT_STRING:
    case CT_PATH:
    case CT_URI: {
        char **p = field;
        if (*p && (k->flags & CF_SECRET))
            lcrypto_wipe(*p, strlen(*p));
        free(*p);
        *p = NULL;
        break;
    }
    case CT_STRLIST:
        lstrv_free(field);
        break;
    default:
        break;
    }
}

static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    return j ? j : json_string("<not UTF-8>");
}

json_t *cfg_value_json(const struct cfg_key *k, const struct ledge_config *c, bool redact)
{
    const void *field = cfg_field(k, c);
    char buf[32];
    switch (k->type) {
    case CT_STRING:
    case CT_PATH:
    case CT_URI: {
        const char *s = *(char *const *)field;
        if (!s)
            return json_null();
        if (redact && (k->flags & CF_SECRET))
            return json_string("<redacted>");
        return json_text(s);
    }
    case CT_BOOL:
        return json_boolean(*(const bool *)field);
    case CT_INT:
        return json_integer(*(const int *)field);
    case CT_DURATION:
        cfg_format_duration(*(const int64_t *)field, buf);
        return json_string(buf);
    case CT_SIZE:
        cfg_format_size(*(const uint64_t *)field, buf);
        return json_string(buf);
    case CT_ENUM:
        return json_string(k->names[*(const int *)field]);
    case CT_STRLIST: {
        const struct lstrv *sv = field;
        json_t *a = json_array();
        for (size_t i = 0; a && i < sv->n; i++)
            if (json_array_append_new(a, json_text(sv->v[i])) < 0) {
                json_decref(a);
                return NULL;
            }
        return a;
    }
    case CT_RENEW: {
        const struct config_renew *rb = field;
        if (rb->percent)
            snprintf(buf, sizeof(buf), "%d%%", rb->percent);
        else
            cfg_format_duration(rb->ms, buf);
        return json_string(buf);
    }
    case CT_CONNSTR:
        break;
    }
    return NULL;
}
