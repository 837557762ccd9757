/* clients.c — the hub's list of authenticated clients, whatever head they came through
 * (clients.h). Small: a module has at most one connected client per head. */
#include "clients.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct clients {
    struct llist list;
};

int clients_start(struct hub *h)
{
    h->clients = calloc(1, sizeof(*h->clients));
    if (!h->clients)
        return -ENOMEM;
    llist_init(&h->clients->list);
    return 0;
}

void clients_stop(struct hub *h)
{
    if (!h->clients)
        return;
    struct hub_client *c, *tmp;
    llist_foreach_safe (c, tmp, &h->clients->list, node)
        llist_remove(&c->node);
    free(h->clients);
    h->clients = NULL;
}

void clients_attach(struct hub *h, struct hub_client *c)
{
    llist_add_head(&h->clients->list, &c->node);
    if (h->module_presence && c->id->address)
        h->module_presence(h, c->id->address);
}

void clients_detach(struct hub *h, struct hub_client *c)
{
    /* a connection that goes before its CONNECT was accepted was never attached (no identity) */
    if (!llist_linked(&c->node))
        return;
    llist_remove(&c->node);
    if (h->module_presence && c->id->address)
        h->module_presence(h, c->id->address);
}

struct hub_client *clients_find(struct hub *h, const char *address)
{
    struct hub_client *c;
    llist_foreach (c, &h->clients->list, node)
        if (c->id->address && strcmp(c->id->address, address) == 0)
            return c;
    return NULL;
}

size_t clients_count(struct hub *h, size_t *ret_devices)
{
    size_t n = 0, devices = 0;
    struct hub_client *c;
    llist_foreach (c, &h->clients->list, node) {
        n++;
        devices += c->id->kind == HUB_IDENTITY_DEVICE;
    }
    if (ret_devices)
        *ret_devices = devices;
    return n;
}

size_t clients_close_address(struct hub *h, const char *address, const char *why, int slot)
{
    size_t n = 0;
    struct hub_client *c, *tmp;
    llist_foreach_safe (c, tmp, &h->clients->list, node) {
        /* a leaf device's address covers its module identities (a child edge device's) */
        size_t al = strlen(address);
        bool child = c->id->kind == HUB_IDENTITY_CHILD_MODULE && c->id->address &&
                     strncmp(c->id->address, address, al) == 0 && c->id->address[al] == '/';
        if (!c->id->address || (strcmp(c->id->address, address) != 0 && !child) ||
            (slot >= 0 && c->id->slot != slot))
            continue;
        n++;
        c->ops->close(c, why, false); /* detaches it */
    }
    return n;
}
