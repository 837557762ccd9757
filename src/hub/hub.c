/* hub.c — the little every unit shares (hub.h): identities, and refusals counted and logged
 * without letting a client flood the log. */
#include "hub.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "log/log.h"

#define REASON_MAX 240

/* A rate-limited key, by its hash: two keys that collide share a limit, which costs at most a
 * line not logged; 24 bytes each keep the table small however many clients come and go. */
struct log_key {
    uint64_t hash;
    int64_t last_ms; /* when a line was logged last */
    uint64_t skipped;
};

struct refusal_stats {
    uint64_t count;
    char last[REASON_MAX]; /* the latest one's text, logged or not */
};

struct hub_logs {
    struct log_key keys[HUB_LOG_KEYS];
    size_t n_keys;
    struct refusal_stats refusals[HUB_REFUSAL_COUNT];
};

static const char *const refusal_names[HUB_REFUSAL_COUNT] = {
    [HUB_REFUSAL_AUTH] = "auth",
    [HUB_REFUSAL_STORE_FULL] = "storeFull",
    [HUB_REFUSAL_STORE_ERROR] = "storeError",
    [HUB_REFUSAL_PUBLISH] = "publish",
    [HUB_REFUSAL_SUBSCRIBE] = "subscribe",
    [HUB_REFUSAL_QOS2] = "qos2",
    [HUB_REFUSAL_MALFORMED] = "malformed",
    [HUB_REFUSAL_OVERSIZED] = "oversized",
    [HUB_REFUSAL_CONNECTIONS] = "connections",
    [HUB_REFUSAL_SUBSCRIPTIONS] = "subscriptions",
    [HUB_REFUSAL_SESSION_SAVE] = "sessionSave",
};

void hub_identity_clear(struct hub_identity *id)
{
    if (!id)
        return;
    free(id->device_id);
    free(id->module_id);
    free(id->address);
    memset(id, 0, sizeof(*id));
}

int hub_identity_copy(const struct hub_identity *src, struct hub_identity *ret)
{
    struct hub_identity c = {.kind = src->kind, .method = src->method, .slot = src->slot};
    c.device_id = src->device_id ? strdup(src->device_id) : NULL;
    c.module_id = src->module_id ? strdup(src->module_id) : NULL;
    if (src->address)
        c.address = strdup(src->address);
    else if (src->kind == HUB_IDENTITY_DEVICE && src->device_id)
        c.address = lstr_printf(HUB_DEVICE_ADDRESS_PREFIX "%s", src->device_id);
    else if (src->kind == HUB_IDENTITY_CHILD_MODULE && src->device_id && src->module_id)
        c.address = lstr_printf(HUB_DEVICE_ADDRESS_PREFIX "%s" HUB_CHILD_MODULES_INFIX "%s",
                                src->device_id, src->module_id);
    else if (src->module_id)
        c.address = strdup(src->module_id);
    if ((src->device_id && !c.device_id) || (src->module_id && !c.module_id) ||
        ((src->module_id || src->kind == HUB_IDENTITY_DEVICE) && !c.address)) {
        hub_identity_clear(&c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

bool hub_child_address(const char *a, char ret_device[HUB_ID_SIZE], char ret_module[HUB_ID_SIZE])
{
    if (!a || !lstr_startswith(a, HUB_DEVICE_ADDRESS_PREFIX))
        return false;
    const char *d = a + strlen(HUB_DEVICE_ADDRESS_PREFIX);
    const char *slash = strchr(d, '/');
    if (!slash || slash == d || (size_t)(slash - d) >= HUB_ID_SIZE ||
        strncmp(slash, HUB_CHILD_MODULES_INFIX, strlen(HUB_CHILD_MODULES_INFIX)) != 0)
        return false;
    const char *m = slash + strlen(HUB_CHILD_MODULES_INFIX);
    size_t ml = strlen(m);
    if (!ml || ml >= HUB_ID_SIZE || strchr(m, '/'))
        return false;
    memcpy(ret_device, d, (size_t)(slash - d));
    ret_device[slash - d] = 0;
    memcpy(ret_module, m, ml + 1);
    return true;
}

static struct hub_logs *logs_of(struct hub *h)
{
    if (!h->logs)
        h->logs = calloc(1, sizeof(*h->logs));
    return h->logs;
}

void hub_logs_free(struct hub *h)
{
    free(h->logs);
    h->logs = NULL;
}

/* FNV-1a, 64 bits. */
static uint64_t key_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

bool hub_log_due(struct hub *h, const char *key, uint64_t *ret_skipped)
{
    struct hub_logs *l = logs_of(h);
    if (ret_skipped)
        *ret_skipped = 0;
    if (!l)
        return true; /* without memory for the limits, log */
    int64_t now = ltime_mono_ms();
    uint64_t hash = key_hash(key);
    struct log_key *k = NULL, *oldest = NULL;
    for (size_t i = 0; i < l->n_keys && !k; i++) {
        if (l->keys[i].hash == hash)
            k = &l->keys[i];
        else if (!oldest || l->keys[i].last_ms < oldest->last_ms)
            oldest = &l->keys[i];
    }
    if (!k) {
        k = l->n_keys < HUB_LOG_KEYS ? &l->keys[l->n_keys++] : oldest;
        k->hash = hash;
        k->last_ms = now;
        k->skipped = 0;
        return true;
    }
    if (now - k->last_ms < HUB_LOG_INTERVAL_MS) {
        k->skipped++;
        return false;
    }
    if (ret_skipped)
        *ret_skipped = k->skipped;
    k->last_ms = now;
    k->skipped = 0;
    return true;
}

void hub_refused(struct hub *h, enum hub_refusal cause, const char *key, const char *fmt, ...)
{
    char msg[REASON_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct hub_logs *l = logs_of(h);
    if (l) {
        l->refusals[cause].count++;
        memcpy(l->refusals[cause].last, msg, sizeof(msg));
    }
    char k[120];
    snprintf(k, sizeof(k), "refused:%s:%s", refusal_names[cause], key ? key : "");
    uint64_t skipped;
    if (!hub_log_due(h, k, &skipped))
        return;
    if (skipped)
        log_warn("hub",
                 "%s (and %llu more like it since the last one logged; `ledge hub status` counts "
                 "them)",
                 msg, (unsigned long long)skipped);
    else
        log_warn("hub", "%s", msg);
}

json_t *hub_refusals_status(struct hub *h)
{
    json_t *o = json_object();
    for (int i = 0; h->logs && i < HUB_REFUSAL_COUNT; i++)
        if (h->logs->refusals[i].count)
            json_object_set_new(o, refusal_names[i],
                                json_pack("{s:I, s:s}", "count",
                                          (json_int_t)h->logs->refusals[i].count, "last",
                                          h->logs->refusals[i].last));
    return o;
}
