/* methods.c — direct methods (methods.h): a call gets a request id, goes to the module's client
 * (MQTT: $iothub/methods/POST/<method>/?$rid=<rid>) and waits for the answer with that id, or for
 * its timeout. */
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
    struct llist node;
};

struct methods {
    struct llist calls;
    size_t n;
    uint64_t next_rid;
};

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
    return 0;
}

static void call_unlink(struct hub *h, struct method_call *c)
{
    if (!llist_linked(&c->node))
        return;
    llist_remove(&c->node);
    h->methods->n--;
}

static void call_free(struct method_call *c)
{
    if (c->timer)
        event_free(c->timer);
    free(c->module);
    free(c->method);
    free(c);
}

static void finish(struct method_call *c, int status, json_t *reply)
{
    struct hub *h = c->h;
    call_unlink(h, c);
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
    free(h->methods);
    h->methods = NULL;
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct method_call *c = arg;
    char msg[300];
    snprintf(msg, sizeof(msg), "%s %s did not answer method %s within %d s",
             is_device(c->module) ? "device" : "module", target_name(c->module), c->method,
             c->timeout_s);
    finish(c, 504, json_pack("{s:s}", "message", msg));
}

int methods_invoke(struct hub *h, const char *module, const char *method, const json_t *payload,
                   int timeout_s, methods_done_fn cb, void *ud, void **ret_handle, struct lerr *err)
{
    struct hub_client *cl = clients_find(h, module);
    if (!cl)
        return lerr_set(err, -ENOENT, "%s %s is not connected to the hub",
                        is_device(module) ? "device" : "module", target_name(module));
    if (cl->ops->listens(cl, HUB_STREAM_METHODS, NULL) < 0)
        return lerr_set(err, -ENOENT, "%s %s is connected but does not listen for methods",
                        is_device(module) ? "device" : "module", target_name(module));
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
    c->timer = evtimer_new(h->base, timeout_cb, c);
    char *body = payload ? ljson_dump(payload) : strdup("null");
    int r = (!c->module || !c->method || !c->timer || !body)
                ? -ENOMEM
                : cl->ops->method_call(cl, method, c->rid, body);
    free(body);
    if (r < 0) {
        call_free(c);
        return lerr_set(err, r, "cannot send the method call: %s", strerror(-r));
    }
    struct timeval tv = {timeout_s, 0};
    evtimer_add(c->timer, &tv);
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
