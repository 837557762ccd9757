/* server.h — ledge-hub's lifecycle: the pipeline's parts wired and started in order (the
 * listeners' TLS context, the store, the acknowledgement path, the database, the sinks, the
 * heads, the control socket), the runtime file reloaded on SIGHUP, periodic maintenance, and an
 * orderly stop in the reverse order. */
#pragma once

#include "base/errors.h"
#include "hub.h"

/* h->base and h->cfg are set; everything else is made here. */
int hub_start(struct hub *h, struct lerr *err);
/* Acknowledge what was accepted, close everything; also after a failed hub_start(). */
void hub_stop(struct hub *h);
/* (Re)read the runtime file: routes, store cap, identities, desired twins, TLS certificate. A file
 * the hub cannot use leaves the previous configuration in force. */
int hub_load_runtime(struct hub *h, struct lerr *err);
