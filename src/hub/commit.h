/* commit.h — the acknowledgement path, all of it: what a client sent is acknowledged only once it
 * is durable (the group commit), in the order it came, and the answer goes back through the
 * client's head (ops->acked: the head writes the bytes, MQTT's PUBACK). */
#pragma once

#include <stdint.h>

#include "head.h"
#include "hub.h"

/* The worker thread under hub.fsync "always". */
int commit_start(struct hub *h);
/* Make durable and acknowledge what was accepted, stop the worker. */
void commit_stop(struct hub *h);
/* The store has appends that the next batch must make durable. */
void commit_dirty(struct hub *h);
/* Acknowledge token to c (ops->acked) once everything accepted before it is durable: behind the
 * batch, in order (MQTT-4.6.0-2). -ENOMEM; -ESHUTDOWN after commit_stop(). */
int commit_ack(struct hub *h, struct hub_client *c, uint32_t token);
/* c is going: drop its acknowledgements (it will send those messages again). */
void commit_client_gone(struct hub *h, struct hub_client *c);
/* Periodic: under hub.fsync "interval" the store's own syncs make waiting acknowledgements true. */
void commit_tick(struct hub *h);
