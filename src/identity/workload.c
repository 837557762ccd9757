/* workload.c — workload API request handling (see workload.h): target parsing, a route table,
 * api-version and caller checks, then one handler per call. Everything in a request is untrusted
 * module input; secrets (module keys, the CA key) never appear in a reply or message. */
#include "identity/workload.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "crypt.h"

#define MAX_SEGMENTS 8
#define JSON_TYPE "application/json"

struct workload_ctx {
    char *iothub_hostname;
    char *device_id;
    char *manifest_bundle;
    char *hub_module_id;
    struct lstrv reserved;
    int64_t identity_lifetime_s, server_lifetime_s;
    size_t max_body;
    int64_t (*now)(void *userdata);
    void *now_userdata;
    const struct identity_keys *keys;
    struct ca *ca;
};

/* One request being handled. */
struct wreq {
    struct workload_ctx *ctx;
    const struct workload_caller *caller;
    const char *module_id; /* decoded path segments, when the route has them */
    const char *gen_id;
    json_t *body; /* POST body object */
    int64_t now;
    struct workload_reply *reply;
};

/* ---- versions ------------------------------------------------------------------------------ */

/* Azure/iotedge edgelet/edgelet-http/src/version.rs; "2020-10-10" is the name 1.2 releases used
 * for what became 2020-07-07 (commit "Rename 2020-10-10 workload API version to 2020-07-07"). */
static const char *const api_versions[] = {
    "2018-06-28", "2019-01-30", "2019-10-22", "2019-11-05",
    "2020-07-07", "2020-10-10", "2021-12-07", "2022-08-03",
};

bool workload_api_version_supported(const char *v)
{
    for (size_t i = 0; v && i < ARRAY_SIZE(api_versions); i++)
        if (strcmp(v, api_versions[i]) == 0)
            return true;
    return false;
}

/* ---- replies ------------------------------------------------------------------------------- */

void workload_reply_done(struct workload_reply *r)
{
    if (!r)
        return;
    if (r->body) {
        /* Replies can carry private keys (certificate responses) and plaintexts. */
        lcrypto_wipe(r->body, r->body_len);
        free(r->body);
    }
    *r = (struct workload_reply){0};
}

/* Set the reply from a JSON object (reference stolen). */
static int reply_json(struct workload_reply *r, int status, json_t *j)
{
    if (!j)
        return -ENOMEM;
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return -ENOMEM;
    workload_reply_done(r);
    r->status = status;
    r->content_type = JSON_TYPE;
    r->body = text;
    r->body_len = strlen(text);
    return 0;
}

static int reply_error(struct workload_reply *r, int status, const char *fmt, ...) _printf_(3, 4);
static int reply_error(struct workload_reply *r, int status, const char *fmt, ...)
{
    char msg[LERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* json_string needs UTF-8: messages quote request bytes, which may not be. */
    json_t *s = json_string(msg);
    if (!s) {
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        s = json_string(msg);
    }
    return reply_json(r, status, json_pack("{s:o?}", "message", s));
}

/* Map an lerr from a lower layer to a reply; internal failures do not echo details. */
static int reply_lerr(struct workload_reply *r, int status, const struct lerr *e)
{
    if (status >= 500)
        return reply_error(r, status, "internal error: %s", lerr_str(e));
    return reply_error(r, status, "%s", lerr_str(e));
}

/* ---- request body helpers ------------------------------------------------------------------ */

/* A required string field; replies 400 and returns -EINVAL when absent or not a string. */
static int body_str(struct wreq *q, const char *key, bool required, const char **ret)
{
    json_t *v = json_object_get(q->body, key);
    if (!v) {
        if (!required) {
            *ret = NULL;
            return 0;
        }
        reply_error(q->reply, 400, "missing required field '%s'", key);
        return -EINVAL;
    }
    if (!json_is_string(v)) {
        reply_error(q->reply, 400, "field '%s' must be a string", key);
        return -EINVAL;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        reply_error(q->reply, 400, "field '%s' contains a NUL character", key);
        return -EINVAL;
    }
    *ret = json_string_value(v);
    return 0;
}

static int body_b64(struct wreq *q, const char *key, struct lbuf *out)
{
    const char *s;
    int r = body_str(q, key, true, &s);
    if (r < 0)
        return r;
    r = lcrypto_b64_decode(s, json_string_length(json_object_get(q->body, key)), out);
    if (r < 0) {
        if (r == -ENOMEM)
            return r;
        reply_error(q->reply, 400, "field '%s' is not valid base64", key);
        return -EINVAL;
    }
    return 0;
}

static int reply_b64(struct wreq *q, int status, const char *key, const void *data, size_t n)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    int r = lcrypto_b64_encode(data, n, &b);
    if (r < 0)
        return r;
    r = reply_json(q->reply, status, json_pack("{s:s}", key, b.data ? b.data : ""));
    if (b.data)
        lcrypto_wipe(b.data, b.len);
    return r;
}

/* "expiration": optional RFC 3339 time in the future; gives the lifetime to ask for (capped by
 * max_s). The shape is checked before parsing so nothing odd reaches strptime/sscanf. */
static bool rfc3339_shape(const char *s)
{
    size_t n = strlen(s);
    if (n < 20 || n > 40)
        return false;
    static const char pat[] = "dddd-dd-ddTdd:dd:dd";
    for (size_t i = 0; i < 19; i++) {
        char c = s[i];
        if (pat[i] == 'd' ? !(c >= '0' && c <= '9') : !(c == pat[i] || (i == 10 && c == ' ')))
            return false;
    }
    size_t i = 19;
    if (s[i] == '.') {
        size_t d = ++i;
        while (s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    if ((s[i] == 'Z' || s[i] == 'z') && s[i + 1] == 0)
        return true;
    return (s[i] == '+' || s[i] == '-') && n - i == 6 && s[i + 1] >= '0' && s[i + 1] <= '9' &&
           s[i + 2] >= '0' && s[i + 2] <= '9' && s[i + 3] == ':' && s[i + 4] >= '0' &&
           s[i + 4] <= '9' && s[i + 5] >= '0' && s[i + 5] <= '9';
}

static int requested_lifetime(struct wreq *q, int64_t max_s, int64_t *ret)
{
    const char *exp;
    int r = body_str(q, "expiration", false, &exp);
    if (r < 0)
        return r;
    int64_t lifetime = max_s > 0 ? max_s : CA_DEFAULT_LEAF_LIFETIME_S;
    if (exp) {
        int64_t ms;
        if (!rfc3339_shape(exp) || ltime_parse_rfc3339(exp, &ms) < 0) {
            reply_error(q->reply, 400, "field 'expiration' is not an RFC 3339 time");
            return -EINVAL;
        }
        int64_t want = ms / 1000 - q->now;
        if (want <= 0) {
            reply_error(q->reply, 400, "field 'expiration' is in the past");
            return -EINVAL;
        }
        lifetime = MIN(lifetime, want);
    }
    *ret = lifetime;
    return 0;
}

/* ---- handlers ------------------------------------------------------------------------------ */

static int handle_trust_bundle(struct wreq *q)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    int r = ca_trust_bundle(q->ctx->ca, &b);
    if (r < 0)
        return reply_error(q->reply, 500, "cannot encode the trust bundle");
    return reply_json(q->reply, 200, json_pack("{s:s}", "certificate", b.data ? b.data : ""));
}

static int handle_manifest_trust_bundle(struct wreq *q)
{
    const char *pem = q->ctx->manifest_bundle ? q->ctx->manifest_bundle : "";
    return reply_json(q->reply, 200, json_pack("{s:s}", "certificate", pem));
}

static int handle_sign(struct wreq *q)
{
    const char *key_id, *algo;
    int r;
    if ((r = body_str(q, "keyId", true, &key_id)) < 0 || (r = body_str(q, "algo", true, &algo)) < 0)
        return r == -EINVAL ? 0 : r;
    if (strcmp(key_id, "primary") != 0)
        return reply_error(q->reply, 400, "field 'keyId' must be \"primary\"");
    if (strcmp(algo, "HMACSHA256") != 0)
        return reply_error(q->reply, 400, "field 'algo' must be \"HMACSHA256\"");
    _cleanup_lbuf_ struct lbuf data = LBUF_INIT;
    if ((r = body_b64(q, "data", &data)) < 0)
        return r == -EINVAL ? 0 : r;
    uint8_t key[IDENTITY_MODULE_KEY_LEN], mac[LCRYPTO_SHA256_LEN];
    r = identity_module_key(q->ctx->keys, q->ctx->device_id, q->module_id, q->gen_id, key);
    if (r >= 0)
        r = lcrypto_hmac_sha256(key, sizeof(key), data.data ? data.data : "", data.len, mac);
    lcrypto_wipe(key, sizeof(key));
    if (r < 0)
        return r == -ENOMEM ? r
                            : reply_error(q->reply, r == -EINVAL ? 400 : 500,
                                          "cannot sign for this module identity");
    return reply_b64(q, 200, "digest", mac, sizeof(mac));
}

static int handle_crypt(struct wreq *q, bool encrypt)
{
    const char *in_field = encrypt ? "plaintext" : "ciphertext";
    _cleanup_lbuf_ struct lbuf in = LBUF_INIT, iv = LBUF_INIT, out = LBUF_INIT;
    int r;
    if ((r = body_b64(q, in_field, &in)) < 0 || (r = body_b64(q, "initializationVector", &iv)) < 0)
        return r == -EINVAL ? 0 : r;
    uint8_t key[CRYPT_KEY_LEN];
    r = identity_module_crypt_key(q->ctx->keys, q->ctx->device_id, q->module_id, q->gen_id, key);
    if (r < 0) {
        lcrypto_wipe(key, sizeof(key));
        return reply_error(q->reply, 400, "cannot derive a key for this module identity");
    }
    struct lerr e = {0};
    if (encrypt)
        r = crypt_encrypt(key, iv.data, iv.len, in.data ? in.data : "", in.len, &out);
    else
        r = crypt_decrypt(key, iv.data, iv.len, in.data ? in.data : "", in.len, &out, &e);
    lcrypto_wipe(key, sizeof(key));
    if (in.data)
        lcrypto_wipe(in.data, in.len);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return encrypt ? reply_error(q->reply, r == -E2BIG ? 413 : 500, "cannot encrypt")
                       : reply_lerr(q->reply, r == -EIO ? 500 : 400, &e);
    r = reply_b64(q, 200, encrypt ? "ciphertext" : "plaintext", out.data ? out.data : "", out.len);
    if (out.data)
        lcrypto_wipe(out.data, out.len);
    return r;
}

static int reply_cert(struct wreq *q, const struct ca_leaf_request *req)
{
    struct lerr e = {0};
    struct ca_leaf leaf = {0};
    int r = ca_issue(q->ctx->ca, req, q->now, &leaf, &e);
    if (r < 0)
        return r == -ENOMEM ? r : reply_lerr(q->reply, r == -EINVAL ? 400 : 500, &e);
    char exp[LTIME_RFC3339_MAX];
    ltime_format_rfc3339(leaf.not_after * 1000, exp);
    r = reply_json(q->reply, 201,
                   json_pack("{s:{s:s,s:s},s:s,s:s}", "privateKey", "type", "key", "bytes",
                             leaf.key_pem, "certificate", leaf.cert_pem, "expiration", exp));
    ca_leaf_done(&leaf);
    return r;
}

static int handle_identity_cert(struct wreq *q)
{
    int64_t lifetime;
    int r = requested_lifetime(q, q->ctx->identity_lifetime_s, &lifetime);
    if (r < 0)
        return r == -EINVAL ? 0 : r;
    if (strlen(q->module_id) > CA_COMMON_NAME_MAX)
        return reply_error(q->reply, 400,
                           "module id is longer than a certificate common name allows (%d)",
                           CA_COMMON_NAME_MAX);
    _cleanup_lbuf_ struct lbuf uri = LBUF_INIT;
    if ((r = lbuf_printf(&uri, "azureiot://%s/devices/", q->ctx->iothub_hostname)) < 0 ||
        (r = lstr_url_encode(q->ctx->device_id, strlen(q->ctx->device_id), &uri)) < 0 ||
        (r = lbuf_puts(&uri, "/modules/")) < 0 ||
        (r = lstr_url_encode(q->module_id, strlen(q->module_id), &uri)) < 0)
        return r;
    struct ca_leaf_request req = {
        .kind = CA_LEAF_CLIENT,
        .common_name = q->module_id,
        .uri = uri.data,
        .lifetime_s = lifetime,
    };
    return reply_cert(q, &req);
}

static bool reserved_name(const struct workload_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->reserved.n; i++)
        if (strcasecmp(ctx->reserved.v[i], name) == 0)
            return true;
    return false;
}

static int handle_server_cert(struct wreq *q)
{
    const char *cn;
    int64_t lifetime;
    int r;
    if ((r = body_str(q, "commonName", true, &cn)) < 0 ||
        (r = requested_lifetime(q, q->ctx->server_lifetime_s, &lifetime)) < 0)
        return r == -EINVAL ? 0 : r;
    bool is_ip = ca_ip_valid(cn);
    if (!is_ip && (!ca_dns_name_valid(cn) || strlen(cn) > CA_COMMON_NAME_MAX))
        return reply_error(q->reply, 400,
                           "field 'commonName' must be a host name of at most %d characters or "
                           "an IP address",
                           CA_COMMON_NAME_MAX);
    if (reserved_name(q->ctx, cn) && !lstr_eq(q->module_id, q->ctx->hub_module_id))
        return reply_error(q->reply, 403,
                           "a server certificate for '%s' is issued only to module '%s'", cn,
                           q->ctx->hub_module_id ? q->ctx->hub_module_id : "(none)");
    /* Like IoT Edge: the module id (without a leading '$') is a second DNS name, so modules can
     * reach each other by container name; only when it is a valid host name. */
    const char *dns[2];
    size_t n_dns = 0;
    if (!is_ip)
        dns[n_dns++] = cn;
    const char *mod = q->module_id[0] == '$' ? q->module_id + 1 : q->module_id;
    if (ca_dns_name_valid(mod) && strcasecmp(mod, cn) != 0)
        dns[n_dns++] = mod;
    struct ca_leaf_request req = {
        .kind = CA_LEAF_SERVER,
        .common_name = cn,
        .dns = dns,
        .n_dns = n_dns,
        .ips = is_ip ? &cn : NULL,
        .n_ips = is_ip ? 1 : 0,
        .lifetime_s = lifetime,
    };
    return reply_cert(q, &req);
}

/* ---- routing ------------------------------------------------------------------------------- */

/* Pattern segments: literal, "{m}" module id, "{g}" generation id. */
struct route {
    const char *method;
    const char *segs[MAX_SEGMENTS];
    int (*handler)(struct wreq *q);
    bool has_body;
};

static int handle_encrypt(struct wreq *q)
{
    return handle_crypt(q, true);
}
static int handle_decrypt(struct wreq *q)
{
    return handle_crypt(q, false);
}

static const struct route routes[] = {
    {"GET", {"trust-bundle"}, handle_trust_bundle, false},
    {"GET", {"manifest-trust-bundle"}, handle_manifest_trust_bundle, false},
    {"POST", {"modules", "{m}", "genid", "{g}", "sign"}, handle_sign, true},
    {"POST", {"modules", "{m}", "genid", "{g}", "encrypt"}, handle_encrypt, true},
    {"POST", {"modules", "{m}", "genid", "{g}", "decrypt"}, handle_decrypt, true},
    {"POST", {"modules", "{m}", "certificate", "identity"}, handle_identity_cert, true},
    {"POST", {"modules", "{m}", "genid", "{g}", "certificate", "server"}, handle_server_cert, true},
};

struct parsed_target {
    char *segs[MAX_SEGMENTS];
    size_t n;
    char *api_version;
    int api_version_count;
};

/* lbuf_steal of a buffer that was only reserved is not NUL-terminated (base/buf.c): make the
 * empty case explicit. */
static char *steal_str(struct lbuf *b)
{
    if (b->len == 0) {
        lbuf_free(b);
        return strdup("");
    }
    return lbuf_steal(b);
}

static void parsed_target_done(struct parsed_target *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->segs[i]);
    free(t->api_version);
}

/* Split "/a/b?x=y" into decoded path segments and the api-version query value. Returns 0,
 * -ENOENT when the path cannot match any route (too many or empty segments), -EINVAL with a
 * reply for a malformed escape, or -ENOMEM. */
static int parse_target(const char *target, struct parsed_target *t, struct workload_reply *rep)
{
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : strlen(target);
    if (plen == 0 || target[0] != '/')
        return -ENOENT;
    const char *p = target + 1, *pend = target + plen;
    while (p <= pend) {
        const char *slash = memchr(p, '/', (size_t)(pend - p));
        const char *send = slash ? slash : pend;
        if (send == p || t->n == MAX_SEGMENTS)
            return -ENOENT;
        struct lbuf b = LBUF_INIT;
        int r = lstr_url_decode(p, (size_t)(send - p), false, &b);
        if (r < 0) {
            lbuf_free(&b);
            if (r == -ENOMEM)
                return r;
            reply_error(rep, 400, "malformed %%-escape in the request path");
            return -EINVAL;
        }
        bool ctl = false;
        for (size_t i = 0; i < b.len; i++)
            ctl |= (unsigned char)b.data[i] < 0x20 || b.data[i] == 0x7f;
        if (ctl) {
            lbuf_free(&b);
            reply_error(rep, 400, "control character in the request path");
            return -EINVAL;
        }
        if (!(t->segs[t->n] = steal_str(&b)))
            return -ENOMEM;
        t->n++;
        p = send + 1;
    }
    if (!q)
        return 0;
    for (const char *f = q + 1; *f;) {
        const char *amp = strchr(f, '&');
        size_t flen = amp ? (size_t)(amp - f) : strlen(f);
        const char *eq = memchr(f, '=', flen);
        size_t klen = eq ? (size_t)(eq - f) : flen;
        if (klen == strlen("api-version") && memcmp(f, "api-version", klen) == 0) {
            t->api_version_count++;
            if (t->api_version_count == 1) {
                struct lbuf b = LBUF_INIT;
                const char *v = eq ? eq + 1 : f + flen;
                int r = lstr_url_decode(v, (size_t)(f + flen - v), true, &b);
                if (r < 0) {
                    lbuf_free(&b);
                    if (r == -ENOMEM)
                        return r;
                    reply_error(rep, 400, "malformed %%-escape in the query");
                    return -EINVAL;
                }
                if (!(t->api_version = steal_str(&b)))
                    return -ENOMEM;
            }
        }
        f += flen + (amp ? 1 : 0);
    }
    return 0;
}

static bool route_matches(const struct route *rt, const struct parsed_target *t)
{
    size_t n = 0;
    while (n < MAX_SEGMENTS && rt->segs[n])
        n++;
    if (n != t->n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (rt->segs[i][0] != '{' && strcmp(rt->segs[i], t->segs[i]) != 0)
            return false;
    return true;
}

static const char *route_param(const struct route *rt, const struct parsed_target *t,
                               const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(rt->segs[i], name) == 0)
            return t->segs[i];
    return NULL;
}

static int dispatch(struct workload_ctx *ctx, const struct workload_caller *caller,
                    const char *method, const char *target, const char *body, size_t body_len,
                    struct workload_reply *rep)
{
    if (!target || !method)
        return reply_error(rep, 400, "missing method or target");
    if (strnlen(target, WORKLOAD_MAX_TARGET + 1) > WORKLOAD_MAX_TARGET)
        return reply_error(rep, 414, "request target longer than %d bytes", WORKLOAD_MAX_TARGET);

    _cleanup_(parsed_target_done) struct parsed_target t = {0};
    int r = parse_target(target, &t, rep);
    if (r == -EINVAL || r == -ENOMEM)
        return r == -EINVAL ? 0 : r;

    const struct route *rt = NULL;
    const char *allow = NULL;
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(routes); i++) {
        if (!route_matches(&routes[i], &t))
            continue;
        allow = routes[i].method;
        if (strcmp(routes[i].method, method) == 0) {
            rt = &routes[i];
            break;
        }
    }
    if (!rt && !allow)
        return reply_error(rep, 404, "not found");
    if (!rt) {
        r = reply_error(rep, 405, "method not allowed (use %s)", allow);
        rep->allow = allow;
        return r;
    }

    if (t.api_version_count == 0)
        return reply_error(rep, 400, "missing required query parameter 'api-version'");
    if (t.api_version_count > 1)
        return reply_error(rep, 400, "query parameter 'api-version' given more than once");
    if (!workload_api_version_supported(t.api_version))
        return reply_error(rep, 400,
                           "unsupported api-version '%.32s' (supported: 2018-06-28 "
                           "through 2022-08-03)",
                           t.api_version);

    if (body_len > ctx->max_body)
        return reply_error(rep, 413, "request body larger than %zu bytes", ctx->max_body);

    struct wreq q = {.ctx = ctx, .caller = caller, .reply = rep};
    q.module_id = route_param(rt, &t, "{m}");
    q.gen_id = route_param(rt, &t, "{g}");
    if (q.module_id) {
        /* The caller may only act as itself. Ids are compared exactly: IoT Hub module ids are
         * case-sensitive, and IOTEDGE_MODULEID (what SDKs put in the path) is set by us. */
        if (!caller || lstr_empty(caller->module_id))
            return reply_error(rep, 403, "the caller's module identity is unknown");
        if (strcmp(q.module_id, caller->module_id) != 0)
            return reply_error(rep, 403, "module '%.128s' may not act for module '%.128s'",
                               caller->module_id, q.module_id);
        if (!identity_id_valid(q.module_id))
            return reply_error(rep, 400, "module id in the path is not a valid id");
    }
    if (q.gen_id &&
        (lstr_empty(caller->generation_id) || strcmp(q.gen_id, caller->generation_id) != 0))
        return reply_error(rep, 404, "module '%.128s' has no generation '%.128s'", q.module_id,
                           q.gen_id);

    _cleanup_json_ json_t *j = NULL;
    if (rt->has_body) {
        if (!body || body_len == 0)
            return reply_error(rep, 400, "missing request body");
        struct lerr e = {0};
        if (ljson_parse(body, body_len, &j, &e) < 0)
            return reply_error(rep, 400, "request body: %s", lerr_str(&e));
        if (!json_is_object(j))
            return reply_error(rep, 400, "request body must be a JSON object");
    }
    q.body = j;
    q.now = ctx->now ? ctx->now(ctx->now_userdata) : ltime_now_ms() / 1000;
    return rt->handler(&q);
}

int workload_handle(struct workload_ctx *ctx, const struct workload_caller *caller,
                    const char *method, const char *target, const char *body, size_t body_len,
                    struct workload_reply *ret)
{
    struct workload_reply rep = {0};
    int r = dispatch(ctx, caller, method, target, body, body_len, &rep);
    if (r >= 0 && !rep.body)
        r = reply_error(&rep, 500, "internal error: no reply");
    if (r < 0) {
        /* Out of memory on the way: try to say so; give up only if that fails too. */
        workload_reply_done(&rep);
        if (reply_error(&rep, 500, "internal error: %s", strerror(-r)) < 0) {
            workload_reply_done(&rep);
            return -ENOMEM;
        }
    }
    *ret = rep;
    return 0;
}

/* ---- context ------------------------------------------------------------------------------- */

void workload_ctx_free(struct workload_ctx *ctx)
{
    if (!ctx)
        return;
    free(ctx->iothub_hostname);
    free(ctx->device_id);
    free(ctx->manifest_bundle);
    free(ctx->hub_module_id);
    lstrv_free(&ctx->reserved);
    free(ctx);
}

static int dup_opt(const char *s, char **ret)
{
    if (!s)
        return 0;
    *ret = strdup(s);
    return *ret ? 0 : -ENOMEM;
}

int workload_ctx_new(const struct workload_config *cfg, const struct identity_keys *keys,
                     struct ca *ca, struct workload_ctx **ret)
{
    if (!cfg || !keys || !ca || !identity_id_valid(cfg->device_id) ||
        lstr_empty(cfg->iothub_hostname))
        return -EINVAL;
    _cleanup_(workload_ctx_freep) struct workload_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    ctx->keys = keys;
    ctx->ca = ca;
    ctx->identity_lifetime_s = cfg->identity_cert_lifetime_s;
    ctx->server_lifetime_s = cfg->server_cert_lifetime_s;
    ctx->max_body = cfg->max_body ? cfg->max_body : WORKLOAD_MAX_BODY;
    ctx->now = cfg->now;
    ctx->now_userdata = cfg->now_userdata;
    int r;
    if ((r = dup_opt(cfg->iothub_hostname, &ctx->iothub_hostname)) < 0 ||
        (r = dup_opt(cfg->device_id, &ctx->device_id)) < 0 ||
        (r = dup_opt(cfg->manifest_trust_bundle_pem, &ctx->manifest_bundle)) < 0 ||
        (r = dup_opt(cfg->hub_module_id, &ctx->hub_module_id)) < 0)
        return r;
    for (size_t i = 0; i < cfg->n_reserved_server_names; i++)
        if (cfg->reserved_server_names[i] &&
            (r = lstrv_push(&ctx->reserved, cfg->reserved_server_names[i])) < 0)
            return r;
    *ret = TAKE_PTR(ctx);
    return 0;
}
