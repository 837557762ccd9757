/* message.c — the hub's message model and its stored form (see message.h).
 *
 * Stored form, little-endian, version 1:
 *   u8 version, u8 n_sys, u16 n_app, i64 enqueued_ms, u32 body_len,
 *   u16 source_len, source, NUL,
 *   n_sys x { u8 id, u16 len, bytes, NUL },
 *   n_app x { u16 klen, key, NUL, u16 vlen, value, NUL },
 *   body.
 * Strings carry their NUL so decoded views are C strings without copying. */
#include "message.h"

#include <errno.h>
#include <string.h>

static const char *const route_names[HUB_SYS_COUNT] = {
    [IOTHUB_PROP_MESSAGE_ID] = "messageId",
    [IOTHUB_PROP_CORRELATION_ID] = "correlationId",
    [IOTHUB_PROP_USER_ID] = "userId",
    [IOTHUB_PROP_TO] = "to",
    [IOTHUB_PROP_EXPIRY_TIME_UTC] = "expiryTimeUtc",
    [IOTHUB_PROP_CONTENT_TYPE] = "contentType",
    [IOTHUB_PROP_CONTENT_ENCODING] = "contentEncoding",
    [IOTHUB_PROP_OUTPUT_NAME] = "outputName",
    [IOTHUB_PROP_CONNECTION_DEVICE_ID] = "connectionDeviceId",
    [IOTHUB_PROP_CONNECTION_MODULE_ID] = "connectionModuleId",
    [IOTHUB_PROP_INTERFACE_ID] = "interfaceId",
    [IOTHUB_PROP_CREATION_TIME_UTC] = "creationTimeUtc",
    [IOTHUB_PROP_COMPONENT_NAME] = "componentName",
    [IOTHUB_PROP_MESSAGE_SCHEMA] = "messageSchema",
    [HUB_SYS_ENQUEUED_TIME] = "enqueuedTime",
    [HUB_SYS_CONNECTION_DEVICE_GENERATION_ID] = "connectionDeviceGenerationId",
    [HUB_SYS_CONNECTION_AUTH_METHOD] = "connectionAuthMethod",
    [HUB_SYS_INPUT_NAME] = "inputName",
    [HUB_SYS_MESSAGE_TYPE] = "messageType",
    [HUB_SYS_ACK] = "ack",
};

const char *hub_sys_route_name(int sys)
{
    return sys >= 0 && sys < HUB_SYS_COUNT ? route_names[sys] : NULL;
}

static int put16(struct lbuf *b, size_t v)
{
    if (v > 0xffff)
        return -E2BIG;
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    return lbuf_append(b, x, 2);
}

static int put_str16(struct lbuf *b, const char *s)
{
    size_t n = strlen(s);
    int r = put16(b, n);
    if (r == 0)
        r = lbuf_append(b, s, n + 1);
    return r;
}

int hub_message_encode(const struct hub_message *m, struct lbuf *out)
{
    size_t start = out->len;
    size_t n_sys = 0;
    for (int i = 0; i < HUB_SYS_COUNT; i++)
        n_sys += m->sys[i] != NULL;
    if (m->n_app > HUB_MESSAGE_MAX_APP || m->body_len > UINT32_MAX)
        return -E2BIG;
    uint8_t hdr[16];
    hdr[0] = HUB_MESSAGE_VERSION;
    hdr[1] = (uint8_t)n_sys;
    hdr[2] = (uint8_t)m->n_app;
    hdr[3] = (uint8_t)(m->n_app >> 8);
    uint64_t t = (uint64_t)m->enqueued_ms;
    for (int i = 0; i < 8; i++)
        hdr[4 + i] = (uint8_t)(t >> (8 * i));
    uint32_t bl = (uint32_t)m->body_len;
    for (int i = 0; i < 4; i++)
        hdr[12 + i] = (uint8_t)(bl >> (8 * i));
    int r = lbuf_append(out, hdr, sizeof(hdr));
    if (r == 0)
        r = put_str16(out, m->source ? m->source : "");
    for (int i = 0; r == 0 && i < HUB_SYS_COUNT; i++) {
        if (!m->sys[i])
            continue;
        uint8_t id = (uint8_t)i;
        r = lbuf_append(out, &id, 1);
        if (r == 0)
            r = put_str16(out, m->sys[i]);
    }
    for (size_t i = 0; r == 0 && i < m->n_app; i++) {
        r = put_str16(out, m->app_key[i]);
        if (r == 0)
            r = put_str16(out, m->app_value[i]);
    }
    if (r == 0 && m->body_len)
        r = lbuf_append(out, m->body, m->body_len);
    if (r < 0) {
        out->len = start;
        if (out->data)
            out->data[start] = 0;
    }
    return r;
}

struct reader {
    const uint8_t *p, *end;
};

static int get_str16(struct reader *rd, const char **ret)
{
    if (rd->end - rd->p < 2)
        return -EBADMSG;
    size_t n = (size_t)rd->p[0] | ((size_t)rd->p[1] << 8);
    rd->p += 2;
    if ((size_t)(rd->end - rd->p) < n + 1 || rd->p[n] != 0 || memchr(rd->p, 0, n))
        return -EBADMSG;
    *ret = (const char *)rd->p;
    rd->p += n + 1;
    return 0;
}

int hub_message_decode(const void *data, size_t len, struct hub_message *m, struct lerr *e)
{
    memset(m, 0, sizeof(*m));
    struct reader rd = {data, (const uint8_t *)data + len};
    if (len < 16)
        return lerr_set(e, -EBADMSG, "stored message: %zu bytes is too short", len);
    const uint8_t *h = data;
    if (h[0] != HUB_MESSAGE_VERSION)
        return lerr_set(e, -EBADMSG, "stored message: unknown version %u", h[0]);
    size_t n_sys = h[1];
    size_t n_app = (size_t)h[2] | ((size_t)h[3] << 8);
    uint64_t t = 0;
    for (int i = 0; i < 8; i++)
        t |= (uint64_t)h[4 + i] << (8 * i);
    uint32_t bl = 0;
    for (int i = 0; i < 4; i++)
        bl |= (uint32_t)h[12 + i] << (8 * i);
    if (n_sys > HUB_SYS_COUNT || n_app > HUB_MESSAGE_MAX_APP)
        return lerr_set(e, -EBADMSG, "stored message: too many properties");
    rd.p += 16;
    if (get_str16(&rd, &m->source) < 0)
        return lerr_set(e, -EBADMSG, "stored message: bad source");
    for (size_t i = 0; i < n_sys; i++) {
        if (rd.p >= rd.end)
            return lerr_set(e, -EBADMSG, "stored message: truncated properties");
        uint8_t id = *rd.p++;
        const char *v;
        if (id >= HUB_SYS_COUNT || get_str16(&rd, &v) < 0 || m->sys[id])
            return lerr_set(e, -EBADMSG, "stored message: bad system property");
        m->sys[id] = v;
    }
    for (size_t i = 0; i < n_app; i++) {
        if (get_str16(&rd, &m->app_key[i]) < 0 || get_str16(&rd, &m->app_value[i]) < 0)
            return lerr_set(e, -EBADMSG, "stored message: bad application property");
    }
    m->n_app = n_app;
    if ((size_t)(rd.end - rd.p) != bl)
        return lerr_set(e, -EBADMSG, "stored message: body length mismatch");
    m->body = rd.p;
    m->body_len = bl;
    m->enqueued_ms = (int64_t)t;
    return 0;
}

void hub_message_route_view(const struct hub_message *m, struct route_prop *sys,
                            struct route_prop *app, struct route_message *ret)
{
    size_t ns = 0;
    for (int i = 0; i < HUB_SYS_COUNT; i++)
        if (m->sys[i] && route_names[i])
            sys[ns++] = (struct route_prop){route_names[i], m->sys[i]};
    for (size_t i = 0; i < m->n_app; i++)
        app[i] = (struct route_prop){m->app_key[i], m->app_value[i]};
    *ret = (struct route_message){
        .source = m->source,
        .sys = sys,
        .n_sys = ns,
        .app = app,
        .n_app = m->n_app,
        .body = m->body,
        .body_len = m->body_len,
    };
}

void hub_message_props(const struct hub_message *m, struct iothub_props *ret)
{
    memset(ret, 0, sizeof(*ret));
    for (int i = 0; i < IOTHUB_PROP_COUNT; i++)
        if (m->sys[i])
            ret->sys[i] = mqtt_str_c(m->sys[i]);
    for (size_t i = 0; i < m->n_app && i < IOTHUB_APP_PROPS_MAX; i++) {
        ret->app[i].key = mqtt_str_c(m->app_key[i]);
        ret->app[i].value = mqtt_str_c(m->app_value[i]);
    }
    ret->n_app = MIN(m->n_app, (size_t)IOTHUB_APP_PROPS_MAX);
}
