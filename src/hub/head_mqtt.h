/* head_mqtt.h — the MQTT head: MQTT 3.1.1 over TCP and TLS as IoT Hub speaks it to modules
 * (docs/hub.md). Its connections turn packets into the hub's types (head.h) and back; its sessions
 * are session.h's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "head.h"
#include "hub.h"

extern const struct hub_head_ops mqtt_head_ops;

struct bufferevent;
struct ws_conn;

/* Take a connected socket (the listeners do; tests hand in socketpairs). */
void mqtt_head_accept(struct hub *h, int fd, bool tls);
/* Take a connection whose WebSocket upgrade head_ws.c accepted: bev (its TLS or plain
 * bufferevent, the 101 already written, what follows the request in its input) and ws, the
 * framing; both owned from now on. MQTT runs over the frames from here exactly as over TCP. */
void mqtt_head_accept_ws(struct hub *h, struct bufferevent *bev, struct ws_conn *ws);
/* Connections: open ones, or with_closing also those still flushing their last bytes. */
size_t mqtt_head_connections(struct hub *h, bool with_closing);
