/* cloud.c — deployments from IoT Hub, the pure half (cloud.h): desired properties → manifest,
 * the agent's module view → IoT Edge's reported properties, JSON merge patches. */
#include "agent/cloud.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"

/* IoT Edge writes DateTime.MinValue for a time that never happened. */
#define NEVER_UTC "0001-01-01T00:00:00Z"

void cloud_merge_patch(json_t **target, const json_t *patch)
{
    if (!json_is_object(patch)) {
        json_decref(*target);
        *target = json_deep_copy(patch);
        return;
    }
    if (!json_is_object(*target)) {
        json_decref(*target);
        *target = json_object();
        if (!*target)
            return;
    }
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)patch, k, v) {
        if (json_is_null(v)) {
            json_object_del(*target, k);
            continue;
        }
        json_t *cur = json_incref(json_object_get(*target, k));
        cloud_merge_patch(&cur, v);
        if (cur)
            json_object_set_new(*target, k, cur);
    }
}

json_t *cloud_merge_diff(const json_t *from, const json_t *to)
{
    if (!to)
        return json_is_null(from) || !from ? NULL : json_null();
    if (!json_is_object(from) || !json_is_object(to))
        return from && json_equal(from, to) ? NULL : json_deep_copy(to);
    json_t *d = json_object();
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)to, k, v) {
        json_t *sub = cloud_merge_diff(json_object_get(from, k), v);
        if (sub)
            json_object_set_new(d, k, sub);
    }
    json_object_foreach ((json_t *)from, k, v)
        if (!json_object_get(to, k))
            json_object_set_new(d, k, json_null());
    if (d && json_object_size(d) == 0) {
        json_decref(d);
        return NULL;
    }
    return d;
}

static bool twin_key(const char *k)
{
    return strcmp(k, "$version") == 0 || strcmp(k, "$metadata") == 0;
}

json_t *cloud_strip_twin_keys(const json_t *desired)
{
    if (json_is_array(desired)) {
        json_t *a = json_array();
        size_t i;
        json_t *v;
        json_array_foreach (desired, i, v)
            json_array_append_new(a, cloud_strip_twin_keys(v));
        return a;
    }
    if (!json_is_object(desired))
        return json_deep_copy(desired);
    json_t *o = json_object();
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)desired, k, v)
        if (!twin_key(k))
            json_object_set_new(o, k, cloud_strip_twin_keys(v));
    return o;
}

bool cloud_desired_has_deployment(const json_t *agent_desired)
{
    return json_is_object(agent_desired) && (json_object_get(agent_desired, "modules") ||
                                             json_object_get(agent_desired, "systemModules") ||
                                             json_object_get(agent_desired, "runtime"));
}

char *cloud_manifest_text(const json_t *agent_desired, const json_t *hub_desired)
{
    json_t *content = json_object();
    json_t *a = cloud_strip_twin_keys(agent_desired ? agent_desired : json_object());
    json_object_set_new(content, "$edgeAgent", json_pack("{s:o}", "properties.desired", a));
    if (json_is_object(hub_desired)) {
        json_t *h = cloud_strip_twin_keys(hub_desired);
        if (h && json_object_size(h) > 0)
            json_object_set_new(content, "$edgeHub", json_pack("{s:o}", "properties.desired", h));
        else
            json_decref(h);
    }
    json_t *m = json_pack("{s:o}", "modulesContent", content);
    char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    return text;
}

int64_t cloud_desired_version(const json_t *desired)
{
    json_t *v = json_object_get(desired, "$version");
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

char *cloud_describe_errors(const struct lstrv *errors)
{
    struct lbuf b = LBUF_INIT;
    lbuf_puts(&b, "invalid deployment: ");
    for (size_t i = 0; errors && i < errors->n; i++) {
        if (i)
            lbuf_puts(&b, "; ");
        lbuf_puts(&b, errors->v[i]);
    }
    if (!errors || errors->n == 0)
        lbuf_puts(&b, "refused");
    if (b.data && b.len > CLOUD_DESCRIPTION_MAX) {
        /* cut on a UTF-8 boundary */
        size_t n = CLOUD_DESCRIPTION_MAX - 3;
        while (n > 0 && ((unsigned char)b.data[n] & 0xC0) == 0x80)
            n--;
        b.len = n;
        lbuf_puts(&b, "...");
    }
    return lbuf_steal(&b);
}

static json_t *time_or_never(const json_t *t)
{
    return json_is_string(t) ? json_copy((json_t *)t) : json_string(NEVER_UTC);
}

static json_t *status_json(int code, const char *description)
{
    return json_pack("{s:i, s:s}", "code", code, "description", description ? description : "");
}

/* The runtime fields edgeAgent reports for a module, from agent_modules_json()'s entry. */
static void runtime_fields(json_t *out, const json_t *m)
{
    const char *st = ljson_str(m, "runtimeStatus");
    json_object_set_new(out, "runtimeStatus", json_string(st ? st : "unknown"));
    const char *desc = ljson_str(m, "statusDescription");
    json_object_set_new(out, "statusDescription", json_string(desc ? desc : ""));
    json_object_set_new(out, "exitCode", json_integer(ljson_int(m, "exitCode", 0)));
    json_object_set_new(out, "lastStartTimeUtc",
                        time_or_never(json_object_get(m, "lastStartTimeUtc")));
    json_object_set_new(out, "lastExitTimeUtc",
                        time_or_never(json_object_get(m, "lastExitTimeUtc")));
    json_object_set_new(out, "restartCount", json_integer(ljson_int(m, "restartCount", 0)));
    json_object_set_new(out, "lastRestartTimeUtc",
                        time_or_never(json_object_get(m, "lastRestartTimeUtc")));
}

/* The desired entry's own fields echoed as edgeAgent does (type, status, restartPolicy,
 * version, settings, env, imagePullPolicy, startupOrder). */
static void desired_fields(json_t *out, const json_t *want)
{
    static const char *const keys[] = {"type",     "status", "restartPolicy",   "version",
                                       "settings", "env",    "imagePullPolicy", "startupOrder"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(want, keys[i]);
        if (v)
            json_object_set_new(out, keys[i], cloud_strip_twin_keys(v));
    }
}

static const json_t *find_module(const json_t *modules, const char *name)
{
    size_t i;
    json_t *m;
    json_array_foreach (modules, i, m)
        if (lstr_eq(ljson_str(m, "name"), name))
            return m;
    return NULL;
}

json_t *cloud_agent_reported(const struct cloud_agent_report *in)
{
    const json_t *want_sys = json_object_get(in->desired, "systemModules");
    const json_t *want_mods = json_object_get(in->desired, "modules");
    json_t *o = json_object();
    json_object_set_new(o, "schemaVersion", json_string(CLOUD_SCHEMA_VERSION));
    json_object_set_new(o, "version",
                        json_pack("{s:s, s:s, s:s}", "version", in->version, "build", in->version,
                                  "commit", "ledge"));
    json_object_set_new(o, "lastDesiredVersion",
                        in->desired_version >= 0 ? json_integer(in->desired_version) : json_null());
    json_object_set_new(o, "lastDesiredStatus",
                        status_json(in->status_code, in->status_description));

    json_t *runtime = json_pack("{s:s, s:{s:s, s:s, s:s}}", "type", "docker", "platform", "os",
                                in->os ? in->os : "linux", "architecture", in->arch ? in->arch : "",
                                "version", in->version);
    json_t *rs = json_object_get(json_object_get(in->desired, "runtime"), "settings");
    if (runtime && rs)
        json_object_set_new(runtime, "settings", cloud_strip_twin_keys(rs));
    json_object_set_new(o, "runtime", runtime);

    /* edgeAgent is ledged itself: running for as long as it can report */
    json_t *agent = json_pack("{s:s, s:s, s:i, s:s, s:s, s:i, s:s}", "runtimeStatus", "running",
                              "statusDescription", "", "exitCode", 0, "lastStartTimeUtc",
                              in->started_utc ? in->started_utc : NEVER_UTC, "lastExitTimeUtc",
                              NEVER_UTC, "restartCount", 0, "lastRestartTimeUtc", NEVER_UTC);
    desired_fields(agent, json_object_get(want_sys, "edgeAgent"));
    json_t *sys = json_pack("{s:o}", "edgeAgent", agent);
    const json_t *hub = find_module(in->modules, "edgeHub");
    if (hub && json_is_true(json_object_get(hub, "system"))) {
        json_t *h = json_object();
        runtime_fields(h, hub);
        desired_fields(h, json_object_get(want_sys, "edgeHub"));
        json_object_set_new(sys, "edgeHub", h);
    }
    json_object_set_new(o, "systemModules", sys);

    json_t *mods = json_object();
    size_t i;
    json_t *m;
    json_array_foreach (in->modules, i, m) {
        const char *name = ljson_str(m, "name");
        if (!name || json_is_true(json_object_get(m, "system")))
            continue;
        json_t *e = json_object();
        runtime_fields(e, m);
        const json_t *want = json_object_get(want_mods, name);
        if (want) {
            desired_fields(e, want);
        } else {
            /* deployed locally (ledge deploy) or on its way out: what the agent knows */
            const char *v = ljson_str(m, "version"), *img = ljson_str(m, "image");
            json_object_set_new(e, "type", json_string(ljson_str(m, "type") ?: "docker"));
            json_object_set_new(e, "status", json_string(ljson_str(m, "status") ?: "running"));
            if (ljson_str(m, "restartPolicy"))
                json_object_set_new(e, "restartPolicy", json_string(ljson_str(m, "restartPolicy")));
            if (img)
                json_object_set_new(e, "settings", json_pack("{s:s}", "image", img));
            if (v)
                json_object_set_new(e, "version", json_string(v));
        }
        if (!json_object_get(e, "version"))
            json_object_set_new(e, "version", json_string(""));
        json_object_set_new(mods, name, e);
    }
    json_object_set_new(o, "modules", mods);
    return o;
}

json_t *cloud_hub_reported(const struct cloud_hub_report *in)
{
    json_t *o = json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:o, s:o}", "schemaVersion", CLOUD_SCHEMA_VERSION, "version",
        "version", in->version, "build", in->version, "commit", "ledge", "lastDesiredVersion",
        in->desired_version >= 0 ? json_integer(in->desired_version) : json_null(),
        "lastDesiredStatus", status_json(in->status_code, in->status_description));
    if (o)
        json_object_set_new(o, "clients",
                            in->clients ? json_deep_copy(in->clients) : json_object());
    return o;
}
