/* head_mqtt.h — the MQTT head: MQTT 3.1.1 over TCP and TLS as IoT Hub speaks it to modules
 * (docs/hub.md). Its connections turn packets into the hub's types (head.h) and back; its sessions
 * are session.h's. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "head.h"
#include "hub.h"

extern const struct hub_head_ops mqtt_head_ops;

/* Take a connected socket (the listeners do; tests hand in socketpairs). */
void mqtt_head_accept(struct hub *h, int fd, bool tls);
/* Connections: open ones, or with_closing also those still flushing their last bytes. */
size_t mqtt_head_connections(struct hub *h, bool with_closing);
