/* head_ws.h — MQTT over WebSockets as IoT Hub serves it (wss://HOST:PORT/$iothub/websocket,
 * subprotocol mqtt, on hub.websocket_port): TLS with the hub's server certificate, the HTTP
 * upgrade (net/ws.h), then the connection is the MQTT head's (head_mqtt.h) with WebSocket framing
 * under it: the same CONNECT, authentication, authorisation, limits and sessions. This head
 * keeps only the connections still upgrading; it has no clients of its own. */
#pragma once

#include <stdbool.h>

#include "head.h"
#include "hub.h"

#define WS_PATH "/$iothub/websocket"
#define WS_SUBPROTOCOL "mqtt"
#define WS_SUBPROTOCOL_AMQP "AMQPWSB10" /* AMQP over WebSockets: the AMQP head (head_amqp.h) */
#define WS_UPGRADE_MAX 8192             /* bytes of the upgrade request */
#define WS_UPGRADE_TIMEOUT_MS 10000     /* TLS handshake and upgrade request, from accept */

extern const struct hub_head_ops ws_head_ops;

/* Take a connected socket of the WebSocket listener (tls false: tests over socketpairs). */
void ws_head_accept(struct hub *h, int fd, bool tls);
