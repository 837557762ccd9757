/* fuzz-route.c — libFuzzer target for the route language: parse arbitrary text as a route and,
 * when it parses, evaluate it against fixed messages (JSON body, twin change, opaque body).
 * Inputs starting with '{' are $edgeHub desired properties for the route table instead. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "route/route.h"

/* Like assert(), but never compiled out. */
#define CHECK(x) ((x) ? (void)0 : abort())

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char body[] =
    "{\"temperature\":30.5,\"name\":\"sensor-1\",\"ok\":true,\"none\":null,\"list\":[1,\"two\","
    "{\"x\":3}],\"obj\":{\"a\":{\"b\":\"c\"}},\"unicode\":\"\\u00e9\\ud83d\\ude00\"}";
static const char twin[] =
    "{\"version\":3,\"properties\":{\"reported\":{\"temp\":21,\"gone\":null},\"desired\":{}}}";

static const struct route_prop sys_json[] = {
    {"contentType", "application/json"},
    {"contentEncoding", "utf-8"},
    {"connectionModuleId", "sensor"},
    {"outputName", "out1"},
    {"messageId", "m-1"},
};
static const struct route_prop sys_twin[] = {
    {"contentType", "application/json"},
    {"contentEncoding", "UTF-8"},
    {"messageType", "twinChangeNotification"},
};
static const struct route_prop app[] = {
    {"temperature", "30"},
    {"alert", "true"},
    {"$body.name", "shadow"},
    {"a-1", "x"},
};

static void exercise(const struct route *r, struct route_message *m)
{
    enum route_truth t;
    char buf[128];
    int rc = route_eval(r, m, &t);
    CHECK(rc == 0 || rc == -E2BIG || rc == -ENOMEM);
    CHECK(rc < 0 || t == ROUTE_TRUE || t == ROUTE_FALSE || t == ROUTE_UNDEFINED);
    rc = route_eval_describe(r, m, buf, sizeof(buf));
    CHECK(rc == 0 || rc == -E2BIG || rc == -ENOMEM);
    (void)route_source_matches(r, m->source);
}

static void messages(void (*fn)(const void *, struct route_message *), const void *ctx)
{
    struct route_message json = {
        .source = "/messages/modules/sensor/outputs/out1",
        .sys = sys_json,
        .n_sys = sizeof(sys_json) / sizeof(sys_json[0]),
        .app = app,
        .n_app = sizeof(app) / sizeof(app[0]),
        .body = body,
        .body_len = sizeof(body) - 1,
    };
    struct route_message tw = {
        .source = "/twinChangeNotifications",
        .sys = sys_twin,
        .n_sys = sizeof(sys_twin) / sizeof(sys_twin[0]),
        .body = twin,
        .body_len = sizeof(twin) - 1,
    };
    struct route_message opaque = {
        .source = "/messages",
        .app = app,
        .n_app = sizeof(app) / sizeof(app[0]),
        .body = "\x00\x01\xff",
        .body_len = 3,
    };
    fn(ctx, &json);
    fn(ctx, &json); /* second pass uses the cached body */
    fn(ctx, &tw);
    fn(ctx, &opaque);
    route_message_release(&json);
    route_message_release(&tw);
    route_message_release(&opaque);
}

static void eval_route(const void *ctx, struct route_message *m)
{
    exercise(ctx, m);
}

static void match_table(const void *ctx, struct route_message *m)
{
    const struct route_table *t = ctx;
    struct route_match *res = calloc(t->n_sinks ? t->n_sinks : 1, sizeof(*res));
    if (!res)
        return;
    int n = route_table_match(t, m, res);
    CHECK(n >= -ENOMEM && n <= (int)t->n_sinks);
    for (int i = 0; i < n; i++)
        CHECK(res[i].sink < t->n_sinks);
    free(res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * ROUTE_MAX_TEXT)
        return 0;
    if (size > 0 && data[0] == '{') {
        json_t *j = json_loadb((const char *)data, size, 0, NULL);
        if (!j)
            return 0;
        struct lstrv errors = LSTRV_INIT;
        struct route_table *t = NULL;
        int rc = route_table_new(j, &t, &errors);
        CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
        CHECK(rc != -EINVAL || errors.n > 0);
        if (rc == 0)
            messages(match_table, t);
        route_table_free(t);
        lstrv_free(&errors);
        json_decref(j);
        return 0;
    }
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    struct route *r = NULL;
    struct lerr e = {0};
    int rc = route_parse(text, &r, &e);
    if (rc == 0) {
        CHECK(route_sink(r)->id != NULL);
        messages(eval_route, r);
        route_free(r);
    } else {
        CHECK(e.msg[0] != 0);
    }
    free(text);
    return 0;
}
