/* codec.h — MQTT 3.1.1 packet codec: stream framing, zero-copy decoding with full validation
 * of every packet type, and encoders for every packet type. Pure: no I/O, decoding never allocates.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/buf.h"
#include "base/errors.h"

enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
};

/* CONNACK return codes (MQTT 3.1.1 §3.2.2.3). */
enum mqtt_connack_code {
    MQTT_CONNACK_ACCEPTED = 0,
    MQTT_CONNACK_UNACCEPTABLE_PROTOCOL = 1,
    MQTT_CONNACK_IDENTIFIER_REJECTED = 2,
    MQTT_CONNACK_SERVER_UNAVAILABLE = 3,
    MQTT_CONNACK_BAD_USERNAME_PASSWORD = 4,
    MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

/* SUBACK return codes (§3.9.3): the granted QoS, or failure. */
enum mqtt_suback_code {
    MQTT_SUBACK_QOS0 = 0x00,
    MQTT_SUBACK_QOS1 = 0x01,
    MQTT_SUBACK_QOS2 = 0x02,
    MQTT_SUBACK_FAILURE = 0x80,
};

#define MQTT_PROTOCOL_LEVEL 4                /* 3.1.1 */
#define MQTT_MAX_REMAINING_LENGTH 268435455u /* 4-byte varint */
#define MQTT_MAX_PACKET (1u + 4u + MQTT_MAX_REMAINING_LENGTH)
#define MQTT_STRING_MAX 65535u /* UTF-8 strings and binary fields carry a 16-bit length */
#define MQTT_TOPIC_MAX MQTT_STRING_MAX
/* Fixed header (1 + up to 4) + topic length + topic + packet id. */
#define MQTT_PUBLISH_HEADER_MAX (1 + 4 + 2 + MQTT_TOPIC_MAX + 2)

/* What mqtt_decode() returns besides 0. Every protocol violation is MQTT_EMALFORMED: close the
 * connection without a reply (§4.8). Two CONNECT failures are answered with a CONNACK first; see
 * mqtt_connack_code_for_error(). */
#define MQTT_EMALFORMED (-EBADMSG)
#define MQTT_EPROTOCOL_VERSION                                                                     \
    (-EPROTONOSUPPORT)             /* "MQIsdp", or "MQTT" with a level other than 4 */
#define MQTT_EIDENTIFIER (-EINVAL) /* empty client id with clean session 0 (§3.1.3-8) */

/* A string inside a packet: not NUL-terminated; points into the buffer given to mqtt_decode(). */
struct mqtt_str {
    const char *ptr;
    size_t len;
};

static inline struct mqtt_str mqtt_str_c(const char *s)
{
    return (struct mqtt_str){s, s ? strlen(s) : 0};
}
static inline bool mqtt_str_eq(struct mqtt_str a, const char *lit)
{
    size_t n = strlen(lit);
    return a.len == n && (n == 0 || memcmp(a.ptr, lit, n) == 0);
}

struct mqtt_connect {
    uint8_t protocol_level; /* always MQTT_PROTOCOL_LEVEL once decoded */
    bool clean_session;
    uint16_t keep_alive; /* seconds, 0 = off */
    struct mqtt_str client_id;
    bool will;
    uint8_t will_qos;
    bool will_retain;
    struct mqtt_str will_topic;
    const uint8_t *will_payload;
    size_t will_payload_len;
    bool has_username;
    struct mqtt_str username;
    bool has_password;
    const uint8_t *password;
    size_t password_len;
};

struct mqtt_connack {
    bool session_present;
    uint8_t return_code; /* enum mqtt_connack_code */
};

struct mqtt_publish {
    uint8_t qos;
    bool retain;
    bool dup;
    uint16_t packet_id; /* 0 for QoS 0 */
    struct mqtt_str topic;
    const uint8_t *payload;
    size_t payload_len;
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK. */
struct mqtt_ack {
    uint16_t packet_id;
};

/* SUBSCRIBE and UNSUBSCRIBE keep their filter list in wire form (validated by the decoder);
 * walk it with mqtt_filter_iter. There is no fixed maximum count: the list is bounded by the
 * packet size, and the server bounds what it keeps (subscriptions per client). */
struct mqtt_subscribe {
    uint16_t packet_id;
    size_t count;
    const uint8_t *list;
    size_t list_len;
};

struct mqtt_suback {
    uint16_t packet_id;
    const uint8_t *codes; /* enum mqtt_suback_code each */
    size_t count;
};

struct mqtt_packet {
    enum mqtt_type type;
    union {
        struct mqtt_connect connect;
        struct mqtt_connack connack;
        struct mqtt_publish publish;
        struct mqtt_ack ack;
        struct mqtt_subscribe subscribe;
        struct mqtt_subscribe unsubscribe; /* same layout; list entries carry no QoS */
        struct mqtt_suback suback;
    };
};

/* For the encoders. */
struct mqtt_subscription {
    struct mqtt_str filter;
    uint8_t qos;
};

struct mqtt_filter_iter {
    const uint8_t *p;
    const uint8_t *end;
    bool has_qos;
};

const char *mqtt_type_name(enum mqtt_type type);
/* Which side may send a packet type: a server rejects types only servers send, and vice versa. */
bool mqtt_type_from_client(enum mqtt_type type);
bool mqtt_type_from_server(enum mqtt_type type);

/* Stream framing: every reader of an MQTT byte stream (the hub, src/mqttc, the bench tool)
 * frames with these two. buf holds the len bytes received so far, starting at a packet boundary.
 *
 * mqtt_frame_length: how long is the packet at the front? 1 with *ret_packet_len as soon as the
 * fixed header is complete (MQTT_FIXED_HEADER_MAX bytes are always enough; the rest of the packet
 * may still be on its way), 0 when the header itself needs more bytes, MQTT_EMALFORMED for a
 * remaining length longer than 4 bytes, -EMSGSIZE when the announced packet would exceed
 * max_packet (0 = the protocol maximum) — known before its bytes arrive.
 * mqtt_frame: the same, but 1 only once the whole packet is in buf (0 until then). */
#define MQTT_FIXED_HEADER_MAX 5 /* the type byte and up to 4 bytes of remaining length */
int mqtt_frame_length(const uint8_t *buf, size_t len, size_t max_packet, size_t *ret_packet_len);
int mqtt_frame(const uint8_t *buf, size_t len, size_t max_packet, size_t *ret_packet_len);

/* Decode exactly one packet (buf/len as framed by mqtt_frame()). *ret points into buf. Returns 0,
 * MQTT_EMALFORMED, MQTT_EPROTOCOL_VERSION or MQTT_EIDENTIFIER, with the reason in e
 * ("PUBLISH: QoS 3 is invalid"). Decodes every type in both directions; use
 * mqtt_type_from_client()/_from_server() to refuse the ones a peer must not send. */
int mqtt_decode(const uint8_t *buf, size_t len, struct mqtt_packet *ret, struct lerr *e);

/* The CONNACK a server sends before closing for a mqtt_decode() error, or -1: close without one. */
int mqtt_connack_code_for_error(int err);

/* Walk a decoded SUBSCRIBE/UNSUBSCRIBE filter list. ret_qos may be NULL (it is 0 for UNSUBSCRIBE).
 */
void mqtt_filter_iter_init(struct mqtt_filter_iter *it, const struct mqtt_packet *p);
bool mqtt_filter_iter_next(struct mqtt_filter_iter *it, struct mqtt_str *ret_filter,
                           uint8_t *ret_qos);

/* Encoders append one packet to b and return 0, -EINVAL for arguments the protocol cannot carry
 * (QoS > 2, packet id 0 where one is required, a string over 65535 bytes, an empty topic, ...),
 * -EMSGSIZE past the maximum packet size, or lbuf's -ENOMEM/-E2BIG. On failure b is unchanged.
 * Strings are not re-validated as UTF-8 or topic syntax: pass what was validated or built. */
int mqtt_encode_connect(struct lbuf *b, const struct mqtt_connect *c);
int mqtt_encode_connack(struct lbuf *b, bool session_present, uint8_t return_code);
int mqtt_encode_publish(struct lbuf *b, const struct mqtt_publish *p);
/* PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK. */
int mqtt_encode_ack(struct lbuf *b, enum mqtt_type type, uint16_t packet_id);
int mqtt_encode_subscribe(struct lbuf *b, uint16_t packet_id, const struct mqtt_subscription *subs,
                          size_t n);
int mqtt_encode_suback(struct lbuf *b, uint16_t packet_id, const uint8_t *codes, size_t n);
int mqtt_encode_unsubscribe(struct lbuf *b, uint16_t packet_id, const struct mqtt_str *filters,
                            size_t n);
/* PINGREQ, PINGRESP or DISCONNECT. */
int mqtt_encode_empty(struct lbuf *b, enum mqtt_type type);
/* Any decoded (or filled-in) packet; SUBSCRIBE/UNSUBSCRIBE copy their wire-form filter list. */
int mqtt_encode(struct lbuf *b, const struct mqtt_packet *p);

/* The hot paths' encoders write into the caller's array instead of a buffer. */
#define MQTT_ACK_LEN 4
/* PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK into out: MQTT_ACK_LEN, or -EINVAL. */
int mqtt_encode_ack_bytes(uint8_t out[static MQTT_ACK_LEN], enum mqtt_type type,
                          uint16_t packet_id);
/* The server's hot path: write the PUBLISH fixed header, topic and packet id into out and return
 * their length, so the payload (payload_len bytes) can be sent from where it already is. */
int mqtt_encode_publish_header(uint8_t out[static MQTT_PUBLISH_HEADER_MAX], const char *topic,
                               size_t topic_len, uint8_t qos, bool retain, bool dup,
                               uint16_t packet_id, size_t payload_len);
