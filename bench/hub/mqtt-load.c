/* mqtt-load.c — ledge's MQTT load generator (bench/hub): publish and subscribe in one process to
 * measure throughput and per-message latency, publish or count alone, or hold many idle clients.
 * Plain TCP or TLS (OpenSSL), optionally MQTT over WebSockets (--ws PATH: the upgrade, then each
 * flush of MQTT bytes as one masked binary frame, the broker's frames joined back into one byte
 * stream); framing and encoding by src/mqtt's codec; any MQTT 3.1.1 broker. --amqp speaks AMQP 1.0
 * instead (Qpid Proton's connection engine over the same sockets, TLS and WebSocket framing, IoT
 * Hub's links: a CBS put-token of the SAS password, telemetry sent on the --topic address, inputs
 * received on the --filter address), with the same measurement loop: a received delivery counts
 * as a PUBLISH, the broker's settlement of an unsettled one (QoS 1) as its PUBACK.
 *
 * Every message carries its send time (CLOCK_MONOTONIC ns) and sequence number in its first 16
 * bytes, so the subscriber in the same process measures latency on the same clock. Results are
 * one JSON object on stdout; diagnostics go to stderr. Nothing here asserts a number. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/errors.h"
#include "identity/sas.h"
#include "mqtt/codec.h"

#define HEADER_BYTES 16 /* send time + sequence number at the front of every payload */
#define READ_CHUNK (64u << 10)
#define MAX_PACKET (1u << 20) /* largest packet accepted from a broker */
#define SETUP_TIMEOUT_MS 10000
#define AMQP_CREDIT 1000 /* the subscriber's link credit, topped up per message */

/* ------------------------------------------------------------------ options */

struct options {
    const char *mode;
    const char *host;
    int port;
    bool tls;
    const char *ca_file;
    const char *servername;
    const char *ws_path; /* MQTT over WebSockets: the upgrade's path (NULL: MQTT straight) */
    bool amqp;           /* AMQP 1.0 instead of MQTT (subprotocol AMQPWSB10 over WebSockets) */
    int keepalive;
    /* publisher */
    const char *pub_id, *pub_user, *pub_pass, *topic;
    /* subscriber */
    const char *sub_id, *sub_user, *sub_pass, *filter;
    int sub_qos;
    /* load */
    uint64_t count;
    size_t size;
    int qos;
    uint32_t window;
    double rate;
    double timeout_s;
    int pid; /* the broker: RSS samples and CPU time */
    const char *ready_file;
    /* idle */
    uint32_t clients;
    const char *id_fmt, *user_fmt, *sub_fmt, *sas_key, *sas_resource_fmt;
    double hold_s;
    double settle_s;
};

/* ------------------------------------------------------------------ small helpers */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mqtt-load: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* "{i}" in fmt becomes i; nothing else is special (no printf format from the command line). */
static char *expand(const char *fmt, uint32_t i)
{
    struct lbuf b = LBUF_INIT;
    for (const char *p = fmt; *p;) {
        if (strncmp(p, "{i}", 3) == 0) {
            lbuf_printf(&b, "%" PRIu32, i);
            p += 3;
        } else {
            lbuf_putc(&b, *p++);
        }
    }
    return lbuf_steal(&b);
}

/* VmRSS and RssAnon of pid in KiB (0 when unreadable). */
struct rss {
    long rss_kb, anon_kb;
};

static struct rss read_rss(int pid)
{
    struct rss r = {0, 0};
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return r;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            r.rss_kb = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "RssAnon:", 8) == 0)
            r.anon_kb = strtol(line + 8, NULL, 10);
    }
    fclose(f);
    return r;
}

/* CPU time of every thread of pid in ns (schedstat: exact, unlike the 10 ms ticks of stat). */
static int64_t cpu_ns(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p2[300];
        snprintf(p2, sizeof(p2), "/proc/%d/task/%s/schedstat", pid, de->d_name);
        FILE *f = fopen(p2, "re");
        long long ns = 0;
        if (f) {
            if (fscanf(f, "%lld", &ns) == 1)
                total += ns;
            fclose(f);
        }
    }
    closedir(d);
    return total;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !stop_requested)
        ;
}

/* ------------------------------------------------------------------ connections */

struct conn {
    const char *name; /* for messages: "publisher", "subscriber", "client 17" */
    int fd;
    SSL *ssl;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    struct lbuf tx; /* bytes for the wire */
    size_t tx_off;
    bool closed;
    uint16_t next_id;
    /* MQTT over WebSockets: MQTT bytes waiting to be framed, the wire's bytes before deframing */
    bool ws;
    struct lbuf mq;
    uint8_t *wrx;
    size_t wrx_len, wrx_cap;
    uint32_t mask;
    struct amqp_side *amqp; /* --amqp */
};

/* One AMQP connection (--amqp): Proton's engine fed from rx and written into conn_out(). */
struct amqp_side {
    pn_connection_driver_t d;
    pn_session_t *s;
    pn_link_t *cbs_tx, *cbs_rx;
    pn_link_t *link; /* the publisher's events sender or the subscriber's inputs receiver */
    pn_message_t *m;
    uint8_t *tmpl; /* the publisher's encoded message; its payload's first bytes at tmpl_off */
    size_t tmpl_len, tmpl_off;
    uint8_t *rbuf;
    size_t rcap;
    uint64_t tag;
    int cbs_status; /* the put-token's answer, -1 until it comes */
    bool link_open, failed;
};

/* Where MQTT packets are encoded: the wire, or the next WebSocket frame. */
static struct lbuf *conn_out(struct conn *c)
{
    return c->ws ? &c->mq : &c->tx;
}

/* A WebSocket frame of opcode around payload, masked (a client's frames must be), onto out. */
static void ws_frame(struct lbuf *out, uint8_t opcode, const uint8_t *payload, size_t n,
                     uint32_t mask)
{
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        hdr[h++] = (uint8_t)(0x80 | n);
    } else if (n <= 0xffff) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint8_t m[4] = {(uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8),
                    (uint8_t)mask};
    memcpy(hdr + h, m, 4);
    h += 4;
    if (lbuf_append(out, hdr, h) < 0 || lbuf_reserve(out, n) < 0)
        die("out of memory");
    uint8_t *dst = (uint8_t *)out->data + out->len;
    for (size_t i = 0; i < n; i++)
        dst[i] = payload[i] ^ m[i & 3];
    out->len += n;
}

static SSL_CTX *client_ctx(const struct options *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("TLS: cannot create a context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (o->ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1)
            die("TLS: cannot load CA file %s", o->ca_file);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

static int wait_fd(int fd, short events, int64_t deadline_ns)
{
    for (;;) {
        int64_t left = (deadline_ns - mono_ns()) / 1000000;
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, (int)left);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

static int tcp_connect(const struct options *o, int64_t deadline_ns)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", o->port);
    int r = getaddrinfo(o->host, port, &hints, &ai);
    if (r != 0)
        die("%s: %s", o->host, gai_strerror(r));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return -errno;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (r < 0 && errno != EINPROGRESS) {
        r = -errno;
        close(fd);
        return r;
    }
    if (r < 0) {
        int err = 0;
        socklen_t len = sizeof(err);
        r = wait_fd(fd, POLLOUT, deadline_ns);
        if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err)
            r = -err;
        if (r < 0) {
            close(fd);
            return r;
        }
    }
    return fd;
}

static int tls_handshake(struct conn *c, SSL_CTX *ctx, const struct options *o, int64_t deadline_ns)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl)
        return -ENOMEM;
    SSL_set_fd(c->ssl, c->fd);
    const char *name = o->servername ? o->servername : o->host;
    SSL_set_tlsext_host_name(c->ssl, name);
    if (o->ca_file)
        SSL_set1_host(c->ssl, name);
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return 0;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            r = wait_fd(c->fd, POLLIN, deadline_ns);
        else if (e == SSL_ERROR_WANT_WRITE)
            r = wait_fd(c->fd, POLLOUT, deadline_ns);
        else {
            char buf[256];
            ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
            fprintf(stderr, "mqtt-load: %s: TLS handshake: %s\n", c->name, buf);
            return -EPROTO;
        }
        if (r < 0)
            return r;
    }
}

/* Write what is queued. 0: all written; 1: the socket is full; < 0: the connection failed. */
static void amqp_out(struct conn *c);

static int conn_flush(struct conn *c)
{
    if (c->amqp)
        amqp_out(c);
    if (c->ws && c->mq.len) {
        ws_frame(&c->tx, 0x2, (const uint8_t *)c->mq.data, c->mq.len, c->mask);
        c->mask = c->mask * 1664525u + 1013904223u;
        lbuf_reset(&c->mq);
    }
    while (c->tx_off < c->tx.len) {
        size_t n = c->tx.len - c->tx_off;
        ssize_t w;
        if (c->ssl) {
            int r = SSL_write(c->ssl, c->tx.data + c->tx_off, (int)MIN(n, (size_t)INT32_MAX));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                    return 1;
                return -EPIPE;
            }
            w = r;
        } else {
            w = send(c->fd, c->tx.data + c->tx_off, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return errno == EAGAIN ? 1 : 0;
                return -errno;
            }
        }
        c->tx_off += (size_t)w;
    }
    lbuf_reset(&c->tx);
    c->tx_off = 0;
    return 0;
}

static void buf_room(uint8_t **buf, size_t len, size_t *cap, size_t want)
{
    if (*cap - len >= want)
        return;
    size_t n = *cap ? *cap * 2 : 2 * READ_CHUNK;
    while (n - len < want)
        n *= 2;
    uint8_t *p = realloc(*buf, n);
    if (!p)
        die("out of memory");
    *buf = p;
    *cap = n;
}

/* Read what is available into *buf. > 0 bytes read, 0 nothing now, -EPIPE at end of stream. */
static ssize_t conn_fill_raw(struct conn *c, uint8_t **buf, size_t *len, size_t *cap)
{
    ssize_t total = 0;
    for (;;) {
        buf_room(buf, *len, cap, READ_CHUNK);
        uint8_t *rx = *buf;
        size_t rx_len = *len, rx_cap = *cap;
        ssize_t r;
        if (c->ssl) {
            int n = SSL_read(c->ssl, rx + rx_len, (int)(rx_cap - rx_len));
            if (n <= 0) {
                int e = SSL_get_error(c->ssl, n);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return total;
                return -EPIPE;
            }
            r = n;
        } else {
            r = recv(c->fd, rx + rx_len, rx_cap - rx_len, 0);
            if (r == 0)
                return -EPIPE;
            if (r < 0)
                return errno == EAGAIN || errno == EINTR ? total : -EPIPE;
        }
        *len += (size_t)r;
        total += r;
        /* Bound the work per call: the caller decodes before reading more. */
        if (*len >= 4 * READ_CHUNK)
            return total;
    }
}

/* The broker's WebSocket frames in wrx: binary and continuation payloads onto rx, pings
 * answered, a close (or anything else) the end. 0, or -EPIPE. */
static int ws_deframe(struct conn *c)
{
    size_t off = 0;
    int rc = 0;
    while (c->wrx_len - off >= 2) {
        const uint8_t *f = c->wrx + off;
        size_t avail = c->wrx_len - off, h = 2;
        uint8_t opcode = f[0] & 0x0f;
        bool masked = f[1] & 0x80;
        uint64_t n = f[1] & 0x7f;
        if (n == 126) {
            if (avail < 4)
                break;
            n = (uint64_t)f[2] << 8 | f[3];
            h = 4;
        } else if (n == 127) {
            if (avail < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | f[2 + i];
            h = 10;
        }
        if (masked)
            h += 4;
        if (n > MAX_PACKET + 16) {
            fprintf(stderr, "mqtt-load: %s: a WebSocket frame of %" PRIu64 " bytes\n", c->name, n);
            rc = -EPIPE;
            break;
        }
        if (avail < h || avail - h < n)
            break;
        uint8_t *payload = c->wrx + off + h;
        if (masked)
            for (uint64_t i = 0; i < n; i++)
                payload[i] ^= f[h - 4 + (i & 3)];
        if (opcode == 0x0 || opcode == 0x2) {
            buf_room(&c->rx, c->rx_len, &c->rx_cap, (size_t)n);
            memcpy(c->rx + c->rx_len, payload, (size_t)n);
            c->rx_len += (size_t)n;
        } else if (opcode == 0x9) {
            ws_frame(&c->tx, 0xa, payload, (size_t)n, c->mask);
        } else if (opcode != 0xa) {
            fprintf(stderr, "mqtt-load: %s: WebSocket %s from the broker\n", c->name,
                    opcode == 0x8 ? "close" : "text or unknown frame");
            rc = -EPIPE;
            break;
        }
        off += h + (size_t)n;
    }
    if (off) {
        memmove(c->wrx, c->wrx + off, c->wrx_len - off);
        c->wrx_len -= off;
    }
    return rc;
}

/* Read what is available into rx (through the WebSocket framing when there is one). */
static ssize_t conn_fill(struct conn *c)
{
    if (!c->ws)
        return conn_fill_raw(c, &c->rx, &c->rx_len, &c->rx_cap);
    ssize_t n = conn_fill_raw(c, &c->wrx, &c->wrx_len, &c->wrx_cap);
    if (ws_deframe(c) < 0)
        return -EPIPE;
    return n;
}

/* The WebSocket upgrade (--ws): the request, then the broker's answer, which must be 101 with
 * the subprotocol mqtt; what follows it stays in wrx for the framing. */
static int ws_upgrade(struct conn *c, const struct options *o, int64_t deadline_ns)
{
    const char *host = o->servername ? o->servername : o->host;
    char proto[64];
    snprintf(proto, sizeof(proto), "Sec-WebSocket-Protocol: %s", o->amqp ? "AMQPWSB10" : "mqtt");
    if (lbuf_printf(&c->tx,
                    "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: bWxvYWQtbXF0dC1sb2FkIQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n%s\r\n\r\n",
                    o->ws_path, host, o->port, proto) < 0)
        die("out of memory");
    for (;;) {
        int r = conn_flush(c);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        if ((r = wait_fd(c->fd, POLLOUT, deadline_ns)) < 0)
            return r;
    }
    for (;;) {
        ssize_t n = conn_fill_raw(c, &c->wrx, &c->wrx_len, &c->wrx_cap);
        if (n < 0)
            return (int)n;
        const uint8_t *end = c->wrx_len ? memmem(c->wrx, c->wrx_len, "\r\n\r\n", 4) : NULL;
        if (end) {
            size_t hl = (size_t)(end - c->wrx) + 4;
            bool ok = c->wrx_len >= 12 && memcmp(c->wrx, "HTTP/1.1 101", 12) == 0 &&
                      memmem(c->wrx, hl, proto, strlen(proto));
            if (!ok) {
                fprintf(stderr, "mqtt-load: %s: WebSocket upgrade refused: %.*s\n", c->name,
                        (int)MIN(hl, (size_t)200), (const char *)c->wrx);
                return -ECONNREFUSED;
            }
            memmove(c->wrx, c->wrx + hl, c->wrx_len - hl);
            c->wrx_len -= hl;
            c->ws = true;
            return 0;
        }
        if (c->wrx_len > 8192)
            return -EBADMSG;
        int r = wait_fd(c->fd, POLLIN, deadline_ns);
        if (r < 0)
            return r;
    }
}

typedef void (*packet_fn)(struct conn *c, const struct mqtt_packet *p, void *ud);

static int amqp_dispatch(struct conn *c, packet_fn fn, void *ud);

/* Decode every complete packet in rx. < 0 on a malformed stream. */
static int conn_dispatch(struct conn *c, packet_fn fn, void *ud)
{
    if (c->amqp)
        return amqp_dispatch(c, fn, ud);
    size_t off = 0;
    int rc = 0;
    while (off < c->rx_len) {
        size_t plen;
        int r = mqtt_frame(c->rx + off, c->rx_len - off, MAX_PACKET, &plen);
        if (r == 0)
            break;
        if (r < 0) {
            fprintf(stderr, "mqtt-load: %s: bad frame from the broker\n", c->name);
            rc = -EBADMSG;
            break;
        }
        struct mqtt_packet p;
        struct lerr e = {0};
        if (mqtt_decode(c->rx + off, plen, &p, &e) < 0) {
            fprintf(stderr, "mqtt-load: %s: %s\n", c->name, e.msg);
            rc = -EBADMSG;
            break;
        }
        fn(c, &p, ud);
        off += plen;
    }
    if (off) {
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
    }
    return rc;
}

/* ------------------------------------------------------------------ AMQP 1.0 (--amqp) */

/* Proton's output onto the wire (or the next WebSocket frame); its local events dropped (what
 * the broker sends is handled in amqp_dispatch, right after it is read). */
static void amqp_out(struct conn *c)
{
    struct amqp_side *a = c->amqp;
    for (;;) {
        pn_bytes_t w = pn_connection_driver_write_buffer(&a->d);
        if (!w.size)
            break;
        if (lbuf_append(conn_out(c), w.start, w.size) < 0)
            die("out of memory");
        pn_connection_driver_write_done(&a->d, w.size);
    }
}

/* The body of a received message (a data section), or an empty span. */
static pn_bytes_t amqp_body(pn_message_t *m)
{
    pn_data_t *b = pn_message_body(m);
    pn_data_rewind(b);
    if (pn_data_next(b) && pn_data_type(b) == PN_BINARY)
        return pn_data_get_binary(b);
    if (pn_data_type(b) == PN_STRING)
        return pn_data_get_string(b);
    return pn_bytes(0, NULL);
}

/* The int status-code of a CBS answer, or 0. */
static int amqp_cbs_status(pn_message_t *m)
{
    pn_data_t *p = pn_message_properties(m);
    pn_data_rewind(p);
    if (!pn_data_next(p) || pn_data_type(p) != PN_MAP)
        return 0;
    size_t n = pn_data_get_map(p);
    int status = 0;
    pn_data_enter(p);
    for (size_t i = 0; i + 1 < n; i += 2) {
        pn_data_next(p);
        pn_bytes_t k = pn_data_type(p) == PN_STRING ? pn_data_get_string(p) : pn_bytes(0, NULL);
        pn_data_next(p);
        if (k.size == 11 && memcmp(k.start, "status-code", 11) == 0 && pn_data_type(p) == PN_INT)
            status = pn_data_get_int(p);
    }
    pn_data_exit(p);
    return status;
}

static void amqp_condition(struct conn *c, const char *what, pn_condition_t *cond)
{
    if (cond && pn_condition_is_set(cond))
        fprintf(stderr, "mqtt-load: %s: %s: %s: %s\n", c->name, what, pn_condition_get_name(cond),
                pn_condition_get_description(cond));
    else
        fprintf(stderr, "mqtt-load: %s: %s\n", c->name, what);
}

static void amqp_delivery(struct conn *c, pn_delivery_t *d, packet_fn fn, void *ud)
{
    struct amqp_side *a = c->amqp;
    pn_link_t *l = pn_delivery_link(d);
    if (pn_link_is_sender(l)) {
        /* the broker settled (accepted) one we sent unsettled: our PUBACK */
        if (l == a->link && (pn_delivery_remote_state(d) || pn_delivery_settled(d))) {
            struct mqtt_packet p = {.type = MQTT_PUBACK};
            if (pn_delivery_remote_state(d) != PN_ACCEPTED)
                fprintf(stderr, "mqtt-load: %s: a message not accepted (outcome 0x%" PRIx64 ")\n",
                        c->name, pn_delivery_remote_state(d));
            pn_delivery_settle(d);
            if (fn)
                fn(c, &p, ud);
        }
        return;
    }
    if (!pn_delivery_readable(d) || pn_delivery_partial(d))
        return;
    size_t n = pn_delivery_pending(d);
    buf_room(&a->rbuf, 0, &a->rcap, n + 1);
    if (pn_link_recv(l, (char *)a->rbuf, n) != (ssize_t)n)
        die("%s: cannot read a delivery", c->name);
    pn_link_advance(l);
    if (pn_message_decode(a->m, (const char *)a->rbuf, n) < 0) {
        fprintf(stderr, "mqtt-load: %s: a message that does not decode\n", c->name);
        a->failed = true;
    } else if (l == a->cbs_rx) {
        a->cbs_status = amqp_cbs_status(a->m);
    } else if (l == a->link && fn) {
        pn_bytes_t b = amqp_body(a->m);
        struct mqtt_packet p = {.type = MQTT_PUBLISH};
        p.publish.payload = (const uint8_t *)b.start;
        p.publish.payload_len = b.size;
        fn(c, &p, ud); /* qos 0 in p: the settlement is ours, below */
    }
    if (!pn_delivery_settled(d))
        pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
    pn_link_flow(l, 1);
}

/* rx into Proton, its events handled (deliveries through fn as MQTT packets), its answer queued. */
static int amqp_dispatch(struct conn *c, packet_fn fn, void *ud)
{
    struct amqp_side *a = c->amqp;
    size_t off = 0;
    for (;;) {
        while (off < c->rx_len) {
            pn_rwbytes_t rb = pn_connection_driver_read_buffer(&a->d);
            if (!rb.size)
                break;
            size_t n = MIN(rb.size, c->rx_len - off);
            memcpy(rb.start, c->rx + off, n);
            pn_connection_driver_read_done(&a->d, n);
            off += n;
        }
        pn_event_t *e;
        bool any = false;
        while ((e = pn_connection_driver_next_event(&a->d))) {
            any = true;
            switch (pn_event_type(e)) {
            case PN_DELIVERY:
                amqp_delivery(c, pn_event_delivery(e), fn, ud);
                break;
            case PN_LINK_REMOTE_OPEN:
                if (pn_event_link(e) == a->link)
                    a->link_open = true;
                break;
            case PN_LINK_REMOTE_CLOSE:
            case PN_LINK_REMOTE_DETACH:
                amqp_condition(c, "link closed by the broker",
                               pn_link_remote_condition(pn_event_link(e)));
                a->failed = true;
                break;
            case PN_CONNECTION_REMOTE_CLOSE:
                amqp_condition(c, "connection closed by the broker",
                               pn_connection_remote_condition(pn_event_connection(e)));
                a->failed = true;
                break;
            case PN_TRANSPORT_ERROR:
                amqp_condition(c, "transport error", pn_transport_condition(pn_event_transport(e)));
                a->failed = true;
                break;
            default:
                break;
            }
        }
        if (off >= c->rx_len || !any)
            break;
    }
    if (off) {
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
    }
    amqp_out(c);
    return a->failed ? -EBADMSG : 0;
}

/* Setup: run the connection until *flag (or the broker answers nothing before the deadline). */
static int amqp_wait(struct conn *c, const bool *flag, const int *status, int64_t deadline_ns)
{
    for (;;) {
        int r = conn_flush(c);
        if (r < 0)
            return r;
        if (amqp_dispatch(c, NULL, NULL) < 0)
            return -ECONNREFUSED;
        if ((flag && *flag) || (status && *status >= 0))
            return 0;
        r = conn_flush(c);
        if (r < 0)
            return r;
        r = wait_fd(c->fd, (short)(POLLIN | (c->tx.len ? POLLOUT : 0)), deadline_ns);
        if (r < 0)
            return r;
        ssize_t n = conn_fill(c);
        if (n < 0)
            return (int)n;
    }
}

static void put_str_pair(pn_data_t *d, const char *k, const char *v)
{
    pn_data_put_string(d, pn_bytes(strlen(k), k));
    pn_data_put_string(d, pn_bytes(strlen(v), v));
}

/* The audience of a SAS token: its sr= field as it is (the hub takes it percent-encoded). */
static char *token_audience(const char *token)
{
    const char *sr = strstr(token, "sr=");
    if (!sr)
        return NULL;
    sr += 3;
    size_t n = strcspn(sr, "&");
    char *aud = malloc(n + 1);
    if (!aud)
        die("out of memory");
    memcpy(aud, sr, n);
    aud[n] = '\0';
    return aud;
}

/* The AMQP open, a session, the $cbs links and the put-token of token; 0 once it is accepted. */
static int amqp_open(struct conn *c, const struct options *o, const char *token, int64_t deadline)
{
    struct amqp_side *a = calloc(1, sizeof(*a));
    if (!a || pn_connection_driver_init(&a->d, NULL, NULL) != 0)
        die("out of memory");
    c->amqp = a;
    a->m = pn_message();
    a->cbs_status = -1;
    pn_connection_set_container(a->d.connection, c->name);
    pn_connection_set_hostname(a->d.connection, o->servername ? o->servername : o->host);
    pn_connection_open(a->d.connection);
    a->s = pn_session(a->d.connection);
    pn_session_set_incoming_capacity(a->s, 4u << 20);
    pn_session_open(a->s);
    a->cbs_tx = pn_sender(a->s, "cbs-tx");
    pn_terminus_set_address(pn_link_target(a->cbs_tx), "$cbs");
    pn_link_open(a->cbs_tx);
    a->cbs_rx = pn_receiver(a->s, "cbs-rx");
    pn_terminus_set_address(pn_link_source(a->cbs_rx), "$cbs");
    pn_link_open(a->cbs_rx);
    pn_link_flow(a->cbs_rx, 4);
    if (!token) {
        fprintf(stderr, "mqtt-load: %s: --amqp needs a SAS token as the password\n", c->name);
        return -EINVAL;
    }
    char *aud = token_audience(token);
    if (!aud) {
        fprintf(stderr, "mqtt-load: %s: the password is no SAS token (no sr=)\n", c->name);
        return -EINVAL;
    }
    pn_message_clear(a->m);
    pn_msgid_t id = {.type = PN_ULONG};
    id.u.as_ulong = 1;
    pn_message_set_id(a->m, id);
    pn_message_set_address(a->m, "$cbs");
    pn_message_set_reply_to(a->m, "cbs");
    pn_data_t *props = pn_message_properties(a->m);
    pn_data_put_map(props);
    pn_data_enter(props);
    put_str_pair(props, "operation", "put-token");
    put_str_pair(props, "type", "servicebus.windows.net:sastoken");
    put_str_pair(props, "name", aud);
    pn_data_exit(props);
    pn_data_put_string(pn_message_body(a->m), pn_bytes(strlen(token), token));
    free(aud);
    uint64_t tag = ++a->tag;
    pn_delivery(a->cbs_tx, pn_dtag((const char *)&tag, sizeof(tag)));
    if (pn_message_send(a->m, a->cbs_tx, NULL) < 0)
        die("%s: cannot send the put-token", c->name);
    int r = amqp_wait(c, NULL, &a->cbs_status, deadline);
    if (r < 0) {
        fprintf(stderr, "mqtt-load: %s: no put-token answer: %s\n", c->name, strerror(-r));
        return r;
    }
    if (a->cbs_status != 200) {
        fprintf(stderr, "mqtt-load: %s: put-token refused: %d\n", c->name, a->cbs_status);
        return -ECONNREFUSED;
    }
    return 0;
}

/* The link of this connection: a sender to address (the publisher) or a receiver from it with
 * credit for window messages; 0 once the broker attached it. */
static int amqp_link(struct conn *c, bool sender, const char *address, uint32_t window)
{
    struct amqp_side *a = c->amqp;
    a->link = sender ? pn_sender(a->s, "load") : pn_receiver(a->s, "load");
    pn_terminus_set_address(sender ? pn_link_target(a->link) : pn_link_source(a->link), address);
    pn_link_open(a->link);
    if (!sender)
        pn_link_flow(a->link, (int)window);
    int r = amqp_wait(c, &a->link_open, NULL, mono_ns() + (int64_t)SETUP_TIMEOUT_MS * 1000000);
    if (r < 0) {
        fprintf(stderr, "mqtt-load: %s: link to %s not attached: %s\n", c->name, address,
                strerror(-r));
        return r;
    }
    return 0;
}

/* The publisher's message, encoded once: payload of size with the output name as IoT Hub's
 * application property; each send patches the first HEADER_BYTES of the payload in place. */
static void amqp_template(struct conn *c, const uint8_t *payload, size_t size, bool output)
{
    struct amqp_side *a = c->amqp;
    pn_message_clear(a->m);
    if (output) {
        pn_data_t *props = pn_message_properties(a->m);
        pn_data_put_map(props);
        pn_data_enter(props);
        put_str_pair(props, "iothub-outputname", "out1");
        pn_data_exit(props);
    }
    uint8_t *marked = malloc(size);
    if (!marked)
        die("out of memory");
    memcpy(marked, payload, size);
    memcpy(marked, "\x01load-marker-\xfe\x02\x03", HEADER_BYTES);
    pn_data_put_binary(pn_message_body(a->m), pn_bytes(size, (const char *)marked));
    size_t cap = size + 1024;
    a->tmpl = malloc(cap);
    if (!a->tmpl || pn_message_encode(a->m, (char *)a->tmpl, &cap) != 0)
        die("cannot encode the message");
    a->tmpl_len = cap;
    const uint8_t *at = memmem(a->tmpl, a->tmpl_len, marked, HEADER_BYTES);
    if (!at)
        die("the payload is not in the encoded message");
    a->tmpl_off = (size_t)(at - a->tmpl);
    free(marked);
}

static void amqp_send(struct conn *c, const uint8_t *header, bool settled)
{
    struct amqp_side *a = c->amqp;
    memcpy(a->tmpl + a->tmpl_off, header, HEADER_BYTES);
    uint64_t tag = ++a->tag;
    pn_delivery_t *d = pn_delivery(a->link, pn_dtag((const char *)&tag, sizeof(tag)));
    if (pn_link_send(a->link, (const char *)a->tmpl, a->tmpl_len) < 0)
        die("%s: cannot send", c->name);
    pn_link_advance(a->link);
    if (settled)
        pn_delivery_settle(d);
}

static void amqp_free(struct conn *c)
{
    struct amqp_side *a = c->amqp;
    if (!a)
        return;
    pn_message_free(a->m);
    pn_connection_driver_destroy(&a->d);
    free(a->tmpl);
    free(a->rbuf);
    free(a);
    c->amqp = NULL;
}

/* Blocking wait for one packet of the given type during setup (CONNACK, SUBACK). */
struct want {
    enum mqtt_type type;
    bool got;
    struct mqtt_packet p;
    uint8_t code;
};

static void want_cb(struct conn *c, const struct mqtt_packet *p, void *ud)
{
    struct want *w = ud;
    if (p->type != w->type || w->got)
        return;
    w->got = true;
    w->p = *p;
    if (p->type == MQTT_CONNACK)
        w->code = p->connack.return_code;
    else if (p->type == MQTT_SUBACK)
        w->code = p->suback.count ? p->suback.codes[0] : MQTT_SUBACK_FAILURE;
}

static int conn_expect(struct conn *c, enum mqtt_type type, uint8_t *ret_code, int64_t deadline_ns)
{
    struct want w = {.type = type};
    for (;;) {
        int r = conn_flush(c);
        if (r < 0)
            return r;
        if (r == 0 && conn_dispatch(c, want_cb, &w) < 0)
            return -EBADMSG;
        if (w.got) {
            *ret_code = w.code;
            return 0;
        }
        r = wait_fd(c->fd, (short)(POLLIN | (c->tx.len ? POLLOUT : 0)), deadline_ns);
        if (r < 0)
            return r;
        ssize_t n = conn_fill(c);
        if (n < 0)
            return (int)n;
    }
}

/* TCP (+ TLS) + CONNECT/CONNACK. Returns 0 or -errno with a message on stderr. */
static int conn_open(struct conn *c, const char *name, SSL_CTX *ctx, const struct options *o,
                     const char *id, const char *user, const char *pass)
{
    memset(c, 0, sizeof(*c));
    c->name = name;
    c->next_id = 1;
    int64_t deadline = mono_ns() + (int64_t)SETUP_TIMEOUT_MS * 1000000;
    c->fd = tcp_connect(o, deadline);
    if (c->fd < 0) {
        fprintf(stderr, "mqtt-load: %s: connect to %s:%d: %s\n", name, o->host, o->port,
                strerror(-c->fd));
        return c->fd;
    }
    int r = ctx ? tls_handshake(c, ctx, o, deadline) : 0;
    if (r == 0 && o->ws_path) {
        c->mask = (uint32_t)mono_ns() ^ (uint32_t)(uintptr_t)c;
        r = ws_upgrade(c, o, deadline);
    }
    if (r < 0)
        return r;
    if (o->amqp)
        return amqp_open(c, o, pass, deadline);
    struct mqtt_connect cn = {
        .protocol_level = MQTT_PROTOCOL_LEVEL,
        .clean_session = true,
        .keep_alive = (uint16_t)o->keepalive,
        .client_id = mqtt_str_c(id),
        .has_username = user != NULL,
        .username = mqtt_str_c(user),
        .has_password = pass != NULL,
        .password = (const uint8_t *)pass,
        .password_len = pass ? strlen(pass) : 0,
    };
    if (mqtt_encode_connect(conn_out(c), &cn) < 0)
        die("%s: cannot encode CONNECT", name);
    uint8_t code;
    r = conn_expect(c, MQTT_CONNACK, &code, deadline);
    if (r < 0) {
        fprintf(stderr, "mqtt-load: %s: no CONNACK: %s\n", name, strerror(-r));
        return r;
    }
    if (code != MQTT_CONNACK_ACCEPTED) {
        fprintf(stderr, "mqtt-load: %s: connection refused, CONNACK code %u\n", name, code);
        return -ECONNREFUSED;
    }
    return 0;
}

static int conn_subscribe(struct conn *c, const char *filter, int qos)
{
    if (c->amqp)
        return amqp_link(c, false, filter, AMQP_CREDIT);
    struct mqtt_subscription s = {mqtt_str_c(filter), (uint8_t)qos};
    if (mqtt_encode_subscribe(conn_out(c), c->next_id++, &s, 1) < 0)
        die("%s: cannot encode SUBSCRIBE", c->name);
    uint8_t code;
    int r = conn_expect(c, MQTT_SUBACK, &code, mono_ns() + (int64_t)SETUP_TIMEOUT_MS * 1000000);
    if (r < 0) {
        fprintf(stderr, "mqtt-load: %s: no SUBACK: %s\n", c->name, strerror(-r));
        return r;
    }
    if (code == MQTT_SUBACK_FAILURE) {
        fprintf(stderr, "mqtt-load: %s: subscription to %s refused\n", c->name, filter);
        return -EACCES;
    }
    return 0;
}

static void conn_close(struct conn *c)
{
    bool amqp = c->amqp != NULL;
    if (amqp && c->fd >= 0 && !c->closed) {
        pn_connection_close(c->amqp->d.connection);
        conn_flush(c);
    }
    amqp_free(c);
    if (c->fd >= 0 && !c->closed && !amqp) {
        struct lbuf b = LBUF_INIT;
        if (mqtt_encode_empty(&b, MQTT_DISCONNECT) == 0) {
            lbuf_append(conn_out(c), b.data, b.len);
            conn_flush(c);
        }
        lbuf_free(&b);
    }
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c->rx);
    free(c->wrx);
    lbuf_free(&c->tx);
    lbuf_free(&c->mq);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

static void touch_ready(const char *path)
{
    if (!path)
        return;
    FILE *f = fopen(path, "we");
    if (f)
        fclose(f);
}

/* ------------------------------------------------------------------ measurement state */

struct run {
    const struct options *o;
    uint64_t sent, acked, received, dups, bad;
    uint32_t unacked;
    int64_t t_start, t_first_rx, t_last_rx, t_last_ack, t_progress;
    int64_t *lat_ns; /* per message, by arrival */
    uint8_t *seen;   /* bitmap by sequence number */
    uint8_t *payload;
    struct lbuf pub_topic;
    struct conn *sub;
    /* RSS samples of --rss-pid at every tenth of the run */
    struct rss rss[12];
    int n_rss;
};

static void sample_rss(struct run *r)
{
    if (r->o->pid > 0 && r->n_rss < (int)ARRAY_SIZE(r->rss))
        r->rss[r->n_rss++] = read_rss(r->o->pid);
}

static void on_sub_packet(struct conn *c, const struct mqtt_packet *p, void *ud)
{
    struct run *r = ud;
    if (p->type != MQTT_PUBLISH)
        return;
    int64_t now = mono_ns();
    if (p->publish.qos == 1 && mqtt_encode_ack(conn_out(c), MQTT_PUBACK, p->publish.packet_id) < 0)
        die("cannot encode PUBACK");
    if (p->publish.payload_len < HEADER_BYTES) {
        r->bad++;
        return;
    }
    int64_t ts;
    uint64_t seq;
    memcpy(&ts, p->publish.payload, 8);
    memcpy(&seq, p->publish.payload + 8, 8);
    if (r->seen) {
        if (seq >= r->o->count) {
            r->bad++;
            return;
        }
        if (r->seen[seq / 8] & (1u << (seq % 8))) {
            r->dups++;
            return;
        }
        r->seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
    }
    if (!r->received)
        r->t_first_rx = now;
    r->t_last_rx = now;
    r->t_progress = now;
    if (r->lat_ns && r->received < r->o->count)
        r->lat_ns[r->received] = now - ts;
    r->received++;
    if (r->o->pid > 0 && r->o->count >= 10 && r->received % (r->o->count / 10) == 0)
        sample_rss(r);
}

static void on_pub_packet(struct conn *c, const struct mqtt_packet *p, void *ud)
{
    struct run *r = ud;
    if (p->type != MQTT_PUBACK)
        return;
    /* A conforming broker acknowledges in order; the window only needs the count. */
    if (r->unacked)
        r->unacked--;
    r->acked++;
    r->t_last_ack = r->t_progress = mono_ns();
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const int64_t *v, uint64_t n, double p)
{
    if (!n)
        return 0;
    uint64_t i = (uint64_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

/* Queue one PUBLISH of the next sequence number. */
static void publish_next(struct run *r, struct conn *pub)
{
    const struct options *o = r->o;
    int64_t now = mono_ns();
    uint64_t seq = r->sent;
    memcpy(r->payload, &now, 8);
    memcpy(r->payload + 8, &seq, 8);
    if (pub->amqp) {
        amqp_send(pub, r->payload, o->qos == 0);
        if (o->qos)
            r->unacked++;
        if (!r->sent)
            r->t_start = now;
        r->sent++;
        return;
    }
    struct mqtt_publish p = {
        .qos = (uint8_t)o->qos,
        .packet_id = 0,
        .topic = {r->pub_topic.data, r->pub_topic.len},
        .payload = r->payload,
        .payload_len = o->size,
    };
    if (o->qos) {
        p.packet_id = pub->next_id++;
        if (pub->next_id == 0)
            pub->next_id = 1;
        r->unacked++;
    }
    if (mqtt_encode_publish(conn_out(pub), &p) < 0)
        die("cannot encode PUBLISH");
    if (!r->sent)
        r->t_start = now;
    r->sent++;
}

static bool may_send(struct run *r, int64_t now, int64_t *ret_wait_ns)
{
    const struct options *o = r->o;
    if (r->sent >= o->count)
        return false;
    if (o->qos && r->unacked >= o->window)
        return false;
    /* With a subscriber in this process the window is end to end: sent but not yet received. */
    if (r->sub && r->sent - r->received >= o->window)
        return false;
    if (o->rate > 0 && r->sent) {
        int64_t due = r->t_start + (int64_t)((double)r->sent * 1e9 / o->rate);
        if (now < due) {
            *ret_wait_ns = due - now;
            return false;
        }
    }
    return true;
}

static int pump(struct conn *c, packet_fn fn, void *ud, short revents)
{
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = conn_fill(c);
        if (conn_dispatch(c, fn, ud) < 0)
            return -EBADMSG;
        if (n < 0) {
            fprintf(stderr, "mqtt-load: %s: the broker closed the connection\n", c->name);
            c->closed = true;
            return -EPIPE;
        }
    }
    return 0;
}

/* The measurement loop for pub, sub and pubsub. */
static int run_load(struct run *r, struct conn *pub, struct conn *sub)
{
    const struct options *o = r->o;
    int64_t timeout_ns = (int64_t)(o->timeout_s * 1e9);
    r->t_progress = mono_ns();
    for (;;) {
        int64_t now = mono_ns(), wait_ns = -1;
        if (pub) {
            /* Fill the window in one go: the writes coalesce. */
            while (may_send(r, now, &wait_ns))
                publish_next(r, pub);
            if (conn_flush(pub) < 0) {
                fprintf(stderr, "mqtt-load: publisher: write failed\n");
                return -EPIPE;
            }
        }
        if (sub && conn_flush(sub) < 0) {
            fprintf(stderr, "mqtt-load: subscriber: write failed\n");
            return -EPIPE;
        }
        bool pub_done = !pub || (r->sent == o->count && (o->qos == 0 || r->acked == o->count));
        bool sub_done = !sub || r->received >= o->count;
        if (pub_done && sub_done)
            return 0;
        if (stop_requested)
            return -EINTR;
        if (now - r->t_progress > timeout_ns) {
            fprintf(stderr,
                    "mqtt-load: no progress for %.1f s: sent %" PRIu64 ", acked %" PRIu64
                    ", received %" PRIu64 "\n",
                    o->timeout_s, r->sent, r->acked, r->received);
            return -ETIMEDOUT;
        }
        struct pollfd fds[2];
        int nf = 0;
        if (pub)
            fds[nf++] = (struct pollfd){pub->fd, (short)(POLLIN | (pub->tx.len ? POLLOUT : 0)), 0};
        if (sub)
            fds[nf++] = (struct pollfd){sub->fd, (short)(POLLIN | (sub->tx.len ? POLLOUT : 0)), 0};
        /* Rate mode sleeps the whole milliseconds until the next send is due and spins the
         * rest (poll with 0), for an accurate send time. */
        int ms = wait_ns >= 0 ? (int)(wait_ns / 1000000) : 200;
        if (poll(fds, (nfds_t)nf, ms) < 0 && errno != EINTR)
            return -errno;
        int i = 0;
        if (pub && pump(pub, on_pub_packet, r, fds[i++].revents) < 0)
            return -EPIPE;
        if (sub && pump(sub, on_sub_packet, r, fds[i].revents) < 0)
            return -EPIPE;
    }
}

static void print_rss_json(const struct run *r)
{
    printf(", \"rssKb\": [");
    for (int i = 0; i < r->n_rss; i++)
        printf("%s%ld", i ? ", " : "", r->rss[i].rss_kb);
    printf("], \"rssAnonKb\": [");
    for (int i = 0; i < r->n_rss; i++)
        printf("%s%ld", i ? ", " : "", r->rss[i].anon_kb);
    printf("]");
}

static int cmd_load(const struct options *o, SSL_CTX *ctx)
{
    bool want_pub = strcmp(o->mode, "sub") != 0, want_sub = strcmp(o->mode, "pub") != 0;
    if (o->size < HEADER_BYTES)
        die("-s: at least %d bytes (send time and sequence number)", HEADER_BYTES);
    if (o->count == 0 || o->window == 0)
        die("-n and -w must be positive");
    if (o->qos > 1 || o->sub_qos > 1)
        die("QoS 0 or 1");
    if (want_pub && o->qos == 1 && o->window > 65535)
        die("-w: at most 65535 QoS 1 messages in flight");
    struct run r = {.o = o};
    r.payload = calloc(1, o->size);
    if (want_sub) {
        r.lat_ns = calloc(o->count, sizeof(*r.lat_ns));
        r.seen = calloc(o->count / 8 + 1, 1);
    }
    if (!r.payload || (want_sub && (!r.lat_ns || !r.seen)))
        die("out of memory");
    for (size_t i = HEADER_BYTES; i < o->size; i++)
        r.payload[i] = (uint8_t)('a' + i % 26);
    if (want_pub)
        lbuf_puts(&r.pub_topic, o->topic);

    struct conn pub = {.fd = -1}, sub = {.fd = -1};
    if (want_sub) {
        if (!o->filter)
            die("--filter is required");
        if (conn_open(&sub, "subscriber", ctx, o, o->sub_id, o->sub_user, o->sub_pass) < 0 ||
            conn_subscribe(&sub, o->filter, o->sub_qos) < 0)
            return 1;
        r.sub = &sub;
        touch_ready(o->ready_file);
    }
    if (want_pub) {
        if (!o->topic)
            die("--topic is required");
        if (conn_open(&pub, "publisher", ctx, o, o->pub_id, o->pub_user, o->pub_pass) < 0)
            return 1;
        if (o->amqp) {
            if (amqp_link(&pub, true, o->topic, 0) < 0)
                return 1;
            amqp_template(&pub, r.payload, o->size, true);
        }
    }
    sample_rss(&r);
    int64_t cpu0 = o->pid > 0 ? cpu_ns(o->pid) : 0;
    double self0 = self_cpu_s();
    int rc = run_load(&r, want_pub ? &pub : NULL, want_sub ? &sub : NULL);
    int64_t cpu1 = o->pid > 0 ? cpu_ns(o->pid) : 0;
    double self_cpu = self_cpu_s() - self0;
    if (r.n_rss < 11)
        sample_rss(&r);

    /* Throughput: pubsub from first send to last arrival; pub to the last PUBACK (QoS 1) or the
     * last write (QoS 0); sub from the first to the last arrival. */
    int64_t end = want_sub ? r.t_last_rx : (o->qos ? r.t_last_ack : mono_ns());
    int64_t begin = want_pub ? r.t_start : r.t_first_rx;
    uint64_t done = want_sub ? r.received : (o->qos ? r.acked : r.sent);
    double secs = end > begin ? (double)(end - begin) / 1e9 : 0;
    printf("{\"mode\": \"%s\", \"amqp\": %s, \"tls\": %s, \"ws\": %s, \"n\": %" PRIu64
           ", \"size\": %zu, \"qos\": %d, "
           "\"window\": %" PRIu32 ", \"rate\": %.0f, \"ok\": %s, \"sent\": %" PRIu64
           ", \"acked\": %" PRIu64 ", \"received\": %" PRIu64 ", \"dups\": %" PRIu64
           ", \"bad\": %" PRIu64 ", \"seconds\": %.4f, \"msgPerSec\": %.1f",
           o->mode, o->amqp ? "true" : "false", o->tls ? "true" : "false",
           o->ws_path ? "true" : "false", o->count, o->size, o->qos, o->window, o->rate,
           rc == 0 ? "true" : "false", r.sent, r.acked, r.received, r.dups, r.bad, secs,
           secs > 0 ? (double)done / secs : 0.0);
    if (want_sub && want_pub && r.received) {
        uint64_t n = MIN(r.received, o->count);
        qsort(r.lat_ns, n, sizeof(*r.lat_ns), cmp_i64);
        printf(", \"latencyUs\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"max\": %.1f}",
               pct_us(r.lat_ns, n, 50), pct_us(r.lat_ns, n, 90), pct_us(r.lat_ns, n, 99),
               pct_us(r.lat_ns, n, 100));
    }
    printf(", \"loadgenCpuSeconds\": %.3f", self_cpu);
    if (o->pid > 0) {
        printf(", \"brokerCpuSeconds\": %.3f, \"brokerCpuUsPerMsg\": %.2f",
               (double)(cpu1 - cpu0) / 1e9,
               done ? (double)(cpu1 - cpu0) / 1e3 / (double)done : 0.0);
        print_rss_json(&r);
    }
    printf("}\n");
    fflush(stdout);
    if (want_pub)
        conn_close(&pub);
    if (want_sub)
        conn_close(&sub);
    free(r.payload);
    free(r.lat_ns);
    free(r.seen);
    lbuf_free(&r.pub_topic);
    return rc == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ idle clients */

static void discard_packet(struct conn *c, const struct mqtt_packet *p, void *ud)
{
    (void)c;
    (void)p;
    (void)ud;
}

static int cmd_idle(const struct options *o, SSL_CTX *ctx)
{
    if (!o->clients || !o->id_fmt)
        die("idle: -c and --id-fmt are required");
    struct lbuf key = LBUF_INIT;
    if (o->sas_key && (lcrypto_b64_decode(o->sas_key, strlen(o->sas_key), &key) < 0 || !key.len))
        die("--sas-key: not base64");
    if (o->sas_key && !o->sas_resource_fmt)
        die("--sas-key needs --sas-resource-fmt");
    struct conn *cs = calloc(o->clients, sizeof(*cs));
    char **names = calloc(o->clients, sizeof(*names));
    if (!cs || !names)
        die("out of memory");
    struct rss before = o->pid > 0 ? read_rss(o->pid) : (struct rss){0, 0};
    int64_t t0 = mono_ns();
    uint32_t connected = 0;
    int rc = 0;
    for (uint32_t i = 0; i < o->clients && !stop_requested; i++) {
        char *id = expand(o->id_fmt, i);
        char *user = o->user_fmt ? expand(o->user_fmt, i) : NULL;
        char *pass = NULL;
        if (o->sas_key) {
            char *res = expand(o->sas_resource_fmt, i);
            struct lbuf tok = LBUF_INIT;
            uint64_t expiry = (uint64_t)time(NULL) + 3600;
            if (sas_token_make(res, key.data, key.len, expiry, NULL, &tok) < 0)
                die("cannot make a SAS token");
            pass = lbuf_steal(&tok);
            free(res);
        }
        names[i] = expand("client {i}", i);
        int r = conn_open(&cs[i], names[i], ctx, o, id, user, pass);
        if (r == 0 && o->sub_fmt) {
            char *f = expand(o->sub_fmt, i);
            r = conn_subscribe(&cs[i], f, o->sub_qos);
            free(f);
        }
        free(id);
        free(user);
        free(pass);
        if (r < 0) {
            conn_close(&cs[i]);
            rc = 1;
            break;
        }
        connected++;
    }
    double connect_s = (double)(mono_ns() - t0) / 1e9;
    touch_ready(o->ready_file);
    /* Let the broker settle (lazy frees, TLS buffers) before sampling. */
    sleep_s(o->settle_s);
    struct rss after = o->pid > 0 ? read_rss(o->pid) : (struct rss){0, 0};

    /* Hold: read and discard, ping at half the keep-alive, notice closes. */
    int64_t end = mono_ns() + (int64_t)(o->hold_s * 1e9);
    int64_t next_ping = mono_ns() + (int64_t)o->keepalive * 500000000LL;
    struct pollfd *fds = calloc(connected ? connected : 1, sizeof(*fds));
    while (!stop_requested && (o->hold_s <= 0 || mono_ns() < end)) {
        int64_t now = mono_ns();
        if (o->keepalive && now >= next_ping && !o->amqp) {
            for (uint32_t i = 0; i < connected; i++)
                if (!cs[i].closed) {
                    mqtt_encode_empty(conn_out(&cs[i]), MQTT_PINGREQ);
                    if (conn_flush(&cs[i]) < 0)
                        cs[i].closed = true;
                }
            next_ping = now + (int64_t)o->keepalive * 500000000LL;
        }
        for (uint32_t i = 0; i < connected; i++)
            fds[i] = (struct pollfd){cs[i].closed ? -1 : cs[i].fd, POLLIN, 0};
        if (poll(fds, connected, 200) < 0 && errno != EINTR)
            break;
        for (uint32_t i = 0; i < connected; i++)
            if (fds[i].revents && pump(&cs[i], discard_packet, NULL, fds[i].revents) < 0)
                cs[i].closed = true;
    }
    uint32_t alive = 0;
    for (uint32_t i = 0; i < connected; i++)
        alive += !cs[i].closed;
    bool ok = rc == 0 && connected == o->clients && alive == connected;
    printf("{\"mode\": \"idle\", \"amqp\": %s, \"tls\": %s, \"ws\": %s, \"ok\": %s, \"clients\": "
           "%" PRIu32 ", \"connected\": %" PRIu32 ", \"alive\": %" PRIu32
           ", \"connectSeconds\": %.3f",
           o->amqp ? "true" : "false", o->tls ? "true" : "false", o->ws_path ? "true" : "false",
           ok ? "true" : "false", o->clients, connected, alive, connect_s);
    if (o->pid > 0)
        printf(", \"rssBeforeKb\": %ld, \"rssAfterKb\": %ld, \"anonBeforeKb\": %ld, "
               "\"anonAfterKb\": %ld, \"bytesPerClient\": %.0f",
               before.rss_kb, after.rss_kb, before.anon_kb, after.anon_kb,
               connected ? (double)(after.rss_kb - before.rss_kb) * 1024.0 / connected : 0.0);
    printf("}\n");
    fflush(stdout);
    for (uint32_t i = 0; i < connected; i++) {
        conn_close(&cs[i]);
    }
    for (uint32_t i = 0; i < o->clients; i++)
        free(names[i]);
    free(names);
    free(cs);
    free(fds);
    if (key.data)
        lcrypto_wipe(key.data, key.len);
    lbuf_free(&key);
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fputs("Usage: mqtt-load MODE [options]\n"
          "Modes:\n"
          "  pubsub  one publisher and one subscriber in this process: throughput and latency\n"
          "  pub     publish only (QoS 1: until every PUBACK)\n"
          "  sub     subscribe and count -n messages\n"
          "  idle    connect -c clients and hold them\n"
          "Connection:\n"
          "  -H, --host HOST        broker address (127.0.0.1)\n"
          "  -p, --port PORT        (1883)\n"
          "      --tls              TLS; --ca FILE verifies the server (name: --servername)\n"
          "      --ws PATH          MQTT over WebSockets at PATH (subprotocol mqtt), e.g.\n"
          "                         '/$iothub/websocket'\n"
          "      --amqp             AMQP 1.0 instead of MQTT (IoT Hub's links, a CBS put-token of\n"
          "                         the SAS password; --topic and --filter are link addresses;\n"
          "                         over --ws the subprotocol is AMQPWSB10)\n"
          "  -k, --keepalive S      CONNECT keep-alive (60)\n"
          "Publisher / subscriber:\n"
          "  --pub-id --pub-user --pub-pass --topic TOPIC\n"
          "  --sub-id --sub-user --sub-pass --filter FILTER --sub-qos Q\n"
          "Load:\n"
          "  -n COUNT  -s SIZE (>= 16)  -q QOS (0|1)  -w WINDOW (in flight; end to end in pubsub)\n"
          "  --rate MSG/S (0 = as fast as the window allows)  --timeout S (no progress; 10)\n"
          "  --pid PID  the broker: its RSS at every tenth of the run, its CPU time per message\n"
          "  --ready-file F  created once subscribed (sub) or all clients connected (idle)\n"
          "Idle (\"{i}\" in a format is the client's index):\n"
          "  -c N  --id-fmt F  --user-fmt F  --sub-fmt F  --sas-key B64 --sas-resource-fmt F\n"
          "  --hold S (0 = until SIGTERM)  --settle S (before the RSS sample; 1)\n",
          f);
}

int main(int argc, char **argv)
{
    enum {
        O_TLS = 256,
        O_CA,
        O_SNI,
        O_PUB_ID,
        O_PUB_USER,
        O_PUB_PASS,
        O_TOPIC,
        O_SUB_ID,
        O_SUB_USER,
        O_SUB_PASS,
        O_FILTER,
        O_SUB_QOS,
        O_RATE,
        O_TIMEOUT,
        O_PID,
        O_READY,
        O_ID_FMT,
        O_USER_FMT,
        O_SUB_FMT,
        O_SAS_KEY,
        O_SAS_RES,
        O_HOLD,
        O_SETTLE,
        O_WS,
        O_AMQP,
    };
    static const struct option lopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"keepalive", required_argument, NULL, 'k'},
        {"tls", no_argument, NULL, O_TLS},
        {"ca", required_argument, NULL, O_CA},
        {"servername", required_argument, NULL, O_SNI},
        {"ws", required_argument, NULL, O_WS},
        {"amqp", no_argument, NULL, O_AMQP},
        {"pub-id", required_argument, NULL, O_PUB_ID},
        {"pub-user", required_argument, NULL, O_PUB_USER},
        {"pub-pass", required_argument, NULL, O_PUB_PASS},
        {"topic", required_argument, NULL, O_TOPIC},
        {"sub-id", required_argument, NULL, O_SUB_ID},
        {"sub-user", required_argument, NULL, O_SUB_USER},
        {"sub-pass", required_argument, NULL, O_SUB_PASS},
        {"filter", required_argument, NULL, O_FILTER},
        {"sub-qos", required_argument, NULL, O_SUB_QOS},
        {"rate", required_argument, NULL, O_RATE},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"pid", required_argument, NULL, O_PID},
        {"ready-file", required_argument, NULL, O_READY},
        {"id-fmt", required_argument, NULL, O_ID_FMT},
        {"user-fmt", required_argument, NULL, O_USER_FMT},
        {"sub-fmt", required_argument, NULL, O_SUB_FMT},
        {"sas-key", required_argument, NULL, O_SAS_KEY},
        {"sas-resource-fmt", required_argument, NULL, O_SAS_RES},
        {"hold", required_argument, NULL, O_HOLD},
        {"settle", required_argument, NULL, O_SETTLE},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct options o = {
        .host = "127.0.0.1",
        .port = 1883,
        .keepalive = 60,
        .pub_id = "mqtt-load-pub",
        .sub_id = "mqtt-load-sub",
        .sub_qos = -1,
        .count = 10000,
        .size = 64,
        .qos = 0,
        .window = 100,
        .timeout_s = 10,
        .settle_s = 1,
        .hold_s = 0,
    };
    int c;
    while ((c = getopt_long(argc, argv, "H:p:k:n:s:q:w:c:h", lopts, NULL)) != -1) {
        switch (c) {
        case 'H':
            o.host = optarg;
            break;
        case 'p':
            o.port = atoi(optarg);
            break;
        case 'k':
            o.keepalive = atoi(optarg);
            break;
        case 'n':
            o.count = strtoull(optarg, NULL, 10);
            break;
        case 's':
            o.size = strtoul(optarg, NULL, 10);
            break;
        case 'q':
            o.qos = atoi(optarg);
            break;
        case 'w':
            o.window = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'c':
            o.clients = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case O_TLS:
            o.tls = true;
            break;
        case O_CA:
            o.ca_file = optarg;
            break;
        case O_SNI:
            o.servername = optarg;
            break;
        case O_WS:
            o.ws_path = optarg;
            break;
        case O_AMQP:
            o.amqp = true;
            break;
        case O_PUB_ID:
            o.pub_id = optarg;
            break;
        case O_PUB_USER:
            o.pub_user = optarg;
            break;
        case O_PUB_PASS:
            o.pub_pass = optarg;
            break;
        case O_TOPIC:
            o.topic = optarg;
            break;
        case O_SUB_ID:
            o.sub_id = optarg;
            break;
        case O_SUB_USER:
            o.sub_user = optarg;
            break;
        case O_SUB_PASS:
            o.sub_pass = optarg;
            break;
        case O_FILTER:
            o.filter = optarg;
            break;
        case O_SUB_QOS:
            o.sub_qos = atoi(optarg);
            break;
        case O_RATE:
            o.rate = atof(optarg);
            break;
        case O_TIMEOUT:
            o.timeout_s = atof(optarg);
            break;
        case O_PID:
            o.pid = atoi(optarg);
            break;
        case O_READY:
            o.ready_file = optarg;
            break;
        case O_ID_FMT:
            o.id_fmt = optarg;
            break;
        case O_USER_FMT:
            o.user_fmt = optarg;
            break;
        case O_SUB_FMT:
            o.sub_fmt = optarg;
            break;
        case O_SAS_KEY:
            o.sas_key = optarg;
            break;
        case O_SAS_RES:
            o.sas_resource_fmt = optarg;
            break;
        case O_HOLD:
            o.hold_s = atof(optarg);
            break;
        case O_SETTLE:
            o.settle_s = atof(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    o.mode = argv[optind];
    if (o.sub_qos < 0)
        o.sub_qos = o.qos;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    SSL_CTX *ctx = o.tls ? client_ctx(&o) : NULL;
    int rc;
    if (strcmp(o.mode, "pubsub") == 0 || strcmp(o.mode, "pub") == 0 || strcmp(o.mode, "sub") == 0)
        rc = cmd_load(&o, ctx);
    else if (strcmp(o.mode, "idle") == 0)
        rc = cmd_idle(&o, ctx);
    else {
        usage(stderr);
        rc = 2;
    }
    SSL_CTX_free(ctx);
    return rc;
}
