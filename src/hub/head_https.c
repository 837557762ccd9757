/* head_https.c — the edgeHub HTTPS API (head_https.h): requests the WebSocket listener hands over
 * are read by net/http_server.h (bounded header, body and time), parsed into a method call
 * (https_request_parse), authenticated as the MQTT head authenticates (auth_check), and sent
 * through methods_invoke(); the answer goes back on the request, or the reason it could not. */
#include "head_https.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "base/json.h"
#include "base/str.h"
#include "log/log.h"
#include "methods.h"
#include "net/http_server.h"

#define COMP "hub"
#define SAS_PREFIX "SharedAccessSignature "

struct https_head {
    struct hs_server *srv;
    struct hs_listener *intake;
};

/* ------------------------------------------------------------------ parsing */

void https_call_clear(struct https_call *c)
{
    if (!c)
        return;
    free(c->caller_device);
    free(c->caller_module);
    free(c->sas_token);
    free(c->device_id);
    free(c->module_id);
    free(c->api_version);
    free(c->method_name);
    json_decref(c->payload);
    *c = (struct https_call){0};
}

const char *https_error_code(int status)
{
    switch (status) {
    case 400:
        return "ArgumentInvalid";
    case 401:
        return "IotHubUnauthorizedAccess";
    case 403:
        return "Forbidden";
    case 404:
        return "DeviceNotFound";
    case 405:
        return "MethodNotAllowed";
    case 413:
        return "MessageTooLarge";
    case 415:
        return "UnsupportedMediaType";
    case 503:
        return "ServiceUnavailable";
    case 504:
        return "GatewayTimeout";
    default:
        return "ServerError";
    }
}

/* A device or module id as IoT Hub allows them: 1-128 of letters, digits and -.:_%*?!(),=@$'
 * (never '/', so a decoded %2F cannot move the target; no MQTT wildcards). */
static bool id_ok(const char *s, size_t n)
{
    if (n == 0 || n > HTTPS_MAX_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && (!ch || !strchr("-.:_%*?!(),=@$'", ch)))
            return false;
    }
    return true;
}

/* Set *ret_status and err (both in the caller's scope), return code. */
#define FAIL(status, code, ...) (*ret_status = (status), lerr_set(err, (code), __VA_ARGS__))

#define MAX_SEGMENTS 6

/* Split the path of target into up to MAX_SEGMENTS percent-decoded segments; the query (after
 * '?') in *ret_query. -EINVAL: not a path, or a segment that does not decode; -E2BIG: more
 * segments than any path of the API has. */
static int split_target(const char *target, struct lbuf seg[MAX_SEGMENTS], size_t *ret_n,
                        const char **ret_query)
{
    size_t plen = strcspn(target, "?#");
    if (plen == 0 || target[0] != '/')
        return -EINVAL;
    size_t n = 0;
    for (size_t i = 1; i <= plen;) {
        size_t len = strcspn(target + i, "/?#");
        if (i + len > plen)
            len = plen - i;
        if (n == MAX_SEGMENTS)
            return -E2BIG; /* none of ours */
        int r = lstr_url_decode(target + i, len, false, &seg[n]);
        if (r < 0)
            return r;
        n++;
        i += len + 1;
    }
    *ret_n = n;
    *ret_query = target[plen] == '?' ? target + plen + 1 : NULL;
    return 0;
}

static bool seg_is(const struct lbuf *b, const char *s)
{
    return b->len == strlen(s) && (b->len == 0 || memcmp(b->data, s, b->len) == 0);
}

/* api-version from the query, if any: name=value pairs, '&'-separated, percent-encoded. */
static int query_api_version(const char *q, char **ret)
{
    *ret = NULL;
    while (q && *q && *q != '#') {
        size_t len = strcspn(q, "&#");
        const char *eq = memchr(q, '=', len);
        size_t nlen = eq ? (size_t)(eq - q) : len;
        _cleanup_lbuf_ struct lbuf name = LBUF_INIT, value = LBUF_INIT;
        if (lstr_url_decode(q, nlen, true, &name) < 0 ||
            (eq && lstr_url_decode(eq + 1, len - nlen - 1, true, &value) < 0))
            return -EINVAL;
        if (seg_is(&name, "api-version")) {
            if (*ret || value.len == 0 || value.len > 32 || memchr(value.data, 0, value.len))
                return -EINVAL;
            *ret = lbuf_steal(&value);
            if (!*ret)
                return -ENOMEM;
        }
        q += len;
        if (*q == '&')
            q++;
    }
    return 0;
}

/* A timeout in the body: absent or null the default, else whole seconds in [lo, hi]. */
static int body_seconds(const json_t *body, const char *key, int lo, int hi, int dflt, int *ret)
{
    const json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) {
        *ret = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -EINVAL;
    *ret = (int)json_integer_value(v);
    return 0;
}

/* Is content type application/json (parameters such as charset allowed)? */
static bool is_json_type(const char *ct)
{
    static const char want[] = "application/json";
    if (!ct)
        return false;
    ct += strspn(ct, " \t");
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0)
        return false;
    ct += sizeof(want) - 1;
    ct += strspn(ct, " \t");
    return *ct == 0 || *ct == ';';
}

static int parse_path(const struct https_request *rq, struct https_call *c, int *ret_status,
                      struct lerr *err)
{
    struct lbuf seg[MAX_SEGMENTS];
    for (size_t i = 0; i < MAX_SEGMENTS; i++)
        seg[i] = (struct lbuf)LBUF_INIT;
    size_t n = 0;
    const char *query = NULL;
    int r = split_target(rq->target ? rq->target : "", seg, &n, &query);
    /* /twins/{d}/methods or /twins/{d}/modules/{m}/methods */
    bool device = r == 0 && n == 3 && seg_is(&seg[0], "twins") && seg_is(&seg[2], "methods");
    bool module = r == 0 && n == 5 && seg_is(&seg[0], "twins") && seg_is(&seg[2], "modules") &&
                  seg_is(&seg[4], "methods");
    if (r == -ENOMEM)
        r = FAIL(500, -ENOMEM, "out of memory");
    else if (r == -EINVAL)
        r = FAIL(400, -EINVAL, "malformed path: %.200s", rq->target ? rq->target : "");
    else if (!device && !module)
        r = FAIL(404, -ENOENT,
                 "no such resource: %.200s (the API serves POST /twins/{deviceId}/methods and "
                 "/twins/{deviceId}/modules/{moduleId}/methods)",
                 rq->target ? rq->target : "");
    else if (!lstr_eq(rq->method, "POST"))
        r = FAIL(405, -EINVAL, "method %.16s not allowed on %.200s (POST only)",
                 rq->method ? rq->method : "", rq->target);
    else if (!id_ok(seg[1].data, seg[1].len))
        r = FAIL(400, -EINVAL, "the device id in the path is not a valid device id");
    else if (module && !id_ok(seg[3].data, seg[3].len))
        r = FAIL(400, -EINVAL, "the module id in the path is not a valid module id");
    else if ((r = query_api_version(query, &c->api_version)) < 0)
        r = r == -ENOMEM ? FAIL(500, r, "out of memory")
                         : FAIL(400, r,
                                "malformed query: at most one api-version of up to 32 "
                                "characters");
    if (r == 0) {
        c->device_id = lbuf_steal(&seg[1]);
        c->module_id = module ? lbuf_steal(&seg[3]) : NULL;
        if (!c->device_id || (module && !c->module_id))
            r = FAIL(500, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < MAX_SEGMENTS; i++)
        lbuf_free(&seg[i]);
    return r;
}

/* The caller: x-ms-edge-moduleId names it ("<d>/<m>", or "<d>" for a device), the
 * Authorization header proves it. */
static int parse_caller(const struct https_request *rq, struct https_call *c, int *ret_status,
                        struct lerr *err)
{
    const char *a = rq->authorization;
    if (!a || !*a)
        return FAIL(401, -EACCES,
                    "an Authorization header with the caller's SharedAccessSignature is "
                    "required");
    a += strspn(a, " \t");
    if (strncmp(a, SAS_PREFIX, strlen(SAS_PREFIX)) != 0)
        return FAIL(401, -EACCES, "the Authorization header must be a SharedAccessSignature");
    const char *who = rq->edge_module_id;
    if (!who || !*who)
        return FAIL(401, -EACCES,
                    "an x-ms-edge-moduleId header naming the caller (<deviceId>/<moduleId>) is "
                    "required");
    const char *slash = strchr(who, '/');
    size_t dn = slash ? (size_t)(slash - who) : strlen(who);
    if (!id_ok(who, dn) || (slash && !id_ok(slash + 1, strlen(slash + 1))))
        return FAIL(401, -EACCES, "x-ms-edge-moduleId \"%.300s\" is not <deviceId>/<moduleId>",
                    who);
    c->caller_device = lstr_ndup(who, dn);
    c->caller_module = slash ? strdup(slash + 1) : NULL;
    c->sas_token = strdup(a);
    if (!c->caller_device || (slash && !c->caller_module) || !c->sas_token)
        return FAIL(500, -ENOMEM, "out of memory");
    return 0;
}

static int parse_body(const struct https_request *rq, struct https_call *c, int *ret_status,
                      struct lerr *err)
{
    if (!is_json_type(rq->content_type))
        return FAIL(415, -EINVAL, "the body must be application/json, not %.100s",
                    rq->content_type ? rq->content_type : "(no Content-Type)");
    if (!rq->body_len)
        return FAIL(400, -EINVAL, "the body must be a JSON object with methodName");
    json_t *body = NULL;
    struct lerr je = {0};
    if (ljson_parse(rq->body, rq->body_len, &body, &je) < 0)
        return FAIL(je.code == -ENOMEM ? 500 : 400, -EINVAL, "body: %.200s", je.msg);
    int r = 0;
    const json_t *name = json_object_get(body, "methodName");
    const char *s = json_string_value(name);
    size_t sn = s ? json_string_length(name) : 0;
    bool name_ok = s && sn > 0 && sn <= HTTPS_MAX_METHOD && strlen(s) == sn;
    for (size_t i = 0; name_ok && i < sn; i++)
        if ((unsigned char)s[i] < 0x20 || strchr("/+#", s[i]))
            name_ok = false;
    if (!json_is_object(body))
        r = FAIL(400, -EINVAL, "the body must be a JSON object with methodName");
    else if (!name_ok)
        r = FAIL(400, -EINVAL,
                 "methodName: a string of 1-%d characters without / + # or control characters",
                 HTTPS_MAX_METHOD);
    else if (body_seconds(body, "responseTimeoutInSeconds", 1, HTTPS_MAX_TIMEOUT_S,
                          HTTPS_DEFAULT_TIMEOUT_S, &c->response_timeout_s) < 0)
        r = FAIL(400, -EINVAL, "responseTimeoutInSeconds: whole seconds, 1-%d",
                 HTTPS_MAX_TIMEOUT_S);
    else if (body_seconds(body, "connectTimeoutInSeconds", 0, HTTPS_MAX_TIMEOUT_S, 0,
                          &c->connect_timeout_s) < 0)
        r = FAIL(400, -EINVAL, "connectTimeoutInSeconds: whole seconds, 0-%d", HTTPS_MAX_TIMEOUT_S);
    if (r == 0) {
        const json_t *p = json_object_get(body, "payload");
        c->payload = p ? json_incref((json_t *)p) : json_null();
        c->method_name = strdup(s);
        if (!c->method_name)
            r = FAIL(500, -ENOMEM, "out of memory");
    }
    json_decref(body);
    return r;
}

int https_request_parse(const struct https_request *rq, struct https_call *ret, int *ret_status,
                        struct lerr *err)
{
    struct https_call c = {0};
    int r = parse_path(rq, &c, ret_status, err);
    if (r == 0)
        r = parse_caller(rq, &c, ret_status, err);
    if (r == 0)
        r = parse_body(rq, &c, ret_status, err);
    if (r < 0) {
        https_call_clear(&c);
        return r;
    }
    *ret = c;
    return 0;
}

/* ------------------------------------------------------------------ serving */

void https_reply_error(struct hs_request *r, int status, const char *msg)
{
    /* "message" as ledge's APIs answer; "Message" as IoT Hub's, which the SDKs parse */
    _cleanup_free_ char *iot = lstr_printf("ErrorCode:%s;%s", https_error_code(status), msg);
    if (status == 405)
        hs_reply_header(r, "Allow", "POST");
    hs_reply_json(r, status, json_pack("{s:s, s:s?}", "message", msg, "Message", iot));
}

struct pending {
    struct hub *h;
    struct hs_request *req;
    void *handle;
};

static void pending_abort(struct hs_request *r, void *ud)
{
    struct pending *p = ud;
    methods_cancel(p->h, p->handle); /* the caller went away: its answer has nowhere to go */
    free(p);
}

static void pending_done(void *ud, int status, json_t *reply)
{
    struct pending *p = ud;
    hs_request_on_abort(p->req, NULL, NULL);
    if (status == 200)
        hs_reply_json(p->req, 200, json_incref(reply));
    else
        https_reply_error(p->req, status,
                          ljson_str(reply, "message") ? ljson_str(reply, "message") : "failed");
    free(p);
}

/* The target's address (methods.h): a module of this device, or a leaf device behind it; NULL
 * with the reason when there is none. */
static char *target_address(struct hub *h, const struct https_call *c, char *why, size_t whylen)
{
    if (c->module_id) {
        const struct hub_module_identity *m = hub_runtime_module(&h->rt, c->module_id);
        if (strcasecmp(c->device_id, h->rt.device_id) != 0)
            snprintf(why, whylen,
                     "device %s is not this edge device (%s): only its own modules are reached "
                     "through it",
                     c->device_id, h->rt.device_id);
        else if (!m)
            snprintf(why, whylen, "no module %s on device %s", c->module_id, h->rt.device_id);
        else
            return strdup(m->module_id);
        return NULL;
    }
    const struct identity_leaf *l = hub_runtime_leaf(&h->rt, c->device_id);
    if (!l) {
        snprintf(why, whylen, "no leaf device %s behind this gateway", c->device_id);
        return NULL;
    }
    return lstr_printf(HUB_DEVICE_ADDRESS_PREFIX "%s", l->device_id);
}

void https_request_of(const struct hs_request *r, struct https_request *ret)
{
    size_t blen = 0;
    const char *body = hs_request_body(r, &blen);
    *ret = (struct https_request){
        .method = hs_request_method(r),
        .target = hs_request_target(r),
        .authorization = hs_request_header(r, "Authorization"),
        .edge_module_id = hs_request_header(r, "x-ms-edge-moduleId"),
        .content_type = hs_request_header(r, "Content-Type"),
        .body = body,
        .body_len = blen,
    };
}

static void h_request(struct hs_request *r, void *ud)
{
    struct hub *h = ud;
    struct https_request rq;
    https_request_of(r, &rq);
    struct https_call c = {0};
    struct lerr err = {0};
    int status = 0;
    if (https_request_parse(&rq, &c, &status, &err) < 0) {
        if (status == 401) {
            h->n.auth_failures++;
            hub_refused(h, HUB_REFUSAL_AUTH, NULL, "HTTPS API: %s %.200s refused (401): %s",
                        rq.method, rq.target, err.msg);
        } else {
            h->n.malformed++;
            hub_refused(h, HUB_REFUSAL_MALFORMED, "https", "HTTPS API: %s %.200s refused (%d): %s",
                        rq.method, rq.target, status, err.msg);
        }
        https_reply_error(r, status, err.msg);
        return;
    }
    struct hub_credentials cr = {
        .device_id = c.caller_device,
        .module_id = c.caller_module,
        .sas_token = c.sas_token,
    };
    struct hub_identity id = {0};
    if (auth_check(h, &cr, &id, &err) < 0) {
        h->n.auth_failures++;
        hub_refused(h, HUB_REFUSAL_AUTH, NULL, "HTTPS API: %s/%s refused (401): %s",
                    c.caller_device, c.caller_module ? c.caller_module : "", err.msg);
        https_reply_error(r, 401, err.msg);
        https_call_clear(&c);
        return;
    }
    bool is_module = id.kind == HUB_IDENTITY_MODULE;
    hub_identity_clear(&id);
    if (!is_module) {
        h->n.unauthorized++;
        hub_refused(h, HUB_REFUSAL_AUTH, c.caller_device,
                    "HTTPS API: device %s may not invoke methods (403)", c.caller_device);
        https_reply_error(r, 403, "only modules of this edge device invoke methods through it");
        https_call_clear(&c);
        return;
    }
    char why[600];
    _cleanup_free_ char *address = target_address(h, &c, why, sizeof(why));
    if (!address) {
        https_reply_error(r, 404, why);
        https_call_clear(&c);
        return;
    }
    struct pending *p = calloc(1, sizeof(*p));
    if (!p) {
        https_reply_error(r, 500, "out of memory");
        https_call_clear(&c);
        return;
    }
    p->h = h;
    p->req = r;
    log_debug(COMP, "HTTPS API: %s/%s invokes %s on %s", c.caller_device, c.caller_module,
              c.method_name, address);
    int rc = methods_invoke(h, address, c.method_name, c.payload, c.response_timeout_s,
                            c.connect_timeout_s, pending_done, p, &p->handle, &err);
    https_call_clear(&c);
    if (rc < 0) {
        free(p);
        https_reply_error(r,
                          rc == -ENOENT   ? 404
                          : rc == -EINVAL ? 400
                          : rc == -EBUSY  ? 503
                                          : 500,
                          lerr_str(&err));
        return;
    }
    hs_request_on_abort(r, pending_abort, p);
}

/* Every method and path comes to h_request, which answers 404 and 405 itself. */
static const struct hs_route routes[] = {
    {"POST", "/**", h_request},    {"GET", "/**", h_request},    {"PUT", "/**", h_request},
    {"PATCH", "/**", h_request},   {"DELETE", "/**", h_request}, {"HEAD", "/**", h_request},
    {"OPTIONS", "/**", h_request},
};

void https_head_take(struct hub *h, struct bufferevent *bev)
{
    hs_server_take(h->https->intake, bev);
}

static int https_start(struct hub *h, struct lerr *err)
{
    struct https_head *hh = calloc(1, sizeof(*hh));
    if (!hh)
        return lerr_set(err, -ENOMEM, "HTTPS API: out of memory");
    h->https = hh;
    struct hs_limits l = HS_LIMITS_DEFAULT;
    l.max_connections = HTTPS_MAX_CONNECTIONS;
    l.max_inflight = HTTPS_MAX_INFLIGHT;
    l.max_header_bytes = HTTPS_MAX_HEADER;
    l.max_body = HTTPS_MAX_BODY;
    l.max_output = 1024 * 1024;
    l.request_timeout_ms = HTTPS_TIMEOUT_MS;
    int r = hs_server_new(h->base, routes, ARRAY_SIZE(routes), h, &hh->srv);
    if (r == 0)
        r = hs_server_intake(hh->srv, &l, NULL, &hh->intake);
    if (r < 0)
        return lerr_set(err, r, "HTTPS API: out of memory");
    return 0;
}

static void https_stop(struct hub *h)
{
    if (!h->https)
        return;
    hs_server_free(h->https->srv);
    free(h->https);
    h->https = NULL;
}

static size_t https_connections(struct hub *h)
{
    return h->https && h->https->srv ? hs_server_connections(h->https->srv) : 0;
}

static json_t *https_sessions_status(struct hub *h, size_t *ret_connected, size_t *ret_sessions)
{
    *ret_connected = 0;
    *ret_sessions = 0;
    return json_array(); /* requests, not sessions */
}

const struct hub_head_ops https_head_ops = {
    .name = "https",
    .start = https_start,
    .stop = https_stop,
    .connections = https_connections,
    .sessions_status = https_sessions_status,
};
