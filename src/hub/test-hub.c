/* test-hub.c — the hub's connection, session and router units driven the way clients drive them:
 * a real hub (store, twins, control socket) in a temp dir, clients speaking MQTT over socketpairs
 * handed to mqtt_head_accept(). Authentication, authorisation, routing and delivery, QoS 2 and
 * retain, limits, malformed and oversized input, persistent sessions, priorities, TTL, wills, store
 * full, reload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "database.h"
#include "auth.h"
#include "head_mqtt.h"
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
};

struct client {
    struct fixture *f;
    int fd;
    struct lbuf in;  /* bytes received, not yet framed */
    struct lbuf pkt; /* the last packet returned (decoded views point here) */
    bool eof;
    uint16_t next_id;
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
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "state_dir: %s/state\nrun_dir: %s/run\nlog_level: error\n"
             "device:\n  id: " DEVICE "\n"
             "hub:\n  control_socket: %s/run/hub.sock\n  max_subscriptions: %d\n"
             "  max_connections: %d\n  max_inflight: %d\n  max_packet_size: %llu\n",
             f->dir, f->dir, f->dir, f->max_subscriptions, f->max_connections, f->max_inflight,
             (unsigned long long)f->max_packet);
    struct lstrv errors = LSTRV_INIT;
    int r = config_load_string(yaml, strlen(yaml), "test", &f->h.cfg, &errors);
    if (r < 0)
        fail_msg("config: %s", errors.n ? errors.v[0] : "?");
    lstrv_free(&errors);
    f->h.cfg.hub.tls_port = 0; /* the tests hand sockets to mqtt_head_accept() themselves */
    f->h.cfg.hub.plain_port = 0;
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
    lbuf_free(&c->in);
    lbuf_free(&c->pkt);
    pump(c->f);
}

static void cl_send(struct client *c, const void *data, size_t n)
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
            assert_int_equal(lbuf_append(&c->in, buf, (size_t)n), 0);
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
        methods_invoke(&f->h, "receiver", "ping", payload, 5, method_done, &res, &handle, &err),
        -ENOENT);
    assert_int_equal(cl_subscribe(&c, "$iothub/methods/POST/#", 1), 1);
    assert_int_equal(
        methods_invoke(&f->h, "receiver", "ping", payload, 5, method_done, &res, &handle, &err), 0);
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
    assert_int_equal(methods_invoke(&f->h, "devices/leaf2", "ping", payload, 5, method_done, &res,
                                    &handle, &err),
                     -ENOENT); /* not connected */
    assert_int_equal(methods_invoke(&f->h, "devices/leaf1", "ping", payload, 5, method_done, &res,
                                    &handle, &err),
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

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    signal(SIGPIPE, SIG_IGN); /* as main.c: the hub writes to clients that are gone */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_accepts_valid_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_packets_before_connect_close, setup, teardown),
        cmocka_unit_test(test_may_subscribe),
        cmocka_unit_test_setup_teardown(test_subscribe_authorisation_on_the_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_publish_authorisation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_and_deliver, setup, teardown),
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
        cmocka_unit_test_setup_teardown(test_direct_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_connect, setup, teardown),
        cmocka_unit_test(test_device_may_subscribe),
        cmocka_unit_test_setup_teardown(test_device_publish_authorisation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_telemetry_routed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_twin_and_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_identity_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_x509, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
