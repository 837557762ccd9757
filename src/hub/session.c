/* session.c — MQTT sessions (session.h). A persistent session's subscriptions are written to
 * twins.db on every change, so the module's backlog flows as soon as it reconnects, also after a
 * restart of the hub. Authorisation: a module subscribes only to its own inputs, twin and
 * methods; a leaf device to its own cloud-to-device topic, twin and methods. */
#include "session.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "database.h"
#include "mqtt/topic.h"

struct sessions {
    struct llist list;
    size_t n;
};

static void session_free(struct session *s)
{
    if (!s)
        return;
    llist_remove(&s->node);
    for (size_t i = 0; i < s->n_subs; i++)
        free(s->subs[i].filter);
    free(s->subs);
    free(s->client_id);
    hub_identity_clear(&s->id);
    free(s->will);
    free(s->qos_input);
    free(s);
}

static void session_unlink_free(struct hub *h, struct session *s)
{
    if (llist_linked(&s->node))
        h->sessions->n--;
    session_free(s);
}

static void session_link(struct hub *h, struct session *s)
{
    llist_add_head(&h->sessions->list, &s->node);
    h->sessions->n++;
}

int sessions_start(struct hub *h)
{
    h->sessions = calloc(1, sizeof(*h->sessions));
    if (!h->sessions)
        return -ENOMEM;
    llist_init(&h->sessions->list);
    return 0;
}

void sessions_stop(struct hub *h)
{
    if (!h->sessions)
        return;
    struct session *s, *tmp;
    llist_foreach_safe (s, tmp, &h->sessions->list, node)
        session_free(s);
    free(h->sessions);
    h->sessions = NULL;
}

/* ------------------------------------------------------------------ persistence */

int session_c2d_qos(const struct session *s)
{
    if (s->id.kind != HUB_IDENTITY_DEVICE)
        return -1;
    char own[300];
    int n = snprintf(own, sizeof(own), "devices/%s/", s->id.device_id);
    if (n < 0 || (size_t)n >= sizeof(own))
        return -1;
    int qos = -1;
    for (size_t i = 0; i < s->n_subs; i++) {
        const char *f = s->subs[i].filter;
        if (strncasecmp(f, own, (size_t)n) != 0)
            continue;
        /* The topic as the filter spells the device id (ids compare case-insensitively); "x"
         * stands for the bag. */
        char topic[400];
        int tn = snprintf(topic, sizeof(topic), "%.*smessages/devicebound/x", n, f);
        if (tn > 0 && (size_t)tn < sizeof(topic) && s->subs[i].qos > qos &&
            mqtt_topic_match(f, strlen(f), topic, (size_t)tn))
            qos = s->subs[i].qos;
    }
    return qos;
}

static void update_wants(struct session *s);

/* Write a persistent session's subscriptions, or forget a clean one: 0, or -EIO (logged once)
 * when the database could not take it (a full disk). Without a database at all (twins.db could
 * not be opened: docs/hub.md) sessions live in memory only, and this is 0. */
static int persist(struct hub *h, struct session *s)
{
    sqlite3 *db = database_handle(h);
    if (!db)
        return 0;
    sqlite3_stmt *st = NULL;
    int r;
    _cleanup_free_ char *subs = NULL;
    if (s->clean) {
        r = sqlite3_prepare_v2(db, "DELETE FROM sessions WHERE client_id = ?", -1, &st, NULL);
    } else {
        json_t *a = json_array();
        for (size_t i = 0; a && i < s->n_subs; i++)
            json_array_append_new(a, json_pack("[s, i]", s->subs[i].filter, s->subs[i].qos));
        subs = a ? ljson_dump(a) : NULL;
        json_decref(a);
        r = subs ? sqlite3_prepare_v2(db,
                                      "INSERT OR REPLACE INTO sessions (client_id, device, module, "
                                      "subs) VALUES (?, ?, ?, ?)",
                                      -1, &st, NULL)
                 : SQLITE_NOMEM;
    }
    if (r == SQLITE_OK) {
        sqlite3_bind_text(st, 1, s->client_id, -1, SQLITE_STATIC);
        if (!s->clean) {
            sqlite3_bind_text(st, 2, s->id.device_id, -1, SQLITE_STATIC);
            /* "" for a leaf device's session */
            sqlite3_bind_text(st, 3, s->id.module_id ? s->id.module_id : "", -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 4, subs, -1, SQLITE_STATIC);
        }
        r = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    if (r == SQLITE_OK)
        return 0;
    hub_refused(h, HUB_REFUSAL_SESSION_SAVE, NULL, "%s: cannot save the session: %s", s->client_id,
                sqlite3_errmsg(db));
    return -EIO;
}

int sessions_load(struct hub *h)
{
    sqlite3 *db = database_handle(h);
    sqlite3_stmt *st = NULL;
    if (!db || sqlite3_prepare_v2(db, "SELECT client_id, device, module, subs FROM sessions", -1,
                                  &st, NULL) != SQLITE_OK)
        return -EIO;
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *cid = (const char *)sqlite3_column_text(st, 0);
        const char *dev = (const char *)sqlite3_column_text(st, 1);
        const char *mod = (const char *)sqlite3_column_text(st, 2);
        const char *subs = (const char *)sqlite3_column_text(st, 3);
        if (!cid || !dev || !mod || !subs || session_find(h, cid))
            continue;
        struct session *s = calloc(1, sizeof(*s));
        if (!s)
            break;
        s->client_id = strdup(cid);
        struct hub_identity who = {
            .kind = !*mod                                         ? HUB_IDENTITY_DEVICE
                    : strcasecmp(dev, h->rt.device_id ?: "") == 0 ? HUB_IDENTITY_MODULE
                                                                  : HUB_IDENTITY_CHILD_MODULE,
            .device_id = (char *)dev,
            .module_id = *mod ? (char *)mod : NULL,
        };
        int cr = hub_identity_copy(&who, &s->id);
        json_t *a = json_loads(subs, 0, NULL);
        size_t max = (size_t)h->cfg.hub.max_subscriptions, i;
        json_t *e;
        s->subs = calloc(MAX(json_array_size(a), (size_t)1), sizeof(*s->subs));
        if (!s->client_id || cr < 0 || !s->subs) {
            json_decref(a);
            session_free(s);
            break;
        }
        json_array_foreach (a, i, e) {
            const char *f = json_string_value(json_array_get(e, 0));
            json_int_t q = json_integer_value(json_array_get(e, 1));
            if (f && s->n_subs < max && (s->subs[s->n_subs].filter = strdup(f)))
                s->subs[s->n_subs++].qos = q == 1;
        }
        json_decref(a);
        update_wants(s);
        session_link(h, s);
        n++;
    }
    sqlite3_finalize(st);
    return n;
}

/* ------------------------------------------------------------------ sessions */

struct session *session_find(struct hub *h, const char *client_id)
{
    struct session *s;
    llist_foreach (s, &h->sessions->list, node)
        if (strcmp(s->client_id, client_id) == 0)
            return s;
    return NULL;
}

static void clear_subscriptions(struct session *s)
{
    for (size_t i = 0; i < s->n_subs; i++)
        free(s->subs[i].filter);
    s->n_subs = 0;
    s->wants_inputs = s->wants_desired = s->wants_methods = s->wants_twin_res = false;
}

struct session *session_attach(struct hub *h, struct conn *conn, const char *client_id,
                               const struct hub_identity *id, bool clean, bool *ret_present)
{
    struct session *s = session_find(h, client_id);
    bool present = s && !clean && !s->clean;
    if (s && (clean || s->clean)) {
        clear_subscriptions(s);
        present = false;
    }
    bool created = !s;
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
        s->client_id = strdup(client_id);
        if (!s->client_id || hub_identity_copy(id, &s->id) < 0) {
            session_free(s);
            return NULL;
        }
        session_link(h, s);
    } else {
        s->id.method = id->method;
    }
    bool changed = created ? !clean : clean != s->clean;
    s->clean = clean;
    s->conn = conn;
    /* a new persistent session, or one whose subscriptions a clean connection dropped */
    if (changed)
        persist(h, s); /* CONNACK cannot say; a failure is logged once */
    *ret_present = present;
    return s;
}

void session_detach(struct hub *h, struct session *s)
{
    s->conn = NULL;
    free(s->will);
    s->will = NULL;
    if (s->clean)
        session_unlink_free(h, s);
}

int session_set_will(struct session *s, const char *topic, size_t topic_len, const uint8_t *payload,
                     size_t payload_len, uint8_t qos)
{
    free(s->will);
    s->will = NULL;
    if (!topic)
        return 0;
    if (payload_len > UINT16_MAX)
        return -EINVAL;
    char *w = malloc(topic_len + 1 + payload_len + 1);
    if (!w)
        return -ENOMEM;
    memcpy(w, topic, topic_len);
    w[topic_len] = 0;
    if (payload_len)
        memcpy(w + topic_len + 1, payload, payload_len);
    w[topic_len + 1 + payload_len] = 0;
    s->will = w;
    s->will_len = (uint16_t)payload_len;
    s->will_qos = qos;
    return 0;
}

void sessions_forget_module(struct hub *h, const char *module)
{
    struct session *s, *tmp;
    llist_foreach_safe (s, tmp, &h->sessions->list, node) {
        if (s->conn || !s->id.address || strcmp(s->id.address, module) != 0)
            continue;
        if (!s->clean) {
            s->clean = true;
            persist(h, s); /* deletes the saved one */
        }
        session_unlink_free(h, s);
    }
}

/* Representative topics the hub publishes to a module, to decide what its filters ask for. */
static void sample_topics(char *desired, char *methods, char *twinres)
{
    strcpy(desired, "$iothub/twin/PATCH/properties/desired/?$version=1");
    strcpy(methods, "$iothub/methods/POST/m/?$rid=1");
    strcpy(twinres, "$iothub/twin/res/200/?$rid=1");
}

/* The topic prefix of what the hub sends a client unasked on topics of its own: a module's
 * "devices/<d>/modules/<m>/" (inputs), a leaf device's "devices/<d>/messages/devicebound/"
 * (cloud-to-device messages). Its length, or -1 when it does not fit. */
static int own_prefix(const struct session *s, char *own, size_t size)
{
    int n = s->id.kind == HUB_IDENTITY_DEVICE
                ? snprintf(own, size, "devices/%s/messages/devicebound/", s->id.device_id)
                : snprintf(own, size, "devices/%s/modules/%s/", s->id.device_id, s->id.module_id);
    return n > 0 && (size_t)n < size ? n : -1;
}

bool session_may_subscribe(const struct session *s, const char *filter, size_t len)
{
    char own[300];
    int n = own_prefix(s, own, sizeof(own));
    /* Ids compare case-insensitively, as IoT Hub's; a device's topics spell its id as it does. */
    int (*cmp)(const char *, const char *, size_t) =
        s->id.kind == HUB_IDENTITY_DEVICE ? strncasecmp : strncmp;
    /* Under its own prefix: anything (inputs, or "#" for the C SDK; a device's C2D topic). */
    if (n > 0 && len >= (size_t)n && cmp(filter, own, (size_t)n) == 0)
        return true;
    if (n > 0 && len == (size_t)n - 1 && cmp(filter, own, len) == 0)
        return true; /* "devices/d/modules/m" itself */
    static const char *const allowed[] = {
        "$iothub/twin/res/", "$iothub/twin/PATCH/properties/desired/", "$iothub/methods/POST/"};
    for (size_t i = 0; i < ARRAY_SIZE(allowed); i++) {
        size_t a = strlen(allowed[i]);
        if (len >= a && strncmp(filter, allowed[i], a) == 0)
            return true;
    }
    return false;
}

int session_input_qos(struct session *s, const char *input)
{
    if (!s->wants_inputs || s->id.kind != HUB_IDENTITY_MODULE)
        return -1;
    if (s->qos_input && strcmp(s->qos_input, input) == 0)
        return s->qos_value;
    /* What the hub sends: devices/<d>/modules/<m>/inputs/<input>/<bag>; "x" stands for the bag
     * (a filter naming one exact bag is not honoured). */
    char topic[512];
    int n = snprintf(topic, sizeof(topic), "devices/%s/modules/%s/inputs/%s/x", s->id.device_id,
                     s->id.module_id, input);
    if (n < 0 || (size_t)n >= sizeof(topic))
        return -1;
    int qos = -1;
    for (size_t i = 0; i < s->n_subs; i++)
        if (s->subs[i].qos > qos &&
            mqtt_topic_match(s->subs[i].filter, strlen(s->subs[i].filter), topic, (size_t)n))
            qos = s->subs[i].qos;
    /* Kept for the next delivery to the same input (most are): the match costs a formatted
     * topic. Without memory for it, the next call matches again. */
    free(s->qos_input);
    s->qos_input = strdup(input);
    s->qos_value = (int8_t)qos;
    return qos;
}

static void update_wants(struct session *s)
{
    free(s->qos_input); /* the subscriptions changed */
    s->qos_input = NULL;
    char desired[64], methods[64], twinres[64];
    sample_topics(desired, methods, twinres);
    s->wants_inputs = s->wants_desired = s->wants_methods = s->wants_twin_res = false;
    /* wants_inputs: any filter under the module's own prefix (which input it matches is
     * decided per endpoint by session_input_qos()) */
    char own[300];
    int on = s->id.kind == HUB_IDENTITY_MODULE ? own_prefix(s, own, sizeof(own)) : -1;
    for (size_t i = 0; i < s->n_subs; i++) {
        const char *f = s->subs[i].filter;
        size_t fl = strlen(f);
        if (on > 0 && (size_t)on < sizeof(own) && fl >= (size_t)on &&
            strncmp(f, own, (size_t)on) == 0)
            s->wants_inputs = true;
        s->wants_desired |= mqtt_topic_match(f, fl, desired, strlen(desired));
        s->wants_methods |= mqtt_topic_match(f, fl, methods, strlen(methods));
        s->wants_twin_res |= mqtt_topic_match(f, fl, twinres, strlen(twinres));
    }
}

int session_subscribe(struct hub *h, struct session *s, const char *filter, size_t len, uint8_t qos)
{
    /* A persistent session's subscription is granted only once it is saved: what the hub
     * holds in memory never runs ahead of what a restart brings back. */
    for (size_t i = 0; i < s->n_subs; i++)
        if (strlen(s->subs[i].filter) == len && memcmp(s->subs[i].filter, filter, len) == 0) {
            uint8_t was = s->subs[i].qos;
            s->subs[i].qos = qos;
            if (!s->clean && persist(h, s) < 0) {
                s->subs[i].qos = was;
                return -EIO;
            }
            update_wants(s);
            return 0;
        }
    if (s->n_subs >= (size_t)h->cfg.hub.max_subscriptions)
        return -ENOSPC;
    struct subscription *v = realloc(s->subs, (s->n_subs + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    s->subs = v;
    char *f = lstr_ndup(filter, len);
    if (!f)
        return -ENOMEM;
    s->subs[s->n_subs++] = (struct subscription){f, qos};
    if (!s->clean && persist(h, s) < 0) {
        free(s->subs[--s->n_subs].filter);
        return -EIO;
    }
    update_wants(s);
    return 0;
}

void session_unsubscribe(struct hub *h, struct session *s, const char *filter, size_t len)
{
    for (size_t i = 0; i < s->n_subs; i++)
        if (strlen(s->subs[i].filter) == len && memcmp(s->subs[i].filter, filter, len) == 0) {
            free(s->subs[i].filter);
            s->subs[i] = s->subs[--s->n_subs];
            update_wants(s);
            if (!s->clean)
                persist(h, s); /* UNSUBACK cannot refuse; a failure is logged once */
            return;
        }
}

json_t *sessions_status(struct hub *h, size_t *ret_connected, size_t *ret_sessions)
{
    size_t connected = 0;
    json_t *mods = json_array();
    struct session *s;
    llist_foreach (s, &h->sessions->list, node) {
        connected += s->conn != NULL;
        json_array_append_new(mods, json_pack("{s:s, s:b, s:b, s:i}", "clientId", s->client_id,
                                              "connected", s->conn != NULL, "persistent", !s->clean,
                                              "subscriptions", (int)s->n_subs));
    }
    *ret_connected = connected;
    *ret_sessions = h->sessions->n;
    return mods;
}
