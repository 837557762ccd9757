/* createopts.c — the ContainerCreate model as data and the Newtonsoft-style normaliser (see
 * createopts.h). The model's fields and types come from the Docker Engine API reference (moby's
 * api/docs/v1.41.yaml through the current swagger.yaml: every field of either, and the older
 * DiskQuota and InitPath that IoT Edge's own model still has); integer ranges are those of the Go
 * types dockerd decodes into. */
#include "engine/createopts.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/macro.h"

/* ------------------------------------------------------------------ the model */

enum co_kind {
    CO_BOOL,
    CO_INT,      /* an integer in [min, max] */
    CO_STRING,   /* a string */
    CO_STRSLICE, /* an array of strings, or one string (dockerd's strslice: Cmd, Entrypoint) */
    CO_ARRAY,    /* an array of elem */
    CO_MAP,      /* an object whose keys are data, each value an elem */
    CO_OBJECT,   /* a struct: fields matched case-insensitively */
    CO_EMPTY,    /* {} (the values of ExposedPorts and Volumes) */
};

struct co_field;

struct co_type {
    enum co_kind kind;
    int64_t min, max;              /* CO_INT */
    const struct co_type *elem;    /* CO_ARRAY, CO_MAP */
    const struct co_field *fields; /* CO_OBJECT, terminated by a NULL name */
};

struct co_field {
    const char *name; /* the API's spelling */
    const struct co_type *type;
};

#define INT_RANGE(lo, hi)                                                                          \
    {                                                                                              \
        .kind = CO_INT, .min = (lo), .max = (hi)                                                   \
    }
#define ARRAY_OF(t)                                                                                \
    {                                                                                              \
        .kind = CO_ARRAY, .elem = (t)                                                              \
    }
#define MAP_OF(t)                                                                                  \
    {                                                                                              \
        .kind = CO_MAP, .elem = (t)                                                                \
    }
#define OBJECT(f)                                                                                  \
    {                                                                                              \
        .kind = CO_OBJECT, .fields = (f)                                                           \
    }

static const struct co_type T_BOOL = {.kind = CO_BOOL};
static const struct co_type T_STR = {.kind = CO_STRING};
static const struct co_type T_SLICE = {.kind = CO_STRSLICE};
static const struct co_type T_EMPTY = {.kind = CO_EMPTY};
static const struct co_type T_I64 = INT_RANGE(INT64_MIN, INT64_MAX); /* int64, Go int */
static const struct co_type T_U64 = INT_RANGE(0, INT64_MAX); /* uint64 (JSON here is int64) */
static const struct co_type T_U32 = INT_RANGE(0, UINT32_MAX);
static const struct co_type T_U16 = INT_RANGE(0, UINT16_MAX);
static const struct co_type T_STRS = ARRAY_OF(&T_STR);
static const struct co_type T_STRSS = ARRAY_OF(&T_STRS);
static const struct co_type T_STRMAP = MAP_OF(&T_STR);
static const struct co_type T_U64S = ARRAY_OF(&T_U64);
static const struct co_type T_SET = MAP_OF(&T_EMPTY);

static const struct co_field F_HEALTH[] = {
    {"Test", &T_STRS},       {"Interval", &T_I64},      {"Timeout", &T_I64}, {"Retries", &T_I64},
    {"StartPeriod", &T_I64}, {"StartInterval", &T_I64}, {NULL, NULL},
};
static const struct co_type T_HEALTH = OBJECT(F_HEALTH);

static const struct co_field F_WEIGHT_DEVICE[] = {{"Path", &T_STR}, {"Weight", &T_U16}, {0}};
static const struct co_type T_WEIGHT_DEVICE = OBJECT(F_WEIGHT_DEVICE);
static const struct co_type T_WEIGHT_DEVICES = ARRAY_OF(&T_WEIGHT_DEVICE);

static const struct co_field F_THROTTLE[] = {{"Path", &T_STR}, {"Rate", &T_U64}, {0}};
static const struct co_type T_THROTTLE = OBJECT(F_THROTTLE);
static const struct co_type T_THROTTLES = ARRAY_OF(&T_THROTTLE);

static const struct co_field F_DEVICE[] = {
    {"PathOnHost", &T_STR}, {"PathInContainer", &T_STR}, {"CgroupPermissions", &T_STR}, {0}};
static const struct co_type T_DEVICE = OBJECT(F_DEVICE);
static const struct co_type T_DEVICES = ARRAY_OF(&T_DEVICE);

/* GPUs and other devices a driver provides (docker run --gpus). */
static const struct co_field F_DEVICE_REQUEST[] = {
    {"Driver", &T_STR},         {"Count", &T_I64},      {"DeviceIDs", &T_STRS},
    {"Capabilities", &T_STRSS}, {"Options", &T_STRMAP}, {0},
};
static const struct co_type T_DEVICE_REQUEST = OBJECT(F_DEVICE_REQUEST);
static const struct co_type T_DEVICE_REQUESTS = ARRAY_OF(&T_DEVICE_REQUEST);

static const struct co_field F_ULIMIT[] = {
    {"Name", &T_STR}, {"Soft", &T_I64}, {"Hard", &T_I64}, {0}};
static const struct co_type T_ULIMIT = OBJECT(F_ULIMIT);
static const struct co_type T_ULIMITS = ARRAY_OF(&T_ULIMIT);

static const struct co_field F_LOG_CONFIG[] = {{"Type", &T_STR}, {"Config", &T_STRMAP}, {0}};
static const struct co_type T_LOG_CONFIG = OBJECT(F_LOG_CONFIG);

static const struct co_field F_PORT_BINDING[] = {{"HostIp", &T_STR}, {"HostPort", &T_STR}, {0}};
static const struct co_type T_PORT_BINDING = OBJECT(F_PORT_BINDING);
static const struct co_type T_PORT_BINDINGS = ARRAY_OF(&T_PORT_BINDING);
static const struct co_type T_PORT_MAP = MAP_OF(&T_PORT_BINDINGS);

static const struct co_field F_RESTART[] = {{"Name", &T_STR}, {"MaximumRetryCount", &T_I64}, {0}};
static const struct co_type T_RESTART = OBJECT(F_RESTART);

static const struct co_field F_BIND_OPTIONS[] = {
    {"Propagation", &T_STR},
    {"NonRecursive", &T_BOOL},
    {"CreateMountpoint", &T_BOOL},
    {"ReadOnlyNonRecursive", &T_BOOL},
    {"ReadOnlyForceRecursive", &T_BOOL},
    {0},
};
static const struct co_type T_BIND_OPTIONS = OBJECT(F_BIND_OPTIONS);
static const struct co_field F_DRIVER_CONFIG[] = {{"Name", &T_STR}, {"Options", &T_STRMAP}, {0}};
static const struct co_type T_DRIVER_CONFIG = OBJECT(F_DRIVER_CONFIG);
static const struct co_field F_VOLUME_OPTIONS[] = {
    {"NoCopy", &T_BOOL},
    {"Labels", &T_STRMAP},
    {"DriverConfig", &T_DRIVER_CONFIG},
    {"Subpath", &T_STR},
    {0},
};
static const struct co_type T_VOLUME_OPTIONS = OBJECT(F_VOLUME_OPTIONS);
static const struct co_field F_IMAGE_OPTIONS[] = {{"Subpath", &T_STR}, {0}};
static const struct co_type T_IMAGE_OPTIONS = OBJECT(F_IMAGE_OPTIONS);
static const struct co_field F_TMPFS_OPTIONS[] = {
    {"SizeBytes", &T_I64}, {"Mode", &T_U32}, {"Options", &T_STRSS}, {0}};
static const struct co_type T_TMPFS_OPTIONS = OBJECT(F_TMPFS_OPTIONS);
static const struct co_field F_MOUNT[] = {
    {"Target", &T_STR},
    {"Source", &T_STR},
    {"Type", &T_STR},
    {"ReadOnly", &T_BOOL},
    {"Consistency", &T_STR},
    {"BindOptions", &T_BIND_OPTIONS},
    {"VolumeOptions", &T_VOLUME_OPTIONS},
    {"ImageOptions", &T_IMAGE_OPTIONS},
    {"TmpfsOptions", &T_TMPFS_OPTIONS},
    {0},
};
static const struct co_type T_MOUNT = OBJECT(F_MOUNT);
static const struct co_type T_MOUNTS = ARRAY_OF(&T_MOUNT);

/* HostConfig: the API's Resources and its own fields in one struct, as dockerd decodes it. */
static const struct co_field F_HOST_CONFIG[] = {
    /* Resources */
    {"CpuShares", &T_I64},
    {"Memory", &T_I64},
    {"CgroupParent", &T_STR},
    {"BlkioWeight", &T_U16},
    {"BlkioWeightDevice", &T_WEIGHT_DEVICES},
    {"BlkioDeviceReadBps", &T_THROTTLES},
    {"BlkioDeviceWriteBps", &T_THROTTLES},
    {"BlkioDeviceReadIOps", &T_THROTTLES},
    {"BlkioDeviceWriteIOps", &T_THROTTLES},
    {"CpuPeriod", &T_I64},
    {"CpuQuota", &T_I64},
    {"CpuRealtimePeriod", &T_I64},
    {"CpuRealtimeRuntime", &T_I64},
    {"CpusetCpus", &T_STR},
    {"CpusetMems", &T_STR},
    {"Devices", &T_DEVICES},
    {"DiskQuota", &T_I64},
    {"DeviceCgroupRules", &T_STRS},
    {"DeviceRequests", &T_DEVICE_REQUESTS},
    {"KernelMemory", &T_I64},
    {"KernelMemoryTCP", &T_I64},
    {"MemoryReservation", &T_I64},
    {"MemorySwap", &T_I64},
    {"MemorySwappiness", &T_I64},
    {"NanoCpus", &T_I64},
    {"OomKillDisable", &T_BOOL},
    {"Init", &T_BOOL},
    {"PidsLimit", &T_I64},
    {"Ulimits", &T_ULIMITS},
    {"CpuCount", &T_I64},
    {"CpuPercent", &T_I64},
    {"IOMaximumIOps", &T_U64},
    {"IOMaximumBandwidth", &T_U64},
    /* the host */
    {"Binds", &T_STRS},
    {"ContainerIDFile", &T_STR},
    {"LogConfig", &T_LOG_CONFIG},
    {"NetworkMode", &T_STR},
    {"PortBindings", &T_PORT_MAP},
    {"RestartPolicy", &T_RESTART},
    {"AutoRemove", &T_BOOL},
    {"VolumeDriver", &T_STR},
    {"VolumesFrom", &T_STRS},
    {"Mounts", &T_MOUNTS},
    {"ConsoleSize", &T_U64S},
    {"Annotations", &T_STRMAP},
    {"CapAdd", &T_STRS},
    {"CapDrop", &T_STRS},
    {"CgroupnsMode", &T_STR},
    {"Dns", &T_STRS},
    {"DnsOptions", &T_STRS},
    {"DnsSearch", &T_STRS},
    {"ExtraHosts", &T_STRS},
    {"GroupAdd", &T_STRS},
    {"IpcMode", &T_STR},
    {"Cgroup", &T_STR},
    {"Links", &T_STRS},
    {"OomScoreAdj", &T_I64},
    {"PidMode", &T_STR},
    {"Privileged", &T_BOOL},
    {"PublishAllPorts", &T_BOOL},
    {"ReadonlyRootfs", &T_BOOL},
    {"SecurityOpt", &T_STRS},
    {"StorageOpt", &T_STRMAP},
    {"Tmpfs", &T_STRMAP},
    {"UTSMode", &T_STR},
    {"UsernsMode", &T_STR},
    {"ShmSize", &T_I64},
    {"Sysctls", &T_STRMAP},
    {"Runtime", &T_STR},
    {"Isolation", &T_STR},
    {"InitPath", &T_STR}, /* older engines; IoT Edge's model has it */
    {"MaskedPaths", &T_STRS},
    {"ReadonlyPaths", &T_STRS},
    {0},
};
static const struct co_type T_HOST_CONFIG = OBJECT(F_HOST_CONFIG);

static const struct co_field F_IPAM[] = {
    {"IPv4Address", &T_STR}, {"IPv6Address", &T_STR}, {"LinkLocalIPs", &T_STRS}, {0}};
static const struct co_type T_IPAM = OBJECT(F_IPAM);
static const struct co_field F_ENDPOINT[] = {
    {"IPAMConfig", &T_IPAM},       {"Links", &T_STRS},
    {"Aliases", &T_STRS},          {"MacAddress", &T_STR},
    {"DriverOpts", &T_STRMAP},     {"GwPriority", &T_I64},
    {"NetworkID", &T_STR},         {"EndpointID", &T_STR},
    {"Gateway", &T_STR},           {"IPAddress", &T_STR},
    {"IPPrefixLen", &T_I64},       {"IPv6Gateway", &T_STR},
    {"GlobalIPv6Address", &T_STR}, {"GlobalIPv6PrefixLen", &T_I64},
    {"DNSNames", &T_STRS},         {0},
};
static const struct co_type T_ENDPOINT = OBJECT(F_ENDPOINT);
static const struct co_type T_ENDPOINTS = MAP_OF(&T_ENDPOINT);
static const struct co_field F_NETWORKING[] = {{"EndpointsConfig", &T_ENDPOINTS}, {0}};
static const struct co_type T_NETWORKING = OBJECT(F_NETWORKING);

/* The body of POST /containers/create: the container's Config with HostConfig and
 * NetworkingConfig beside its fields. */
static const struct co_field F_CREATE[] = {
    {"Hostname", &T_STR},
    {"Domainname", &T_STR},
    {"User", &T_STR},
    {"AttachStdin", &T_BOOL},
    {"AttachStdout", &T_BOOL},
    {"AttachStderr", &T_BOOL},
    {"ExposedPorts", &T_SET},
    {"Tty", &T_BOOL},
    {"OpenStdin", &T_BOOL},
    {"StdinOnce", &T_BOOL},
    {"Env", &T_STRS},
    {"Cmd", &T_SLICE},
    {"Healthcheck", &T_HEALTH},
    {"ArgsEscaped", &T_BOOL},
    {"Image", &T_STR},
    {"Volumes", &T_SET},
    {"WorkingDir", &T_STR},
    {"Entrypoint", &T_SLICE},
    {"NetworkDisabled", &T_BOOL},
    {"MacAddress", &T_STR},
    {"OnBuild", &T_STRS},
    {"Labels", &T_STRMAP},
    {"StopSignal", &T_STR},
    {"StopTimeout", &T_I64},
    {"Shell", &T_SLICE},
    {"HostConfig", &T_HOST_CONFIG},
    {"NetworkingConfig", &T_NETWORKING},
    {0},
};
static const struct co_type T_CREATE = OBJECT(F_CREATE);

static const struct co_field *field_find(const struct co_field *f, const char *name, size_t len)
{
    for (; f && f->name; f++)
        if (strlen(f->name) == len && strncasecmp(f->name, name, len) == 0)
            return f;
    return NULL;
}

/* ------------------------------------------------------------------ normalising */

#define PATH_MAX_LEN 512

struct walk {
    createopts_report_fn report;
    void *ud;
    char path[PATH_MAX_LEN];
    bool bad;
    bool oom;
};

/* Append ".name" (or "name" at the start) or "[i]" to the path; returns the old length. Names
 * are the user's (map keys, unknown fields): control bytes are shown as \xNN, long ones cut. */
static size_t path_push(struct walk *w, const char *name, long index)
{
    size_t n = strlen(w->path);
    size_t room = sizeof(w->path) - n;
    if (!name) {
        snprintf(w->path + n, room, "[%ld]", index);
        return n;
    }
    size_t o = n;
    if (n && o + 1 < sizeof(w->path))
        w->path[o++] = '.';
    for (size_t i = 0; name[i] && i < 64 && o + 5 < sizeof(w->path); i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch < 0x20 || ch == 0x7f)
            o += (size_t)snprintf(w->path + o, sizeof(w->path) - o, "\\x%02x", ch);
        else
            w->path[o++] = (char)ch;
    }
    w->path[o] = 0;
    return n;
}

static void path_pop(struct walk *w, size_t n)
{
    w->path[n] = 0;
}

_printf_(3, 4) static void report(struct walk *w, bool error, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (error)
        w->bad = true;
    if (w->report)
        w->report(w->ud, error, w->path, msg);
}

/* A value as the messages show it: strings and numbers as JSON (cut), others by kind. */
static const char *shown(const json_t *v, char *buf, size_t n)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_NULL:
        return "null";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        break;
    }
    char *text = json_dumps(v, JSON_ENCODE_ANY);
    if (!text)
        return "a value";
    if (strlen(text) > 48)
        snprintf(buf, n, "%.44s...%s", text, json_is_string(v) ? "\"" : "");
    else
        snprintf(buf, n, "%s", text);
    free(text);
    return buf;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The text between leading and trailing blanks, as .NET's Parse methods see it. */
static void trimmed(const char *s, const char **ret, size_t *ret_len)
{
    size_t n = strlen(s);
    while (n && is_blank(*s))
        s++, n--;
    while (n && is_blank(s[n - 1]))
        n--;
    *ret = s;
    *ret_len = n;
}

/* bool.TryParse: "true"/"false" in any case, blanks around allowed. */
static int parse_bool_text(const char *s, bool *ret)
{
    const char *t;
    size_t n;
    trimmed(s, &t, &n);
    if (n == 4 && strncasecmp(t, "true", 4) == 0)
        *ret = true;
    else if (n == 5 && strncasecmp(t, "false", 5) == 0)
        *ret = false;
    else
        return -EINVAL;
    return 0;
}

/* long.Parse with NumberStyles.Integer: blanks around, an optional sign, decimal digits. */
static int parse_int_text(const char *s, int64_t *ret)
{
    const char *t;
    size_t n;
    trimmed(s, &t, &n);
    bool neg = false;
    if (n && (*t == '+' || *t == '-')) {
        neg = *t == '-';
        t++, n--;
    }
    if (n == 0)
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return -EINVAL;
        unsigned d = (unsigned)(t[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
        return -ERANGE;
    *ret = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* A number's shortest text that reads back as the same double; exponents as .NET writes them. */
static void real_text(double d, char *buf, size_t n)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    char *e = strchr(buf, 'e');
    if (e)
        *e = 'E';
}

static json_t *oom(struct walk *w)
{
    w->oom = true;
    return NULL;
}

static json_t *norm(struct walk *w, const struct co_type *t, const json_t *v);

static json_t *norm_bool(struct walk *w, const json_t *v)
{
    char buf[64];
    bool b;
    if (json_is_boolean(v))
        return json_boolean(json_is_true(v));
    if (json_is_integer(v))
        return json_boolean(json_integer_value(v) != 0);
    if (json_is_real(v))
        return json_boolean(json_real_value(v) != 0.0);
    if (json_is_string(v) && parse_bool_text(json_string_value(v), &b) == 0)
        return json_boolean(b);
    report(w, true, "expected a boolean, got %s", shown(v, buf, sizeof(buf)));
    return NULL;
}

static json_t *norm_int(struct walk *w, const struct co_type *t, const json_t *v)
{
    char buf[64];
    int64_t i = 0;
    bool ok = false, range = true;
    if (json_is_integer(v)) {
        i = json_integer_value(v);
        ok = true;
    } else if (json_is_real(v)) {
        /* .NET's Convert rounds to the nearest integer, halves to even (as rint does) */
        double d = rint(json_real_value(v));
        ok = true;
        if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
            range = false;
        else
            i = (int64_t)d;
    } else if (json_is_string(v)) {
        int r = parse_int_text(json_string_value(v), &i);
        ok = r == 0 || r == -ERANGE;
        range = r == 0;
    }
    if (!ok) {
        report(w, true, "expected an integer, got %s", shown(v, buf, sizeof(buf)));
        return NULL;
    }
    if (!range || i < t->min || i > t->max) {
        if (t->min == INT64_MIN)
            report(w, true, "expected a 64-bit integer, got %s", shown(v, buf, sizeof(buf)));
        else
            report(w, true, "expected an integer from %" PRId64 " to %" PRId64 ", got %s", t->min,
                   t->max, shown(v, buf, sizeof(buf)));
        return NULL;
    }
    return json_integer(i);
}

static json_t *norm_string(struct walk *w, const json_t *v)
{
    char buf[64];
    if (json_is_string(v))
        return json_stringn(json_string_value(v), json_string_length(v));
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return json_string(buf);
    }
    if (json_is_real(v)) {
        real_text(json_real_value(v), buf, sizeof(buf));
        return json_string(buf);
    }
    if (json_is_boolean(v))
        return json_string(json_is_true(v) ? "true" : "false");
    report(w, true, "expected a string, got %s", shown(v, buf, sizeof(buf)));
    return NULL;
}

static json_t *norm_array(struct walk *w, const struct co_type *elem, const json_t *v)
{
    json_t *out = json_array();
    if (!out)
        return oom(w);
    size_t i;
    json_t *e;
    json_array_foreach (v, i, e) {
        if (json_is_null(e))
            continue; /* a null element is dropped, as the engine would drop it */
        size_t mark = path_push(w, NULL, (long)i);
        json_t *n = norm(w, elem, e);
        path_pop(w, mark);
        if (n && json_array_append_new(out, n) < 0)
            w->oom = true;
    }
    return out;
}

static json_t *norm_map(struct walk *w, const struct co_type *elem, const json_t *v)
{
    json_t *out = json_object();
    if (!out)
        return oom(w);
    const char *k;
    json_t *e;
    json_object_foreach ((json_t *)v, k, e) {
        if (json_is_null(e) && elem->kind != CO_EMPTY)
            continue;
        size_t mark = path_push(w, k, 0);
        json_t *n = norm(w, elem, e);
        path_pop(w, mark);
        if (n && json_object_set_new(out, k, n) < 0)
            w->oom = true;
    }
    return out;
}

static json_t *norm_object(struct walk *w, const struct co_field *fields, const json_t *v)
{
    json_t *out = json_object();
    if (!out)
        return oom(w);
    const char *k;
    json_t *e;
    json_object_foreach ((json_t *)v, k, e) {
        const struct co_field *f = field_find(fields, k, strlen(k));
        const char *name = f ? f->name : k;
        size_t mark = path_push(w, k, 0);
        if (f && json_object_get(out, name)) {
            report(w, true, "given twice (also as %s)", name);
        } else if (json_is_null(e)) {
            /* left out, as Docker.DotNet leaves out what is null */
        } else if (!f) {
            report(w, false,
                   "not a field of the Engine API's ContainerCreate body that ledge knows; passed "
                   "to the engine as given");
            json_t *copy = json_deep_copy(e);
            if (!copy || json_object_set_new(out, k, copy) < 0)
                w->oom = true;
        } else {
            json_t *n = norm(w, f->type, e);
            if (n && json_object_set_new(out, name, n) < 0)
                w->oom = true;
        }
        path_pop(w, mark);
    }
    return out;
}

static json_t *norm(struct walk *w, const struct co_type *t, const json_t *v)
{
    char buf[64];
    if (w->oom)
        return NULL;
    switch (t->kind) {
    case CO_BOOL:
        return norm_bool(w, v);
    case CO_INT:
        return norm_int(w, t, v);
    case CO_STRING:
        return norm_string(w, v);
    case CO_STRSLICE:
        if (json_is_array(v))
            return norm_array(w, &T_STR, v);
        if (json_is_string(v) || json_is_number(v) || json_is_boolean(v)) {
            json_t *s = norm_string(w, v);
            json_t *a = s ? json_array() : NULL;
            if (!a || json_array_append_new(a, s) < 0) {
                json_decref(s);
                json_decref(a);
                return oom(w);
            }
            return a;
        }
        report(w, true, "expected an array of strings or a string, got %s",
               shown(v, buf, sizeof(buf)));
        return NULL;
    case CO_ARRAY:
        if (json_is_array(v))
            return norm_array(w, t->elem, v);
        report(w, true, "expected an array, got %s", shown(v, buf, sizeof(buf)));
        return NULL;
    case CO_MAP:
        if (json_is_object(v))
            return norm_map(w, t->elem, v);
        report(w, true, "expected an object, got %s", shown(v, buf, sizeof(buf)));
        return NULL;
    case CO_OBJECT:
        if (json_is_object(v))
            return norm_object(w, t->fields, v);
        report(w, true, "expected an object, got %s", shown(v, buf, sizeof(buf)));
        return NULL;
    case CO_EMPTY:
        /* an empty struct: whatever an object holds is ignored */
        if (json_is_object(v) || json_is_null(v))
            return json_object();
        report(w, true, "expected {}, got %s", shown(v, buf, sizeof(buf)));
        return NULL;
    }
    return NULL;
}

int createopts_normalize(const json_t *given, const char *path, createopts_report_fn report_fn,
                         void *ud, json_t **ret)
{
    struct walk w = {.report = report_fn, .ud = ud};
    snprintf(w.path, sizeof(w.path), "%s", path ? path : "");
    if (!json_is_object(given)) {
        char buf[64];
        report(&w, true, "expected an object, got %s", shown(given, buf, sizeof(buf)));
        return -EINVAL;
    }
    json_t *out = norm(&w, &T_CREATE, given);
    if (w.oom || !out) {
        json_decref(out);
        return w.oom ? -ENOMEM : -EINVAL;
    }
    if (w.bad) {
        json_decref(out);
        return -EINVAL;
    }
    *ret = out;
    return 0;
}

/* ------------------------------------------------------------------ accessors */

/* Walk fields ("HostConfig.NetworkMode") from doc; create makes missing objects on the way. */
static json_t *walk_fields(json_t *doc, const char *fields, bool create, bool parent_only,
                           const char **ret_last)
{
    json_t *cur = doc;
    const char *p = fields;
    for (;;) {
        const char *dot = strchr(p, '.');
        if (!dot && parent_only) {
            *ret_last = p;
            return json_is_object(cur) ? cur : NULL;
        }
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        char name[64];
        if (len == 0 || len >= sizeof(name) || !json_is_object(cur))
            return NULL;
        memcpy(name, p, len);
        name[len] = 0;
        json_t *next = json_object_get(cur, name);
        if (!next && create) {
            next = json_object();
            if (!next || json_object_set_new(cur, name, next) < 0)
                return NULL;
        }
        if (!next)
            return NULL;
        cur = next;
        if (!dot)
            return cur;
        p = dot + 1;
    }
}

const json_t *createopts_get(const json_t *doc, const char *fields)
{
    return walk_fields((json_t *)doc, fields, false, false, NULL);
}

const char *createopts_string(const json_t *doc, const char *fields)
{
    return json_string_value(createopts_get(doc, fields));
}

bool createopts_bool(const json_t *doc, const char *fields, bool dflt)
{
    const json_t *v = createopts_get(doc, fields);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

int64_t createopts_int(const json_t *doc, const char *fields, int64_t dflt)
{
    const json_t *v = createopts_get(doc, fields);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

json_t *createopts_object(json_t *doc, const char *fields)
{
    json_t *o = walk_fields(doc, fields, true, false, NULL);
    return json_is_object(o) ? o : NULL;
}

int createopts_set(json_t *doc, const char *fields, json_t *value)
{
    const char *last = NULL;
    json_t *parent = NULL;
    const char *dot = strrchr(fields, '.');
    if (dot) {
        char up[256];
        if ((size_t)(dot - fields) >= sizeof(up)) {
            json_decref(value);
            return -EINVAL;
        }
        memcpy(up, fields, (size_t)(dot - fields));
        up[dot - fields] = 0;
        parent = createopts_object(doc, up);
        last = dot + 1;
    } else {
        parent = json_is_object(doc) ? doc : NULL;
        last = fields;
    }
    if (!parent || !value) {
        json_decref(value);
        return value ? -EINVAL : -ENOMEM;
    }
    return json_object_set_new(parent, last, value) < 0 ? -ENOMEM : 0;
}

int createopts_append(json_t *doc, const char *fields, const json_t *add)
{
    if (json_array_size(add) == 0)
        return 0;
    json_t *arr = (json_t *)createopts_get(doc, fields);
    if (!arr) {
        int r = createopts_set(doc, fields, json_array());
        if (r < 0)
            return r;
        arr = (json_t *)createopts_get(doc, fields);
    }
    if (!json_is_array(arr))
        return -EINVAL;
    size_t i;
    json_t *v;
    json_array_foreach (add, i, v)
        if (json_array_append(arr, v) < 0)
            return -ENOMEM;
    return 0;
}

bool createopts_known(const char *fields)
{
    const struct co_type *t = &T_CREATE;
    const char *p = fields;
    for (;;) {
        if (t->kind != CO_OBJECT)
            return false;
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        const struct co_field *f = field_find(t->fields, p, len);
        if (!f || strncmp(f->name, p, len) != 0)
            return false;
        if (!dot)
            return true;
        t = f->type;
        p = dot + 1;
    }
}
