/* test-engine.c — unit tests for the engine layer: the docker backend's pure document handling
 * (createOptions merge, version/inspect/list/event parsing, log demultiplexing) and the process
 * backend end to end with real programs (start, exit codes, stop with SIGTERM→SIGKILL, logs, and
 * re-adoption of a running program by a new engine instance, as after a restart of ledged). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "docker_json.h"
#include "engine/engine.h"

static json_t *J(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_create_body_merge(void **state)
{
    json_t *user = J("{\"Env\":[\"A=user\",\"KEEP=1\"],\"Labels\":{\"dev.ledge.owner\":\"evil\","
                     "\"mine\":\"x\"},\"HostConfig\":{\"Binds\":[\"/data:/data\"],"
                     "\"PortBindings\":{\"80/tcp\":[{\"HostPort\":\"8080\"}]},"
                     "\"RestartPolicy\":{\"Name\":\"always\"}}}");
    json_t *labels = J("{\"dev.ledge.owner\":\"ledge\",\"dev.ledge.module\":\"m\"}");
    json_t *env = J("{\"A\":\"ledge\",\"IOTEDGE_MODULEID\":\"m\"}");
    json_t *binds = J("[\"/run/ledge/workload/m.sock:/var/run/iotedge/workload.sock\"]");
    json_t *logc = J("{\"Type\":\"json-file\",\"Config\":{\"max-size\":\"10m\"}}");
    struct engine_create_spec spec = {.name = "m",
                                      .image = "img:1",
                                      .create_options = user,
                                      .labels = labels,
                                      .env = env,
                                      .binds = binds,
                                      .gateway_hostname = "gw.local",
                                      .network = "ledge",
                                      .default_log_config = logc};
    json_t *body = NULL;
    struct lerr err = {0};
    assert_int_equal(docker_build_create_body(&spec, "172.30.0.1", &body, &err), 0);
    assert_string_equal(ljson_str(body, "Image"), "img:1");
    json_t *l = json_object_get(body, "Labels");
    assert_string_equal(ljson_str(l, "dev.ledge.owner"), "ledge"); /* ledge wins */
    assert_string_equal(ljson_str(l, "mine"), "x");                /* user keeps the rest */
    char *e = ljson_dump(json_object_get(body, "Env"));
    assert_string_equal(e, "[\"KEEP=1\",\"A=ledge\",\"IOTEDGE_MODULEID=m\"]");
    free(e);
    json_t *hc = json_object_get(body, "HostConfig");
    assert_int_equal(json_array_size(json_object_get(hc, "Binds")), 2);
    assert_non_null(json_object_get(hc, "PortBindings"));
    /* a published port is exposed, or the API publishes nothing for it */
    assert_non_null(json_object_get(json_object_get(body, "ExposedPorts"), "80/tcp"));
    assert_string_equal(ljson_str(hc, "NetworkMode"), "ledge");
    /* the gateway name leads to the module network's gateway (host-gateway while unknown) */
    assert_string_equal(json_string_value(json_array_get(json_object_get(hc, "ExtraHosts"), 0)),
                        "gw.local:172.30.0.1");
    json_decref(body);
    assert_int_equal(docker_build_create_body(&spec, NULL, &body, &err), 0);
    hc = json_object_get(body, "HostConfig");
    assert_string_equal(json_string_value(json_array_get(json_object_get(hc, "ExtraHosts"), 0)),
                        "gw.local:host-gateway");
    assert_string_equal(ljson_str(json_object_get(hc, "RestartPolicy"), "Name"), "no");
    assert_string_equal(ljson_str(json_object_get(hc, "LogConfig"), "Type"), "json-file");
    assert_non_null(json_object_get(
        json_object_get(json_object_get(body, "NetworkingConfig"), "EndpointsConfig"), "ledge"));
    json_decref(body);

    /* The user's NetworkMode and LogConfig are respected. */
    json_t *user2 =
        J("{\"HostConfig\":{\"NetworkMode\":\"host\",\"LogConfig\":{\"Type\":\"local\"}}}");
    spec.create_options = user2;
    assert_int_equal(docker_build_create_body(&spec, "172.30.0.1", &body, &err), 0);
    hc = json_object_get(body, "HostConfig");
    assert_string_equal(ljson_str(hc, "NetworkMode"), "host");
    assert_string_equal(json_string_value(json_array_get(json_object_get(hc, "ExtraHosts"), 0)),
                        "gw.local:127.0.0.1");
    assert_string_equal(ljson_str(json_object_get(hc, "LogConfig"), "Type"), "local");
    assert_null(json_object_get(body, "NetworkingConfig"));
    json_decref(body);
    /* a network of the user's choosing: docker's host-gateway */
    json_t *user3 = J("{\"HostConfig\":{\"NetworkMode\":\"mine\"}}");
    spec.create_options = user3;
    assert_int_equal(docker_build_create_body(&spec, "172.30.0.1", &body, &err), 0);
    hc = json_object_get(body, "HostConfig");
    assert_string_equal(json_string_value(json_array_get(json_object_get(hc, "ExtraHosts"), 0)),
                        "gw.local:host-gateway");
    json_decref(body);
    json_decref(user3);

    /* the typed form: what the user wrote as IoT Edge reads it, in the API's spelling */
    json_t *loose = J("{\"hostconfig\":{\"privileged\":\"true\",\"portbindings\":{\"1/tcp\":"
                      "[{\"hostport\":1}]}},\"labels\":{\"n\":2}}");
    spec.create_options = loose;
    assert_int_equal(docker_build_create_body(&spec, NULL, &body, &err), 0);
    hc = json_object_get(body, "HostConfig");
    assert_true(json_is_true(json_object_get(hc, "Privileged")));
    assert_string_equal(
        ljson_str(json_array_get(json_object_get(json_object_get(hc, "PortBindings"), "1/tcp"), 0),
                  "HostPort"),
        "1");
    assert_string_equal(ljson_str(json_object_get(body, "Labels"), "n"), "2");
    assert_null(json_object_get(body, "hostconfig"));
    json_decref(body);
    json_decref(loose);

    json_t *bad = J("{\"Env\":\"A=1\"}");
    spec.create_options = bad;
    assert_int_equal(docker_build_create_body(&spec, NULL, &body, &err), -EINVAL);
    assert_string_equal(err.msg, "createOptions.Env: expected an array, got \"A=1\"");
    json_t *bad2 = J("{\"HostConfig\":{\"Binds\":\"x\"}}");
    spec.create_options = bad2;
    assert_int_equal(docker_build_create_body(&spec, NULL, &body, &err), -EINVAL);
    assert_string_equal(err.msg, "createOptions.HostConfig.Binds: expected an array, got \"x\"");

    json_decref(user);
    json_decref(user2);
    json_decref(bad);
    json_decref(bad2);
    json_decref(labels);
    json_decref(env);
    json_decref(binds);
    json_decref(logc);
}

/* Engines are found by name; what they can do is in their ops table, not in their name. */
static void test_registry(void **state)
{
    assert_ptr_equal(engine_ops_find("docker"), &engine_docker_ops);
    assert_ptr_equal(engine_ops_find("process"), &engine_process_ops);
    assert_ptr_equal(engine_ops_find("oci"), &engine_oci_ops);
    assert_null(engine_ops_find("Docker"));
    assert_null(engine_ops_find("nope"));
    assert_null(engine_ops_find(NULL));
    assert_int_equal(engine_ops_count(), 3);
    for (size_t i = 0; i < engine_ops_count(); i++)
        assert_ptr_equal(engine_ops_find(engine_ops_at(i)->name), engine_ops_at(i));
    assert_null(engine_ops_at(engine_ops_count()));
    const struct engine_ops *d = engine_ops_find("docker"), *p = engine_ops_find("process");
    assert_int_equal(d->runs, ENGINE_RUNS_IMAGES);
    assert_non_null(d->ensure_network);
    assert_non_null(d->pull);
    assert_non_null(d->image_present);
    assert_non_null(d->image_platform);
    assert_int_equal(p->runs, ENGINE_RUNS_PROGRAMS);
    assert_null(p->ensure_network);
    assert_null(p->pull);
    assert_null(p->image_present);
    assert_null(p->image_platform);
}

/* A blocking caller (the CLI) runs an engine call to its end with engine_wait(). */
struct wait_ctx {
    bool done;
    int result;
    char msg[LERR_MSG_MAX];
};

static void wait_version_cb(void *ud, int result, const struct engine_version *v,
                            const struct lerr *err)
{
    struct wait_ctx *w = ud;
    w->done = true;
    w->result = result;
    snprintf(w->msg, sizeof(w->msg), "%s", err ? err->msg : "");
}

/* "$upstream:PORT/..." to the parent's registry proxy (upstream.parent); everything else as is. */
static void test_upstream_resolve(void **state)
{
    (void)state;
    static const struct {
        const char *parent, *in, *out; /* out NULL: refused */
        int result;
    } cases[] = {
        {"parent.local", "$upstream:443/azureiotedge-agent:1.4",
         "parent.local:443/azureiotedge-agent:1.4", 1},
        {"10.0.0.1", "$upstream:5000/team/app@sha256:abc", "10.0.0.1:5000/team/app@sha256:abc", 1},
        {"fd00::1", "$upstream:443/x:1", "[fd00::1]:443/x:1", 1},
        {"parent", "$upstream:443", "parent:443", 1}, /* a registry address (credentials) */
        {"parent", "docker.io/library/alpine:3.19", "docker.io/library/alpine:3.19", 0},
        {NULL, "localhost:5000/upstream:1", "localhost:5000/upstream:1", 0},
        {"parent", "upstream:443/x", "upstream:443/x", 0},
        {NULL, "$upstream:443/x:1", NULL, -EINVAL},
        {"", "$upstream:443/x:1", NULL, -EINVAL},
        {"parent", "$upstream/x:1", NULL, -EINVAL},
        {"parent", "$upstream:/x:1", NULL, -EINVAL},
        {"parent", "$upstream:0/x:1", NULL, -EINVAL},
        {"parent", "$upstream:065/x:1", NULL, -EINVAL},
        {"parent", "$upstream:65536/x:1", NULL, -EINVAL},
        {"parent", "$upstream:443x/x:1", NULL, -EINVAL},
        {"parent", "$upstream:1234567/x", NULL, -EINVAL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char out[ENGINE_IMAGE_MAX];
        struct lerr err = {0};
        int r = engine_upstream_resolve(cases[i].parent, cases[i].in, out, sizeof(out), &err);
        if (r != cases[i].result)
            fail_msg("%s: %d, wanted %d (%s)", cases[i].in, r, cases[i].result, err.msg);
        if (cases[i].out)
            assert_string_equal(out, cases[i].out);
        else
            assert_non_null(strstr(err.msg, "$upstream"));
    }
    /* the message names the fix */
    struct lerr err = {0};
    char out[ENGINE_IMAGE_MAX];
    assert_int_equal(engine_upstream_resolve(NULL, "$upstream:443/x:1", out, sizeof(out), &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "upstream.parent is not set"));
    /* no room */
    char small[12];
    assert_int_equal(
        engine_upstream_resolve("parent", "$upstream:443/x:1", small, sizeof(small), &err),
        -ENAMETOOLONG);
    assert_true(engine_names_upstream("$upstream:1/x"));
    assert_false(engine_names_upstream("$upstreamx:1/x"));
    assert_false(engine_names_upstream(NULL));
}

static void test_engine_wait(void **state)
{
    struct event_base *base = event_base_new();
    struct engine_config cfg = {.uri = "unix:///nonexistent/ledge-test-engine.sock",
                                .request_timeout_ms = 5000};
    struct engine *e = NULL;
    assert_int_equal(engine_new(engine_ops_find("docker"), base, &cfg, &e), 0);
    struct wait_ctx w = {0};
    assert_int_equal(e->ops->version(e, wait_version_cb, &w), 0);
    assert_int_equal(engine_wait(e, &w.done), 0);
    assert_true(w.done);
    assert_true(w.result < 0);
    assert_non_null(strstr(w.msg, "container engine unreachable at unix:///nonexistent/"));
    /* nothing left to wait for */
    bool never = false;
    assert_int_equal(engine_wait(e, &never), -EIO);
    engine_free(e);
    event_base_free(base);
}

static void test_parse_documents(void **state)
{
    struct engine_version v;
    json_t *j = J("{\"Platform\":{\"Name\":\"\"},\"Components\":[{\"Name\":\"Engine\"}],"
                  "\"Version\":\"20.10.24+dfsg1\",\"ApiVersion\":\"1.41\",\"MinAPIVersion\":"
                  "\"1.12\",\"Os\":\"linux\",\"Arch\":\"amd64\",\"KernelVersion\":\"6.1\"}");
    assert_int_equal(docker_parse_version(j, &v), 0);
    assert_string_equal(v.product, "Moby");
    assert_string_equal(v.api_version, "1.41");
    json_decref(j);
    j = J("{\"Platform\":{\"Name\":\"Docker Engine - Community\"},\"ApiVersion\":\"1.45\"}");
    assert_int_equal(docker_parse_version(j, &v), 0);
    assert_string_equal(v.product, "Docker CE");
    json_decref(j);
    j = J("{\"Platform\":{\"Name\":\"linux/amd64/debian-12\"},\"Components\":[{\"Name\":"
          "\"Podman Engine\"}],\"ApiVersion\":\"1.41\"}");
    assert_int_equal(docker_parse_version(j, &v), 0);
    assert_string_equal(v.product, "Podman");
    json_decref(j);
    assert_true(engine_api_compare("1.41", "1.43") < 0);
    assert_true(engine_api_compare("1.9", "1.41") < 0);
    assert_int_equal(engine_api_compare("1.41", "1.41"), 0);

    struct engine_container c;
    j = J("{\"Id\":\"abc\",\"Name\":\"/temp\",\"Config\":{\"Image\":\"img:1\",\"Tty\":true,"
          "\"Labels\":{\"dev.ledge.owner\":\"ledge\"}},\"State\":{\"Status\":\"exited\","
          "\"ExitCode\":3,\"StartedAt\":\"2026-01-01T00:00:00.5Z\",\"FinishedAt\":"
          "\"0001-01-01T00:00:00Z\",\"Health\":{\"Status\":\"unhealthy\"}}}");
    assert_int_equal(docker_parse_inspect(j, &c), 0);
    assert_string_equal(c.name, "temp");
    assert_int_equal(c.state, CTR_EXITED);
    assert_int_equal(c.exit_code, 3);
    assert_int_equal(c.health, HEALTH_UNHEALTHY);
    assert_true(c.tty);
    assert_int_equal(c.started_ms % 1000, 500);
    assert_int_equal(c.finished_ms, 0);
    assert_string_equal(engine_label(&c, ENGINE_LABEL_OWNER), "ledge");
    engine_container_clear(&c);
    json_decref(j);

    struct engine_container *list;
    size_t n;
    j = J("[{\"Id\":\"a\",\"Names\":[\"/one\"],\"State\":\"running\",\"Status\":\"Up 2 minutes "
          "(unhealthy)\",\"Labels\":{}},{\"Id\":\"b\",\"Names\":[\"/two\"],\"State\":\"exited\","
          "\"Status\":\"Exited (137) 5 seconds ago\"},{\"Names\":[]}]");
    assert_int_equal(docker_parse_list(j, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(list[0].health, HEALTH_UNHEALTHY);
    assert_int_equal(list[1].exit_code, 137);
    engine_containers_free(list, n);
    json_decref(j);

    struct engine_event ev;
    j = J("{\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{\"ID\":\"x\",\"Attributes\":"
          "{\"exitCode\":\"137\",\"name\":\"evt\"}},\"time\":1,\"timeNano\":1500000000}");
    assert_int_equal(docker_parse_event(j, &ev), 0);
    assert_int_equal(ev.kind, ENGINE_EVENT_DIE);
    assert_int_equal(ev.exit_code, 137);
    assert_int_equal(ev.time_ms, 1500);
    json_decref(j);
    j = J("{\"Type\":\"container\",\"Action\":\"health_status: unhealthy\",\"Actor\":{\"ID\":"
          "\"x\",\"Attributes\":{}}}");
    assert_int_equal(docker_parse_event(j, &ev), 0);
    assert_int_equal(ev.health, HEALTH_UNHEALTHY);
    json_decref(j);
    /* Podman's wording (4.3, its compatible events): "remove", the health in an attribute,
     * "(starting)" in a list's status */
    j = J("{\"Type\":\"container\",\"Action\":\"remove\",\"Actor\":{\"ID\":\"x\","
          "\"Attributes\":{\"containerExitCode\":\"0\",\"name\":\"evt\",\"podId\":\"\"}}}");
    assert_int_equal(docker_parse_event(j, &ev), 0);
    assert_int_equal(ev.kind, ENGINE_EVENT_DESTROY);
    json_decref(j);
    j = J("{\"Type\":\"container\",\"Action\":\"health_status\",\"Actor\":{\"ID\":\"x\","
          "\"Attributes\":{\"health_status\":\"unhealthy\"}}}");
    assert_int_equal(docker_parse_event(j, &ev), 0);
    assert_int_equal(ev.kind, ENGINE_EVENT_HEALTH);
    assert_int_equal(ev.health, HEALTH_UNHEALTHY);
    json_decref(j);
    j = J("[{\"Id\":\"a\",\"Names\":[\"one\"],\"State\":\"running\",\"Status\":\"Up 1 second "
          "ago (starting)\",\"Labels\":{}}]");
    assert_int_equal(docker_parse_list(j, &list, &n), 0);
    assert_int_equal(list[0].health, HEALTH_STARTING);
    assert_string_equal(list[0].name, "one");
    engine_containers_free(list, n);
    json_decref(j);
    j = J("{\"Type\":\"network\",\"Action\":\"connect\"}");
    assert_int_equal(docker_parse_event(j, &ev), -ENOENT);
    json_decref(j);

    char *repo, *tag;
    assert_int_equal(docker_split_reference("reg:5000/a/b:1.2", &repo, &tag), 0);
    assert_string_equal(repo, "reg:5000/a/b");
    assert_string_equal(tag, "1.2");
    free(repo);
    free(tag);
    assert_int_equal(docker_split_reference("reg:5000/a/b", &repo, &tag), 0);
    assert_string_equal(repo, "reg:5000/a/b");
    assert_string_equal(tag, "latest");
    free(repo);
    free(tag);
}

static int demux_out(void *ud, int stream, const char *data, size_t n)
{
    struct lbuf *b = ud;
    lbuf_printf(b, "%d:", stream);
    return lbuf_append(b, data, n);
}

/* Pull failures as Moby and Podman word them (messages taken from both against Debian's
 * docker-registry), and the progress summary. */
static void test_pull_errors_and_progress(void **state)
{
    static const struct {
        const char *msg;
        int code;
    } t[] = {
        {"manifest for 127.0.0.1:50466/testmod:v9 not found: manifest unknown: manifest unknown",
         -ENOENT},
        {"initializing source docker://127.0.0.1:37703/testmod:v9: reading manifest v9 in "
         "127.0.0.1:37703/testmod: manifest unknown: manifest unknown",
         -ENOENT},
        {"pull access denied for nosuch, repository does not exist or may require 'docker "
         "login': denied: requested access to the resource is denied",
         -ENOENT},
        {"unauthorized: authentication required", -EACCES},
        {"Head \"https://192.0.2.2:36331/v2/team/testmod/manifests/v1\": no basic auth "
         "credentials",
         -EACCES},
        {"initializing source docker://192.0.2.2:50267/team/testmod:v1: reading manifest v1 in "
         "192.0.2.2:50267/team/testmod: unauthorized: authentication required",
         -EACCES},
        {"Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
         -EHOSTUNREACH},
        {"initializing source docker://127.0.0.1:1/testmod:v1: pinging container registry "
         "127.0.0.1:1: Get \"https://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: "
         "connection refused",
         -EHOSTUNREACH},
        {"Get \"https://no-such-host.invalid/v2/\": dial tcp: lookup no-such-host.invalid on "
         "10.255.255.53:53: no such host",
         -EHOSTUNREACH},
        {"Get \"https://10.0.0.1:5000/v2/\": x509: certificate signed by unknown authority",
         -EPROTO},
        {"pinging container registry 10.0.0.1:5000: Get \"https://10.0.0.1:5000/v2/\": x509: "
         "certificate signed by unknown authority",
         -EPROTO},
        {"something else entirely", -EIO},
    };
    for (size_t i = 0; i < ARRAY_SIZE(t); i++)
        if (docker_pull_error_code(t[i].msg, -EIO) != t[i].code)
            fail_msg("\"%s\": got %d, want %d", t[i].msg, docker_pull_error_code(t[i].msg, -EIO),
                     t[i].code);
    assert_int_equal(docker_pull_error_code(NULL, -E2BIG), -E2BIG);

    struct docker_pull_progress *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    char out[256];
    int64_t now = 5000;
    /* status lines pass as "ID: status" */
    json_t *j = J("{\"status\":\"Pulling from team/big\",\"id\":\"v1\"}");
    assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 1);
    assert_string_equal(out, "v1: Pulling from team/big");
    json_decref(j);
    j = J("{\"status\":\"Pulling fs layer\",\"id\":\"aaa\"}");
    assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 1);
    json_decref(j);
    j = J("{\"status\":\"Already exists\",\"id\":\"bbb\"}");
    assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 1);
    assert_string_equal(out, "bbb: Already exists");
    json_decref(j);
    /* bytes: one summary now, then nothing until a second has passed */
    j = J("{\"status\":\"Downloading\",\"id\":\"aaa\",\"progressDetail\":{\"current\":1000000,"
          "\"total\":4000000},\"progress\":\"[==>   ]\"}");
    assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 1);
    assert_string_equal(out, "downloading 1.0 of 4.0 MB, 1 of 2 layers done");
    json_decref(j);
    now += 400;
    j = J("{\"status\":\"Downloading\",\"id\":\"aaa\",\"progressDetail\":{\"current\":2000000,"
          "\"total\":4000000}}");
    assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 0);
    json_decref(j);
    now += 700;
    j = J("{\"status\":\"Downloading\",\"id\":\"aaa\",\"progressDetail\":{\"current\":3000000,"
          "\"total\":4000000}}");
    assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 1);
    assert_string_equal(out, "downloading 3.0 of 4.0 MB, 1 of 2 layers done");
    json_decref(j);
    /* nothing new, nothing said */
    now += 5000;
    j = J("{\"status\":\"Waiting\",\"id\":\"aaa\"}");
    assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 0);
    json_decref(j);
    j = J("{\"status\":\"Pull complete\",\"id\":\"aaa\"}");
    assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 1);
    assert_string_equal(out, "aaa: Pull complete");
    json_decref(j);
    /* errors are the caller's */
    j = J("{\"error\":\"unauthorized\",\"status\":\"x\"}");
    assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 0);
    json_decref(j);
    /* bounded: layers past the table still pass their lines */
    for (int i = 0; i < DOCKER_PULL_LAYERS_MAX + 10; i++) {
        char text[128];
        snprintf(text, sizeof(text), "{\"status\":\"Pulling fs layer\",\"id\":\"l%d\"}", i);
        j = J(text);
        assert_int_equal(docker_pull_progress_feed(p, j, now, out, sizeof(out)), 1);
        json_decref(j);
    }
    assert_int_equal(p->n, DOCKER_PULL_LAYERS_MAX);
    free(p);
}

static void test_demux(void **state)
{
    const char frames[] = "\x01\0\0\0\0\0\0\x03"
                          "abc"
                          "\x02\0\0\0\0\0\0\x02"
                          "de"
                          "\x01\0\0\0\0\0\0\0";
    struct lbuf out = LBUF_INIT;
    struct docker_demux m = {0};
    /* Byte by byte: frames split anywhere still come out whole. */
    for (size_t i = 0; i < sizeof(frames) - 1; i++)
        assert_int_equal(docker_demux_feed(&m, frames + i, 1, demux_out, &out), 0);
    assert_string_equal(out.data, "1:a1:b1:c2:d2:e");
    lbuf_free(&out);
}

/* ------------------------------------------------------------------ process backend */

struct pfix {
    struct event_base *base;
    struct engine *e;
    char dir[64];
    int events[8];
    int last_exit;
    int done;
    int result;
    char id[64];
    struct lbuf logs;
};

static void on_event(void *ud, const struct engine_event *ev)
{
    struct pfix *f = ud;
    f->events[ev->kind]++;
    if (ev->kind == ENGINE_EVENT_DIE)
        f->last_exit = ev->exit_code;
}

static void on_done(void *ud, int result, const struct lerr *err)
{
    struct pfix *f = ud;
    f->done++;
    f->result = result;
}

static void on_create(void *ud, int result, const char *id, const struct lerr *err)
{
    struct pfix *f = ud;
    f->done++;
    f->result = result;
    if (id)
        snprintf(f->id, sizeof(f->id), "%s", id);
}

static void wait_done(struct pfix *f, int n)
{
    for (int i = 0; i < 500 && f->done < n; i++)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_true(f->done >= n);
}

static void wait_events(struct pfix *f, int kind, int n)
{
    for (int i = 0; i < 500 && f->events[kind] < n; i++)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_true(f->events[kind] >= n);
}

static void new_engine_cfg(struct pfix *f, uint64_t log_max, int log_files, long check_ms)
{
    struct engine_config cfg = {.state_dir = f->dir,
                                .on_event = on_event,
                                .event_ud = f,
                                .log_max_size = log_max,
                                .log_max_files = log_files,
                                .log_check_ms = check_ms};
    assert_int_equal(engine_new(&engine_process_ops, f->base, &cfg, &f->e), 0);
    assert_int_equal(f->e->ops->start(f->e), 0);
}

static void new_engine(struct pfix *f)
{
    struct engine_config cfg = {.state_dir = f->dir, .on_event = on_event, .event_ud = f};
    assert_int_equal(engine_new(&engine_process_ops, f->base, &cfg, &f->e), 0);
    assert_int_equal(f->e->ops->start(f->e), 0);
}

static int psetup(void **state)
{
    struct pfix *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/ledge-test-proc-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->base = event_base_new();
    new_engine(f);
    *state = f;
    return 0;
}

static int pteardown(void **state)
{
    struct pfix *f = *state;
    engine_free(f->e);
    event_base_free(f->base);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    lbuf_free(&f->logs);
    free(f);
    return 0;
}

static void create(struct pfix *f, const char *name, const char *script)
{
    json_t *args = json_pack("[s,s]", "-c", script);
    json_t *env = json_pack("{s:s}", "GREETING", "hello");
    json_t *labels = json_pack("{s:s}", ENGINE_LABEL_OWNER, "ledge");
    struct engine_create_spec spec = {
        .name = name, .path = "/bin/sh", .args = args, .env = env, .labels = labels};
    f->done = 0;
    assert_int_equal(f->e->ops->create(f->e, &spec, on_create, f), 0);
    wait_done(f, 1);
    assert_int_equal(f->result, 0);
    json_decref(args);
    json_decref(env);
    json_decref(labels);
}

static int collect_logs(void *ud, int stream, const char *data, size_t n)
{
    struct pfix *f = ud;
    return lbuf_append(&f->logs, data, n);
}

static void test_process_lifecycle(void **state)
{
    struct pfix *f = *state;
    create(f, "greeter", "echo $GREETING; echo line2; exit 3");
    f->done = 0;
    assert_int_equal(f->e->ops->start_container(f->e, f->id, on_done, f), 0);
    wait_done(f, 1);
    assert_int_equal(f->result, 0);
    wait_events(f, ENGINE_EVENT_DIE, 1);
    assert_int_equal(f->last_exit, 3);

    struct engine_logs_options o = {.tail = 1};
    f->done = 0;
    assert_non_null(f->e->ops->logs(f->e, "greeter", &o, collect_logs, on_done, f));
    wait_done(f, 1);
    assert_string_equal(f->logs.data, "line2\n");
    lbuf_reset(&f->logs);
    o.tail = -1;
    f->done = 0;
    assert_non_null(f->e->ops->logs(f->e, "greeter", &o, collect_logs, on_done, f));
    wait_done(f, 1);
    assert_string_equal(f->logs.data, "hello\nline2\n");

    /* Name conflicts are refused like the engine refuses them. */
    json_t *labels = json_object();
    struct engine_create_spec dup = {.name = "greeter", .path = "/bin/true", .labels = labels};
    f->done = 0;
    assert_int_equal(f->e->ops->create(f->e, &dup, on_create, f), 0);
    wait_done(f, 1);
    assert_int_equal(f->result, -EEXIST);
    /* A program that cannot be executed fails its start with the reason. */
    struct engine_create_spec bad = {
        .name = "missing", .path = "/nonexistent/prog", .labels = labels};
    f->done = 0;
    assert_int_equal(f->e->ops->create(f->e, &bad, on_create, f), 0);
    wait_done(f, 1);
    f->done = 0;
    assert_int_equal(f->e->ops->start_container(f->e, "missing", on_done, f), 0);
    wait_done(f, 1);
    assert_int_equal(f->result, -ENOENT);
    json_decref(labels);

    f->done = 0;
    assert_int_equal(f->e->ops->remove(f->e, "greeter", on_done, f), 0);
    wait_done(f, 1);
    assert_int_equal(f->events[ENGINE_EVENT_DESTROY], 1);
}

/* A module gets fds 0-2 and nothing else of ledged's, even what someone above ledged left open
 * without O_CLOEXEC (flock(1)'s lock fd once kept the system tests' lock for as long as a leaked
 * process module lived). */
static void test_process_no_fd_leak(void **state)
{
    struct pfix *f = *state;
    int leak = open("/dev/null", O_RDONLY); /* deliberately without O_CLOEXEC */
    assert_true(leak >= 0);
    assert_int_equal(dup2(leak, 77), 77);
    create(f, "fds", "for x in /proc/$$/fd/*; do echo \"fd ${x##*/}\"; done");
    f->done = 0;
    assert_int_equal(f->e->ops->start_container(f->e, f->id, on_done, f), 0);
    wait_done(f, 1);
    assert_int_equal(f->result, 0);
    wait_events(f, ENGINE_EVENT_DIE, 1);
    struct engine_logs_options o = {.tail = -1};
    f->done = 0;
    assert_non_null(f->e->ops->logs(f->e, "fds", &o, collect_logs, on_done, f));
    wait_done(f, 1);
    assert_non_null(strstr(f->logs.data, "fd 2\n"));
    assert_null(strstr(f->logs.data, "fd 77\n"));
    close(77);
    close(leak);
}

static bool file_exists(const struct pfix *f, const char *name)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/process/%s", f->dir, name);
    return access(p, F_OK) == 0;
}

static off_t file_size(const struct pfix *f, const char *name)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof(p), "%s/process/%s", f->dir, name);
    return stat(p, &st) == 0 ? st.st_size : -1;
}

static void run_loop_ms(struct pfix *f, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(f->base, &tv);
    event_base_dispatch(f->base);
}

/* Process modules' logs rotate by default like Docker's json-file max-size/max-file: at the
 * size bound the log moves to .log.1, older copies up, at most log_max_files files in all, and
 * logs reads across them. */
static void test_process_log_rotation(void **state)
{
    struct pfix *f = *state;
    engine_free(f->e);
    new_engine_cfg(f, 4096, 3, 20);
    /* 40 bursts of 10 numbered 100-byte lines, 40 ms apart: several rotations */
    create(f, "chatty",
           "i=0; while [ $i -lt 400 ]; do printf 'line %05d %090d\\n' $i 0; i=$((i+1)); "
           "[ $((i % 10)) -eq 0 ] && sleep 0.04; done; sleep 0.2");
    f->done = 0;
    assert_int_equal(f->e->ops->start_container(f->e, f->id, on_done, f), 0);
    wait_done(f, 1);
    wait_events(f, ENGINE_EVENT_DIE, 1);
    run_loop_ms(f, 100);
    assert_true(file_exists(f, "chatty.log.1"));
    assert_true(file_exists(f, "chatty.log.2"));
    assert_false(file_exists(f, "chatty.log.3")); /* 3 files in all */
    /* each file is about the bound: one burst (1 KiB) between checks at most */
    assert_true(file_size(f, "chatty.log.1") <= 4096 + 2 * 1010);
    assert_true(file_size(f, "chatty.log") <= 4096 + 2 * 1010);
    /* all lines that are kept, in order, the last one last */
    struct engine_logs_options o = {.tail = -1};
    f->done = 0;
    lbuf_reset(&f->logs);
    assert_non_null(f->e->ops->logs(f->e, "chatty", &o, collect_logs, on_done, f));
    wait_done(f, 1);
    assert_non_null(f->logs.data);
    assert_non_null(strstr(f->logs.data, "line 00399 "));
    assert_null(strstr(f->logs.data, "line 00000 ")); /* rotated away */
    int prev = -1;
    for (const char *p = f->logs.data; (p = strstr(p, "line ")); p += 5) {
        int n = atoi(p + 5);
        assert_true(n > prev); /* in order (copytruncate may lose a line at a rotation) */
        prev = n;
    }
    /* tail reaches into the rotated copies */
    size_t total_lines = 0;
    for (const char *p = f->logs.data; (p = strchr(p, '\n')); p++)
        total_lines++;
    o.tail = (long)total_lines - 2;
    f->done = 0;
    lbuf_reset(&f->logs);
    assert_non_null(f->e->ops->logs(f->e, "chatty", &o, collect_logs, on_done, f));
    wait_done(f, 1);
    size_t got = 0;
    for (const char *p = f->logs.data; (p = strchr(p, '\n')); p++)
        got++;
    assert_int_equal(got, total_lines - 2);
    assert_non_null(strstr(f->logs.data, "line 00399 "));
    f->done = 0;
    assert_int_equal(f->e->ops->remove(f->e, "chatty", on_done, f), 0);
    wait_done(f, 1);
    assert_false(file_exists(f, "chatty.log.1")); /* remove takes the rotated copies too */
}

/* since: lines that start with a time carry it, the lines after them take it; a rotated copy
 * last written before since is skipped whole. */
static void test_process_logs_since(void **state)
{
    struct pfix *f = *state;
    create(f, "stamped",
           "echo '2020-01-01T00:00:00.000Z old'; echo 'old continuation'; "
           "echo '2030-01-01T00:00:00.000Z new'; echo 'new continuation'");
    f->done = 0;
    assert_int_equal(f->e->ops->start_container(f->e, f->id, on_done, f), 0);
    wait_done(f, 1);
    wait_events(f, ENGINE_EVENT_DIE, 1);
    char p[256];
    snprintf(p, sizeof(p), "%s/process/stamped.log.1", f->dir);
    FILE *old = fopen(p, "w");
    assert_non_null(old);
    fputs("2019-01-01T00:00:00.000Z rotated\n", old);
    fclose(old);
    struct timespec t[2] = {{.tv_sec = 1546300800}, {.tv_sec = 1546300800}};
    assert_int_equal(utimensat(AT_FDCWD, p, t, 0), 0);
    int64_t since;
    assert_int_equal(ltime_parse_rfc3339("2025-01-01T00:00:00Z", &since), 0);
    struct engine_logs_options o = {.tail = -1, .since_ms = since};
    f->done = 0;
    lbuf_reset(&f->logs);
    assert_non_null(f->e->ops->logs(f->e, "stamped", &o, collect_logs, on_done, f));
    wait_done(f, 1);
    assert_string_equal(f->logs.data, "2030-01-01T00:00:00.000Z new\nnew continuation\n");
    /* without since: the rotated copy first */
    o.since_ms = 0;
    f->done = 0;
    lbuf_reset(&f->logs);
    assert_non_null(f->e->ops->logs(f->e, "stamped", &o, collect_logs, on_done, f));
    wait_done(f, 1);
    assert_true(lstr_startswith(f->logs.data, "2019-01-01T00:00:00.000Z rotated\n2020"));
}

static void test_process_stop_escalates(void **state)
{
    struct pfix *f = *state;
    create(f, "stubborn", "trap '' TERM; echo ready; while true; do sleep 0.1; done");
    f->done = 0;
    f->e->ops->start_container(f->e, f->id, on_done, f);
    wait_done(f, 1);
    /* Only once the trap is set does SIGTERM get ignored: wait for the program to say so. */
    char log[128];
    snprintf(log, sizeof(log), "%s/process/stubborn.log", f->dir);
    for (int i = 0; i < 500; i++) {
        char buf[64] = {0};
        FILE *lf = fopen(log, "r");
        if (lf) {
            size_t n = fread(buf, 1, sizeof(buf) - 1, lf);
            fclose(lf);
            buf[n] = 0;
            if (strstr(buf, "ready"))
                break;
        }
        struct timeval tv = {0, 10000};
        event_base_loopexit(f->base, &tv);
        event_base_dispatch(f->base);
    }
    f->done = 0;
    assert_int_equal(f->e->ops->stop_container(f->e, f->id, 1, on_done, f), 0);
    wait_done(f, 1);
    assert_int_equal(f->result, 0);
    assert_int_equal(f->last_exit, 128 + SIGKILL);
}

struct inspect_result {
    int done;
    enum ctr_state state;
    int exit_code;
    int pid;
};

static void on_inspect(void *ud, int result, const struct engine_container *c,
                       const struct lerr *err)
{
    struct inspect_result *r = ud;
    r->done++;
    if (result == 0) {
        r->state = c->state;
        r->exit_code = c->exit_code;
        r->pid = c->pid;
    }
}

static void test_process_adoption(void **state)
{
    struct pfix *f = *state;
    create(f, "survivor", "while true; do sleep 0.1; done");
    f->done = 0;
    f->e->ops->start_container(f->e, f->id, on_done, f);
    wait_done(f, 1);
    /* ledged goes away: the program keeps running; a new engine adopts it. */
    engine_free(f->e);
    memset(f->events, 0, sizeof(f->events));
    new_engine(f);
    struct inspect_result r = {0};
    f->e->ops->inspect(f->e, "survivor", on_inspect, &r);
    for (int i = 0; i < 100 && !r.done; i++)
        event_base_loop(f->base, EVLOOP_ONCE);
    assert_int_equal(r.state, CTR_RUNNING);
    assert_true(r.pid > 0);
    assert_int_equal(kill(r.pid, 0), 0);
    /* Its exit is still seen (through a pidfd), with an unknown exit code. */
    kill(-r.pid, SIGKILL);
    wait_events(f, ENGINE_EVENT_DIE, 1);
    assert_int_equal(f->last_exit, -1);
    /* Reap it: in this test the "old ledged" is this very process. */
    waitpid(r.pid, NULL, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_body_merge),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_engine_wait),
        cmocka_unit_test(test_upstream_resolve),
        cmocka_unit_test(test_parse_documents),
        cmocka_unit_test(test_demux),
        cmocka_unit_test(test_pull_errors_and_progress),
        cmocka_unit_test_setup_teardown(test_process_lifecycle, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_process_no_fd_leak, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_process_stop_escalates, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_process_log_rotation, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_process_logs_since, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_process_adoption, psetup, pteardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
