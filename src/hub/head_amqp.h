/* head_amqp.h — the AMQP 1.0 head (hub.amqp_port, 5671: AMQPS as IoT Hub serves it to the Azure
 * IoT SDKs' Amqp transports): TLS from OpenSSL on a bufferevent, as the MQTT head's, under
 * Qpid Proton's connection engine (pn_connection_driver_t: bytes in, events, bytes out; no
 * proactor, no Proton SSL). SASL ANONYMOUS or none, then a CBS put-token of a SAS token proves
 * who the client is (auth.c, the same checks as MQTT's CONNECT); links on the IoT Hub addresses
 * (amqp_map.h) become the hub's messages, twin requests and method answers, and the hub's
 * deliveries, twin answers, desired patches and method calls go back on the client's links. */
#pragma once

#include <stdbool.h>

#include "head.h"
#include "hub.h"

#define AMQP_AUTH_TIMEOUT_MS 10000 /* TLS handshake, open and a put-token, from accept */
#define AMQP_MAX_LINKS 64          /* links one connection may attach in its life */
#define AMQP_LINK_CREDIT 64        /* messages a client may send ahead on a link */

extern const struct hub_head_ops amqp_head_ops;

/* Take a connected socket of the AMQP listener (tls false: tests over socketpairs). */
void amqp_head_accept(struct hub *h, int fd, bool tls);
/* AMQP over WebSockets (subprotocol AMQPWSB10 on hub.websocket_port): head_ws.c upgraded bev and
 * hands it over with its framing (both owned from now on). */
struct bufferevent;
struct ws_conn;
void amqp_head_accept_ws(struct hub *h, struct bufferevent *bev, struct ws_conn *ws);
