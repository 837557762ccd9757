/* methods.c — direct methods: a call from ledged's management API (through the control socket)
 * is published to the module on $iothub/methods/POST/<method>/?$rid=<rid>; the module's answer on
 * $iothub/methods/res/<status>/?$rid=<rid> completes the call. A module that is not connected (or
 * not subscribed to methods) gets 404 at once; no answer in time gets 504. */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "hub/hub.h"
#include "log/log.h"
#include "mqtt/iothub.h"

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
    struct method_call *next;
};

struct methods {
    struct method_call *calls;
    size_t n;
    uint64_t next_rid;
};

int methods_start(struct hub *h)
{
    h->methods = calloc(1, sizeof(*h->methods));
    return h->methods ? 0 : -ENOMEM;
}

static void call_unlink(struct hub *h, struct method_call *c)
{
    for (struct method_call **pp = &h->methods->calls; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            h->methods->n--;
            return;
        }
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

void methods_stop(struct hub *h)
{
    if (!h->methods)
        return;
    while (h->methods->calls)
        finish(h->methods->calls, 503, json_pack("{s:s}", "message", "the hub is stopping"));
    free(h->methods);
    h->methods = NULL;
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct method_call *c = arg;
    char msg[300];
    snprintf(msg, sizeof(msg), "module %s did not answer method %s within %d s", c->module,
             c->method, c->timeout_s);
    finish(c, 504, json_pack("{s:s}", "message", msg));
}

int methods_invoke(struct hub *h, const char *module, const char *method, const json_t *payload,
                   int timeout_s, methods_done_fn cb, void *ud, void **ret_handle, struct lerr *err)
{
    struct session *s = NULL;
    for (struct session *x = h->sessions; x; x = x->next)
        if (x->conn && x->conn->state == CONN_ACTIVE && strcmp(x->module_id, module) == 0)
            s = x;
    if (!s)
        return lerr_set(err, -ENOENT, "module %s is not connected to the hub", module);
    if (!s->wants_methods)
        return lerr_set(err, -ENOENT, "module %s is connected but does not listen for methods",
                        module);
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
    struct lbuf topic = LBUF_INIT;
    int r = (!c->module || !c->method || !c->timer || !body)
                ? -ENOMEM
                : iothub_topic_method_request(&topic, mqtt_str_c(method), mqtt_str_c(c->rid));
    if (r == 0)
        r = conn_send_publish(s->conn, topic.data, topic.len, 0, false, 0, body, strlen(body));
    lbuf_free(&topic);
    free(body);
    if (r < 0) {
        call_free(c);
        return lerr_set(err, r, "cannot send the method call: %s", strerror(-r));
    }
    struct timeval tv = {timeout_s, 0};
    evtimer_add(c->timer, &tv);
    c->next = h->methods->calls;
    h->methods->calls = c;
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

int methods_response(struct hub *h, struct session *s, const struct iothub_topic *t,
                     const struct mqtt_publish *p)
{
    for (struct method_call *c = h->methods->calls; c; c = c->next) {
        if (strlen(c->rid) != t->rid.len || memcmp(c->rid, t->rid.ptr, t->rid.len) != 0)
            continue;
        if (strcmp(c->module, s->module_id) != 0)
            break; /* another module's request id: not its to answer */
        json_t *payload = NULL;
        if (p->payload_len &&
            ljson_parse((const char *)p->payload, p->payload_len, &payload, NULL) < 0)
            payload = json_stringn((const char *)p->payload, p->payload_len);
        finish(c, 200,
               json_pack("{s:i, s:o}", "status", t->status, "payload",
                         payload ? payload : json_null()));
        break;
    }
    if (p->qos == 1 && s->conn)
        router_ack(h, s->conn, p->packet_id);
    return 0;
}
