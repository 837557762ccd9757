/* session.c — MQTT sessions of authenticated modules, keyed by client id "<device>/<module>".
 * A persistent session (clean session 0) keeps its subscriptions while disconnected, so the
 * module's backlog flows as soon as it reconnects; the backlog itself lives in the endpoints'
 * durable queues. Authorisation: a module subscribes only to its own inputs, twin and methods. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "base/timeutil.h"
#include "hub/hub.h"
#include "log/log.h"
#include "mqtt/topic.h"

#define COMP "hub"

static void session_free(struct session *s)
{
    for (size_t i = 0; i < s->n_subs; i++)
        free(s->subs[i].filter);
    free(s->subs);
    free(s->client_id);
    free(s->device_id);
    free(s->module_id);
    free(s->will_topic);
    free(s->will_payload);
    free(s);
}

static void session_unlink_free(struct hub *h, struct session *s)
{
    for (struct session **pp = &h->sessions; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            h->n_sessions--;
            break;
        }
    session_free(s);
}

struct session *session_find(struct hub *h, const char *client_id)
{
    for (struct session *s = h->sessions; s; s = s->next)
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

struct session *session_attach(struct hub *h, struct conn *c, const char *client_id,
                               const char *device, const char *module, bool clean,
                               bool *ret_present)
{
    struct session *s = session_find(h, client_id);
    if (s && s->conn) {
        /* MQTT-3.1.4-2: a second connection with the same client id takes over. */
        struct conn *old = s->conn;
        log_info(COMP, "%s: a new connection takes over from %s", client_id, old->peer);
        old->session = NULL;
        s->conn = NULL;
        endpoint_conn_gone(h, old);
        conn_close(old, NULL);
    }
    bool present = s && !clean && !s->clean;
    if (s && (clean || s->clean)) {
        clear_subscriptions(s);
        present = false;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
        s->hub = h;
        s->client_id = strdup(client_id);
        s->device_id = strdup(device);
        s->module_id = strdup(module);
        if (!s->client_id || !s->device_id || !s->module_id) {
            session_free(s);
            return NULL;
        }
        s->next = h->sessions;
        h->sessions = s;
        h->n_sessions++;
    }
    s->clean = clean;
    s->conn = c;
    c->session = s;
    *ret_present = present;
    return s;
}

void session_detach(struct session *s, bool graceful)
{
    struct hub *h = s->hub;
    struct conn *c = s->conn;
    if (c)
        c->session = NULL;
    s->conn = NULL;
    s->disconnected_ms = ltime_now_ms();
    /* The hub stopping is not the module going away: no will then. */
    if (!graceful && s->will_topic && !h->stopping) {
        /* The will of an ungraceful disconnect is published for the module: only to its own
         * events topic, where it is routed like any message from it. */
        struct mqtt_publish p = {
            .qos = s->will_qos > 1 ? 1 : s->will_qos,
            .topic = mqtt_str_c(s->will_topic),
            .payload = s->will_payload,
            .payload_len = s->will_len,
        };
        log_info(COMP, "%s: publishing its will", s->client_id);
        router_publish_will(h, s, &p);
    }
    free(s->will_topic);
    free(s->will_payload);
    s->will_topic = NULL;
    s->will_payload = NULL;
    if (s->clean)
        session_unlink_free(h, s);
}

void session_free_all(struct hub *h)
{
    while (h->sessions) {
        struct session *s = h->sessions;
        h->sessions = s->next;
        session_free(s);
    }
    h->n_sessions = 0;
}

/* Representative topics the hub publishes to a module, to decide what its filters ask for. */
static void sample_topics(char *desired, char *methods, char *twinres)
{
    strcpy(desired, "$iothub/twin/PATCH/properties/desired/?$version=1");
    strcpy(methods, "$iothub/methods/POST/m/?$rid=1");
    strcpy(twinres, "$iothub/twin/res/200/?$rid=1");
}

bool session_may_subscribe(const struct session *s, const char *filter, size_t len)
{
    char own[300];
    int n = snprintf(own, sizeof(own), "devices/%s/modules/%s/", s->device_id, s->module_id);
    /* Under its own device/module prefix: anything (inputs, or "#" for the C SDK). */
    if (n > 0 && (size_t)n < sizeof(own) && len >= (size_t)n &&
        strncmp(filter, own, (size_t)n) == 0)
        return true;
    if (n > 0 && len == (size_t)n - 1 && strncmp(filter, own, len) == 0)
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

int session_input_qos(const struct session *s, const char *input)
{
    if (!s->wants_inputs)
        return -1;
    /* What the hub sends: devices/<d>/modules/<m>/inputs/<input>/<bag>; "x" stands for the bag
     * (a filter naming one exact bag is not honoured). */
    char topic[512];
    int n = snprintf(topic, sizeof(topic), "devices/%s/modules/%s/inputs/%s/x", s->device_id,
                     s->module_id, input);
    if (n < 0 || (size_t)n >= sizeof(topic))
        return -1;
    int qos = -1;
    for (size_t i = 0; i < s->n_subs; i++)
        if (s->subs[i].qos > qos &&
            mqtt_topic_match(s->subs[i].filter, strlen(s->subs[i].filter), topic, (size_t)n))
            qos = s->subs[i].qos;
    return qos;
}

static void update_wants(struct session *s)
{
    char desired[64], methods[64], twinres[64];
    sample_topics(desired, methods, twinres);
    s->wants_inputs = s->wants_desired = s->wants_methods = s->wants_twin_res = false;
    /* wants_inputs: any filter under the module's own prefix (which input it matches is
     * decided per endpoint by session_input_qos()) */
    char own[300];
    int on = snprintf(own, sizeof(own), "devices/%s/modules/%s/", s->device_id, s->module_id);
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

int session_subscribe(struct session *s, const char *filter, size_t len, uint8_t qos)
{
    for (size_t i = 0; i < s->n_subs; i++)
        if (strlen(s->subs[i].filter) == len && memcmp(s->subs[i].filter, filter, len) == 0) {
            s->subs[i].qos = qos;
            update_wants(s);
            return 0;
        }
    if (s->n_subs >= (size_t)s->hub->cfg.hub.max_subscriptions)
        return -ENOSPC;
    struct subscription *v = realloc(s->subs, (s->n_subs + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    s->subs = v;
    char *f = hub_strndup(filter, len);
    if (!f)
        return -ENOMEM;
    s->subs[s->n_subs++] = (struct subscription){f, qos};
    update_wants(s);
    return 0;
}

void session_unsubscribe(struct session *s, const char *filter, size_t len)
{
    for (size_t i = 0; i < s->n_subs; i++)
        if (strlen(s->subs[i].filter) == len && memcmp(s->subs[i].filter, filter, len) == 0) {
            free(s->subs[i].filter);
            s->subs[i] = s->subs[--s->n_subs];
            break;
        }
    update_wants(s);
}
