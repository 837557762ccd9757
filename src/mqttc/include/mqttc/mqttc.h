/* mqttc.h — an MQTT 3.1.1 client connection on a libevent loop, over TLS (with the server's name
 * checked against a CA bundle, and an optional client certificate) or plain TCP, using the
 * codec in src/mqtt. One connection per object; reconnecting is the caller's policy. Used by the
 * hub's upstream link and by the module client library. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "mqtt/codec.h"

struct event_base;
struct evdns_base;
struct mqttc;

struct mqttc_options {
    const char *host;
    int port;
    bool tls;
    const char *ca_file;   /* PEM bundle to trust; NULL = the system's defaults */
    const char *cert_file; /* client certificate (X.509 auth), optional */
    const char *key_file;
    const char *verify_name; /* name the server certificate must carry; NULL = host */
    const char *client_id;
    const char *username; /* optional */
    const char *password; /* optional; a SAS token for IoT Hub-style servers */
    bool clean_session;
    uint16_t keep_alive_s;
    size_t max_packet;      /* largest packet accepted from the server (0 = 1 MiB) */
    int connect_timeout_ms; /* TCP + TLS + CONNACK (0 = 10 s) */

    /* Every mqttc_connect() ends in exactly one on_connect: 0 accepted; -ECONNREFUSED with
     * connack_code set when the server refused; another -errno (-ETIMEDOUT, -EPROTO for TLS
     * failures, -ECONNREFUSED with connack_code -1 when TCP failed). */
    void (*on_connect)(void *ud, int result, int connack_code, bool session_present);
    /* An accepted connection ended (not called after mqttc_disconnect()). */
    void (*on_close)(void *ud, int reason);
    /* a PUBLISH from the server; a QoS 1 one is acknowledged when this returns, unless it called
     * mqttc_hold_ack() */
    void (*on_message)(void *ud, const struct mqtt_publish *p);
    void (*on_puback)(void *ud, uint16_t packet_id);
    void (*on_suback)(void *ud, uint16_t packet_id, const uint8_t *codes, size_t n);
    void *ud;
};

/* dns may be NULL (then host must be an IP address). Strings are copied. -EINVAL without a
 * host, -ENOMEM when a copy fails. */
int mqttc_new(struct event_base *base, struct evdns_base *dns, const struct mqttc_options *o,
              struct mqttc **ret);
/* Start connecting; the outcome arrives through on_connect. */
int mqttc_connect(struct mqttc *m);
/* Send DISCONNECT (if connected) and close; on_close is not called. */
void mqttc_disconnect(struct mqttc *m);
void mqttc_free(struct mqttc *m);
bool mqttc_connected(const struct mqttc *m);
/* Why the last connection failed or ended, when there is more to say than the errno: the TLS
 * failure ("the server's certificate is not trusted for \"h\": ...", "TLS alert from the
 * server: ..."). "" otherwise; cleared by mqttc_connect(). */
const char *mqttc_error(const struct mqttc *m);

/* QoS 0 or 1. For QoS 1 *ret_packet_id (optional) is what on_puback will report. */
int mqttc_publish(struct mqttc *m, const char *topic, size_t topic_len, const void *payload,
                  size_t len, uint8_t qos, bool dup, uint16_t *ret_packet_id);
/* Called from on_message for a QoS 1 PUBLISH: do not acknowledge it when on_message returns; the
 * caller sends the PUBACK later with mqttc_puback() (once what it received is durable), on this
 * connection. A connection that ends first never acknowledges it: the server sends it again. */
void mqttc_hold_ack(struct mqttc *m);
/* -ENOTCONN when the connection is not (or no longer) up. */
int mqttc_puback(struct mqttc *m, uint16_t packet_id);
int mqttc_subscribe(struct mqttc *m, const char *filter, uint8_t qos, uint16_t *ret_packet_id);
/* Bytes queued for the server, for back-pressure. */
size_t mqttc_output_pending(const struct mqttc *m);
