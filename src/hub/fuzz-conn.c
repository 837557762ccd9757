/* fuzz-conn.c — the hub's connection input path on arbitrary bytes: a real hub (routes, store on
 * tmpfs when there is one, twins) takes a socketpair through mqtt_head_accept() and reads the input
 * through its MQTT framing, packet handlers, router and delivery, answering what it answers.
 *
 * Input: one mode byte, then the stream. Mode bit 0: a valid CONNECT for module "fz" comes
 * first (so the stream reaches the authenticated handlers), bit 1: that session is persistent,
 * bit 2: the client acknowledges QoS 1 deliveries, bits 3-7: the stream is written in chunks of
 * (value + 1) * 7 bytes (0: all at once). The hub is rebuilt every HUB_RUNS inputs so that its
 * store stays small. */
#include <errno.h>
#include <event2/event.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "head_mqtt.h"
#include "server.h"
#include "identity/sas.h"
#include "log/log.h"

#define HUB_RUNS 500
#define DEVICE "fzdev"
#define IOTHUB "fzdev.example.net"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct hub h;
static bool up;
static int runs;
static char dir[64];
static uint8_t key[32];
static struct lbuf connect_clean = LBUF_INIT, connect_persistent = LBUF_INIT;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static void make_connect(bool persistent, struct lbuf *out)
{
    struct lbuf tok = LBUF_INIT;
    /* within hub.max_token_lifetime (1 day) */
    if (sas_token_make(IOTHUB "/devices/" DEVICE "/modules/fz", key, sizeof(key),
                       (uint64_t)(ltime_now_ms() / 1000 + 20 * 3600), NULL, &tok) < 0)
        abort();
    struct mqtt_connect cn = {
        .clean_session = !persistent,
        .keep_alive = 60,
        .client_id = mqtt_str_c(DEVICE "/fz"),
        .has_username = true,
        .username = mqtt_str_c(IOTHUB "/" DEVICE "/fz/?api-version=2021-04-12"),
        .has_password = true,
        .password = (const uint8_t *)tok.data,
        .password_len = tok.len,
        .will = true,
        .will_qos = 1,
        .will_topic = mqtt_str_c("devices/" DEVICE "/modules/fz/messages/events/%24.on=will"),
        .will_payload = (const uint8_t *)"gone",
        .will_payload_len = 4,
    };
    if (mqtt_encode_connect(out, &cn) < 0)
        abort();
    lbuf_free(&tok);
}

static void hub_down(void)
{
    if (!up)
        return;
    hub_stop(&h);
    config_free(&h.cfg);
    event_base_free(h.base);
    memset(&h, 0, sizeof(h));
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    up = false;
}

static void hub_up(void)
{
    snprintf(dir, sizeof(dir), "%s/ledge-fuzz-hub-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir))
        abort();
    struct lbuf b64 = LBUF_INIT;
    lcrypto_b64_encode(key, sizeof(key), &b64);
    char path[128];
    snprintf(path, sizeof(path), "%s/run/hub", dir);
    lfs_mkdir_p(path, 0700);
    snprintf(path, sizeof(path), "%s/run/hub/runtime.json", dir);
    char *rt = lstr_printf(
        "{\"deviceId\": \"" DEVICE "\", \"iothubHostname\": \"" IOTHUB "\", "
        "\"gatewayHostname\": \"gw\", \"modules\": {\"fz\": {\"generationId\": \"g\", \"key\": "
        "\"%s\"}}, \"twins\": {\"fz\": {\"a\": 1}}, \"edgeHub\": {\"schemaVersion\": \"1.1\", "
        "\"routes\": {"
        "\"loop\": \"FROM /messages/modules/fz/outputs/o1 INTO "
        "BrokeredEndpoint(\\\"/modules/fz/inputs/i1\\\")\","
        "\"cond\": \"FROM /messages/modules/fz/* WHERE $body.a > 1 OR x = 'y' INTO "
        "BrokeredEndpoint(\\\"/modules/fz/inputs/i2\\\")\","
        "\"p0\": {\"route\": \"FROM /messages/modules/fz/outputs/hi INTO "
        "BrokeredEndpoint(\\\"/modules/fz/inputs/i1\\\")\", \"priority\": 0, "
        "\"timeToLiveSecs\": 5},"
        "\"twin\": \"FROM /twinChangeNotifications INTO "
        "BrokeredEndpoint(\\\"/modules/fz/inputs/tw\\\")\","
        "\"up\": \"FROM /messages/* INTO $upstream\"}, "
        "\"storeAndForwardConfiguration\": {\"timeToLiveSecs\": 60, \"storeLimits\": "
        "{\"maxSizeBytes\": 4194304}}}}",
        b64.data);
    lbuf_free(&b64);
    if (!rt || lfs_write_atomic(path, rt, strlen(rt), 0600) < 0)
        abort();
    free(rt);
    char *yaml = lstr_printf("state_dir: %s/state\nrun_dir: %s/run\nlog_level: error\n"
                             "device:\n  id: " DEVICE "\nhub:\n  control_socket: %s/run/hub.sock\n"
                             "  max_packet_size: 64k\n  max_subscriptions: 16\n  max_inflight: 8\n"
                             "  fsync: interval\n",
                             dir, dir, dir);
    struct lstrv errors = LSTRV_INIT;
    if (!yaml || config_load_string(yaml, strlen(yaml), "fuzz", &h.cfg, &errors) < 0)
        abort();
    free(yaml);
    lstrv_free(&errors);
    h.cfg.hub.tls_port = 0;
    h.cfg.hub.websocket_port = 0;
    h.cfg.hub.amqp_port = 0;
    h.cfg.hub.plain_port = 0;
    h.base = event_base_new();
    struct lerr err = {0};
    if (!h.base || hub_start(&h, &err) < 0) {
        fprintf(stderr, "fuzz-conn: hub_start: %s\n", lerr_str(&err));
        abort();
    }
    up = true;
    runs = 0;
}

static void at_exit(void)
{
    hub_down();
    lbuf_free(&connect_clean);
    lbuf_free(&connect_persistent);
}

static void pump(void)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(h.base, EVLOOP_NONBLOCK);
}

/* Read what the hub sent; acknowledge its QoS 1 PUBLISHes when ack. */
static void drain(int fd, struct lbuf *in, bool ack)
{
    uint8_t buf[16384];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
        lbuf_append(in, buf, (size_t)n);
    for (;;) {
        size_t plen;
        if (in->len == 0 ||
            mqtt_frame((const uint8_t *)in->data, in->len, MQTT_MAX_PACKET, &plen) != 1)
            break;
        struct mqtt_packet p;
        struct lerr e = {0};
        if (mqtt_decode((const uint8_t *)in->data, plen, &p, &e) < 0)
            __builtin_trap(); /* the hub must only send well-formed packets */
        if (ack && p.type == MQTT_PUBLISH && p.publish.qos == 1) {
            uint8_t a[MQTT_ACK_LEN];
            if (mqtt_encode_ack_bytes(a, MQTT_PUBACK, p.publish.packet_id) > 0)
                (void)!send(fd, a, sizeof(a), MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        memmove(in->data, in->data + plen, in->len - plen);
        in->len -= plen;
    }
}

static void feed(int fd, const uint8_t *p, size_t n, size_t chunk, struct lbuf *in, bool ack)
{
    int stalls = 0;
    while (n && stalls < 1000) {
        size_t want = chunk && chunk < n ? chunk : n;
        ssize_t w = send(fd, p, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            stalls = 0;
        } else if (w < 0 && errno != EAGAIN) {
            return; /* the hub closed the connection */
        } else {
            stalls++;
        }
        pump();
        drain(fd, in, ack);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool inited;
    if (!inited) {
        inited = true;
        signal(SIGPIPE, SIG_IGN); /* as main.c: the hub writes to peers that are gone */
        /* LEDGE_FUZZ_LOG=1 shows what the hub does with the inputs (for seed work) */
        log_set_level(getenv("LEDGE_FUZZ_LOG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
        for (int i = 0; i < 32; i++)
            key[i] = (uint8_t)(i * 7 + 3);
        make_connect(false, &connect_clean);
        make_connect(true, &connect_persistent);
        atexit(at_exit);
    }
    if (!up)
        hub_up();
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        abort();
    mqtt_head_accept(&h, sv[0], false);
    struct lbuf in = LBUF_INIT;
    bool ack = mode & 4;
    if (mode & 1) {
        struct lbuf *c = (mode & 2) ? &connect_persistent : &connect_clean;
        feed(sv[1], (const uint8_t *)c->data, c->len, 0, &in, ack);
    }
    feed(sv[1], data, size, (size_t)(mode >> 3) * 7, &in, ack);
    pump();
    drain(sv[1], &in, ack);
    close(sv[1]);
    for (int i = 0; i < 1000 && mqtt_head_connections(&h, true); i++)
        pump();
    if (mqtt_head_connections(&h, true))
        __builtin_trap(); /* a connection whose peer is gone must go away */
    lbuf_free(&in);
    if (++runs >= HUB_RUNS)
        hub_down();
    return 0;
}
