/* clients.h — the authenticated clients of every protocol head, by identity: where a delivery, a
 * desired patch or a method call for a module goes, and whose sessions a changed identity cuts. */
#pragma once

#include <stddef.h>

#include "head.h"
#include "hub.h"

int clients_start(struct hub *h);
void clients_stop(struct hub *h);
/* c (ops and id set) may now be delivered to; clients_detach() before it goes. */
void clients_attach(struct hub *h, struct hub_client *c);
void clients_detach(struct hub *h, struct hub_client *c);
/* The connected client of module (one per module: a second connection takes over), or NULL. */
struct hub_client *clients_find_module(struct hub *h, const char *module);
/* Close every client of module (ops->close with why; no will: the hub cut it, the module did
 * not fail); how many there were. */
size_t clients_close_module(struct hub *h, const char *module, const char *why);
