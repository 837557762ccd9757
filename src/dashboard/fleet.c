/* fleet.c — one device's line on the dashboard's fleet page (fleet.h), summarised from its
 * management API's answers; every field is checked for its type, since a device's answers are
 * whatever it sent. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "dashboard/fleet.h"

const char *dash_fleet_reason(int result, long status, char *buf, size_t size)
{
    switch (result) {
    case 0:
        break;
    case -EKEYREJECTED:
        return "key changed";
    case -ECONNREFUSED:
        return "refused";
    case -ETIMEDOUT:
        return "timeout";
    case -EHOSTUNREACH:
    case -ENETUNREACH:
    case -ENOENT: /* a missing socket, a name that does not resolve */
        return "unreachable";
    default:
        snprintf(buf, size, "%s", strerror(result < 0 ? -result : result));
        return buf;
    }
    if (status == 200)
        return NULL;
    if (status == 401)
        return "token refused";
    snprintf(buf, size, "answered %ld", status);
    return buf;
}

static const char *str_of(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool is_failed(const char *st)
{
    return lstr_eq(st, "failed") || lstr_eq(st, "backoff") || lstr_eq(st, "unhealthy") ||
           lstr_eq(st, "dead");
}

static json_t *modules_summary(const json_t *answer)
{
    const json_t *list = json_object_get(answer, "modules");
    if (!json_is_array(list))
        return json_null();
    json_int_t running = 0, total = 0;
    json_t *failed = json_array();
    size_t i;
    const json_t *m;
    json_array_foreach (list, i, m) {
        const char *name = str_of(m, "name"), *st = str_of(m, "runtimeStatus");
        if (!name || lstr_eq(str_of(m, "status"), "removed"))
            continue; /* a leftover of an earlier deployment, not one of this one */
        total++;
        if (lstr_eq(st, "running"))
            running++;
        else if (is_failed(st) && json_array_size(failed) < DASH_FLEET_MAX_LIST)
            json_array_append_new(failed, json_pack("{s:s, s:s}", "name", name, "status", st));
    }
    return json_pack("{s:I, s:I, s:o}", "running", running, "total", total, "failed", failed);
}

static json_t *deployment_summary(const json_t *answer)
{
    const json_t *cur = json_object_get(answer, "current"),
                 *prog = json_object_get(answer, "inProgress");
    json_t *o = json_pack("{s:O, s:O, s:n, s:n}", "id",
                          json_is_integer(cur) ? (json_t *)cur : json_null(), "inProgress",
                          json_is_integer(prog) ? (json_t *)prog : json_null(), "outcome", "kind");
    const json_t *list = json_object_get(answer, "deployments");
    size_t i;
    const json_t *e;
    if (o && json_is_integer(cur) && json_is_array(list))
        json_array_foreach (list, i, e) {
            const json_t *id = json_object_get(e, "id");
            if (!json_is_integer(id) || json_integer_value(id) != json_integer_value(cur))
                continue;
            const char *outcome = str_of(e, "outcome"), *kind = str_of(e, "kind");
            if (outcome)
                json_object_set_new(o, "outcome", json_string(outcome));
            if (kind)
                json_object_set_new(o, "kind", json_string(kind));
            break;
        }
    return o;
}

static json_t *hub_summary(const json_t *answer, const char *error)
{
    const json_t *up = json_object_get(answer, "upstream");
    if (!json_is_object(up))
        return json_pack("{s:s, s:s?}", "state", "unavailable", "error",
                         error ? error : "no upstream in the hub's status");
    if (!json_is_true(json_object_get(up, "enabled")))
        return json_pack("{s:s}", "state", "off");
    json_t *o =
        json_pack("{s:s, s:s?}", "state",
                  json_is_true(json_object_get(up, "connected")) ? "connected" : "disconnected",
                  "host", str_of(up, "host"));
    const char *last = str_of(up, "lastError");
    if (o && last)
        json_object_set_new(o, "error", json_string(last));
    return o;
}

static json_t *vms_summary(const json_t *answer)
{
    const json_t *list = json_object_get(answer, "vms");
    if (!json_is_array(list))
        return json_null();
    json_t *a = json_array();
    size_t i;
    const json_t *v;
    json_array_foreach (list, i, v) {
        const char *name = str_of(v, "name");
        if (!name || json_array_size(a) >= DASH_FLEET_MAX_LIST)
            continue;
        json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "name", name, "state",
                                           str_of(v, "state") ?: "?", "arch",
                                           str_of(v, "arch") ?: "?"));
    }
    return a;
}

json_t *dash_fleet_device(const struct dash_fleet_answers *a)
{
    char buf[128];
    const char *reason = dash_fleet_reason(a->result, a->status, buf, sizeof(buf));
    if (!reason && !json_is_object(a->systeminfo))
        reason = "not like a ledge dashboard";
    json_t *o =
        json_pack("{s:b, s:s?, s:s?}", "reachable", reason == NULL, "deviceId",
                  str_of(a->systeminfo, "deviceId"), "version", str_of(a->systeminfo, "version"));
    if (!o)
        return NULL;
    if (reason) {
        json_object_set_new(o, "reason", json_string(reason));
        return o;
    }
    json_object_set_new(o, "deployment", deployment_summary(a->deployments));
    json_object_set_new(o, "modules", modules_summary(a->modules));
    json_object_set_new(o, "hub", hub_summary(a->hub, a->hub_error));
    json_object_set_new(o, "vms", vms_summary(a->vms));
    if (!json_is_array(json_object_get(o, "vms")))
        json_object_set_new(o, "vmsError", json_string(a->vms_error ? a->vms_error : "no VM list"));
    return o;
}
