/* hub.c — the little every unit shares (hub.h): identities and log-once for refusals. */
#include "hub/hub.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"

void hub_identity_clear(struct hub_identity *id)
{
    if (!id)
        return;
    free(id->device_id);
    free(id->module_id);
    memset(id, 0, sizeof(*id));
}

int hub_identity_copy(const struct hub_identity *src, struct hub_identity *ret)
{
    struct hub_identity c = {.kind = src->kind, .method = src->method};
    c.device_id = src->device_id ? strdup(src->device_id) : NULL;
    c.module_id = src->module_id ? strdup(src->module_id) : NULL;
    if ((src->device_id && !c.device_id) || (src->module_id && !c.module_id)) {
        hub_identity_clear(&c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

void hub_log_once(struct hub *h, const char *key, const char *fmt, ...)
{
    if (lstrv_contains(&h->logged_once, key))
        return;
    if (h->logged_once.n < 4096)
        lstrv_push(&h->logged_once, key);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_warn("hub", "%s (logged once; see `ledge hub status` for counts)", msg);
}
