/* clients.h — the authenticated clients of every protocol head, by identity: where a delivery, a
 * desired patch or a method call for a module or a leaf device goes, and whose sessions a changed
 * identity cuts. */
#pragma once

#include <stddef.h>

#include "head.h"
#include "hub.h"

int clients_start(struct hub *h);
void clients_stop(struct hub *h);
/* c (ops and id set) may now be delivered to; clients_detach() before it goes. */
void clients_attach(struct hub *h, struct hub_client *c);
void clients_detach(struct hub *h, struct hub_client *c);
/* The connected client of an address (hub_identity.address: a module id, or "devices/<d>" for a
 * leaf device; one per address: a second connection takes over), or NULL. */
struct hub_client *clients_find(struct hub *h, const char *address);
/* How many clients are attached (modules and leaf devices), and how many of them are devices. */
size_t clients_count(struct hub *h, size_t *ret_devices);
/* Close every client of address (ops->close with why; no will: the hub cut it, the client did
 * not fail) that authenticated with key slot (-1: whatever it used); how many there were. A leaf
 * device's address ("devices/<d>") also closes its module identities' clients (a child edge
 * device's: their keys derive from the device's). */
size_t clients_close_address(struct hub *h, const char *address, const char *why, int slot);
