/* iothub.c — IoT Hub MQTT conventions: user name and topic parsing, property bags, topic builders.
 * Facts from azure-iot-sdk-c iothubtransport_mqtt_common.c and azure-iot-sdk-node mqtt.ts. */
#include "mqtt/iothub.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "mqtt/topic.h"

#define SYSPROP(id, key) [id] = {key, sizeof(key) - 1}
static const struct {
    const char *key;
    uint8_t len;
} sysprops[IOTHUB_PROP_COUNT] = {
    SYSPROP(IOTHUB_PROP_MESSAGE_ID, "$.mid"),
    SYSPROP(IOTHUB_PROP_CORRELATION_ID, "$.cid"),
    SYSPROP(IOTHUB_PROP_USER_ID, "$.uid"),
    SYSPROP(IOTHUB_PROP_TO, "$.to"),
    SYSPROP(IOTHUB_PROP_EXPIRY_TIME_UTC, "$.exp"),
    SYSPROP(IOTHUB_PROP_CONTENT_TYPE, "$.ct"),
    SYSPROP(IOTHUB_PROP_CONTENT_ENCODING, "$.ce"),
    SYSPROP(IOTHUB_PROP_OUTPUT_NAME, "$.on"),
    SYSPROP(IOTHUB_PROP_CONNECTION_DEVICE_ID, "$.cdid"),
    SYSPROP(IOTHUB_PROP_CONNECTION_MODULE_ID, "$.cmid"),
    SYSPROP(IOTHUB_PROP_INTERFACE_ID, "$.ifid"),
    SYSPROP(IOTHUB_PROP_CREATION_TIME_UTC, "$.ctime"),
    SYSPROP(IOTHUB_PROP_COMPONENT_NAME, "$.sub"),
    SYSPROP(IOTHUB_PROP_MESSAGE_SCHEMA, "$.schema"),
    SYSPROP(IOTHUB_PROP_DIAG_ID, "$.diagid"),
    SYSPROP(IOTHUB_PROP_DIAG_CONTEXT, "$.diagctx"),
};

const char *iothub_sysprop_key(enum iothub_sysprop p)
{
    return (unsigned)p < IOTHUB_PROP_COUNT ? sysprops[p].key : NULL;
}

static const char *const kind_names[] = {
    [IOTHUB_TOPIC_UNKNOWN] = "unknown",
    [IOTHUB_TOPIC_DEVICE_EVENTS] = "device events",
    [IOTHUB_TOPIC_MODULE_EVENTS] = "module events",
    [IOTHUB_TOPIC_TWIN_GET] = "twin get",
    [IOTHUB_TOPIC_TWIN_REPORTED] = "twin reported patch",
    [IOTHUB_TOPIC_METHOD_RESPONSE] = "method response",
    [IOTHUB_TOPIC_MODULE_INPUT] = "module input",
    [IOTHUB_TOPIC_TWIN_RESPONSE] = "twin response",
    [IOTHUB_TOPIC_TWIN_DESIRED] = "twin desired patch",
    [IOTHUB_TOPIC_METHOD_REQUEST] = "method request",
    [IOTHUB_TOPIC_DEVICEBOUND] = "cloud-to-device message",
};

const char *iothub_topic_kind_name(enum iothub_topic_kind kind)
{
    return (unsigned)kind < ARRAY_SIZE(kind_names) ? kind_names[kind] : "unknown";
}

/* ---- small span helpers ---- */

struct cursor {
    const char *p;
    const char *end;
};

static bool eat(struct cursor *c, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* A non-empty level up to the next '/' (not consumed) or the end. */
static bool level(struct cursor *c, struct mqtt_str *ret)
{
    const char *slash = memchr(c->p, '/', (size_t)(c->end - c->p));
    const char *stop = slash ? slash : c->end;
    if (stop == c->p)
        return false;
    *ret = (struct mqtt_str){c->p, (size_t)(stop - c->p)};
    c->p = stop;
    return true;
}

static bool at_end(const struct cursor *c)
{
    return c->p == c->end;
}

/* Next "k=v" of an '&'-separated list; false at the end. Empty pairs are skipped. */
static bool next_pair(struct cursor *c, struct mqtt_str *ret_key, struct mqtt_str *ret_value)
{
    while (c->p < c->end) {
        const char *amp = memchr(c->p, '&', (size_t)(c->end - c->p));
        const char *stop = amp ? amp : c->end;
        const char *start = c->p;
        c->p = amp ? amp + 1 : c->end;
        if (stop == start)
            continue;
        const char *eq = memchr(start, '=', (size_t)(stop - start));
        if (eq) {
            *ret_key = (struct mqtt_str){start, (size_t)(eq - start)};
            *ret_value = (struct mqtt_str){eq + 1, (size_t)(stop - eq - 1)};
        } else {
            *ret_key = (struct mqtt_str){start, (size_t)(stop - start)};
            *ret_value = (struct mqtt_str){stop, 0};
        }
        return true;
    }
    return false;
}

static bool parse_u64(struct mqtt_str s, uint64_t *ret)
{
    if (s.len == 0 || s.len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned char)s.ptr[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *ret = v;
    return true;
}

/* A status: optional '-' and 1..9 digits (sdk-c formats method results with %d). */
static bool parse_status(struct mqtt_str s, int *ret)
{
    bool neg = s.len > 0 && s.ptr[0] == '-';
    struct mqtt_str digits = {s.ptr + neg, s.len - neg};
    uint64_t v;
    if (digits.len == 0 || digits.len > 9 || !parse_u64(digits, &v))
        return false;
    *ret = neg ? -(int)v : (int)v;
    return true;
}

/* ---- user name ---- */

int iothub_username_parse(const char *s, size_t n, struct iothub_username *ret, struct lerr *e)
{
    static const char shape[] = "expected <host>/<deviceId>[/<moduleId>]/?api-version=<v>";
    const char *q = memchr(s, '?', n);
    if (!q)
        return lerr_set(e, -EINVAL, "user name: no query, %s", shape);

    struct iothub_username u = {0};
    struct mqtt_str levels[3];
    size_t nlevels = 0;
    struct cursor c = {s, q};
    while (!at_end(&c)) {
        if (nlevels == ARRAY_SIZE(levels))
            return lerr_set(e, -EINVAL, "user name: too many path levels, %s", shape);
        if (!level(&c, &levels[nlevels]))
            return lerr_set(e, -EINVAL, "user name: empty path level, %s", shape);
        nlevels++;
        /* the path may or may not end with '/' before the '?' */
        if (!at_end(&c))
            c.p++;
    }
    if (nlevels < 2)
        return lerr_set(e, -EINVAL, "user name: %s", shape);
    u.host = levels[0];
    u.device_id = levels[1];
    if (nlevels == 3)
        u.module_id = levels[2];

    c = (struct cursor){q + 1, s + n};
    struct mqtt_str k, v;
    while (next_pair(&c, &k, &v)) {
        if (k.len == 0)
            return lerr_set(e, -EINVAL, "user name: query parameter without a name");
        if (u.n_params == IOTHUB_USERNAME_PARAMS_MAX)
            return lerr_set(e, -E2BIG, "user name: more than %d query parameters",
                            IOTHUB_USERNAME_PARAMS_MAX);
        u.params[u.n_params++] = (struct iothub_kv){k, v};
        if (mqtt_str_eq(k, "api-version"))
            u.api_version = v;
    }
    if (u.api_version.len == 0)
        return lerr_set(e, -EINVAL, "user name: api-version is required");
    *ret = u;
    return 0;
}

bool iothub_username_param(const struct iothub_username *u, const char *key,
                           struct mqtt_str *ret_value)
{
    for (size_t i = u->n_params; i-- > 0;) {
        if (mqtt_str_eq(u->params[i].key, key)) {
            *ret_value = u->params[i].value;
            return true;
        }
    }
    return false;
}

/* ---- topics ---- */

/* After a verb: optional '/', then nothing or "?<query>"; picks out $rid and $version. Returns
 * 1 on a match, 0 for another shape, -EINVAL for a bad $version. */
static int twin_query(struct cursor *c, struct iothub_topic *t, const char *what, struct lerr *e)
{
    if (!at_end(c) && *c->p == '/')
        c->p++;
    if (!at_end(c) && *c->p != '?')
        return 0;
    if (!at_end(c))
        c->p++;
    struct mqtt_str k, v;
    while (next_pair(c, &k, &v)) {
        if (mqtt_str_eq(k, "$rid")) {
            t->rid = v;
        } else if (mqtt_str_eq(k, "$version")) {
            if (!parse_u64(v, &t->version))
                return lerr_set(e, -EINVAL, "%s: $version is not a number", what);
            t->has_version = true;
        }
    }
    return 1;
}

static int parse_iothub_topic(struct cursor *c, struct iothub_topic *t, struct lerr *e)
{
    const char *what;
    bool need_rid = true;
    struct mqtt_str status = {0};

    if (eat(c, "twin/")) {
        if (eat(c, "GET")) {
            t->kind = IOTHUB_TOPIC_TWIN_GET;
            what = "$iothub/twin/GET";
        } else if (eat(c, "PATCH/properties/reported")) {
            t->kind = IOTHUB_TOPIC_TWIN_REPORTED;
            what = "$iothub/twin/PATCH/properties/reported";
        } else if (eat(c, "PATCH/properties/desired")) {
            t->kind = IOTHUB_TOPIC_TWIN_DESIRED;
            what = "$iothub/twin/PATCH/properties/desired";
            need_rid = false;
        } else if (eat(c, "res/") && level(c, &status)) {
            t->kind = IOTHUB_TOPIC_TWIN_RESPONSE;
            what = "$iothub/twin/res";
        } else {
            return 0;
        }
    } else if (eat(c, "methods/")) {
        if (eat(c, "res/") && level(c, &status)) {
            t->kind = IOTHUB_TOPIC_METHOD_RESPONSE;
            what = "$iothub/methods/res";
        } else if (eat(c, "POST/") && level(c, &t->method)) {
            t->kind = IOTHUB_TOPIC_METHOD_REQUEST;
            what = "$iothub/methods/POST";
        } else {
            return 0;
        }
    } else {
        return 0;
    }
    int r = twin_query(c, t, what, e);
    if (r <= 0)
        return r;
    if (status.ptr && !parse_status(status, &t->status))
        return lerr_set(e, -EINVAL, "%s: status is not a number", what);
    if (need_rid && t->rid.len == 0)
        return lerr_set(e, -EINVAL, "%s: missing $rid", what);
    if (t->kind == IOTHUB_TOPIC_TWIN_DESIRED && !t->has_version)
        return lerr_set(e, -EINVAL, "%s: missing $version", what);
    return 1;
}

/* "messages/events" then nothing, or '/' and the bag (its one trailing '/' dropped: the Node SDK
 * ends output topics with '/'). */
static bool events_tail(struct cursor *c, struct iothub_topic *t)
{
    if (!eat(c, "messages/events"))
        return false;
    if (at_end(c) || *c->p == '/') {
        const char *start = at_end(c) ? c->p : c->p + 1;
        size_t len = (size_t)(c->end - start);
        if (len > 0 && start[len - 1] == '/')
            len--;
        t->propbag = (struct mqtt_str){start, len};
        return true;
    }
    return false;
}

static int parse_devices_topic(struct cursor *c, struct iothub_topic *t)
{
    if (!level(c, &t->device_id) || !eat(c, "/"))
        return 0;
    if (events_tail(c, t)) {
        t->kind = IOTHUB_TOPIC_DEVICE_EVENTS;
        return 1;
    }
    if (eat(c, "messages/devicebound")) {
        if (!at_end(c) && *c->p != '/')
            return 0;
        const char *start = at_end(c) ? c->p : c->p + 1;
        size_t len = (size_t)(c->end - start);
        if (len > 0 && start[len - 1] == '/')
            len--;
        t->propbag = (struct mqtt_str){start, len};
        t->kind = IOTHUB_TOPIC_DEVICEBOUND;
        return 1;
    }
    if (!eat(c, "modules/") || !level(c, &t->module_id) || !eat(c, "/"))
        return 0;
    if (events_tail(c, t)) {
        t->kind = IOTHUB_TOPIC_MODULE_EVENTS;
        return 1;
    }
    if (eat(c, "inputs/") && level(c, &t->input)) {
        const char *start = at_end(c) ? c->p : c->p + 1;
        t->propbag = (struct mqtt_str){start, (size_t)(c->end - start)};
        if (t->propbag.len > 0 && start[t->propbag.len - 1] == '/')
            t->propbag.len--;
        t->kind = IOTHUB_TOPIC_MODULE_INPUT;
        return 1;
    }
    return 0;
}

int iothub_topic_parse(const char *s, size_t n, struct iothub_topic *ret, struct lerr *e)
{
    struct iothub_topic t = {0};
    struct cursor c = {s, s + n};
    int r = 0;
    if (eat(&c, "devices/"))
        r = parse_devices_topic(&c, &t);
    else if (eat(&c, "$iothub/"))
        r = parse_iothub_topic(&c, &t, e);
    if (r < 0)
        return r;
    if (r == 0)
        t = (struct iothub_topic){.kind = IOTHUB_TOPIC_UNKNOWN};
    *ret = t;
    return 0;
}

/* ---- property bags ---- */

static inline int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode in into out (never longer); a '%' without two hex digits stays literal.
 * *ret_ascii tells whether every byte out is in 1..127, so no UTF-8 check is needed. */
static size_t pct_decode(const char *in, size_t n, char *out, bool *ret_ascii)
{
    size_t k = 0;
    uint8_t acc = 0;
    bool nul = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)in[i];
        if (c == '%' && i + 2 < n) {
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi >= 0 && lo >= 0) {
                c = (uint8_t)(hi << 4 | lo);
                i += 2;
            }
        }
        nul |= c == 0;
        acc |= c;
        out[k++] = (char)c;
    }
    *ret_ascii = !(acc & 0x80) && !nul;
    return k;
}

static int sysprop_lookup(struct mqtt_str key)
{
    if (key.len < 4 || key.ptr[0] != '$' || key.ptr[1] != '.')
        return -1;
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++)
        if (sysprops[i].len == key.len && sysprops[i].key[2] == key.ptr[2] &&
            memcmp(key.ptr + 3, sysprops[i].key + 3, key.len - 3) == 0)
            return i;
    return -1;
}

int iothub_props_parse(const char *bag, size_t n, char *scratch, size_t scratch_size,
                       struct iothub_props *ret, struct lerr *e)
{
    if (n > MQTT_TOPIC_MAX)
        return lerr_set(e, -E2BIG, "property bag: longer than %u bytes", MQTT_TOPIC_MAX);
    if (scratch_size < n)
        return lerr_set(e, -EINVAL, "property bag: scratch buffer too small");

    struct iothub_props p;
    memset(p.sys, 0, sizeof(p.sys));
    p.n_app = 0;
    char *w = scratch;
    struct cursor c = {bag, bag + n};
    struct mqtt_str rk, rv;
    for (size_t idx = 1; next_pair(&c, &rk, &rv); idx++) {
        bool k_ascii, v_ascii;
        struct mqtt_str k = {w, pct_decode(rk.ptr, rk.len, w, &k_ascii)};
        w += k.len;
        struct mqtt_str v = {w, pct_decode(rv.ptr, rv.len, w, &v_ascii)};
        w += v.len;
        if (k.len == 0)
            return lerr_set(e, -EINVAL, "property bag: property %zu has an empty name", idx);
        int r = k_ascii ? 0 : mqtt_utf8_check(k.ptr, k.len, e);
        if (r < 0) {
            lerr_prefix(e, "property bag: name of property %zu", idx);
            return r;
        }
        r = v_ascii ? 0 : mqtt_utf8_check(v.ptr, v.len, e);
        if (r < 0) {
            lerr_prefix(e, "property bag: value of property %zu", idx);
            return r;
        }

        int sp = sysprop_lookup(k);
        if (sp >= 0) {
            p.sys[sp] = v;
            continue;
        }
        size_t i;
        for (i = 0; i < p.n_app; i++)
            if (p.app[i].key.len == k.len && memcmp(p.app[i].key.ptr, k.ptr, k.len) == 0)
                break;
        if (i == p.n_app) {
            if (p.n_app == IOTHUB_APP_PROPS_MAX)
                return lerr_set(e, -E2BIG, "property bag: more than %d application properties",
                                IOTHUB_APP_PROPS_MAX);
            p.app[p.n_app++].key = k;
        }
        p.app[i].value = v;
    }
    /* only the used part of the array: the struct is a few KiB */
    memcpy(ret->sys, p.sys, sizeof(p.sys));
    memcpy(ret->app, p.app, p.n_app * sizeof(p.app[0]));
    ret->n_app = p.n_app;
    return 0;
}

/* Unreserved characters kept raw; see iothub_props_encode(). */
static const uint8_t keep_raw[256] = {
    ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['-'] = 1, ['.'] = 1, ['_'] = 1,
};

static size_t pct_len(const char *s, size_t n)
{
    size_t len = n;
    for (size_t i = 0; i < n; i++)
        len += keep_raw[(uint8_t)s[i]] ? 0 : 2;
    return len;
}

static char *pct_write(char *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = (uint8_t)s[i];
        if (keep_raw[ch]) {
            *w++ = (char)ch;
        } else {
            *w++ = '%';
            *w++ = hex[ch >> 4];
            *w++ = hex[ch & 15];
        }
    }
    return w;
}

static int pct_encode(struct lbuf *b, const char *s, size_t n)
{
    int r = lbuf_reserve(b, pct_len(s, n));
    if (r < 0)
        return r;
    b->len = (size_t)(pct_write(b->data + b->len, s, n) - b->data);
    b->data[b->len] = 0;
    return 0;
}

static inline char *put_mem(char *w, const void *p, size_t n)
{
    if (n)
        memcpy(w, p, n);
    return w + n;
}

/* Property bags are sized first and then written in one go. "$.mid" goes out as "%24.mid":
 * sdk-c matches system keys in exactly that form. */
static size_t props_len(const struct iothub_props *p, unsigned skip_mask)
{
    size_t len = 0, n = 0;
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++) {
        if (!p->sys[i].ptr || (skip_mask & (1u << i)))
            continue;
        len += 2 + sysprops[i].len + 1 + pct_len(p->sys[i].ptr, p->sys[i].len);
        n++;
    }
    for (size_t i = 0; i < p->n_app && i < IOTHUB_APP_PROPS_MAX; i++) {
        len += pct_len(p->app[i].key.ptr, p->app[i].key.len) + 1 +
               pct_len(p->app[i].value.ptr, p->app[i].value.len);
        n++;
    }
    return len + (n ? n - 1 : 0); /* '&' separators */
}

static char *props_write(char *w, const struct iothub_props *p, unsigned skip_mask)
{
    bool first = true;
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++) {
        if (!p->sys[i].ptr || (skip_mask & (1u << i)))
            continue;
        if (!first)
            *w++ = '&';
        w = put_mem(w, "%24", 3);
        w = put_mem(w, sysprops[i].key + 1, sysprops[i].len - 1u);
        *w++ = '=';
        w = pct_write(w, p->sys[i].ptr, p->sys[i].len);
        first = false;
    }
    for (size_t i = 0; i < p->n_app && i < IOTHUB_APP_PROPS_MAX; i++) {
        if (!first)
            *w++ = '&';
        w = pct_write(w, p->app[i].key.ptr, p->app[i].key.len);
        *w++ = '=';
        w = pct_write(w, p->app[i].value.ptr, p->app[i].value.len);
        first = false;
    }
    return w;
}

static int rollback(struct lbuf *b, size_t start, int r)
{
    if (b->data) {
        b->len = start;
        b->data[start] = 0;
    }
    return r;
}

int iothub_props_encode(struct lbuf *b, const struct iothub_props *p)
{
    size_t len = props_len(p, 0);
    int r = lbuf_reserve(b, len);
    if (r < 0)
        return r;
    b->len = (size_t)(props_write(b->data + b->len, p, 0) - b->data);
    b->data[b->len] = 0;
    return 0;
}

/* A topic level we insert: non-empty, valid in a topic name (UTF-8, no NUL or wildcard), and
 * without the characters that would change the topic's shape. */
static bool level_ok(struct mqtt_str s, const char *forbidden)
{
    if (s.len == 0 || !s.ptr || mqtt_topic_name_check(s.ptr, s.len, NULL) < 0)
        return false;
    for (const char *f = forbidden; *f; f++)
        if (memchr(s.ptr, *f, s.len))
            return false;
    return true;
}

#define ID_FORBIDDEN "/"
#define RID_FORBIDDEN "/&"

static int put(struct lbuf *b, struct mqtt_str s)
{
    return lbuf_append(b, s.ptr, s.len);
}

/* Final check of a topic built at b->data[start..] piece by piece. */
static int topic_done(struct lbuf *b, size_t start, int r)
{
    if (r < 0)
        return rollback(b, start, r);
    if (b->len - start > MQTT_TOPIC_MAX)
        return rollback(b, start, -E2BIG);
    return 0;
}

/* "devices/<d>[/modules/<m>]<mid><tail>/<bag>": sized, reserved and written once (hot path). */
static int devices_topic(struct lbuf *b, struct mqtt_str d, struct mqtt_str m, const char *mid,
                         struct mqtt_str tail, const struct iothub_props *props, unsigned skip)
{
    size_t mid_len = strlen(mid);
    size_t total = 8 + d.len + (m.len ? 9 + m.len : 0) + mid_len + tail.len + 1 +
                   (props ? props_len(props, skip) : 0);
    if (total > MQTT_TOPIC_MAX)
        return -E2BIG;
    int r = lbuf_reserve(b, total);
    if (r < 0)
        return r;
    char *w = b->data + b->len;
    w = put_mem(w, "devices/", 8);
    w = put_mem(w, d.ptr, d.len);
    if (m.len) {
        w = put_mem(w, "/modules/", 9);
        w = put_mem(w, m.ptr, m.len);
    }
    w = put_mem(w, mid, mid_len);
    w = put_mem(w, tail.ptr, tail.len);
    *w++ = '/';
    if (props)
        w = props_write(w, props, skip);
    b->len = (size_t)(w - b->data);
    b->data[b->len] = 0;
    return 0;
}

int iothub_topic_module_input(struct lbuf *b, struct mqtt_str device_id, struct mqtt_str module_id,
                              struct mqtt_str input, const struct iothub_props *props)
{
    if (!level_ok(device_id, ID_FORBIDDEN) || !level_ok(module_id, ID_FORBIDDEN) ||
        !level_ok(input, ID_FORBIDDEN))
        return -EINVAL;
    /* Both SDKs need the '/' after the input name, even with an empty bag. */
    return devices_topic(b, device_id, module_id, "/inputs/", input, props,
                         1u << IOTHUB_PROP_OUTPUT_NAME);
}

int iothub_topic_devicebound(struct lbuf *b, struct mqtt_str device_id,
                             const struct iothub_props *props)
{
    if (!level_ok(device_id, ID_FORBIDDEN))
        return -EINVAL;
    return devices_topic(b, device_id, (struct mqtt_str){"", 0}, "/messages/devicebound",
                         (struct mqtt_str){"", 0}, props, 0);
}

int iothub_topic_events(struct lbuf *b, struct mqtt_str device_id, struct mqtt_str module_id,
                        const struct iothub_props *props)
{
    if (!level_ok(device_id, ID_FORBIDDEN) ||
        (module_id.len > 0 && !level_ok(module_id, ID_FORBIDDEN)))
        return -EINVAL;
    return devices_topic(b, device_id, module_id, "/messages/events", (struct mqtt_str){"", 0},
                         props, 0);
}

/* "<prefix><middle>/?$rid=<rid><suffix>" */
static int iothub_topic(struct lbuf *b, const char *prefix, const char *middle, struct mqtt_str rid,
                        const char *suffix)
{
    size_t start = b->len;
    int r = lbuf_puts(b, prefix);
    if (r >= 0 && middle)
        r = lbuf_printf(b, "%s/", middle);
    if (r >= 0)
        r = lbuf_puts(b, "?$rid=");
    if (r >= 0)
        r = put(b, rid);
    if (r >= 0 && suffix)
        r = lbuf_puts(b, suffix);
    return topic_done(b, start, r);
}

int iothub_topic_twin_response(struct lbuf *b, int status, struct mqtt_str rid, bool has_version,
                               uint64_t version)
{
    if (!level_ok(rid, RID_FORBIDDEN))
        return -EINVAL;
    char st[16], ver[40];
    snprintf(st, sizeof(st), "%d", status);
    if (has_version)
        snprintf(ver, sizeof(ver), "&$version=%" PRIu64, version);
    return iothub_topic(b, "$iothub/twin/res/", st, rid, has_version ? ver : NULL);
}

int iothub_topic_twin_desired(struct lbuf *b, uint64_t version)
{
    size_t start = b->len;
    int r = lbuf_printf(b, "$iothub/twin/PATCH/properties/desired/?$version=%" PRIu64, version);
    return topic_done(b, start, r);
}

int iothub_topic_method_request(struct lbuf *b, struct mqtt_str method, struct mqtt_str rid)
{
    if (!level_ok(method, ID_FORBIDDEN "?") || !level_ok(rid, RID_FORBIDDEN))
        return -EINVAL;
    size_t start = b->len;
    int r = lbuf_puts(b, "$iothub/methods/POST/");
    if (r >= 0)
        r = put(b, method);
    if (r >= 0)
        r = lbuf_puts(b, "/?$rid=");
    if (r >= 0)
        r = put(b, rid);
    return topic_done(b, start, r);
}

int iothub_topic_twin_get(struct lbuf *b, struct mqtt_str rid)
{
    if (!level_ok(rid, RID_FORBIDDEN))
        return -EINVAL;
    return iothub_topic(b, "$iothub/twin/GET/", NULL, rid, NULL);
}

int iothub_topic_twin_reported(struct lbuf *b, struct mqtt_str rid)
{
    if (!level_ok(rid, RID_FORBIDDEN))
        return -EINVAL;
    return iothub_topic(b, "$iothub/twin/PATCH/properties/reported/", NULL, rid, NULL);
}

int iothub_topic_method_response(struct lbuf *b, int status, struct mqtt_str rid)
{
    if (!level_ok(rid, RID_FORBIDDEN))
        return -EINVAL;
    char st[16];
    snprintf(st, sizeof(st), "%d", status);
    return iothub_topic(b, "$iothub/methods/res/", st, rid, NULL);
}

int iothub_username_build(struct lbuf *b, struct mqtt_str host, struct mqtt_str device_id,
                          struct mqtt_str module_id, struct mqtt_str api_version,
                          struct mqtt_str client_type)
{
    if (!level_ok(host, "/?") || !level_ok(device_id, "/?") ||
        (module_id.len > 0 && !level_ok(module_id, "/?")) || !level_ok(api_version, "&"))
        return -EINVAL;
    size_t start = b->len;
    int r = put(b, host);
    if (r >= 0)
        r = lbuf_putc(b, '/');
    if (r >= 0)
        r = put(b, device_id);
    if (r >= 0 && module_id.len > 0) {
        r = lbuf_putc(b, '/');
        if (r >= 0)
            r = put(b, module_id);
    }
    if (r >= 0)
        r = lbuf_puts(b, "/?api-version=");
    if (r >= 0)
        r = put(b, api_version);
    if (r >= 0 && client_type.len > 0) {
        r = lbuf_puts(b, "&DeviceClientType=");
        if (r >= 0)
            r = pct_encode(b, client_type.ptr, client_type.len);
    }
    if (r >= 0 && b->len - start > MQTT_STRING_MAX)
        r = -E2BIG;
    return r < 0 ? rollback(b, start, r) : 0;
}
