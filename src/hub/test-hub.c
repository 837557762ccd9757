/* test-hub.c — the hub's connection, session and router units driven the way clients drive them:
 * a real hub (store, twins, control socket) in a temp dir, clients speaking MQTT over socketpairs
 * handed to mqtt_head_accept(). Authentication, authorisation, routing and delivery, QoS 2 and
 * retain, limits, malformed and oversized input, persistent sessions, priorities, TTL, wills, store
 * full, reload; the same client over WebSockets (ws_head_accept(): the upgrade, then MQTT in
 * frames). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/session.h>
#include <proton/terminus.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/quantile.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "database.h"
#include "auth.h"
#include "amqp_map.h"
#include "cloud.h"
#include "commit.h"
#include "endpoint.h"
#include "head_amqp.h"
#include "exposition.h"
#include "head_https.h"
#include "metrics.h"
#include "head_mqtt.h"
#include "head_ws.h"
#include "methods.h"
#include "server.h"
#include "session.h"
#include "status.h"
#include "twin.h"
#include "identity/ca.h"
#include "identity/leaf.h"
#include "identity/sas.h"
#include "log/log.h"
#include "mqtt/iothub.h"
#include "mqtt/topic.h"

#define DEVICE "dev1"
#define IOTHUB "dev1.example.net"
#define GATEWAY "gw.local"

static const char *const module_names[] = {"sender", "receiver", "other"};

struct fixture {
    char dir[64];
    struct hub h;
    uint8_t keys[3][32];
    const char *edge_hub; /* $edgeHub desired JSON, or NULL */
    int max_subscriptions, max_connections, max_inflight;
    uint64_t max_packet;
    /* leaf devices (docs/gateway.md): SAS devices leaf1 and leaf2 (two keys each; gen NULL: not
     * there), an X.509 device by thumbprint and a CA-signed one */
    uint8_t leaf_keys[2][2][32];
    const char *leaf_gen[2];
    char leaf_thumbprint[65];
    char device_ca[128]; /* the device CA bundle's path, "" none */
    int upstream_port;   /* an upstream on 127.0.0.1 (IoT Hub's protocol), 0 none */
};

struct client {
    struct fixture *f;
    int fd;
    struct lbuf in;  /* bytes received, not yet framed */
    struct lbuf pkt; /* the last packet returned (decoded views point here) */
    bool eof;
    uint16_t next_id;
    /* over WebSockets: our packets go out in masked binary frames, the hub's come in frames */
    bool ws;
    struct lbuf raw; /* bytes received, not yet unframed */
    int ws_close;    /* the code of the hub's close frame, -1 none yet */
    int pongs;
};

/* ------------------------------------------------------------------ fixture */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *default_routes =
    "{\"schemaVersion\": \"1.1\", \"routes\": {"
    "\"r1\": \"FROM /messages/modules/sender/outputs/out1 INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/in1\\\")\","
    "\"hi\": {\"route\": \"FROM /messages/modules/sender/outputs/hi INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/prio\\\")\", \"priority\": 0},"
    "\"lo\": {\"route\": \"FROM /messages/modules/sender/outputs/lo INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/prio\\\")\", \"priority\": 5},"
    "\"short\": {\"route\": \"FROM /messages/modules/sender/outputs/short INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/short\\\")\", \"timeToLiveSecs\": 1},"
    "\"cond\": \"FROM /messages/modules/sender/outputs/cond WHERE as_number(temp) > 20 INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/hot\\\")\","
    "\"up\": \"FROM /messages/modules/sender/outputs/up INTO $upstream\","
    "\"leaf\": \"FROM /messages/* WHERE $connectionDeviceId = 'leaf1' AND kind = 'x' INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/leaf\\\")\","
    "\"leafup\": \"FROM /messages/* WHERE $connectionDeviceId = 'leaf2' INTO $upstream\","
    "\"leafmod\": \"FROM /messages/modules/* WHERE $connectionDeviceId = 'leaf1' INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/wrong\\\")\""
    "}, \"storeAndForwardConfiguration\": {\"timeToLiveSecs\": 7200}}";

static const char *const leaf_names[] = {"leaf1", "leaf2"};

/* The runtime file's leafDevices, as ledged writes them (identity_leaf_runtime_json). */
static json_t *leaf_devices(struct fixture *f)
{
    json_t *o = json_object();
    for (size_t i = 0; i < ARRAY_SIZE(leaf_names); i++) {
        if (!f->leaf_gen[i])
            continue;
        json_t *keys = json_array();
        for (int k = 0; k < 2; k++) {
            struct lbuf b64 = LBUF_INIT;
            assert_int_equal(lcrypto_b64_encode(f->leaf_keys[i][k], 32, &b64), 0);
            json_array_append_new(keys, json_string(b64.data));
            lbuf_free(&b64);
        }
        json_object_set_new(o, leaf_names[i],
                            json_pack("{s:s, s:s, s:o}", "generationId", f->leaf_gen[i], "auth",
                                      "sas", "keys", keys));
    }
    if (f->leaf_thumbprint[0])
        json_object_set_new(o, "leafx",
                            json_pack("{s:s, s:s, s:[s]}", "generationId", "genx", "auth",
                                      "x509-thumbprint", "thumbprints", f->leaf_thumbprint));
    json_object_set_new(o, "leafca",
                        json_pack("{s:s, s:s}", "generationId", "genca", "auth", "x509-ca"));
    return o;
}

/* The runtime file: every module of module_names with generation id gens[i] (NULL: the module is
 * not in the deployment; gens NULL: all of them, "gen1") and key f->keys[i]. */
static void write_runtime_with(struct fixture *f, const char *edge_hub, const char *const *gens)
{
    json_t *mods = json_object();
    for (size_t i = 0; i < ARRAY_SIZE(module_names); i++) {
        const char *gen = gens ? gens[i] : "gen1";
        if (!gen)
            continue;
        struct lbuf b64 = LBUF_INIT;
        assert_int_equal(lcrypto_b64_encode(f->keys[i], 32, &b64), 0);
        json_object_set_new(mods, module_names[i],
                            json_pack("{s:s, s:s}", "generationId", gen, "key", b64.data));
        lbuf_free(&b64);
    }
    json_error_t je;
    json_t *eh = edge_hub ? json_loads(edge_hub, 0, &je) : NULL;
    if (edge_hub && !eh)
        fail_msg("bad $edgeHub in the test: %s", je.text);
    json_t *rt = json_pack("{s:s, s:s, s:s, s:o, s:o*, s:{}, s:o, s:{s:s*}}", "deviceId", DEVICE,
                           "iothubHostname", IOTHUB, "gatewayHostname", GATEWAY, "modules", mods,
                           "edgeHub", eh, "twins", "leafDevices", leaf_devices(f), "certificates",
                           "deviceCa", f->device_ca[0] ? f->device_ca : NULL);
    assert_non_null(rt);
    char *text = json_dumps(rt, 0);
    json_decref(rt);
    char path[128];
    snprintf(path, sizeof(path), "%s/run/hub", f->dir);
    assert_int_equal(lfs_mkdir_p(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/run/hub/runtime.json", f->dir);
    assert_int_equal(lfs_write_atomic(path, text, strlen(text), 0600), 0);
    free(text);
}

static void write_runtime(struct fixture *f, const char *edge_hub)
{
    write_runtime_with(f, edge_hub, NULL);
}

static void hub_up(struct fixture *f)
{
    char yaml[1024], up[200] = "";
    if (f->upstream_port)
        snprintf(up, sizeof(up),
                 "upstream:\n  enabled: true\n  host: 127.0.0.1\n  port: %d\n  tls: false\n"
                 "  iothub: true\n",
                 f->upstream_port);
    snprintf(yaml, sizeof(yaml),
             "state_dir: %s/state\nrun_dir: %s/run\nlog_level: error\n"
             "device:\n  id: " DEVICE "\n"
             "hub:\n  control_socket: %s/run/hub.sock\n  max_subscriptions: %d\n"
             "  max_connections: %d\n  max_inflight: %d\n  max_packet_size: %llu\n%s",
             f->dir, f->dir, f->dir, f->max_subscriptions, f->max_connections, f->max_inflight,
             (unsigned long long)f->max_packet, up);
    struct lstrv errors = LSTRV_INIT;
    int r = config_load_string(yaml, strlen(yaml), "test", &f->h.cfg, &errors);
    if (r < 0)
        fail_msg("config: %s", errors.n ? errors.v[0] : "?");
    lstrv_free(&errors);
    f->h.cfg.hub.tls_port = 0; /* the tests hand sockets to mqtt_head_accept() themselves */
    f->h.cfg.hub.plain_port = 0;
    f->h.cfg.hub.websocket_port = 0; /* ws_head_accept() gets socketpairs too */
    f->h.cfg.hub.amqp_port = 0;      /* and amqp_head_accept() */
    /* a generated identity has no IoT Hub above it: the relay's tests say there is one */
    f->h.cfg.upstream.iothub = f->upstream_port != 0;
    f->h.base = event_base_new();
    assert_non_null(f->h.base);
    struct lerr err = {0};
    r = hub_start(&f->h, &err);
    if (r < 0)
        fail_msg("hub_start: %s", lerr_str(&err));
}

static void hub_down(struct fixture *f)
{
    hub_stop(&f->h);
    config_free(&f->h.cfg);
    event_base_free(f->h.base);
    memset(&f->h, 0, sizeof(f->h));
}

static int setup_upstream_port; /* setup_relay's fake upstream */

static int setup_with(void **state, const char *edge_hub, int max_subs, int max_conns)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/ledge-test-hub-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    for (size_t i = 0; i < ARRAY_SIZE(module_names); i++)
        for (int j = 0; j < 32; j++)
            f->keys[i][j] = (uint8_t)(i * 37 + j * 11 + 1);
    for (size_t i = 0; i < 2; i++) {
        f->leaf_gen[i] = "lgen1";
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < 32; j++)
                f->leaf_keys[i][k][j] = (uint8_t)(i * 53 + k * 19 + j * 7 + 3);
    }
    f->edge_hub = edge_hub;
    f->max_subscriptions = max_subs;
    f->max_connections = max_conns;
    f->max_inflight = 10;
    f->max_packet = 16 * 1024;
    f->upstream_port = setup_upstream_port;
    write_runtime(f, edge_hub);
    hub_up(f);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, default_routes, 8, 16);
}
static int setup_limits(void **state)
{
    return setup_with(state, default_routes, 3, 3);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    hub_down(f);
    rm_rf(f->dir);
    free(f);
    return 0;
}

/* ------------------------------------------------------------------ clients */

static void pump(struct fixture *f)
{
    for (int i = 0; i < 8; i++)
        event_base_loop(f->h.base, EVLOOP_NONBLOCK);
}

/* Run the hub for ms (timers: TTL, store ticks). */
static void pump_for(struct fixture *f, int ms)
{
    int64_t until = ltime_now_ms() + ms;
    while (ltime_now_ms() < until) {
        pump(f);
        poll(NULL, 0, 20);
    }
}

static void cl_open(struct fixture *f, struct client *c)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    *c = (struct client){.f = f, .fd = sv[1], .in = LBUF_INIT, .pkt = LBUF_INIT, .next_id = 1};
    mqtt_head_accept(&f->h, sv[0], false);
    pump(f);
}

static void cl_close(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    lbuf_free(&c->raw);
    lbuf_free(&c->in);
    lbuf_free(&c->pkt);
    pump(c->f);
}

static void cl_send_raw(struct client *c, const void *data, size_t n);

/* A client's frame: masked, as RFC 6455 requires of clients. */
static void ws_frame(struct lbuf *b, uint8_t first, const void *payload, size_t n)
{
    uint8_t h[14], mask[4] = {0xa1, 0x5b, 0x07, 0xee};
    size_t hn = 0;
    h[hn++] = first;
    if (n < 126) {
        h[hn++] = 0x80 | (uint8_t)n;
    } else if (n < 65536) {
        h[hn++] = 0x80 | 126;
        h[hn++] = (uint8_t)(n >> 8);
        h[hn++] = (uint8_t)n;
    } else {
        h[hn++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hn++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(h + hn, mask, 4);
    hn += 4;
    assert_int_equal(lbuf_append(b, h, hn), 0);
    assert_int_equal(lbuf_reserve(b, n), 0);
    for (size_t i = 0; i < n; i++)
        b->data[b->len++] = (char)(((const uint8_t *)payload)[i] ^ mask[i % 4]);
}

static void cl_send(struct client *c, const void *data, size_t n)
{
    if (!c->ws) {
        cl_send_raw(c, data, n);
        return;
    }
    struct lbuf b = LBUF_INIT;
    ws_frame(&b, 0x82, data, n);
    cl_send_raw(c, b.data, b.len);
    lbuf_free(&b);
}

/* The hub's frames (never masked) from c->raw: binary payloads to c->in. */
static void ws_unframe(struct client *c)
{
    for (;;) {
        const uint8_t *p = (const uint8_t *)c->raw.data;
        size_t avail = c->raw.len, hn = 2;
        if (avail < 2)
            return;
        assert_int_equal(p[1] & 0x80, 0);
        uint64_t n = p[1] & 0x7f;
        if (n == 126) {
            if (avail < 4)
                return;
            n = (uint64_t)p[2] << 8 | p[3];
            hn = 4;
        } else if (n == 127) {
            if (avail < 10)
                return;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | p[2 + i];
            hn = 10;
        }
        if (avail < hn + n)
            return;
        uint8_t op = p[0] & 0x0f;
        if (op == 2 || op == 0)
            assert_int_equal(lbuf_append(&c->in, p + hn, (size_t)n), 0);
        else if (op == 8)
            c->ws_close = n >= 2 ? (p[hn] << 8 | p[hn + 1]) : 0;
        else if (op == 0xa)
            c->pongs++;
        else
            fail_msg("hub sent WebSocket opcode %u", op);
        memmove(c->raw.data, c->raw.data + hn + n, avail - hn - (size_t)n);
        c->raw.len -= hn + (size_t)n;
    }
}

static void cl_send_raw(struct client *c, const void *data, size_t n)
{
    const uint8_t *p = data;
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            pump(c->f);
            struct pollfd pfd = {c->fd, POLLOUT, 0};
            poll(&pfd, 1, 1);
            continue;
        }
        if (w < 0)
            return; /* the hub closed: the test looks at what came back */
        p += w;
        n -= (size_t)w;
    }
    pump(c->f);
}

static void cl_send_buf(struct client *c, struct lbuf *b)
{
    cl_send(c, b->data, b->len);
    lbuf_free(b);
}

/* The next packet from the hub: 1, 0 on timeout, -1 when the hub closed the connection. */
static int cl_next(struct client *c, struct mqtt_packet *p, int timeout_ms)
{
    int64_t deadline = ltime_mono_ms() + timeout_ms;
    for (;;) {
        size_t plen;
        int r = c->in.len
                    ? mqtt_frame((const uint8_t *)c->in.data, c->in.len, MQTT_MAX_PACKET, &plen)
                    : 0;
        assert_true(r >= 0);
        if (r == 1) {
            lbuf_reset(&c->pkt);
            assert_int_equal(lbuf_append(&c->pkt, c->in.data, plen), 0);
            memmove(c->in.data, c->in.data + plen, c->in.len - plen);
            c->in.len -= plen;
            struct lerr e = {0};
            if (mqtt_decode((const uint8_t *)c->pkt.data, plen, p, &e) < 0)
                fail_msg("hub sent an undecodable packet: %s", e.msg);
            return 1;
        }
        if (c->eof)
            return -1;
        event_base_loop(c->f->h.base, EVLOOP_NONBLOCK);
        uint8_t buf[65536];
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            assert_int_equal(lbuf_append(c->ws ? &c->raw : &c->in, buf, (size_t)n), 0);
            if (c->ws)
                ws_unframe(c);
            continue;
        }
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
            c->eof = true;
            continue;
        }
        if (ltime_mono_ms() > deadline)
            return 0;
        struct pollfd pfd = {c->fd, POLLIN, 0};
        poll(&pfd, 1, 2);
    }
}

static void expect_closed(struct client *c)
{
    struct mqtt_packet p;
    int r;
    while ((r = cl_next(c, &p, 2000)) == 1)
        ;
    assert_int_equal(r, -1);
}

static void expect_nothing(struct client *c, int ms)
{
    struct mqtt_packet p;
    int r = cl_next(c, &p, ms);
    if (r == 1)
        fail_msg("unexpected %s (topic %.*s)", mqtt_type_name(p.type),
                 p.type == MQTT_PUBLISH ? (int)p.publish.topic.len : 0,
                 p.type == MQTT_PUBLISH ? p.publish.topic.ptr : "");
    assert_int_equal(r, 0);
}

static void cl_ping(struct client *c)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(mqtt_encode_empty(&b, MQTT_PINGREQ), 0);
    cl_send_buf(c, &b);
}

static void expect_pingresp(struct client *c)
{
    cl_ping(c);
    struct mqtt_packet p;
    assert_int_equal(cl_next(c, &p, 2000), 1);
    assert_int_equal(p.type, MQTT_PINGRESP);
}

static int module_index(const char *module)
{
    for (size_t i = 0; i < ARRAY_SIZE(module_names); i++)
        if (strcmp(module_names[i], module) == 0)
            return (int)i;
    return 0;
}

struct connect_opts {
    const char *client_id; /* default DEVICE/module */
    const char *username;  /* default the IoT Hub form */
    const char *token;     /* default a valid token */
    bool no_password;
    bool persistent;
    uint16_t keep_alive;
    const char *will_topic;
    const char *will_payload;
    const uint8_t *key; /* default the module's */
    int64_t expiry;     /* default now + 1 h */
};

static void make_token(struct fixture *f, const char *module, const uint8_t *key, int64_t expiry,
                       struct lbuf *out)
{
    char resource[256];
    snprintf(resource, sizeof(resource), IOTHUB "/devices/" DEVICE "/modules/%s", module);
    assert_int_equal(sas_token_make(resource, key ? key : f->keys[module_index(module)], 32,
                                    (uint64_t)expiry, NULL, out),
                     0);
}

/* Send CONNECT; the CONNACK return code, or -1 when closed without one. */
static int cl_connect_opts(struct client *c, const char *module, const struct connect_opts *o,
                           bool *ret_present)
{
    char client_id[128], username[256];
    snprintf(client_id, sizeof(client_id), DEVICE "/%s", module);
    snprintf(username, sizeof(username), IOTHUB "/" DEVICE "/%s/?api-version=2021-04-12", module);
    struct lbuf tok = LBUF_INIT;
    if (!o->token)
        make_token(c->f, module, o->key, o->expiry ? o->expiry : ltime_now_ms() / 1000 + 3600,
                   &tok);
    const char *token = o->token ? o->token : tok.data;
    struct mqtt_connect cn = {
        .clean_session = !o->persistent,
        .keep_alive = o->keep_alive,
        .client_id = mqtt_str_c(o->client_id ? o->client_id : client_id),
        .has_username = true,
        .username = mqtt_str_c(o->username ? o->username : username),
        .has_password = !o->no_password,
        .password = (const uint8_t *)token,
        .password_len = strlen(token),
    };
    if (o->will_topic) {
        cn.will = true;
        cn.will_qos = 1;
        cn.will_topic = mqtt_str_c(o->will_topic);
        cn.will_payload = (const uint8_t *)o->will_payload;
        cn.will_payload_len = strlen(o->will_payload);
    }
    struct lbuf b = LBUF_INIT;
    assert_int_equal(mqtt_encode_connect(&b, &cn), 0);
    lbuf_free(&tok);
    cl_send_buf(c, &b);
    struct mqtt_packet p;
    if (cl_next(c, &p, 2000) != 1)
        return -1;
    assert_int_equal(p.type, MQTT_CONNACK);
    if (ret_present)
        *ret_present = p.connack.session_present;
    return p.connack.return_code;
}

static void cl_connect(struct client *c, const char *module)
{
    struct connect_opts o = {0};
    assert_int_equal(cl_connect_opts(c, module, &o, NULL), 0);
}

static void cl_connect_persistent(struct client *c, const char *module, bool *present)
{
    struct connect_opts o = {.persistent = true};
    assert_int_equal(cl_connect_opts(c, module, &o, present), 0);
}

/* A new connection, authenticated as module. */
static void cl_open_as(struct fixture *f, struct client *c, const char *module)
{
    cl_open(f, c);
    cl_connect(c, module);
}

/* SUBSCRIBE one filter; the SUBACK code. */
static int cl_subscribe(struct client *c, const char *filter, uint8_t qos)
{
    struct mqtt_subscription s = {mqtt_str_c(filter), qos};
    struct lbuf b = LBUF_INIT;
    uint16_t id = c->next_id++;
    assert_int_equal(mqtt_encode_subscribe(&b, id, &s, 1), 0);
    cl_send_buf(c, &b);
    struct mqtt_packet p;
    assert_int_equal(cl_next(c, &p, 2000), 1);
    assert_int_equal(p.type, MQTT_SUBACK);
    assert_int_equal(p.suback.packet_id, id);
    assert_int_equal(p.suback.count, 1);
    return p.suback.codes[0];
}

/* The receiver, connected and subscribed to all its inputs at QoS 1. */
static void cl_open_receiver(struct fixture *f, struct client *c)
{
    cl_open_as(f, c, "receiver");
    assert_int_equal(cl_subscribe(c, "devices/" DEVICE "/modules/receiver/inputs/#", 1), 1);
}

static uint16_t cl_publish(struct client *c, const char *topic, const char *payload, uint8_t qos,
                           bool retain)
{
    uint16_t id = qos ? c->next_id++ : 0;
    struct mqtt_publish p = {
        .qos = qos,
        .retain = retain,
        .packet_id = id,
        .topic = mqtt_str_c(topic),
        .payload = (const uint8_t *)payload,
        .payload_len = strlen(payload),
    };
    struct lbuf b = LBUF_INIT;
    assert_int_equal(mqtt_encode_publish(&b, &p), 0);
    cl_send_buf(c, &b);
    return id;
}

static void expect_puback(struct client *c, uint16_t id)
{
    struct mqtt_packet p;
    assert_int_equal(cl_next(c, &p, 2000), 1);
    assert_int_equal(p.type, MQTT_PUBACK);
    assert_int_equal(p.ack.packet_id, id);
}

/* Publish on the sender's output with a property bag, QoS 1, and wait for the PUBACK. */
static void send_output(struct client *c, const char *output, const char *bag, const char *body)
{
    char topic[512];
    snprintf(topic, sizeof(topic),
             "devices/" DEVICE "/modules/sender/messages/events/%%24.on=%s%s%s", output,
             bag && *bag ? "&" : "", bag ? bag : "");
    expect_puback(c, cl_publish(c, topic, body, 1, false));
}

struct received {
    char input[64];
    char body[512];
    struct iothub_props props;
    char scratch[2048];
    uint16_t packet_id;
    uint8_t qos;
    bool dup;
};

static const char *prop_app(const struct received *r, const char *key)
{
    static char value[512];
    for (size_t i = 0; i < r->props.n_app; i++)
        if (r->props.app[i].key.len == strlen(key) &&
            memcmp(r->props.app[i].key.ptr, key, r->props.app[i].key.len) == 0) {
            snprintf(value, sizeof(value), "%.*s", (int)r->props.app[i].value.len,
                     r->props.app[i].value.ptr);
            return value;
        }
    return NULL;
}

static bool prop_sys_is(const struct received *r, enum iothub_sysprop k, const char *v)
{
    return r->props.sys[k].ptr && r->props.sys[k].len == strlen(v) &&
           memcmp(r->props.sys[k].ptr, v, strlen(v)) == 0;
}

/* Expect a PUBLISH on the receiver's inputs; acknowledge it when ack. */
static void expect_input(struct client *c, struct received *ret, bool ack)
{
    struct mqtt_packet p;
    int r = cl_next(c, &p, 2000);
    assert_int_equal(r, 1);
    assert_int_equal(p.type, MQTT_PUBLISH);
    struct iothub_topic t;
    struct lerr e = {0};
    assert_int_equal(iothub_topic_parse(p.publish.topic.ptr, p.publish.topic.len, &t, &e), 0);
    assert_int_equal(t.kind, IOTHUB_TOPIC_MODULE_INPUT);
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->input, sizeof(ret->input), "%.*s", (int)t.input.len, t.input.ptr);
    snprintf(ret->body, sizeof(ret->body), "%.*s", (int)p.publish.payload_len,
             (const char *)p.publish.payload);
    assert_true(t.propbag.len < sizeof(ret->scratch));
    /* the views point into c->pkt, alive until the next cl_next(): copy the bag first */
    char bag[2048];
    memcpy(bag, t.propbag.ptr, t.propbag.len);
    assert_int_equal(
        iothub_props_parse(bag, t.propbag.len, ret->scratch, sizeof(ret->scratch), &ret->props, &e),
        0);
    ret->packet_id = p.publish.packet_id;
    ret->qos = p.publish.qos;
    ret->dup = p.publish.dup;
    if (ack && p.publish.qos == 1) {
        struct lbuf b = LBUF_INIT;
        assert_int_equal(mqtt_encode_ack(&b, MQTT_PUBACK, p.publish.packet_id), 0);
        cl_send_buf(c, &b);
    }
}

static void expect_body(struct client *c, const char *input, const char *body)
{
    struct received r;
    expect_input(c, &r, true);
    assert_string_equal(r.input, input);
    assert_string_equal(r.body, body);
}

static json_t *status(struct fixture *f)
{
    return hub_status_json(&f->h);
}

static long long counter(struct fixture *f, const char *name)
{
    json_t *s = status(f);
    json_t *v = json_object_get(json_object_get(s, "counters"), name);
    long long n = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(s);
    return n;
}

static long long endpoint_field(struct fixture *f, const char *id, const char *field)
{
    json_t *s = status(f);
    size_t i;
    json_t *e;
    long long d = -1;
    json_array_foreach (json_object_get(s, "endpoints"), i, e)
        if (strcmp(json_string_value(json_object_get(e, "endpoint")), id) == 0)
            d = json_integer_value(json_object_get(e, field));
    json_decref(s);
    return d;
}

static long long endpoint_depth(struct fixture *f, const char *id)
{
    return endpoint_field(f, id, "depth");
}

static long long endpoint_bytes(struct fixture *f, const char *id)
{
    return endpoint_field(f, id, "bytes");
}

/* ------------------------------------------------------------------ authentication */

static void test_connect_accepts_valid_token(void **state)
{
    struct fixture *f = *state;
    struct client c;
    cl_open(f, &c);
    bool present = true;
    struct connect_opts o = {0};
    assert_int_equal(cl_connect_opts(&c, "sender", &o, &present), MQTT_CONNACK_ACCEPTED);
    assert_false(present);
    assert_int_equal(counter(f, "authFailures"), 0);
    json_t *s = status(f);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(s, "connections"), "modules")), 1);
    json_decref(s);
    /* PINGREQ is answered */
    expect_pingresp(&c);
    cl_close(&c);
}

static void expect_refused(struct fixture *f, const char *module, const struct connect_opts *o,
                           int code)
{
    struct client c;
    cl_open(f, &c);
    assert_int_equal(cl_connect_opts(&c, module, o, NULL), code);
    expect_closed(&c);
    cl_close(&c);
}

static void test_connect_refusals(void **state)
{
    struct fixture *f = *state;
    uint8_t wrong[32] = {9};
    struct connect_opts bad_key = {.key = wrong};
    expect_refused(f, "sender", &bad_key, MQTT_CONNACK_NOT_AUTHORIZED);
    struct connect_opts expired = {.expiry = ltime_now_ms() / 1000 - 10};
    expect_refused(f, "sender", &expired, MQTT_CONNACK_NOT_AUTHORIZED);
    struct connect_opts wrong_client = {.client_id = DEVICE "/receiver"};
    expect_refused(f, "sender", &wrong_client, MQTT_CONNACK_IDENTIFIER_REJECTED);
    struct connect_opts no_password = {.no_password = true};
    expect_refused(f, "sender", &no_password, MQTT_CONNACK_BAD_USERNAME_PASSWORD);
    struct connect_opts bad_user = {.username = "not an iothub user name"};
    expect_refused(f, "sender", &bad_user, MQTT_CONNACK_BAD_USERNAME_PASSWORD);
    struct connect_opts device_user = {.client_id = DEVICE,
                                       .username = IOTHUB "/" DEVICE "/?api-version=2021-04-12"};
    expect_refused(f, "sender", &device_user, MQTT_CONNACK_NOT_AUTHORIZED);
    /* a token for another module does not open this one */
    struct lbuf tok = LBUF_INIT;
    make_token(f, "receiver", NULL, ltime_now_ms() / 1000 + 60, &tok);
    struct connect_opts other_token = {.token = tok.data};
    expect_refused(f, "sender", &other_token, MQTT_CONNACK_NOT_AUTHORIZED);
    lbuf_free(&tok);
    /* unknown module and unknown device */
    struct connect_opts unknown = {.client_id = DEVICE "/ghost",
                                   .username = IOTHUB "/" DEVICE "/ghost/?api-version=1"};
    expect_refused(f, "sender", &unknown, MQTT_CONNACK_NOT_AUTHORIZED);
    struct connect_opts other_dev = {.client_id = "dev2/sender",
                                     .username = IOTHUB "/dev2/sender/?api-version=1"};
    expect_refused(f, "sender", &other_dev, MQTT_CONNACK_NOT_AUTHORIZED);
    assert_int_equal(counter(f, "authFailures"), 8);
    /* the gateway host name is an accepted audience too */
    struct client c;
    cl_open(f, &c);
    char resource[128];
    snprintf(resource, sizeof(resource), GATEWAY "/devices/" DEVICE "/modules/sender");
    assert_int_equal(sas_token_make(resource, f->keys[0], 32,
                                    (uint64_t)(ltime_now_ms() / 1000 + 60), NULL, &tok),
                     0);
    struct connect_opts gw = {.token = tok.data};
    assert_int_equal(cl_connect_opts(&c, "sender", &gw, NULL), MQTT_CONNACK_ACCEPTED);
    lbuf_free(&tok);
    cl_close(&c);
}

static void test_packets_before_connect_close(void **state)
{
    struct fixture *f = *state;
    struct client c;
    cl_open(f, &c);
    cl_ping(&c);
    expect_closed(&c);
    cl_close(&c);
    /* a second CONNECT on an open connection is a protocol violation */
    cl_open_as(f, &c, "sender");
    struct connect_opts o = {0};
    assert_int_equal(cl_connect_opts(&c, "sender", &o, NULL), -1);
    cl_close(&c);
    assert_int_equal(counter(f, "malformed"), 2);
}

/* ------------------------------------------------------------------ authorisation */

static void test_may_subscribe(void **state)
{
    struct session s = {.id = {.device_id = "dev1", .module_id = "m"}};
    const char *allowed[] = {
        "devices/dev1/modules/m/inputs/#",
        "devices/dev1/modules/m/inputs/in1/#",
        "devices/dev1/modules/m/#",
        "devices/dev1/modules/m",
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
        "$iothub/methods/POST/#",
    };
    const char *refused[] = {
        "#",
        "+/#",
        "devices/#",
        "devices/dev1/#",
        "devices/dev1/modules/#",
        "devices/dev1/modules/+/inputs/#",
        "devices/+/modules/m/inputs/#",
        "devices/dev1/modules/other/inputs/#",
        "devices/dev1/modules/mm/inputs/#",
        "devices/dev1/modules/m2",
        "devices/dev2/modules/m/inputs/#",
        "devices/dev1/messages/devicebound/#",
        "$iothub/#",
        "$iothub/twin/#",
        "$iothub/+/res/#",
        "$SYS/#",
        "",
    };
    for (size_t i = 0; i < ARRAY_SIZE(allowed); i++)
        if (!session_may_subscribe(&s, allowed[i], strlen(allowed[i])))
            fail_msg("refused: %s", allowed[i]);
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
        if (session_may_subscribe(&s, refused[i], strlen(refused[i])))
            fail_msg("allowed: %s", refused[i]);
    /* the length is what counts, not a NUL */
    assert_false(session_may_subscribe(&s, "devices/dev1/modules/m/inputs/#", 21));
}

static void test_subscribe_authorisation_on_the_wire(void **state)
{
    struct fixture *f = *state;
    struct client c;
    cl_open_receiver(f, &c);
    assert_int_equal(cl_subscribe(&c, "devices/" DEVICE "/modules/sender/inputs/#", 1),
                     MQTT_SUBACK_FAILURE);
    assert_int_equal(cl_subscribe(&c, "#", 0), MQTT_SUBACK_FAILURE);
    /* IoT Hub grants QoS 1 for QoS 2 */
    assert_int_equal(cl_subscribe(&c, "$iothub/methods/POST/#", 2), 1);
    assert_int_equal(cl_subscribe(&c, "$iothub/twin/res/#", 0), 0);
    assert_int_equal(counter(f, "unauthorized"), 2);
    /* several filters in one SUBSCRIBE: one code each, in order */
    struct mqtt_subscription subs[3] = {
        {mqtt_str_c("$iothub/twin/PATCH/properties/desired/#"), 1},
        {mqtt_str_c("devices/x/#"), 1},
        {mqtt_str_c("devices/" DEVICE "/modules/receiver/#"), 0},
    };
    struct lbuf b = LBUF_INIT;
    assert_int_equal(mqtt_encode_subscribe(&b, 77, subs, 3), 0);
    cl_send_buf(&c, &b);
    struct mqtt_packet p;
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    assert_int_equal(p.type, MQTT_SUBACK);
    assert_int_equal(p.suback.count, 3);
    assert_int_equal(p.suback.codes[0], 1);
    assert_int_equal(p.suback.codes[1], MQTT_SUBACK_FAILURE);
    assert_int_equal(p.suback.codes[2], 0);
    assert_int_equal(counter(f, "unauthorized"), 3);
    /* UNSUBSCRIBE is answered */
    struct mqtt_str uf = mqtt_str_c("devices/" DEVICE "/modules/receiver/#");
    assert_int_equal(mqtt_encode_unsubscribe(&b, 78, &uf, 1), 0);
    cl_send_buf(&c, &b);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    assert_int_equal(p.type, MQTT_UNSUBACK);
    assert_int_equal(p.ack.packet_id, 78);
    cl_close(&c);
}

static void expect_publish_refused(struct fixture *f, const char *topic, long long unauthorized)
{
    struct client c;
    cl_open_as(f, &c, "sender");
    cl_publish(&c, topic, "x", 1, false);
    expect_closed(&c);
    cl_close(&c);
    assert_int_equal(counter(f, "unauthorized"), unauthorized);
}

static void test_publish_authorisation(void **state)
{
    struct fixture *f = *state;
    long long n = 0;
    expect_publish_refused(f, "devices/" DEVICE "/modules/receiver/messages/events/", ++n);
    expect_publish_refused(f, "devices/" DEVICE "/modules/receiver/inputs/in1/", ++n);
    expect_publish_refused(f, "devices/" DEVICE "/modules/sender/inputs/in1/", ++n);
    expect_publish_refused(f, "devices/" DEVICE "/messages/events/", ++n);
    expect_publish_refused(f, "devices/dev2/modules/sender/messages/events/", ++n);
    expect_publish_refused(f, "some/topic", ++n);
    expect_publish_refused(f, "$iothub/twin/PATCH/properties/desired/?$version=3", ++n);
    expect_publish_refused(f, "$iothub/methods/POST/reboot/?$rid=1", ++n);
    assert_int_equal(counter(f, "received"), 0);
    /* the case of its own ids does not matter (IoT Hub ids are case-insensitive) */
    struct client c;
    cl_open_as(f, &c, "sender");
    expect_puback(&c,
                  cl_publish(&c, "devices/DEV1/modules/Sender/messages/events/", "x", 1, false));
    cl_close(&c);
    assert_int_equal(counter(f, "received"), 1);
}

/* ------------------------------------------------------------------ routing and delivery */

static void test_route_and_deliver(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_receiver(f, &rc);
    cl_open_as(f, &sc, "sender");
    /* The sender's bag: system and application properties, and spoofed identities. */
    send_output(&sc, "out1",
                "%24.mid=m-1&%24.cid=c-1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.uid=u1"
                "&%24.cdid=evil&%24.cmid=evil&temp=21.5&k%20ey=v%2Fal",
                "{\"temp\":21.5}");
    struct received r;
    expect_input(&rc, &r, true);
    assert_string_equal(r.input, "in1");
    assert_string_equal(r.body, "{\"temp\":21.5}");
    assert_int_equal(r.qos, 1);
    assert_true(prop_sys_is(&r, IOTHUB_PROP_MESSAGE_ID, "m-1"));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CORRELATION_ID, "c-1"));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CONTENT_TYPE, "application/json"));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CONTENT_ENCODING, "utf-8"));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_USER_ID, "u1"));
    /* the hub vouches for the sender's identity; the output name is not passed on */
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CONNECTION_DEVICE_ID, DEVICE));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CONNECTION_MODULE_ID, "sender"));
    assert_null(r.props.sys[IOTHUB_PROP_OUTPUT_NAME].ptr);
    assert_string_equal(prop_app(&r, "temp"), "21.5");
    assert_string_equal(prop_app(&r, "k ey"), "v/al");
    pump(f);
    assert_int_equal(counter(f, "received"), 1);
    assert_int_equal(counter(f, "routed"), 1);
    assert_int_equal(counter(f, "delivered"), 1);
    assert_int_equal(counter(f, "acked"), 1);
    assert_int_equal(endpoint_depth(f, "/modules/receiver/inputs/in1"), 0);

    /* no route: counted, acknowledged all the same */
    send_output(&sc, "nowhere", NULL, "x");
    assert_int_equal(counter(f, "unrouted"), 1);
    /* a condition: only temp > 20 reaches "hot" */
    send_output(&sc, "cond", "temp=10", "cold");
    send_output(&sc, "cond", "temp=30", "hot");
    expect_body(&rc, "hot", "hot");
    expect_nothing(&rc, 100);
    /* RETAIN is not kept; the receiver sees mqtt-retain=true as with IoT Hub */
    expect_puback(&sc,
                  cl_publish(&sc, "devices/" DEVICE "/modules/sender/messages/events/%24.on=out1",
                             "retained", 1, true));
    expect_input(&rc, &r, true);
    assert_string_equal(r.body, "retained");
    assert_string_equal(prop_app(&r, "mqtt-retain"), "true");
    /* a subscriber arriving later gets nothing retained */
    struct client late;
    cl_open_as(f, &late, "other");
    assert_int_equal(cl_subscribe(&late, "devices/" DEVICE "/modules/other/#", 1), 1);
    expect_nothing(&late, 100);
    cl_close(&late);
    /* QoS 0 in, a QoS 0 subscriber: delivered without touching the store */
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/#", 0), 0);
    cl_publish(&sc, "devices/" DEVICE "/modules/sender/messages/events/%24.on=out1", "q0", 0,
               false);
    expect_input(&rc, &r, true);
    assert_string_equal(r.body, "q0");
    assert_int_equal(r.qos, 0);
    assert_int_equal(counter(f, "direct"), 1);
    cl_close(&sc);
    cl_close(&rc);
}

/* The exposition (exposition.h): IoT Edge's names and labels for the traffic just sent, the
 * common labels on every sample, and the bound on the series. */
static bool has_line(const char *text, const char *start, const char *labels, const char *value)
{
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char line[2048];
        if (n >= sizeof(line) || strncmp(p, start, strlen(start)) != 0)
            continue;
        memcpy(line, p, n);
        line[n] = 0;
        bool ok = true;
        char want[512];
        snprintf(want, sizeof(want), "%s", labels);
        for (char *tok = strtok(want, " "); tok && ok; tok = strtok(NULL, " "))
            ok = strstr(line, tok) != NULL;
        const char *sp = strrchr(line, ' ');
        if (ok && sp && strcmp(sp + 1, value) == 0)
            return true;
    }
    fprintf(stderr, "no line %s{%s} %s in:\n%s\n", start, labels, value, text);
    return false;
}

/* The value of the first line starting with start and holding every label of labels; NaN
 * when there is none. */
static double line_value(const char *text, const char *start, const char *labels)
{
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char line[2048], want[512];
        if (n >= sizeof(line) || strncmp(p, start, strlen(start)) != 0)
            continue;
        memcpy(line, p, n);
        line[n] = 0;
        bool ok = true;
        snprintf(want, sizeof(want), "%s", labels);
        for (char *tok = strtok(want, " "); tok && ok; tok = strtok(NULL, " "))
            ok = strstr(line, tok) != NULL;
        const char *sp = strrchr(line, ' ');
        if (ok && sp)
            return strtod(sp + 1, NULL);
    }
    fprintf(stderr, "no line %s{%s} in:\n%s\n", start, labels, text);
    return NAN;
}

static bool near(double got, double want)
{
    return fabs(got - want) <= LQUANT_ALPHA * fabs(want) * (1 + 1e-9);
}

static void test_metrics_exposition(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_receiver(f, &rc);
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "out1", NULL, "a");
    send_output(&sc, "out1", NULL, "b");
    struct received r;
    expect_input(&rc, &r, true);
    expect_input(&rc, &r, true);
    send_output(&sc, "nowhere", NULL, "x");
    pump(f);
    uint8_t wrong[32] = {9};
    struct connect_opts bad_key = {.key = wrong};
    expect_refused(f, "sender", &bad_key, MQTT_CONNACK_NOT_AUTHORIZED);

    struct lbuf b = LBUF_INIT;
    assert_int_equal(hub_exposition(&f->h, &b), 0);
    const char *t = b.data;
    assert_true(has_line(t, "edgehub_messages_received_total{",
                         "id=\"" DEVICE "/sender\" route_output=\"out1\" ms_telemetry=\"True\"",
                         "2"));
    assert_true(has_line(t, "edgehub_messages_sent_total{",
                         "from=\"" DEVICE "/sender\" to=\"" DEVICE "/receiver\" "
                         "from_route_output=\"out1\" to_route_input=\"in1\" "
                         "priority=\"2000000000\"",
                         "2"));
    assert_true(has_line(t, "edgehub_messages_dropped_total{",
                         "reason=\"no_route\" from_route_output=\"nowhere\"", "1"));
    assert_true(has_line(t, "edgehub_messages_dropped_total{", "reason=\"ttl_expiry\"", "0"));
    assert_true(has_line(t, "edgehub_queue_length{",
                         "endpoint=\"" DEVICE "/receiver/in1\" priority=\"2000000000\"", "0"));
    assert_true(has_line(t, "edgehub_client_connect_failed_total{",
                         "id=\"" DEVICE "/sender\" reason=\"not_authenticated\" "
                         "protocol=\"mqtt\"",
                         "1"));
    assert_true(has_line(t, "edgehub_connected_clients{", "", "2"));
    /* summaries: _sum and _count, with their TYPE */
    assert_non_null(strstr(t, "# TYPE edgehub_message_size_bytes summary\n"));
    assert_true(has_line(t, "edgehub_message_size_bytes_sum{", "id=\"" DEVICE "/sender\"", "3"));
    assert_true(has_line(t, "edgehub_message_size_bytes_count{", "id=\"" DEVICE "/sender\"", "3"));
    assert_true(has_line(t, "edgehub_message_process_duration_seconds_count{",
                         "from=\"" DEVICE "/sender\" to=\"" DEVICE "/receiver\" "
                         "priority=\"2000000000\" ms_telemetry=\"True\"",
                         "2"));
    /* quantiles: IoT Edge's objectives per family (a histogram's six, a duration's four), the
     * quantile label last */
    const char *sender = "id=\"" DEVICE "/sender\" ms_telemetry=\"True\"";
    char lq[256];
    for (size_t i = 0; i < HUB_METRICS_TIMER_OBJECTIVES; i++) {
        snprintf(lq, sizeof(lq), "%s ms_telemetry=\"True\",quantile=\"%g\"}", sender,
                 hub_metrics_timer_objectives[i]);
        assert_true(near(line_value(t, "edgehub_message_size_bytes{", lq), 1));
    }
    assert_true(line_value(t, "edgehub_message_process_duration_seconds{", "quantile=\"0.1\"") >=
                0);
    assert_true(
        isnan(line_value(t, "edgehub_message_process_duration_seconds{", "quantile=\"0.95\"")));
    assert_non_null(strstr(t, "# TYPE edgehub_message_send_duration_seconds summary\n"));
    /* the receiver's PUBACKs: each delivery's hand-off to its acknowledgement */
    const char *send_l = "from=\"" DEVICE "/sender\" to=\"" DEVICE "/receiver\" "
                         "from_route_output=\"out1\" to_route_input=\"in1\"";
    assert_true(has_line(t, "edgehub_message_send_duration_seconds_count{", send_l, "2"));
    double send_sum = line_value(t, "edgehub_message_send_duration_seconds_sum{", send_l);
    assert_true(send_sum >= 0 && send_sum < 10);
    snprintf(lq, sizeof(lq), "%s quantile=\"0.99\"", send_l);
    double send_p99 = line_value(t, "edgehub_message_send_duration_seconds{", lq);
    assert_true(send_p99 >= 0 && send_p99 <= send_sum * (1 + LQUANT_ALPHA) + 1e-9);
    hub_metrics_observe(&f->h, HM_METHOD_DURATION, (const char *[]){"upstream", "d/m"}, 0.25);
    hub_metrics_observe(&f->h, HM_METHOD_DURATION, (const char *[]){"upstream", "d/m"}, 0.5);
    hub_metrics_observe(&f->h, HM_GETTWIN, (const char *[]){"edge_hub", "d/m"}, 1); /* a counter */
    lbuf_free(&b);
    assert_int_equal(hub_exposition(&f->h, &b), 0);
    t = b.data;
    assert_true(has_line(t, "edgehub_direct_method_duration_seconds_sum{",
                         "from=\"upstream\" to=\"d/m\"", "0.75"));
    assert_true(has_line(t, "edgehub_direct_method_duration_seconds_count{",
                         "from=\"upstream\" to=\"d/m\"", "2"));
    assert_true(near(
        line_value(t, "edgehub_direct_method_duration_seconds{", "to=\"d/m\" quantile=\"0.5\""),
        0.25)); /* the observation of rank ⌊0.5 × (2 - 1)⌋ */
    assert_true(near(
        line_value(t, "edgehub_direct_method_duration_seconds{", "to=\"d/m\" quantile=\"0.9999\""),
        0.25));
    /* no offline period ended: NaN, as prometheus-net writes an empty window */
    assert_true(isnan(line_value(t, "edgehub_offline_duration_seconds{", "quantile=\"0.5\"")) ||
                !strstr(t, "edgehub_offline_duration_seconds{"));
    assert_true(line_value(t, "ledge_hub_metrics_bytes{", "") > 0);
    assert_null(strstr(t, "edgehub_gettwin_total{iothub"));
    /* IoT Edge's common labels first on every sample */
    char common[256];
    snprintf(common, sizeof(common), "{iothub=\"%s\",edge_device=\"%s\",instance_number=\"%s\"",
             IOTHUB, DEVICE, hub_instance_number(&f->h));
    for (const char *p = t; *p; p = strchr(p, '\n') + 1) {
        if (*p != '#') {
            const char *brace = strchr(p, '{');
            assert_non_null(brace);
            assert_int_equal(strncmp(brace, common, strlen(common)), 0);
        }
        if (!strchr(p, '\n'))
            break;
    }
    lbuf_free(&b);
    cl_close(&sc);
    cl_close(&rc);

    /* at most metrics.max_series series; counts for more are summed as dropped */
    hub_metrics_stop(&f->h);
    f->h.cfg.metrics.max_series = 16;
    assert_int_equal(hub_metrics_start(&f->h), 0);
    for (int i = 0; i < 20; i++) {
        char out[16];
        snprintf(out, sizeof(out), "o%d", i);
        hub_metrics_add(&f->h, HM_MESSAGES_RECEIVED, (const char *[]){"d/m", out}, 3);
        hub_metrics_add(&f->h, HM_MESSAGES_RECEIVED, (const char *[]){"d/m", out}, 1);
    }
    assert_int_equal(hub_metrics_series(&f->h), 16);
    assert_int_equal(hub_metrics_dropped(&f->h), 16);
    assert_int_equal(hub_exposition(&f->h, &b), 0);
    assert_true(has_line(b.data, "edgehub_messages_received_total{", "route_output=\"o15\"", "4"));
    assert_null(strstr(b.data, "route_output=\"o16\""));
    assert_true(has_line(b.data, "ledge_hub_metrics_series_dropped_total{", "", "16"));
    lbuf_free(&b);
}

static void test_puback_waits_for_receiver_ack_and_redelivers(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_as(f, &sc, "sender");
    cl_open(f, &rc);
    bool present;
    cl_connect_persistent(&rc, "receiver", &present);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/#", 1), 1);
    send_output(&sc, "out1", NULL, "one");
    send_output(&sc, "out1", NULL, "two");
    struct received r1, r2;
    expect_input(&rc, &r1, false);
    expect_input(&rc, &r2, false);
    assert_string_equal(r1.body, "one");
    assert_string_equal(r2.body, "two");
    assert_false(r1.dup);
    assert_int_equal(endpoint_depth(f, "/modules/receiver/inputs/in1"), 2);
    /* the receiver drops without acknowledging: both come again, in order, marked DUP */
    cl_close(&rc);
    cl_open(f, &rc);
    cl_connect_persistent(&rc, "receiver", &present);
    assert_true(present);
    expect_input(&rc, &r1, true);
    expect_input(&rc, &r2, true);
    assert_string_equal(r1.body, "one");
    assert_string_equal(r2.body, "two");
    assert_true(r1.dup);
    pump(f);
    assert_int_equal(endpoint_depth(f, "/modules/receiver/inputs/in1"), 0);
    cl_close(&rc);
    cl_close(&sc);
}

static void test_inflight_window(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_as(f, &sc, "sender");
    for (int i = 0; i < 15; i++) {
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        send_output(&sc, "out1", NULL, body);
    }
    cl_open_as(f, &rc, "receiver");
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/#", 1), 1);
    /* hub.max_inflight (10 here) unacknowledged, then nothing until a PUBACK */
    struct received r[15];
    for (int i = 0; i < 10; i++)
        expect_input(&rc, &r[i], false);
    expect_nothing(&rc, 100);
    struct lbuf b = LBUF_INIT;
    assert_int_equal(mqtt_encode_ack(&b, MQTT_PUBACK, r[0].packet_id), 0);
    cl_send_buf(&rc, &b);
    expect_input(&rc, &r[10], false);
    assert_string_equal(r[10].body, "m10");
    expect_nothing(&rc, 50);
    for (int i = 1; i <= 10; i++) {
        assert_int_equal(mqtt_encode_ack(&b, MQTT_PUBACK, r[i].packet_id), 0);
        cl_send_buf(&rc, &b);
    }
    for (int i = 11; i < 15; i++) {
        expect_input(&rc, &r[i], true);
        char body[16];
        snprintf(body, sizeof(body), "m%d", i);
        assert_string_equal(r[i].body, body);
    }
    cl_close(&rc);
    cl_close(&sc);
}

static void test_persistent_session_gets_backlog(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open(f, &rc);
    bool present = true;
    cl_connect_persistent(&rc, "receiver", &present);
    assert_false(present);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/#", 1), 1);
    /* a graceful DISCONNECT: the session stays */
    static const uint8_t disconnect[2] = {0xe0, 0};
    cl_send(&rc, disconnect, 2);
    expect_closed(&rc);
    cl_close(&rc);
    cl_open_as(f, &sc, "sender");
    for (int i = 0; i < 3; i++) {
        char body[8];
        snprintf(body, sizeof(body), "b%d", i);
        send_output(&sc, "out1", NULL, body);
    }
    assert_int_equal(endpoint_depth(f, "/modules/receiver/inputs/in1"), 3);
    /* back, without subscribing again */
    cl_open(f, &rc);
    cl_connect_persistent(&rc, "receiver", &present);
    assert_true(present);
    struct received r;
    expect_input(&rc, &r, true);
    assert_string_equal(r.body, "b0");
    assert_false(r.dup); /* never sent before */
    expect_body(&rc, "in1", "b1");
    expect_body(&rc, "in1", "b2");
    cl_close(&rc);
    /* a clean session throws the subscriptions away: nothing flows until it subscribes */
    send_output(&sc, "out1", NULL, "b3");
    cl_open_as(f, &rc, "receiver");
    expect_nothing(&rc, 100);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/#", 1), 1);
    expect_body(&rc, "in1", "b3");
    cl_close(&rc);
    cl_close(&sc);
}

static void test_takeover(void **state)
{
    struct fixture *f = *state;
    struct client a, b;
    cl_open_as(f, &a, "receiver");
    cl_open_as(f, &b, "receiver");
    expect_closed(&a);
    cl_close(&a);
    expect_pingresp(&b);
    cl_close(&b);
}

static void test_priorities_drain_highest_first(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "lo", NULL, "lo1");
    send_output(&sc, "lo", NULL, "lo2");
    send_output(&sc, "hi", NULL, "hi1");
    send_output(&sc, "lo", NULL, "lo3");
    send_output(&sc, "hi", NULL, "hi2");
    cl_open_receiver(f, &rc);
    const char *want[] = {"hi1", "hi2", "lo1", "lo2", "lo3"};
    for (size_t i = 0; i < ARRAY_SIZE(want); i++)
        expect_body(&rc, "prio", want[i]);
    json_t *s = status(f);
    size_t i;
    json_t *e;
    bool seen = false;
    json_array_foreach (json_object_get(s, "endpoints"), i, e) {
        if (strcmp(json_string_value(json_object_get(e, "endpoint")),
                   "/modules/receiver/inputs/prio"))
            continue;
        seen = true;
        json_t *qs = json_object_get(e, "queues");
        assert_int_equal(json_array_size(qs), 2); /* priorities 0 and 5 */
    }
    assert_true(seen);
    json_decref(s);
    cl_close(&rc);
    cl_close(&sc);
}

static void test_ttl_expires_and_counts(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "short", NULL, "stale");
    send_output(&sc, "out1", NULL, "fresh");
    /* timeToLiveSecs 1 on the "short" route: wait it out */
    pump_for(f, 1100);
    cl_open_receiver(f, &rc);
    expect_body(&rc, "in1", "fresh");
    expect_nothing(&rc, 300);
    assert_int_equal(counter(f, "expired"), 1);
    assert_int_equal(endpoint_depth(f, "/modules/receiver/inputs/short"), 0);
    /* and its space comes back at the next store tick */
    int64_t until2 = ltime_now_ms() + 600;
    while (ltime_now_ms() < until2 && endpoint_bytes(f, "/modules/receiver/inputs/short") > 0) {
        pump(f);
        poll(NULL, 0, 20);
    }
    assert_int_equal(endpoint_bytes(f, "/modules/receiver/inputs/short"), 0);
    cl_close(&rc);
    cl_close(&sc);
}

static const char *global_ttl_routes =
    "{\"schemaVersion\": \"1.1\", \"routes\": {"
    "\"r1\": \"FROM /messages/modules/sender/outputs/out1 INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/in1\\\")\","
    "\"keep\": {\"route\": \"FROM /messages/modules/sender/outputs/keep INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/keep\\\")\", \"timeToLiveSecs\": 60}},"
    "\"storeAndForwardConfiguration\": {\"timeToLiveSecs\": 1}}";

static int setup_global_ttl(void **state)
{
    return setup_with(state, global_ttl_routes, 8, 16);
}

static void test_global_ttl(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "out1", NULL, "global ttl");
    send_output(&sc, "keep", NULL, "route ttl wins");
    pump_for(f, 1100);
    cl_open_receiver(f, &rc);
    expect_body(&rc, "keep", "route ttl wins");
    expect_nothing(&rc, 200);
    assert_int_equal(counter(f, "expired"), 1);
    cl_close(&rc);
    cl_close(&sc);
}

static void test_will(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_receiver(f, &rc);
    struct connect_opts o = {.will_topic = "devices/" DEVICE
                                           "/modules/sender/messages/events/%24.on=out1&why=gone",
                             .will_payload = "bye"};
    /* a graceful DISCONNECT: no will */
    cl_open(f, &sc);
    assert_int_equal(cl_connect_opts(&sc, "sender", &o, NULL), 0);
    static const uint8_t disconnect[2] = {0xe0, 0};
    cl_send(&sc, disconnect, 2);
    cl_close(&sc);
    expect_nothing(&rc, 100);
    /* the connection drops: the will is routed like a message of the sender's */
    cl_open(f, &sc);
    assert_int_equal(cl_connect_opts(&sc, "sender", &o, NULL), 0);
    cl_close(&sc);
    struct received r;
    expect_input(&rc, &r, true);
    assert_string_equal(r.body, "bye");
    assert_string_equal(prop_app(&r, "why"), "gone");
    assert_string_equal(prop_app(&r, "iothub-MessageType"), "Will");
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CONNECTION_MODULE_ID, "sender"));
    /* the hub stopping is not the module dropping: no will (the store shows none queued) */
    cl_open(f, &sc);
    assert_int_equal(cl_connect_opts(&sc, "sender", &o, NULL), 0);
    cl_close(&rc);
    hub_down(f);
    hub_up(f);
    assert_int_equal(endpoint_depth(f, "/modules/receiver/inputs/in1"), 0);
    close(sc.fd);
    lbuf_free(&sc.in);
    lbuf_free(&sc.pkt);
    cl_open_receiver(f, &rc);
    /* a will aimed elsewhere is refused and counted when it would be sent */
    struct connect_opts bad = {.will_topic = "devices/" DEVICE "/modules/receiver/inputs/in1/",
                               .will_payload = "x"};
    cl_open(f, &sc);
    assert_int_equal(cl_connect_opts(&sc, "sender", &bad, NULL), 0);
    cl_close(&sc);
    expect_nothing(&rc, 100);
    assert_int_equal(counter(f, "unauthorized"), 1);
    cl_close(&rc);
}

static void test_subscription_to_one_input(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_as(f, &sc, "sender");
    cl_open_as(f, &rc, "receiver");
    /* only in1: what is routed to "hot" waits */
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/in1/#", 1), 1);
    send_output(&sc, "cond", "temp=30", "to hot");
    send_output(&sc, "out1", NULL, "to in1");
    expect_body(&rc, "in1", "to in1");
    expect_nothing(&rc, 100);
    assert_int_equal(endpoint_depth(f, "/modules/receiver/inputs/hot"), 1);
    /* a single-level wildcard for the input and the bag takes the rest, at QoS 0 */
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/+/+", 0), 0);
    struct received r;
    expect_input(&rc, &r, true);
    assert_string_equal(r.input, "hot");
    assert_int_equal(r.qos, 0);
    /* overlapping subscriptions: the highest QoS */
    send_output(&sc, "out1", NULL, "both");
    expect_input(&rc, &r, true);
    assert_string_equal(r.body, "both");
    assert_int_equal(r.qos, 1);
    /* a filter on the input level alone matches no delivered topic (it has a bag level) */
    struct session *s = session_find(&f->h, DEVICE "/receiver");
    assert_non_null(s);
    assert_int_equal(session_input_qos(s, "in1"), 1);
    assert_int_equal(session_input_qos(s, "hot"), 0);
    const char *level = "devices/" DEVICE "/modules/receiver/inputs/x";
    assert_int_equal(session_subscribe(&f->h, s, level, strlen(level), 1), 0);
    assert_int_equal(session_input_qos(s, "x"), 0);
    const char *wild = "devices/" DEVICE "/modules/receiver/inputs/+/+";
    session_unsubscribe(&f->h, s, wild, strlen(wild));
    assert_int_equal(session_input_qos(s, "x"), -1);
    assert_int_equal(session_input_qos(s, "hot"), -1);
    cl_close(&rc);
    cl_close(&sc);
}

static void test_keep_alive(void **state)
{
    struct fixture *f = *state;
    struct client c;
    cl_open(f, &c);
    struct connect_opts o = {.keep_alive = 1};
    assert_int_equal(cl_connect_opts(&c, "receiver", &o, NULL), 0);
    /* 1.5 x the keep-alive without a packet: closed */
    int64_t start = ltime_mono_ms();
    expect_closed(&c);
    int64_t took = ltime_mono_ms() - start;
    assert_true(took >= 1400 && took < 2500);
    cl_close(&c);
}

/* ------------------------------------------------------------------ bad input and limits */

static void test_qos2_publish_closes_only_that_connection(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_receiver(f, &rc);
    cl_open_as(f, &sc, "sender");
    cl_publish(&sc, "devices/" DEVICE "/modules/sender/messages/events/%24.on=out1", "q2", 2,
               false);
    expect_closed(&sc);
    cl_close(&sc);
    assert_int_equal(counter(f, "qos2Refused"), 1);
    assert_int_equal(counter(f, "received"), 0);
    /* the receiver is unaffected, and a new sender works */
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "out1", NULL, "after");
    expect_body(&rc, "in1", "after");
    /* PUBREL (QoS 2 flow) from a client is a protocol violation too */
    static const uint8_t pubrel[4] = {0x62, 2, 0, 1};
    cl_send(&sc, pubrel, 4);
    expect_closed(&sc);
    cl_close(&sc);
    cl_close(&rc);
}

static void test_malformed_and_oversized(void **state)
{
    struct fixture *f = *state;
    struct client rc, bad;
    cl_open_receiver(f, &rc);

    /* garbage instead of CONNECT */
    cl_open(f, &bad);
    cl_send(&bad, "GET / HTTP/1.1\r\n\r\n", 18);
    expect_closed(&bad);
    cl_close(&bad);
    /* a remaining length of five bytes */
    cl_open(f, &bad);
    static const uint8_t varint[6] = {0x10, 0xff, 0xff, 0xff, 0xff, 0x01};
    cl_send(&bad, varint, sizeof(varint));
    expect_closed(&bad);
    cl_close(&bad);
    /* a packet announced larger than hub.max_packet_size + envelope: closed before the bytes */
    cl_open_as(f, &bad, "sender");
    static const uint8_t huge[5] = {0x32, 0x80, 0x80, 0x80, 0x01}; /* 2 MiB */
    cl_send(&bad, huge, sizeof(huge));
    expect_closed(&bad);
    cl_close(&bad);
    assert_int_equal(counter(f, "oversized"), 1);
    /* a message over hub.max_packet_size that fits the envelope */
    cl_open_as(f, &bad, "sender");
    char *body = malloc(16 * 1024 + 100);
    memset(body, 'a', 16 * 1024 + 99);
    body[16 * 1024 + 99] = 0;
    cl_publish(&bad, "devices/" DEVICE "/modules/sender/messages/events/%24.on=out1", body, 1,
               false);
    free(body);
    expect_closed(&bad);
    cl_close(&bad);
    assert_int_equal(counter(f, "oversized"), 2);
    /* a broken property bag (empty key) */
    cl_open_as(f, &bad, "sender");
    cl_publish(&bad, "devices/" DEVICE "/modules/sender/messages/events/%24.on=out1&=v", "x", 1,
               false);
    expect_closed(&bad);
    cl_close(&bad);
    /* a PUBLISH with an invalid topic (wildcard) */
    cl_open_as(f, &bad, "sender");
    static const uint8_t wild[] = {0x30, 5, 0, 3, 'a', '/', '#'};
    cl_send(&bad, wild, sizeof(wild));
    expect_closed(&bad);
    cl_close(&bad);
    /* a server-only packet type from a client */
    cl_open_as(f, &bad, "sender");
    static const uint8_t connack[4] = {0x20, 2, 0, 0};
    cl_send(&bad, connack, sizeof(connack));
    expect_closed(&bad);
    cl_close(&bad);
    assert_true(counter(f, "malformed") >= 5);
    /* the receiver saw none of it and still works */
    expect_nothing(&rc, 50);
    struct client sc;
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "out1", NULL, "still here");
    expect_body(&rc, "in1", "still here");
    cl_close(&sc);
    cl_close(&rc);
}

static void test_a_packet_in_pieces(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_receiver(f, &rc);
    cl_open_as(f, &sc, "sender");
    struct mqtt_publish p = {
        .qos = 1,
        .packet_id = 9,
        .topic = mqtt_str_c("devices/" DEVICE "/modules/sender/messages/events/%24.on=out1"),
        .payload = (const uint8_t *)"pieces",
        .payload_len = 6,
    };
    struct lbuf b = LBUF_INIT;
    assert_int_equal(mqtt_encode_publish(&b, &p), 0);
    /* one byte at a time, then two packets in one write */
    for (size_t i = 0; i < b.len; i++)
        cl_send(&sc, b.data + i, 1);
    expect_puback(&sc, 9);
    struct lbuf two = LBUF_INIT;
    assert_int_equal(lbuf_append(&two, b.data, b.len), 0);
    b.data[b.len - 1] = '!';
    assert_int_equal(lbuf_append(&two, b.data, b.len), 0);
    cl_send_buf(&sc, &two);
    expect_puback(&sc, 9);
    expect_puback(&sc, 9);
    lbuf_free(&b);
    expect_body(&rc, "in1", "pieces");
    expect_body(&rc, "in1", "pieces");
    expect_body(&rc, "in1", "piece!");
    cl_close(&sc);
    cl_close(&rc);
}

static void test_subscription_limit(void **state)
{
    struct fixture *f = *state; /* hub.max_subscriptions 3 */
    struct client c;
    cl_open_as(f, &c, "receiver");
    assert_int_equal(cl_subscribe(&c, "devices/" DEVICE "/modules/receiver/inputs/a", 1), 1);
    assert_int_equal(cl_subscribe(&c, "devices/" DEVICE "/modules/receiver/inputs/b", 1), 1);
    assert_int_equal(cl_subscribe(&c, "devices/" DEVICE "/modules/receiver/inputs/c", 1), 1);
    assert_int_equal(cl_subscribe(&c, "devices/" DEVICE "/modules/receiver/inputs/d", 1),
                     MQTT_SUBACK_FAILURE);
    /* the same filter again replaces, it does not add */
    assert_int_equal(cl_subscribe(&c, "devices/" DEVICE "/modules/receiver/inputs/a", 0), 0);
    assert_int_equal(counter(f, "subscriptionsRefused"), 1);
    /* a SUBSCRIBE with 300 filters gets 300 codes */
    struct mqtt_subscription subs[300];
    char names[300][64];
    for (int i = 0; i < 300; i++) {
        snprintf(names[i], sizeof(names[i]), "devices/" DEVICE "/modules/receiver/inputs/x%d", i);
        subs[i] = (struct mqtt_subscription){mqtt_str_c(names[i]), 1};
    }
    struct lbuf b = LBUF_INIT;
    assert_int_equal(mqtt_encode_subscribe(&b, 5, subs, 300), 0);
    cl_send_buf(&c, &b);
    struct mqtt_packet p;
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    assert_int_equal(p.type, MQTT_SUBACK);
    assert_int_equal(p.suback.count, 300);
    for (int i = 0; i < 300; i++)
        assert_int_equal(p.suback.codes[i], MQTT_SUBACK_FAILURE);
    cl_close(&c);
}

static void test_connection_limit(void **state)
{
    struct fixture *f = *state; /* hub.max_connections 3 */
    struct client c[5];
    for (int i = 0; i < 3; i++)
        cl_open(f, &c[i]);
    /* a fourth while three have not authenticated: the oldest of those makes room */
    cl_open(f, &c[3]);
    expect_closed(&c[0]);
    cl_close(&c[0]);
    assert_int_equal(counter(f, "connectionsEvicted"), 1);
    cl_connect(&c[1], "receiver");
    cl_connect(&c[2], "sender");
    cl_connect(&c[3], "other");
    /* all three authenticated: a new one is refused, the others keep working */
    cl_open(f, &c[4]);
    expect_closed(&c[4]);
    cl_close(&c[4]);
    assert_int_equal(counter(f, "connectionsRefused"), 1);
    assert_int_equal(cl_subscribe(&c[1], "devices/" DEVICE "/modules/receiver/inputs/#", 1), 1);
    send_output(&c[2], "out1", NULL, "through");
    expect_body(&c[1], "in1", "through");
    json_t *s = status(f);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "connections"), "open")),
                     3);
    json_decref(s);
    for (int i = 1; i < 4; i++)
        cl_close(&c[i]);
    cl_open_as(f, &c[0], "sender");
    cl_close(&c[0]);
}

/* ------------------------------------------------------------------ store full, reload */

static const char *small_store_routes =
    "{\"schemaVersion\": \"1.1\", \"routes\": {"
    "\"r1\": \"FROM /messages/modules/sender/outputs/out1 INTO "
    "BrokeredEndpoint(\\\"/modules/receiver/inputs/in1\\\")\"},"
    "\"storeAndForwardConfiguration\": {\"timeToLiveSecs\": 7200, "
    "\"storeLimits\": {\"maxSizeBytes\": 262144}}}";

static int setup_small_store(void **state)
{
    return setup_with(state, small_store_routes, 8, 16);
}

static void test_store_full_refuses_then_recovers(void **state)
{
    struct fixture *f = *state;
    json_t *s = status(f);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "store"), "maxBytes")),
                     262144);
    json_decref(s);
    struct client sc;
    cl_open_as(f, &sc, "sender");
    char *body = malloc(8001);
    memset(body, 'x', 8000);
    body[8000] = 0;
    int sent = 0;
    for (;;) {
        uint16_t id = cl_publish(
            &sc, "devices/" DEVICE "/modules/sender/messages/events/%24.on=out1", body, 1, false);
        struct mqtt_packet p;
        int r = cl_next(&sc, &p, 2000);
        if (r == -1)
            break; /* refused: the hub closed the connection */
        assert_int_equal(r, 1);
        assert_int_equal(p.type, MQTT_PUBACK);
        assert_int_equal(p.ack.packet_id, id);
        sent++;
        assert_true(sent < 100);
    }
    cl_close(&sc);
    assert_true(sent >= 20);
    assert_int_equal(counter(f, "refused"), 1);
    /* QoS 0 is dropped, counted, and the connection stays */
    cl_open_as(f, &sc, "sender");
    cl_publish(&sc, "devices/" DEVICE "/modules/sender/messages/events/%24.on=out1", body, 0,
               false);
    expect_pingresp(&sc);
    assert_int_equal(counter(f, "refused"), 2);
    /* the receiver drains the queue; the store reclaims space; the sender gets through */
    struct client rc;
    cl_open_receiver(f, &rc);
    for (int i = 0; i < sent; i++) {
        struct received r;
        expect_input(&rc, &r, true);
    }
    pump_for(f, 1000); /* a store tick or two */
    send_output(&sc, "out1", NULL, "room again");
    expect_body(&rc, "in1", "room again");
    free(body);
    cl_close(&rc);
    cl_close(&sc);
}

static void test_reload_routes_and_limits(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "out1", NULL, "before");
    /* new routes and a new store cap, while a message waits in the old endpoint */
    write_runtime(f, "{\"schemaVersion\": \"1.1\", \"routes\": {"
                     "\"r2\": \"FROM /messages/modules/sender/* INTO "
                     "BrokeredEndpoint(\\\"/modules/receiver/inputs/new\\\")\"},"
                     "\"storeAndForwardConfiguration\": {\"timeToLiveSecs\": 60, "
                     "\"storeLimits\": {\"maxSizeBytes\": 5000000}}}");
    struct lerr err = {0};
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    json_t *s = status(f);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "store"), "maxBytes")),
                     5000000);
    json_decref(s);
    send_output(&sc, "out1", NULL, "after");
    cl_open_receiver(f, &rc);
    struct received a, b;
    expect_input(&rc, &a, true);
    expect_input(&rc, &b, true);
    /* the old endpoint keeps its backlog and delivers it; the new one gets the new message */
    bool got_old = (!strcmp(a.input, "in1") && !strcmp(a.body, "before")) ||
                   (!strcmp(b.input, "in1") && !strcmp(b.body, "before"));
    bool got_new = (!strcmp(a.input, "new") && !strcmp(a.body, "after")) ||
                   (!strcmp(b.input, "new") && !strcmp(b.body, "after"));
    assert_true(got_old);
    assert_true(got_new);
    /* a runtime file with a broken route is refused; the previous table stays */
    write_runtime(f,
                  "{\"schemaVersion\": \"1.1\", \"routes\": {\"bad\": \"FROM /x INTO nowhere\"}}");
    assert_true(hub_load_runtime(&f->h, &err) < 0);
    assert_non_null(strstr(err.msg, "bad"));
    send_output(&sc, "anything", NULL, "still routed");
    expect_body(&rc, "new", "still routed");
    cl_close(&rc);
    cl_close(&sc);
}

static void test_restart_keeps_unacked(void **state)
{
    struct fixture *f = *state;
    struct client sc;
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "out1", NULL, "kept");
    send_output(&sc, "hi", NULL, "kept hi");
    cl_close(&sc);
    hub_down(f);
    hub_up(f);
    struct client rc;
    cl_open_receiver(f, &rc);
    struct received a, b;
    expect_input(&rc, &a, true);
    expect_input(&rc, &b, true);
    assert_true(!strcmp(a.body, "kept") || !strcmp(b.body, "kept"));
    assert_true(!strcmp(a.body, "kept hi") || !strcmp(b.body, "kept hi"));
    cl_close(&rc);
}

static void test_persistent_session_survives_restart(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    cl_open(f, &rc);
    bool present = true;
    cl_connect_persistent(&rc, "receiver", &present);
    assert_false(present);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/in1/#", 1), 1);
    cl_close(&rc);
    hub_down(f);
    hub_up(f);
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "out1", NULL, "after restart");
    cl_open(f, &rc);
    cl_connect_persistent(&rc, "receiver", &present);
    assert_true(present); /* the subscription came back from twins.db */
    expect_body(&rc, "in1", "after restart");
    cl_close(&rc);
    /* a clean session forgets it, across restarts too */
    cl_open_as(f, &rc, "receiver");
    cl_close(&rc);
    hub_down(f);
    hub_up(f);
    cl_open(f, &rc);
    cl_connect_persistent(&rc, "receiver", &present);
    assert_false(present);
    cl_close(&rc);
    cl_close(&sc);
}

/* ------------------------------------------------------------------ twins and methods */

static int presence_calls;
static void presence_fake(struct hub *h, const char *module)
{
    (void)h;
    (void)module;
    presence_calls++;
}

/* With an observer of module presence (cloud.c, upstream.iothub), a connection that goes before
 * its CONNECT — a port probe, a client that gives up — was never a client: nothing to tell (the
 * hub crashed on its missing identity). */
static void test_close_before_connect_with_presence(void **state)
{
    struct fixture *f = *state;
    f->h.module_presence = presence_fake;
    presence_calls = 0;
    struct client c;
    cl_open(f, &c);
    cl_close(&c);
    struct client c2;
    cl_open(f, &c2);
    cl_send_raw(&c2, "\x10", 1); /* half a CONNECT */
    cl_close(&c2);
    assert_int_equal(presence_calls, 0);
    cl_open_as(f, &c, "receiver");
    assert_int_equal(presence_calls, 1);
    cl_close(&c);
    assert_int_equal(presence_calls, 2);
    f->h.module_presence = NULL;
}

static bool fake_syncing;
static bool twin_syncing_fake(struct hub *h, const char *address)
{
    (void)h;
    return fake_syncing && strcmp(address, "receiver") == 0;
}

static void topic_of(const struct mqtt_packet *p, char *buf, size_t size)
{
    snprintf(buf, size, "%.*s", (int)p->publish.topic.len, p->publish.topic.ptr);
}

/* While the module's session reads the cloud's twin, its GET waits and then answers with the
 * cloud's desired properties; a session that gives up, or no answer within 5 s, is the local
 * twin; a client that goes leaves nothing behind. */
static void test_twin_get_waits_for_cloud(void **state)
{
    struct fixture *f = *state;
    f->h.twin_syncing = twin_syncing_fake;
    fake_syncing = true;
    struct client c;
    cl_open_as(f, &c, "receiver");
    assert_int_equal(cl_subscribe(&c, "$iothub/twin/res/#", 0), 0);
    cl_publish(&c, "$iothub/twin/GET/?$rid=1", "", 0, false);
    struct mqtt_packet p;
    assert_int_equal(cl_next(&c, &p, 300), 0); /* waits */
    assert_int_equal(f->h.n_twin_waits, 1);
    json_t *cloud = json_pack("{s:s}", "fromCloud", "early");
    assert_int_equal(twins_cloud_desired(&f->h, "receiver", cloud, 7, true), 0);
    json_decref(cloud);
    twins_cloud_synced(&f->h, "other"); /* another identity's: still waiting */
    assert_int_equal(cl_next(&c, &p, 100), 0);
    fake_syncing = false;
    twins_cloud_synced(&f->h, "receiver");
    assert_int_equal(f->h.n_twin_waits, 0);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    char topic[128];
    topic_of(&p, topic, sizeof(topic));
    assert_string_equal(topic, "$iothub/twin/res/200/?$rid=1");
    json_t *doc = json_loadb((const char *)p.publish.payload, p.publish.payload_len, 0, NULL);
    assert_non_null(doc);
    json_t *d = json_object_get(doc, "desired");
    assert_string_equal(json_string_value(json_object_get(d, "fromCloud")), "early");
    assert_int_equal(json_integer_value(json_object_get(d, "$version")), 7);
    json_decref(doc);
    /* not syncing: answered at once */
    cl_publish(&c, "$iothub/twin/GET/?$rid=2", "", 0, false);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    topic_of(&p, topic, sizeof(topic));
    assert_string_equal(topic, "$iothub/twin/res/200/?$rid=2");
    /* the cloud does not answer: the local twin after the wait's bound */
    fake_syncing = true;
    int64_t t0 = ltime_mono_ms();
    cl_publish(&c, "$iothub/twin/GET/?$rid=3", "", 0, false);
    assert_int_equal(cl_next(&c, &p, 7000), 1);
    assert_true(ltime_mono_ms() - t0 >= 4500);
    topic_of(&p, topic, sizeof(topic));
    assert_string_equal(topic, "$iothub/twin/res/200/?$rid=3");
    /* a client that goes while its GET waits */
    cl_publish(&c, "$iothub/twin/GET/?$rid=4", "", 0, false);
    assert_int_equal(cl_next(&c, &p, 200), 0);
    assert_int_equal(f->h.n_twin_waits, 1);
    cl_close(&c);
    for (int i = 0; i < 50 && f->h.n_twin_waits; i++)
        event_base_loop(f->h.base, EVLOOP_NONBLOCK), usleep(10000);
    assert_int_equal(f->h.n_twin_waits, 0);
    fake_syncing = false;
    f->h.twin_syncing = NULL;
}

static void test_twin_get_and_reported(void **state)
{
    struct fixture *f = *state;
    struct client c;
    cl_open_as(f, &c, "receiver");
    assert_int_equal(cl_subscribe(&c, "$iothub/twin/res/#", 0), 0);
    /* QoS 1: the answer may come before the PUBACK, which waits for the group commit */
    uint16_t id = cl_publish(&c, "$iothub/twin/GET/?$rid=6", "", 1, false);
    struct mqtt_packet p;
    bool acked = false, answered = false;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cl_next(&c, &p, 2000), 1);
        if (p.type == MQTT_PUBACK) {
            assert_int_equal(p.ack.packet_id, id);
            acked = true;
        } else {
            assert_int_equal(p.type, MQTT_PUBLISH);
            assert_true(
                p.publish.topic.len == strlen("$iothub/twin/res/200/?$rid=6") &&
                !memcmp(p.publish.topic.ptr, "$iothub/twin/res/200/?$rid=6", p.publish.topic.len));
            answered = true;
        }
    }
    assert_true(acked && answered);
    cl_publish(&c, "$iothub/twin/GET/?$rid=7", "", 0, false);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    assert_int_equal(p.type, MQTT_PUBLISH);
    char topic[128];
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_string_equal(topic, "$iothub/twin/res/200/?$rid=7");
    cl_publish(&c, "$iothub/twin/PATCH/properties/reported/?$rid=8", "{\"a\":1}", 0, false);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_string_equal(topic, "$iothub/twin/res/204/?$rid=8&$version=2");
    json_t *t = twins_get(&f->h, "receiver");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(t, "reported"), "a")), 1);
    json_decref(t);
    cl_publish(&c, "$iothub/twin/PATCH/properties/reported/?$rid=9", "[1]", 0, false);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_string_equal(topic, "$iothub/twin/res/400/?$rid=9");
    cl_close(&c);
}

struct method_result {
    int status;
    json_t *reply;
    bool done;
};

static void method_done(void *ud, int status, json_t *reply)
{
    struct method_result *m = ud;
    m->status = status;
    m->reply = json_incref(reply);
    m->done = true;
}

static void test_direct_method(void **state)
{
    struct fixture *f = *state;
    struct client c;
    cl_open_as(f, &c, "receiver");
    struct method_result res = {0};
    void *handle;
    struct lerr err = {0};
    json_t *payload = json_pack("{s:i}", "x", 1);
    /* not subscribed to methods: 404 at once */
    assert_int_equal(
        methods_invoke(&f->h, "receiver", "ping", payload, 5, 0, method_done, &res, &handle, &err),
        -ENOENT);
    assert_int_equal(cl_subscribe(&c, "$iothub/methods/POST/#", 1), 1);
    assert_int_equal(
        methods_invoke(&f->h, "receiver", "ping", payload, 5, 0, method_done, &res, &handle, &err),
        0);
    json_decref(payload);
    struct mqtt_packet p;
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    char topic[128];
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_string_equal(topic, "$iothub/methods/POST/ping/?$rid=1");
    /* another module cannot answer it */
    struct client o;
    cl_open_as(f, &o, "other");
    cl_publish(&o, "$iothub/methods/res/200/?$rid=1", "{\"evil\":1}", 0, false);
    pump(f);
    assert_false(res.done);
    cl_close(&o);
    cl_publish(&c, "$iothub/methods/res/201/?$rid=1", "{\"pong\":true}", 0, false);
    pump(f);
    assert_true(res.done);
    assert_int_equal(res.status, 200);
    assert_int_equal(json_integer_value(json_object_get(res.reply, "status")), 201);
    assert_true(json_is_true(json_object_get(json_object_get(res.reply, "payload"), "pong")));
    json_decref(res.reply);
    cl_close(&c);
}

/* connectTimeoutInSeconds: a call for a module that is not connected (or not listening yet)
 * waits for it and goes when it subscribes; one whose module never comes gets 404 when the
 * connect timeout ends; a waiting call cancelled (its caller went) is gone. */
static void test_direct_method_connect_timeout(void **state)
{
    struct fixture *f = *state;
    struct method_result res = {0};
    void *handle;
    struct lerr err = {0};
    json_t *payload = json_pack("{s:i}", "x", 2);
    assert_int_equal(
        methods_invoke(&f->h, "receiver", "ping", payload, 5, 3, method_done, &res, &handle, &err),
        0);
    pump_for(f, 100);
    assert_false(res.done);
    struct client c;
    cl_open_as(f, &c, "receiver"); /* connected, not listening: still waiting */
    pump_for(f, 100);
    assert_false(res.done);
    assert_int_equal(cl_subscribe(&c, "$iothub/methods/POST/#", 1), 1);
    struct mqtt_packet p;
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    char topic[128];
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_string_equal(topic, "$iothub/methods/POST/ping/?$rid=1");
    assert_int_equal(p.publish.payload_len, strlen("{\"x\":2}"));
    assert_memory_equal(p.publish.payload, "{\"x\":2}", p.publish.payload_len);
    cl_publish(&c, "$iothub/methods/res/200/?$rid=1", "{\"late\":true}", 0, false);
    pump(f);
    assert_true(res.done);
    assert_int_equal(res.status, 200);
    assert_true(json_is_true(json_object_get(json_object_get(res.reply, "payload"), "late")));
    json_decref(res.reply);
    cl_close(&c);
    /* nobody comes: 404 after the connect timeout, not before */
    memset(&res, 0, sizeof(res));
    int64_t t0 = ltime_mono_ms();
    assert_int_equal(
        methods_invoke(&f->h, "other", "ping", payload, 5, 1, method_done, &res, &handle, &err), 0);
    while (!res.done && ltime_mono_ms() - t0 < 3000)
        pump_for(f, 50);
    assert_true(res.done);
    assert_int_equal(res.status, 404);
    assert_true(ltime_mono_ms() - t0 >= 900);
    assert_non_null(strstr(json_string_value(json_object_get(res.reply, "message")),
                           "connectTimeoutInSeconds"));
    json_decref(res.reply);
    /* cancelled while waiting: the module coming later gets nothing */
    memset(&res, 0, sizeof(res));
    assert_int_equal(
        methods_invoke(&f->h, "receiver", "ping", payload, 5, 3, method_done, &res, &handle, &err),
        0);
    methods_cancel(&f->h, handle);
    cl_open_as(f, &c, "receiver");
    assert_int_equal(cl_subscribe(&c, "$iothub/methods/POST/#", 1), 1);
    expect_nothing(&c, 200);
    assert_false(res.done);
    cl_close(&c);
    json_decref(payload);
}

/* The hub's log, captured while a test provokes it (stderr into a temp file). */
struct log_capture {
    int saved;
    char path[40];
};

static void log_capture_start(struct log_capture *lc, enum log_level level)
{
    fflush(stderr);
    strcpy(lc->path, "/tmp/ledge-test-log-XXXXXX");
    int fd = mkstemp(lc->path);
    assert_true(fd >= 0);
    lc->saved = dup(2);
    assert_true(lc->saved >= 0 && dup2(fd, 2) == 2);
    close(fd);
    log_set_level(level);
}

/* Stop capturing; how many lines contain needle. */
static size_t log_capture_count(struct log_capture *lc, const char *needle)
{
    fflush(stderr);
    dup2(lc->saved, 2);
    close(lc->saved);
    log_set_level(LOG_LEVEL_ERROR);
    char *text = NULL;
    size_t len = 0, n = 0;
    assert_int_equal(lfs_read_file(lc->path, 1 << 20, &text, &len), 0);
    unlink(lc->path);
    for (char *p = text; (p = strstr(p, needle)); p++)
        n++;
    free(text);
    return n;
}

/* A client that keeps being refused, or keeps reconnecting, does not flood the log: one line per
 * cause (and client) a minute, every refusal counted in the status. */
static void test_refusals_rate_limited(void **state)
{
    struct fixture *f = *state;
    struct client c;
    uint8_t wrong[32] = {1, 2, 3};
    struct log_capture lc;
    log_capture_start(&lc, LOG_LEVEL_WARN);
    for (int i = 0; i < 20; i++) {
        cl_open(f, &c);
        struct connect_opts o = {.key = wrong};
        assert_int_equal(cl_connect_opts(&c, "sender", &o, NULL), MQTT_CONNACK_NOT_AUTHORIZED);
        cl_close(&c);
    }
    assert_int_equal(log_capture_count(&lc, "connection refused"), 1);
    assert_int_equal(counter(f, "authFailures"), 20);
    json_t *s = status(f);
    json_t *auth = json_object_get(json_object_get(s, "refusals"), "auth");
    assert_int_equal(json_integer_value(json_object_get(auth, "count")), 20);
    assert_non_null(strstr(json_string_value(json_object_get(auth, "last")), "connection refused"));
    json_decref(s);
    /* a client reconnecting in a loop: one "connected" line */
    log_capture_start(&lc, LOG_LEVEL_INFO);
    for (int i = 0; i < 20; i++) {
        cl_open_as(f, &c, "sender");
        cl_close(&c);
    }
    assert_int_equal(log_capture_count(&lc, "connected as " DEVICE "/sender"), 1);
}

/* A SAS token that expires further out than hub.max_token_lifetime (1 day by default) is refused,
 * and the CONNACK's log line says why; one within it connects. */
static void test_token_lifetime(void **state)
{
    struct fixture *f = *state;
    int64_t now = ltime_now_ms() / 1000;
    struct connect_opts forever = {.expiry = (int64_t)1 << 40};
    struct connect_opts two_days = {.expiry = now + 2 * 86400};
    struct log_capture lc;
    log_capture_start(&lc, LOG_LEVEL_WARN);
    expect_refused(f, "sender", &forever, MQTT_CONNACK_NOT_AUTHORIZED);
    assert_int_equal(log_capture_count(&lc, "beyond hub.max_token_lifetime (86400 s)"), 1);
    expect_refused(f, "sender", &two_days, MQTT_CONNACK_NOT_AUTHORIZED);
    struct client c;
    cl_open(f, &c);
    struct connect_opts day = {.expiry = now + 86400 - 60};
    assert_int_equal(cl_connect_opts(&c, "sender", &day, NULL), MQTT_CONNACK_ACCEPTED);
    cl_close(&c);
}

/* A persistent subscription is granted only once it is saved: with the database refusing writes
 * (as a full disk makes it), SUBACK 0x80 and nothing changes; a clean session is not saved and
 * is granted. tests/system/hub-disk.sh does the same with a full disk. */
static void test_subscribe_only_when_durable(void **state)
{
    struct fixture *f = *state;
    struct client rc;
    bool present;
    cl_open(f, &rc);
    cl_connect_persistent(&rc, "receiver", &present);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/in1/#", 1), 1);
    sqlite3 *db = database_handle(&f->h);
    assert_int_equal(sqlite3_exec(db, "PRAGMA query_only=1", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/hot/#", 1),
                     MQTT_SUBACK_FAILURE);
    /* a QoS change of a saved one is refused the same way, and the old grant stays */
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/in1/#", 0),
                     MQTT_SUBACK_FAILURE);
    struct session *s = session_find(&f->h, DEVICE "/receiver");
    assert_int_equal(s->n_subs, 1);
    assert_int_equal(session_input_qos(s, "in1"), 1);
    assert_int_equal(session_input_qos(s, "hot"), -1);
    json_t *st = status(f);
    assert_true(json_is_object(json_object_get(json_object_get(st, "refusals"), "sessionSave")));
    json_decref(st);
    assert_int_equal(sqlite3_exec(db, "PRAGMA query_only=0", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/hot/#", 1), 1);
    cl_close(&rc);
    /* what was granted is what a restart brings back */
    hub_down(f);
    hub_up(f);
    s = session_find(&f->h, DEVICE "/receiver");
    assert_non_null(s);
    assert_int_equal(s->n_subs, 2);
}

/* A module that leaves the deployment, is recreated (new generation id) or has its key rotated
 * loses its live connection at once; a removed or recreated module's persistent session goes,
 * a rotated key's stays; its queued inputs stay for whoever comes back under its name. */
static void test_identity_change_cuts_sessions(void **state)
{
    struct fixture *f = *state;
    struct client rc, sc;
    struct lerr err = {0};
    bool present;
    static const char *const without_receiver[] = {"gen1", NULL, "gen1"};
    static const char *const receiver_gen2[] = {"gen1", "gen2", "gen1"};
    static const char *const receiver_gen3[] = {"gen1", "gen3", "gen1"};
    cl_open_as(f, &sc, "sender");

    /* 1. removed: cut at once, even while it could go on publishing */
    cl_open(f, &rc);
    cl_connect_persistent(&rc, "receiver", &present);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/#", 1), 1);
    write_runtime_with(f, default_routes, without_receiver);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    expect_closed(&rc);
    cl_close(&rc);
    /* its inputs still queue (the route names it) and it cannot come back as it was */
    send_output(&sc, "out1", NULL, "while away");
    cl_open(f, &rc);
    struct connect_opts o = {.persistent = true};
    assert_int_equal(cl_connect_opts(&rc, "receiver", &o, NULL), MQTT_CONNACK_NOT_AUTHORIZED);
    cl_close(&rc);

    /* 2. back, recreated: a new identity without the old session, the backlog waiting for it */
    write_runtime_with(f, default_routes, receiver_gen2);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    cl_open(f, &rc);
    cl_connect_persistent(&rc, "receiver", &present);
    assert_false(present);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/#", 1), 1);
    expect_body(&rc, "in1", "while away");

    /* 3. recreated while connected: cut, and the session forgotten */
    write_runtime_with(f, default_routes, receiver_gen3);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    expect_closed(&rc);
    cl_close(&rc);
    cl_open(f, &rc);
    cl_connect_persistent(&rc, "receiver", &present);
    assert_false(present);
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/#", 1), 1);

    /* 4. key rotated: cut; the old key no longer works, the new one resumes the session */
    uint8_t old_key[32];
    memcpy(old_key, f->keys[1], 32);
    f->keys[1][0] ^= 0xff;
    write_runtime_with(f, default_routes, receiver_gen3);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    expect_closed(&rc);
    cl_close(&rc);
    cl_open(f, &rc);
    o.key = old_key;
    assert_int_equal(cl_connect_opts(&rc, "receiver", &o, NULL), MQTT_CONNACK_NOT_AUTHORIZED);
    cl_close(&rc);
    cl_open(f, &rc);
    cl_connect_persistent(&rc, "receiver", &present);
    assert_true(present);

    /* 5. a reload that changes nothing for it leaves it alone; the sender was never touched */
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    send_output(&sc, "out1", NULL, "still here");
    expect_body(&rc, "in1", "still here");
    cl_close(&rc);
    cl_close(&sc);
}

/* twins.db of the stopped hub: overwritten with garbage, cut to its first bytes, or replaced by a
 * directory (no database can be opened there); its WAL goes too. */
enum db_damage { DB_GARBAGE, DB_TRUNCATED, DB_UNOPENABLE };

static void damage_twins_db(struct fixture *f, enum db_damage how)
{
    char path[160], wal[170];
    snprintf(path, sizeof(path), "%s/state/hub/twins.db", f->dir);
    for (const char *ext = "-wal"; ext; ext = strcmp(ext, "-wal") == 0 ? "-shm" : NULL) {
        snprintf(wal, sizeof(wal), "%s%s", path, ext);
        unlink(wal);
    }
    if (how == DB_UNOPENABLE) {
        assert_int_equal(unlink(path), 0);
        assert_int_equal(mkdir(path, 0700), 0);
        return;
    }
    if (how == DB_TRUNCATED) {
        assert_int_equal(truncate(path, 1500), 0);
        return;
    }
    char junk[8192];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 131 + 7);
    assert_int_equal(lfs_write_atomic(path, junk, sizeof(junk), 0644), 0);
}

static size_t count_damaged_files(struct fixture *f)
{
    char dir[160];
    snprintf(dir, sizeof(dir), "%s/state/hub", f->dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += lstr_startswith(e->d_name, "twins.db.damaged-") && !strchr(e->d_name + 17, '-');
    closedir(d);
    return n;
}

/* A damaged or unusable twins.db does not stop the hub: it starts, serves the queues, salvages
 * what it can and says so in its status. */
static void test_twins_db_damaged(void **state)
{
    struct fixture *f = *state;
    struct client sc, rc;
    static const enum db_damage cases[] = {DB_GARBAGE, DB_TRUNCATED, DB_UNOPENABLE};
    for (size_t k = 0; k < ARRAY_SIZE(cases); k++) {
        cl_open_as(f, &sc, "sender");
        send_output(&sc, "out1", NULL, "queued");
        cl_close(&sc);
        hub_down(f);
        damage_twins_db(f, cases[k]);
        hub_up(f); /* fails the test when the hub does not start */
        json_t *s = status(f);
        json_t *db = json_object_get(s, "twinsDatabase");
        if (cases[k] == DB_UNOPENABLE) {
            assert_false(json_is_true(json_object_get(db, "available")));
            assert_non_null(json_string_value(json_object_get(db, "error")));
        } else {
            assert_true(json_is_true(json_object_get(db, "available")));
            assert_true(json_is_true(json_object_get(db, "damaged")));
            assert_non_null(json_string_value(json_object_get(db, "damagedPath")));
            assert_int_equal(count_damaged_files(f), k + 1);
        }
        json_decref(s);
        /* the queue is served whatever happened to the twins */
        cl_open_receiver(f, &rc);
        expect_body(&rc, "in1", "queued");
        /* twins work again on a salvaged database, and say so when there is none */
        assert_int_equal(cl_subscribe(&rc, "$iothub/twin/res/#", 0), 0);
        cl_publish(&rc, "$iothub/twin/GET/?$rid=1", "", 0, false);
        struct mqtt_packet p;
        assert_int_equal(cl_next(&rc, &p, 2000), 1);
        char topic[64];
        snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
        assert_string_equal(topic, cases[k] == DB_UNOPENABLE ? "$iothub/twin/res/500/?$rid=1"
                                                             : "$iothub/twin/res/200/?$rid=1");
        cl_close(&rc);
    }
}

/* twins.db and its WAL are the hub's alone: 0600 whatever the umask and the directory. */
static void test_twins_db_mode(void **state)
{
    struct fixture *f = *state;
    struct client c;
    cl_open_as(f, &c, "receiver");
    assert_int_equal(cl_subscribe(&c, "$iothub/twin/res/#", 0), 0);
    cl_publish(&c, "$iothub/twin/PATCH/properties/reported/?$rid=1", "{\"a\":1}", 0, false);
    struct mqtt_packet p;
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    cl_close(&c);
    char path[170];
    struct stat st;
    snprintf(path, sizeof(path), "%s/state/hub/twins.db", f->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s/state/hub/twins.db-wal", f->dir);
    if (stat(path, &st) == 0)
        assert_int_equal(st.st_mode & 0777, 0600);
}

/* ------------------------------------------------------------------ leaf devices */

/* CONNECT as leaf device (the device form: client id = device id, no module), with a token of
 * key (NULL: the device's key of slot) for resource (NULL: <iothub>/devices/<device>). The
 * CONNACK code, or -1. */
static int cl_connect_device(struct client *c, const char *device, int slot, const uint8_t *key,
                             const char *resource, const char *client_id, bool persistent)
{
    int i = strcmp(device, "leaf2") == 0 ? 1 : 0;
    char res[256], username[256];
    snprintf(res, sizeof(res), IOTHUB "/devices/%s", device);
    snprintf(username, sizeof(username), IOTHUB "/%s/?api-version=2021-04-12", device);
    struct lbuf tok = LBUF_INIT;
    assert_int_equal(sas_token_make(resource ? resource : res, key ? key : c->f->leaf_keys[i][slot],
                                    32, (uint64_t)(ltime_now_ms() / 1000 + 3600), NULL, &tok),
                     0);
    struct connect_opts o = {
        .client_id = client_id ? client_id : device,
        .username = username,
        .token = tok.data,
        .persistent = persistent,
    };
    int r = cl_connect_opts(c, "unused", &o, NULL);
    lbuf_free(&tok);
    return r;
}

static void cl_open_device(struct fixture *f, struct client *c, const char *device)
{
    cl_open(f, c);
    assert_int_equal(cl_connect_device(c, device, 0, NULL, NULL, NULL, false), 0);
}

static void expect_device_refused(struct fixture *f, const char *device, int slot,
                                  const uint8_t *key, const char *resource, const char *client_id,
                                  int code)
{
    struct client c;
    cl_open(f, &c);
    assert_int_equal(cl_connect_device(&c, device, slot, key, resource, client_id, false), code);
    expect_closed(&c);
    cl_close(&c);
}

/* A leaf device connects with a token of either of its keys, for itself; every other claim is
 * refused with IoT Hub's CONNACK code. */
static void test_device_connect(void **state)
{
    struct fixture *f = *state;
    struct client c;
    cl_open(f, &c);
    assert_int_equal(cl_connect_device(&c, "leaf1", 0, NULL, NULL, NULL, false), 0);
    cl_close(&c);
    cl_open(f, &c);
    assert_int_equal(cl_connect_device(&c, "leaf1", 1, NULL, NULL, NULL, false), 0); /* secondary */
    cl_close(&c);
    /* ids compare case-insensitively, as IoT Hub's */
    cl_open(f, &c);
    assert_int_equal(cl_connect_device(&c, "LEAF1", 0, f->leaf_keys[0][0], NULL, NULL, false), 0);
    cl_close(&c);
    /* the gateway host name is an accepted audience too */
    cl_open(f, &c);
    assert_int_equal(cl_connect_device(&c, "leaf1", 0, NULL, GATEWAY "/devices/leaf1", NULL, false),
                     0);
    cl_close(&c);

    long long before = counter(f, "authFailures");
    /* another device's key, a module's key, a key of nobody's */
    expect_device_refused(f, "leaf1", 0, f->leaf_keys[1][0], NULL, NULL,
                          MQTT_CONNACK_NOT_AUTHORIZED);
    expect_device_refused(f, "leaf1", 0, f->keys[0], NULL, NULL, MQTT_CONNACK_NOT_AUTHORIZED);
    uint8_t wrong[32] = {7};
    expect_device_refused(f, "leaf1", 0, wrong, NULL, NULL, MQTT_CONNACK_NOT_AUTHORIZED);
    /* a token for another device's resource, or a module's, signed with the right key */
    expect_device_refused(f, "leaf1", 0, NULL, IOTHUB "/devices/leaf2", NULL,
                          MQTT_CONNACK_NOT_AUTHORIZED);
    expect_device_refused(f, "leaf1", 0, NULL, IOTHUB "/devices/leaf1/modules/sender", NULL,
                          MQTT_CONNACK_NOT_AUTHORIZED);
    expect_device_refused(f, "leaf1", 0, NULL, "elsewhere.example/devices/leaf1", NULL,
                          MQTT_CONNACK_NOT_AUTHORIZED);
    /* a module's key cannot log in as the edge device itself (not a leaf device) */
    expect_device_refused(f, DEVICE, 0, f->keys[0], IOTHUB "/devices/" DEVICE, NULL,
                          MQTT_CONNACK_NOT_AUTHORIZED);
    /* an unknown device; the client id must be the device id */
    expect_device_refused(f, "ghost", 0, f->leaf_keys[0][0], IOTHUB "/devices/ghost", NULL,
                          MQTT_CONNACK_NOT_AUTHORIZED);
    expect_device_refused(f, "leaf1", 0, NULL, NULL, "leaf2", MQTT_CONNACK_IDENTIFIER_REJECTED);
    expect_device_refused(f, "leaf1", 0, NULL, NULL, "leaf1/sender",
                          MQTT_CONNACK_IDENTIFIER_REJECTED);
    assert_int_equal(counter(f, "authFailures"), before + 8);
    /* no password, no certificate */
    cl_open(f, &c);
    struct connect_opts o = {.client_id = "leaf1",
                             .username = IOTHUB "/leaf1/?api-version=2021-04-12",
                             .no_password = true};
    assert_int_equal(cl_connect_opts(&c, "unused", &o, NULL), MQTT_CONNACK_BAD_USERNAME_PASSWORD);
    cl_close(&c);
    /* an expired token, one beyond hub.max_token_lifetime */
    for (int k = 0; k < 2; k++) {
        struct lbuf tok = LBUF_INIT;
        int64_t exp = k ? ltime_now_ms() / 1000 + 400LL * 86400 : ltime_now_ms() / 1000 - 5;
        assert_int_equal(sas_token_make(IOTHUB "/devices/leaf1", f->leaf_keys[0][0], 32,
                                        (uint64_t)exp, NULL, &tok),
                         0);
        struct connect_opts e = {.client_id = "leaf1",
                                 .username = IOTHUB "/leaf1/?api-version=2021-04-12",
                                 .token = tok.data};
        cl_open(f, &c);
        assert_int_equal(cl_connect_opts(&c, "unused", &e, NULL), MQTT_CONNACK_NOT_AUTHORIZED);
        cl_close(&c);
        lbuf_free(&tok);
    }
    /* a device's token does not open a module: a device cannot pass for a module */
    struct lbuf tok = LBUF_INIT;
    assert_int_equal(sas_token_make(IOTHUB "/devices/" DEVICE "/modules/sender", f->leaf_keys[0][0],
                                    32, (uint64_t)(ltime_now_ms() / 1000 + 60), NULL, &tok),
                     0);
    struct connect_opts m = {.token = tok.data};
    expect_refused(f, "sender", &m, MQTT_CONNACK_NOT_AUTHORIZED);
    lbuf_free(&tok);
    /* X.509 devices need a certificate (none on this plain connection) */
    cl_open(f, &c);
    o = (struct connect_opts){.client_id = "leafca",
                              .username = IOTHUB "/leafca/?api-version=2021-04-12",
                              .token = "SharedAccessSignature sr=x&sig=y&se=1"};
    assert_int_equal(cl_connect_opts(&c, "unused", &o, NULL), MQTT_CONNACK_NOT_AUTHORIZED);
    cl_close(&c);
}

static void test_device_may_subscribe(void **state)
{
    struct session s = {.id = {.kind = HUB_IDENTITY_DEVICE, .device_id = "leaf1"}};
    const char *allowed[] = {
        "devices/leaf1/messages/devicebound/#",
        "devices/LEAF1/messages/devicebound/#",
        "devices/leaf1/messages/devicebound/",
        "devices/leaf1/messages/devicebound",
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
        "$iothub/methods/POST/#",
    };
    const char *refused[] = {
        "devices/leaf2/messages/devicebound/#", /* another device's */
        "devices/leaf1/modules/m/inputs/#",     /* module topics, even under its own id */
        "devices/dev1/modules/receiver/inputs/#",
        "devices/leaf1/messages/events/#", /* its own telemetry is not for it to read */
        "devices/leaf1/#",
        "devices/#",
        "#",
        "$iothub/#",
    };
    for (size_t i = 0; i < ARRAY_SIZE(allowed); i++)
        if (!session_may_subscribe(&s, allowed[i], strlen(allowed[i])))
            fail_msg("refused: %s", allowed[i]);
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
        if (session_may_subscribe(&s, refused[i], strlen(refused[i])))
            fail_msg("allowed: %s", refused[i]);
}

/* A device publishes only on its own device events topic and its twin and method topics; a
 * module cannot publish as a device; refusals close the connection and are counted. */
static void test_device_publish_authorisation(void **state)
{
    struct fixture *f = *state;
    struct client c;
    cl_open_device(f, &c, "leaf1");
    assert_int_equal(cl_subscribe(&c, "devices/leaf1/messages/devicebound/#", 1), 1);
    assert_int_equal(cl_subscribe(&c, "devices/leaf2/messages/devicebound/#", 1), 0x80);
    assert_int_equal(cl_subscribe(&c, "devices/" DEVICE "/modules/receiver/inputs/#", 1), 0x80);
    expect_puback(&c, cl_publish(&c, "devices/leaf1/messages/events/", "ok", 1, false));
    expect_pingresp(&c);
    cl_close(&c);
    long long before = counter(f, "unauthorized");
    const char *refused[] = {
        "devices/leaf2/messages/events/",                /* another device */
        "devices/" DEVICE "/messages/events/",           /* the edge device */
        "devices/leaf1/modules/sender/messages/events/", /* a module's, under its own id */
        "devices/" DEVICE "/modules/sender/messages/events/",
        "devices/leaf1/messages/devicebound/",
    };
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
        cl_open_device(f, &c, "leaf1");
        cl_publish(&c, refused[i], "x", 1, false);
        expect_closed(&c);
        cl_close(&c);
    }
    /* a module cannot send as a device */
    cl_open_as(f, &c, "sender");
    cl_publish(&c, "devices/leaf1/messages/events/", "x", 1, false);
    expect_closed(&c);
    cl_close(&c);
    /* nor subscribe to a device's C2D topic */
    cl_open_as(f, &c, "sender");
    assert_int_equal(cl_subscribe(&c, "devices/leaf1/messages/devicebound/#", 1), 0x80);
    cl_close(&c);
    assert_int_equal(counter(f, "unauthorized"), before + (long long)ARRAY_SIZE(refused) + 2);
    /* a will aimed at another device's topic is not published for it */
    cl_open(f, &c);
    struct lbuf tok = LBUF_INIT;
    assert_int_equal(sas_token_make(IOTHUB "/devices/leaf1", f->leaf_keys[0][0], 32,
                                    (uint64_t)(ltime_now_ms() / 1000 + 60), NULL, &tok),
                     0);
    struct connect_opts w = {.client_id = "leaf1",
                             .username = IOTHUB "/leaf1/?api-version=2021-04-12",
                             .token = tok.data,
                             .will_topic = "devices/leaf2/messages/events/kind=x",
                             .will_payload = "gone"};
    assert_int_equal(cl_connect_opts(&c, "unused", &w, NULL), 0);
    lbuf_free(&tok);
    cl_close(&c);
    assert_int_equal(counter(f, "unauthorized"), before + (long long)ARRAY_SIZE(refused) + 3);
}

/* A device's telemetry: from /messages/events with $connectionDeviceId and no module, its
 * properties passed on, routed by a condition on the device id (and never by a route from
 * /messages/modules), into a module input and into $upstream. */
static void test_device_telemetry_routed(void **state)
{
    struct fixture *f = *state;
    struct client rc, c, c2;
    cl_open_receiver(f, &rc);
    cl_open_device(f, &c, "leaf1");
    /* the device claims to be a module in its bag: the hub says who it is */
    expect_puback(&c,
                  cl_publish(&c,
                             "devices/leaf1/messages/events/"
                             "kind=x&temp=21&%24.mid=m1&%24.cdid=evil&%24.cmid=sender&%24.on=out1",
                             "{\"t\":21}", 1, false));
    struct received r;
    expect_input(&rc, &r, true);
    assert_string_equal(r.input, "leaf");
    assert_string_equal(r.body, "{\"t\":21}");
    assert_string_equal(prop_app(&r, "temp"), "21");
    assert_true(prop_sys_is(&r, IOTHUB_PROP_MESSAGE_ID, "m1"));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CONNECTION_DEVICE_ID, "leaf1"));
    assert_null(r.props.sys[IOTHUB_PROP_CONNECTION_MODULE_ID].ptr);
    /* the condition on a property: kind other than x is not routed there */
    expect_puback(&c, cl_publish(&c, "devices/leaf1/messages/events/kind=y", "no", 1, false));
    expect_nothing(&rc, 200);
    assert_true(endpoint_depth(f, "/modules/receiver/inputs/wrong") <= 0);
    /* the other device's telemetry goes upstream (no link here: it waits in the store) */
    long long up = endpoint_depth(f, "$upstream");
    cl_open_device(f, &c2, "leaf2");
    expect_puback(&c2, cl_publish(&c2, "devices/leaf2/messages/events/a=1", "up", 1, false));
    assert_int_equal(endpoint_depth(f, "$upstream"), (up < 0 ? 0 : up) + 1);
    cl_close(&c2);
    cl_close(&c);
    cl_close(&rc);
}

/* A cloud-to-device message for a leaf device as cloud.c stores it (what IoT Hub sent upstream,
 * in the device's C2D endpoint): its bag is kept, $.exp becomes the expiry. */
static void store_c2d(struct fixture *f, const char *device, const char *bag, const char *body)
{
    struct iothub_props props;
    char scratch[1024];
    struct lerr e = {0};
    assert_int_equal(iothub_props_parse(bag, strlen(bag), scratch, sizeof(scratch), &props, &e), 0);
    struct lbuf rec = LBUF_INIT;
    int64_t now = ltime_now_ms(), expiry = -1;
    assert_int_equal(cloud_c2d_message(&props, body, strlen(body), now, &rec, &expiry), 0);
    struct endpoint *ep = endpoint_c2d(&f->h, device);
    assert_non_null(ep);
    assert_int_equal(ep->kind, HUB_SINK_C2D);
    assert_int_equal(endpoint_append(&f->h, ep, HUB_NO_PRIORITY, rec.data, rec.len, now, expiry),
                     0);
    lbuf_free(&rec);
    commit_dirty(&f->h);
    endpoint_kick(&f->h, ep);
    pump(f);
}

/* Expect a C2D PUBLISH on the device's devicebound topic; acknowledge it when ack. */
static void expect_c2d(struct client *c, const char *device, struct received *ret, bool ack)
{
    struct mqtt_packet p;
    assert_int_equal(cl_next(c, &p, 2000), 1);
    assert_int_equal(p.type, MQTT_PUBLISH);
    struct iothub_topic t;
    struct lerr e = {0};
    assert_int_equal(iothub_topic_parse(p.publish.topic.ptr, p.publish.topic.len, &t, &e), 0);
    assert_int_equal(t.kind, IOTHUB_TOPIC_DEVICEBOUND);
    assert_int_equal(t.device_id.len, strlen(device));
    assert_memory_equal(t.device_id.ptr, device, t.device_id.len);
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->body, sizeof(ret->body), "%.*s", (int)p.publish.payload_len,
             (const char *)p.publish.payload);
    char bag[2048];
    memcpy(bag, t.propbag.ptr, t.propbag.len);
    assert_int_equal(
        iothub_props_parse(bag, t.propbag.len, ret->scratch, sizeof(ret->scratch), &ret->props, &e),
        0);
    ret->packet_id = p.publish.packet_id;
    ret->qos = p.publish.qos;
    ret->dup = p.publish.dup;
    if (ack && p.publish.qos == 1) {
        struct lbuf b = LBUF_INIT;
        assert_int_equal(mqtt_encode_ack(&b, MQTT_PUBACK, p.publish.packet_id), 0);
        cl_send_buf(c, &b);
        pump(c->f);
    }
}

static void test_c2d_message_form(void **state)
{
    /* the bag's system and application properties survive the stored form */
    const char *bag = "%24.mid=m%201&%24.to=%2Fdevices%2Fleaf1%2Fmessages%2FdeviceBound&%24.cid=c9"
                      "&%24.exp=2099-01-01T00%3A00%3A00.000Z&iothub-ack=full&color=red";
    struct iothub_props props;
    char scratch[512];
    struct lerr e = {0};
    assert_int_equal(iothub_props_parse(bag, strlen(bag), scratch, sizeof(scratch), &props, &e), 0);
    struct lbuf rec = LBUF_INIT;
    int64_t expiry = 0;
    assert_int_equal(cloud_c2d_message(&props, "hi", 2, 1000, &rec, &expiry), 0);
    int64_t want;
    assert_int_equal(ltime_parse_rfc3339("2099-01-01T00:00:00Z", &want), 0);
    assert_int_equal(expiry, want);
    struct hub_message m;
    assert_int_equal(hub_message_decode(rec.data, rec.len, &m, &e), 0);
    assert_string_equal(m.sys[IOTHUB_PROP_MESSAGE_ID], "m 1");
    assert_string_equal(m.sys[IOTHUB_PROP_TO], "/devices/leaf1/messages/deviceBound");
    assert_string_equal(m.sys[IOTHUB_PROP_CORRELATION_ID], "c9");
    assert_int_equal(m.n_app, 2);
    assert_string_equal(m.app_key[0], "iothub-ack");
    assert_string_equal(m.app_value[0], "full");
    assert_string_equal(m.app_key[1], "color");
    assert_string_equal(m.app_value[1], "red");
    assert_int_equal(m.body_len, 2);
    assert_memory_equal(m.body, "hi", 2);
    assert_int_equal(m.enqueued_ms, 1000);
    lbuf_free(&rec);
    /* no bag, and an expiry that cannot be read: no expiry */
    const char *bad = "%24.exp=tomorrow";
    assert_int_equal(iothub_props_parse(bad, strlen(bad), scratch, sizeof(scratch), &props, &e), 0);
    assert_int_equal(cloud_c2d_message(&props, "", 0, 1000, &rec, &expiry), 0);
    assert_int_equal(expiry, 0);
    lbuf_free(&rec);
    props = (struct iothub_props){0};
    assert_int_equal(cloud_c2d_message(&props, "x", 1, 1000, &rec, &expiry), 0);
    assert_int_equal(hub_message_decode(rec.data, rec.len, &m, &e), 0);
    assert_null(m.sys[IOTHUB_PROP_MESSAGE_ID]);
    assert_int_equal(m.n_app, 0);
    lbuf_free(&rec);
}

/* C2D messages wait in the device's endpoint until it subscribes, arrive with their properties on
 * devices/<d>/messages/devicebound/<bag>, leave the store only on the device's PUBACK (again,
 * with DUP, on a new connection otherwise), survive a restart, and never reach another device. */
static void test_device_c2d(void **state)
{
    struct fixture *f = *state;
    assert_null(endpoint_c2d(&f->h, ""));
    assert_null(endpoint_c2d(&f->h, "a/b"));
    store_c2d(f, "leaf1", "%24.mid=c1&%24.to=%2Fdevices%2Fleaf1%2Fmessages%2FdeviceBound&color=red",
              "first");
    assert_int_equal(endpoint_depth(f, "/devices/leaf1/messages/devicebound"), 1);
    struct client c, c2;
    cl_open_device(f, &c, "leaf1");
    cl_open_device(f, &c2, "leaf2");
    assert_int_equal(cl_subscribe(&c2, "devices/leaf2/messages/devicebound/#", 1), 1);
    expect_nothing(&c, 100); /* not subscribed yet */
    assert_int_equal(cl_subscribe(&c, "devices/leaf1/messages/devicebound/#", 1), 1);
    struct received r;
    expect_c2d(&c, "leaf1", &r, false);
    assert_string_equal(r.body, "first");
    assert_int_equal(r.qos, 1);
    assert_false(r.dup);
    assert_true(prop_sys_is(&r, IOTHUB_PROP_MESSAGE_ID, "c1"));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_TO, "/devices/leaf1/messages/deviceBound"));
    assert_string_equal(prop_app(&r, "color"), "red");
    /* not acknowledged: delivered again, marked, on the next connection */
    cl_close(&c);
    assert_int_equal(endpoint_depth(f, "/devices/leaf1/messages/devicebound"), 1);
    cl_open(f, &c);
    assert_int_equal(cl_connect_device(&c, "leaf1", 0, NULL, NULL, NULL, false), 0);
    assert_int_equal(cl_subscribe(&c, "devices/LEAF1/messages/devicebound/#", 1), 1);
    expect_c2d(&c, "leaf1", &r, true);
    assert_string_equal(r.body, "first");
    assert_true(r.dup);
    assert_int_equal(endpoint_depth(f, "/devices/leaf1/messages/devicebound"), 0);
    /* while connected: at once */
    store_c2d(f, "leaf1", "%24.mid=c2", "second");
    expect_c2d(&c, "leaf1", &r, true);
    assert_string_equal(r.body, "second");
    expect_nothing(&c2, 100);
    /* QoS 0 subscribers get it once, at most */
    cl_close(&c2);
    cl_close(&c);
    /* offline, then the hub restarts: still there */
    store_c2d(f, "leaf1", "%24.mid=c3", "third");
    store_c2d(f, "leaf1", "%24.mid=c4", "fourth");
    pump_for(f, 50);
    hub_down(f);
    hub_up(f);
    assert_int_equal(endpoint_depth(f, "/devices/leaf1/messages/devicebound"), 2);
    cl_open_device(f, &c, "leaf1");
    assert_int_equal(cl_subscribe(&c, "devices/leaf1/messages/devicebound/#", 0), 0);
    expect_c2d(&c, "leaf1", &r, true);
    assert_string_equal(r.body, "third");
    assert_int_equal(r.qos, 0);
    expect_c2d(&c, "leaf1", &r, true);
    assert_string_equal(r.body, "fourth");
    assert_int_equal(endpoint_depth(f, "/devices/leaf1/messages/devicebound"), 0);
    cl_close(&c);
}

/* A device's own twin over $iothub/twin (keyed apart from every module's), desired patches from
 * the edge (twins_patch_desired on "devices/<d>", what `ledge twin set --device` reaches), and
 * direct methods from the edge that only that device may answer. */
static void test_device_twin_and_method(void **state)
{
    struct fixture *f = *state;
    struct client c, m;
    cl_open_device(f, &c, "leaf1");
    assert_int_equal(cl_subscribe(&c, "$iothub/twin/res/#", 1), 1);
    assert_int_equal(cl_subscribe(&c, "$iothub/twin/PATCH/properties/desired/#", 1), 1);
    assert_int_equal(cl_subscribe(&c, "$iothub/methods/POST/#", 1), 1);
    cl_publish(&c, "$iothub/twin/PATCH/properties/reported/?$rid=r1", "{\"fw\":\"1.2\"}", 0, false);
    struct mqtt_packet p;
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    char topic[256];
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_string_equal(topic, "$iothub/twin/res/204/?$rid=r1&$version=2");
    json_t *t = twins_get(&f->h, "devices/leaf1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(t, "reported"), "fw")),
                        "1.2");
    json_decref(t);
    /* a module's twin is another one */
    t = twins_get(&f->h, "receiver");
    assert_null(json_object_get(json_object_get(t, "reported"), "fw"));
    json_decref(t);
    /* desired from the edge reaches the device */
    json_t *patch = json_pack("{s:i}", "interval", 5), *twin = NULL;
    struct lerr err = {0};
    assert_int_equal(twins_patch_desired(&f->h, "devices/leaf1", patch, &twin, &err), 0);
    json_decref(patch);
    json_decref(twin);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_string_equal(topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    cl_publish(&c, "$iothub/twin/GET/?$rid=r2", "", 0, false);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    json_t *doc = NULL;
    assert_int_equal(
        ljson_parse((const char *)p.publish.payload, p.publish.payload_len, &doc, NULL), 0);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(doc, "desired"), "interval")), 5);
    json_decref(doc);
    /* a method call for the device */
    struct method_result res = {0};
    void *handle;
    json_t *payload = json_pack("{s:i}", "x", 1);
    assert_int_equal(methods_invoke(&f->h, "devices/leaf2", "ping", payload, 5, 0, method_done,
                                    &res, &handle, &err),
                     -ENOENT); /* not connected */
    assert_int_equal(methods_invoke(&f->h, "devices/leaf1", "ping", payload, 5, 0, method_done,
                                    &res, &handle, &err),
                     0);
    json_decref(payload);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_true(lstr_startswith(topic, "$iothub/methods/POST/ping/?$rid="));
    const char *rid = strstr(topic, "$rid=") + 5;
    char res_topic[128];
    snprintf(res_topic, sizeof(res_topic), "$iothub/methods/res/200/?$rid=%s", rid);
    /* a module cannot answer the device's call, nor another device */
    cl_open_as(f, &m, "receiver");
    cl_publish(&m, res_topic, "{\"evil\":1}", 0, false);
    pump(f);
    cl_close(&m);
    cl_open_device(f, &m, "leaf2");
    cl_publish(&m, res_topic, "{\"evil\":2}", 0, false);
    pump(f);
    cl_close(&m);
    assert_false(res.done);
    cl_publish(&c, res_topic, "{\"pong\":true}", 0, false);
    pump(f);
    assert_true(res.done);
    assert_int_equal(res.status, 200);
    assert_int_equal(json_integer_value(json_object_get(res.reply, "status")), 200);
    assert_true(json_is_true(json_object_get(json_object_get(res.reply, "payload"), "pong")));
    json_decref(res.reply);
    cl_close(&c);
}

/* CONNECT as module `module` of leaf device `device` (a child edge device, docs/nested.md) with
 * a token signed with key (NULL: the module key derived from the device's key of slot). */
static int cl_connect_child(struct client *c, const char *device, const char *module, int slot,
                            const uint8_t *key)
{
    int i = strcmp(device, "leaf2") == 0 ? 1 : 0;
    char res[256], username[256], cid[256];
    snprintf(res, sizeof(res), IOTHUB "/devices/%s/modules/%s", device, module);
    snprintf(username, sizeof(username), IOTHUB "/%s/%s/?api-version=2021-04-12", device, module);
    snprintf(cid, sizeof(cid), "%s/%s", device, module);
    uint8_t derived[32];
    assert_int_equal(
        lcrypto_hmac_sha256(c->f->leaf_keys[i][slot], 32, module, strlen(module), derived), 0);
    struct lbuf tok = LBUF_INIT;
    assert_int_equal(sas_token_make(res, key ? key : derived, 32,
                                    (uint64_t)(ltime_now_ms() / 1000 + 3600), NULL, &tok),
                     0);
    struct connect_opts o = {.client_id = cid, .username = username, .token = tok.data};
    int r = cl_connect_opts(c, "unused", &o, NULL);
    lbuf_free(&tok);
    return r;
}

/* A child edge device's module identities: authenticated by keys derived from the device's
 * (either slot), never by the device key itself nor for another device; twins and methods as a
 * module's, kept apart from the device's own twin; no telemetry of their own; cut with the
 * device. */
static void test_child_modules(void **state)
{
    struct fixture *f = *state;
    struct client c, d;
    cl_open(f, &c);
    assert_int_equal(cl_connect_child(&c, "leaf1", "$edgeAgent", 0, NULL), 0);
    /* the secondary key's module key too */
    cl_open(f, &d);
    assert_int_equal(cl_connect_child(&d, "leaf1", "mod1", 1, NULL), 0);
    cl_close(&d);
    /* the device's own key does not sign for its modules; no device, no modules; an X.509
     * device has no key to derive from */
    cl_open(f, &d);
    assert_int_equal(cl_connect_child(&d, "leaf1", "mod1", 0, f->leaf_keys[0][0]),
                     MQTT_CONNACK_NOT_AUTHORIZED);
    cl_close(&d);
    cl_open(f, &d);
    assert_int_equal(cl_connect_child(&d, "nosuch", "mod1", 0, NULL), MQTT_CONNACK_NOT_AUTHORIZED);
    cl_close(&d);
    cl_open(f, &d);
    assert_int_equal(cl_connect_child(&d, "leafca", "mod1", 0, NULL), MQTT_CONNACK_NOT_AUTHORIZED);
    cl_close(&d);

    assert_int_equal(cl_subscribe(&c, "$iothub/twin/res/#", 1), 1);
    assert_int_equal(cl_subscribe(&c, "$iothub/twin/PATCH/properties/desired/#", 1), 1);
    assert_int_equal(cl_subscribe(&c, "$iothub/methods/POST/#", 1), 1);
    cl_publish(&c, "$iothub/twin/PATCH/properties/reported/?$rid=r1", "{\"lastDesiredVersion\":3}",
               0, false);
    struct mqtt_packet p;
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    char topic[256];
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_string_equal(topic, "$iothub/twin/res/204/?$rid=r1&$version=2");
    json_t *t = twins_get(&f->h, "devices/leaf1/modules/$edgeAgent");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(t, "reported"), "lastDesiredVersion")),
        3);
    json_decref(t);
    t = twins_get(&f->h, "devices/leaf1");
    assert_null(json_object_get(json_object_get(t, "reported"), "lastDesiredVersion"));
    json_decref(t);
    assert_int_equal(twins_child_count(&f->h, "leaf1"), 1);
    assert_true(twins_known(&f->h, "devices/leaf1/modules/$edgeAgent"));
    /* a deployment written at the parent replaces the desired document: the module gets the
     * difference */
    json_t *des = json_pack("{s:{s:i}}", "modules", "a", 1);
    assert_int_equal(twins_cloud_desired(&f->h, "devices/leaf1/modules/$edgeAgent", des, 0, true),
                     0);
    json_decref(des);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_string_equal(topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    des = json_pack("{s:{s:i}}", "modules", "b", 2);
    assert_int_equal(twins_cloud_desired(&f->h, "devices/leaf1/modules/$edgeAgent", des, 0, true),
                     0);
    json_decref(des);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    json_t *patch = NULL;
    assert_int_equal(
        ljson_parse((const char *)p.publish.payload, p.publish.payload_len, &patch, NULL), 0);
    json_t *mods = json_object_get(patch, "modules");
    assert_true(json_is_null(json_object_get(mods, "a")));
    assert_int_equal(json_integer_value(json_object_get(mods, "b")), 2);
    json_decref(patch);
    /* a method call for the child's module */
    struct method_result res = {0};
    void *handle;
    struct lerr err = {0};
    json_t *payload = json_object();
    assert_int_equal(methods_invoke(&f->h, "devices/leaf1/modules/$edgeAgent", "ping", payload, 5,
                                    0, method_done, &res, &handle, &err),
                     0);
    json_decref(payload);
    assert_int_equal(cl_next(&c, &p, 2000), 1);
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_true(lstr_startswith(topic, "$iothub/methods/POST/ping/?$rid="));
    char res_topic[128];
    snprintf(res_topic, sizeof(res_topic), "$iothub/methods/res/200/?$rid=%s",
             strstr(topic, "$rid=") + 5);
    cl_publish(&c, res_topic, "{\"pong\":1}", 0, false);
    pump(f);
    assert_true(res.done);
    assert_int_equal(json_integer_value(json_object_get(res.reply, "status")), 200);
    json_decref(res.reply);
    /* its telemetry comes from the child's module, as IoT Edge's parent routes it; on its own
     * events topic only */
    long long received = counter(f, "received"), unauth = counter(f, "unauthorized");
    uint16_t id =
        cl_publish(&c, "devices/leaf1/modules/$edgeAgent/messages/events/", "{}", 1, false);
    expect_puback(&c, id);
    assert_int_equal(counter(f, "received"), received + 1);
    cl_publish(&c, "devices/leaf1/modules/mod1/messages/events/", "{}", 1, false);
    expect_closed(&c);
    cl_close(&c);
    assert_int_equal(counter(f, "unauthorized"), unauth + 1);
    /* the device removed: its modules' connections are cut and their twins forgotten */
    cl_open(f, &c);
    assert_int_equal(cl_connect_child(&c, "leaf1", "$edgeAgent", 0, NULL), 0);
    f->leaf_gen[0] = NULL;
    write_runtime(f, default_routes);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    expect_closed(&c);
    cl_close(&c);
    assert_false(twins_known(&f->h, "devices/leaf1/modules/$edgeAgent"));
    assert_int_equal(twins_child_count(&f->h, "leaf1"), 0);
}

/* At most HUB_MAX_CHILD_MODULES module identities with twins per child device. */
static void test_child_modules_bound(void **state)
{
    struct fixture *f = *state;
    char dev[HUB_ID_SIZE], mod[HUB_ID_SIZE];
    assert_true(hub_child_address("devices/c1/modules/$edgeAgent", dev, mod));
    assert_string_equal(dev, "c1");
    assert_string_equal(mod, "$edgeAgent");
    static const char *const not_child[] = {"devices/c1",          "devices/c1/modules/",
                                            "devices//modules/m",  "devices/c1/modules/a/b",
                                            "devices/c1/x/m",      "mod1",
                                            "devices/c1/modulesX", NULL};
    for (size_t i = 0; not_child[i]; i++)
        assert_false(hub_child_address(not_child[i], dev, mod));
    char longid[300];
    memset(longid, 'a', sizeof(longid));
    memcpy(longid, "devices/", 8);
    strcpy(longid + 200, "/modules/m");
    assert_false(hub_child_address(longid, dev, mod));
    json_t *des = json_pack("{s:i}", "x", 1);
    char a[64];
    for (int i = 0; i < HUB_MAX_CHILD_MODULES; i++) {
        snprintf(a, sizeof(a), "devices/leaf2/modules/m%d", i);
        assert_int_equal(twins_cloud_desired(&f->h, a, des, 0, true), 0);
    }
    json_decref(des);
    assert_int_equal(twins_child_count(&f->h, "leaf2"), HUB_MAX_CHILD_MODULES);
    struct client c;
    cl_open(f, &c);
    assert_int_equal(cl_connect_child(&c, "leaf2", "one-more", 0, NULL),
                     MQTT_CONNACK_NOT_AUTHORIZED);
    cl_close(&c);
    /* one it has already is fine */
    cl_open(f, &c);
    assert_int_equal(cl_connect_child(&c, "leaf2", "m7", 0, NULL), 0);
    cl_close(&c);
    /* and another device's count is its own */
    cl_open(f, &c);
    assert_int_equal(cl_connect_child(&c, "leaf1", "one-more", 0, NULL), 0);
    cl_close(&c);
}

/* ------------------------------------------------------------------ relayed identities upstream */

/* A fake upstream broker on the test's loop: every connection's CONNECT answered (or refused, or
 * held, by client id), PUBLISHes recorded with the client id they came on and acknowledged. */
struct fake_conn {
    struct bufferevent *bev;
    struct lbuf in;
    char cid[64];
    bool held; /* CONNECT not answered yet */
};

struct fake_pub {
    char cid[64];
    char topic[300];
    char body[32];
};

static struct {
    int lfd;
    struct evconnlistener *l;
    struct fake_conn c[16];
    char refuse[64]; /* this client id gets CONNACK refuse_code */
    int refuse_code;
    char hold[64]; /* this client id's CONNACK waits for fake_up_release() */
    struct fake_pub pub[64];
    size_t n_pub;
} U;

static void fake_up_close(struct fake_conn *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    lbuf_free(&c->in);
    *c = (struct fake_conn){0};
}

static void fake_up_send(struct fake_conn *c, struct lbuf *b)
{
    bufferevent_write(c->bev, b->data, b->len);
    lbuf_free(b);
}

static void fake_up_packet(struct fake_conn *c, const struct mqtt_packet *p)
{
    struct lbuf b = LBUF_INIT;
    switch (p->type) {
    case MQTT_CONNECT:
        snprintf(c->cid, sizeof(c->cid), "%.*s", (int)p->connect.client_id.len,
                 p->connect.client_id.ptr);
        if (strcmp(c->cid, U.hold) == 0) {
            c->held = true;
            return;
        }
        assert_int_equal(
            mqtt_encode_connack(&b, false, strcmp(c->cid, U.refuse) == 0 ? U.refuse_code : 0), 0);
        break;
    case MQTT_SUBSCRIBE: {
        uint8_t q = 0;
        assert_int_equal(mqtt_encode_suback(&b, p->subscribe.packet_id, &q, 1), 0);
        break;
    }
    case MQTT_PUBLISH:
        if (strncmp((const char *)p->publish.topic.ptr, "$iothub/", 8) != 0 &&
            U.n_pub < ARRAY_SIZE(U.pub)) {
            struct fake_pub *r = &U.pub[U.n_pub++];
            snprintf(r->cid, sizeof(r->cid), "%s", c->cid);
            snprintf(r->topic, sizeof(r->topic), "%.*s", (int)p->publish.topic.len,
                     p->publish.topic.ptr);
            snprintf(r->body, sizeof(r->body), "%.*s", (int)p->publish.payload_len,
                     (const char *)p->publish.payload);
        }
        if (p->publish.qos)
            assert_int_equal(mqtt_encode_ack(&b, MQTT_PUBACK, p->publish.packet_id), 0);
        break;
    case MQTT_PINGREQ:
        mqtt_encode_empty(&b, MQTT_PINGRESP);
        break;
    default:
        break;
    }
    if (b.len)
        fake_up_send(c, &b);
    lbuf_free(&b);
}

static void fake_up_read(struct bufferevent *bev, void *arg)
{
    struct fake_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    assert_int_equal(lbuf_append(&c->in, evbuffer_pullup(in, (ev_ssize_t)n), n), 0);
    evbuffer_drain(in, n);
    for (;;) {
        size_t len;
        if (mqtt_frame((const uint8_t *)c->in.data, c->in.len, 0, &len) <= 0)
            return;
        struct mqtt_packet p;
        struct lerr e = {0};
        assert_int_equal(mqtt_decode((const uint8_t *)c->in.data, len, &p, &e), 0);
        fake_up_packet(c, &p);
        lbuf_consume(&c->in, len);
    }
}

static void fake_up_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        fake_up_close(arg);
}

static void fake_up_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int len, void *arg)
{
    struct hub *h = arg;
    for (size_t i = 0; i < ARRAY_SIZE(U.c); i++) {
        struct fake_conn *c = &U.c[i];
        if (c->bev)
            continue;
        c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(c->bev, fake_up_read, NULL, fake_up_event, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        return;
    }
    close(fd);
}

/* Every connection cut, as a network that went. */
static void fake_up_cut(void)
{
    for (size_t i = 0; i < ARRAY_SIZE(U.c); i++)
        fake_up_close(&U.c[i]);
}

static void fake_up_release(void)
{
    U.hold[0] = 0;
    for (size_t i = 0; i < ARRAY_SIZE(U.c); i++) {
        struct fake_conn *c = &U.c[i];
        if (!c->bev || !c->held)
            continue;
        c->held = false;
        struct lbuf b = LBUF_INIT;
        assert_int_equal(mqtt_encode_connack(&b, false, 0), 0);
        fake_up_send(c, &b);
    }
}

/* Connected (CONNACK sent) as cid. */
static bool fake_up_has(const char *cid)
{
    for (size_t i = 0; i < ARRAY_SIZE(U.c); i++)
        if (U.c[i].bev && !U.c[i].held && strcmp(U.c[i].cid, cid) == 0)
            return true;
    return false;
}

static void pump_until(struct fixture *f, bool (*cond)(const char *), const char *arg, int ms)
{
    int64_t until = ltime_now_ms() + ms;
    while (!cond(arg)) {
        if (ltime_now_ms() > until)
            fail_msg("timed out after %d ms waiting for %s", ms, arg);
        pump(f);
        poll(NULL, 0, 10);
    }
}

static bool n_pub_at_least(const char *n)
{
    return U.n_pub >= (size_t)atoi(n);
}

static const char *relay_routes =
    "{\"schemaVersion\": \"1.1\", \"routes\": {"
    "\"relay\": \"FROM /messages/* WHERE $connectionDeviceId = 'leaf1' INTO $upstream\","
    "\"up\": \"FROM /messages/modules/sender/outputs/up INTO $upstream\""
    "}}";

static int setup_relay(void **state)
{
    memset(&U, 0, sizeof(U));
    U.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    if (U.lfd < 0 || bind(U.lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        listen(U.lfd, 16) < 0 || getsockname(U.lfd, (struct sockaddr *)&sin, &sl) < 0)
        return -1;
    setup_upstream_port = ntohs(sin.sin_port);
    int r = setup_with(state, relay_routes, 8, 16);
    setup_upstream_port = 0;
    if (r < 0)
        return r;
    struct fixture *f = *state;
    U.l = evconnlistener_new(f->h.base, fake_up_accept, &f->h, LEV_OPT_CLOSE_ON_FREE, -1, U.lfd);
    return U.l ? 0 : -1;
}

static int teardown_relay(void **state)
{
    fake_up_cut();
    evconnlistener_free(U.l);
    pump(*state); /* bufferevents are finalised on the loop */
    return teardown(state);
}

/* A child edge device's module's telemetry (nested edge) waits at the head of its queue for that
 * identity's relay session while it is opening or retrying — also when the device link comes up
 * first — and goes over it, in order, with what came behind it after; when that session is
 * refused while the device link is up, the messages go as the edge device's with $.cdid/$.cmid
 * in the bag (docs/upstream.md "Telemetry follows its identity"). */
static void test_relay_waits_for_its_session(void **state)
{
    struct fixture *f = *state;
    pump_until(f, fake_up_has, DEVICE, 3000); /* the device link */
    struct client c, s;
    cl_open(f, &c);
    assert_int_equal(cl_connect_child(&c, "leaf1", "mod1", 0, NULL), 0);
    pump_until(f, fake_up_has, "leaf1/mod1", 3000); /* its relay session */
    expect_puback(&c,
                  cl_publish(&c, "devices/leaf1/modules/mod1/messages/events/", "m0", 1, false));
    pump_until(f, n_pub_at_least, "1", 3000);
    assert_string_equal(U.pub[0].cid, "leaf1/mod1");
    assert_string_equal(U.pub[0].body, "m0");
    assert_true(lstr_startswith(U.pub[0].topic, "devices/leaf1/modules/mod1/messages/events/"));

    /* the network goes: the link and the session both lose their connections; readings wait */
    fake_up_cut();
    snprintf(U.hold, sizeof(U.hold), "leaf1/mod1"); /* its next CONNECT is not answered yet */
    pump(f);
    const char *const ms[] = {"m1", "m2", "m3"};
    for (size_t i = 0; i < ARRAY_SIZE(ms); i++)
        expect_puback(
            &c, cl_publish(&c, "devices/leaf1/modules/mod1/messages/events/", ms[i], 1, false));
    cl_open_as(f, &s, "sender"); /* a module with no session (no SAS device key to derive from) */
    send_output(&s, "up", NULL, "s1");
    /* the device link is back first; the session's attempt is under way */
    pump_until(f, fake_up_has, DEVICE, 4000);
    pump_for(f, 700);
    assert_int_equal(U.n_pub, 1); /* nothing as the device; s1 waits behind m1 (one order) */
    fake_up_release();
    pump_until(f, n_pub_at_least, "5", 3000);
    for (size_t i = 0; i < ARRAY_SIZE(ms); i++) {
        assert_string_equal(U.pub[1 + i].cid, "leaf1/mod1");
        assert_string_equal(U.pub[1 + i].body, ms[i]);
    }
    assert_string_equal(U.pub[4].cid, DEVICE);
    assert_string_equal(U.pub[4].body, "s1");
    pump_for(f, 100);
    assert_int_equal(endpoint_field(f, "$upstream", "depth"), 0);

    /* cut again, and IoT Hub refuses the identity now: once the link is up and the session's
     * attempt refused, its readings go as the edge device's, naming who sent them */
    U.refuse_code = MQTT_CONNACK_NOT_AUTHORIZED;
    snprintf(U.refuse, sizeof(U.refuse), "leaf1/mod1");
    fake_up_cut();
    pump(f);
    expect_puback(&c,
                  cl_publish(&c, "devices/leaf1/modules/mod1/messages/events/", "m4", 1, false));
    expect_puback(&c,
                  cl_publish(&c, "devices/leaf1/modules/mod1/messages/events/", "m5", 1, false));
    pump_until(f, n_pub_at_least, "7", 5000);
    for (size_t i = 5; i < 7; i++) {
        assert_string_equal(U.pub[i].cid, DEVICE);
        assert_true(lstr_startswith(U.pub[i].topic, "devices/" DEVICE "/messages/events/"));
        assert_non_null(strstr(U.pub[i].topic, "%24.cdid=leaf1&%24.cmid=mod1"));
    }
    assert_string_equal(U.pub[5].body, "m4");
    assert_string_equal(U.pub[6].body, "m5");
    json_t *st = status(f);
    json_t *cs = json_object_get(json_object_get(st, "cloud"), "sessions");
    assert_int_equal(json_array_size(cs), 1);
    assert_false(json_is_true(json_object_get(json_array_get(cs, 0), "connected")));
    json_decref(st);
    cl_close(&s);
    cl_close(&c);
}

/* A removed or recreated device loses its connections, its persistent session and its twin; a
 * replaced key cuts the connections that used it (and only those); a reload that changes nothing
 * for it leaves it alone. */
static void test_device_identity_change(void **state)
{
    struct fixture *f = *state;
    struct client c;
    struct lerr err = {0};
    bool present;
    struct connect_opts o;
    (void)o;
    /* a persistent session with a twin */
    cl_open(f, &c);
    assert_int_equal(cl_connect_device(&c, "leaf1", 0, NULL, NULL, NULL, true), 0);
    assert_int_equal(cl_subscribe(&c, "$iothub/twin/res/#", 1), 1);
    cl_publish(&c, "$iothub/twin/PATCH/properties/reported/?$rid=1", "{\"a\":1}", 0, false);
    struct mqtt_packet p;
    assert_int_equal(cl_next(&c, &p, 2000), 1);

    /* 1. its secondary key replaced: the connection on the primary stays */
    f->leaf_keys[0][1][0] ^= 0xff;
    write_runtime(f, default_routes);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    expect_pingresp(&c);
    /* 2. its primary key replaced: cut; the old key is refused, the new one resumes */
    uint8_t old[32];
    memcpy(old, f->leaf_keys[0][0], 32);
    f->leaf_keys[0][0][0] ^= 0xff;
    write_runtime(f, default_routes);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    expect_closed(&c);
    cl_close(&c);
    expect_device_refused(f, "leaf1", 0, old, NULL, NULL, MQTT_CONNACK_NOT_AUTHORIZED);
    cl_open(f, &c);
    assert_int_equal(cl_connect_device(&c, "leaf1", 0, NULL, NULL, NULL, true), 0);
    /* 3. nothing changed: left alone */
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    expect_pingresp(&c);
    /* 4. removed: cut, refused from now on, its twin gone */
    f->leaf_gen[0] = NULL;
    write_runtime(f, default_routes);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    expect_closed(&c);
    cl_close(&c);
    expect_device_refused(f, "leaf1", 0, NULL, NULL, NULL, MQTT_CONNACK_NOT_AUTHORIZED);
    json_t *t = twins_get(&f->h, "devices/leaf1");
    assert_null(json_object_get(json_object_get(t, "reported"), "a"));
    json_decref(t);
    /* 5. added again: another identity, without the old session */
    f->leaf_gen[0] = "lgen2";
    write_runtime(f, default_routes);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    cl_open(f, &c);
    struct lbuf tok = LBUF_INIT;
    assert_int_equal(sas_token_make(IOTHUB "/devices/leaf1", f->leaf_keys[0][0], 32,
                                    (uint64_t)(ltime_now_ms() / 1000 + 60), NULL, &tok),
                     0);
    struct connect_opts po = {.client_id = "leaf1",
                              .username = IOTHUB "/leaf1/?api-version=2021-04-12",
                              .token = tok.data,
                              .persistent = true};
    assert_int_equal(cl_connect_opts(&c, "unused", &po, &present), 0);
    assert_false(present);
    lbuf_free(&tok);
    /* 6. recreated while connected: cut */
    f->leaf_gen[0] = "lgen3";
    write_runtime(f, default_routes);
    assert_int_equal(hub_load_runtime(&f->h, &err), 0);
    expect_closed(&c);
    cl_close(&c);
}

/* ------------------------------------------------------------------ leaf devices: X.509 */

static X509 *first_cert(const char *pem)
{
    STACK_OF(X509) *certs = NULL;
    struct lerr e = {0};
    assert_int_equal(ca_pem_read_certs(pem, strlen(pem), &certs, &e), 0);
    X509 *x = sk_X509_shift(certs);
    sk_X509_pop_free(certs, X509_free);
    return x;
}

static X509 *issue(struct ca *ca, const char *cn, const char *uri)
{
    struct ca_leaf_request req = {.kind = CA_LEAF_CLIENT, .common_name = cn, .uri = uri};
    struct ca_leaf leaf;
    struct lerr e = {0};
    assert_int_equal(ca_issue(ca, &req, ltime_now_ms() / 1000, &leaf, &e), 0);
    X509 *x = first_cert(leaf.cert_pem);
    ca_leaf_done(&leaf);
    return x;
}

static int x509_check(struct fixture *f, const char *device, X509 *cert)
{
    struct hub_credentials cr = {.device_id = device, .module_id = "", .cert = cert};
    struct hub_identity id;
    struct lerr e = {0};
    int r = auth_check(&f->h, &cr, &id, &e);
    if (r == 0) {
        assert_int_equal(id.kind, HUB_IDENTITY_DEVICE);
        assert_int_equal(id.method, HUB_AUTH_X509);
        hub_identity_clear(&id);
    }
    return r;
}

/* X.509 leaf devices: by thumbprint (SHA-1 or SHA-256), or CA-signed (CN = the device id, a chain
 * to the device CA bundle); a module's certificate, a stranger's, a wrong CN and no certificate
 * are refused. */
static void test_device_x509(void **state)
{
    struct fixture *f = *state;
    struct ca_config cc = {.device_id = DEVICE};
    struct ca *edge = NULL, *stranger = NULL;
    struct lerr e = {0};
    int64_t now = ltime_now_ms() / 1000;
    assert_int_equal(ca_open(&cc, now, &edge, &e), 0);
    assert_int_equal(ca_open(&cc, now, &stranger, &e), 0);
    struct lbuf bundle = LBUF_INIT;
    assert_int_equal(ca_issuers_bundle(edge, &bundle), 0);
    snprintf(f->device_ca, sizeof(f->device_ca), "%s/device-ca.pem", f->dir);
    assert_int_equal(lfs_write_atomic(f->device_ca, bundle.data, bundle.len, 0600), 0);
    lbuf_free(&bundle);

    X509 *good = issue(edge, "leafca", "azureiot://" IOTHUB "/devices/leafca");
    X509 *thumb = issue(stranger, "whatever", NULL);
    X509 *module = issue(edge, "leafca", "azureiot://" IOTHUB "/devices/" DEVICE "/modules/sender");
    X509 *wrong_cn = issue(edge, "leaf1", NULL);
    X509 *untrusted = issue(stranger, "leafca", NULL);
    char sha1[41], sha256[65];
    assert_int_equal(identity_cert_thumbprints(thumb, sha1, sha256), 0);
    strcpy(f->leaf_thumbprint, sha256);
    write_runtime(f, default_routes);
    assert_int_equal(hub_load_runtime(&f->h, &e), 0);

    assert_int_equal(x509_check(f, "leafca", good), 0);
    assert_int_equal(x509_check(f, "LEAFCA", good), 0);
    assert_int_equal(x509_check(f, "leafx", thumb), 0);
    assert_int_equal(x509_check(f, "leafx", good), -EACCES);    /* not its thumbprint */
    assert_int_equal(x509_check(f, "leafca", module), -EACCES); /* a module's certificate */
    assert_int_equal(x509_check(f, "leafca", wrong_cn), -EACCES);
    assert_int_equal(x509_check(f, "leafca", untrusted), -EACCES);
    assert_int_equal(x509_check(f, "leafca", NULL), -EACCES);
    assert_int_equal(x509_check(f, "leaf1", good), -EACCES); /* a SAS device wants its token */
    assert_int_equal(x509_check(f, "ghost", good), -EACCES);
    /* by its SHA-1 thumbprint too */
    strcpy(f->leaf_thumbprint, sha1);
    write_runtime(f, default_routes);
    assert_int_equal(hub_load_runtime(&f->h, &e), 0);
    assert_int_equal(x509_check(f, "leafx", thumb), 0);
    /* without the bundle, nothing is CA-signed */
    f->device_ca[0] = 0;
    write_runtime(f, default_routes);
    assert_int_equal(hub_load_runtime(&f->h, &e), 0);
    assert_int_equal(x509_check(f, "leafca", good), -EACCES);
    X509_free(good);
    X509_free(thumb);
    X509_free(module);
    X509_free(wrong_cn);
    X509_free(untrusted);
    ca_free(edge);
    ca_free(stranger);
}

/* ------------------------------------------------------------------ MQTT over WebSockets */

#define WS_REQUEST(path, extra)                                                                    \
    "GET " path " HTTP/1.1\r\nHost: " GATEWAY ":443\r\nUpgrade: websocket\r\n"                     \
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                       \
    "Sec-WebSocket-Version: 13\r\n" extra "\r\n"

/* A connection to the WebSocket head that sends request; the hub's HTTP answer (its head and
 * body) in *ret_answer. */
static void ws_open_raw(struct fixture *f, struct client *c, const char *request,
                        struct lbuf *ret_answer)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    *c = (struct client){.f = f,
                         .fd = sv[1],
                         .in = LBUF_INIT,
                         .pkt = LBUF_INIT,
                         .raw = LBUF_INIT,
                         .next_id = 1,
                         .ws_close = -1};
    ws_head_accept(&f->h, sv[0], false);
    pump(f);
    cl_send_raw(c, request, strlen(request));
    int64_t deadline = ltime_mono_ms() + 2000;
    /* the answer's head, then (an error) its body up to the hub's close */
    while (ltime_mono_ms() < deadline) {
        pump(f);
        char buf[4096];
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            assert_int_equal(lbuf_append(ret_answer, buf, (size_t)n), 0);
        } else if (n == 0) {
            c->eof = true;
            break;
        }
        const char *end = ret_answer->data ? strstr(ret_answer->data, "\r\n\r\n") : NULL;
        if (end && lstr_startswith(ret_answer->data, "HTTP/1.1 101 ")) {
            /* what follows the head is the hub's first frames */
            size_t head = (size_t)(end + 4 - ret_answer->data);
            assert_int_equal(lbuf_append(&c->raw, end + 4, ret_answer->len - head), 0);
            ret_answer->len = head;
            ret_answer->data[head] = 0;
            c->ws = true;
            return;
        }
        struct pollfd pfd = {c->fd, POLLIN, 0};
        poll(&pfd, 1, 5);
    }
}

static void cl_open_ws(struct fixture *f, struct client *c)
{
    struct lbuf a = LBUF_INIT;
    ws_open_raw(f, c, WS_REQUEST(WS_PATH, "Sec-WebSocket-Protocol: mqtt\r\n"), &a);
    assert_non_null(a.data);
    assert_true(lstr_startswith(a.data, "HTTP/1.1 101 Switching Protocols\r\n"));
    assert_non_null(strstr(a.data, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_non_null(strstr(a.data, "Sec-WebSocket-Protocol: mqtt\r\n"));
    lbuf_free(&a);
    assert_true(c->ws);
}

static void test_ws_route_and_deliver(void **state)
{
    struct fixture *f = *state;
    /* a receiver over WebSockets, a sender over TCP and one over WebSockets */
    struct client rc, sc, wsc;
    cl_open_ws(f, &rc);
    cl_connect(&rc, "receiver");
    assert_int_equal(cl_subscribe(&rc, "devices/" DEVICE "/modules/receiver/inputs/#", 1), 1);
    cl_open_as(f, &sc, "sender");
    send_output(&sc, "out1", "%24.mid=m-1&temp=21.5", "{\"temp\":21.5}");
    struct received r;
    expect_input(&rc, &r, true);
    assert_string_equal(r.input, "in1");
    assert_string_equal(r.body, "{\"temp\":21.5}");
    assert_true(prop_sys_is(&r, IOTHUB_PROP_MESSAGE_ID, "m-1"));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CONNECTION_MODULE_ID, "sender"));
    assert_string_equal(prop_app(&r, "temp"), "21.5");
    cl_close(&sc);
    /* the same module over WebSockets: a route's condition on a property, acknowledgements */
    cl_open_ws(f, &wsc);
    cl_connect(&wsc, "sender");
    send_output(&wsc, "cond", "temp=10", "cold");
    send_output(&wsc, "cond", "temp=30", "hot");
    expect_body(&rc, "hot", "hot");
    expect_nothing(&rc, 100);
    /* a large message, in many frames of the client's choosing: MQTT does not care */
    char big[12000]; /* below the tests' hub.max_packet_size */
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    struct lbuf pkt = LBUF_INIT, frames = LBUF_INIT;
    struct mqtt_publish pub = {
        .qos = 1,
        .packet_id = 77,
        .topic = mqtt_str_c("devices/" DEVICE "/modules/sender/messages/events/%24.on=out1"),
        .payload = (const uint8_t *)big,
        .payload_len = strlen(big),
    };
    assert_int_equal(mqtt_encode_publish(&pkt, &pub), 0);
    for (size_t off = 0; off < pkt.len; off += 1000)
        ws_frame(&frames, off == 0 ? 0x02 : (off + 1000 >= pkt.len ? 0x80 : 0x00), pkt.data + off,
                 MIN((size_t)1000, pkt.len - off));
    /* a ping between the fragments is answered */
    struct lbuf ping = LBUF_INIT;
    ws_frame(&ping, 0x89, "p", 1);
    cl_send_raw(&wsc, ping.data, ping.len);
    cl_send_raw(&wsc, frames.data, frames.len);
    lbuf_free(&ping);
    lbuf_free(&pkt);
    lbuf_free(&frames);
    expect_puback(&wsc, 77);
    assert_int_equal(wsc.pongs, 1);
    expect_input(&rc, &r, true);
    assert_int_equal(strlen(r.body), sizeof(r.body) - 1); /* the test keeps the first bytes */
    assert_int_equal(r.body[0], 'b');
    assert_int_equal(counter(f, "received"), 4);
    /* twin and PINGREQ over the frames too */
    expect_pingresp(&wsc);
    json_t *s = status(f);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(s, "connections"), "modules")), 2);
    json_decref(s);
    /* DISCONNECT: the hub closes with a close frame */
    struct lbuf b = LBUF_INIT;
    assert_int_equal(mqtt_encode_empty(&b, MQTT_DISCONNECT), 0);
    cl_send_buf(&wsc, &b);
    expect_closed(&wsc);
    assert_int_equal(wsc.ws_close, 1000);
    cl_close(&wsc);
    cl_close(&rc);
}

static void test_ws_refusals(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *request;
        const char *status, *why;
    } cases[] = {
        {WS_REQUEST("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n"), "404 Not Found", "/mqtt"},
        {"GET /$iothub/websocket HTTP/1.1\r\nHost: h\r\n\r\n", "426 Upgrade Required",
         "Upgrade: websocket"},
        {WS_REQUEST(WS_PATH, "Sec-WebSocket-Protocol: stomp\r\n"), "400 Bad Request", "\"mqtt\""},
        {WS_REQUEST(WS_PATH, ""), "400 Bad Request", "offered: none"},
        {"\x10\x20\x00\x04MQTT garbage\r\n\r\n", "400 Bad Request", "not an HTTP/1.1 request"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct client c;
        struct lbuf a = LBUF_INIT;
        ws_open_raw(f, &c, cases[i].request, &a);
        assert_non_null(a.data);
        if (!strstr(a.data, cases[i].status) || !strstr(a.data, cases[i].why))
            fail_msg("case %zu: %s", i, a.data);
        assert_true(c.eof); /* closed after the answer */
        lbuf_free(&a);
        cl_close(&c);
    }
    /* a request larger than WS_UPGRADE_MAX */
    struct lbuf big = LBUF_INIT, a = LBUF_INIT;
    lbuf_puts(&big, "GET /$iothub/websocket HTTP/1.1\r\nX-Filler: ");
    for (int i = 0; i < WS_UPGRADE_MAX; i++)
        lbuf_putc(&big, 'x');
    struct client c;
    ws_open_raw(f, &c, big.data, &a);
    assert_non_null(strstr(a.data, "431 "));
    lbuf_free(&a);
    lbuf_free(&big);
    cl_close(&c);
    assert_int_equal(counter(f, "malformed"), (long long)ARRAY_SIZE(cases) + 1);
    /* nothing else changed: a good one still works */
    cl_open_ws(f, &c);
    cl_connect(&c, "sender");
    cl_close(&c);
}

static void test_ws_auth_and_protocol_errors(void **state)
{
    struct fixture *f = *state;
    /* the MQTT head's authentication: a wrong key is CONNACK 5, then the close frame */
    struct client c;
    cl_open_ws(f, &c);
    uint8_t wrong[32] = {1};
    struct connect_opts o = {.key = wrong};
    assert_int_equal(cl_connect_opts(&c, "sender", &o, NULL), MQTT_CONNACK_NOT_AUTHORIZED);
    expect_closed(&c);
    assert_int_equal(c.ws_close, 1000);
    cl_close(&c);
    assert_int_equal(counter(f, "authFailures"), 1);
    /* a text frame: 1003 */
    cl_open_ws(f, &c);
    cl_connect(&c, "sender");
    struct lbuf b = LBUF_INIT;
    ws_frame(&b, 0x81, "hello", 5);
    cl_send_raw(&c, b.data, b.len);
    lbuf_reset(&b);
    expect_closed(&c);
    assert_int_equal(c.ws_close, 1003);
    cl_close(&c);
    /* a frame beyond the largest MQTT packet: 1009, before its payload is read */
    cl_open_ws(f, &c);
    cl_connect(&c, "sender");
    uint8_t hdr[] = {0x82, 0x80 | 127, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 2, 3, 4, 0x30};
    cl_send_raw(&c, hdr, sizeof(hdr));
    expect_closed(&c);
    assert_int_equal(c.ws_close, 1009);
    cl_close(&c);
    assert_int_equal(counter(f, "malformed"), 2);
    /* the peer's close frame: echoed, the connection ends (ungracefully for MQTT: no DISCONNECT) */
    cl_open_ws(f, &c);
    cl_connect(&c, "sender");
    ws_frame(&b, 0x88, "\x03\xe8", 2);
    cl_send_raw(&c, b.data, b.len);
    lbuf_free(&b);
    expect_closed(&c);
    assert_int_equal(c.ws_close, 1000);
    cl_close(&c);
    assert_int_equal(counter(f, "malformed"), 2);
}

/* ------------------------------------------------------------------ the HTTPS API */

/* A request as the Node SDK's ModuleClient.invokeMethod sends it: caller is the
 * x-ms-edge-moduleId header (NULL: none), token the Authorization header (NULL: none). */
static char *https_request(const char *path, const char *caller, const char *token,
                           const char *body)
{
    char *r = lstr_printf("POST %s HTTP/1.1\r\nHost: " GATEWAY "\r\n%s%s%s%s%s%s"
                          "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                          path, caller ? "x-ms-edge-moduleId: " : "", caller ? caller : "",
                          caller ? "\r\n" : "", token ? "Authorization: " : "", token ? token : "",
                          token ? "\r\n" : "", strlen(body), body);
    assert_non_null(r);
    return r;
}

/* A module's own token, as its workload API signs it. */
static char *module_token(struct fixture *f, const char *module)
{
    struct lbuf t = LBUF_INIT;
    make_token(f, module, NULL, ltime_now_ms() / 1000 + 3600, &t);
    return lbuf_steal(&t);
}

/* A connection to the WebSocket head, for HTTPS API requests. */
static void https_open(struct fixture *f, struct client *c)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    *c = (struct client){.f = f, .fd = sv[1], .in = LBUF_INIT, .pkt = LBUF_INIT, .raw = LBUF_INIT};
    ws_head_accept(&f->h, sv[0], false);
    pump(f);
}

/* The next answer on c within timeout_ms: its status (-1: none in time, 0: closed), the head in
 * *ret_head (may be NULL), the body parsed in *ret_body. */
static int https_answer(struct client *c, int timeout_ms, char **ret_head, json_t **ret_body)
{
    int64_t deadline = ltime_mono_ms() + timeout_ms;
    for (;;) {
        const char *end = c->in.data ? strstr(c->in.data, "\r\n\r\n") : NULL;
        if (end) {
            size_t head = (size_t)(end + 4 - c->in.data);
            const char *cl = strstr(c->in.data, "Content-Length: ");
            size_t blen = cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0;
            if (c->in.len >= head + blen) {
                int status = atoi(c->in.data + 9);
                if (ret_body) /* a text answer (the WebSocket head's) as {"message": text} */
                    if (!(*ret_body = json_loadb(c->in.data + head, blen, 0, NULL)))
                        *ret_body = json_pack("{s:s%}", "message", c->in.data + head, blen);
                if (ret_head)
                    *ret_head = lstr_ndup(c->in.data, head);
                memmove(c->in.data, c->in.data + head + blen, c->in.len - head - blen);
                c->in.len -= head + blen;
                c->in.data[c->in.len] = 0;
                return status;
            }
        }
        if (c->eof)
            return 0;
        if (ltime_mono_ms() > deadline)
            return -1;
        pump(c->f);
        char buf[4096];
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0)
            assert_int_equal(lbuf_append(&c->in, buf, (size_t)n), 0);
        else if (n == 0)
            c->eof = true;
        else
            poll(NULL, 0, 5);
    }
}

/* Send text on a new connection; the answer's status and body (closes the connection). */
static int https_once(struct fixture *f, const char *text, char **ret_head, json_t **ret_body)
{
    struct client c;
    https_open(f, &c);
    cl_send_raw(&c, text, strlen(text));
    int st = https_answer(&c, 2000, ret_head, ret_body);
    cl_close(&c);
    return st;
}

/* Module to module and to a leaf device, as the Node SDK's ModuleClient.invokeMethod calls them:
 * the target's status and payload come back; not connected is 404; no answer in time 504; the
 * connection stays open between calls (keep-alive). */
static void test_https_invoke(void **state)
{
    struct fixture *f = *state;
    struct client rc, api, leaf;
    cl_open_as(f, &rc, "receiver");
    assert_int_equal(cl_subscribe(&rc, "$iothub/methods/POST/#", 1), 1);
    _cleanup_free_ char *tok = module_token(f, "sender");
    https_open(f, &api);
    _cleanup_free_ char *rq = https_request(
        "/twins/" DEVICE "/modules/receiver/methods?api-version=2021-04-12", DEVICE "/sender", tok,
        "{\"methodName\":\"ping\",\"payload\":{\"x\":[1,2]},\"responseTimeoutInSeconds\":5,"
        "\"connectTimeoutInSeconds\":0}");
    cl_send_raw(&api, rq, strlen(rq));
    struct mqtt_packet p;
    assert_int_equal(cl_next(&rc, &p, 2000), 1);
    char topic[128];
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_true(lstr_startswith(topic, "$iothub/methods/POST/ping/?$rid="));
    assert_true(p.publish.payload_len == 11 && memcmp(p.publish.payload, "{\"x\":[1,2]}", 11) == 0);
    char res[128];
    snprintf(res, sizeof(res), "$iothub/methods/res/201/?$rid=%s", strchr(topic, '=') + 1);
    cl_publish(&rc, res, "{\"pong\":true}", 0, false);
    json_t *body = NULL;
    assert_int_equal(https_answer(&api, 2000, NULL, &body), 200);
    assert_int_equal(json_integer_value(json_object_get(body, "status")), 201);
    assert_true(json_is_true(json_object_get(json_object_get(body, "payload"), "pong")));
    json_decref(body);
    /* on the same connection: a module that is not connected, then one that does not answer */
    free(rq);
    rq = https_request("/twins/" DEVICE "/modules/other/methods", DEVICE "/sender", tok,
                       "{\"methodName\":\"ping\"}");
    cl_send_raw(&api, rq, strlen(rq));
    assert_int_equal(https_answer(&api, 2000, NULL, &body), 404);
    assert_non_null(strstr(ljson_str(body, "message"), "other is not connected"));
    assert_true(lstr_startswith(ljson_str(body, "Message"), "ErrorCode:DeviceNotFound;"));
    json_decref(body);
    free(rq);
    rq = https_request("/twins/" DEVICE "/modules/receiver/methods", DEVICE "/sender", tok,
                       "{\"methodName\":\"slow\",\"responseTimeoutInSeconds\":1}");
    cl_send_raw(&api, rq, strlen(rq));
    assert_int_equal(cl_next(&rc, &p, 2000), 1);
    int64_t t0 = ltime_mono_ms();
    assert_int_equal(https_answer(&api, 3000, NULL, &body), 504);
    assert_true(ltime_mono_ms() - t0 >= 800);
    assert_non_null(strstr(ljson_str(body, "message"), "did not answer method slow within 1 s"));
    json_decref(body);
    /* a leaf device behind the gateway: /twins/{deviceId}/methods */
    cl_open_device(f, &leaf, "leaf1");
    assert_int_equal(cl_subscribe(&leaf, "$iothub/methods/POST/#", 1), 1);
    free(rq);
    rq = https_request("/twins/leaf1/methods", DEVICE "/sender", tok,
                       "{\"methodName\":\"reboot\",\"payload\":\"now\"}");
    cl_send_raw(&api, rq, strlen(rq));
    assert_int_equal(cl_next(&leaf, &p, 2000), 1);
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    assert_true(lstr_startswith(topic, "$iothub/methods/POST/reboot/?$rid="));
    snprintf(res, sizeof(res), "$iothub/methods/res/200/?$rid=%s", strchr(topic, '=') + 1);
    cl_publish(&leaf, res, "\"done\"", 0, false);
    assert_int_equal(https_answer(&api, 2000, NULL, &body), 200);
    assert_int_equal(json_integer_value(json_object_get(body, "status")), 200);
    assert_string_equal(json_string_value(json_object_get(body, "payload")), "done");
    json_decref(body);
    /* the caller goes away before the answer: the call is forgotten, a late answer harmless */
    free(rq);
    rq = https_request("/twins/" DEVICE "/modules/receiver/methods", DEVICE "/sender", tok,
                       "{\"methodName\":\"gone\"}");
    cl_send_raw(&api, rq, strlen(rq));
    assert_int_equal(cl_next(&rc, &p, 2000), 1);
    snprintf(topic, sizeof(topic), "%.*s", (int)p.publish.topic.len, p.publish.topic.ptr);
    cl_close(&api);
    snprintf(res, sizeof(res), "$iothub/methods/res/200/?$rid=%s", strchr(topic, '=') + 1);
    cl_publish(&rc, res, "{}", 0, false);
    pump(f);
    cl_close(&leaf);
    cl_close(&rc);
    assert_int_equal(counter(f, "authFailures"), 0);
}

/* What IoT Edge refuses, with the status and a reason: nothing reaches the target. */
static void test_https_refusals(void **state)
{
    struct fixture *f = *state;
    struct client rc;
    cl_open_as(f, &rc, "receiver");
    assert_int_equal(cl_subscribe(&rc, "$iothub/methods/POST/#", 1), 1);
    _cleanup_free_ char *tok = module_token(f, "sender");
    _cleanup_free_ char *other_tok = module_token(f, "other");
    uint8_t wrong[32] = {9};
    struct lbuf wt = LBUF_INIT;
    make_token(f, "sender", wrong, ltime_now_ms() / 1000 + 3600, &wt);
    struct lbuf leaf_tok = LBUF_INIT;
    assert_int_equal(sas_token_make(IOTHUB "/devices/leaf1", f->leaf_keys[0][0], 32,
                                    (uint64_t)(ltime_now_ms() / 1000 + 3600), NULL, &leaf_tok),
                     0);
    const char *m = "/twins/" DEVICE "/modules/receiver/methods";
    const char *good = "{\"methodName\":\"ping\"}";
    struct {
        char *text;
        int status;
        const char *why;
    } cases[] = {
        {https_request(m, DEVICE "/sender", NULL, good), 401, "Authorization"},
        {https_request(m, NULL, tok, good), 401, "x-ms-edge-moduleId"},
        /* impersonation: sender's token claiming to be other, other's token claiming sender */
        {https_request(m, DEVICE "/other", tok, good), 401, "module other"},
        {https_request(m, DEVICE "/sender", other_tok, good), 401, "module sender"},
        {https_request(m, DEVICE "/sender", wt.data, good), 401, "module sender"},
        {https_request(m, "dev2/sender", tok, good), 401, "unknown device"},
        {https_request(m, DEVICE "/nobody", tok, good), 401, "unknown module"},
        /* a leaf device is authentic, but only modules invoke methods through the gateway */
        {https_request(m, "leaf1", leaf_tok.data, good), 403, "only modules"},
        /* targets that are not there */
        {https_request("/twins/dev2/modules/receiver/methods", DEVICE "/sender", tok, good), 404,
         "not this edge device"},
        {https_request("/twins/" DEVICE "/modules/nobody/methods", DEVICE "/sender", tok, good),
         404, "no module nobody"},
        {https_request("/twins/leaf9/methods", DEVICE "/sender", tok, good), 404,
         "no leaf device leaf9"},
        {https_request("/twins/" DEVICE "/methods", DEVICE "/sender", tok, good), 404,
         "no leaf device " DEVICE},
        {https_request("/twins/" DEVICE "/modules/receiver", DEVICE "/sender", tok, good), 404,
         "no such resource"},
        {https_request(m, DEVICE "/sender", tok, "{\"methodName\":\"a+b\"}"), 400, "methodName"},
        {https_request(m, DEVICE "/sender", tok, "{"), 400, "body:"},
        {lstr_printf("GET %s HTTP/1.1\r\nHost: h\r\n\r\n", m), 405, "POST only"},
        {lstr_printf("POST %s HTTP/1.1\r\nx-ms-edge-moduleId: " DEVICE "/sender\r\n"
                     "Authorization: %s\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
                     m, tok),
         415, "text/plain"},
        {lstr_printf("POST %s HTTP/1.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n",
                     m, HTTPS_MAX_BODY + 1),
         413, "larger than"},
        {lstr_printf("POST %s HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", m),
         400, "not an HTTP/1.1 request"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *head = NULL;
        json_t *body = NULL;
        int st = https_once(f, cases[i].text, &head, &body);
        const char *msg = ljson_str(body, "message");
        if (st != cases[i].status || !msg || !strstr(msg, cases[i].why))
            fail_msg("case %zu: %d %s", i, st, msg ? msg : "(no message)");
        if (st == 405)
            assert_non_null(strstr(head, "Allow: POST\r\n"));
        free(head);
        json_decref(body);
        free(cases[i].text);
    }
    expect_nothing(&rc, 100); /* no call reached the target */
    assert_int_equal(counter(f, "authFailures"), 7);
    lbuf_free(&wt);
    lbuf_free(&leaf_tok);
    cl_close(&rc);
    /* the WebSocket upgrade is as before on the same port */
    struct client c;
    cl_open_ws(f, &c);
    cl_connect(&c, "sender");
    cl_close(&c);
}

/* ------------------------------------------------------------------ AMQP (head_amqp.c) */

/* A client of the AMQP head, Proton's connection engine on the other end of a socketpair, as the
 * Azure IoT SDKs' Amqp transports drive it: no SASL, a put-token on $cbs, links on the IoT Hub
 * addresses. Every message the hub sends is kept (rx) and, unless hold, accepted. */
struct amsg {
    pn_message_t *m;
    pn_link_t *link;
    pn_delivery_t *d;
};

struct aclient {
    struct fixture *f;
    int fd;
    pn_connection_driver_t d;
    pn_session_t *s;
    pn_message_t *m;
    struct amsg rx[64];
    size_t n_rx;
    bool closed;
    bool hold; /* leave received deliveries unsettled */
    uint64_t tag;
    pn_link_t *cbs_tx, *cbs_rx;
    /* over WebSockets (AMQPWSB10): Proton's bytes go out in masked binary frames, the hub's
     * frames are unframed into wsin before Proton reads them */
    bool ws;
    struct lbuf wsraw, wsin;
};

/* The hub's frames in c->wsraw (unmasked, as a server sends them) → their payload in c->wsin. */
static void ac_unframe(struct aclient *c)
{
    for (;;) {
        const uint8_t *p = (const uint8_t *)c->wsraw.data;
        size_t n = c->wsraw.len, hn = 2;
        if (n < 2)
            return;
        uint64_t len = p[1] & 0x7f;
        if (len == 126) {
            if (n < 4)
                return;
            len = (uint64_t)p[2] << 8 | p[3];
            hn = 4;
        } else if (len == 127) {
            if (n < 10)
                return;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            hn = 10;
        }
        if (n < hn + len)
            return;
        uint8_t op = p[0] & 0x0f;
        if (op == 0x2 || op == 0x0)
            assert_int_equal(lbuf_append(&c->wsin, p + hn, (size_t)len), 0);
        else if (op == 0x8)
            c->closed = true;
        lbuf_consume(&c->wsraw, hn + (size_t)len);
    }
}

static void ac_io(struct aclient *c)
{
    pn_event_t *e;
    while ((e = pn_connection_driver_next_event(&c->d))) {
        switch (pn_event_type(e)) {
        case PN_DELIVERY: {
            pn_delivery_t *d = pn_event_delivery(e);
            pn_link_t *l = pn_delivery_link(d);
            if (!pn_link_is_receiver(l) || !pn_delivery_readable(d) || pn_delivery_partial(d))
                break;
            size_t n = pn_delivery_pending(d);
            char *buf = malloc(n + 1);
            assert_non_null(buf);
            assert_int_equal(pn_link_recv(l, buf, n), (ssize_t)n);
            pn_link_advance(l);
            assert_true(c->n_rx < ARRAY_SIZE(c->rx));
            struct amsg *a = &c->rx[c->n_rx++];
            a->m = pn_message();
            assert_int_equal(pn_message_decode(a->m, buf, n), 0);
            free(buf);
            a->link = l;
            a->d = d;
            if (!c->hold && !pn_delivery_settled(d)) {
                pn_delivery_update(d, PN_ACCEPTED);
                pn_delivery_settle(d);
                a->d = NULL;
            } else if (pn_delivery_settled(d)) {
                pn_delivery_settle(d);
                a->d = NULL;
            }
            pn_link_flow(l, 1);
            break;
        }
        case PN_CONNECTION_REMOTE_CLOSE:
        case PN_TRANSPORT_CLOSED:
            c->closed = true;
            break;
        default:
            break;
        }
    }
    for (;;) {
        pn_bytes_t w = pn_connection_driver_write_buffer(&c->d);
        if (!w.size || c->fd < 0)
            break;
        if (c->ws) {
            struct lbuf b = LBUF_INIT;
            ws_frame(&b, 0x82, w.start, w.size);
            assert_int_equal(write(c->fd, b.data, b.len), (ssize_t)b.len);
            lbuf_free(&b);
            pn_connection_driver_write_done(&c->d, w.size);
            continue;
        }
        ssize_t n = write(c->fd, w.start, w.size);
        if (n <= 0)
            break;
        pn_connection_driver_write_done(&c->d, (size_t)n);
    }
    while (c->ws && c->fd >= 0) {
        char buf[8192];
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n == 0)
            c->closed = true;
        if (n <= 0)
            break;
        assert_int_equal(lbuf_append(&c->wsraw, buf, (size_t)n), 0);
        ac_unframe(c);
    }
    while (c->ws && c->wsin.len) {
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->d);
        if (!rb.size)
            break;
        size_t n = MIN(rb.size, c->wsin.len);
        memcpy(rb.start, c->wsin.data, n);
        lbuf_consume(&c->wsin, n);
        pn_connection_driver_read_done(&c->d, n);
    }
    for (; !c->ws;) {
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->d);
        if (!rb.size || c->fd < 0)
            break;
        ssize_t n = read(c->fd, rb.start, rb.size);
        if (n == 0) {
            pn_connection_driver_read_close(&c->d);
            c->closed = true;
        }
        if (n <= 0)
            break;
        pn_connection_driver_read_done(&c->d, (size_t)n);
    }
}

/* Run both ends until want messages arrived (or the connection closed), at most ms. */
static void ac_run(struct aclient *c, size_t want, int ms)
{
    int64_t until = ltime_now_ms() + ms;
    do {
        for (int i = 0; i < 4; i++) {
            ac_io(c);
            pump(c->f);
        }
        ac_io(c);
        if (c->n_rx >= want && want)
            return;
        if (c->closed && want)
            return;
        poll(NULL, 0, 5);
    } while (ltime_now_ms() < until);
}

static void ac_start(struct fixture *f, struct aclient *c);

static void ac_open(struct fixture *f, struct aclient *c)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    memset(c, 0, sizeof(*c));
    c->f = f;
    c->fd = sv[1];
    amqp_head_accept(&f->h, sv[0], false);
    ac_start(f, c);
}

/* Through the WebSocket head: the upgrade with subprotocol AMQPWSB10, then AMQP in frames. */
static void ac_open_ws(struct fixture *f, struct aclient *c)
{
    struct client up;
    struct lbuf a = LBUF_INIT;
    ws_open_raw(f, &up, WS_REQUEST(WS_PATH, "Sec-WebSocket-Protocol: AMQPWSB10\r\n"), &a);
    assert_non_null(a.data);
    if (!lstr_startswith(a.data, "HTTP/1.1 101 ") || !strstr(a.data, "AMQPWSB10"))
        fail_msg("upgrade: %s", a.data);
    lbuf_free(&a);
    memset(c, 0, sizeof(*c));
    c->f = f;
    c->fd = up.fd;
    c->ws = true;
    c->wsraw = up.raw; /* frames that came behind the answer */
    up.raw = (struct lbuf)LBUF_INIT;
    lbuf_free(&up.in);
    lbuf_free(&up.pkt);
    ac_unframe(c);
    ac_start(f, c);
}

static void ac_start(struct fixture *f, struct aclient *c)
{
    assert_int_equal(pn_connection_driver_init(&c->d, NULL, NULL), 0);
    c->m = pn_message();
    pn_connection_set_container(c->d.connection, "test-client");
    pn_connection_set_hostname(c->d.connection, GATEWAY);
    pn_connection_open(c->d.connection);
    c->s = pn_session(c->d.connection);
    pn_session_open(c->s);
    c->cbs_tx = pn_sender(c->s, "cbs-tx");
    pn_terminus_set_address(pn_link_target(c->cbs_tx), "$cbs");
    pn_link_open(c->cbs_tx);
    c->cbs_rx = pn_receiver(c->s, "cbs-rx");
    pn_terminus_set_address(pn_link_source(c->cbs_rx), "$cbs");
    pn_link_open(c->cbs_rx);
    pn_link_flow(c->cbs_rx, 10);
    ac_run(c, 0, 50);
}

static void ac_close(struct aclient *c)
{
    for (size_t i = 0; i < c->n_rx; i++)
        pn_message_free(c->rx[i].m);
    pn_message_free(c->m);
    pn_connection_driver_destroy(&c->d);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    lbuf_free(&c->wsraw);
    lbuf_free(&c->wsin);
    pump(c->f);
}

static pn_link_t *ac_link(struct aclient *c, bool sender, const char *address)
{
    static int n;
    char name[32];
    snprintf(name, sizeof(name), "link-%d", ++n);
    pn_link_t *l = sender ? pn_sender(c->s, name) : pn_receiver(c->s, name);
    pn_terminus_set_address(sender ? pn_link_target(l) : pn_link_source(l), address);
    pn_link_open(l);
    if (!sender)
        pn_link_flow(l, 20);
    ac_run(c, 0, 50);
    return l;
}

/* c->m on l; unsettled (at least once) unless presettled. */
static pn_delivery_t *ac_send(struct aclient *c, pn_link_t *l, bool presettled)
{
    uint64_t tag = ++c->tag;
    pn_delivery_t *d = pn_delivery(l, pn_dtag((const char *)&tag, sizeof(tag)));
    assert_true(pn_message_send(c->m, l, NULL) > 0);
    if (presettled)
        pn_delivery_settle(d);
    return d;
}

static void ac_str_map(pn_data_t *d, const char *const *kv, bool symbols)
{
    pn_data_put_map(d);
    pn_data_enter(d);
    for (size_t i = 0; kv[i]; i += 2) {
        if (symbols)
            pn_data_put_symbol(d, pn_bytes(strlen(kv[i]), kv[i]));
        else
            pn_data_put_string(d, pn_bytes(strlen(kv[i]), kv[i]));
        pn_data_put_string(d, pn_bytes(strlen(kv[i + 1]), kv[i + 1]));
    }
    pn_data_exit(d);
}

/* Put token for audience; the answer's status-code (-1: none). */
static int ac_put_token(struct aclient *c, const char *audience, const char *token)
{
    pn_message_clear(c->m);
    pn_msgid_t id = {.type = PN_STRING};
    id.u.as_bytes = pn_bytes(4, "pt-1");
    pn_message_set_id(c->m, id);
    pn_message_set_address(c->m, "$cbs");
    pn_message_set_reply_to(c->m, "cbs");
    const char *props[] = {"operation", "put-token", "type", "servicebus.windows.net:sastoken",
                           "name",      audience,    NULL};
    ac_str_map(pn_message_properties(c->m), props, false);
    pn_data_put_string(pn_message_body(c->m), pn_bytes(strlen(token), token));
    size_t before = c->n_rx;
    ac_send(c, c->cbs_tx, false);
    ac_run(c, before + 1, 2000);
    if (c->n_rx <= before)
        return -1;
    pn_message_t *a = c->rx[before].m;
    pn_msgid_t cid = pn_message_get_correlation_id(a);
    assert_int_equal(cid.type, PN_STRING);
    assert_memory_equal(cid.u.as_bytes.start, "pt-1", 4);
    pn_data_t *p = pn_message_properties(a);
    pn_data_rewind(p);
    assert_true(pn_data_next(p));
    size_t n = pn_data_get_map(p);
    pn_data_enter(p);
    int status = -1;
    for (size_t i = 0; i < n; i += 2) {
        pn_data_next(p);
        pn_bytes_t k = pn_data_get_string(p);
        pn_data_next(p);
        if (k.size == 11 && memcmp(k.start, "status-code", 11) == 0)
            status = pn_data_get_int(p);
    }
    pn_data_exit(p);
    return status;
}

static void ac_auth(struct aclient *c, const char *module)
{
    struct lbuf tok = LBUF_INIT;
    make_token(c->f, module, NULL, ltime_now_ms() / 1000 + 3600, &tok);
    char aud[256];
    snprintf(aud, sizeof(aud), IOTHUB "/devices/" DEVICE "/modules/%s", module);
    assert_int_equal(ac_put_token(c, aud, tok.data), 200);
    lbuf_free(&tok);
}

static bool ac_link_refused(struct aclient *c, pn_link_t *l)
{
    ac_run(c, 0, 100);
    return (pn_link_state(l) & PN_REMOTE_CLOSED) != 0;
}

/* The string value of key in map d (application properties or annotations), or NULL. */
static const char *ac_map_str(pn_data_t *d, const char *key)
{
    static char v[256];
    pn_data_rewind(d);
    if (!pn_data_next(d) || pn_data_type(d) != PN_MAP)
        return NULL;
    size_t n = pn_data_get_map(d);
    pn_data_enter(d);
    const char *r = NULL;
    for (size_t i = 0; i < n; i += 2) {
        pn_data_next(d);
        pn_bytes_t k = pn_data_type(d) == PN_SYMBOL ? pn_data_get_symbol(d) : pn_data_get_string(d);
        pn_data_next(d);
        if (k.size == strlen(key) && memcmp(k.start, key, k.size) == 0) {
            pn_type_t t = pn_data_type(d);
            if (t == PN_STRING || t == PN_SYMBOL) {
                pn_bytes_t b = t == PN_STRING ? pn_data_get_string(d) : pn_data_get_symbol(d);
                snprintf(v, sizeof(v), "%.*s", (int)b.size, b.start);
            } else if (t == PN_INT) {
                snprintf(v, sizeof(v), "%d", pn_data_get_int(d));
            } else if (t == PN_LONG) {
                snprintf(v, sizeof(v), "%lld", (long long)pn_data_get_long(d));
            } else {
                snprintf(v, sizeof(v), "?");
            }
            r = v;
            break;
        }
    }
    pn_data_exit(d);
    return r;
}

static const char *ac_body(pn_message_t *m)
{
    static char v[2048];
    pn_data_t *b = pn_message_body(m);
    pn_data_rewind(b);
    if (!pn_data_next(b))
        return "";
    pn_bytes_t x = pn_data_type(b) == PN_BINARY ? pn_data_get_binary(b) : pn_data_get_string(b);
    snprintf(v, sizeof(v), "%.*s", (int)x.size, x.start);
    return v;
}

/* A bad token, another module's token and links outside its identity are refused; a good
 * put-token authenticates, a renewal for the same identity is taken, one for another refused. */
static void test_amqp_auth(void **state)
{
    struct fixture *f = *state;
    struct aclient c;
    /* links before a put-token */
    ac_open(f, &c);
    pn_link_t *l = ac_link(&c, true, "/devices/" DEVICE "/modules/sender/messages/events");
    assert_true(ac_link_refused(&c, l));
    /* a token of the wrong key: 401, and the connection goes */
    uint8_t bad[32] = {9};
    struct lbuf tok = LBUF_INIT;
    make_token(f, "sender", bad, ltime_now_ms() / 1000 + 3600, &tok);
    long long failures = counter(f, "authFailures");
    assert_int_equal(ac_put_token(&c, IOTHUB "/devices/" DEVICE "/modules/sender", tok.data), 401);
    ac_run(&c, 1000, 1500); /* closed a moment after the answer */
    assert_true(c.closed);
    assert_true(counter(f, "authFailures") > failures);
    lbuf_free(&tok);
    ac_close(&c);
    /* sender's token for the audience of receiver: the token names another resource */
    ac_open(f, &c);
    make_token(f, "sender", NULL, ltime_now_ms() / 1000 + 3600, &tok);
    assert_int_equal(ac_put_token(&c, IOTHUB "/devices/" DEVICE "/modules/receiver", tok.data),
                     401);
    ac_close(&c);
    /* an expired token */
    ac_open(f, &c);
    lbuf_reset(&tok);
    make_token(f, "sender", NULL, ltime_now_ms() / 1000 - 10, &tok);
    assert_int_equal(ac_put_token(&c, IOTHUB "/devices/" DEVICE "/modules/sender", tok.data), 401);
    ac_close(&c);
    lbuf_free(&tok);
    /* a good one; then another module's address is refused, its own taken */
    ac_open(f, &c);
    ac_auth(&c, "sender");
    l = ac_link(&c, true, "/devices/" DEVICE "/modules/receiver/messages/events");
    assert_true(ac_link_refused(&c, l));
    l = ac_link(&c, true, "/devices/other-device/modules/sender/messages/events");
    assert_true(ac_link_refused(&c, l));
    l = ac_link(&c, true, "/devices/" DEVICE "/modules/sender/messages/events");
    assert_false(ac_link_refused(&c, l));
    /* an empty transfer (Proton's decoder would assert on it) is rejected, nothing more */
    uint64_t tag = 99;
    pn_delivery_t *empty = pn_delivery(l, pn_dtag((const char *)&tag, sizeof(tag)));
    pn_link_advance(l);
    ac_run(&c, 0, 200);
    assert_int_equal(pn_delivery_remote_state(empty), PN_REJECTED);
    assert_false(c.closed);
    /* renewal for the same identity: 200; a token for another identity on it: 401 */
    ac_auth(&c, "sender");
    make_token(f, "other", NULL, ltime_now_ms() / 1000 + 3600, &tok);
    assert_int_equal(ac_put_token(&c, IOTHUB "/devices/" DEVICE "/modules/other", tok.data), 401);
    lbuf_free(&tok);
    assert_false(c.closed);
    json_t *st = status(f);
    char *text = json_dumps(st, 0);
    assert_non_null(strstr(text, "\"clientId\": \"" DEVICE "/sender\""));
    assert_non_null(strstr(text, "\"transport\": \"amqp\""));
    free(text);
    json_decref(st);
    /* IoT Edge's count of failed connections, by the identity each claimed: the wrong key and
     * the expired token for sender, sender's token for receiver; the second identity on an
     * authenticated connection is no failed connection */
    struct lbuf b = LBUF_INIT;
    assert_int_equal(hub_exposition(&f->h, &b), 0);
    assert_true(has_line(b.data, "edgehub_client_connect_failed_total{",
                         "id=\"" DEVICE "/sender\" reason=\"not_authenticated\" protocol=\"amqp\"",
                         "2"));
    assert_true(has_line(b.data, "edgehub_client_connect_failed_total{",
                         "id=\"" DEVICE "/receiver\" reason=\"not_authenticated\" "
                         "protocol=\"amqp\"",
                         "1"));
    assert_null(strstr(b.data, "id=\"" DEVICE "/other\",reason"));
    lbuf_free(&b);
    ac_close(&c);
}

/* Telemetry over AMQP reaches an MQTT module's input with its properties, accepted once
 * durable; an MQTT module's output reaches an AMQP module's input (x-opt-input-name), leaves the
 * queue when the client accepts it and comes again when the client goes without settling. */
static void test_amqp_route_both_ways(void **state)
{
    struct fixture *f = *state;
    struct client rc;
    cl_open_receiver(f, &rc);
    struct aclient a;
    ac_open(f, &a);
    ac_auth(&a, "sender");
    pn_link_t *ev = ac_link(&a, true, "/devices/" DEVICE "/modules/sender/messages/events");
    pn_message_clear(a.m);
    pn_msgid_t id = {.type = PN_STRING};
    id.u.as_bytes = pn_bytes(3, "m-1");
    pn_message_set_id(a.m, id);
    pn_message_set_content_type(a.m, "application/json");
    const char *props[] = {"iothub-outputname", "out1", "temp", "21.5", NULL};
    ac_str_map(pn_message_properties(a.m), props, false);
    pn_message_set_inferred(a.m, true);
    pn_data_put_binary(pn_message_body(a.m), pn_bytes(13, "{\"temp\":21.5}"));
    pn_delivery_t *d = ac_send(&a, ev, false);
    ac_run(&a, 0, 200);
    assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
    struct received r;
    expect_input(&rc, &r, true);
    assert_string_equal(r.input, "in1");
    assert_string_equal(r.body, "{\"temp\":21.5}");
    assert_true(prop_sys_is(&r, IOTHUB_PROP_MESSAGE_ID, "m-1"));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CONTENT_TYPE, "application/json"));
    assert_true(prop_sys_is(&r, IOTHUB_PROP_CONNECTION_MODULE_ID, "sender"));
    assert_string_equal(prop_app(&r, "temp"), "21.5");
    assert_null(prop_app(&r, "iothub-outputname"));
    /* a message that matches no route is accepted all the same */
    const char *nowhere[] = {"iothub-outputname", "nowhere", NULL};
    pn_message_clear(a.m);
    ac_str_map(pn_message_properties(a.m), nowhere, false);
    d = ac_send(&a, ev, false);
    ac_run(&a, 0, 200);
    assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
    ac_close(&a);
    cl_close(&rc);

    /* the other way: an MQTT sender, the AMQP receiver */
    struct client sc;
    cl_open_as(f, &sc, "sender");
    struct aclient b;
    ac_open(f, &b);
    ac_auth(&b, "receiver");
    b.hold = true;
    size_t base = b.n_rx;
    ac_link(&b, false, "/devices/" DEVICE "/modules/receiver/messages/events");
    send_output(&sc, "out1", "%24.mid=m-2&k=v", "hello");
    ac_run(&b, base + 1, 2000);
    assert_int_equal(b.n_rx, base + 1);
    pn_message_t *m = b.rx[base].m;
    assert_string_equal(ac_body(m), "hello");
    assert_string_equal(ac_map_str(pn_message_annotations(m), "x-opt-input-name"), "in1");
    assert_string_equal(ac_map_str(pn_message_annotations(m), "iothub-connection-module-id"),
                        "sender");
    assert_string_equal(ac_map_str(pn_message_properties(m), "k"), "v");
    assert_null(ac_map_str(pn_message_properties(m), "iothub-outputname"));
    pn_msgid_t mid = pn_message_get_id(m);
    assert_int_equal(mid.type, PN_STRING);
    assert_memory_equal(mid.u.as_bytes.start, "m-2", 3);
    assert_int_equal(endpoint_depth(f, "/modules/receiver/inputs/in1"), 1);
    /* gone without settling: delivered again to the next connection */
    ac_close(&b);
    ac_open(f, &b);
    ac_auth(&b, "receiver");
    base = b.n_rx;
    ac_link(&b, false, "/devices/" DEVICE "/modules/receiver/messages/events");
    ac_run(&b, base + 1, 2000);
    assert_int_equal(b.n_rx, base + 1);
    assert_string_equal(ac_body(b.rx[base].m), "hello");
    ac_run(&b, 0, 100);
    assert_int_equal(endpoint_depth(f, "/modules/receiver/inputs/in1"), 0);
    ac_close(&b);
    cl_close(&sc);
}

/* Twins over AMQP: GET, PATCH reported (answered by correlation id, a uuid echoed as a uuid),
 * PUT desired notifications then a desired patch; a direct method called and answered. */
static void test_amqp_twin_and_method(void **state)
{
    struct fixture *f = *state;
    struct aclient c;
    ac_open(f, &c);
    ac_auth(&c, "receiver");
    const char *twin = "/devices/" DEVICE "/modules/receiver/twin";
    pn_link_t *tx = ac_link(&c, true, twin);
    pn_link_t *rx = ac_link(&c, false, twin);
    assert_false(ac_link_refused(&c, rx));
    /* PATCH reported */
    pn_message_clear(c.m);
    pn_msgid_t id = {.type = PN_UUID};
    for (int i = 0; i < 16; i++)
        id.u.as_uuid.bytes[i] = (char)(i * 17);
    pn_message_set_correlation_id(c.m, id);
    const char *patch_ann[] = {"operation", "PATCH", "resource", "/properties/reported", NULL};
    ac_str_map(pn_message_annotations(c.m), patch_ann, true);
    pn_message_set_inferred(c.m, true);
    pn_data_put_binary(pn_message_body(c.m), pn_bytes(12, "{\"fw\":\"1.2\"}"));
    size_t base = c.n_rx;
    ac_send(&c, tx, false);
    ac_run(&c, base + 1, 2000);
    assert_int_equal(c.n_rx, base + 1);
    pn_message_t *m = c.rx[base].m;
    pn_msgid_t cid = pn_message_get_correlation_id(m);
    assert_int_equal(cid.type, PN_UUID);
    assert_memory_equal(cid.u.as_uuid.bytes, id.u.as_uuid.bytes, 16);
    assert_string_equal(ac_map_str(pn_message_annotations(m), "status"), "204");
    assert_non_null(ac_map_str(pn_message_annotations(m), "version"));
    json_t *t = twins_get(&f->h, "receiver");
    assert_string_equal(json_string_value(json_object_get(json_object_get(t, "reported"), "fw")),
                        "1.2");
    json_decref(t);
    /* GET */
    pn_message_clear(c.m);
    pn_msgid_t sid = {.type = PN_STRING};
    sid.u.as_bytes = pn_bytes(2, "g1");
    pn_message_set_correlation_id(c.m, sid);
    const char *get_ann[] = {"operation", "GET", NULL};
    ac_str_map(pn_message_annotations(c.m), get_ann, true);
    base = c.n_rx;
    ac_send(&c, tx, false);
    ac_run(&c, base + 1, 2000);
    assert_int_equal(c.n_rx, base + 1);
    m = c.rx[base].m;
    assert_string_equal(ac_map_str(pn_message_annotations(m), "status"), "200");
    json_t *doc = NULL;
    const char *body = ac_body(m);
    assert_int_equal(ljson_parse(body, strlen(body), &doc, NULL), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "reported"), "fw")),
                        "1.2");
    json_decref(doc);
    /* desired notifications: nothing before PUT, the patch after */
    pn_message_clear(c.m);
    sid.u.as_bytes = pn_bytes(2, "p1");
    pn_message_set_correlation_id(c.m, sid);
    const char *put_ann[] = {"operation", "PUT", "resource",
                             "/notifications/twin/properties/desired", NULL};
    ac_str_map(pn_message_annotations(c.m), put_ann, true);
    base = c.n_rx;
    ac_send(&c, tx, false);
    ac_run(&c, base + 1, 2000);
    assert_string_equal(ac_map_str(pn_message_annotations(c.rx[base].m), "status"), "200");
    json_t *patch = json_pack("{s:i}", "interval", 5), *tw = NULL;
    struct lerr err = {0};
    assert_int_equal(twins_patch_desired(&f->h, "receiver", patch, &tw, &err), 0);
    json_decref(patch);
    json_decref(tw);
    base = c.n_rx;
    ac_run(&c, base + 1, 2000);
    assert_int_equal(c.n_rx, base + 1);
    m = c.rx[base].m;
    assert_int_equal(pn_message_get_correlation_id(m).type, PN_NULL);
    body = ac_body(m);
    assert_int_equal(ljson_parse(body, strlen(body), &doc, NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "interval")), 5);
    json_decref(doc);

    /* methods */
    const char *meth = "/devices/" DEVICE "/modules/receiver/methods/devicebound";
    struct method_result res = {0};
    void *handle;
    json_t *payload = json_pack("{s:i}", "x", 1);
    assert_int_equal(
        methods_invoke(&f->h, "receiver", "ping", payload, 5, 0, method_done, &res, &handle, &err),
        -ENOENT);
    pn_link_t *mtx = ac_link(&c, true, meth);
    ac_link(&c, false, meth);
    assert_int_equal(
        methods_invoke(&f->h, "receiver", "ping", payload, 5, 0, method_done, &res, &handle, &err),
        0);
    json_decref(payload);
    base = c.n_rx;
    ac_run(&c, base + 1, 2000);
    assert_int_equal(c.n_rx, base + 1);
    m = c.rx[base].m;
    assert_string_equal(ac_map_str(pn_message_properties(m), "IoThub-methodname"), "ping");
    assert_string_equal(ac_body(m), "{\"x\":1}");
    pn_msgid_t rq = pn_message_get_correlation_id(m);
    assert_int_equal(rq.type, PN_STRING);
    char rid[64];
    snprintf(rid, sizeof(rid), "%.*s", (int)rq.u.as_bytes.size, rq.u.as_bytes.start);
    pn_message_clear(c.m);
    rq.u.as_bytes = pn_bytes(strlen(rid), rid);
    pn_message_set_correlation_id(c.m, rq);
    pn_data_t *p = pn_message_properties(c.m);
    pn_data_put_map(p);
    pn_data_enter(p);
    pn_data_put_string(p, pn_bytes(13, "IoThub-status"));
    pn_data_put_int(p, 201);
    pn_data_exit(p);
    pn_message_set_inferred(c.m, true);
    pn_data_put_binary(pn_message_body(c.m), pn_bytes(13, "{\"pong\":true}"));
    ac_send(&c, mtx, false);
    ac_run(&c, 0, 200);
    assert_true(res.done);
    assert_int_equal(res.status, 200);
    assert_int_equal(json_integer_value(json_object_get(res.reply, "status")), 201);
    assert_true(json_is_true(json_object_get(json_object_get(res.reply, "payload"), "pong")));
    json_decref(res.reply);
    ac_close(&c);
}

/* AMQP over WebSockets: the same head behind the WebSocket listener's upgrade. */
static void test_amqp_over_websockets(void **state)
{
    struct fixture *f = *state;
    struct client rc;
    cl_open_receiver(f, &rc);
    struct aclient a;
    ac_open_ws(f, &a);
    ac_auth(&a, "sender");
    pn_link_t *ev = ac_link(&a, true, "/devices/" DEVICE "/modules/sender/messages/events");
    pn_message_clear(a.m);
    const char *props[] = {"iothub-outputname", "out1", NULL};
    ac_str_map(pn_message_properties(a.m), props, false);
    pn_message_set_inferred(a.m, true);
    pn_data_put_binary(pn_message_body(a.m), pn_bytes(5, "ws-hi"));
    pn_delivery_t *d = ac_send(&a, ev, false);
    ac_run(&a, 0, 200);
    assert_int_equal(pn_delivery_remote_state(d), PN_ACCEPTED);
    expect_body(&rc, "in1", "ws-hi");
    /* a link outside its identity is refused here too */
    pn_link_t *l = ac_link(&a, true, "/devices/" DEVICE "/modules/other/messages/events");
    assert_true(ac_link_refused(&a, l));
    ac_close(&a);
    cl_close(&rc);
}

/* amqp_map.c without a hub: addresses, audiences, request ids, ids as text. */
static bool addr_is(const char *s, enum amqp_addr_kind kind, const char *device, const char *module)
{
    struct amqp_addr a;
    assert_int_equal(amqp_addr_parse(s, strlen(s), &a), 0);
    if (a.kind != kind)
        return false;
    if (kind == AMQP_ADDR_UNKNOWN || kind == AMQP_ADDR_CBS)
        return true;
    return a.device.len == strlen(device) && memcmp(a.device.ptr, device, a.device.len) == 0 &&
           a.module.len == strlen(module) &&
           (!a.module.len || memcmp(a.module.ptr, module, a.module.len) == 0);
}

/* A leaf device's cloud-to-device queue over AMQP (/devices/<d>/messages/devicebound): one
 * message unsettled at a time with IoT Hub's properties; accepted (complete) and rejected leave the
 * queue, released (abandon) comes again at once, unsettled when the connection goes comes on the
 * next one, and what was stored survives a restart of the hub. A module has no devicebound link. */
static void ac_auth_device(struct aclient *c, const char *device)
{
    struct lbuf tok = LBUF_INIT;
    char aud[256];
    snprintf(aud, sizeof(aud), IOTHUB "/devices/%s", device);
    int i = strcmp(device, "leaf2") == 0 ? 1 : 0;
    assert_int_equal(sas_token_make(aud, c->f->leaf_keys[i][0], 32,
                                    (uint64_t)(ltime_now_ms() / 1000 + 3600), NULL, &tok),
                     0);
    assert_int_equal(ac_put_token(c, aud, tok.data), 200);
    lbuf_free(&tok);
}

static void test_amqp_device_c2d(void **state)
{
    struct fixture *f = *state;
    const char *q = "/devices/leaf1/messages/devicebound";
    store_c2d(f, "leaf1", "%24.mid=c1&%24.to=%2Fdevices%2Fleaf1%2Fmessages%2FdeviceBound&color=red",
              "first");
    store_c2d(f, "leaf1", "%24.mid=c2", "second");
    struct aclient c, m;
    /* a module asks for a devicebound link: refused */
    ac_open(f, &m);
    ac_auth(&m, "sender");
    pn_link_t *ml = ac_link(&m, false, "/devices/" DEVICE "/modules/sender/messages/devicebound");
    assert_true(ac_link_refused(&m, ml));
    ac_close(&m);
    /* leaf1: the first one, with its properties, and nothing more while it is unsettled */
    ac_open(f, &c);
    c.hold = true;
    ac_auth_device(&c, "leaf1");
    size_t n0 = c.n_rx;
    pn_link_t *l = ac_link(&c, false, q);
    ac_run(&c, n0 + 1, 2000);
    ac_run(&c, 0, 100);
    assert_int_equal(c.n_rx, n0 + 1);
    struct amsg *a = &c.rx[n0];
    assert_string_equal(ac_body(a->m), "first");
    pn_msgid_t id = pn_message_get_id(a->m);
    assert_int_equal(id.type, PN_STRING);
    assert_memory_equal(id.u.as_bytes.start, "c1", 2);
    assert_string_equal(pn_message_get_address(a->m), "/devices/leaf1/messages/deviceBound");
    assert_string_equal(ac_map_str(pn_message_properties(a->m), "color"), "red");
    assert_non_null(a->d);
    /* abandon (released): the same message again */
    pn_delivery_update(a->d, PN_RELEASED);
    pn_delivery_settle(a->d);
    a->d = NULL;
    ac_run(&c, n0 + 2, 2000);
    assert_int_equal(c.n_rx, n0 + 2);
    a = &c.rx[n0 + 1];
    assert_string_equal(ac_body(a->m), "first");
    assert_int_equal(pn_message_get_delivery_count(a->m), 1);
    assert_int_equal(endpoint_depth(f, q), 2);
    /* complete (accepted): it leaves the queue, the second comes */
    pn_delivery_update(a->d, PN_ACCEPTED);
    pn_delivery_settle(a->d);
    a->d = NULL;
    ac_run(&c, n0 + 3, 2000);
    assert_int_equal(c.n_rx, n0 + 3);
    assert_string_equal(ac_body(c.rx[n0 + 2].m), "second");
    assert_int_equal(endpoint_depth(f, q), 1);
    /* the connection goes without settling it: it comes on the next one */
    ac_close(&c);
    assert_int_equal(endpoint_depth(f, q), 1);
    ac_open(f, &c);
    c.hold = true;
    ac_auth_device(&c, "leaf1");
    n0 = c.n_rx;
    l = ac_link(&c, false, q);
    ac_run(&c, n0 + 1, 2000);
    assert_int_equal(c.n_rx, n0 + 1);
    a = &c.rx[n0];
    assert_string_equal(ac_body(a->m), "second");
    assert_int_equal(pn_message_get_delivery_count(a->m), 1);
    /* reject: it leaves the queue too (IoT Hub dead-letters it) */
    pn_delivery_update(a->d, PN_REJECTED);
    pn_delivery_settle(a->d);
    a->d = NULL;
    ac_run(&c, 0, 100);
    assert_int_equal(endpoint_depth(f, q), 0);
    /* while connected: at once; accepted by the client (hold off) */
    c.hold = false;
    store_c2d(f, "leaf1", "%24.mid=c3", "third");
    ac_run(&c, n0 + 2, 2000);
    assert_string_equal(ac_body(c.rx[n0 + 1].m), "third");
    ac_run(&c, 0, 100);
    assert_int_equal(endpoint_depth(f, q), 0);
    (void)l;
    ac_close(&c);
    /* stored while away, then the hub restarts: it comes, unsettled when the hub went before */
    store_c2d(f, "leaf1", "%24.mid=c4", "fourth");
    pump_for(f, 50);
    hub_down(f);
    hub_up(f);
    assert_int_equal(endpoint_depth(f, q), 1);
    ac_open(f, &c);
    ac_auth_device(&c, "leaf1");
    n0 = c.n_rx;
    ac_link(&c, false, q);
    ac_run(&c, n0 + 1, 2000);
    assert_int_equal(c.n_rx, n0 + 1);
    assert_string_equal(ac_body(c.rx[n0].m), "fourth");
    ac_run(&c, 0, 100);
    assert_true(endpoint_depth(f, q) <= 0); /* empty, or removed: no route uses it */
    ac_close(&c);
}

static void test_amqp_map(void **state)
{
    (void)state;
    assert_true(addr_is("$cbs", AMQP_ADDR_CBS, NULL, NULL));
    assert_true(addr_is("/devices/d1/modules/m1/messages/events", AMQP_ADDR_EVENTS, "d1", "m1"));
    assert_true(addr_is("/devices/d1/messages/events/", AMQP_ADDR_EVENTS, "d1", ""));
    assert_true(addr_is("/devices/d1/messages/devicebound", AMQP_ADDR_DEVICEBOUND, "d1", ""));
    assert_true(
        addr_is("/devices/d1/modules/m1/twin?api-version=2021-04-12", AMQP_ADDR_TWIN, "d1", "m1"));
    assert_true(addr_is("amqps://h.example/devices/d1/modules/m1/methods/devicebound",
                        AMQP_ADDR_METHODS, "d1", "m1"));
    assert_true(
        addr_is("/devices/d1/modules/m1/messages/devicebound", AMQP_ADDR_UNKNOWN, NULL, NULL));
    assert_true(addr_is("/devices//twin", AMQP_ADDR_UNKNOWN, NULL, NULL));
    assert_true(addr_is("/devices/d1/twin/extra", AMQP_ADDR_UNKNOWN, NULL, NULL));
    assert_true(addr_is("$cbsx", AMQP_ADDR_UNKNOWN, NULL, NULL));
    char scratch[128];
    struct amqp_addr a;
    const char *aud = "h.example%2Fdevices%2Fd1%2Fmodules%2Fm1";
    assert_int_equal(amqp_audience_parse(aud, strlen(aud), scratch, sizeof(scratch), &a), 0);
    assert_int_equal(a.device.len, 2);
    assert_memory_equal(a.device.ptr, "d1", 2);
    assert_memory_equal(a.module.ptr, "m1", 2);
    aud = "h.example/devices/leaf1";
    assert_int_equal(amqp_audience_parse(aud, strlen(aud), scratch, sizeof(scratch), &a), 0);
    assert_int_equal(a.module.len, 0);
    aud = "/devices/d1";
    assert_int_equal(amqp_audience_parse(aud, strlen(aud), scratch, sizeof(scratch), &a), -EINVAL);
    aud = "h/devices/d%00";
    assert_int_equal(amqp_audience_parse(aud, strlen(aud), scratch, sizeof(scratch), &a), -EINVAL);
    /* ids as request ids and back */
    char rid[80], storage[80], text[80];
    pn_msgid_t id = {.type = PN_UUID}, back;
    for (int i = 0; i < 16; i++)
        id.u.as_uuid.bytes[i] = (char)(i * 16 + i);
    int n = amqp_rid_from_msgid(id, rid, sizeof(rid));
    assert_string_equal(rid, "u:00112233445566778899aabbccddeeff");
    assert_int_equal(amqp_msgid_from_rid(rid, (size_t)n, storage, &back), 0);
    assert_int_equal(back.type, PN_UUID);
    assert_memory_equal(back.u.as_uuid.bytes, id.u.as_uuid.bytes, 16);
    assert_true(amqp_msgid_string(id, text, sizeof(text)) > 0);
    assert_string_equal(text, "00112233-4455-6677-8899-aabbccddeeff");
    id.type = PN_ULONG;
    id.u.as_ulong = 42;
    n = amqp_rid_from_msgid(id, rid, sizeof(rid));
    assert_string_equal(rid, "n:42");
    assert_int_equal(amqp_msgid_from_rid(rid, (size_t)n, storage, &back), 0);
    assert_int_equal(back.u.as_ulong, 42);
    id.type = PN_STRING;
    id.u.as_bytes = pn_bytes(3, "abc");
    n = amqp_rid_from_msgid(id, rid, sizeof(rid));
    assert_string_equal(rid, "s:abc");
    assert_int_equal(amqp_msgid_from_rid("x:1", 3, storage, &back), -EINVAL);
    assert_int_equal(amqp_msgid_from_rid("n:99999999999999999999", 22, storage, &back), -EINVAL);
    assert_int_equal(amqp_msgid_from_rid("u:00", 4, storage, &back), -EINVAL);
    id.type = PN_NULL;
    assert_int_equal(amqp_rid_from_msgid(id, rid, sizeof(rid)), -EINVAL);
    assert_int_equal(amqp_msgid_string(id, text, sizeof(text)), 0);
}

int main(void)
{
    log_set_level(getenv("TEST_LOG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
    signal(SIGPIPE, SIG_IGN);  /* as main.c: the hub writes to clients that are gone */
    if (getenv("TEST_FILTER")) /* one test (a glob), when working on it */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_accepts_valid_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_packets_before_connect_close, setup, teardown),
        cmocka_unit_test(test_may_subscribe),
        cmocka_unit_test_setup_teardown(test_subscribe_authorisation_on_the_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_authorisation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_and_deliver, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_exposition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_puback_waits_for_receiver_ack_and_redelivers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_inflight_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistent_session_gets_backlog, setup, teardown),
        cmocka_unit_test_setup_teardown(test_takeover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priorities_drain_highest_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ttl_expires_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_global_ttl, setup_global_ttl, teardown),
        cmocka_unit_test_setup_teardown(test_will, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscription_to_one_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qos2_publish_closes_only_that_connection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_malformed_and_oversized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_packet_in_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscription_limit, setup_limits, teardown),
        cmocka_unit_test_setup_teardown(test_connection_limit, setup_limits, teardown),
        cmocka_unit_test_setup_teardown(test_store_full_refuses_then_recovers, setup_small_store,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_routes_and_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_unacked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistent_session_survives_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_change_cuts_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals_rate_limited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_lifetime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscribe_only_when_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_twins_db_damaged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_twins_db_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_twin_get_and_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_twin_get_waits_for_cloud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_before_connect_with_presence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_direct_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_direct_method_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_connect, setup, teardown),
        cmocka_unit_test(test_device_may_subscribe),
        cmocka_unit_test_setup_teardown(test_device_publish_authorisation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_telemetry_routed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_twin_and_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_modules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_child_modules_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_waits_for_its_session, setup_relay,
                                        teardown_relay),
        cmocka_unit_test(test_c2d_message_form),
        cmocka_unit_test_setup_teardown(test_device_c2d, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_identity_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_x509, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_route_and_deliver, setup, teardown),
        cmocka_unit_test(test_amqp_map),
        cmocka_unit_test_setup_teardown(test_amqp_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_amqp_route_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_amqp_twin_and_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_amqp_over_websockets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_amqp_device_c2d, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ws_auth_and_protocol_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_invoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
