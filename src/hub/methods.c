/* methods.c — direct methods (methods.h): a call gets a request id, goes to the module's client
 * (MQTT: $iothub/methods/POST/<method>/?$rid=<rid>) and waits for the answer with that id, or for
 * its timeout. A call with a connect timeout for a target that is not listening waits (its body
 * kept) until a client of that address listens for methods — the hub's deliver round says when
 * clients may listen to more (h->clients_changed) — or the connect timeout ends it with 404. */
#include "methods.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "base/list.h"
#include "clients.h"
#include "metrics.h"

#define COMP "hub"
#define METHODS_MAX_PENDING 1024

struct method_call {
    struct hub *h;
    char rid[24];
    char *module;
    char *method;
    methods_done_fn cb;
    void *ud;
    struct event *timer;
    int timeout_s;
    int64_t started_us; /* for edgehub_direct_method_duration_seconds */
    char *to;           /* IoT Edge's id of the receiver */
    int connect_timeout_s;
    char *body; /* while waiting for the target to connect */
    bool waiting;
    struct llist node;
};

struct methods {
    struct llist calls;
    size_t n, n_waiting;
    uint64_t next_rid;
};

static void methods_clients_changed(struct hub *h);

static bool is_device(const char *address)
{
    return strncmp(address, HUB_DEVICE_ADDRESS_PREFIX, strlen(HUB_DEVICE_ADDRESS_PREFIX)) == 0;
}

/* The module's or the device's id, for a message. */
static const char *target_name(const char *address)
{
    return is_device(address) ? address + strlen(HUB_DEVICE_ADDRESS_PREFIX) : address;
}

static int methods_start(struct hub *h, struct lerr *err)
{
    h->methods = calloc(1, sizeof(*h->methods));
    if (!h->methods)
        return lerr_set(err, -ENOMEM, "methods: out of memory");
    llist_init(&h->methods->calls);
    h->clients_changed = methods_clients_changed;
    return 0;
}

static void call_unlink(struct hub *h, struct method_call *c)
{
    if (!llist_linked(&c->node))
        return;
    llist_remove(&c->node);
    h->methods->n--;
    if (c->waiting)
        h->methods->n_waiting--;
}

static void call_free(struct method_call *c)
{
    if (c->timer)
        event_free(c->timer);
    free(c->module);
    free(c->method);
    free(c->to);
    free(c->body);
    free(c);
}

static void finish(struct method_call *c, int status, json_t *reply)
{
    struct hub *h = c->h;
    call_unlink(h, c);
    if (c->to)
        hub_metrics_observe(h, HM_METHOD_DURATION, (const char *[]){"upstream", c->to},
                            (double)(hub_metrics_now_us() - c->started_us) / 1e6);
    methods_done_fn cb = c->cb;
    void *ud = c->ud;
    call_free(c);
    cb(ud, status, reply);
    json_decref(reply);
}

static void methods_stop(struct hub *h)
{
    if (!h->methods)
        return;
    struct method_call *c;
    while ((c = llist_first(&h->methods->calls, struct method_call, node)))
        finish(c, 503, json_pack("{s:s}", "message", "the hub is stopping"));
    h->clients_changed = NULL;
    free(h->methods);
    h->methods = NULL;
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct method_call *c = arg;
    char msg[300];
    if (c->waiting) {
        snprintf(
            msg, sizeof(msg),
            "%s %s did not connect and listen for methods within %d s (connectTimeoutInSeconds)",
            is_device(c->module) ? "device" : "module", target_name(c->module),
            c->connect_timeout_s);
        finish(c, 404, json_pack("{s:s}", "message", msg));
        return;
    }
    snprintf(msg, sizeof(msg), "%s %s did not answer method %s within %d s",
             is_device(c->module) ? "device" : "module", target_name(c->module), c->method,
             c->timeout_s);
    finish(c, 504, json_pack("{s:s}", "message", msg));
}

/* The client that listens for methods at address, or NULL. */
static struct hub_client *listener_of(struct hub *h, const char *address)
{
    struct hub_client *cl = clients_find(h, address);
    return cl && cl->ops->listens(cl, HUB_STREAM_METHODS, NULL) >= 0 ? cl : NULL;
}

/* Send c to cl and start its response timeout. */
static int call_send(struct hub *h, struct method_call *c, struct hub_client *cl, const char *body)
{
    int r = cl->ops->method_call(cl, c->method, c->rid, body);
    if (r < 0)
        return r;
    char to[300];
    hub_metrics_client_id(cl->id->device_id, cl->id->module_id, to, sizeof(to));
    hub_metrics_add(h, HM_DIRECT_METHODS, (const char *[]){"upstream", to}, 1);
    free(c->to);
    c->to = strdup(to); /* NULL: the duration is not counted */
    c->started_us = hub_metrics_now_us();
    struct timeval tv = {c->timeout_s, 0};
    evtimer_add(c->timer, &tv);
    return 0;
}

/* Clients may listen to more now: the calls waiting for one of them go. */
static void methods_clients_changed(struct hub *h)
{
    if (!h->methods || !h->methods->n_waiting)
        return;
    struct method_call *c, *tmp;
    llist_foreach_safe (c, tmp, &h->methods->calls, node) {
        if (!c->waiting)
            continue;
        struct hub_client *cl = listener_of(h, c->module);
        if (!cl)
            continue;
        c->waiting = false;
        h->methods->n_waiting--;
        evtimer_del(c->timer);
        _cleanup_free_ char *body = c->body;
        c->body = NULL;
        int r = call_send(h, c, cl, body);
        if (r < 0)
            finish(c, 502, json_pack("{s:s}", "message", "cannot send the method call"));
    }
}

int methods_invoke(struct hub *h, const char *module, const char *method, const json_t *payload,
                   int timeout_s, int connect_timeout_s, methods_done_fn cb, void *ud,
                   void **ret_handle, struct lerr *err)
{
    struct hub_client *cl = clients_find(h, module);
    bool wait = connect_timeout_s > 0;
    if (!cl && !wait)
        return lerr_set(err, -ENOENT, "%s %s is not connected to the hub",
                        is_device(module) ? "device" : "module", target_name(module));
    if (cl && cl->ops->listens(cl, HUB_STREAM_METHODS, NULL) < 0) {
        if (!wait)
            return lerr_set(err, -ENOENT, "%s %s is connected but does not listen for methods",
                            is_device(module) ? "device" : "module", target_name(module));
        cl = NULL;
    }
    if (h->methods->n >= METHODS_MAX_PENDING)
        return lerr_set(err, -EBUSY, "too many method calls in progress");
    if (!*method || strpbrk(method, "/+#"))
        return lerr_set(err, -EINVAL, "method name \"%s\": must be non-empty, without / + #",
                        method);
    struct method_call *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->h = h;
    snprintf(c->rid, sizeof(c->rid), "%llu", (unsigned long long)++h->methods->next_rid);
    c->module = strdup(module);
    c->method = strdup(method);
    c->cb = cb;
    c->ud = ud;
    c->timeout_s = timeout_s;
    c->connect_timeout_s = connect_timeout_s;
    c->timer = evtimer_new(h->base, timeout_cb, c);
    char *body = payload ? ljson_dump(payload) : strdup("null");
    int r = (!c->module || !c->method || !c->timer || !body) ? -ENOMEM
            : cl                                             ? call_send(h, c, cl, body)
                                                             : 0;
    if (r < 0) {
        free(body);
        call_free(c);
        return lerr_set(err, r, "cannot send the method call: %s", strerror(-r));
    }
    if (cl) {
        free(body);
    } else {
        /* not there (or not listening) yet: wait up to the connect timeout */
        c->waiting = true;
        c->body = body;
        struct timeval tv = {connect_timeout_s, 0};
        evtimer_add(c->timer, &tv);
        h->methods->n_waiting++;
    }
    llist_add_head(&h->methods->calls, &c->node);
    h->methods->n++;
    *ret_handle = c;
    return 0;
}

void methods_cancel(struct hub *h, void *handle)
{
    struct method_call *c = handle;
    call_unlink(h, c);
    call_free(c);
}

void methods_response(struct hub *h, const struct hub_identity *from, const char *rid,
                      size_t rid_len, int status, const void *payload, size_t payload_len)
{
    struct method_call *c;
    llist_foreach (c, &h->methods->calls, node) {
        if (strlen(c->rid) != rid_len || memcmp(c->rid, rid, rid_len) != 0)
            continue;
        if (!from->address || strcmp(c->module, from->address) != 0)
            return; /* another client's request id: not its to answer */
        json_t *reply = NULL;
        if (payload_len && ljson_parse((const char *)payload, payload_len, &reply, NULL) < 0)
            reply = json_stringn((const char *)payload, payload_len);
        finish(c, 200,
               json_pack("{s:i, s:o}", "status", status, "payload", reply ? reply : json_null()));
        return;
    }
}

const struct hub_sink_ops methods_sink_ops = {
    .name = "methods",
    .start = methods_start,
    .stop = methods_stop,
};
