/* ntp.c — the `clock` check: one SNTP (RFC 4330) exchange with check.ntp_server, and the offset
 * of the host's clock from it. The reply is an untrusted datagram: it must be a server answer
 * to our request (its originate timestamp echoes ours) before any field is believed. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/timeutil.h"
#include "check-internal.h"

#define NTP_PACKET 48
#define NTP_UNIX_OFFSET 2208988800ULL /* seconds from 1900 to 1970 */
#define NTP_MAX_ADDRESSES 4

uint64_t check_ntp_timestamp(int64_t unix_ms)
{
    uint64_t secs = (uint64_t)(unix_ms / 1000) + NTP_UNIX_OFFSET;
    uint64_t frac = ((uint64_t)(unix_ms % 1000) << 32) / 1000;
    return (secs << 32) | frac; /* seconds wrap in 2036 (era 1), as on the wire */
}

static int64_t ntp_to_unix_ms(uint64_t ts)
{
    uint64_t secs = ts >> 32, frac = ts & 0xffffffffu;
    /* Era 0 ends in 2036; a timestamp with the top bit clear is read as era 1. */
    if (!(secs & 0x80000000u))
        secs += 1ULL << 32;
    return (int64_t)(secs - NTP_UNIX_OFFSET) * 1000 + (int64_t)((frac * 1000) >> 32);
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

int check_ntp_parse_reply(const uint8_t *buf, size_t n, uint64_t sent_ts, int64_t t1_ms,
                          int64_t t4_ms, int64_t *ret_offset_ms)
{
    if (n < NTP_PACKET)
        return -EPROTO;
    unsigned li = buf[0] >> 6, vn = (buf[0] >> 3) & 7, mode = buf[0] & 7;
    if (mode != 4 || vn < 3 || vn > 4)
        return -EPROTO;
    if (get_be64(buf + 24) != sent_ts) /* not an answer to our request */
        return -EPROTO;
    if (buf[1] == 0)
        return -EAGAIN; /* kiss-o'-death: the server asks us to go away */
    if (li == 3 || buf[1] > 15)
        return -EPROTO; /* the server's own clock is not synchronised */
    uint64_t t2 = get_be64(buf + 32), t3 = get_be64(buf + 40);
    if (t2 == 0 || t3 == 0)
        return -EPROTO;
    int64_t t2_ms = ntp_to_unix_ms(t2), t3_ms = ntp_to_unix_ms(t3);
    *ret_offset_ms = ((t2_ms - t1_ms) + (t3_ms - t4_ms)) / 2;
    return 0;
}

/* One exchange with one address, within deadline (monotonic ms). */
static int ntp_exchange(const struct addrinfo *ai, int64_t deadline, int64_t *ret_offset)
{
    _cleanup_close_ int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return neg_errno();
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        return neg_errno();
    uint8_t req[NTP_PACKET] = {0};
    req[0] = (4 << 3) | 3; /* version 4, client */
    int64_t t1 = ltime_now_ms();
    uint64_t sent = check_ntp_timestamp(t1);
    uint16_t noise = 0;
    lcrypto_random(&noise, sizeof(noise)); /* low bits unguessable: a spoofed reply must echo */
    sent ^= noise;
    put_be64(req + 40, sent);
    if (send(fd, req, sizeof(req), 0) < 0)
        return neg_errno();
    for (;;) {
        int64_t left = deadline - ltime_mono_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return neg_errno();
        if (pr == 0)
            return -ETIMEDOUT;
        uint8_t buf[128];
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        int64_t t4 = ltime_now_ms();
        if (got < 0)
            return neg_errno(); /* ECONNREFUSED: ICMP port unreachable */
        int r = check_ntp_parse_reply(buf, (size_t)got, sent, t1, t4, ret_offset);
        if (r != -EPROTO)
            return r;
        /* not an answer to us: keep waiting for one until the deadline */
    }
}

void check_clock(struct check_ctx *ctx, struct check_report *rep)
{
    const char *server = ctx->cfg->check.ntp_server;
    static const char fix_reach[] =
        "allow UDP port 123 to check.ntp_server, or set check.ntp_server to an NTP server this "
        "network reaches";
    static const char fix_sync[] =
        "enable time synchronisation (`timedatectl set-ntp true` with systemd-timesyncd, or "
        "install chrony); ledge's certificates and SAS tokens depend on the clock";
    char port[8];
    snprintf(port, sizeof(port), "%u", ctx->in->ntp_port ? ctx->in->ntp_port : 123);
    /* No AI_ADDRCONFIG: it hides 127.0.0.1 on a host whose only IPv4 address is loopback. An
     * address this host cannot reach fails fast and the next one is tried. */
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(server, port, &hints, &res);
    if (g != 0) {
        check_report_set(rep, CHECK_WARNING, fix_reach,
                         "cannot compare the clock: NTP server %s: %s", server, gai_strerror(g));
        return;
    }
    int64_t deadline = ltime_mono_ms() + ctx->cfg->check.ntp_timeout_ms;
    int64_t offset = 0;
    int r = -ETIMEDOUT, n = 0;
    for (struct addrinfo *ai = res; ai && n < NTP_MAX_ADDRESSES; ai = ai->ai_next, n++) {
        r = ntp_exchange(ai, deadline, &offset);
        if (r == 0 || ltime_mono_ms() >= deadline)
            break;
    }
    freeaddrinfo(res);
    if (r < 0) {
        check_report_set(rep, CHECK_WARNING, fix_reach,
                         "cannot compare the clock: NTP server %s:%s %s", server, port,
                         r == -ETIMEDOUT ? "did not answer in time"
                         : r == -EAGAIN  ? "refused to answer (kiss-o'-death)"
                         : r == -EPROTO  ? "answered, but is not synchronised itself"
                                         : strerror(-r));
        return;
    }
    int64_t mag = offset < 0 ? -offset : offset;
    const char *dir = offset > 0 ? "behind" : "ahead of";
    if (mag > CHECK_CLOCK_ERROR_MS) {
        check_report_set(rep, CHECK_ERROR, fix_sync,
                         "the clock is %.1f s %s %s: certificates and tokens will be refused",
                         (double)mag / 1000, dir, server);
        return;
    }
    if (mag > CHECK_CLOCK_WARN_MS) {
        check_report_set(rep, CHECK_WARNING, fix_sync, "the clock is %.1f s %s %s",
                         (double)mag / 1000, dir, server);
        return;
    }
    check_report_ok(rep, "the clock is within %lld ms of %s", (long long)mag, server);
}
