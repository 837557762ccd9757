/* client.c — the module client: connection state machine, outputs, inputs, twin and methods.
 *
 * States: IDLE → TRUST (GET /trust-bundle) → SIGN (POST .../sign) → CONNECTING (mqttc) →
 * CONNECTED; any failure → RETRY (back-off 1 s doubling to 60 s) → TRUST again. The token is
 * renewed at 80 % of its lifetime by going through the same steps. Outgoing messages stay in an
 * ordered list until the hub's PUBACK, so a reconnect sends again what was not acknowledged (at
 * least once, in order); at most MODCLIENT_WINDOW are in flight. mqttc objects are freed only
 * outside mqttc's own callbacks (at the next connect or in modclient_free). */
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "modclient-internal.h"
#include "mqttc/mqttc.h"

#define MQTT_API_VERSION "2021-04-12"
#define CLIENT_TYPE "ledge-modclient/" LEDGE_VERSION
#define KEEPALIVE_S 60
#define OUTPUT_HIGH (256u << 10)

enum mc_state { MC_IDLE, MC_TRUST, MC_SIGN, MC_CONNECTING, MC_CONNECTED, MC_RETRY };

struct out_msg {
    char *topic;
    size_t topic_len;
    uint8_t *body;
    size_t len;
    uint16_t packet_id;
    bool sent;      /* on the current connection, awaiting its PUBACK */
    bool sent_once; /* DUP on a later connection */
    modclient_sent_fn done;
    void *ud;
    struct out_msg *next;
};

enum req_kind { REQ_GET, REQ_REPORT, REQ_DESIRED_SYNC };

struct request {
    struct modclient *c;
    char rid[24];
    enum req_kind kind;
    char *body; /* REQ_REPORT */
    bool sent;
    struct event *timer;
    modclient_twin_fn twin_cb;
    modclient_report_fn report_cb;
    void *ud;
    struct request *next;
};

struct handler {
    char *name; /* NULL: the default */
    void *cb;
    void *ud;
    struct handler *next;
};

struct modclient {
    struct event_base *base;
    struct evdns_base *dns;
    struct modclient_config cfg;
    enum mc_state state;
    struct mqttc *m;
    struct mc_http *http;
    int ca_fd;
    char ca_path[64];
    bool ca_tmpfile;
    char *resource;
    char *token;
    uint64_t expiry;
    struct event *retry_ev, *renew_ev;
    int backoff_ms;
    struct out_msg *out, **out_tail;
    size_t n_out, n_inflight;
    struct handler *inputs, *methods;
    modclient_desired_fn desired_cb;
    void *desired_ud;
    modclient_connection_fn conn_cb;
    void *conn_ud;
    modclient_method_async_fn method_async_cb;
    void *method_async_ud;
    modclient_c2d_fn c2d_cb;
    void *c2d_ud;
    uint16_t conn_gen;      /* +1 per connection: a C2D token names the one it came on */
    uint16_t cur_packet_id; /* of the PUBLISH being dispatched (QoS 1), else 0 */
    struct request *reqs;
    size_t n_reqs;
    uint64_t next_rid;
    struct lbuf topic, scratch;
};

static void begin_connect(struct modclient *c);
static void flush_outputs(struct modclient *c);
static void flush_requests(struct modclient *c);
static int twin_request(struct modclient *c, enum req_kind kind, const char *body,
                        modclient_twin_fn tcb, modclient_report_fn rcb, void *ud);

/* ------------------------------------------------------------------ lifecycle */

static char *dup_or_null(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    begin_connect(arg);
}

static void renew_cb(evutil_socket_t fd, short what, void *arg);

int modclient_new(struct event_base *base, const struct modclient_config *cfg,
                  struct modclient **ret, struct lerr *e)
{
    const char *missing = !cfg->device_id                          ? "device id"
                          : cfg->on_behalf_of && !cfg->sas_key     ? "key of the edge's $edgeHub"
                          : !cfg->module_id && !cfg->sas_key       ? "module id"
                          : !cfg->iothub_hostname                  ? "IoT hub host name"
                          : !cfg->gateway_hostname                 ? "gateway host name"
                          : !cfg->sas_key && !cfg->workload_socket ? "a key or a workload socket"
                          : !cfg->sas_key && !cfg->generation_id   ? "generation id"
                                                                   : NULL;
    if (missing)
        return lerr_set(e, -EINVAL, "module client configuration: no %s", missing);
    struct modclient *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->base = base;
    c->ca_fd = -1;
    c->out_tail = &c->out;
    bool oom = false;
    c->cfg = (struct modclient_config){
        .device_id = dup_or_null(cfg->device_id, &oom),
        .module_id = dup_or_null(cfg->module_id, &oom),
        .generation_id = dup_or_null(cfg->generation_id, &oom),
        .iothub_hostname = dup_or_null(cfg->iothub_hostname, &oom),
        .gateway_hostname = dup_or_null(cfg->gateway_hostname, &oom),
        .connect_host = dup_or_null(cfg->connect_host, &oom),
        .port = cfg->port ? cfg->port : MODCLIENT_PORT_DEFAULT,
        .tls = cfg->tls,
        .workload_socket = dup_or_null(cfg->workload_socket, &oom),
        .api_version =
            dup_or_null(cfg->api_version ? cfg->api_version : MODCLIENT_API_VERSION_DEFAULT, &oom),
        .ca_file = dup_or_null(cfg->ca_file, &oom),
        .sas_key = dup_or_null(cfg->sas_key, &oom),
        .on_behalf_of = dup_or_null(cfg->on_behalf_of, &oom),
        .token_lifetime_s =
            cfg->token_lifetime_s > 0 ? cfg->token_lifetime_s : MODCLIENT_TOKEN_LIFETIME_DEFAULT,
        .max_pending = cfg->max_pending ? cfg->max_pending : MODCLIENT_MAX_PENDING_DEFAULT,
    };
    c->resource = modclient_token_resource(&c->cfg);
    c->retry_ev = evtimer_new(base, retry_cb, c);
    c->renew_ev = evtimer_new(base, renew_cb, c);
    /* /etc/hosts and /etc/resolv.conf through libevent: no NSS, so static binaries resolve too. */
    c->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (oom || !c->resource || !c->retry_ev || !c->renew_ev || !c->dns) {
        modclient_free(c);
        return oom || !c->dns ? lerr_set(e, -ENOMEM, "module client: out of memory") : -ENOMEM;
    }
    *ret = c;
    return 0;
}

int modclient_from_environment(struct event_base *base, struct modclient **ret, struct lerr *e)
{
    struct modclient_config cfg;
    int r = modclient_config_from_env(NULL, NULL, &cfg, e);
    if (r < 0)
        return r;
    r = modclient_new(base, &cfg, ret, e);
    modclient_config_clear(&cfg);
    return r;
}

static void requests_fail_all(struct modclient *c, int status);

void modclient_free(struct modclient *c)
{
    if (!c)
        return;
    c->state = MC_IDLE;
    mc_http_cancel(c->http);
    c->http = NULL;
    if (c->m) {
        mqttc_disconnect(c->m);
        mqttc_free(c->m);
        c->m = NULL;
    }
    while (c->out) {
        struct out_msg *o = c->out;
        c->out = o->next;
        if (o->done)
            o->done(o->ud, -ECANCELED);
        free(o->topic);
        free(o->body);
        free(o);
    }
    requests_fail_all(c, -ECANCELED);
    struct handler *lists[] = {c->inputs, c->methods};
    for (size_t i = 0; i < ARRAY_SIZE(lists); i++)
        while (lists[i]) {
            struct handler *h = lists[i];
            lists[i] = h->next;
            free(h->name);
            free(h);
        }
    if (c->retry_ev)
        event_free(c->retry_ev);
    if (c->renew_ev)
        event_free(c->renew_ev);
    if (c->dns)
        evdns_base_free(c->dns, 0);
    if (c->ca_fd >= 0)
        close(c->ca_fd);
    if (c->ca_tmpfile)
        unlink(c->ca_path);
    if (c->token) {
        lcrypto_wipe(c->token, strlen(c->token));
        free(c->token);
    }
    free(c->resource);
    lbuf_free(&c->topic);
    lbuf_free(&c->scratch);
    modclient_config_clear(&c->cfg);
    free(c);
}

bool modclient_connected(const struct modclient *c)
{
    return c && c->state == MC_CONNECTED;
}

void modclient_on_connection(struct modclient *c, modclient_connection_fn cb, void *ud)
{
    c->conn_cb = cb;
    c->conn_ud = ud;
}

/* The connection is gone (or never came): everything sent is unacknowledged, try again later. */
static void fail_and_retry(struct modclient *c, const char *why, bool backoff)
{
    bool was_connected = c->state == MC_CONNECTED;
    c->state = MC_RETRY;
    for (struct out_msg *o = c->out; o; o = o->next)
        o->sent = false;
    c->n_inflight = 0;
    for (struct request *q = c->reqs; q; q = q->next)
        q->sent = false;
    evtimer_del(c->renew_ev);
    int ms = 0;
    if (backoff) {
        c->backoff_ms = c->backoff_ms ? MIN(c->backoff_ms * 2, MODCLIENT_BACKOFF_MAX_MS)
                                      : MODCLIENT_BACKOFF_MIN_MS;
        ms = c->backoff_ms;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->retry_ev, &tv);
    if (c->conn_cb && (was_connected || backoff))
        c->conn_cb(c->conn_ud, false, why);
}

int modclient_start(struct modclient *c)
{
    if (c->state != MC_IDLE)
        return -EALREADY;
    begin_connect(c);
    return 0;
}

void modclient_reconnect_now(struct modclient *c)
{
    /* MC_TRUST and MC_SIGN wait for the local workload API, not for the endpoint */
    if (!c || (c->state != MC_RETRY && c->state != MC_CONNECTING))
        return;
    if (c->m) {
        mqttc_free(c->m);
        c->m = NULL;
    }
    c->backoff_ms = 0;
    begin_connect(c);
}

/* ------------------------------------------------------------------ connecting */

static void on_mqtt_connect(void *ud, int result, int code, bool present);
static void on_mqtt_close(void *ud, int reason);
static void on_mqtt_message(void *ud, const struct mqtt_publish *p);
static void on_mqtt_puback(void *ud, uint16_t packet_id);

static void connect_mqtt(struct modclient *c)
{
    if (c->m) {
        mqttc_free(c->m);
        c->m = NULL;
    }
    struct lbuf user = LBUF_INIT;
    _cleanup_free_ char *client_id = c->cfg.module_id
                                         ? lstr_printf("%s/%s", c->cfg.device_id, c->cfg.module_id)
                                         : strdup(c->cfg.device_id);
    int r = client_id ? iothub_username_build(&user, mqtt_str_c(c->cfg.iothub_hostname),
                                              mqtt_str_c(c->cfg.device_id),
                                              mqtt_str_c(c->cfg.module_id ? c->cfg.module_id : ""),
                                              mqtt_str_c(MQTT_API_VERSION), mqtt_str_c(CLIENT_TYPE))
                      : -ENOMEM;
    const char *ca = c->cfg.ca_file ? c->cfg.ca_file : c->ca_path[0] ? c->ca_path : NULL;
    struct mqttc_options o = {
        .host = c->cfg.connect_host ? c->cfg.connect_host : c->cfg.gateway_hostname,
        .port = c->cfg.port,
        .tls = c->cfg.tls,
        .ca_file = ca,
        .verify_name = c->cfg.gateway_hostname,
        .client_id = client_id,
        .username = user.data,
        .password = c->token,
        .clean_session = false,
        .keep_alive_s = KEEPALIVE_S,
        .on_connect = on_mqtt_connect,
        .on_close = on_mqtt_close,
        .on_message = on_mqtt_message,
        .on_puback = on_mqtt_puback,
        .ud = c,
    };
    if (r == 0)
        r = mqttc_new(c->base, c->dns, &o, &c->m);
    lbuf_free(&user);
    /* before the call: a connect that fails at once reports it (on_mqtt_connect) from inside */
    c->state = MC_CONNECTING;
    if (r == 0)
        r = mqttc_connect(c->m);
    if (r < 0) {
        char why[128];
        snprintf(why, sizeof(why), "cannot connect to the hub: %s", strerror(-r));
        fail_and_retry(c, why, true);
    }
}

static int set_token(struct modclient *c, const char *sig_b64)
{
    struct lbuf tok = LBUF_INIT;
    int r = modclient_token_build(c->resource, sig_b64, c->expiry, &tok);
    if (r < 0) {
        lbuf_free(&tok);
        return r;
    }
    if (c->token) {
        lcrypto_wipe(c->token, strlen(c->token));
        free(c->token);
    }
    c->token = lbuf_steal(&tok);
    return 0;
}

static void sign_done(void *ud, int result, int status, const char *body, size_t len,
                      const char *why)
{
    struct modclient *c = ud;
    c->http = NULL;
    struct lerr e = {0};
    char *digest = NULL;
    if (result < 0)
        lerr_set(&e, result, "signing the token: %s", why ? why : strerror(-result));
    else if (mc_workload_digest(status, body, len, &digest, &e) < 0)
        lerr_prefix(&e, "signing the token");
    if (!digest || set_token(c, digest) < 0) {
        free(digest);
        fail_and_retry(c, e.msg[0] ? e.msg : "cannot build the token", true);
        return;
    }
    free(digest);
    connect_mqtt(c);
}

static char *path_escape(const char *s)
{
    struct lbuf b = LBUF_INIT;
    if (lstr_url_encode(s, strlen(s), &b) < 0) {
        lbuf_free(&b);
        return NULL;
    }
    return lbuf_steal(&b);
}

/* A fresh token: signed here with a key, or by the workload API. */
static void make_token(struct modclient *c)
{
    c->expiry = (uint64_t)(ltime_now_ms() / 1000 + c->cfg.token_lifetime_s);
    struct lbuf sts = LBUF_INIT, b64 = LBUF_INIT;
    int r = modclient_token_string_to_sign(c->resource, c->expiry, &sts);
    if (r == 0 && c->cfg.sas_key) {
        struct lbuf key = LBUF_INIT;
        uint8_t mac[LCRYPTO_SHA256_LEN];
        r = lcrypto_b64_decode(c->cfg.sas_key, strlen(c->cfg.sas_key), &key);
        if (r == 0)
            r = lcrypto_hmac_sha256(key.data, key.len, sts.data, sts.len, mac);
        if (r == 0)
            r = lcrypto_b64_encode(mac, sizeof(mac), &b64);
        if (r == 0)
            r = set_token(c, b64.data);
        lcrypto_wipe(key.data, key.len);
        lbuf_free(&key);
        lbuf_free(&sts);
        lbuf_free(&b64);
        if (r < 0)
            fail_and_retry(c, "cannot sign the token with the module key", true);
        else
            connect_mqtt(c);
        return;
    }
    if (r == 0)
        r = lcrypto_b64_encode(sts.data, sts.len, &b64);
    lbuf_free(&sts);
    _cleanup_free_ char *m = path_escape(c->cfg.module_id), *g = path_escape(c->cfg.generation_id),
                        *v = path_escape(c->cfg.api_version);
    _cleanup_json_ json_t *req = r == 0 ? json_pack("{s:s, s:s, s:s}", "keyId", "primary", "algo",
                                                    "HMACSHA256", "data", b64.data)
                                        : NULL;
    lbuf_free(&b64);
    _cleanup_free_ char *body = req ? ljson_dump(req) : NULL;
    _cleanup_free_ char *target =
        m && g && v ? lstr_printf("/modules/%s/genid/%s/sign?api-version=%s", m, g, v) : NULL;
    r = body && target
            ? mc_http_request(c->base, c->cfg.workload_socket, "POST", target, body, strlen(body),
                              MODCLIENT_REQUEST_TIMEOUT_MS, sign_done, c, &c->http)
            : -ENOMEM;
    if (r < 0) {
        char why[512];
        snprintf(why, sizeof(why), "workload socket %s: %s", c->cfg.workload_socket, strerror(-r));
        fail_and_retry(c, why, true);
        return;
    }
    c->state = MC_SIGN;
}

/* Keep the trust bundle where OpenSSL can open it by name: a memfd seen through /proc (nothing
 * on disk; FROM-scratch images have no writable /tmp), else a temporary file. */
static int store_ca(struct modclient *c, const char *pem)
{
    size_t n = strlen(pem);
    if (c->ca_fd < 0) {
        c->ca_fd = memfd_create("modclient-trust-bundle", MFD_CLOEXEC);
        if (c->ca_fd >= 0) {
            snprintf(c->ca_path, sizeof(c->ca_path), "/proc/self/fd/%d", c->ca_fd);
            if (access(c->ca_path, R_OK) < 0) {
                close(c->ca_fd);
                c->ca_fd = -1;
            }
        }
        if (c->ca_fd < 0) {
            const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
            snprintf(c->ca_path, sizeof(c->ca_path), "%.40s/modclient-ca-XXXXXX", dir);
            c->ca_fd = mkostemp(c->ca_path, O_CLOEXEC);
            if (c->ca_fd < 0) {
                c->ca_path[0] = 0;
                return neg_errno();
            }
            c->ca_tmpfile = true;
        }
    }
    if (ftruncate(c->ca_fd, 0) < 0 || pwrite(c->ca_fd, pem, n, 0) != (ssize_t)n)
        return neg_errno();
    return 0;
}

static void trust_done(void *ud, int result, int status, const char *body, size_t len,
                       const char *why)
{
    struct modclient *c = ud;
    c->http = NULL;
    struct lerr e = {0};
    char *pem = NULL;
    if (result < 0)
        lerr_set(&e, result, "getting the trust bundle: %s", why ? why : strerror(-result));
    else if (mc_workload_trust_bundle(status, body, len, &pem, &e) < 0)
        lerr_prefix(&e, "getting the trust bundle");
    else if ((result = store_ca(c, pem)) < 0)
        lerr_set(&e, result, "keeping the trust bundle: %s", strerror(-result));
    free(pem);
    if (e.code) {
        fail_and_retry(c, e.msg, true);
        return;
    }
    make_token(c);
}

static void begin_connect(struct modclient *c)
{
    evtimer_del(c->retry_ev);
    if (c->cfg.tls && !c->cfg.ca_file && c->cfg.workload_socket) {
        _cleanup_free_ char *v = path_escape(c->cfg.api_version);
        _cleanup_free_ char *target = v ? lstr_printf("/trust-bundle?api-version=%s", v) : NULL;
        int r = target ? mc_http_request(c->base, c->cfg.workload_socket, "GET", target, NULL, 0,
                                         MODCLIENT_REQUEST_TIMEOUT_MS, trust_done, c, &c->http)
                       : -ENOMEM;
        if (r < 0) {
            char why[512];
            snprintf(why, sizeof(why), "workload socket %s: %s", c->cfg.workload_socket,
                     strerror(-r));
            fail_and_retry(c, why, true);
            return;
        }
        c->state = MC_TRUST;
        return;
    }
    make_token(c);
}

static void renew_cb(evutil_socket_t fd, short what, void *arg)
{
    struct modclient *c = arg;
    if (c->state != MC_CONNECTED)
        return;
    mqttc_disconnect(c->m);
    fail_and_retry(c, "renewing the SAS token", false);
}

static void on_mqtt_connect(void *ud, int result, int code, bool present)
{
    struct modclient *c = ud;
    if (result < 0) {
        char why[160];
        if (code > 0)
            snprintf(why, sizeof(why), "the hub refused the connection (CONNACK %d%s)", code,
                     code == MQTT_CONNACK_NOT_AUTHORIZED ||
                             code == MQTT_CONNACK_BAD_USERNAME_PASSWORD
                         ? ": not authorized"
                         : "");
        else
            snprintf(why, sizeof(why), "connecting to %s:%d: %s",
                     c->cfg.connect_host ? c->cfg.connect_host : c->cfg.gateway_hostname,
                     c->cfg.port,
                     result == -EPROTO ? "TLS handshake or certificate check failed"
                                       : strerror(-result));
        fail_and_retry(c, why, true);
        return;
    }
    c->state = MC_CONNECTED;
    c->backoff_ms = 0;
    c->conn_gen++;
    /* Subscribe to everything a module may receive: the hub's routing decides what comes. A
     * device: its cloud-to-device messages, when someone takes them. */
    char inputs[600];
    if (c->cfg.module_id) {
        snprintf(inputs, sizeof(inputs), "devices/%s/modules/%s/inputs/#", c->cfg.device_id,
                 c->cfg.module_id);
        mqttc_subscribe(c->m, inputs, 1, NULL);
    } else if (c->c2d_cb) {
        snprintf(inputs, sizeof(inputs), "devices/%s/messages/devicebound/#", c->cfg.device_id);
        mqttc_subscribe(c->m, inputs, 1, NULL);
    }
    mqttc_subscribe(c->m, "$iothub/twin/res/#", 0, NULL);
    mqttc_subscribe(c->m, "$iothub/twin/PATCH/properties/desired/#", 0, NULL);
    mqttc_subscribe(c->m, "$iothub/methods/POST/#", 0, NULL);
    int64_t ms = (int64_t)c->cfg.token_lifetime_s * 800;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(c->renew_ev, &tv);
    if (c->desired_cb) {
        bool have = false;
        for (struct request *q = c->reqs; q; q = q->next)
            have |= q->kind == REQ_DESIRED_SYNC;
        if (!have)
            twin_request(c, REQ_DESIRED_SYNC, NULL, NULL, NULL, NULL);
    }
    flush_requests(c);
    flush_outputs(c);
    if (c->conn_cb)
        c->conn_cb(c->conn_ud, true, NULL);
}

static void on_mqtt_close(void *ud, int reason)
{
    struct modclient *c = ud;
    char why[128];
    snprintf(why, sizeof(why), "connection to the hub lost: %s",
             reason == -ETIMEDOUT ? "keep-alive timed out" : strerror(-reason));
    fail_and_retry(c, why, true);
}

/* ------------------------------------------------------------------ outputs */

int modclient_props_add(struct iothub_props *p, const char *key, const char *value)
{
    if (p->n_app >= IOTHUB_APP_PROPS_MAX)
        return -E2BIG;
    p->app[p->n_app++] = (struct iothub_kv){mqtt_str_c(key), mqtt_str_c(value)};
    return 0;
}

size_t modclient_pending(const struct modclient *c)
{
    return c->n_out;
}

static void flush_outputs(struct modclient *c)
{
    if (c->state != MC_CONNECTED)
        return;
    for (struct out_msg *o = c->out; o && c->n_inflight < MODCLIENT_WINDOW; o = o->next) {
        if (o->sent)
            continue;
        if (mqttc_output_pending(c->m) > OUTPUT_HIGH)
            return; /* resumes on the next PUBACK */
        uint16_t id;
        if (mqttc_publish(c->m, o->topic, o->topic_len, o->body, o->len, 1, o->sent_once, &id) < 0)
            return;
        o->sent = o->sent_once = true;
        o->packet_id = id;
        c->n_inflight++;
    }
}

/* Queue a message for the topic in c->topic and send what the window allows. */
static int queue_output(struct modclient *c, const void *body, size_t len, modclient_sent_fn done,
                        void *ud)
{
    struct out_msg *o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    o->topic = strndup(c->topic.data, c->topic.len);
    o->topic_len = c->topic.len;
    o->body = malloc(len ? len : 1);
    if (!o->topic || !o->body) {
        free(o->topic);
        free(o->body);
        free(o);
        return -ENOMEM;
    }
    if (len)
        memcpy(o->body, body, len);
    o->len = len;
    o->done = done;
    o->ud = ud;
    *c->out_tail = o;
    c->out_tail = &o->next;
    c->n_out++;
    flush_outputs(c);
    return 0;
}

int modclient_send_output(struct modclient *c, const char *output, const struct iothub_props *props,
                          const void *body, size_t len, modclient_sent_fn done, void *ud)
{
    if (c->n_out >= c->cfg.max_pending)
        return -ENOBUFS;
    if (lstr_empty(output) || strlen(output) > 256)
        return -EINVAL;
    struct iothub_props p = {0};
    if (props)
        p = *props;
    p.sys[IOTHUB_PROP_OUTPUT_NAME] = mqtt_str_c(output);
    p.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID] = (struct mqtt_str){0};
    p.sys[IOTHUB_PROP_CONNECTION_MODULE_ID] = (struct mqtt_str){0};
    lbuf_reset(&c->topic);
    int r = iothub_topic_events(&c->topic, mqtt_str_c(c->cfg.device_id),
                                mqtt_str_c(c->cfg.module_id ? c->cfg.module_id : ""), &p);
    if (r < 0)
        return r;
    return queue_output(c, body, len, done, ud);
}

int modclient_send_event(struct modclient *c, const struct iothub_props *props, const void *body,
                         size_t len, modclient_sent_fn done, void *ud)
{
    if (c->n_out >= c->cfg.max_pending)
        return -ENOBUFS;
    struct iothub_props p = {0};
    if (props)
        p = *props;
    /* IoT Hub says who sent it */
    p.sys[IOTHUB_PROP_OUTPUT_NAME] = (struct mqtt_str){0};
    p.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID] = (struct mqtt_str){0};
    p.sys[IOTHUB_PROP_CONNECTION_MODULE_ID] = (struct mqtt_str){0};
    lbuf_reset(&c->topic);
    int r = iothub_topic_events(&c->topic, mqtt_str_c(c->cfg.device_id),
                                mqtt_str_c(c->cfg.module_id ? c->cfg.module_id : ""), &p);
    if (r < 0)
        return r;
    return queue_output(c, body, len, done, ud);
}

static void on_mqtt_puback(void *ud, uint16_t packet_id)
{
    struct modclient *c = ud;
    for (struct out_msg **pp = &c->out; *pp; pp = &(*pp)->next) {
        struct out_msg *o = *pp;
        if (!o->sent || o->packet_id != packet_id)
            continue;
        *pp = o->next;
        if (c->out_tail == &o->next)
            c->out_tail = pp;
        c->n_out--;
        c->n_inflight--;
        if (o->done)
            o->done(o->ud, 0);
        free(o->topic);
        free(o->body);
        free(o);
        break;
    }
    flush_outputs(c);
}

/* ------------------------------------------------------------------ handlers */

static struct handler **handler_slot(struct handler **list, const char *name)
{
    for (; *list; list = &(*list)->next)
        if ((!name && !(*list)->name) || ((*list)->name && name && !strcmp((*list)->name, name)))
            return list;
    return list;
}

static int handler_set(struct handler **list, const char *name, void *cb, void *ud)
{
    struct handler **slot = handler_slot(list, name);
    if (!cb) {
        if (*slot) {
            struct handler *h = *slot;
            *slot = h->next;
            free(h->name);
            free(h);
        }
        return 0;
    }
    if (!*slot) {
        struct handler *h = calloc(1, sizeof(*h));
        if (!h || (name && !(h->name = strdup(name)))) {
            free(h);
            return -ENOMEM;
        }
        *slot = h;
    }
    (*slot)->cb = cb;
    (*slot)->ud = ud;
    return 0;
}

/* The handler for name, else the default one. */
static struct handler *handler_find(struct handler *list, const char *name)
{
    struct handler *dflt = NULL;
    for (; list; list = list->next) {
        if (list->name && !strcmp(list->name, name))
            return list;
        if (!list->name)
            dflt = list;
    }
    return dflt;
}

int modclient_on_input(struct modclient *c, const char *input, modclient_input_fn cb, void *ud)
{
    return handler_set(&c->inputs, input, (void *)cb, ud);
}

int modclient_on_method(struct modclient *c, const char *method, modclient_method_fn cb, void *ud)
{
    return handler_set(&c->methods, method, (void *)cb, ud);
}

void modclient_on_desired(struct modclient *c, modclient_desired_fn cb, void *ud)
{
    c->desired_cb = cb;
    c->desired_ud = ud;
}

const char *modclient_message_prop(const struct modclient_message *m, const char *key, char *buf,
                                   size_t size)
{
    const char *found = NULL;
    for (size_t i = 0; i < m->props->n_app; i++) {
        const struct iothub_kv *kv = &m->props->app[i];
        if (!mqtt_str_eq(kv->key, key))
            continue;
        if (size == 0 || kv->value.len >= size)
            return NULL;
        memcpy(buf, kv->value.ptr, kv->value.len);
        buf[kv->value.len] = 0;
        found = buf; /* the parser already kept the last of repeated keys */
    }
    return found;
}

/* ------------------------------------------------------------------ twin requests */

static void request_free(struct modclient *c, struct request *q)
{
    for (struct request **pp = &c->reqs; *pp; pp = &(*pp)->next)
        if (*pp == q) {
            *pp = q->next;
            c->n_reqs--;
            break;
        }
    if (q->timer)
        event_free(q->timer);
    free(q->body);
    free(q);
}

/* Complete q: unlink it, then call its callback (which may start new requests). */
static void request_complete(struct modclient *c, struct request *q, int status, const json_t *doc,
                             int64_t version)
{
    enum req_kind kind = q->kind;
    modclient_twin_fn tcb = q->twin_cb;
    modclient_report_fn rcb = q->report_cb;
    void *ud = q->ud;
    request_free(c, q);
    if (kind == REQ_GET && tcb)
        tcb(ud, status, doc);
    else if (kind == REQ_REPORT && rcb)
        rcb(ud, status, version);
    else if (kind == REQ_DESIRED_SYNC && status == 200 && c->desired_cb) {
        json_t *desired = json_object_get(doc, "desired");
        if (json_is_object(desired))
            c->desired_cb(c->desired_ud, desired, ljson_int(desired, "$version", 0), true);
    }
}

static void requests_fail_all(struct modclient *c, int status)
{
    while (c->reqs)
        request_complete(c, c->reqs, status, NULL, 0);
}

static void request_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct request *q = arg;
    request_complete(q->c, q, -ETIMEDOUT, NULL, 0);
}

static void request_send(struct modclient *c, struct request *q)
{
    if (c->state != MC_CONNECTED || q->sent)
        return;
    lbuf_reset(&c->topic);
    int r = q->kind == REQ_REPORT ? iothub_topic_twin_reported(&c->topic, mqtt_str_c(q->rid))
                                  : iothub_topic_twin_get(&c->topic, mqtt_str_c(q->rid));
    const char *body = q->body ? q->body : "";
    if (r == 0 &&
        mqttc_publish(c->m, c->topic.data, c->topic.len, body, strlen(body), 0, false, NULL) == 0)
        q->sent = true;
}

static void flush_requests(struct modclient *c)
{
    for (struct request *q = c->reqs; q; q = q->next)
        request_send(c, q);
}

static int twin_request(struct modclient *c, enum req_kind kind, const char *body,
                        modclient_twin_fn tcb, modclient_report_fn rcb, void *ud)
{
    if (c->n_reqs >= MODCLIENT_MAX_REQUESTS)
        return -EBUSY;
    struct request *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->c = c;
    q->kind = kind;
    q->twin_cb = tcb;
    q->report_cb = rcb;
    q->ud = ud;
    snprintf(q->rid, sizeof(q->rid), "%llu", (unsigned long long)++c->next_rid);
    q->timer = evtimer_new(c->base, request_timeout, q);
    if (!q->timer || (body && !(q->body = strdup(body)))) {
        if (q->timer)
            event_free(q->timer);
        free(q);
        return -ENOMEM;
    }
    struct timeval tv = {MODCLIENT_REQUEST_TIMEOUT_MS / 1000, 0};
    evtimer_add(q->timer, &tv);
    /* Appended: requests go out in the order they were made. */
    struct request **pp = &c->reqs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = q;
    c->n_reqs++;
    request_send(c, q);
    return 0;
}

int modclient_twin_get(struct modclient *c, modclient_twin_fn cb, void *ud)
{
    return twin_request(c, REQ_GET, NULL, cb, NULL, ud);
}

int modclient_twin_report(struct modclient *c, const json_t *patch, modclient_report_fn cb,
                          void *ud)
{
    if (!json_is_object(patch))
        return -EINVAL;
    _cleanup_free_ char *body = ljson_dump(patch);
    if (!body)
        return -ENOMEM;
    return twin_request(c, REQ_REPORT, body, NULL, cb, ud);
}

/* ------------------------------------------------------------------ what the hub sends */

static json_t *parse_payload(const uint8_t *p, size_t n)
{
    json_t *j = NULL;
    if (n == 0)
        return json_null();
    if (ljson_parse((const char *)p, n, &j, NULL) == 0)
        return j;
    return json_stringn((const char *)p, n); /* NULL for invalid UTF-8 */
}

static void dispatch_input(struct modclient *c, const struct iothub_topic *t,
                           const struct mqtt_publish *p)
{
    if (!c->cfg.module_id || !mqtt_str_eq(t->device_id, c->cfg.device_id) ||
        !mqtt_str_eq(t->module_id, c->cfg.module_id) || t->input.len > 256)
        return;
    char input[257];
    memcpy(input, t->input.ptr, t->input.len);
    input[t->input.len] = 0;
    struct handler *h = handler_find(c->inputs, input);
    if (!h)
        return;
    struct iothub_props props;
    lbuf_reset(&c->scratch);
    if (lbuf_reserve(&c->scratch, t->propbag.len + 1) < 0 ||
        iothub_props_parse(t->propbag.ptr, t->propbag.len, c->scratch.data, c->scratch.cap, &props,
                           NULL) < 0)
        return; /* the hub encodes bags correctly: this one is not worth delivering */
    struct modclient_message m = {input, &props, p->payload, p->payload_len};
    ((modclient_input_fn)h->cb)(h->ud, &m);
}

static void dispatch_c2d(struct modclient *c, const struct iothub_topic *t,
                         const struct mqtt_publish *p)
{
    if (c->cfg.module_id || !c->c2d_cb || !mqtt_str_eq(t->device_id, c->cfg.device_id))
        return; /* not acknowledged by us: a QoS 1 one is acknowledged by mqttc as it returns */
    struct iothub_props props;
    lbuf_reset(&c->scratch);
    if (lbuf_reserve(&c->scratch, t->propbag.len + 1) < 0 ||
        iothub_props_parse(t->propbag.ptr, t->propbag.len, c->scratch.data, c->scratch.cap, &props,
                           NULL) < 0)
        props = (struct iothub_props){0}; /* the body still counts more than a bad bag */
    uint32_t token = 0;
    if (c->cur_packet_id && c->m) {
        mqttc_hold_ack(c->m);
        token = (uint32_t)c->conn_gen << 16 | c->cur_packet_id;
    }
    struct modclient_message m = {"", &props, p->payload, p->payload_len};
    c->c2d_cb(c->c2d_ud, &m, token);
}

void modclient_on_c2d(struct modclient *c, modclient_c2d_fn cb, void *ud)
{
    c->c2d_cb = cb;
    c->c2d_ud = ud;
}

int modclient_c2d_ack(struct modclient *c, uint32_t token)
{
    if (!token)
        return 0;
    if (c->state != MC_CONNECTED || !c->m || (uint16_t)(token >> 16) != c->conn_gen)
        return -ENOTCONN; /* IoT Hub sends it again on the next connection */
    return mqttc_puback(c->m, (uint16_t)(token & 0xffff));
}

static void dispatch_twin_response(struct modclient *c, const struct iothub_topic *t,
                                   const struct mqtt_publish *p)
{
    for (struct request *q = c->reqs; q; q = q->next) {
        if (!mqtt_str_eq(t->rid, q->rid))
            continue;
        json_t *doc = NULL;
        if (p->payload_len)
            ljson_parse((const char *)p->payload, p->payload_len, &doc, NULL);
        request_complete(c, q, t->status, doc, t->has_version ? (int64_t)t->version : 0);
        json_decref(doc);
        return;
    }
}

static void dispatch_desired(struct modclient *c, const struct iothub_topic *t,
                             const struct mqtt_publish *p)
{
    json_t *patch = NULL;
    if (!c->desired_cb || ljson_parse((const char *)p->payload, p->payload_len, &patch, NULL) < 0)
        return;
    if (json_is_object(patch))
        c->desired_cb(c->desired_ud, patch, (int64_t)t->version, false);
    json_decref(patch);
}

static void dispatch_method(struct modclient *c, const struct iothub_topic *t,
                            const struct mqtt_publish *p)
{
    if (t->method.len > 256)
        return;
    char method[257];
    memcpy(method, t->method.ptr, t->method.len);
    method[t->method.len] = 0;
    if (c->method_async_cb) {
        char rid[65];
        if (t->rid.len >= sizeof(rid))
            return;
        memcpy(rid, t->rid.ptr, t->rid.len);
        rid[t->rid.len] = 0;
        json_t *payload = parse_payload(p->payload, p->payload_len);
        c->method_async_cb(c->method_async_ud, method, payload ? payload : json_null(), rid);
        json_decref(payload);
        return;
    }
    struct handler *h = handler_find(c->methods, method);
    json_t *reply = NULL;
    int status;
    if (!h) {
        status = 501;
        reply = json_pack("{s:s}", "message", "no handler for this method");
    } else {
        json_t *payload = parse_payload(p->payload, p->payload_len);
        status =
            ((modclient_method_fn)h->cb)(h->ud, method, payload ? payload : json_null(), &reply);
        json_decref(payload);
    }
    char *body = reply ? ljson_dump(reply) : strdup("null");
    json_decref(reply);
    lbuf_reset(&c->topic);
    if (body && c->m && mqttc_connected(c->m) &&
        iothub_topic_method_response(&c->topic, status, t->rid) == 0)
        mqttc_publish(c->m, c->topic.data, c->topic.len, body, strlen(body), 0, false, NULL);
    free(body);
}

void modclient_on_method_async(struct modclient *c, modclient_method_async_fn cb, void *ud)
{
    c->method_async_cb = cb;
    c->method_async_ud = ud;
}

int modclient_method_respond(struct modclient *c, const char *rid, int status, const json_t *reply)
{
    if (!c->m || !mqttc_connected(c->m))
        return -ENOTCONN;
    char *body = reply ? ljson_dump(reply) : strdup("null");
    lbuf_reset(&c->topic);
    int r = body ? iothub_topic_method_response(&c->topic, status, mqtt_str_c(rid)) : -ENOMEM;
    if (r == 0)
        r = mqttc_publish(c->m, c->topic.data, c->topic.len, body, strlen(body), 0, false, NULL);
    free(body);
    return r;
}

void mc_dispatch_publish(struct modclient *c, const char *topic, size_t topic_len,
                         const uint8_t *payload, size_t len)
{
    struct iothub_topic t;
    struct mqtt_publish p = {.payload = payload, .payload_len = len};
    if (iothub_topic_parse(topic, topic_len, &t, NULL) < 0)
        return;
    switch (t.kind) {
    case IOTHUB_TOPIC_MODULE_INPUT:
        dispatch_input(c, &t, &p);
        break;
    case IOTHUB_TOPIC_TWIN_RESPONSE:
        dispatch_twin_response(c, &t, &p);
        break;
    case IOTHUB_TOPIC_TWIN_DESIRED:
        dispatch_desired(c, &t, &p);
        break;
    case IOTHUB_TOPIC_METHOD_REQUEST:
        dispatch_method(c, &t, &p);
        break;
    case IOTHUB_TOPIC_DEVICEBOUND:
        dispatch_c2d(c, &t, &p);
        break;
    default:
        break; /* nothing else is for a module */
    }
}

static void on_mqtt_message(void *ud, const struct mqtt_publish *p)
{
    struct modclient *c = ud;
    c->cur_packet_id = p->qos == 1 ? p->packet_id : 0;
    mc_dispatch_publish(c, p->topic.ptr, p->topic.len, p->payload, p->payload_len);
    c->cur_packet_id = 0;
}
