/* fuzz-modclient.c — libFuzzer target for what the module client parses from its peers: the
 * workload API's HTTP responses (fed in pieces) and replies, connection strings, and PUBLISH
 * packets from the hub dispatched to input, twin and method handlers. */
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "modclient-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_input(void *ud, const struct modclient_message *m)
{
    char buf[32];
    modclient_message_prop(m, "k", buf, sizeof(buf));
}

static void on_desired(void *ud, const json_t *d, int64_t version, bool complete) {}

static int on_method(void *ud, const char *method, const json_t *payload, json_t **ret)
{
    *ret = json_deep_copy(payload);
    return 200;
}

static void fuzz_http(const uint8_t *data, size_t size)
{
    struct mc_http_reader r;
    struct lerr e = {0};
    mc_http_reader_init(&r);
    /* the first byte picks the chunk size, so framing across reads is covered */
    size_t chunk = size ? (size_t)data[0] % 17 + 1 : 1;
    int rc = 0;
    for (size_t off = 1; off < size && rc == 0; off += chunk)
        rc = mc_http_reader_feed(&r, (const char *)data + off, MIN(chunk, size - off), &e);
    if (rc == 0)
        rc = mc_http_reader_feed(&r, NULL, 0, &e);
    if (rc == 1) {
        char *s = NULL;
        int status = mc_http_reader_status(&r);
        const char *body = r.body.data ? r.body.data : "";
        if (mc_workload_trust_bundle(status, body, r.body.len, &s, &e) == 0)
            free(s);
        s = NULL;
        if (mc_workload_digest(status, body, r.body.len, &s, &e) == 0)
            free(s);
    }
    mc_http_reader_done(&r);
}

static void fuzz_connection_string(const uint8_t *data, size_t size)
{
    /* a copy, not strndup: ASan's strict_string_checks reads past unterminated input */
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = 0;
    }
    struct modclient_config c = {0};
    struct lerr e = {0};
    if (s)
        modclient_config_from_connection_string(s, &c, &e);
    modclient_config_clear(&c);
    free(s);
}

static void on_c2d(void *ud, const struct modclient_message *m, uint32_t token)
{
    if (m->len && !m->body)
        abort();
}

/* "<topic>\n<payload>", to a module client and to a device client (C2D) */
static void fuzz_publish(const uint8_t *data, size_t size)
{
    static struct event_base *base;
    static struct modclient *c, *dc;
    if (!c) {
        base = event_base_new();
        struct modclient_config cfg = {.device_id = "d",
                                       .module_id = "m",
                                       .iothub_hostname = "h.net",
                                       .gateway_hostname = "gw",
                                       .sas_key = "AAAA"};
        struct lerr e = {0};
        if (!base || modclient_new(base, &cfg, &c, &e) < 0)
            abort();
        modclient_on_input(c, NULL, on_input, NULL);
        modclient_on_desired(c, on_desired, NULL);
        modclient_on_method(c, NULL, on_method, NULL);
        cfg.module_id = NULL;
        if (modclient_new(base, &cfg, &dc, &e) < 0)
            abort();
        modclient_on_c2d(dc, on_c2d, NULL);
        modclient_on_desired(dc, on_desired, NULL);
    }
    const uint8_t *nl = memchr(data, '\n', size);
    size_t tlen = nl ? (size_t)(nl - data) : size;
    mc_dispatch_publish(c, (const char *)data, tlen, nl ? nl + 1 : NULL, nl ? size - tlen - 1 : 0);
    mc_dispatch_publish(dc, (const char *)data, tlen, nl ? nl + 1 : NULL, nl ? size - tlen - 1 : 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_http(data + 1, size - 1);
        break;
    case 1:
        fuzz_connection_string(data + 1, size - 1);
        break;
    default:
        fuzz_publish(data + 1, size - 1);
        break;
    }
    return 0;
}
