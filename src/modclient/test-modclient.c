/* test-modclient.c — unit tests of the module client: configuration from the environment and
 * connection strings (every error), SAS token assembly, the HTTP response reader, workload
 * replies, and the client itself against an in-process fake workload API (unix socket) and fake
 * hub (MQTT over plain TCP and over TLS with a generated certificate): connect, outputs with
 * PUBACK and re-sending after a lost connection, inputs, twin, desired updates, methods. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "modclient-internal.h"
#include "mqtt/codec.h"

/* ------------------------------------------------------------------ environment */

struct env {
    const char *kv[32];
};

static const char *env_get(const char *name, void *ud)
{
    struct env *e = ud;
    for (size_t i = 0; e->kv[i]; i += 2)
        if (strcmp(e->kv[i], name) == 0)
            return e->kv[i + 1];
    return NULL;
}

#define IOTEDGE_ENV                                                                                \
    "IOTEDGE_WORKLOADURI", "unix:///var/run/iotedge/workload.sock", "IOTEDGE_DEVICEID", "dev1",    \
        "IOTEDGE_MODULEID", "mod1", "IOTEDGE_MODULEGENERATIONID", "gen1",                          \
        "IOTEDGE_IOTHUBHOSTNAME", "hub.example.net", "IOTEDGE_GATEWAYHOSTNAME", "gw.local",        \
        "IOTEDGE_AUTHSCHEME", "sasToken"

static void test_config_env(void **state)
{
    struct env e = {{IOTEDGE_ENV, "IOTEDGE_APIVERSION", "2018-06-28", NULL}};
    struct modclient_config c;
    struct lerr err = {0};
    assert_int_equal(modclient_config_from_env(env_get, &e, &c, &err), 0);
    assert_string_equal(c.workload_socket, "/var/run/iotedge/workload.sock");
    assert_string_equal(c.device_id, "dev1");
    assert_string_equal(c.module_id, "mod1");
    assert_string_equal(c.generation_id, "gen1");
    assert_string_equal(c.iothub_hostname, "hub.example.net");
    assert_string_equal(c.gateway_hostname, "gw.local");
    assert_string_equal(c.api_version, "2018-06-28");
    assert_null(c.connect_host);
    assert_null(c.sas_key);
    assert_int_equal(c.port, 8883);
    assert_true(c.tls);
    assert_int_equal(c.token_lifetime_s, MODCLIENT_TOKEN_LIFETIME_DEFAULT);
    modclient_config_clear(&c);

    struct env e2 = {{IOTEDGE_ENV, "LEDGE_HUB_HOST", "127.0.0.1", "LEDGE_HUB_PORT", "1883",
                      "LEDGE_HUB_TLS", "false", NULL}};
    assert_int_equal(modclient_config_from_env(env_get, &e2, &c, &err), 0);
    assert_string_equal(c.connect_host, "127.0.0.1");
    assert_int_equal(c.port, 1883);
    assert_false(c.tls);
    assert_string_equal(c.api_version, MODCLIENT_API_VERSION_DEFAULT);
    modclient_config_clear(&c);
    modclient_config_clear(NULL);
}

static void expect_env_error(struct env *e, int code, const char *msg)
{
    struct modclient_config c = {0};
    struct lerr err = {0};
    int r = modclient_config_from_env(env_get, e, &c, &err);
    if (r != code || !strstr(err.msg, msg)) {
        print_error("got %d \"%s\", expected %d \"%s\"\n", r, err.msg, code, msg);
        fail();
    }
    assert_null(c.device_id); /* ret untouched */
}

static void test_config_env_errors(void **state)
{
    struct env none = {{NULL}};
    expect_env_error(&none, -EINVAL, "IOTEDGE_WORKLOADURI: not set");
    struct env no_module = {{"IOTEDGE_WORKLOADURI", "unix:///w.sock", "IOTEDGE_DEVICEID", "d",
                             "IOTEDGE_MODULEID", "", NULL}};
    expect_env_error(&no_module, -EINVAL, "IOTEDGE_MODULEID: not set");
    struct env http = {{"IOTEDGE_WORKLOADURI", "http://localhost:15580", "IOTEDGE_DEVICEID", "d",
                        "IOTEDGE_MODULEID", "m", "IOTEDGE_MODULEGENERATIONID", "g",
                        "IOTEDGE_IOTHUBHOSTNAME", "h", "IOTEDGE_GATEWAYHOSTNAME", "g", NULL}};
    expect_env_error(&http, -EPROTONOSUPPORT, "only unix:// sockets are supported");
    struct env rel = {{"IOTEDGE_WORKLOADURI", "unix://w.sock", "IOTEDGE_DEVICEID", "d",
                       "IOTEDGE_MODULEID", "m", "IOTEDGE_MODULEGENERATIONID", "g",
                       "IOTEDGE_IOTHUBHOSTNAME", "h", "IOTEDGE_GATEWAYHOSTNAME", "g", NULL}};
    expect_env_error(&rel, -EINVAL, "expected unix:///absolute/path");
    struct env x509 = {{"IOTEDGE_AUTHSCHEME", "x509", IOTEDGE_ENV, NULL}};
    expect_env_error(&x509, -EINVAL, "IOTEDGE_AUTHSCHEME: \"x509\" is not supported");
    struct env port = {{IOTEDGE_ENV, "LEDGE_HUB_PORT", "70000", NULL}};
    expect_env_error(&port, -EINVAL, "LEDGE_HUB_PORT: \"70000\" is not a port number");
    struct env port0 = {{IOTEDGE_ENV, "LEDGE_HUB_PORT", "0x50", NULL}};
    expect_env_error(&port0, -EINVAL, "LEDGE_HUB_PORT");
    struct env tls = {{IOTEDGE_ENV, "LEDGE_HUB_TLS", "maybe", NULL}};
    expect_env_error(&tls, -EINVAL, "LEDGE_HUB_TLS: \"maybe\": expected true or false");
    struct env slash = {{"IOTEDGE_MODULEID", "a/b", IOTEDGE_ENV, NULL}};
    expect_env_error(&slash, -EINVAL, "must not contain / + #");
    char big[1100];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    struct env longv = {{"IOTEDGE_DEVICEID", big, IOTEDGE_ENV, NULL}};
    expect_env_error(&longv, -E2BIG, "IOTEDGE_DEVICEID: too long");
}

#define KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" /* bytes 0..31 */

static void test_config_connection_string(void **state)
{
    struct env e = {{"EdgeHubConnectionString",
                     "HostName=hub.example.net;GatewayHostName=gw;DeviceId=d1;ModuleId=m1;"
                     "SharedAccessKey=" KEY,
                     "EdgeModuleCACertificateFile", "/ca.pem", NULL}};
    struct modclient_config c;
    struct lerr err = {0};
    assert_int_equal(modclient_config_from_env(env_get, &e, &c, &err), 0);
    assert_string_equal(c.iothub_hostname, "hub.example.net");
    assert_string_equal(c.gateway_hostname, "gw");
    assert_string_equal(c.device_id, "d1");
    assert_string_equal(c.module_id, "m1");
    assert_string_equal(c.sas_key, KEY);
    assert_string_equal(c.ca_file, "/ca.pem");
    assert_null(c.workload_socket);
    modclient_config_clear(&c);

    /* names case-insensitive, any order, no gateway: the hub host */
    struct modclient_config c2 = {0};
    assert_int_equal(
        modclient_config_from_connection_string(
            "moduleid=m;deviceid=d;sharedaccesskey=" KEY ";hostname=h.net;", &c2, &err),
        0);
    assert_string_equal(c2.gateway_hostname, "h.net");
    modclient_config_clear(&c2);

    struct {
        const char *s, *msg;
    } bad[] = {
        {"HostName=h;DeviceId=d;ModuleId=m", "SharedAccessKey missing or empty"},
        {"HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=" KEY ";SharedAccessKeyName=x",
         "unsupported part \"SharedAccessKeyName\""},
        {"HostName=h;HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=" KEY,
         "HostName given twice"},
        {"HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=!!", "SharedAccessKey is not base64"},
        {"HostName=h;DeviceId=d;junk;ModuleId=m;SharedAccessKey=" KEY, "expected Name=value"},
        {"HostName=h;DeviceId=d/x;ModuleId=m;SharedAccessKey=" KEY, "must not contain"},
        {"HostName=;DeviceId=d;ModuleId=m;SharedAccessKey=" KEY, "HostName missing or empty"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct modclient_config x = {0};
        lerr_clear(&err);
        int r = modclient_config_from_connection_string(bad[i].s, &x, &err);
        modclient_config_clear(&x);
        if (r != -EINVAL || !strstr(err.msg, bad[i].msg)) {
            print_error("%s: got %d \"%s\"\n", bad[i].s, r, err.msg);
            fail();
        }
    }
}

/* ------------------------------------------------------------------ tokens */

static void test_token(void **state)
{
    struct modclient_config cfg = {
        .iothub_hostname = "hub.example.net", .device_id = "d 1", .module_id = "m1"};
    char *res = modclient_token_resource(&cfg);
    assert_string_equal(res, "hub.example.net/devices/d 1/modules/m1");
    struct lbuf sts = LBUF_INIT, tok = LBUF_INIT;
    assert_int_equal(modclient_token_string_to_sign(res, 1700000000, &sts), 0);
    assert_string_equal(sts.data, "hub.example.net%2Fdevices%2Fd%201%2Fmodules%2Fm1\n1700000000");
    assert_int_equal(modclient_token_build(res, "a+b/c=", 1700000000, &tok), 0);
    assert_string_equal(tok.data, "SharedAccessSignature "
                                  "sr=hub.example.net%2Fdevices%2Fd%201%2Fmodules%2Fm1&sig=a%2Bb%"
                                  "2Fc%3D&se=1700000000");
    lbuf_free(&sts);
    lbuf_free(&tok);
    free(res);
}

/* ------------------------------------------------------------------ HTTP reader */

static int feed_all(const char *text, size_t chunk, struct mc_http_reader *r, struct lerr *e)
{
    size_t n = strlen(text);
    for (size_t off = 0; off < n; off += chunk) {
        int rc = mc_http_reader_feed(r, text + off, MIN(chunk, n - off), e);
        if (rc != 0)
            return rc;
    }
    return mc_http_reader_feed(r, NULL, 0, e);
}

static void test_http_reader(void **state)
{
    const char *cl = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     "13\r\n\r\n{\"digest\":\"x\"}trailing";
    const char *chunked =
        "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n"
        "2\r\n1}\r\n0\r\n\r\n";
    const char *eof = "HTTP/1.1 404 Not Found\r\n\r\n{\"message\":\"no\"}";
    size_t chunks[] = {1, 3, 1000};
    for (size_t i = 0; i < ARRAY_SIZE(chunks); i++) {
        struct mc_http_reader r;
        struct lerr e = {0};
        mc_http_reader_init(&r);
        assert_int_equal(feed_all(cl, chunks[i], &r, &e), 1);
        assert_int_equal(mc_http_reader_status(&r), 200);
        assert_int_equal(r.body.len, 13);
        assert_memory_equal(r.body.data, "{\"digest\":\"x\"", 13);
        mc_http_reader_done(&r);

        mc_http_reader_init(&r);
        assert_int_equal(feed_all(chunked, chunks[i], &r, &e), 1);
        assert_int_equal(mc_http_reader_status(&r), 201);
        assert_string_equal(r.body.data, "{\"a\":1}");
        mc_http_reader_done(&r);

        mc_http_reader_init(&r);
        assert_int_equal(feed_all(eof, chunks[i], &r, &e), 1);
        assert_int_equal(mc_http_reader_status(&r), 404);
        assert_string_equal(r.body.data, "{\"message\":\"no\"}");
        mc_http_reader_done(&r);
    }
}

static void test_http_reader_errors(void **state)
{
    struct mc_http_reader r;
    struct lerr e = {0};
    mc_http_reader_init(&r);
    assert_int_equal(feed_all("SMTP ready\r\n", 100, &r, &e), -EBADMSG);
    assert_non_null(strstr(e.msg, "malformed workload reply"));
    mc_http_reader_done(&r);

    mc_http_reader_init(&r);
    lerr_clear(&e);
    assert_int_equal(feed_all("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100, &r, &e),
                     -EBADMSG);
    assert_non_null(strstr(e.msg, "workload reply"));
    mc_http_reader_done(&r);

    /* headers beyond MC_HTTP_MAX_HEADER */
    struct lbuf big = LBUF_INIT;
    lbuf_puts(&big, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 200; i++)
        lbuf_printf(&big, "X-Filler-%d: %060d\r\n", i, 0);
    mc_http_reader_init(&r);
    lerr_clear(&e);
    assert_int_equal(feed_all(big.data, 512, &r, &e), -E2BIG);
    assert_non_null(strstr(e.msg, "headers larger than"));
    mc_http_reader_done(&r);
    lbuf_free(&big);

    /* body beyond MC_HTTP_MAX_RESPONSE */
    mc_http_reader_init(&r);
    lerr_clear(&e);
    const char *hdr = "HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n";
    assert_int_equal(mc_http_reader_feed(&r, hdr, strlen(hdr), &e), 0);
    char *chunk = calloc(1, 65536);
    memset(chunk, 'x', 65536);
    int rc = 0;
    for (int i = 0; i < 40 && rc == 0; i++)
        rc = mc_http_reader_feed(&r, chunk, 65536, &e);
    assert_int_equal(rc, -E2BIG);
    assert_non_null(strstr(e.msg, "larger than 1048576 bytes"));
    free(chunk);
    mc_http_reader_done(&r);
}

#define PEM "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

static void test_workload_replies(void **state)
{
    char *s = NULL;
    struct lerr e = {0};
    const char *tb = "{\"certificate\":\""
                     "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END "
                     "CERTIFICATE-----\\n\"}";
    assert_int_equal(mc_workload_trust_bundle(200, tb, strlen(tb), &s, &e), 0);
    assert_string_equal(s, PEM);
    free(s);
    s = NULL;
    struct {
        int status;
        const char *body;
        int code;
        const char *msg;
    } bad[] = {
        {403, "{\"message\":\"this socket serves module x only\"}", -EACCES,
         "workload API answered 403: this socket serves module x only"},
        {404, "not json", -ENOENT, "workload API answered 404"},
        {500, "", -EIO, "workload API answered 500"},
        {200, "[1]", -EBADMSG, "expected a JSON object"},
        {200, "{\"certificate\":", -EBADMSG, "workload reply: not valid JSON"},
        {200, "{\"certificate\":\"\"}", -EBADMSG, "no \"certificate\" string"},
        {200, "{\"certificate\":\"hello\"}", -EBADMSG, "no PEM certificate"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        lerr_clear(&e);
        int r = mc_workload_trust_bundle(bad[i].status, bad[i].body, strlen(bad[i].body), &s, &e);
        if (r != bad[i].code || !strstr(e.msg, bad[i].msg)) {
            print_error("case %zu: %d \"%s\"\n", i, r, e.msg);
            fail();
        }
        assert_null(s);
    }
    const char *dg = "{\"digest\":\"" KEY "\"}";
    assert_int_equal(mc_workload_digest(200, dg, strlen(dg), &s, &e), 0);
    assert_string_equal(s, KEY);
    free(s);
    s = NULL;
    const char *short_dg = "{\"digest\":\"AAEC\"}";
    lerr_clear(&e);
    assert_int_equal(mc_workload_digest(200, short_dg, strlen(short_dg), &s, &e), -EBADMSG);
    assert_non_null(strstr(e.msg, "not base64 of 32 bytes"));
    lerr_clear(&e);
    assert_int_equal(mc_workload_digest(200, "{}", 2, &s, &e), -EBADMSG);
    assert_non_null(strstr(e.msg, "no \"digest\" string"));
    assert_null(s);
}

/* ------------------------------------------------------------------ fake servers */

struct packet {
    enum mqtt_type type;
    char *topic;
    char *payload;
    size_t payload_len;
    uint8_t qos;
    bool dup;
    uint16_t id;
    char *user, *pass, *client_id;
};

struct fake {
    struct event_base *base;
    /* workload */
    char dir[64], sock[128];
    struct evconnlistener *wl;
    int wl_status;
    char *wl_sign_body; /* reply to sign; NULL = compute the HMAC with KEY */
    int wl_requests;
    char last_target[512], last_body[2048];
    char *trust_pem;
    /* hub */
    struct evconnlistener *hl;
    int port;
    SSL_CTX *ssl;
    struct bufferevent *bev;
    struct lbuf in;
    bool auto_puback;
    int connack;
    struct packet pk[256];
    size_t n_pk;
    int connects;
    uint16_t next_id;
    bool closed;
};

static struct fake F;

static char *dupn(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

static void fake_wl_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    _cleanup_free_ char *buf = dupn(evbuffer_pullup(in, (ev_ssize_t)n), n);
    char *end = strstr(buf, "\r\n\r\n");
    if (!end)
        return;
    size_t cl = 0;
    char *h = strcasestr(buf, "Content-Length:");
    if (h && h < end)
        cl = strtoul(h + 15, NULL, 10);
    if (n < (size_t)(end + 4 - buf) + cl)
        return;
    F.wl_requests++;
    char *sp = strchr(buf, ' ');
    char *sp2 = sp ? strchr(sp + 1, ' ') : NULL;
    snprintf(F.last_target, sizeof(F.last_target), "%.*s", sp && sp2 ? (int)(sp2 - sp) - 1 : 0,
             sp ? sp + 1 : "");
    snprintf(F.last_body, sizeof(F.last_body), "%.*s", (int)cl, end + 4);
    char *reply;
    if (F.wl_status != 200) {
        reply = strdup("{\"message\":\"denied for the test\"}");
    } else if (strstr(F.last_target, "/trust-bundle")) {
        json_t *j = json_pack("{s:s}", "certificate", F.trust_pem ? F.trust_pem : PEM);
        reply = ljson_dump(j);
        json_decref(j);
    } else if (F.wl_sign_body) {
        reply = strdup(F.wl_sign_body);
    } else {
        json_t *req = NULL;
        ljson_parse(F.last_body, strlen(F.last_body), &req, NULL);
        const char *data = ljson_str(req, "data");
        struct lbuf raw = LBUF_INIT, key = LBUF_INIT, out = LBUF_INIT;
        uint8_t mac[32];
        lcrypto_b64_decode(data, strlen(data), &raw);
        lcrypto_b64_decode(KEY, strlen(KEY), &key);
        lcrypto_hmac_sha256(key.data, key.len, raw.data, raw.len, mac);
        lcrypto_b64_encode(mac, 32, &out);
        reply = lstr_printf("{\"digest\":\"%s\"}", out.data);
        lbuf_free(&raw);
        lbuf_free(&key);
        lbuf_free(&out);
        json_decref(req);
    }
    evbuffer_drain(in, n);
    struct evbuffer *o = bufferevent_get_output(bev);
    /* answer chunked to exercise that path, as IoT Edge's hyper server may */
    evbuffer_add_printf(o,
                        "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nTransfer-Encoding: "
                        "chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
                        F.wl_status, strlen(reply), reply);
    free(reply);
}

static void fake_wl_event(struct bufferevent *bev, short what, void *arg)
{
    bufferevent_free(bev);
}

static void fake_wl_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int len, void *arg)
{
    struct bufferevent *bev = bufferevent_socket_new(F.base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, fake_wl_read, NULL, fake_wl_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void hub_send(const struct lbuf *b)
{
    bufferevent_write(F.bev, b->data, b->len);
}

static void hub_publish(const char *topic, const char *payload, uint8_t qos)
{
    struct lbuf b = LBUF_INIT;
    struct mqtt_publish p = {.qos = qos,
                             .packet_id = qos ? ++F.next_id : 0,
                             .topic = mqtt_str_c(topic),
                             .payload = (const uint8_t *)payload,
                             .payload_len = strlen(payload)};
    assert_int_equal(mqtt_encode_publish(&b, &p), 0);
    hub_send(&b);
    lbuf_free(&b);
}

static void hub_packet(const struct mqtt_packet *p)
{
    assert_true(F.n_pk < ARRAY_SIZE(F.pk));
    struct packet *k = &F.pk[F.n_pk++];
    memset(k, 0, sizeof(*k));
    k->type = p->type;
    struct lbuf b = LBUF_INIT;
    switch (p->type) {
    case MQTT_CONNECT:
        F.connects++;
        k->client_id = dupn(p->connect.client_id.ptr, p->connect.client_id.len);
        k->user = dupn(p->connect.username.ptr, p->connect.username.len);
        k->pass = dupn(p->connect.password, p->connect.password_len);
        mqtt_encode_connack(&b, false, (uint8_t)F.connack);
        break;
    case MQTT_SUBSCRIBE: {
        struct mqtt_filter_iter it;
        struct mqtt_str f;
        uint8_t q;
        mqtt_filter_iter_init(&it, p);
        assert_true(mqtt_filter_iter_next(&it, &f, &q));
        k->topic = dupn(f.ptr, f.len);
        k->qos = q;
        mqtt_encode_suback(&b, p->subscribe.packet_id, &q, 1);
        break;
    }
    case MQTT_PUBLISH:
        k->topic = dupn(p->publish.topic.ptr, p->publish.topic.len);
        k->payload = dupn(p->publish.payload, p->publish.payload_len);
        k->payload_len = p->publish.payload_len;
        k->qos = p->publish.qos;
        k->dup = p->publish.dup;
        k->id = p->publish.packet_id;
        if (k->qos && F.auto_puback)
            mqtt_encode_ack(&b, MQTT_PUBACK, k->id);
        break;
    case MQTT_PUBACK:
        k->id = p->ack.packet_id;
        break;
    case MQTT_PINGREQ:
        mqtt_encode_empty(&b, MQTT_PINGRESP);
        break;
    default:
        break;
    }
    if (b.len)
        hub_send(&b);
    lbuf_free(&b);
}

static void fake_hub_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    lbuf_append(&F.in, evbuffer_pullup(in, (ev_ssize_t)n), n);
    evbuffer_drain(in, n);
    for (;;) {
        size_t len;
        int r = mqtt_frame((const uint8_t *)F.in.data, F.in.len, 0, &len);
        if (r <= 0)
            return;
        struct mqtt_packet p;
        struct lerr e = {0};
        assert_int_equal(mqtt_decode((const uint8_t *)F.in.data, len, &p, &e), 0);
        hub_packet(&p);
        lbuf_consume(&F.in, len);
    }
}

static void fake_hub_close(void)
{
    if (F.bev) {
        bufferevent_free(F.bev);
        F.bev = NULL;
    }
    lbuf_reset(&F.in);
    F.closed = true;
}

static void fake_hub_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        fake_hub_close();
}

static void fake_hub_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                            int len, void *arg)
{
    if (F.bev)
        fake_hub_close();
    F.closed = false;
    if (F.ssl)
        F.bev = bufferevent_openssl_socket_new(F.base, fd, SSL_new(F.ssl),
                                               BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    else
        F.bev = bufferevent_socket_new(F.base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(F.bev, fake_hub_read, NULL, fake_hub_event, NULL);
    bufferevent_enable(F.bev, EV_READ | EV_WRITE);
}

static int fake_setup(void **state)
{
    memset(&F, 0, sizeof(F));
    F.base = event_base_new();
    strcpy(F.dir, "/tmp/test-modclient-XXXXXX");
    assert_non_null(mkdtemp(F.dir));
    snprintf(F.sock, sizeof(F.sock), "%s/workload.sock", F.dir);
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    strcpy(su.sun_path, F.sock);
    F.wl = evconnlistener_new_bind(F.base, fake_wl_accept, NULL,
                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
                                   (struct sockaddr *)&su, sizeof(su));
    assert_non_null(F.wl);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    F.hl =
        evconnlistener_new_bind(F.base, fake_hub_accept, NULL,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
                                16, (struct sockaddr *)&sin, sizeof(sin));
    assert_non_null(F.hl);
    socklen_t sl = sizeof(sin);
    getsockname(evconnlistener_get_fd(F.hl), (struct sockaddr *)&sin, &sl);
    F.port = ntohs(sin.sin_port);
    F.wl_status = 200;
    F.auto_puback = true;
    return 0;
}

static int fake_teardown(void **state)
{
    fake_hub_close();
    for (size_t i = 0; i < F.n_pk; i++) {
        free(F.pk[i].topic);
        free(F.pk[i].payload);
        free(F.pk[i].user);
        free(F.pk[i].pass);
        free(F.pk[i].client_id);
    }
    evconnlistener_free(F.wl);
    evconnlistener_free(F.hl);
    SSL_CTX_free(F.ssl);
    free(F.trust_pem);
    lbuf_free(&F.in);
    event_base_free(F.base);
    unlink(F.sock);
    rmdir(F.dir);
    return 0;
}

/* Run the loop until cond() holds; fail after ms. */
static void run_until(bool (*cond)(void *), void *arg, int ms)
{
    int64_t end = ltime_mono_ms() + ms;
    while (!cond(arg)) {
        if (ltime_mono_ms() > end) {
            print_error("timed out after %d ms\n", ms);
            fail();
        }
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
}

static bool n_packets_at_least(void *arg)
{
    return F.n_pk >= (size_t)(uintptr_t)arg;
}

static struct packet *find_packet(enum mqtt_type type, const char *topic_prefix, size_t from)
{
    for (size_t i = from; i < F.n_pk; i++)
        if (F.pk[i].type == type &&
            (!topic_prefix || (F.pk[i].topic && lstr_startswith(F.pk[i].topic, topic_prefix))))
            return &F.pk[i];
    return NULL;
}

struct waiter {
    enum mqtt_type type;
    const char *prefix;
    size_t from;
};

static bool has_packet(void *arg)
{
    struct waiter *w = arg;
    return find_packet(w->type, w->prefix, w->from) != NULL;
}

/* Never NULL (fails the test instead), so callers dereference freely. */
static struct packet *get_packet(enum mqtt_type type, const char *prefix, size_t from)
{
    static struct packet none;
    struct packet *p = find_packet(type, prefix, from);
    if (!p) {
        print_error("no %s packet%s%s\n", mqtt_type_name(type), prefix ? " on " : "",
                    prefix ? prefix : "");
        fail();
        return &none;
    }
    return p;
}

static struct packet *wait_packet(enum mqtt_type type, const char *prefix, size_t from, int ms)
{
    struct waiter w = {type, prefix, from};
    run_until(has_packet, &w, ms);
    return get_packet(type, prefix, from);
}

/* ------------------------------------------------------------------ the client */

struct events {
    int connected, disconnected;
    char why[256];
    int sent_ok, sent_cancelled;
    int inputs;
    char input_name[64], input_body[256], input_prop[64];
    int twin_status;
    char *twin;
    int report_status;
    int64_t report_version;
    int desired_calls;
    bool desired_complete;
    int64_t desired_version;
    char *desired;
    int methods;
    char method_payload[256];
};

static struct events EV;

static void on_conn(void *ud, bool connected, const char *why)
{
    if (connected) {
        EV.connected++;
        return;
    }
    EV.disconnected++;
    snprintf(EV.why, sizeof(EV.why), "%s", why ? why : "");
}

static void on_sent(void *ud, int result)
{
    if (result == 0)
        EV.sent_ok++;
    else if (result == -ECANCELED)
        EV.sent_cancelled++;
}

static void on_input(void *ud, const struct modclient_message *m)
{
    EV.inputs++;
    snprintf(EV.input_name, sizeof(EV.input_name), "%s", m->input);
    snprintf(EV.input_body, sizeof(EV.input_body), "%.*s", (int)m->len, m->body);
    char buf[64];
    const char *v = modclient_message_prop(m, "k y", buf, sizeof(buf));
    snprintf(EV.input_prop, sizeof(EV.input_prop), "%s", v ? v : "(none)");
    assert_null(modclient_message_prop(m, "k y", buf, 2)); /* does not fit */
}

static void on_twin(void *ud, int status, const json_t *twin)
{
    EV.twin_status = status;
    free(EV.twin);
    EV.twin = twin ? ljson_dump_sorted(twin) : NULL;
}

static void on_report(void *ud, int status, int64_t version)
{
    EV.report_status = status;
    EV.report_version = version;
}

static void on_desired(void *ud, const json_t *d, int64_t version, bool complete)
{
    EV.desired_calls++;
    EV.desired_complete = complete;
    EV.desired_version = version;
    free(EV.desired);
    EV.desired = ljson_dump_sorted(d);
}

static char async_rid[80], async_method[64];
static void on_method_async(void *ud, const char *method, const json_t *payload, const char *rid)
{
    EV.methods++;
    snprintf(async_rid, sizeof(async_rid), "%s", rid);
    snprintf(async_method, sizeof(async_method), "%s", method);
}

static int async_want;
static bool methods_reached(void *arg)
{
    return EV.methods >= async_want;
}

static int on_method(void *ud, const char *method, const json_t *payload, json_t **ret)
{
    EV.methods++;
    char *p = ljson_dump(payload);
    snprintf(EV.method_payload, sizeof(EV.method_payload), "%s", p);
    free(p);
    *ret = json_pack("{s:s}", "echo", method);
    return 201;
}

static int token_lifetime_s; /* 0: the default */

static struct modclient *new_client(bool tls, bool with_key)
{
    struct modclient_config cfg = {
        .device_id = "dev1",
        .module_id = "mod1",
        .generation_id = "gen1",
        .iothub_hostname = "hub.example.net",
        .gateway_hostname = "localhost",
        .connect_host = "127.0.0.1",
        .port = F.port,
        .tls = tls,
        .workload_socket = F.sock,
        .sas_key = with_key ? KEY : NULL,
        .max_pending = 5,
        .token_lifetime_s = token_lifetime_s,
    };
    struct modclient *c = NULL;
    struct lerr e = {0};
    assert_int_equal(modclient_new(F.base, &cfg, &c, &e), 0);
    memset(&EV, 0, sizeof(EV));
    modclient_on_connection(c, on_conn, NULL);
    return c;
}

static bool disconnected_twice(void *arg)
{
    return EV.disconnected >= 2;
}

/* Run the loop for ms. */
static void run_for(int ms)
{
    int64_t end = ltime_mono_ms() + ms;
    while (ltime_mono_ms() < end)
        event_base_loop(F.base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(5000);
}

static bool connected(void *arg)
{
    return modclient_connected(arg);
}

/* The token the fake workload signed verifies with the key, for the right resource. */
static void check_token(const char *pass)
{
    assert_true(lstr_startswith(pass, "SharedAccessSignature sr=hub.example.net%2Fdevices%2Fdev1%"
                                      "2Fmodules%2Fmod1&sig="));
    const char *se = strstr(pass, "&se=");
    assert_non_null(se);
    long long exp = atoll(se + 4);
    long long now = ltime_now_ms() / 1000;
    assert_true(exp > now + 3500 && exp <= now + 3601);
    struct lbuf sts = LBUF_INIT, key = LBUF_INIT, sig = LBUF_INIT, enc = LBUF_INIT;
    modclient_token_string_to_sign("hub.example.net/devices/dev1/modules/mod1", (uint64_t)exp,
                                   &sts);
    uint8_t mac[32];
    lcrypto_b64_decode(KEY, strlen(KEY), &key);
    lcrypto_hmac_sha256(key.data, key.len, sts.data, sts.len, mac);
    lcrypto_b64_encode(mac, 32, &sig);
    lstr_url_encode(sig.data, sig.len, &enc);
    const char *s = strstr(pass, "&sig=") + 5;
    assert_int_equal((size_t)(se - s), enc.len);
    assert_memory_equal(s, enc.data, enc.len);
    lbuf_free(&sts);
    lbuf_free(&key);
    lbuf_free(&sig);
    lbuf_free(&enc);
}

static void test_client_connect_plain(void **state)
{
    struct modclient *c = new_client(false, false);
    assert_int_equal(modclient_start(c), 0);
    assert_int_equal(modclient_start(c), -EALREADY);
    run_until(connected, c, 5000);
    /* one workload call (sign; no trust bundle without TLS) */
    assert_int_equal(F.wl_requests, 1);
    assert_string_equal(F.last_target, "/modules/mod1/genid/gen1/sign?api-version=2019-01-30");
    json_t *req = NULL;
    assert_int_equal(ljson_parse(F.last_body, strlen(F.last_body), &req, NULL), 0);
    assert_string_equal(ljson_str(req, "keyId"), "primary");
    assert_string_equal(ljson_str(req, "algo"), "HMACSHA256");
    json_decref(req);
    struct packet *cn = get_packet(MQTT_CONNECT, NULL, 0);
    assert_string_equal(cn->client_id, "dev1/mod1");
    assert_true(lstr_startswith(cn->user, "hub.example.net/dev1/mod1/?api-version=2021-04-12&"
                                          "DeviceClientType=ledge-modclient%2F"));
    check_token(cn->pass);
    /* the four subscriptions */
    run_until(n_packets_at_least, (void *)5, 2000);
    const char *subs[] = {"devices/dev1/modules/mod1/inputs/#", "$iothub/twin/res/#",
                          "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#"};
    for (size_t i = 0; i < 4; i++) {
        struct packet *s = get_packet(MQTT_SUBSCRIBE, subs[i], 0);
        assert_int_equal(s->qos, i == 0 ? 1 : 0);
    }
    assert_int_equal(EV.connected, 1);
    modclient_free(c);
}

static void test_client_outputs(void **state)
{
    struct modclient *c = new_client(false, true);
    /* queued before connecting, sent once connected */
    struct iothub_props props = {0};
    props.sys[IOTHUB_PROP_MESSAGE_ID] = mqtt_str_c("m-1");
    props.sys[IOTHUB_PROP_CONNECTION_MODULE_ID] = mqtt_str_c("spoofed");
    assert_int_equal(modclient_props_add(&props, "temp alert", "yes&no"), 0);
    assert_int_equal(modclient_send_output(c, "out1", &props, "{\"t\":1}", 7, on_sent, NULL), 0);
    assert_int_equal(modclient_send_output(c, "out1", NULL, "two", 3, on_sent, NULL), 0);
    assert_int_equal(modclient_send_output(c, "", NULL, "x", 1, on_sent, NULL), -EINVAL);
    assert_int_equal(modclient_pending(c), 2);
    assert_int_equal(modclient_start(c), 0);
    run_until(connected, c, 5000);
    assert_int_equal(F.wl_requests, 0); /* signed with the key */
    check_token(get_packet(MQTT_CONNECT, NULL, 0)->pass);
    struct packet *p =
        wait_packet(MQTT_PUBLISH, "devices/dev1/modules/mod1/messages/events/", 0, 2000);
    assert_string_equal(p->topic, "devices/dev1/modules/mod1/messages/events/%24.mid=m-1&%24.on="
                                  "out1&temp%20alert=yes%26no");
    assert_string_equal(p->payload, "{\"t\":1}");
    assert_int_equal(p->qos, 1);
    assert_false(p->dup);
    while (EV.sent_ok < 2) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
    assert_int_equal(modclient_pending(c), 0);

    /* the module's own telemetry (as ledge-hub sends a module's messages upstream): its events
     * topic without $.on, $.cdid, $.cmid */
    struct iothub_props up = {0};
    up.sys[IOTHUB_PROP_MESSAGE_ID] = mqtt_str_c("u-1");
    up.sys[IOTHUB_PROP_OUTPUT_NAME] = mqtt_str_c("ticks");
    up.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID] = mqtt_str_c("dev1");
    up.sys[IOTHUB_PROP_CONNECTION_MODULE_ID] = mqtt_str_c("mod1");
    assert_int_equal(modclient_props_add(&up, "seq", "4"), 0);
    size_t before = F.n_pk;
    assert_int_equal(modclient_send_event(c, &up, "up", 2, on_sent, NULL), 0);
    struct packet *ev =
        wait_packet(MQTT_PUBLISH, "devices/dev1/modules/mod1/messages/events/", before, 2000);
    assert_string_equal(ev->topic, "devices/dev1/modules/mod1/messages/events/%24.mid=u-1&seq=4");
    assert_string_equal(ev->payload, "up");
    while (EV.sent_ok < 3) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }

    /* unacknowledged messages survive a lost connection and go again with DUP */
    F.auto_puback = false;
    size_t mark = F.n_pk;
    assert_int_equal(modclient_send_output(c, "out2", NULL, "three", 5, on_sent, NULL), 0);
    wait_packet(MQTT_PUBLISH, "devices/dev1/modules/mod1/messages/events/%24.on=out2", mark, 2000);
    for (int i = 0; i < 4; i++)
        assert_int_equal(modclient_send_output(c, "out2", NULL, "more", 4, on_sent, NULL), 0);
    assert_int_equal(modclient_send_output(c, "out2", NULL, "full", 4, on_sent, NULL), -ENOBUFS);
    fake_hub_close();
    run_until(connected, c, 500); /* still believes it is connected until it reads the EOF */
    while (EV.disconnected == 0) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
    assert_non_null(strstr(EV.why, "connection to the hub lost"));
    F.auto_puback = true;
    mark = F.n_pk;
    int64_t t0 = ltime_mono_ms();
    run_until(connected, c, 5000);
    assert_true(ltime_mono_ms() - t0 >= 900); /* back-off: 1 s */
    struct packet *again =
        wait_packet(MQTT_PUBLISH, "devices/dev1/modules/mod1/messages/events/", mark, 2000);
    assert_string_equal(again->payload, "three");
    assert_true(again->dup);
    while (EV.sent_ok < 8) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
    assert_int_equal(modclient_pending(c), 0);
    assert_int_equal(EV.connected, 2);

    /* freeing cancels what is left */
    F.auto_puback = false;
    assert_int_equal(modclient_send_output(c, "out3", NULL, "left", 4, on_sent, NULL), 0);
    modclient_free(c);
    assert_int_equal(EV.sent_cancelled, 1);
}

static void test_client_inputs_twin_methods(void **state)
{
    struct modclient *c = new_client(false, true);
    assert_int_equal(modclient_on_input(c, "input1", on_input, NULL), 0);
    modclient_on_desired(c, on_desired, NULL);
    assert_int_equal(modclient_on_method(c, "Echo", on_method, NULL), 0);
    assert_int_equal(modclient_start(c), 0);
    run_until(connected, c, 5000);

    /* the desired sync after connecting: a twin GET */
    struct packet *get = wait_packet(MQTT_PUBLISH, "$iothub/twin/GET/?$rid=", 0, 2000);
    char topic[128];
    snprintf(topic, sizeof(topic), "$iothub/twin/res/200/?$rid=%s", strstr(get->topic, "=") + 1);
    hub_publish(topic,
                "{\"desired\":{\"threshold\":25,\"$version\":4},\"reported\":{\"$version\":1}}", 0);
    while (EV.desired_calls == 0) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
    assert_true(EV.desired_complete);
    assert_int_equal(EV.desired_version, 4);
    assert_string_equal(EV.desired, "{\"$version\":4,\"threshold\":25}");

    /* a desired patch */
    hub_publish("$iothub/twin/PATCH/properties/desired/?$version=5",
                "{\"threshold\":30,\"$version\":5}", 0);
    while (EV.desired_calls == 1) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
    assert_false(EV.desired_complete);
    assert_int_equal(EV.desired_version, 5);

    /* an input (QoS 1: acknowledged), one for an input without a handler, one for another module */
    size_t mark = F.n_pk;
    hub_publish("devices/dev1/modules/mod1/inputs/input1/%24.cdid=dev1&%24.cmid=src&k%20y=v%201",
                "hello", 1);
    hub_publish("devices/dev1/modules/mod1/inputs/other/", "ignored", 1);
    hub_publish("devices/dev1/modules/modX/inputs/input1/", "not mine", 1);
    while (EV.inputs == 0 || !find_packet(MQTT_PUBACK, NULL, mark)) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
    assert_string_equal(EV.input_name, "input1");
    assert_string_equal(EV.input_body, "hello");
    assert_string_equal(EV.input_prop, "v 1");
    run_until(n_packets_at_least, (void *)(uintptr_t)(mark + 3), 2000);
    assert_int_equal(EV.inputs, 1);
    /* a default handler takes the rest */
    assert_int_equal(modclient_on_input(c, NULL, on_input, NULL), 0);
    hub_publish("devices/dev1/modules/mod1/inputs/other/", "taken", 1);
    while (EV.inputs == 1) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
    assert_string_equal(EV.input_name, "other");
    assert_int_equal(modclient_on_input(c, NULL, NULL, NULL), 0);

    /* twin get and reported patch */
    mark = F.n_pk;
    assert_int_equal(modclient_twin_get(c, on_twin, NULL), 0);
    get = wait_packet(MQTT_PUBLISH, "$iothub/twin/GET/?$rid=", mark, 2000);
    snprintf(topic, sizeof(topic), "$iothub/twin/res/200/?$rid=%s", strstr(get->topic, "=") + 1);
    hub_publish(topic, "{\"desired\":{\"$version\":5},\"reported\":{\"$version\":1}}", 0);
    while (!EV.twin_status) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
    assert_int_equal(EV.twin_status, 200);
    assert_string_equal(EV.twin, "{\"desired\":{\"$version\":5},\"reported\":{\"$version\":1}}");

    json_t *patch = json_pack("{s:i}", "threshold", 30);
    assert_int_equal(modclient_twin_report(c, patch, on_report, NULL), 0);
    json_t *arr = json_array();
    assert_int_equal(modclient_twin_report(c, arr, on_report, NULL), -EINVAL);
    json_decref(arr);
    json_decref(patch);
    struct packet *rep =
        wait_packet(MQTT_PUBLISH, "$iothub/twin/PATCH/properties/reported/", mark, 2000);
    assert_string_equal(rep->payload, "{\"threshold\":30}");
    snprintf(topic, sizeof(topic), "$iothub/twin/res/204/?$rid=%s&$version=7",
             strstr(rep->topic, "=") + 1);
    hub_publish(topic, "", 0);
    while (!EV.report_status) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(F.base, &tv);
        event_base_loop(F.base, EVLOOP_ONCE);
    }
    assert_int_equal(EV.report_status, 204);
    assert_int_equal(EV.report_version, 7);

    /* methods: a handled one and one without a handler */
    mark = F.n_pk;
    hub_publish("$iothub/methods/POST/Echo/?$rid=42", "{\"x\":1}", 0);
    struct packet *res = wait_packet(MQTT_PUBLISH, "$iothub/methods/res/", mark, 2000);
    assert_string_equal(res->topic, "$iothub/methods/res/201/?$rid=42");
    assert_string_equal(res->payload, "{\"echo\":\"Echo\"}");
    assert_string_equal(EV.method_payload, "{\"x\":1}");
    mark = F.n_pk;
    hub_publish("$iothub/methods/POST/Nope/?$rid=43", "not json", 0);
    res = wait_packet(MQTT_PUBLISH, "$iothub/methods/res/", mark, 2000);
    assert_string_equal(res->topic, "$iothub/methods/res/501/?$rid=43");
    assert_int_equal(EV.methods, 1);
    /* a method payload that is not JSON arrives as a JSON string */
    assert_int_equal(modclient_on_method(c, NULL, on_method, NULL), 0);
    mark = F.n_pk;
    hub_publish("$iothub/methods/POST/Any/?$rid=44", "plain", 0);
    res = wait_packet(MQTT_PUBLISH, "$iothub/methods/res/", mark, 2000);
    assert_string_equal(res->topic, "$iothub/methods/res/201/?$rid=44");
    assert_string_equal(EV.method_payload, "\"plain\"");
    /* answered later (a gateway relaying the call): the $rid is echoed verbatim */
    modclient_on_method_async(c, on_method_async, NULL);
    int before = EV.methods;
    mark = F.n_pk;
    hub_publish("$iothub/methods/POST/Later/?$rid=a%2Fb-7", "{}", 0);
    async_want = before + 1;
    run_until(methods_reached, NULL, 2000);
    assert_int_equal(EV.methods, before + 1);
    assert_string_equal(async_method, "Later");
    assert_string_equal(async_rid, "a%2Fb-7");
    json_t *ans = json_pack("{s:i}", "n", 3);
    assert_int_equal(modclient_method_respond(c, async_rid, 207, ans), 0);
    json_decref(ans);
    res = wait_packet(MQTT_PUBLISH, "$iothub/methods/res/", mark, 2000);
    assert_string_equal(res->topic, "$iothub/methods/res/207/?$rid=a%2Fb-7");
    assert_string_equal(res->payload, "{\"n\":3}");
    /* a request id too long to keep is dropped, not cut */
    char long_topic[200];
    snprintf(long_topic, sizeof(long_topic), "$iothub/methods/POST/Later/?$rid=%070d", 1);
    before = EV.methods;
    hub_publish(long_topic, "{}", 0);
    /* the next call arrives; the dropped one never did */
    mark = F.n_pk;
    hub_publish("$iothub/methods/POST/Later/?$rid=8", "{}", 0);
    async_want = before + 1;
    run_until(methods_reached, NULL, 2000);
    assert_int_equal(EV.methods, before + 1);
    assert_string_equal(async_rid, "8");
    modclient_on_method_async(c, NULL, NULL);

    /* a pending twin request is cancelled by free */
    EV.twin_status = 0;
    assert_int_equal(modclient_twin_get(c, on_twin, NULL), 0);
    modclient_free(c);
    assert_int_equal(EV.twin_status, -ECANCELED);
    free(EV.twin);
    free(EV.desired);
}

static bool disconnected_once(void *arg)
{
    return EV.disconnected > 0;
}

static bool connected_twice(void *arg)
{
    return EV.connected >= 2 && modclient_connected(arg);
}

/* A device identity (a gateway's leaf device upstream): client id, user name and token are the
 * device's; it subscribes to its C2D messages, which are acknowledged only by
 * modclient_c2d_ack() on the connection they came on. */
static int c2d_count;
static uint32_t c2d_token;
static char c2d_body[64], c2d_mid[64], c2d_prop[64];
static void on_c2d(void *ud, const struct modclient_message *m, uint32_t token)
{
    c2d_count++;
    c2d_token = token;
    snprintf(c2d_body, sizeof(c2d_body), "%.*s", (int)m->len, m->body);
    struct mqtt_str mid = m->props->sys[IOTHUB_PROP_MESSAGE_ID];
    snprintf(c2d_mid, sizeof(c2d_mid), "%.*s", (int)mid.len, mid.ptr ? mid.ptr : "");
    char buf[64];
    const char *v = modclient_message_prop(m, "color", buf, sizeof(buf));
    snprintf(c2d_prop, sizeof(c2d_prop), "%s", v ? v : "(none)");
}

static bool sent_once(void *arg)
{
    return EV.sent_ok >= 1;
}

static int c2d_want;
static bool c2d_reached(void *arg)
{
    return c2d_count >= c2d_want;
}

static void test_client_device_c2d(void **state)
{
    struct modclient_config cfg = {
        .device_id = "leaf1",
        .iothub_hostname = "hub.example.net",
        .gateway_hostname = "localhost",
        .connect_host = "127.0.0.1",
        .port = F.port,
        .sas_key = KEY,
    };
    struct modclient *c = NULL;
    struct lerr e = {0};
    struct modclient_config bad = cfg;
    bad.sas_key = NULL;
    assert_int_equal(modclient_new(F.base, &bad, &c, &e), -EINVAL); /* a device signs itself */
    assert_string_equal(e.msg, "module client configuration: no module id");
    char *res = modclient_token_resource(&cfg);
    assert_string_equal(res, "hub.example.net/devices/leaf1");
    free(res);
    assert_int_equal(modclient_new(F.base, &cfg, &c, &e), 0);
    memset(&EV, 0, sizeof(EV));
    c2d_count = 0;
    modclient_on_connection(c, on_conn, NULL);
    modclient_on_c2d(c, on_c2d, NULL);
    assert_int_equal(modclient_start(c), 0);
    run_until(connected, c, 5000);
    struct packet *cn = get_packet(MQTT_CONNECT, NULL, 0);
    assert_string_equal(cn->client_id, "leaf1");
    assert_true(lstr_startswith(cn->user, "hub.example.net/leaf1/?api-version="));
    assert_true(lstr_startswith(cn->pass, "SharedAccessSignature sr=hub.example.net%2Fdevices%2F"
                                          "leaf1&sig="));
    struct packet *sub = wait_packet(MQTT_SUBSCRIBE, "devices/", 0, 2000);
    assert_string_equal(sub->topic, "devices/leaf1/messages/devicebound/#");
    assert_int_equal(sub->qos, 1);
    assert_null(find_packet(MQTT_SUBSCRIBE, "devices/leaf1/modules/", 0));

    /* QoS 1: held until acknowledged */
    size_t mark = F.n_pk;
    hub_publish("devices/leaf1/messages/devicebound/%24.mid=m1&%24.to=%2Fdevices%2Fleaf1%2F"
                "messages%2FdeviceBound&color=red",
                "hello", 1);
    c2d_want = 1;
    run_until(c2d_reached, NULL, 2000);
    assert_string_equal(c2d_body, "hello");
    assert_string_equal(c2d_mid, "m1");
    assert_string_equal(c2d_prop, "red");
    assert_int_not_equal(c2d_token, 0);
    /* a ping's round trip: nothing acknowledged it meanwhile */
    hub_publish("$iothub/twin/PATCH/properties/desired/?$version=2", "{}", 0);
    struct timeval tv = {0, 100000};
    event_base_loopexit(F.base, &tv);
    event_base_dispatch(F.base);
    assert_null(find_packet(MQTT_PUBACK, NULL, mark));
    assert_int_equal(modclient_c2d_ack(c, c2d_token), 0);
    struct packet *ack = wait_packet(MQTT_PUBACK, NULL, mark, 2000);
    assert_int_equal(ack->id, F.next_id);
    assert_int_equal(modclient_c2d_ack(c, 0), 0); /* QoS 0: nothing to acknowledge */

    /* telemetry as the device: its events topic, without $.on/$.cdid/$.cmid */
    struct iothub_props props = {0};
    props.sys[IOTHUB_PROP_MESSAGE_ID] = mqtt_str_c("t1");
    props.sys[IOTHUB_PROP_CONNECTION_DEVICE_ID] = mqtt_str_c("leaf1");
    props.sys[IOTHUB_PROP_OUTPUT_NAME] = mqtt_str_c("o");
    modclient_props_add(&props, "seq", "1");
    mark = F.n_pk;
    assert_int_equal(modclient_send_event(c, &props, "up", 2, on_sent, NULL), 0);
    struct packet *ev = wait_packet(MQTT_PUBLISH, "devices/leaf1/messages/events/", mark, 2000);
    assert_string_equal(ev->topic, "devices/leaf1/messages/events/%24.mid=t1&seq=1");
    assert_string_equal(ev->payload, "up");
    assert_int_equal(ev->qos, 1);
    run_until(sent_once, NULL, 2000);

    /* another device's, and a module input, are not for it (acknowledged by the transport) */
    mark = F.n_pk;
    hub_publish("devices/leaf2/messages/devicebound/", "not mine", 1);
    wait_packet(MQTT_PUBACK, NULL, mark, 2000);
    assert_int_equal(c2d_count, 1);

    /* a token of an earlier connection is refused: the server sends it again */
    hub_publish("devices/leaf1/messages/devicebound/", "again", 1);
    c2d_want = 2;
    run_until(c2d_reached, NULL, 2000);
    uint32_t old = c2d_token;
    fake_hub_close();
    EV.connected = 1;
    run_until(connected_twice, c, 10000);
    assert_int_equal(modclient_c2d_ack(c, old), -ENOTCONN);
    modclient_free(c);
}

/* On behalf of (a gateway's X.509 leaf upstream, as edgeHub's
 * ClientAuthenticationForEdgeHubOnBehalfOf): the connection is the leaf's (client id, user name,
 * its C2D subscription), the token's audience is the edge's $edgeHub, signed with the key given,
 * without a key name. */
static void test_client_on_behalf_of(void **state)
{
    struct modclient_config cfg = {
        .device_id = "leaf1",
        .on_behalf_of = "edge1",
        .iothub_hostname = "hub.example.net",
        .gateway_hostname = "localhost",
        .connect_host = "127.0.0.1",
        .port = F.port,
        .sas_key = KEY,
    };
    struct modclient *c = NULL;
    struct lerr e = {0};
    struct modclient_config bad = cfg;
    bad.sas_key = NULL;
    assert_int_equal(modclient_new(F.base, &bad, &c, &e), -EINVAL);
    assert_string_equal(e.msg, "module client configuration: no key of the edge's $edgeHub");
    char *res = modclient_token_resource(&cfg);
    assert_string_equal(res, "hub.example.net/devices/edge1/modules/$edgeHub");
    free(res);
    /* a module of a leaf on behalf of the same edge: the same audience */
    struct modclient_config mod = cfg;
    mod.module_id = "m1";
    res = modclient_token_resource(&mod);
    assert_string_equal(res, "hub.example.net/devices/edge1/modules/$edgeHub");
    free(res);

    assert_int_equal(modclient_new(F.base, &cfg, &c, &e), 0);
    memset(&EV, 0, sizeof(EV));
    modclient_on_connection(c, on_conn, NULL);
    modclient_on_c2d(c, on_c2d, NULL);
    assert_int_equal(modclient_start(c), 0);
    run_until(connected, c, 5000);
    struct packet *cn = get_packet(MQTT_CONNECT, NULL, 0);
    assert_string_equal(cn->client_id, "leaf1");
    assert_true(lstr_startswith(cn->user, "hub.example.net/leaf1/?api-version="));
    static const char sr[] = "hub.example.net%2Fdevices%2Fedge1%2Fmodules%2F%24edgeHub";
    assert_true(lstr_startswith(cn->pass, "SharedAccessSignature sr="));
    assert_true(lstr_startswith(cn->pass + strlen("SharedAccessSignature sr="), sr));
    assert_null(strstr(cn->pass, "skn="));
    /* the signature: HMAC-SHA256 under the key given of "<sr as sent>\n<se>" */
    const char *se = strstr(cn->pass, "&se=");
    assert_non_null(se);
    se += 4;
    struct lbuf key = LBUF_INIT, sts = LBUF_INIT, b64 = LBUF_INIT, want = LBUF_INIT;
    uint8_t mac[LCRYPTO_SHA256_LEN];
    assert_int_equal(lcrypto_b64_decode(KEY, strlen(KEY), &key), 0);
    assert_int_equal(lbuf_printf(&sts, "%s\n%s", sr, se), 0);
    assert_int_equal(lcrypto_hmac_sha256(key.data, key.len, sts.data, sts.len, mac), 0);
    assert_int_equal(lcrypto_b64_encode(mac, sizeof(mac), &b64), 0);
    assert_int_equal(lbuf_printf(&want, "SharedAccessSignature sr=%s&sig=", sr), 0);
    assert_int_equal(lstr_url_encode(b64.data, b64.len, &want), 0);
    assert_int_equal(lbuf_printf(&want, "&se=%s", se), 0);
    assert_string_equal(cn->pass, want.data);
    lbuf_free(&key);
    lbuf_free(&sts);
    lbuf_free(&b64);
    lbuf_free(&want);
    struct packet *sub = wait_packet(MQTT_SUBSCRIBE, "devices/", 0, 2000);
    assert_string_equal(sub->topic, "devices/leaf1/messages/devicebound/#");
    modclient_free(c);
}

static void test_client_token_renewal(void **state)
{
    /* a 2 s token: renewed at 80 % by reconnecting with a fresh one, sent messages kept */
    token_lifetime_s = 2;
    struct modclient *c = new_client(false, false);
    token_lifetime_s = 0;
    assert_int_equal(modclient_start(c), 0);
    run_until(connected, c, 5000);
    int64_t t0 = ltime_mono_ms();
    F.auto_puback = false;
    assert_int_equal(modclient_send_output(c, "out", NULL, "kept", 4, on_sent, NULL), 0);
    run_until(connected_twice, c, 5000);
    int64_t dt = ltime_mono_ms() - t0;
    assert_true(dt >= 1200 && dt < 3000);
    assert_int_equal(F.wl_requests, 2); /* signed twice */
    assert_int_equal(F.connects, 2);
    struct packet *first = get_packet(MQTT_CONNECT, NULL, 0);
    struct packet *second = get_packet(MQTT_CONNECT, NULL, (size_t)(first - F.pk) + 1);
    const char *se1 = strstr(first->pass, "&se="), *se2 = strstr(second->pass, "&se=");
    assert_non_null(se1);
    assert_non_null(se2);
    assert_true(atoll(se2 + 4) >= atoll(se1 + 4) + 1);
    assert_non_null(strstr(EV.why, "renewing the SAS token"));
    /* the unacknowledged message went again on the new connection */
    F.auto_puback = true;
    struct packet *again = wait_packet(MQTT_PUBLISH, "devices/dev1/modules/mod1/messages/events/",
                                       (size_t)(second - F.pk), 2000);
    assert_string_equal(again->payload, "kept");
    assert_true(again->dup);
    modclient_free(c);
}

static void test_client_failures(void **state)
{
    /* workload refuses to sign */
    F.wl_status = 403;
    struct modclient *c = new_client(false, false);
    assert_int_equal(modclient_start(c), 0);
    run_until(disconnected_once, NULL, 3000);
    assert_non_null(strstr(EV.why, "signing the token: workload API answered 403: denied for the "
                                   "test"));
    modclient_free(c);

    /* a bad digest */
    F.wl_status = 200;
    F.wl_sign_body = "{\"digest\":\"short\"}";
    c = new_client(false, false);
    assert_int_equal(modclient_start(c), 0);
    run_until(disconnected_once, NULL, 3000);
    assert_non_null(strstr(EV.why, "digest is not base64 of 32 bytes"));
    modclient_free(c);
    F.wl_sign_body = NULL;

    /* the hub refuses the CONNECT */
    F.connack = MQTT_CONNACK_NOT_AUTHORIZED;
    c = new_client(false, true);
    assert_int_equal(modclient_start(c), 0);
    run_until(disconnected_once, NULL, 3000);
    assert_string_equal(EV.why, "the hub refused the connection (CONNACK 5: not authorized)");
    /* retrying (1 s back-off): reconnect_now tries at once, refused again; then let in */
    int64_t t0 = ltime_mono_ms();
    modclient_reconnect_now(c);
    run_until(disconnected_twice, NULL, 3000);
    assert_int_equal(F.connects, 2);
    F.connack = 0;
    modclient_reconnect_now(c);
    run_until(connected, c, 3000);
    assert_true(ltime_mono_ms() - t0 < 900); /* neither waited for its back-off */
    modclient_reconnect_now(c);              /* connected: nothing */
    run_for(100);
    assert_int_equal(F.connects, 3);
    assert_true(modclient_connected(c));
    modclient_free(c);

    /* a connect that fails at once, inside the call (no route: the kernel refuses a TCP
     * connect to the broadcast address without sending anything): reported once, retried */
    struct modclient_config ucfg = {.device_id = "d",
                                    .module_id = "m",
                                    .iothub_hostname = "h",
                                    .gateway_hostname = "localhost",
                                    .connect_host = "255.255.255.255",
                                    .port = F.port,
                                    .sas_key = KEY};
    struct lerr ue = {0};
    assert_int_equal(modclient_new(F.base, &ucfg, &c, &ue), 0);
    memset(&EV, 0, sizeof(EV));
    modclient_on_connection(c, on_conn, NULL);
    assert_int_equal(modclient_start(c), 0);
    assert_int_equal(EV.disconnected, 1);
    assert_non_null(strstr(EV.why, "unreachable"));
    modclient_reconnect_now(c); /* retrying: tries (and fails) again at once */
    assert_int_equal(EV.disconnected, 2);
    assert_false(modclient_connected(c));
    modclient_free(c);

    /* no workload socket there */
    struct modclient_config cfg = {.device_id = "d",
                                   .module_id = "m",
                                   .generation_id = "g",
                                   .iothub_hostname = "h",
                                   .gateway_hostname = "localhost",
                                   .workload_socket = "/nonexistent/workload.sock"};
    struct lerr e = {0};
    assert_int_equal(modclient_new(F.base, &cfg, &c, &e), 0);
    memset(&EV, 0, sizeof(EV));
    modclient_on_connection(c, on_conn, NULL);
    assert_int_equal(modclient_start(c), 0);
    run_until(disconnected_once, NULL, 3000);
    assert_string_equal(EV.why,
                        "workload socket /nonexistent/workload.sock: No such file or directory");
    modclient_free(c);

    /* from the process environment: nothing set here, then a connection string */
    unsetenv("IOTEDGE_WORKLOADURI");
    unsetenv("EdgeHubConnectionString");
    lerr_clear(&e);
    assert_int_equal(modclient_from_environment(F.base, &c, &e), -EINVAL);
    assert_string_equal(e.msg, "IOTEDGE_WORKLOADURI: not set");
    setenv("EdgeHubConnectionString", "HostName=h.net;DeviceId=d;ModuleId=m;SharedAccessKey=" KEY,
           1);
    assert_int_equal(modclient_from_environment(F.base, &c, &e), 0);
    modclient_free(c);
    unsetenv("EdgeHubConnectionString");

    /* an incomplete configuration */
    struct modclient_config none = {
        .device_id = "d", .module_id = "m", .iothub_hostname = "h", .gateway_hostname = "g"};
    lerr_clear(&e);
    assert_int_equal(modclient_new(F.base, &none, &c, &e), -EINVAL);
    assert_string_equal(e.msg, "module client configuration: no a key or a workload socket");
    modclient_free(NULL);
}

/* ------------------------------------------------------------------ TLS */

/* A self-signed CA certificate for localhost; with serve, the fake hub uses it. */
static char *make_cert(bool serve)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, n);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    if (serve) {
        F.ssl = SSL_CTX_new(TLS_server_method());
        assert_int_equal(SSL_CTX_use_certificate(F.ssl, x), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(F.ssl, pk), 1);
    }
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *data;
    long len = BIO_get_mem_data(b, &data);
    char *pem = dupn(data, (size_t)len);
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(pk);
    return pem;
}

static void test_client_tls(void **state)
{
    F.trust_pem = make_cert(true);
    struct modclient *c = new_client(true, false);
    assert_int_equal(modclient_start(c), 0);
    run_until(connected, c, 5000);
    /* trust bundle, then sign */
    assert_int_equal(F.wl_requests, 2);
    assert_string_equal(F.last_target, "/modules/mod1/genid/gen1/sign?api-version=2019-01-30");
    check_token(get_packet(MQTT_CONNECT, NULL, 0)->pass);
    modclient_free(c);

    /* a trust bundle that does not hold the hub's CA: the handshake fails */
    free(F.trust_pem);
    F.trust_pem = make_cert(false);
    c = new_client(true, false);
    assert_int_equal(modclient_start(c), 0);
    run_until(disconnected_once, NULL, 5000);
    assert_true(lstr_startswith(EV.why, "connecting to 127.0.0.1:"));
    assert_non_null(strstr(EV.why, ": TLS handshake or certificate check failed"));
    assert_false(modclient_connected(c));
    modclient_free(c);
}

/* ------------------------------------------------------------------ dispatch without a hub */

static void test_dispatch_robust(void **state)
{
    struct modclient *c = new_client(false, true);
    assert_int_equal(modclient_on_input(c, NULL, on_input, NULL), 0);
    modclient_on_desired(c, on_desired, NULL);
    assert_int_equal(modclient_on_method(c, NULL, on_method, NULL), 0);
    const char *topics[] = {
        "devices/dev1/modules/mod1/inputs/i/%zz=1", /* bag kept literal */
        "devices/dev1/modules/mod1/inputs/i/=v",    /* empty key: dropped */
        "$iothub/twin/PATCH/properties/desired/?$version=x",
        "$iothub/twin/PATCH/properties/desired/?$version=3",
        "$iothub/twin/res/200/?$rid=999", /* nobody asked */
        "$iothub/methods/POST/m/?$rid=1", /* no connection: no reply */
        "something/else",
    };
    for (size_t i = 0; i < ARRAY_SIZE(topics); i++)
        mc_dispatch_publish(c, topics[i], strlen(topics[i]), (const uint8_t *)"[1", 2);
    assert_int_equal(EV.inputs, 1);
    assert_int_equal(EV.desired_calls, 0); /* "[1" is not a JSON object */
    assert_int_equal(EV.methods, 1);
    modclient_free(c);
    free(EV.desired);
    free(EV.twin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_env),
        cmocka_unit_test(test_config_env_errors),
        cmocka_unit_test(test_config_connection_string),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_http_reader),
        cmocka_unit_test(test_http_reader_errors),
        cmocka_unit_test(test_workload_replies),
        cmocka_unit_test_setup_teardown(test_client_connect_plain, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_client_outputs, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_client_inputs_twin_methods, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_client_failures, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_client_device_c2d, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_client_on_behalf_of, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_client_token_renewal, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_client_tls, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_robust, fake_setup, fake_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
