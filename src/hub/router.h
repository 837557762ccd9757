/* router.h — the router: a message from a module's output is stamped with what the hub vouches
 * for, matched against the route table and stored once per matching endpoint (at the route's
 * priority, with its TTL), or, at most once, handed straight to a waiting receiver. It routes and
 * stores; delivery is the sinks', acknowledgement commit.c's. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "head.h"
#include "hub.h"
#include "message.h"

int router_start(struct hub *h);
void router_stop(struct hub *h);
/* m comes from module `from` (its output: m->sys[IOTHUB_PROP_OUTPUT_NAME]); the router sets the
 * source and the properties the hub vouches for, overriding the sender's. at_least_once: the
 * sender wants it stored (MQTT QoS 1); then ack_to, when not NULL, gets token acknowledged once it
 * is durable (commit_ack). Returns 0 (stored, or matched no route), -ENOSPC when an at-least-once
 * message was refused (store full: it is not acknowledged; the head decides what to tell the
 * sender), or another -errno. */
int router_publish(struct hub *h, const struct hub_identity *from, struct hub_message *m,
                   bool at_least_once, struct hub_client *ack_to, uint32_t token);
/* A message the hub makes itself (twin change notifications), routed and stored as it is. */
int router_inject(struct hub *h, struct hub_message *m);
