/* codec.c — MQTT 3.1.1 framing, decoding (a validator per packet type, dispatched by table) and
 * encoding. Decoders never allocate; encoders size, reserve once, then write (failure = no change).
 */
#include "mqtt/codec.h"

#include <string.h>

#include "mqtt/topic.h"

#define BAD(e, ...) lerr_set(e, MQTT_EMALFORMED, __VA_ARGS__)

static const char *const type_names[16] = {
    [MQTT_CONNECT] = "CONNECT",   [MQTT_CONNACK] = "CONNACK",
    [MQTT_PUBLISH] = "PUBLISH",   [MQTT_PUBACK] = "PUBACK",
    [MQTT_PUBREC] = "PUBREC",     [MQTT_PUBREL] = "PUBREL",
    [MQTT_PUBCOMP] = "PUBCOMP",   [MQTT_SUBSCRIBE] = "SUBSCRIBE",
    [MQTT_SUBACK] = "SUBACK",     [MQTT_UNSUBSCRIBE] = "UNSUBSCRIBE",
    [MQTT_UNSUBACK] = "UNSUBACK", [MQTT_PINGREQ] = "PINGREQ",
    [MQTT_PINGRESP] = "PINGRESP", [MQTT_DISCONNECT] = "DISCONNECT",
};

/* Low nibble of byte 0 that each type must carry (§2.2.2); PUBLISH's are its own (-1). */
static const int8_t required_flags[16] = {
    [MQTT_CONNECT] = 0,  [MQTT_CONNACK] = 0,     [MQTT_PUBLISH] = -1, [MQTT_PUBACK] = 0,
    [MQTT_PUBREC] = 0,   [MQTT_PUBREL] = 2,      [MQTT_PUBCOMP] = 0,  [MQTT_SUBSCRIBE] = 2,
    [MQTT_SUBACK] = 0,   [MQTT_UNSUBSCRIBE] = 2, [MQTT_UNSUBACK] = 0, [MQTT_PINGREQ] = 0,
    [MQTT_PINGRESP] = 0, [MQTT_DISCONNECT] = 0,
};

const char *mqtt_type_name(enum mqtt_type type)
{
    if ((unsigned)type < 16 && type_names[type])
        return type_names[type];
    return "reserved";
}

bool mqtt_type_from_client(enum mqtt_type type)
{
    switch (type) {
    case MQTT_CONNECT:
    case MQTT_PUBLISH:
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
    case MQTT_PINGREQ:
    case MQTT_DISCONNECT:
        return true;
    default:
        return false;
    }
}

bool mqtt_type_from_server(enum mqtt_type type)
{
    switch (type) {
    case MQTT_CONNACK:
    case MQTT_PUBLISH:
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
    case MQTT_PINGRESP:
        return true;
    default:
        return false;
    }
}

int mqtt_connack_code_for_error(int err)
{
    switch (err) {
    case MQTT_EPROTOCOL_VERSION:
        return MQTT_CONNACK_UNACCEPTABLE_PROTOCOL;
    case MQTT_EIDENTIFIER:
        return MQTT_CONNACK_IDENTIFIER_REJECTED;
    default:
        return -1;
    }
}

/* ---- framing ---- */

/* Parse the fixed header's remaining length. Returns 1 (with header length and remaining
 * length), 0 when more bytes are needed, or MQTT_EMALFORMED for a 5th length byte. */
static inline int fixed_header(const uint8_t *buf, size_t len, size_t *ret_hdr, size_t *ret_rl)
{
    size_t rl = 0;
    for (size_t i = 1; i <= 4; i++) {
        if (i >= len)
            return 0;
        uint8_t c = buf[i];
        rl |= (size_t)(c & 0x7f) << (7 * (i - 1));
        if (!(c & 0x80)) {
            *ret_hdr = i + 1;
            *ret_rl = rl;
            return 1;
        }
    }
    return MQTT_EMALFORMED;
}

int mqtt_frame_length(const uint8_t *buf, size_t len, size_t max_packet, size_t *ret_packet_len)
{
    size_t hdr, rl;
    int r = fixed_header(buf, len, &hdr, &rl);
    if (r <= 0)
        return r;
    if (max_packet == 0 || max_packet > MQTT_MAX_PACKET)
        max_packet = MQTT_MAX_PACKET;
    /* hdr + rl cannot overflow: hdr <= 5 and rl < 2^28. */
    if (hdr + rl > max_packet)
        return -EMSGSIZE;
    *ret_packet_len = hdr + rl;
    return 1;
}

int mqtt_frame(const uint8_t *buf, size_t len, size_t max_packet, size_t *ret_packet_len)
{
    size_t n;
    int r = mqtt_frame_length(buf, len, max_packet, &n);
    if (r <= 0)
        return r;
    if (len < n)
        return 0;
    *ret_packet_len = n;
    return 1;
}

/* ---- decoding ---- */

struct reader {
    const uint8_t *p;
    const uint8_t *end;
};

static inline size_t rd_left(const struct reader *r)
{
    return (size_t)(r->end - r->p);
}

static inline bool rd_u8(struct reader *r, uint8_t *ret)
{
    if (r->p >= r->end)
        return false;
    *ret = *r->p++;
    return true;
}

static inline bool rd_u16(struct reader *r, uint16_t *ret)
{
    if (rd_left(r) < 2)
        return false;
    *ret = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return true;
}

/* A 16-bit length followed by that many bytes (strings and binary data, §1.5.3). */
static inline bool rd_bin(struct reader *r, const uint8_t **ret, size_t *ret_len)
{
    uint16_t n;
    if (!rd_u16(r, &n))
        return false;
    if (rd_left(r) < n) {
        r->p -= 2;
        return false;
    }
    *ret = r->p;
    *ret_len = n;
    r->p += n;
    return true;
}

static inline bool rd_str(struct reader *r, struct mqtt_str *ret)
{
    const uint8_t *p;
    if (!rd_bin(r, &p, &ret->len))
        return false;
    ret->ptr = (const char *)p;
    return true;
}

/* A field check failed with a message in e: make it a protocol violation with context. */
static int field_failed(struct lerr *e, const char *what)
{
    if (e)
        e->code = MQTT_EMALFORMED;
    lerr_prefix(e, "%s", what);
    return MQTT_EMALFORMED;
}

static int no_trailing(const struct reader *r, enum mqtt_type type, struct lerr *e)
{
    if (r->p != r->end)
        return BAD(e, "%s: %zu trailing byte(s)", type_names[type], rd_left(r));
    return 0;
}

/* Untrusted bytes quoted in a message: printable ASCII only, bounded. */
static const char *quote(char out[static 24], const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < 20; i++)
        out[k++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (n > 20)
        out[k++] = '.', out[k++] = '.';
    out[k] = 0;
    return out;
}

static int decode_connect(struct reader *r, uint8_t flags, struct mqtt_packet *p, struct lerr *e)
{
    struct mqtt_connect *c = &p->connect;
    struct mqtt_str name;
    uint8_t level, cf;
    char q[24];

    if (!rd_str(r, &name))
        return BAD(e, "CONNECT: truncated protocol name");
    if (!rd_u8(r, &level))
        return BAD(e, "CONNECT: truncated protocol level");
    if (name.len == 4 && memcmp(name.ptr, "MQTT", 4) == 0) {
        if (level != MQTT_PROTOCOL_LEVEL)
            return lerr_set(e, MQTT_EPROTOCOL_VERSION,
                            "CONNECT: unsupported protocol level %u (only 4, MQTT 3.1.1)", level);
    } else if (name.len == 6 && memcmp(name.ptr, "MQIsdp", 6) == 0) {
        return lerr_set(e, MQTT_EPROTOCOL_VERSION,
                        "CONNECT: unsupported protocol MQIsdp level %u (MQTT 3.1)", level);
    } else {
        return BAD(e, "CONNECT: unknown protocol name '%s'", quote(q, name.ptr, name.len));
    }
    c->protocol_level = level;

    if (!rd_u8(r, &cf))
        return BAD(e, "CONNECT: truncated connect flags");
    if (cf & 0x01)
        return BAD(e, "CONNECT: reserved flag set");
    c->clean_session = cf & 0x02;
    c->will = cf & 0x04;
    c->will_qos = (cf >> 3) & 3;
    c->will_retain = cf & 0x20;
    c->has_password = cf & 0x40;
    c->has_username = cf & 0x80;
    if (!c->will && (c->will_qos || c->will_retain))
        return BAD(e, "CONNECT: will QoS or retain set without the will flag");
    if (c->will_qos == 3)
        return BAD(e, "CONNECT: will QoS 3 is invalid");
    if (c->has_password && !c->has_username)
        return BAD(e, "CONNECT: password flag set without the user name flag");
    if (!rd_u16(r, &c->keep_alive))
        return BAD(e, "CONNECT: truncated keep alive");

    if (!rd_str(r, &c->client_id))
        return BAD(e, "CONNECT: truncated client id");
    if (mqtt_utf8_check(c->client_id.ptr, c->client_id.len, e) < 0)
        return field_failed(e, "CONNECT: client id");
    c->will_topic = (struct mqtt_str){NULL, 0};
    c->will_payload = NULL;
    c->will_payload_len = 0;
    if (c->will) {
        if (!rd_str(r, &c->will_topic))
            return BAD(e, "CONNECT: truncated will topic");
        if (mqtt_topic_name_check(c->will_topic.ptr, c->will_topic.len, e) < 0)
            return field_failed(e, "CONNECT: will");
        if (!rd_bin(r, &c->will_payload, &c->will_payload_len))
            return BAD(e, "CONNECT: truncated will message");
    }
    c->username = (struct mqtt_str){NULL, 0};
    if (c->has_username) {
        if (!rd_str(r, &c->username))
            return BAD(e, "CONNECT: truncated user name");
        if (mqtt_utf8_check(c->username.ptr, c->username.len, e) < 0)
            return field_failed(e, "CONNECT: user name");
    }
    c->password = NULL;
    c->password_len = 0;
    if (c->has_password && !rd_bin(r, &c->password, &c->password_len))
        return BAD(e, "CONNECT: truncated password");
    int ret = no_trailing(r, MQTT_CONNECT, e);
    if (ret < 0)
        return ret;
    /* Not malformed, but refused with a CONNACK (§3.1.3-8). */
    if (c->client_id.len == 0 && !c->clean_session)
        return lerr_set(e, MQTT_EIDENTIFIER, "CONNECT: an empty client id requires clean session");
    return 0;
}

static int decode_connack(struct reader *r, uint8_t flags, struct mqtt_packet *p, struct lerr *e)
{
    uint8_t af, rc;
    if (!rd_u8(r, &af) || !rd_u8(r, &rc))
        return BAD(e, "CONNACK: truncated");
    if (af & 0xfe)
        return BAD(e, "CONNACK: reserved acknowledge flags 0x%02x", af);
    if (rc > MQTT_CONNACK_NOT_AUTHORIZED)
        return BAD(e, "CONNACK: return code %u is invalid", rc);
    if ((af & 1) && rc != MQTT_CONNACK_ACCEPTED)
        return BAD(e, "CONNACK: session present with return code %u", rc);
    p->connack.session_present = af & 1;
    p->connack.return_code = rc;
    return no_trailing(r, MQTT_CONNACK, e);
}

static int decode_publish(struct reader *r, uint8_t flags, struct mqtt_packet *p, struct lerr *e)
{
    struct mqtt_publish *pub = &p->publish;
    pub->retain = flags & 1;
    pub->qos = (flags >> 1) & 3;
    pub->dup = flags & 8;
    if (pub->qos == 3)
        return BAD(e, "PUBLISH: QoS 3 is invalid");
    if (pub->dup && pub->qos == 0)
        return BAD(e, "PUBLISH: DUP set on a QoS 0 message");
    if (!rd_str(r, &pub->topic))
        return BAD(e, "PUBLISH: truncated topic name");
    if (mqtt_topic_name_check(pub->topic.ptr, pub->topic.len, e) < 0)
        return field_failed(e, "PUBLISH");
    pub->packet_id = 0;
    if (pub->qos > 0) {
        if (!rd_u16(r, &pub->packet_id))
            return BAD(e, "PUBLISH: truncated packet id");
        if (pub->packet_id == 0)
            return BAD(e, "PUBLISH: packet id 0 with QoS %u", pub->qos);
    }
    pub->payload = r->p;
    pub->payload_len = rd_left(r);
    return 0;
}

/* PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK */
static int decode_ack(struct reader *r, uint8_t flags, struct mqtt_packet *p, struct lerr *e)
{
    const char *name = type_names[p->type];
    if (!rd_u16(r, &p->ack.packet_id))
        return BAD(e, "%s: truncated packet id", name);
    if (p->ack.packet_id == 0)
        return BAD(e, "%s: packet id 0", name);
    return no_trailing(r, p->type, e);
}

/* SUBSCRIBE (filter + requested QoS) and UNSUBSCRIBE (filter) lists. */
static int decode_filters(struct reader *r, uint8_t flags, struct mqtt_packet *p, struct lerr *e)
{
    const char *name = type_names[p->type];
    bool with_qos = p->type == MQTT_SUBSCRIBE;
    struct mqtt_subscribe *s = &p->subscribe;

    if (!rd_u16(r, &s->packet_id))
        return BAD(e, "%s: truncated packet id", name);
    if (s->packet_id == 0)
        return BAD(e, "%s: packet id 0", name);
    s->list = r->p;
    s->list_len = rd_left(r);
    s->count = 0;
    while (r->p < r->end) {
        struct mqtt_str f;
        if (!rd_str(r, &f))
            return BAD(e, "%s: truncated topic filter", name);
        if (mqtt_topic_filter_check(f.ptr, f.len, e) < 0)
            return field_failed(e, name);
        if (with_qos) {
            uint8_t qos;
            if (!rd_u8(r, &qos))
                return BAD(e, "%s: missing requested QoS", name);
            if (qos & 0xfc)
                return BAD(e, "%s: reserved bits set in requested QoS 0x%02x", name, qos);
            if (qos == 3)
                return BAD(e, "%s: requested QoS 3 is invalid", name);
        }
        s->count++;
    }
    if (s->count == 0)
        return BAD(e, "%s: no topic filters", name);
    return 0;
}

static int decode_suback(struct reader *r, uint8_t flags, struct mqtt_packet *p, struct lerr *e)
{
    struct mqtt_suback *s = &p->suback;
    if (!rd_u16(r, &s->packet_id))
        return BAD(e, "SUBACK: truncated packet id");
    if (s->packet_id == 0)
        return BAD(e, "SUBACK: packet id 0");
    s->codes = r->p;
    s->count = rd_left(r);
    if (s->count == 0)
        return BAD(e, "SUBACK: no return codes");
    for (size_t i = 0; i < s->count; i++) {
        uint8_t c = s->codes[i];
        if (c > MQTT_SUBACK_QOS2 && c != MQTT_SUBACK_FAILURE)
            return BAD(e, "SUBACK: invalid return code 0x%02x", c);
    }
    r->p = r->end;
    return 0;
}

/* PINGREQ, PINGRESP, DISCONNECT */
static int decode_empty(struct reader *r, uint8_t flags, struct mqtt_packet *p, struct lerr *e)
{
    return no_trailing(r, p->type, e);
}

typedef int (*decode_fn)(struct reader *r, uint8_t flags, struct mqtt_packet *p, struct lerr *e);

static const decode_fn decoders[16] = {
    [MQTT_CONNECT] = decode_connect, [MQTT_CONNACK] = decode_connack,
    [MQTT_PUBLISH] = decode_publish, [MQTT_PUBACK] = decode_ack,
    [MQTT_PUBREC] = decode_ack,      [MQTT_PUBREL] = decode_ack,
    [MQTT_PUBCOMP] = decode_ack,     [MQTT_SUBSCRIBE] = decode_filters,
    [MQTT_SUBACK] = decode_suback,   [MQTT_UNSUBSCRIBE] = decode_filters,
    [MQTT_UNSUBACK] = decode_ack,    [MQTT_PINGREQ] = decode_empty,
    [MQTT_PINGRESP] = decode_empty,  [MQTT_DISCONNECT] = decode_empty,
};

int mqtt_decode(const uint8_t *buf, size_t len, struct mqtt_packet *ret, struct lerr *e)
{
    size_t hdr, rl;
    int r = fixed_header(buf, len, &hdr, &rl);
    if (r < 0)
        return BAD(e, "remaining length longer than 4 bytes");
    if (r == 0 || hdr + rl != len)
        return BAD(e, "packet of %zu bytes does not match its fixed header", len);

    unsigned type = buf[0] >> 4, flags = buf[0] & 0x0f;
    decode_fn fn = decoders[type];
    if (!fn)
        return BAD(e, "packet type %u is reserved", type);
    if (required_flags[type] >= 0 && (int)flags != required_flags[type])
        return BAD(e, "%s: invalid fixed header flags 0x%x", type_names[type], flags);

    struct mqtt_packet p;
    p.type = (enum mqtt_type)type;
    struct reader rd = {buf + hdr, buf + len};
    r = fn(&rd, (uint8_t)flags, &p, e);
    if (r < 0)
        return r;
    *ret = p;
    return 0;
}

void mqtt_filter_iter_init(struct mqtt_filter_iter *it, const struct mqtt_packet *p)
{
    it->p = p->subscribe.list;
    it->end = p->subscribe.list ? p->subscribe.list + p->subscribe.list_len : NULL;
    it->has_qos = p->type == MQTT_SUBSCRIBE;
}

bool mqtt_filter_iter_next(struct mqtt_filter_iter *it, struct mqtt_str *ret_filter,
                           uint8_t *ret_qos)
{
    /* The decoder validated the list; the bounds checks guard hand-built packets. */
    if (!it->p || it->end - it->p < 2)
        return false;
    size_t n = (size_t)(it->p[0] << 8 | it->p[1]);
    size_t need = 2 + n + (it->has_qos ? 1 : 0);
    if ((size_t)(it->end - it->p) < need)
        return false;
    ret_filter->ptr = (const char *)it->p + 2;
    ret_filter->len = n;
    if (ret_qos)
        *ret_qos = it->has_qos ? it->p[2 + n] : 0;
    it->p += need;
    return true;
}

/* ---- encoding ---- */

static inline size_t varint_len(size_t v)
{
    return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

static inline uint8_t *put_varint(uint8_t *w, size_t v)
{
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        *w++ = (uint8_t)(c | (v ? 0x80 : 0));
    } while (v);
    return w;
}

static inline uint8_t *put_u16(uint8_t *w, uint16_t v)
{
    w[0] = (uint8_t)(v >> 8);
    w[1] = (uint8_t)v;
    return w + 2;
}

static inline uint8_t *put_bytes(uint8_t *w, const void *p, size_t n)
{
    if (n)
        memcpy(w, p, n);
    return w + n;
}

static inline uint8_t *put_str(uint8_t *w, const void *p, size_t n)
{
    return put_bytes(put_u16(w, (uint16_t)n), p, n);
}

/* Reserve a whole packet of remaining length rl and write its fixed header. */
static int pkt_begin(struct lbuf *b, uint8_t byte0, size_t rl, uint8_t **ret_w)
{
    if (rl > MQTT_MAX_REMAINING_LENGTH)
        return -EMSGSIZE;
    int r = lbuf_reserve(b, 1 + varint_len(rl) + rl);
    if (r < 0)
        return r;
    uint8_t *w = (uint8_t *)b->data + b->len;
    *w++ = byte0;
    *ret_w = put_varint(w, rl);
    return 0;
}

static int pkt_end(struct lbuf *b, uint8_t *w)
{
    b->len = (size_t)(w - (uint8_t *)b->data);
    b->data[b->len] = 0;
    return 0;
}

int mqtt_encode_connect(struct lbuf *b, const struct mqtt_connect *c)
{
    if (c->client_id.len > MQTT_STRING_MAX || c->will_qos > 2 ||
        (!c->will && (c->will_qos || c->will_retain)) || (c->has_password && !c->has_username))
        return -EINVAL;
    size_t rl = 2 + 4 + 1 + 1 + 2 + 2 + c->client_id.len;
    if (c->will) {
        if (c->will_topic.len == 0 || c->will_topic.len > MQTT_TOPIC_MAX ||
            c->will_payload_len > MQTT_STRING_MAX)
            return -EINVAL;
        rl += 2 + c->will_topic.len + 2 + c->will_payload_len;
    }
    if (c->has_username) {
        if (c->username.len > MQTT_STRING_MAX)
            return -EINVAL;
        rl += 2 + c->username.len;
    }
    if (c->has_password) {
        if (c->password_len > MQTT_STRING_MAX)
            return -EINVAL;
        rl += 2 + c->password_len;
    }
    uint8_t *w;
    int r = pkt_begin(b, MQTT_CONNECT << 4, rl, &w);
    if (r < 0)
        return r;
    w = put_str(w, "MQTT", 4);
    *w++ = MQTT_PROTOCOL_LEVEL;
    *w++ = (uint8_t)((c->has_username ? 0x80 : 0) | (c->has_password ? 0x40 : 0) |
                     (c->will_retain ? 0x20 : 0) | (c->will_qos << 3) | (c->will ? 0x04 : 0) |
                     (c->clean_session ? 0x02 : 0));
    w = put_u16(w, c->keep_alive);
    w = put_str(w, c->client_id.ptr, c->client_id.len);
    if (c->will) {
        w = put_str(w, c->will_topic.ptr, c->will_topic.len);
        w = put_str(w, c->will_payload, c->will_payload_len);
    }
    if (c->has_username)
        w = put_str(w, c->username.ptr, c->username.len);
    if (c->has_password)
        w = put_str(w, c->password, c->password_len);
    return pkt_end(b, w);
}

int mqtt_encode_connack(struct lbuf *b, bool session_present, uint8_t return_code)
{
    if (return_code > MQTT_CONNACK_NOT_AUTHORIZED ||
        (session_present && return_code != MQTT_CONNACK_ACCEPTED))
        return -EINVAL;
    uint8_t *w;
    int r = pkt_begin(b, MQTT_CONNACK << 4, 2, &w);
    if (r < 0)
        return r;
    *w++ = session_present ? 1 : 0;
    *w++ = return_code;
    return pkt_end(b, w);
}

static int publish_check(size_t topic_len, uint8_t qos, bool dup, uint16_t packet_id,
                         size_t payload_len, size_t *ret_rl)
{
    if (topic_len == 0 || topic_len > MQTT_TOPIC_MAX || qos > 2 || (qos == 0 && dup) ||
        (qos > 0 && packet_id == 0))
        return -EINVAL;
    if (payload_len > MQTT_MAX_REMAINING_LENGTH)
        return -EMSGSIZE;
    size_t rl = 2 + topic_len + (qos ? 2 : 0) + payload_len;
    if (rl > MQTT_MAX_REMAINING_LENGTH)
        return -EMSGSIZE;
    *ret_rl = rl;
    return 0;
}

static inline uint8_t publish_byte0(uint8_t qos, bool retain, bool dup)
{
    return (uint8_t)(MQTT_PUBLISH << 4 | (dup ? 8 : 0) | qos << 1 | (retain ? 1 : 0));
}

int mqtt_encode_publish_header(uint8_t out[static MQTT_PUBLISH_HEADER_MAX], const char *topic,
                               size_t topic_len, uint8_t qos, bool retain, bool dup,
                               uint16_t packet_id, size_t payload_len)
{
    size_t rl;
    int r = publish_check(topic_len, qos, dup, packet_id, payload_len, &rl);
    if (r < 0)
        return r;
    uint8_t *w = out;
    *w++ = publish_byte0(qos, retain, dup);
    w = put_varint(w, rl);
    w = put_str(w, topic, topic_len);
    if (qos)
        w = put_u16(w, packet_id);
    return (int)(w - out);
}

int mqtt_encode_publish(struct lbuf *b, const struct mqtt_publish *p)
{
    size_t rl;
    int r = publish_check(p->topic.len, p->qos, p->dup, p->packet_id, p->payload_len, &rl);
    if (r < 0)
        return r;
    uint8_t *w;
    r = pkt_begin(b, publish_byte0(p->qos, p->retain, p->dup), rl, &w);
    if (r < 0)
        return r;
    w = put_str(w, p->topic.ptr, p->topic.len);
    if (p->qos)
        w = put_u16(w, p->packet_id);
    w = put_bytes(w, p->payload, p->payload_len);
    return pkt_end(b, w);
}

int mqtt_encode_ack_bytes(uint8_t out[static MQTT_ACK_LEN], enum mqtt_type type, uint16_t packet_id)
{
    if (type != MQTT_PUBACK && type != MQTT_PUBREC && type != MQTT_PUBREL && type != MQTT_PUBCOMP &&
        type != MQTT_UNSUBACK)
        return -EINVAL;
    if (packet_id == 0)
        return -EINVAL;
    out[0] = (uint8_t)(type << 4 | required_flags[type]);
    out[1] = 2;
    put_u16(out + 2, packet_id);
    return MQTT_ACK_LEN;
}

int mqtt_encode_ack(struct lbuf *b, enum mqtt_type type, uint16_t packet_id)
{
    uint8_t ack[MQTT_ACK_LEN];
    int r = mqtt_encode_ack_bytes(ack, type, packet_id);
    return r < 0 ? r : lbuf_append(b, ack, sizeof(ack));
}

int mqtt_encode_subscribe(struct lbuf *b, uint16_t packet_id, const struct mqtt_subscription *subs,
                          size_t n)
{
    if (packet_id == 0 || n == 0)
        return -EINVAL;
    size_t rl = 2;
    for (size_t i = 0; i < n; i++) {
        if (subs[i].filter.len == 0 || subs[i].filter.len > MQTT_TOPIC_MAX || subs[i].qos > 2)
            return -EINVAL;
        rl += 2 + subs[i].filter.len + 1;
        if (rl > MQTT_MAX_REMAINING_LENGTH)
            return -EMSGSIZE;
    }
    uint8_t *w;
    int r = pkt_begin(b, MQTT_SUBSCRIBE << 4 | 2, rl, &w);
    if (r < 0)
        return r;
    w = put_u16(w, packet_id);
    for (size_t i = 0; i < n; i++) {
        w = put_str(w, subs[i].filter.ptr, subs[i].filter.len);
        *w++ = subs[i].qos;
    }
    return pkt_end(b, w);
}

int mqtt_encode_unsubscribe(struct lbuf *b, uint16_t packet_id, const struct mqtt_str *filters,
                            size_t n)
{
    if (packet_id == 0 || n == 0)
        return -EINVAL;
    size_t rl = 2;
    for (size_t i = 0; i < n; i++) {
        if (filters[i].len == 0 || filters[i].len > MQTT_TOPIC_MAX)
            return -EINVAL;
        rl += 2 + filters[i].len;
        if (rl > MQTT_MAX_REMAINING_LENGTH)
            return -EMSGSIZE;
    }
    uint8_t *w;
    int r = pkt_begin(b, MQTT_UNSUBSCRIBE << 4 | 2, rl, &w);
    if (r < 0)
        return r;
    w = put_u16(w, packet_id);
    for (size_t i = 0; i < n; i++)
        w = put_str(w, filters[i].ptr, filters[i].len);
    return pkt_end(b, w);
}

int mqtt_encode_suback(struct lbuf *b, uint16_t packet_id, const uint8_t *codes, size_t n)
{
    if (packet_id == 0 || n == 0)
        return -EINVAL;
    if (n > MQTT_MAX_REMAINING_LENGTH - 2)
        return -EMSGSIZE;
    for (size_t i = 0; i < n; i++)
        if (codes[i] > MQTT_SUBACK_QOS2 && codes[i] != MQTT_SUBACK_FAILURE)
            return -EINVAL;
    uint8_t *w;
    int r = pkt_begin(b, MQTT_SUBACK << 4, 2 + n, &w);
    if (r < 0)
        return r;
    w = put_u16(w, packet_id);
    w = put_bytes(w, codes, n);
    return pkt_end(b, w);
}

int mqtt_encode_empty(struct lbuf *b, enum mqtt_type type)
{
    if (type != MQTT_PINGREQ && type != MQTT_PINGRESP && type != MQTT_DISCONNECT)
        return -EINVAL;
    uint8_t *w;
    int r = pkt_begin(b, (uint8_t)(type << 4), 0, &w);
    if (r < 0)
        return r;
    return pkt_end(b, w);
}

/* A SUBSCRIBE/UNSUBSCRIBE whose list is already in wire form (decoded, or built elsewhere). */
static int encode_filter_list(struct lbuf *b, const struct mqtt_packet *p)
{
    const struct mqtt_subscribe *s = &p->subscribe;
    if (s->packet_id == 0 || s->count == 0 || s->list_len == 0)
        return -EINVAL;
    if (s->list_len > MQTT_MAX_REMAINING_LENGTH - 2)
        return -EMSGSIZE;
    uint8_t *w;
    int r = pkt_begin(b, (uint8_t)(p->type << 4 | 2), 2 + s->list_len, &w);
    if (r < 0)
        return r;
    w = put_u16(w, s->packet_id);
    w = put_bytes(w, s->list, s->list_len);
    return pkt_end(b, w);
}

int mqtt_encode(struct lbuf *b, const struct mqtt_packet *p)
{
    switch (p->type) {
    case MQTT_CONNECT:
        return mqtt_encode_connect(b, &p->connect);
    case MQTT_CONNACK:
        return mqtt_encode_connack(b, p->connack.session_present, p->connack.return_code);
    case MQTT_PUBLISH:
        return mqtt_encode_publish(b, &p->publish);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
    case MQTT_UNSUBACK:
        return mqtt_encode_ack(b, p->type, p->ack.packet_id);
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        return encode_filter_list(b, p);
    case MQTT_SUBACK:
        return mqtt_encode_suback(b, p->suback.packet_id, p->suback.codes, p->suback.count);
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
    case MQTT_DISCONNECT:
        return mqtt_encode_empty(b, p->type);
    }
    return -EINVAL;
}
