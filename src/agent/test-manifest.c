/* test-manifest.c — unit tests for the deployment manifest parser: the real IoT Edge manifests in
 * the shared fixtures, defaults, createOptions chunks, every error message, config_hash
 * stability, image normalisation and registry credential matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/manifest.h"
#include "base/json.h"
#include "engine/createopts.h"

/* Real manifests from Azure/iotedge; the test runs from the repository root. */
#ifndef LEDGE_FIXTURES_DEFAULT
#define LEDGE_FIXTURES_DEFAULT "../shared/fixtures/iotedge"
#endif
#define HUB "/usr/libexec/ledge/ledge-hub"
#define REGISTRY "myregistry.azurecr.io"
#define BUILD "1.4.20"

/* ---- helpers --------------------------------------------------------------------------------- */

/* JSON written with single quotes for readability: every ' becomes ". */
static char *q(const char *s)
{
    char *r = strdup(s);
    assert_non_null(r);
    for (char *p = r; *p; p++)
        if (*p == '\'')
            *p = '"';
    return r;
}

static json_t *J(const char *text)
{
    char *t = q(text);
    json_error_t je;
    json_t *j = json_loads(t, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j)
        fail_msg("bad test JSON: %s: %s", je.text, t);
    free(t);
    return j;
}

static void dump_list(const char *what, const struct lstrv *l)
{
    for (size_t i = 0; i < l->n; i++)
        fprintf(stderr, "  %s: %s\n", what, l->v[i]);
}

static struct deployment *parse_text_ok(const char *text, const char *hub)
{
    struct lstrv errors = LSTRV_INIT;
    struct deployment *d = NULL;
    int r = manifest_parse(text, strlen(text), hub, &d, &errors);
    if (r != 0) {
        dump_list("error", &errors);
        fail_msg("manifest_parse failed: %d", r);
    }
    assert_int_equal(errors.n, 0);
    lstrv_free(&errors);
    return d;
}

static struct deployment *parse_ok(const json_t *j)
{
    char *text = ljson_dump(j);
    struct deployment *d = parse_text_ok(text, HUB);
    free(text);
    return d;
}

/* Parse what must fail; returns its messages. */
static struct lstrv parse_fail_text(const char *text, size_t n)
{
    struct lstrv errors = LSTRV_INIT;
    struct deployment *d = (struct deployment *)0x1;
    assert_int_equal(manifest_parse(text, n, HUB, &d, &errors), -EINVAL);
    assert_ptr_equal(d, (struct deployment *)0x1); /* untouched on failure */
    assert_true(errors.n > 0);
    return errors;
}

static struct lstrv parse_fail(const json_t *j)
{
    char *text = ljson_dump(j);
    struct lstrv errors = parse_fail_text(text, strlen(text));
    free(text);
    return errors;
}

static void assert_errors(struct lstrv *errors, const char *const *want, size_t n)
{
    bool ok = errors->n == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = strcmp(errors->v[i], want[i]) == 0;
    if (!ok) {
        dump_list("got", errors);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "  want: %s\n", want[i]);
        fail_msg("error messages differ");
    }
    lstrv_free(errors);
}

static void assert_one_error(struct lstrv errors, const char *want)
{
    assert_errors(&errors, &want, 1);
}

static bool has_warning(const struct deployment *d, const char *w)
{
    return lstrv_contains(&d->warnings, w);
}

/* A small valid manifest to vary: schema 1.1, one docker module "sensor". */
static json_t *base_manifest(void)
{
    return J("{'modulesContent': {"
             " '$edgeAgent': {'properties.desired': {"
             "  'schemaVersion': '1.1',"
             "  'runtime': {'type': 'docker', 'settings': {'minDockerVersion': 'v1.25',"
             "   'loggingOptions': '', 'registryCredentials': {'acr': {'username': 'u',"
             "   'password': 'p', 'address': 'myregistry.azurecr.io'}}}},"
             "  'systemModules': {"
             "   'edgeAgent': {'type': 'docker', 'settings': {'image':"
             "    'mcr.microsoft.com/azureiotedge-agent:1.4', 'createOptions': ''}},"
             "   'edgeHub': {'type': 'docker', 'status': 'running', 'restartPolicy': 'always',"
             "    'settings': {'image': 'mcr.microsoft.com/azureiotedge-hub:1.4',"
             "     'createOptions': '{}'}}},"
             "  'modules': {"
             "   'sensor': {'version': '1.0', 'type': 'docker', 'status': 'running',"
             "    'restartPolicy': 'always', 'settings': {'image':"
             "    'mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.0',"
             "    'createOptions': ''}}}}},"
             " '$edgeHub': {'properties.desired': {'schemaVersion': '1.1',"
             "  'routes': {'up': 'FROM /messages/* INTO $upstream'},"
             "  'storeAndForwardConfiguration': {'timeToLiveSecs': 7200}}}}}");
}

static json_t *content(json_t *m)
{
    return json_object_get(m, "modulesContent");
}
static json_t *agent(json_t *m)
{
    return json_object_get(json_object_get(content(m), "$edgeAgent"), "properties.desired");
}
static json_t *hubd(json_t *m)
{
    return json_object_get(json_object_get(content(m), "$edgeHub"), "properties.desired");
}
static json_t *modules(json_t *m)
{
    return json_object_get(agent(m), "modules");
}
static json_t *sensor(json_t *m)
{
    return json_object_get(modules(m), "sensor");
}
static json_t *sensor_settings(json_t *m)
{
    return json_object_get(sensor(m), "settings");
}
static json_t *system_module(json_t *m, const char *name)
{
    return json_object_get(json_object_get(agent(m), "systemModules"), name);
}

static void set(json_t *obj, const char *key, json_t *v)
{
    assert_int_equal(json_object_set_new(obj, key, v), 0);
}

/* The manifest with modules.sensor replaced by the given JSON (single quotes). */
static json_t *with_sensor(const char *module_json)
{
    json_t *m = base_manifest();
    set(modules(m), "sensor", J(module_json));
    return m;
}

/* ---- fixtures -------------------------------------------------------------------------------- */

static const char *fixture_dir(void)
{
    const char *d = getenv("LEDGE_FIXTURES");
    if (d && *d)
        return d;
    /* the shared fixtures when this checkout sits beside them, else the copy in the repo */
    return access(LEDGE_FIXTURES_DEFAULT, R_OK) == 0 ? LEDGE_FIXTURES_DEFAULT
                                                     : "tests/fixtures/iotedge";
}

/* What each <Placeholder> of Microsoft's pipeline becomes. */
static const char *placeholder_value(const char *name, size_t n)
{
    static const struct {
        const char *name, *value;
    } table[] = {
        {"Container_Registry", REGISTRY},
        {"Build.BuildNumber", BUILD},
        {"EdgeRuntime.BuildNumber", BUILD},
        {"Architecture", "amd64"},
        {"CR.Username", "builduser"},
        {"CR.Password", "buildpass"},
        {"AzureFederatedTokenFile", "/run/oidc/token.json"},
        {"UpstreamProtocol", "Mqtt"},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strlen(table[i].name) == n && memcmp(table[i].name, name, n) == 0)
            return table[i].value;
    return "placeholder";
}

static char *load_fixture(const char *file)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", fixture_dir(), file);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open fixture %s (set LEDGE_FIXTURES)", path);
    struct lbuf raw = LBUF_INIT, out = LBUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        assert_int_equal(lbuf_append(&raw, chunk, n), 0);
    fclose(f);
    for (size_t i = 0; i < raw.len; i++) {
        char *end;
        if (raw.data[i] == '<' && (end = memchr(raw.data + i, '>', raw.len - i)) &&
            !memchr(raw.data + i, '"', (size_t)(end - (raw.data + i)))) {
            assert_int_equal(lbuf_puts(&out, placeholder_value(raw.data + i + 1,
                                                               (size_t)(end - raw.data) - i - 1)),
                             0);
            i = (size_t)(end - raw.data);
        } else {
            assert_int_equal(lbuf_putc(&out, raw.data[i]), 0);
        }
    }
    lbuf_free(&raw);
    return lbuf_steal(&out);
}

static struct deployment *parse_fixture(const char *file)
{
    char *text = load_fixture(file);
    struct deployment *d = parse_text_ok(text, HUB);
    free(text);
    return d;
}

static const char *env_of(const struct module_spec *m, const char *name)
{
    return json_string_value(json_object_get(m->env, name));
}

static void assert_hub_module(const struct deployment *d)
{
    const struct module_spec *h = deployment_find(d, "edgeHub");
    assert_non_null(h);
    assert_ptr_equal(h, &d->modules[d->n_modules - 1]); /* system hub comes last */
    assert_true(h->system);
    assert_int_equal(h->type, MODULE_TYPE_PROCESS);
    assert_string_equal(h->path, HUB);
    assert_null(h->image);
    assert_null(h->create_options);
    assert_null(h->args);
    assert_int_equal(h->status, MODULE_STATUS_RUNNING);
    assert_int_equal(h->restart_policy, RESTART_ALWAYS);
}

static void test_fixture_quickstart(void **state)
{
    struct deployment *d = parse_fixture("quickstart_deployment.template.json");
    assert_string_equal(d->schema_version, "1.0");
    assert_string_equal(d->min_docker_version, "v1.25");
    assert_string_equal(d->logging_options, "");
    assert_int_equal(d->n_credentials, 1);
    assert_string_equal(d->credentials[0].name, "buildcr");
    assert_string_equal(d->credentials[0].address, REGISTRY);
    assert_string_equal(d->credentials[0].username, "builduser");
    assert_string_equal(d->credentials[0].password, "buildpass");
    assert_int_equal(d->n_modules, 2);
    const struct module_spec *m = deployment_find(d, "tempSensor");
    assert_ptr_equal(m, &d->modules[0]);
    assert_false(m->system);
    assert_int_equal(m->type, MODULE_TYPE_DOCKER);
    assert_string_equal(m->image,
                        REGISTRY "/microsoft/azureiotedge-simulated-temperature-sensor:" BUILD
                                 "-linux-amd64");
    assert_null(m->create_options);
    assert_int_equal(m->status, MODULE_STATUS_RUNNING);
    assert_int_equal(m->restart_policy, RESTART_ALWAYS);
    assert_int_equal(m->pull_policy, PULL_ON_CREATE);
    assert_int_equal(m->startup_order, MODULE_STARTUP_ORDER_DEFAULT);
    assert_string_equal(m->version, "1.0");
    assert_int_equal(json_object_size(m->env), 0);
    assert_int_equal(strlen(m->config_hash), 64);
    assert_ptr_equal(deployment_credential_for(d, m->image), &d->credentials[0]);
    assert_hub_module(d);
    const struct module_spec *h = deployment_find(d, "edgeHub");
    assert_string_equal(env_of(h, "NestedEdgeEnabled"), "false");
    assert_int_equal(json_object_size(h->env), 1);
    assert_int_equal(json_object_size(d->agent_env), 0);
    assert_string_equal(json_string_value(json_object_get(d->edge_hub, "schemaVersion")), "1.0");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(d->edge_hub, "routes"), "route")),
        "FROM /* INTO $upstream");
    assert_int_equal(json_object_size(d->module_twins), 0);
    assert_true(json_is_object(d->manifest));
    assert_null(deployment_find(d, "edgeAgent"));
    deployment_free(d);
}

static void test_fixture_module_to_module(void **state)
{
    struct deployment *d = parse_fixture("module_to_module_deployment.template.json");
    assert_int_equal(d->n_modules, 3);
    assert_string_equal(d->modules[0].name, "tempFilter"); /* user modules sorted by name */
    assert_string_equal(d->modules[1].name, "tempSensor");
    assert_string_equal(env_of(&d->modules[0], "TemperatureThreshold"), "19");
    assert_string_equal(d->modules[0].image, REGISTRY
                        "/microsoft/azureiotedge-temperature-filter:" BUILD "-linux-amd64");
    assert_hub_module(d);
    assert_int_equal(json_object_size(json_object_get(d->edge_hub, "routes")), 2);
    deployment_free(d);

    d = parse_fixture("module_to_functions_deployment.template.json");
    assert_int_equal(d->n_modules, 3);
    const struct module_spec *m = deployment_find(d, "tempFilterFunctions");
    assert_non_null(m);
    assert_string_equal(env_of(m, "AZURE_FUNCTIONS_ENVIRONMENT"), "Development");
    assert_string_equal(m->image,
                        REGISTRY "/microsoft/azureiotedge-functions-filter:" BUILD "-linux-amd64");
    deployment_free(d);

    d = parse_fixture("dm_module_to_module_deployment.json");
    assert_int_equal(d->n_modules, 3);
    m = deployment_find(d, "DirectMethodSender");
    assert_string_equal(env_of(m, "TargetModuleId"), "DirectMethodReceiver");
    assert_string_equal(env_of(m, "ClientTransportType"), "placeholder");
    assert_string_equal(json_string_value(json_object_get(d->agent_env, "UpstreamProtocol")),
                        "Mqtt");
    const struct module_spec *h = deployment_find(d, "edgeHub");
    assert_string_equal(env_of(h, "UpstreamProtocol"), "Mqtt");
    deployment_free(d);
}

static void test_fixture_nested_edge(void **state)
{
    struct deployment *d = parse_fixture("nestededge_middleLayerBaseDeployment_mqtt.json");
    assert_string_equal(d->schema_version, "1.1");
    assert_int_equal(d->n_modules, 2);
    const struct module_spec *m = deployment_find(d, "iotedgeApiProxy");
    assert_int_equal(m->startup_order, 3);
    /* $upstream stays for the engine layer to resolve to the parent's host name. */
    assert_string_equal(m->image,
                        "$upstream:443/microsoft/azureiotedge-api-proxy:" BUILD "-linux-amd64");
    assert_null(deployment_credential_for(d, m->image));
    json_t *want = J("{'HostConfig': {'LogConfig': {'Type': 'json-file', 'Config': {"
                     "'max-size': '4m', 'max-file': '7', 'compress': 'true'}},"
                     "'PortBindings': {'443/tcp': [{'HostPort': '443'}]}}}");
    assert_true(json_equal(m->create_options, want));
    json_decref(want);
    assert_string_equal(env_of(m, "NGINX_DEFAULT_PORT"), "443");
    /* {"value": 0}: IoT Edge reads the number as the string "0". */
    const struct module_spec *h = deployment_find(d, "edgeHub");
    assert_string_equal(env_of(h, "DeviceScopeCacheRefreshDelaySecs"), "0");
    assert_string_equal(env_of(h, "RuntimeLogLevel"), "debug");
    assert_string_equal(json_string_value(json_object_get(d->edge_hub, "schemaVersion")), "1.2");
    deployment_free(d);
}

static void test_fixture_connectivity(void **state)
{
    struct deployment *d = parse_fixture("connectivity_deployment.template.json");
    assert_int_equal(d->n_modules, 23);
    for (size_t i = 1; i + 1 < d->n_modules; i++)
        assert_true(strcmp(d->modules[i - 1].name, d->modules[i].name) < 0);
    assert_hub_module(d);
    const struct module_spec *m = deployment_find(d, "directMethodSender1");
    json_t *want = J("{'HostConfig': {'Binds': ['/run/oidc/token.json:/var/run/oidc.json'],"
                     "'NetworkMode': 'host'}, 'NetworkingConfig': {'EndpointsConfig': "
                     "{'host': {}}}}");
    assert_true(json_equal(m->create_options, want));
    json_decref(want);
    assert_int_equal(json_object_size(m->env), 12);
    assert_string_equal(env_of(m, "AZURE_FEDERATED_TOKEN_FILE"), "/var/run/oidc.json");
    assert_int_equal(deployment_find(d, "testResultCoordinator")->restart_policy, RESTART_NEVER);
    assert_string_equal(
        env_of(deployment_find(d, "testResultCoordinator"), "Logging:LogLevel:Microsoft"), "Error");
    assert_null(deployment_find(d, "relayer1")->create_options);
    /* "Privileged": "true" (a string) is read as IoT Edge reads it: a boolean */
    want = J("{'HostConfig': {'Privileged': true, 'NetworkMode': 'host', 'Binds': "
             "['/var/run/docker.sock:/var/run/docker.sock']}, 'NetworkingConfig': "
             "{'EndpointsConfig': {'host': {}}}, 'User': 'root'}");
    assert_true(json_equal(deployment_find(d, "networkController")->create_options, want));
    json_decref(want);
    assert_string_not_equal(deployment_find(d, "relayer1")->config_hash,
                            deployment_find(d, "relayer2")->config_hash);
    /* The two module twins of the fixture. */
    assert_int_equal(json_object_size(d->module_twins), 2);
    json_t *t = json_object_get(d->module_twins, "testResultCoordinator");
    assert_true(json_is_object(json_object_get(t, "reportMetadataList")));
    t = json_object_get(d->module_twins, "metricsCollector");
    assert_string_equal(json_string_value(json_object_get(t, "additionalTags")), "placeholder");
    assert_int_equal(d->warnings.n, 0);
    deployment_free(d);
}

/* Without a hub program the system hub is left out; everything else is the same. */
static void test_fixture_without_hub(void **state)
{
    char *text = load_fixture("quickstart_deployment.template.json");
    struct deployment *d = parse_text_ok(text, NULL);
    assert_int_equal(d->n_modules, 1);
    assert_null(deployment_find(d, "edgeHub"));
    deployment_free(d);
    free(text);
}

/* ---- defaults and accepted forms --------------------------------------------------------------
 */

static void test_defaults(void **state)
{
    json_t *m = with_sensor("{'type': 'docker', 'status': 'stopped', 'settings': {'image': "
                            "'alpine'}}");
    json_t *hub = system_module(m, "edgeHub");
    json_object_del(hub, "status");
    json_object_del(hub, "restartPolicy");
    struct deployment *d = parse_ok(m);
    const struct module_spec *s = deployment_find(d, "sensor");
    assert_int_equal(s->status, MODULE_STATUS_STOPPED);
    assert_int_equal(s->restart_policy, RESTART_ON_UNHEALTHY);
    assert_int_equal(s->pull_policy, PULL_ON_CREATE);
    assert_int_equal(s->startup_order, UINT32_MAX);
    assert_null(s->version);
    assert_string_equal(s->image, "alpine:latest");
    assert_null(s->create_options);
    assert_true(json_is_object(s->env));
    assert_int_equal(json_object_size(s->env), 0);
    assert_null(s->path);
    assert_null(s->args);
    const struct module_spec *h = deployment_find(d, "edgeHub");
    assert_int_equal(h->status, MODULE_STATUS_RUNNING);
    assert_int_equal(h->restart_policy, RESTART_ALWAYS);
    assert_int_equal(h->startup_order, 0); /* the hub starts first unless ordered otherwise */
    deployment_free(d);
    json_decref(m);
}

static void test_explicit_values(void **state)
{
    json_t *m = with_sensor("{'type': 'docker', 'status': 'running', 'restartPolicy': "
                            "'on-failure', 'imagePullPolicy': 'never', 'startupOrder': 0, "
                            "'version': 7, 'settings': {'image': 'alpine:3.19'}}");
    set(system_module(m, "edgeHub"), "restartPolicy", J("'never'"));
    set(system_module(m, "edgeHub"), "status", J("'stopped'"));
    set(system_module(m, "edgeHub"), "startupOrder", J("0"));
    struct deployment *d = parse_ok(m);
    const struct module_spec *s = deployment_find(d, "sensor");
    assert_int_equal(s->restart_policy, RESTART_ON_FAILURE);
    assert_int_equal(s->pull_policy, PULL_NEVER);
    assert_int_equal(s->startup_order, 0);
    assert_string_equal(s->version, "7");
    const struct module_spec *h = deployment_find(d, "edgeHub");
    assert_int_equal(h->restart_policy, RESTART_NEVER);
    assert_int_equal(h->status, MODULE_STATUS_STOPPED);
    assert_int_equal(h->startup_order, 0);
    deployment_free(d);
    json_decref(m);

    /* Enums are read case-insensitively, as Newtonsoft does; startupOrder's full range. */
    m = with_sensor("{'type': 'docker', 'status': 'Running', 'restartPolicy': 'ON-UNHEALTHY', "
                    "'imagePullPolicy': 'On-Create', 'startupOrder': 4294967295, "
                    "'settings': {'image': 'alpine'}}");
    d = parse_ok(m);
    s = deployment_find(d, "sensor");
    assert_int_equal(s->status, MODULE_STATUS_RUNNING);
    assert_int_equal(s->restart_policy, RESTART_ON_UNHEALTHY);
    assert_int_equal(s->pull_policy, PULL_ON_CREATE);
    assert_int_equal(s->startup_order, UINT32_MAX);
    deployment_free(d);
    json_decref(m);
}

static void test_wrappers(void **state)
{
    json_t *m = base_manifest();
    /* bare modulesContent */
    struct deployment *d = parse_ok(content(m));
    assert_non_null(deployment_find(d, "sensor"));
    deployment_free(d);
    /* az iot edge deployment's {"content": {"modulesContent": ...}} */
    json_t *w = json_pack("{s:O}", "content", m);
    d = parse_ok(w);
    assert_non_null(deployment_find(d, "sensor"));
    deployment_free(d);
    json_decref(w);
    json_decref(m);
}

static void test_names_of_enums(void **state)
{
    assert_string_equal(module_status_name(MODULE_STATUS_RUNNING), "running");
    assert_string_equal(module_status_name(MODULE_STATUS_STOPPED), "stopped");
    assert_string_equal(restart_policy_name(RESTART_NEVER), "never");
    assert_string_equal(restart_policy_name(RESTART_ON_FAILURE), "on-failure");
    assert_string_equal(restart_policy_name(RESTART_ON_UNHEALTHY), "on-unhealthy");
    assert_string_equal(restart_policy_name(RESTART_ALWAYS), "always");
    assert_string_equal(pull_policy_name(PULL_ON_CREATE), "on-create");
    assert_string_equal(pull_policy_name(PULL_NEVER), "never");
    assert_string_equal(module_type_name(MODULE_TYPE_DOCKER), "docker");
    assert_string_equal(module_type_name(MODULE_TYPE_PROCESS), "process");
    assert_string_equal(module_type_name((enum module_type)7), "unknown");
}

/* ---- env ------------------------------------------------------------------------------------- */

static void test_env_values(void **state)
{
    json_t *m = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': "
                            "'alpine'}, 'env': {'S': {'value': 'text'}, 'I': {'value': -42}, "
                            "'R': {'value': 1.5}, 'R1': {'value': 2.0}, 'T': {'value': true}, "
                            "'F': {'value': false}, 'N': {'value': null}, 'M': {}, "
                            "'E': {'value': ''}}}");
    struct deployment *d = parse_ok(m);
    const struct module_spec *s = deployment_find(d, "sensor");
    assert_string_equal(env_of(s, "S"), "text");
    assert_string_equal(env_of(s, "I"), "-42");
    assert_string_equal(env_of(s, "R"), "1.5");
    assert_string_equal(env_of(s, "R1"), "2.0");
    assert_string_equal(env_of(s, "T"), "true");
    assert_string_equal(env_of(s, "F"), "false");
    assert_string_equal(env_of(s, "N"), "");
    assert_string_equal(env_of(s, "M"), "");
    assert_string_equal(env_of(s, "E"), "");
    assert_int_equal(json_object_size(s->env), 9);
    deployment_free(d);
    json_decref(m);
}

/* ---- createOptions --------------------------------------------------------------------------- */

static const char *long_options =
    "{\"Env\": [\"A=1\"], \"HostConfig\": {\"Binds\": [\"/var/lib/data:/data\", "
    "\"/etc/ssl/certs:/etc/ssl/certs:ro\"], \"PortBindings\": {\"8080/tcp\": [{\"HostPort\": "
    "\"8080\"}]}, \"Privileged\": false}, \"Labels\": {\"x\": \"y\"}}";

static json_t *chunked_sensor(size_t parts, const char *const *keys)
{
    json_t *m = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': "
                            "'alpine'}}");
    json_t *settings = sensor_settings(m);
    size_t len = strlen(long_options), each = (len + parts - 1) / parts;
    for (size_t i = 0; i < parts; i++) {
        size_t off = i * each, n = off + each > len ? len - off : each;
        set(settings, keys[i], json_stringn(long_options + off, n));
    }
    return m;
}

static void test_create_options_chunks(void **state)
{
    json_t *want = json_loads(long_options, 0, NULL);
    static const char *const in_order[] = {"createOptions", "createOptions01", "createOptions02",
                                           "createOptions03"};
    static const char *const reversed[] = {"createOptions03", "createOptions02", "createOptions01",
                                           "createOptions"};
    json_t *m = chunked_sensor(4, in_order);
    struct deployment *d = parse_ok(m);
    assert_true(json_equal(deployment_find(d, "sensor")->create_options, want));
    char hash[65];
    memcpy(hash, deployment_find(d, "sensor")->config_hash, sizeof(hash));
    deployment_free(d);
    json_decref(m);

    /* Key order in the manifest does not matter, only the chunk numbers (text reversed too). */
    json_t *m2 = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': "
                             "'alpine'}}");
    size_t len = strlen(long_options), each = (len + 3) / 4;
    for (size_t i = 0; i < 4; i++) {
        size_t part = 3 - i, off = part * each, n = off + each > len ? len - off : each;
        set(sensor_settings(m2), reversed[i], json_stringn(long_options + off, n));
    }
    d = parse_ok(m2);
    assert_true(json_equal(deployment_find(d, "sensor")->create_options, want));
    assert_string_equal(deployment_find(d, "sensor")->config_hash, hash);
    deployment_free(d);
    json_decref(m2);

    /* Chunk names are matched case-insensitively (IoT Edge's ChunkedProperty). */
    static const char *const mixed[] = {"createoptions", "CreateOptions01"};
    m = chunked_sensor(2, mixed);
    d = parse_ok(m);
    assert_true(json_equal(deployment_find(d, "sensor")->create_options, want));
    assert_string_equal(deployment_find(d, "sensor")->config_hash, hash);
    deployment_free(d);
    json_decref(m);

    /* One string longer than IoT Edge's 512-character chunks is accepted. */
    char big[2048];
    int n = snprintf(big, sizeof(big), "{\"Labels\": {\"long\": \"%0900d\"}}", 1);
    assert_true(n > 900);
    m = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine'}}");
    set(sensor_settings(m), "createOptions", json_string(big));
    d = parse_ok(m);
    assert_int_equal(
        strlen(json_string_value(json_object_get(
            json_object_get(deployment_find(d, "sensor")->create_options, "Labels"), "long"))),
        900);
    deployment_free(d);
    json_decref(m);
    json_decref(want);
}

static void test_create_options_chunk_errors(void **state)
{
    static const char *const gap[] = {"createOptions", "createOptions01", "createOptions03"};
    json_t *m = chunked_sensor(3, gap);
    assert_one_error(parse_fail(m), "modules.sensor.settings.createOptions02: missing; chunks must "
                                    "be consecutive (\"createOptions03\" is present)");
    json_decref(m);

    static const char *const headless[] = {"createOptions01", "createOptions02"};
    m = chunked_sensor(2, headless);
    assert_one_error(parse_fail(m), "modules.sensor.settings.createOptions: missing, but chunk "
                                    "\"createOptions01\" is present");
    json_decref(m);

    static const char *const badname[] = {"createOptions", "createOptions1"};
    m = chunked_sensor(2, badname);
    assert_one_error(parse_fail(m), "modules.sensor.settings.createOptions1: not a createOptions "
                                    "chunk name (createOptions01 to createOptions99)");
    json_decref(m);

    static const char *const zero[] = {"createOptions", "createOptions00"};
    m = chunked_sensor(2, zero);
    assert_one_error(parse_fail(m), "modules.sensor.settings.createOptions00: not a createOptions "
                                    "chunk name (createOptions01 to createOptions99)");
    json_decref(m);

    static const char *const dup[] = {"createOptions", "createOptions01", "CREATEOPTIONS01"};
    m = chunked_sensor(3, dup);
    assert_one_error(parse_fail(m), "modules.sensor.settings.CREATEOPTIONS01: duplicate chunk: "
                                    "\"createOptions01\" is also given");
    json_decref(m);

    m = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
                    "'createOptions': '{\\'a\\':', 'createOptions01': 5}}");
    assert_one_error(parse_fail(m),
                     "modules.sensor.settings.createOptions01: must be a string, got a number");
    json_decref(m);

    m = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
                    "'createOptions': {'User': 'root'}, 'createOptionsX': ''}}");
    assert_one_error(parse_fail(m), "modules.sensor.settings.createOptionsX: not a createOptions "
                                    "chunk name (createOptions01 to createOptions99)");
    json_decref(m);

    m = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
                    "'createOptions': {'User': 'root'}, 'createOptions01': '}'}}");
    assert_one_error(parse_fail(m), "modules.sensor.settings.createOptions: must be a string "
                                    "holding JSON, got an object");
    json_decref(m);

    /* A JSON error in joined chunks says so. */
    m = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
                    "'createOptions': '{\\'a\\':', 'createOptions01': '}'}}");
    assert_one_error(parse_fail(m), "modules.sensor.settings.createOptions: not valid JSON at "
                                    "column 6: unexpected token near '}' (in the joined chunks)");
    json_decref(m);
}

static void test_create_options_forms(void **state)
{
    static const char *const none[] = {"''", "'   '", "'null'", "' NULL '", "'{}'", "null", "{}"};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        json_t *m = base_manifest();
        set(sensor_settings(m), "createOptions", J(none[i]));
        struct deployment *d = parse_ok(m);
        assert_null(deployment_find(d, "sensor")->create_options);
        deployment_free(d);
        json_decref(m);
    }
    /* The object form IoT Edge also reads equals its string form, hash included. */
    json_t *m = base_manifest();
    set(sensor_settings(m), "createOptions", J("'{\\'HostConfig\\': {\\'Privileged\\': true}}'"));
    struct deployment *d1 = parse_ok(m);
    set(sensor_settings(m), "createOptions", J("{'HostConfig': {'Privileged': true}}"));
    struct deployment *d2 = parse_ok(m);
    const struct module_spec *a = deployment_find(d1, "sensor"), *b = deployment_find(d2, "sensor");
    assert_true(json_equal(a->create_options, b->create_options));
    assert_string_equal(a->config_hash, b->config_hash);
    deployment_free(d1);
    deployment_free(d2);
    json_decref(m);
}

/* createOptions are typed (engine/createopts.h): coerced as IoT Edge coerces them, in the API's
 * spelling; fields the model does not know are kept and warned about (user modules only). */
static void test_create_options_typed(void **state)
{
    json_t *m = base_manifest();
    set(sensor_settings(m), "createOptions",
        J("'{\\'hostconfig\\': {\\'Privileged\\': \\'true\\', \\'PortBindings\\': "
          "{\\'80/tcp\\': [{\\'HostPort\\': 80}]}, \\'Memory\\': \\'268435456\\', "
          "\\'FancyNewThing\\': 1}, \\'Labels\\': {\\'tier\\': 2}}'"));
    set(system_module(m, "edgeHub"), "settings",
        J("{'image': 'mcr.microsoft.com/azureiotedge-hub:1.4', 'createOptions': {'HostConfig': "
          "{'PortBindings': {'8883/tcp': [{'HostPort': '8883'}]}}, 'HubOnlyThing': 1}}"));
    struct deployment *d = parse_ok(m);
    const struct module_spec *s = deployment_find(d, "sensor");
    json_t *want = J("{'HostConfig': {'Privileged': true, 'PortBindings': {'80/tcp': "
                     "[{'HostPort': '80'}]}, 'Memory': 268435456, 'FancyNewThing': 1}, "
                     "'Labels': {'tier': '2'}}");
    assert_true(json_equal(s->create_options, want));
    json_decref(want);
    /* one warning, for the user module's unknown field; the hub's createOptions are ignored */
    assert_int_equal(d->warnings.n, 1);
    assert_string_equal(d->warnings.v[0],
                        "modules.sensor.settings.createOptions.hostconfig.FancyNewThing: not a "
                        "field of the Engine API's ContainerCreate body that ledge knows; passed "
                        "to the engine as given");
    /* Only the spelling and the type of a value differ: the same config, no recreate. */
    char h1[65];
    snprintf(h1, sizeof(h1), "%s", s->config_hash);
    deployment_free(d);
    set(sensor_settings(m), "createOptions",
        J("{'Labels': {'tier': '2'}, 'HostConfig': {'FancyNewThing': 1, 'Memory': 268435456, "
          "'PortBindings': {'80/tcp': [{'HostPort': '80'}]}, 'Privileged': true}}"));
    d = parse_ok(m);
    assert_string_equal(deployment_find(d, "sensor")->config_hash, h1);
    deployment_free(d);
    /* A value that changes does recreate. */
    set(sensor_settings(m), "createOptions", J("{'HostConfig': {'Privileged': false}}"));
    d = parse_ok(m);
    assert_string_not_equal(deployment_find(d, "sensor")->config_hash, h1);
    deployment_free(d);
    /* The hub's createOptions are still validated. */
    set(system_module(m, "edgeHub"), "settings",
        J("{'image': 'mcr.microsoft.com/azureiotedge-hub:1.4', 'createOptions': {'HostConfig': "
          "{'Privileged': 'sometimes'}}}"));
    struct lstrv errors = LSTRV_INIT;
    char *text = ljson_dump(m);
    assert_int_equal(manifest_parse(text, strlen(text), HUB, &d, &errors), -EINVAL);
    assert_int_equal(errors.n, 1);
    assert_string_equal(errors.v[0], "systemModules.edgeHub.settings.createOptions.HostConfig."
                                     "Privileged: expected a boolean, got \"sometimes\"");
    free(text);
    lstrv_free(&errors);
    json_decref(m);
}

/* Real manifests collected from public repositories (tests/fixtures/public/README.md): each
 * validates, and its createOptions normalise to documents that are their own normal form. */
static char *substitute_template(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    struct lbuf raw = LBUF_INIT, out = LBUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        assert_int_equal(lbuf_append(&raw, chunk, n), 0);
    fclose(f);
    for (size_t i = 0; i < raw.len; i++) {
        char *end;
        /* the tooling's ${MODULES.Name} and <Placeholder> become values that validate */
        if (raw.data[i] == '$' && i + 1 < raw.len && raw.data[i + 1] == '{' &&
            (end = memchr(raw.data + i, '}', raw.len - i))) {
            assert_int_equal(lbuf_puts(&out, "registry.example.com/module:1.0"), 0);
            i = (size_t)(end - raw.data);
        } else if (raw.data[i] == '<' && (end = memchr(raw.data + i, '>', raw.len - i)) &&
                   !memchr(raw.data + i, '"', (size_t)(end - (raw.data + i)))) {
            assert_int_equal(lbuf_puts(&out, placeholder_value(raw.data + i + 1,
                                                               (size_t)(end - raw.data) - i - 1)),
                             0);
            i = (size_t)(end - raw.data);
        } else if (raw.len - i > 6 && memcmp(raw.data + i, "__AML_", 6) == 0) {
            /* Azure ML's pipeline: __AML_MODULE_NAME and the like */
            while (i + 1 < raw.len &&
                   strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", raw.data[i + 1]) &&
                   raw.data[i + 1])
                i++;
            assert_int_equal(lbuf_puts(&out, "placeholder"), 0);
        } else {
            assert_int_equal(lbuf_putc(&out, raw.data[i]), 0);
        }
    }
    lbuf_free(&raw);
    return lbuf_steal(&out);
}

static void test_public_fixtures(void **state)
{
    static const char *const files[] = {
        "blobstorage-sample.deployment.template.json",
        "custom-vision-raspberry-pi.deployment.template.json",
        "influxdb-grafana.deployment.template.json",
        "iotedge-edgehub_restart_deployment.template.json",
        "iotedge-long_haul_deployment.template.json",
        "iotedge-nestededge_topLayerBaseDeployment_mqtt.json",
        "iotedge-stress_deployment.template.json",
        "offline-dashboarding.deployment.template.json",
        "onnxruntime-amd64.deployment.template.json",
        "onnxruntime-openvino.deployment.template.json",
        "ua-edgetranslator.deployment.template.json",
    };
    size_t with_options = 0;
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        char path[512];
        snprintf(path, sizeof(path), "tests/fixtures/public/%s", files[i]);
        char *text = substitute_template(path);
        struct lstrv errors = LSTRV_INIT;
        struct deployment *d = NULL;
        int r = manifest_parse(text, strlen(text), HUB, &d, &errors);
        if (r != 0) {
            dump_list("error", &errors);
            fail_msg("%s: manifest_parse failed: %d", files[i], r);
        }
        for (size_t k = 0; k < d->warnings.n; k++)
            if (strstr(d->warnings.v[k], "createOptions"))
                fail_msg("%s: %s", files[i], d->warnings.v[k]);
        for (size_t k = 0; k < d->n_modules; k++) {
            const json_t *co = d->modules[k].create_options;
            if (!co)
                continue;
            with_options++;
            json_t *again = NULL;
            assert_int_equal(createopts_normalize(co, "", NULL, NULL, &again), 0);
            assert_true(json_equal(again, co));
            json_decref(again);
        }
        deployment_free(d);
        lstrv_free(&errors);
        free(text);
    }
    assert_true(with_options >= 20);
}

/* ---- errors ---------------------------------------------------------------------------------- */

struct module_case {
    const char *module; /* JSON for modules.sensor, single quotes */
    const char *error;
};

static void test_module_errors(void **state)
{
    static const struct module_case cases[] = {
        {"{'status': 'running', 'settings': {'image': 'alpine'}}",
         "modules.sensor.type: missing (must be \"docker\" or \"process\")"},
        {"{'type': 'rkt', 'status': 'running', 'settings': {'image': 'alpine'}}",
         "modules.sensor.type: must be \"docker\" or \"process\", got \"rkt\""},
        {"{'type': 'Docker', 'status': 'running', 'settings': {'image': 'alpine'}}",
         "modules.sensor.type: must be \"docker\" or \"process\", got \"Docker\""},
        {"{'type': 1, 'status': 'running', 'settings': {'image': 'alpine'}}",
         "modules.sensor.type: must be \"docker\" or \"process\", got a number"},
        {"{'type': 'docker', 'settings': {'image': 'alpine'}}",
         "modules.sensor.status: missing (must be \"running\" or \"stopped\")"},
        {"{'type': 'docker', 'status': 'run', 'settings': {'image': 'alpine'}}",
         "modules.sensor.status: must be \"running\" or \"stopped\", got \"run\""},
        {"{'type': 'docker', 'status': true, 'settings': {'image': 'alpine'}}",
         "modules.sensor.status: must be \"running\" or \"stopped\", got a boolean"},
        {"{'type': 'docker', 'status': 'running', 'restartPolicy': 'sometimes', 'settings': "
         "{'image': 'alpine'}}",
         "modules.sensor.restartPolicy: must be \"never\", \"on-failure\", \"on-unhealthy\" or "
         "\"always\", got \"sometimes\""},
        {"{'type': 'docker', 'status': 'running', 'imagePullPolicy': 'always', 'settings': "
         "{'image': 'alpine'}}",
         "modules.sensor.imagePullPolicy: must be \"on-create\" or \"never\", got \"always\""},
        {"{'type': 'docker', 'status': 'running', 'startupOrder': -1, 'settings': {'image': "
         "'alpine'}}",
         "modules.sensor.startupOrder: must be an integer 0-4294967295, got -1"},
        {"{'type': 'docker', 'status': 'running', 'startupOrder': 4294967296, 'settings': "
         "{'image': 'alpine'}}",
         "modules.sensor.startupOrder: must be an integer 0-4294967295, got 4294967296"},
        {"{'type': 'docker', 'status': 'running', 'startupOrder': '1', 'settings': {'image': "
         "'alpine'}}",
         "modules.sensor.startupOrder: must be an integer 0-4294967295, got \"1\""},
        {"{'type': 'docker', 'status': 'running', 'startupOrder': 1.5, 'settings': {'image': "
         "'alpine'}}",
         "modules.sensor.startupOrder: must be an integer 0-4294967295, got 1.5"},
        {"{'type': 'docker', 'status': 'running', 'version': {}, 'settings': {'image': 'alpine'}}",
         "modules.sensor.version: must be a string, number or boolean, got an object"},
        {"{'type': 'docker', 'status': 'running'}", "modules.sensor.settings: missing"},
        {"{'type': 'docker', 'status': 'running', 'settings': 'alpine'}",
         "modules.sensor.settings: must be an object, got a string"},
        {"{'type': 'docker', 'status': 'running', 'settings': {}}",
         "modules.sensor.settings.image: missing"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 5}}",
         "modules.sensor.settings.image: must be a string, got a number"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'a\\u0000b'}}",
         "modules.sensor.settings.image: must not contain NUL characters"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'Alpine'}}",
         "modules.sensor.settings.image: not a valid image reference \"Alpine\": repository names "
         "must be lowercase"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': '  '}}",
         "modules.sensor.settings.image: not a valid image reference \"  \": empty"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
         "'createOptions': '{\\'HostConfig\\': {\\'Privileged\\': tru}}'}}",
         "modules.sensor.settings.createOptions: not valid JSON at column 33: invalid token near "
         "'tru'"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
         "'createOptions': '[1, 2]'}}",
         "modules.sensor.settings.createOptions: must be a JSON object, got an array"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
         "'createOptions': '\\'text\\''}}",
         "modules.sensor.settings.createOptions: must be a JSON object, got a string"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
         "'createOptions': 5}}",
         "modules.sensor.settings.createOptions: must be a string holding JSON, got a number"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
         "'createOptions': '{}\\u0000'}}",
         "modules.sensor.settings.createOptions: must not contain NUL characters"},
        /* createOptions as IoT Edge reads them: what cannot be coerced names its path */
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
         "'createOptions': '{\\'HostConfig\\': {\\'Memory\\': \\'lots\\'}}'}}",
         "modules.sensor.settings.createOptions.HostConfig.Memory: expected an integer, got "
         "\"lots\""},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine', "
         "'createOptions': {'hostconfig': {'portbindings': {'80/tcp': {'HostPort': 80}}}}}}",
         "modules.sensor.settings.createOptions.hostconfig.portbindings.80/tcp: expected an "
         "array, got an object"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine'}, 'env': []}",
         "modules.sensor.env: must be an object {\"NAME\": {\"value\": \"...\"}}, got an array"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine'}, 'env': "
         "{'A': 'x'}}",
         "modules.sensor.env.A: must be an object {\"value\": \"...\"}, got a string"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine'}, 'env': "
         "{'A': {'value': [1]}}}",
         "modules.sensor.env.A.value: must be a string, number or boolean, got an array"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine'}, 'env': "
         "{'A=B': {'value': 'x'}}}",
         "modules.sensor.env.A=B: variable names must not be empty or contain '='"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine'}, 'env': "
         "{'': {'value': 'x'}}}",
         "modules.sensor.env.: variable names must not be empty or contain '='"},
        {"{'type': 'docker', 'status': 'running', 'settings': {'image': 'alpine'}, 'env': "
         "{'A': {'value': 'x\\u0000y'}}}",
         "modules.sensor.env.A.value: must not contain NUL characters"},
        {"[]", "modules.sensor: must be an object, got an array"},
        /* the process extension */
        {"{'type': 'process', 'status': 'running', 'settings': {}}",
         "modules.sensor.settings.path: missing (the absolute path of the program)"},
        {"{'type': 'process', 'status': 'running', 'settings': {'path': 'bin/x'}}",
         "modules.sensor.settings.path: must be an absolute path"},
        {"{'type': 'process', 'status': 'running', 'settings': {'path': 7}}",
         "modules.sensor.settings.path: must be a string, got a number"},
        {"{'type': 'process', 'status': 'running', 'settings': {'path': '/bin/x', 'args': 'a'}}",
         "modules.sensor.settings.args: must be an array of strings, got a string"},
        {"{'type': 'process', 'status': 'running', 'settings': {'path': '/bin/x', 'args': "
         "['a', 2]}}",
         "modules.sensor.settings.args[1]: must be a string, got a number"},
        {"{'type': 'process', 'status': 'running', 'settings': {'path': '/bin/x', 'image': "
         "'alpine'}}",
         "modules.sensor.settings.image: not allowed for a process module"},
        {"{'type': 'process', 'status': 'running', 'settings': {'path': '/bin/x', "
         "'createOptions': '{}'}}",
         "modules.sensor.settings.createOptions: not allowed for a process module"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *m = with_sensor(cases[i].module);
        assert_one_error(parse_fail(m), cases[i].error);
        json_decref(m);
    }
}

/* Every problem is reported, in document order, not just the first. */
static void test_all_errors_reported(void **state)
{
    json_t *m = with_sensor("{'type': 'docker', 'status': 'run', 'restartPolicy': 'x', "
                            "'settings': {'image': 'UP', 'createOptions': '{'}, 'env': "
                            "{'A': 1}}");
    set(modules(m), "filter", J("{'type': 'docker', 'status': 'running'}"));
    set(agent(m), "schemaVersion", J("'2.0'"));
    set(json_object_get(hubd(m), "routes"), "r1",
        J("{'route': 'FROM /* INTO $upstream', "
          "'priority': 10}"));
    static const char *const want[] = {
        "schemaVersion: unsupported \"2.0\"",
        "modules.sensor.status: must be \"running\" or \"stopped\", got \"run\"",
        "modules.sensor.restartPolicy: must be \"never\", \"on-failure\", \"on-unhealthy\" or "
        "\"always\", got \"x\"",
        "modules.sensor.env.A: must be an object {\"value\": \"...\"}, got a number",
        "modules.sensor.settings.image: not a valid image reference \"UP\": repository names "
        "must be lowercase",
        "modules.sensor.settings.createOptions: not valid JSON at column 1: string or '}' "
        "expected near end of file",
        "modules.filter.settings: missing",
        "$edgeHub.routes.r1.priority: must be an integer 0-9 (0 is the highest), got 10",
    };
    struct lstrv errors = parse_fail(m);
    assert_errors(&errors, want, sizeof(want) / sizeof(want[0]));
    json_decref(m);
}

struct doc_case {
    const char *path;  /* where to put the value: "agent.<key>", "hub.<key>", "content.<key>",
                          "runtime.<key>", "rsettings.<key>", "system.<key>", "edgeHub.<key>",
                          "edgeAgent.<key>", "routes.<key>", "saf.<key>" */
    const char *value; /* JSON (single quotes), or NULL to delete the key */
    const char *error;
};

static json_t *locate(json_t *m, const char *where)
{
    if (strcmp(where, "agent") == 0)
        return agent(m);
    if (strcmp(where, "hub") == 0)
        return hubd(m);
    if (strcmp(where, "content") == 0)
        return content(m);
    if (strcmp(where, "runtime") == 0)
        return json_object_get(agent(m), "runtime");
    if (strcmp(where, "rsettings") == 0)
        return json_object_get(json_object_get(agent(m), "runtime"), "settings");
    if (strcmp(where, "creds") == 0)
        return json_object_get(json_object_get(json_object_get(agent(m), "runtime"), "settings"),
                               "registryCredentials");
    if (strcmp(where, "system") == 0)
        return json_object_get(agent(m), "systemModules");
    if (strcmp(where, "edgeHub") == 0)
        return system_module(m, "edgeHub");
    if (strcmp(where, "edgeAgent") == 0)
        return system_module(m, "edgeAgent");
    if (strcmp(where, "modules") == 0)
        return modules(m);
    if (strcmp(where, "routes") == 0)
        return json_object_get(hubd(m), "routes");
    if (strcmp(where, "saf") == 0)
        return json_object_get(hubd(m), "storeAndForwardConfiguration");
    fail_msg("unknown location %s", where);
    return NULL;
}

static void apply(json_t *m, const char *path, const char *value)
{
    char where[64];
    const char *dot = strchr(path, '.');
    assert_non_null(dot);
    snprintf(where, sizeof(where), "%.*s", (int)(dot - path), path);
    json_t *obj = locate(m, where);
    assert_non_null(obj);
    if (value)
        set(obj, dot + 1, J(value));
    else
        json_object_del(obj, dot + 1);
}

static void test_document_errors(void **state)
{
    static const struct doc_case cases[] = {
        {"content.$edgeAgent", NULL, "$edgeAgent: missing"},
        {"content.$edgeAgent", "null", "$edgeAgent: missing"},
        {"content.$edgeAgent", "[]",
         "$edgeAgent: must be an object {\"properties.desired\": {...}}, got an array"},
        {"content.$edgeAgent", "{}", "$edgeAgent.properties.desired: missing"},
        {"content.$edgeAgent", "{'properties.desired': 1}",
         "$edgeAgent.properties.desired: must be an object, got a number"},
        {"content.$edgeHub", "{'properties.desired': []}",
         "$edgeHub.properties.desired: must be an object, got an array"},
        {"content.sensor", "{'properties.desired': 'x'}",
         "sensor.properties.desired: must be an object, got a string"},
        {"content.sensor", "{}", "sensor.properties.desired: missing"},
        {"content.sensor", "5",
         "sensor: must be an object {\"properties.desired\": {...}}, got a "
         "number"},
        {"content.sensor", "{'properties.desired.x': 1, 'properties.desired': {}}",
         "sensor.properties.desired.x: layered deployment paths are not supported; merge them "
         "into \"properties.desired\""},
        {"agent.schemaVersion", NULL, "schemaVersion: missing"},
        {"agent.schemaVersion", "1.1", "schemaVersion: must be a string, got a number"},
        {"agent.schemaVersion", "'2.0'", "schemaVersion: unsupported \"2.0\""},
        {"agent.schemaVersion", "'1.2'", "schemaVersion: unsupported \"1.2\""},
        {"agent.schemaVersion", "'1.1.1'", "schemaVersion: unsupported \"1.1.1\""},
        {"agent.schemaVersion", "'1'", "schemaVersion: unsupported \"1\""},
        {"agent.schemaVersion", "'one'", "schemaVersion: unsupported \"one\""},
        {"agent.schemaVersion", "'1.0.0.0.0'", "schemaVersion: unsupported \"1.0.0.0.0\""},
        {"agent.schemaVersion", "'1.0-rc'", "schemaVersion: unsupported \"1.0-rc\""},
        {"agent.schemaVersion", "'1.99999999999'", "schemaVersion: unsupported \"1.99999999999\""},
        {"agent.schemaVersion", "'1.1.0.0'", "schemaVersion: unsupported \"1.1.0.0\""},
        {"agent.runtime", NULL, "runtime: missing"},
        {"agent.runtime", "'docker'", "runtime: must be an object, got a string"},
        {"runtime.type", NULL, "runtime.type: missing (must be \"docker\")"},
        {"runtime.type", "'moby'", "runtime.type: must be \"docker\", got \"moby\""},
        {"runtime.type", "[]", "runtime.type: must be \"docker\", got an array"},
        {"runtime.settings", "[]", "runtime.settings: must be an object, got an array"},
        {"rsettings.minDockerVersion", "1.25",
         "runtime.settings.minDockerVersion: must be a string, got a number"},
        {"rsettings.loggingOptions", "{}",
         "runtime.settings.loggingOptions: must be a string, got an object"},
        {"rsettings.registryCredentials", "[]",
         "runtime.settings.registryCredentials: must be an object, got an array"},
        {"creds.acr", "'x'",
         "runtime.settings.registryCredentials.acr: must be an object "
         "{\"username\", \"password\", \"address\"}, got a string"},
        {"creds.acr", "{'username': 'u', 'password': 'p'}",
         "runtime.settings.registryCredentials.acr.address: missing"},
        {"creds.acr", "{'username': 'u', 'password': ' ', 'address': 'a.io'}",
         "runtime.settings.registryCredentials.acr.password: must not be empty"},
        {"creds.acr", "{'username': 1, 'password': 'p', 'address': 'a.io'}",
         "runtime.settings.registryCredentials.acr.username: must be a string, got a number"},
        {"agent.systemModules", NULL, "systemModules: missing"},
        {"agent.systemModules", "[]", "systemModules: must be an object, got an array"},
        {"edgeHub.type", "'process'",
         "systemModules.edgeHub.type: must be \"docker\", got \"process\""},
        {"edgeHub.status", "'paused'",
         "systemModules.edgeHub.status: must be \"running\" or \"stopped\", got \"paused\""},
        {"edgeHub.settings", NULL, "systemModules.edgeHub.settings: missing"},
        {"edgeAgent.type", NULL, "systemModules.edgeAgent.type: missing (must be \"docker\")"},
        {"edgeAgent.settings", "{'image': 'x', 'createOptions': '{'}",
         "systemModules.edgeAgent.settings.createOptions: not valid JSON at column 1: string or "
         "'}' expected near end of file"},
        {"edgeAgent.env", "{'A': []}",
         "systemModules.edgeAgent.env.A: must be an object {\"value\": \"...\"}, got an array"},
        {"agent.modules", "[]", "modules: must be an object, got an array"},
        {"modules.bad name", "{'type': 'docker', 'status': 'running', 'settings': {'image': 'a'}}",
         "modules.bad name: invalid module name (must match [a-zA-Z0-9][a-zA-Z0-9_.-]+: 2 to "
         "64 characters)"},
        {"modules._x", "{'type': 'docker', 'status': 'running', 'settings': {'image': 'a'}}",
         "modules._x: invalid module name (must match [a-zA-Z0-9][a-zA-Z0-9_.-]+: 2 to 64 "
         "characters)"},
        {"modules.a", "{'type': 'docker', 'status': 'running', 'settings': {'image': 'a'}}",
         "modules.a: invalid module name (must match [a-zA-Z0-9][a-zA-Z0-9_.-]+: 2 to 64 "
         "characters)"},
        {"modules.a1234567890123456789012345678901234567890123456789012345678901234",
         "{'type': 'docker', 'status': 'running', 'settings': {'image': 'a'}}",
         "modules.a1234567890123456789012345678901234567890123456789012345678901234: invalid "
         "module name (must match [a-zA-Z0-9][a-zA-Z0-9_.-]+: 2 to 64 characters)"},
        {"modules.EdgeHub", "{'type': 'docker', 'status': 'running', 'settings': {'image': 'a'}}",
         "modules.EdgeHub: name is reserved for the system module \"edgeHub\""},
        {"modules.edgeagent", "{'type': 'docker', 'status': 'running', 'settings': {'image': 'a'}}",
         "modules.edgeagent: name is reserved for the system module \"edgeAgent\""},
        {"modules.Sensor", "{'type': 'docker', 'status': 'running', 'settings': {'image': 'a'}}",
         "modules.Sensor: clashes with module \"sensor\" (names must differ in more than case)"},
        {"hub.schemaVersion", NULL, "$edgeHub.schemaVersion: missing"},
        {"hub.schemaVersion", "'1.4'", "$edgeHub.schemaVersion: unsupported \"1.4\""},
        {"hub.schemaVersion", "'2.0'", "$edgeHub.schemaVersion: unsupported \"2.0\""},
        {"hub.schemaVersion", "true", "$edgeHub.schemaVersion: must be a string, got a boolean"},
        {"hub.routes", NULL, "$edgeHub.routes: missing"},
        {"hub.routes", "'FROM /* INTO $upstream'",
         "$edgeHub.routes: must be an object, got a string"},
        {"routes.r1", "{'route': 'FROM /* INTO $upstream', 'priority': 10}",
         "$edgeHub.routes.r1.priority: must be an integer 0-9 (0 is the highest), got 10"},
        {"routes.r1", "{'route': 'FROM /* INTO $upstream', 'priority': '1'}",
         "$edgeHub.routes.r1.priority: must be an integer 0-9 (0 is the highest), got \"1\""},
        {"routes.r1", "{'route': 'FROM /* INTO $upstream', 'timeToLiveSecs': -1}",
         "$edgeHub.routes.r1.timeToLiveSecs: must be an integer 0-4294967295 (seconds; 0 = the "
         "global timeToLiveSecs), got -1"},
        {"routes.r1", "{'priority': 1}", "$edgeHub.routes.r1.route: missing"},
        {"routes.r1", "{'route': ' '}", "$edgeHub.routes.r1.route: must not be empty"},
        {"routes.r1", "{'route': 5}", "$edgeHub.routes.r1.route: must be a string, got a number"},
        {"routes.r1", "''", "$edgeHub.routes.r1: must not be empty"},
        {"routes.r1", "[]",
         "$edgeHub.routes.r1: must be a string or an object {\"route\": ...}, got an array"},
        {"routes.r.1", "'FROM /* INTO $upstream'",
         "$edgeHub.routes.r.1: invalid route name (must not be empty or contain '.', '$', '#' or "
         "spaces)"},
        {"routes.", "'FROM /* INTO $upstream'",
         "$edgeHub.routes.: invalid route name (must not be empty or contain '.', '$', '#' or "
         "spaces)"},
        {"routes.a b", "'FROM /* INTO $upstream'",
         "$edgeHub.routes.a b: invalid route name (must not be empty or contain '.', '$', '#' or "
         "spaces)"},
        {"hub.storeAndForwardConfiguration", NULL,
         "$edgeHub.storeAndForwardConfiguration: missing"},
        {"hub.storeAndForwardConfiguration", "7200",
         "$edgeHub.storeAndForwardConfiguration: must be an object, got a number"},
        {"saf.timeToLiveSecs", "'7200'",
         "$edgeHub.storeAndForwardConfiguration.timeToLiveSecs: must be an integer -2147483648 "
         "to 2147483647 (seconds; negative = forever), got \"7200\""},
        {"saf.timeToLiveSecs", "2147483648",
         "$edgeHub.storeAndForwardConfiguration.timeToLiveSecs: must be an integer -2147483648 "
         "to 2147483647 (seconds; negative = forever), got 2147483648"},
        {"saf.storeLimits", "1",
         "$edgeHub.storeAndForwardConfiguration.storeLimits: must be an object, got a number"},
        {"saf.storeLimits", "{}",
         "$edgeHub.storeAndForwardConfiguration.storeLimits.maxSizeBytes: missing"},
        {"saf.storeLimits", "{'maxSizeBytes': 0}",
         "$edgeHub.storeAndForwardConfiguration.storeLimits.maxSizeBytes: must be an integer "
         "1-9223372036854775807 (bytes), got 0"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *m = base_manifest();
        apply(m, cases[i].path, cases[i].value);
        assert_one_error(parse_fail(m), cases[i].error);
        json_decref(m);
    }
}

/* Every numeric field of the manifest against its documented range (docs/manifest.md): values
 * inside, on both boundaries and just past them, far out, and of other JSON types. Issue 11 named
 * `timeToLiveSecs: -5` on a route. */
struct numeric_case {
    const char *where; /* sensor, edgeHub (system module), route (routes.r1), saf, limits */
    const char *key;
    const char *value; /* JSON, single quotes */
    const char *got;   /* NULL: accepted; else what the error says was there */
};

static json_t *numeric_target(json_t *m, const char *where)
{
    if (strcmp(where, "sensor") == 0)
        return sensor(m);
    if (strcmp(where, "edgeHub") == 0)
        return system_module(m, "edgeHub");
    json_t *saf = json_object_get(hubd(m), "storeAndForwardConfiguration");
    if (strcmp(where, "saf") == 0)
        return saf;
    if (strcmp(where, "limits") == 0) {
        set(saf, "storeLimits", J("{'maxSizeBytes': 1048576}"));
        return json_object_get(saf, "storeLimits");
    }
    assert_string_equal(where, "route");
    set(json_object_get(hubd(m), "routes"), "r1", J("{'route': 'FROM /* INTO $upstream'}"));
    return json_object_get(json_object_get(hubd(m), "routes"), "r1");
}

static void test_numeric_ranges(void **state)
{
    static const struct {
        const char *where, *path, *range;
    } fields[] = {
        {"sensor", "modules.sensor.startupOrder", "0-4294967295"},
        {"edgeHub", "systemModules.edgeHub.startupOrder", "0-4294967295"},
        {"route", "$edgeHub.routes.r1.priority", "0-9 (0 is the highest)"},
        {"route", "$edgeHub.routes.r1.timeToLiveSecs",
         "0-4294967295 (seconds; 0 = the global timeToLiveSecs)"},
        {"saf", "$edgeHub.storeAndForwardConfiguration.timeToLiveSecs",
         "-2147483648 to 2147483647 (seconds; negative = forever)"},
        {"limits", "$edgeHub.storeAndForwardConfiguration.storeLimits.maxSizeBytes",
         "1-9223372036854775807 (bytes)"},
    };
    static const struct numeric_case cases[] = {
        {"sensor", "startupOrder", "0", NULL},
        {"sensor", "startupOrder", "4294967295", NULL},
        {"sensor", "startupOrder", "-1", "-1"},
        {"sensor", "startupOrder", "4294967296", "4294967296"},
        {"sensor", "startupOrder", "-9223372036854775808", "-9223372036854775808"},
        {"sensor", "startupOrder", "9223372036854775807", "9223372036854775807"},
        {"sensor", "startupOrder", "'3'", "\"3\""},
        {"sensor", "startupOrder", "3.0", "3.0"},
        {"sensor", "startupOrder", "true", "a boolean"},
        {"sensor", "startupOrder", "[]", "an array"},
        {"edgeHub", "startupOrder", "0", NULL},
        {"edgeHub", "startupOrder", "4294967295", NULL},
        {"edgeHub", "startupOrder", "-1", "-1"},
        {"edgeHub", "startupOrder", "4294967296", "4294967296"},
        {"route", "priority", "0", NULL},
        {"route", "priority", "9", NULL},
        {"route", "priority", "-1", "-1"},
        {"route", "priority", "10", "10"},
        {"route", "priority", "4294967296", "4294967296"},
        {"route", "priority", "1.5", "1.5"},
        {"route", "timeToLiveSecs", "0", NULL},
        {"route", "timeToLiveSecs", "1", NULL},
        {"route", "timeToLiveSecs", "4294967295", NULL},
        {"route", "timeToLiveSecs", "-5", "-5"},
        {"route", "timeToLiveSecs", "-1", "-1"},
        {"route", "timeToLiveSecs", "4294967296", "4294967296"},
        {"route", "timeToLiveSecs", "'60'", "\"60\""},
        {"route", "timeToLiveSecs", "{}", "an object"},
        {"saf", "timeToLiveSecs", "-2147483648", NULL},
        {"saf", "timeToLiveSecs", "-1", NULL},
        {"saf", "timeToLiveSecs", "0", NULL},
        {"saf", "timeToLiveSecs", "2147483647", NULL},
        {"saf", "timeToLiveSecs", "-2147483649", "-2147483649"},
        {"saf", "timeToLiveSecs", "2147483648", "2147483648"},
        {"saf", "timeToLiveSecs", "7200.5", "7200.5"},
        {"limits", "maxSizeBytes", "1", NULL},
        {"limits", "maxSizeBytes", "9223372036854775807", NULL},
        {"limits", "maxSizeBytes", "0", "0"},
        {"limits", "maxSizeBytes", "-1", "-1"},
        {"limits", "maxSizeBytes", "-9223372036854775808", "-9223372036854775808"},
        {"limits", "maxSizeBytes", "1e3", "1e+03"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct numeric_case *k = &cases[i];
        json_t *m = base_manifest();
        set(numeric_target(m, k->where), k->key, J(k->value));
        if (!k->got) {
            struct deployment *d = parse_ok(m);
            if (strcmp(k->key, "startupOrder") == 0) {
                const char *name = strcmp(k->where, "sensor") == 0 ? "sensor" : "edgeHub";
                bool found = false;
                for (size_t j = 0; j < d->n_modules; j++)
                    if (strcmp(d->modules[j].name, name) == 0) {
                        assert_int_equal(d->modules[j].startup_order, strtoull(k->value, NULL, 10));
                        found = true;
                    }
                assert_true(found);
            }
            deployment_free(d);
        } else {
            const char *path = NULL, *range = NULL;
            for (size_t j = 0; j < sizeof(fields) / sizeof(fields[0]); j++) {
                const char *leaf = strrchr(fields[j].path, '.') + 1;
                if (strcmp(fields[j].where, k->where) == 0 && strcmp(leaf, k->key) == 0) {
                    path = fields[j].path;
                    range = fields[j].range;
                }
            }
            assert_non_null(path);
            char want[512];
            snprintf(want, sizeof(want), "%s: must be an integer %s, got %s", path, range, k->got);
            assert_one_error(parse_fail(m), want);
        }
        json_decref(m);
    }
}

static void test_hub_schema_rules(void **state)
{
    /* 1.0: strings only; blank routes skipped; routes and storeAndForward optional. */
    json_t *m = base_manifest();
    set(hubd(m), "schemaVersion", J("'1.0'"));
    set(json_object_get(hubd(m), "routes"), "blank", J("''"));
    json_object_del(hubd(m), "storeAndForwardConfiguration");
    struct deployment *d = parse_ok(m);
    deployment_free(d);
    json_object_del(hubd(m), "routes");
    d = parse_ok(m);
    deployment_free(d);
    set(hubd(m), "routes", J("{'r': {'route': 'FROM /* INTO $upstream'}}"));
    assert_one_error(parse_fail(m), "$edgeHub.routes.r: must be a string (route objects need "
                                    "schemaVersion 1.1 or later)");
    json_decref(m);

    /* 1.1 to 1.3: route objects with priority and TTL; negative global TTL = forever. */
    static const char *const versions[] = {"'1.1'", "'1.2'", "'1.3'", "'1.2.0'"};
    for (size_t i = 0; i < 4; i++) {
        m = base_manifest();
        set(hubd(m), "schemaVersion", J(versions[i]));
        set(json_object_get(hubd(m), "routes"), "r2",
            J("{'route': 'FROM /messages/* INTO $upstream', 'priority': 0, 'timeToLiveSecs': 0}"));
        set(json_object_get(hubd(m), "routes"), "r3",
            J("{'route': 'FROM /* INTO $upstream', 'priority': 9, 'timeToLiveSecs': 86400}"));
        set(json_object_get(hubd(m), "storeAndForwardConfiguration"), "timeToLiveSecs", J("-1"));
        set(json_object_get(hubd(m), "storeAndForwardConfiguration"), "storeLimits",
            J("{'maxSizeBytes': 1073741824}"));
        set(hubd(m), "mqttBroker", J("{'authorizations': []}"));
        d = parse_ok(m);
        assert_int_equal(d->warnings.n, 0);
        deployment_free(d);
        json_decref(m);
    }

    /* No $edgeHub at all: accepted, with a warning. */
    m = base_manifest();
    json_object_del(content(m), "$edgeHub");
    d = parse_ok(m);
    assert_null(d->edge_hub);
    assert_true(has_warning(d, "$edgeHub: missing: the hub runs without routes"));
    deployment_free(d);
    json_decref(m);
}

static void test_agent_schema_versions(void **state)
{
    static const char *const ok[] = {"'1.0'", "'1.1'", "'1.0.0'", "'1.1.0'", "'1.0.5'"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        json_t *m = base_manifest();
        set(agent(m), "schemaVersion", J(ok[i]));
        struct deployment *d = parse_ok(m);
        json_t *v = J(ok[i]);
        assert_string_equal(d->schema_version, json_string_value(v));
        json_decref(v);
        deployment_free(d);
        json_decref(m);
    }
}

static void test_not_json(void **state)
{
    const char *bad = "{\n  \"modulesContent\": {\n    \"$edgeAgent\": ,\n";
    struct lstrv e = parse_fail_text(bad, strlen(bad));
    assert_int_equal(e.n, 1);
    assert_true(strncmp(e.v[0], "manifest: not valid JSON at line 3 column 19: ", 46) == 0);
    lstrv_free(&e);
    e = parse_fail_text("", 0);
    assert_int_equal(e.n, 1);
    assert_true(strncmp(e.v[0], "manifest: not valid JSON at", 27) == 0);
    lstrv_free(&e);
    assert_one_error(parse_fail_text("[1]", 3), "manifest: must be a JSON object, got an array");
    assert_one_error(parse_fail_text("{}", 2), "$edgeAgent: missing");
    assert_one_error(parse_fail_text("{\"modulesContent\": 1}", 21),
                     "modulesContent: must be an object, got a number");
    assert_one_error(parse_fail_text("{\"modulesContent\": {}}", 22), "$edgeAgent: missing");
    /* Only n bytes are read: the text need not be NUL-terminated. */
    assert_one_error(parse_fail_text("{}}garbage", 2), "$edgeAgent: missing");

    char *big = malloc(MANIFEST_MAX_SIZE + 2);
    memset(big, ' ', MANIFEST_MAX_SIZE + 1);
    big[MANIFEST_MAX_SIZE + 1] = 0;
    assert_one_error(parse_fail_text(big, MANIFEST_MAX_SIZE + 1),
                     "manifest: larger than 1048576 bytes");
    free(big);

    struct lstrv errors = LSTRV_INIT;
    struct deployment *d = NULL;
    assert_int_equal(manifest_parse("{}", 2, "relative/hub", &d, &errors), -EINVAL);
    assert_one_error(errors, "hub_program: must be an absolute path");
    /* A NULL error list is allowed. */
    assert_int_equal(manifest_parse("{}", 2, HUB, &d, NULL), -EINVAL);
    assert_null(d);
}

static void test_limits(void **state)
{
    /* More modules than MANIFEST_MAX_MODULES: one error, no module parsed. */
    json_t *m = base_manifest();
    for (int i = 0; i < MANIFEST_MAX_MODULES; i++) {
        char name[16];
        snprintf(name, sizeof(name), "m%03d", i);
        set(modules(m), name,
            J("{'type': 'docker', 'status': 'running', 'settings': "
              "{'image': 'alpine'}}"));
    }
    assert_one_error(parse_fail(m), "modules: too many modules (257, at most 256)");
    json_object_del(modules(m), "m000");
    struct deployment *d = parse_ok(m);
    assert_int_equal(d->n_modules, MANIFEST_MAX_MODULES + 1);
    deployment_free(d);
    json_decref(m);

    /* More than MANIFEST_MAX_ERRORS problems: the first ones and a count of the rest. */
    m = base_manifest();
    for (int i = 0; i < 150; i++) {
        char name[16];
        snprintf(name, sizeof(name), "m%03d", i);
        set(modules(m), name, J("{'type': 'docker', 'status': 'running'}"));
    }
    struct lstrv errors = parse_fail(m);
    assert_int_equal(errors.n, MANIFEST_MAX_ERRORS + 1);
    assert_string_equal(errors.v[0], "modules.m000.settings: missing");
    assert_string_equal(errors.v[MANIFEST_MAX_ERRORS], "manifest: 50 more not shown");
    lstrv_free(&errors);
    json_decref(m);

    /* Values in messages are quoted and escaped, and cut without splitting UTF-8. */
    m = with_sensor("{'type': 'docker', 'status': 'run\\\\\\'x', 'settings': {'image': 'a'}}");
    assert_one_error(parse_fail(m), "modules.sensor.status: must be \"running\" or \"stopped\", "
                                    "got \"run\\\\\\\"x\"");
    json_decref(m);
    /* "x" then 2-byte characters: byte 64 is the second byte of one, so the cut backs off to 63. */
    char value[100] = "x", expect[300];
    m = base_manifest();
    for (int i = 0; i < 33; i++)
        strcat(value, "\u00e9");
    set(sensor(m), "status", json_string(value));
    snprintf(expect, sizeof(expect),
             "modules.sensor.status: must be \"running\" or \"stopped\", got \"%.*s...\"", 63,
             value);
    assert_one_error(parse_fail(m), expect);
    json_decref(m);

    /* Long keys and control characters are cut and escaped in messages. */
    m = base_manifest();
    char key[200];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = 0;
    key[1] = '\n';
    set(modules(m), key, J("{'type': 'docker', 'status': 'running', 'settings': {'image': 'a'}}"));
    char want[512];
    snprintf(want, sizeof(want),
             "modules.k\\x0a%.126s...: invalid module name (must match [a-zA-Z0-9][a-zA-Z0-9_.-]+: "
             "2 to 64 characters)",
             key + 2);
    assert_one_error(parse_fail(m), want);
    json_decref(m);
}

/* ---- warnings -------------------------------------------------------------------------------- */

static void test_warnings(void **state)
{
    json_t *m = base_manifest();
    set(sensor(m), "restartPolcy", J("'never'"));
    set(sensor(m), "Status", J("'stopped'")); /* ignored: "status" is there */
    set(sensor(m), "$version", J("4"));       /* twin metadata: silent */
    json_object_del(sensor(m), "imagePullPolicy");
    set(sensor(m), "ImagePullPolicy", J("'never'")); /* read, as IoT Edge would */
    set(sensor_settings(m), "digest", J("'sha256:00'"));
    set(agent(m), "integrity", J("{}"));
    set(agent(m), "$version", J("12"));
    set(hubd(m), "extra", J("1"));
    set(content(m), "ghost", J("{'properties.desired': {'a': 1}}"));
    set(content(m), "sensor", J("{'properties.desired': {'threshold': 25}}"));
    set(content(m), "$other", J("{}"));
    set(agent(m), "schemaVersion", J("'1.0'"));
    set(sensor(m), "startupOrder", J("2"));
    struct deployment *d = parse_ok(m);
    static const char *const want[] = {
        "integrity: manifest signatures are not verified by ledge",
        "modules.sensor.restartPolcy: unknown key, ignored",
        "modules.sensor.Status: ignored: \"status\" is also given",
        ("modules.sensor.ImagePullPolicy: read as \"imagePullPolicy\" (keys match "
         "case-insensitively, as in IoT Edge)"),
        "modules.sensor.startupOrder: needs schemaVersion 1.1; honoured anyway, as IoT Edge does",
        "modules.sensor.settings.digest: unknown key, ignored",
        "$edgeHub.extra: unknown key, ignored",
        "ghost: desired properties for \"ghost\", which is not a module of this deployment; kept",
        "$other: unknown system twin, ignored",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (!has_warning(d, want[i])) {
            dump_list("warning", &d->warnings);
            fail_msg("missing warning: %s", want[i]);
        }
    }
    assert_int_equal(d->warnings.n, sizeof(want) / sizeof(want[0]));
    const struct module_spec *s = deployment_find(d, "sensor");
    assert_int_equal(s->status, MODULE_STATUS_RUNNING);
    assert_int_equal(s->restart_policy, RESTART_ALWAYS);
    assert_int_equal(s->pull_policy, PULL_NEVER);
    assert_int_equal(s->startup_order, 2);
    assert_int_equal(json_integer_value(
                         json_object_get(json_object_get(d->module_twins, "sensor"), "threshold")),
                     25);
    assert_non_null(json_object_get(d->module_twins, "ghost"));
    deployment_free(d);
    json_decref(m);

    /* No systemModules.edgeHub: allowed (IoT Edge too), and said. */
    m = base_manifest();
    json_object_del(json_object_get(agent(m), "systemModules"), "edgeHub");
    d = parse_ok(m);
    assert_null(deployment_find(d, "edgeHub"));
    assert_true(has_warning(d, "systemModules.edgeHub: absent: no hub runs, modules cannot "
                               "exchange messages"));
    deployment_free(d);
    json_decref(m);
}

/* ---- the process extension ------------------------------------------------------------------- */

static void test_process_module(void **state)
{
    json_t *m = with_sensor("{'type': 'process', 'status': 'running', 'restartPolicy': 'always', "
                            "'settings': {'path': '/usr/bin/sensor', 'args': ['--rate', '5']}, "
                            "'env': {'RATE': {'value': '5'}}}");
    struct deployment *d = parse_ok(m);
    const struct module_spec *s = deployment_find(d, "sensor");
    assert_int_equal(s->type, MODULE_TYPE_PROCESS);
    assert_false(s->system);
    assert_string_equal(s->path, "/usr/bin/sensor");
    assert_int_equal(json_array_size(s->args), 2);
    assert_string_equal(json_string_value(json_array_get(s->args, 1)), "5");
    assert_null(s->image);
    assert_null(s->create_options);
    assert_string_equal(env_of(s, "RATE"), "5");
    deployment_free(d);
    json_decref(m);
}

/* ---- config_hash ----------------------------------------------------------------------------- */

static const char *sensor_hash(const json_t *m, char out[65])
{
    struct deployment *d = parse_ok(m);
    memcpy(out, deployment_find(d, "sensor")->config_hash, 65);
    deployment_free(d);
    return out;
}

static void test_hash_stability(void **state)
{
    json_t *a =
        with_sensor("{'type': 'docker', 'status': 'running', 'restartPolicy': 'always', "
                    "'version': '1.0', 'settings': {'image': 'alpine', 'createOptions': "
                    "'{\\'HostConfig\\': {\\'Privileged\\': true, \\'Binds\\': [\\'/a:/a\\']}, "
                    "\\'Env\\': [\\'X=1\\']}'}, 'env': {'A': {'value': '1'}, 'B': {'value': "
                    "'2'}}}");
    /* Same module: keys reordered everywhere, createOptions reordered and re-spaced, the image
     * tag made explicit, and other modules added around it. */
    json_t *b =
        J("{'modulesContent': {'$edgeHub': {'properties.desired': {'schemaVersion': "
          "'1.1', 'routes': {}, 'storeAndForwardConfiguration': {}}}, '$edgeAgent': "
          "{'properties.desired': {'modules': {'zeta': {'type': 'docker', 'status': "
          "'running', 'settings': {'image': 'busybox'}}, 'sensor': {'env': {'B': {'value': "
          "'2'}, 'A': {'value': '1'}}, 'settings': {'createOptions': '{ \\'Env\\' : "
          "[\\'X=1\\'], \\'HostConfig\\':{\\'Binds\\':[\\'/a:/a\\'],\\'Privileged\\':true}}', "
          "'image': 'alpine:latest'}, 'version': '1.0', 'restartPolicy': 'always', "
          "'status': 'running', 'type': 'docker'}}, 'systemModules': {'edgeHub': {'type': "
          "'docker', 'settings': {'image': 'x'}}}, 'runtime': {'type': 'docker'}, "
          "'schemaVersion': '1.1'}}}}");
    char ha[65], hb[65], hc[65];
    sensor_hash(a, ha);
    assert_string_equal(ha, sensor_hash(b, hb));
    /* Stable across runs: a fixed manifest hashes to a fixed value. */
    json_t *fixed = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': "
                                "'alpine'}}");
    assert_string_equal(sensor_hash(fixed, hc),
                        "bc376256a63300477b5c71076af9a22977786306db65c06685030de8f4aad859");
    json_decref(fixed);

    /* A status change alone keeps the hash: it is a start or a stop, not a recreate. */
    set(sensor(a), "status", J("'stopped'"));
    assert_string_equal(ha, sensor_hash(a, hc));
    set(sensor(a), "status", J("'running'"));
    /* "" and no version are the same to IoT Edge. */
    json_t *v1 = with_sensor("{'type': 'docker', 'status': 'running', 'version': '', "
                             "'settings': {'image': 'alpine'}}");
    json_t *v2 = with_sensor("{'type': 'docker', 'status': 'running', 'settings': {'image': "
                             "'alpine'}}");
    assert_string_equal(sensor_hash(v1, hb), sensor_hash(v2, hc));
    json_decref(v1);
    json_decref(v2);
    json_decref(b);

    /* Every field that forces a recreate changes the hash. */
    static const struct {
        const char *key, *value;
        bool settings;
    } changes[] = {
        {"image", "'alpine:3.19'", true},
        {"createOptions",
         "'{\\'HostConfig\\': {\\'Privileged\\': false, \\'Binds\\': "
         "[\\'/a:/a\\']}, \\'Env\\': [\\'X=1\\']}'",
         true},
        {"createOptions", "''", true},
        {"env", "{'A': {'value': '1'}}", false},
        {"env", "{'A': {'value': '1'}, 'B': {'value': '3'}}", false},
        {"restartPolicy", "'on-failure'", false},
        {"imagePullPolicy", "'never'", false},
        {"startupOrder", "1", false},
        {"version", "'1.1'", false},
    };
    for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
        json_t *c = json_deep_copy(a);
        set(changes[i].settings ? sensor_settings(c) : sensor(c), changes[i].key,
            J(changes[i].value));
        if (strcmp(ha, sensor_hash(c, hc)) == 0)
            fail_msg("changing %s to %s kept the hash", changes[i].key, changes[i].value);
        json_decref(c);
    }
    json_decref(a);

    /* Process modules: path and args count. */
    json_t *p = with_sensor("{'type': 'process', 'status': 'running', 'settings': {'path': "
                            "'/bin/a', 'args': ['x']}}");
    sensor_hash(p, ha);
    set(sensor_settings(p), "path", J("'/bin/b'"));
    assert_string_not_equal(ha, sensor_hash(p, hb));
    set(sensor_settings(p), "path", J("'/bin/a'"));
    set(sensor_settings(p), "args", J("['y']"));
    assert_string_not_equal(ha, sensor_hash(p, hb));
    set(sensor_settings(p), "args", J("['x']"));
    assert_string_equal(ha, sensor_hash(p, hb));
    json_decref(p);

    /* The hub's hash follows the hub program. */
    json_t *m = base_manifest();
    char *text = ljson_dump(m);
    struct deployment *d1 = parse_text_ok(text, "/opt/a/ledge-hub");
    struct deployment *d2 = parse_text_ok(text, "/opt/b/ledge-hub");
    assert_string_not_equal(deployment_find(d1, "edgeHub")->config_hash,
                            deployment_find(d2, "edgeHub")->config_hash);
    deployment_free(d1);
    deployment_free(d2);
    free(text);
    json_decref(m);
}

/* ---- images and credentials ------------------------------------------------------------------ */

static void test_image_normalize(void **state)
{
    static const struct {
        const char *in, *out; /* out NULL = invalid */
    } cases[] = {
        {"ubuntu", "ubuntu:latest"},
        {"ubuntu:22.04", "ubuntu:22.04"},
        {"library/ubuntu", "library/ubuntu:latest"},
        {"docker.io/library/ubuntu", "docker.io/library/ubuntu:latest"},
        {"host:5000/img", "host:5000/img:latest"},
        {"host:5000/img:1.0", "host:5000/img:1.0"},
        {"host:5000/team/img", "host:5000/team/img:latest"},
        {"localhost/img", "localhost/img:latest"},
        {"localhost:5000/a/b:tag_1.2-x", "localhost:5000/a/b:tag_1.2-x"},
        {"[::1]:5000/img", "[::1]:5000/img:latest"},
        {"mcr.microsoft.com/azureiotedge-agent:1.4", "mcr.microsoft.com/azureiotedge-agent:1.4"},
        {"my-registry.azurecr.io/a__b/c.d-e", "my-registry.azurecr.io/a__b/c.d-e:latest"},
        {"img@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "img@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
        {"host:5000/img:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "host:5000/img:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
        {"$upstream:443/azureiotedge-agent:1.4", "$upstream:443/azureiotedge-agent:1.4"},
        {"$upstream:8000/x", "$upstream:8000/x:latest"},
        {"  alpine \n", "alpine:latest"},
        {"host:5000", "host:5000"}, /* image "host", tag "5000" */
        {"", NULL},
        {"   ", NULL},
        {"Ubuntu", NULL},
        {"registry.io/Team/img", NULL},
        {"img:", NULL},
        {":tag", NULL},
        {"img:bad/tag", NULL},
        {"img:-tag", NULL},
        {"host:5000/", NULL},
        {"a//b", NULL},
        {"/img", NULL},
        {"-img", NULL},
        {"img-", NULL},
        {"a___b", NULL},
        {"img@sha256:short", NULL},
        {"img@:0123456789abcdef0123456789abcdef", NULL},
        {"img@sha256", NULL},
        {"host:99999/img", NULL},
        {"host:0/img", NULL},
        {"-host.io/img", NULL},
        {"host_x.io/img", NULL},
        {"$upstream/img", NULL},
        {"$upstream:0/img", NULL},
        {"$other:443/img", NULL},
        {"a b", NULL},
        {"img:1:2", NULL},
        {"img:a!b", NULL},
        {"[]:5000/img", NULL},
        {"[zz::1]/img", NULL},
        {"img@sha256+b64.x_y-z:0123456789abcdef0123456789abcdef",
         "img@sha256+b64.x_y-z:0123456789abcdef0123456789abcdef"},
        {"img@1sha:0123456789abcdef0123456789abcdef", NULL},
        {"img@sha-:0123456789abcdef0123456789abcdef", NULL},
        {"img@sh!a:0123456789abcdef0123456789abcdef", NULL},
        {"img@sha256:0123456789abcdef0123456789abcdeg", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = NULL;
        int r = manifest_normalize_image(cases[i].in, &out);
        if (cases[i].out ? (r != 0 || strcmp(out, cases[i].out) != 0) : (r != -EINVAL || out))
            fail_msg("normalising \"%s\": got %d \"%s\", want \"%s\"", cases[i].in, r,
                     out ? out : "(null)", cases[i].out ? cases[i].out : "(invalid)");
        free(out);
    }
    char *out = NULL;
    assert_int_equal(manifest_normalize_image(NULL, &out), -EINVAL);
    char name[300];
    memset(name, 'a', 256);
    name[256] = 0;
    assert_int_equal(manifest_normalize_image(name, &out), -EINVAL);
    name[255] = 0;
    assert_int_equal(manifest_normalize_image(name, &out), 0);
    free(out);
}

static void test_credentials(void **state)
{
    json_t *m = base_manifest();
    set(locate(m, "creds"), "hub",
        J("{'username': 'h', 'password': 'hp', 'address': 'https://index.docker.io/v1/'}"));
    set(locate(m, "creds"), "local",
        J("{'username': 'l', 'password': 'lp', 'address': 'localhost:5000'}"));
    set(locate(m, "creds"), "mirror",
        J("{'username': 'm', 'password': 'mp', 'address': 'Mirror.Example.COM'}"));
    set(locate(m, "creds"), "parent",
        J("{'username': 'p', 'password': 'pp', 'address': '$upstream:443'}"));
    set(locate(m, "creds"), "plain", J("{'username': 'x', 'password': 'xp', 'address': 'lan'}"));
    set(locate(m, "creds"), "insecure",
        J("{'username': 'i', 'password': 'ip', 'address': 'http://10.0.0.5:5000/'}"));
    struct deployment *d = parse_ok(m);
    assert_int_equal(d->n_credentials, 7);
    /* sorted by name */
    assert_string_equal(d->credentials[0].name, "acr");
    assert_string_equal(d->credentials[6].name, "plain");
    static const struct {
        const char *image, *cred;
    } cases[] = {
        {"myregistry.azurecr.io/team/img:1", "acr"},
        {"MYREGISTRY.azurecr.io/img", "acr"},
        {"myregistry.azurecr.io:443/img", "acr"}, /* https's own port is the same registry */
        {"ubuntu:latest", "hub"},
        {"library/ubuntu", "hub"},
        {"docker.io/library/ubuntu", "hub"},
        {"index.docker.io/library/ubuntu", "hub"},
        {"localhost:5000/img", "local"},
        {"localhost/img", NULL},
        {"mirror.example.com/img", "mirror"},
        {"$upstream:443/azureiotedge-agent:1.4", "parent"},
        {"lan/img", "hub"}, /* "lan" is a Docker Hub user, not a registry */
        {"other.io/img", NULL},
        {"10.0.0.5:5000/img", "insecure"},
        {"10.0.0.5:5001/img", NULL}, /* another port is another registry */
        {"registry.hub.docker.com/library/ubuntu", "hub"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct registry_credential *c = deployment_credential_for(d, cases[i].image);
        if (cases[i].cred ? (!c || strcmp(c->name, cases[i].cred) != 0) : c != NULL)
            fail_msg("credential for %s: got %s, want %s", cases[i].image, c ? c->name : "none",
                     cases[i].cred ? cases[i].cred : "none");
    }
    assert_null(deployment_credential_for(d, NULL));
    assert_null(deployment_credential_for(NULL, "ubuntu"));
    assert_null(deployment_find(NULL, "x"));
    assert_null(deployment_find(d, NULL));
    deployment_free(d);
    deployment_free(NULL);
    json_decref(m);
}

/* ---- allocation failures --------------------------------------------------------------------- */

static long alloc_budget = -1; /* jansson allocations that may still succeed; -1 = unlimited */

static void *budget_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

/* Fail each of jansson's allocations in turn: the parser must return -ENOMEM (or an error that
 * says what failed) and leak nothing (checked under ASan), never crash. */
static void test_out_of_memory(void **state)
{
    char *text = load_fixture("nestededge_middleLayerBaseDeployment_mqtt.json");
    struct deployment *full = parse_text_ok(text, HUB);
    for (long n = 0;; n++) {
        struct lstrv errors = LSTRV_INIT;
        struct deployment *d = NULL;
        alloc_budget = n;
        json_set_alloc_funcs(budget_malloc, free);
        int r = manifest_parse(text, strlen(text), HUB, &d, &errors);
        json_set_alloc_funcs(malloc, free);
        alloc_budget = -1;
        if (r == 0) {
            assert_int_equal(d->n_modules, full->n_modules);
            for (size_t i = 0; i < d->n_modules; i++)
                assert_string_equal(d->modules[i].config_hash, full->modules[i].config_hash);
            deployment_free(d);
            lstrv_free(&errors);
            assert_true(n > 100);
            break;
        }
        assert_null(d);
        if (r == -EINVAL)
            assert_true(errors.n > 0);
        else
            assert_int_equal(r, -ENOMEM);
        lstrv_free(&errors);
    }
    deployment_free(full);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_quickstart),
        cmocka_unit_test(test_fixture_module_to_module),
        cmocka_unit_test(test_fixture_nested_edge),
        cmocka_unit_test(test_fixture_connectivity),
        cmocka_unit_test(test_fixture_without_hub),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_explicit_values),
        cmocka_unit_test(test_wrappers),
        cmocka_unit_test(test_names_of_enums),
        cmocka_unit_test(test_env_values),
        cmocka_unit_test(test_create_options_chunks),
        cmocka_unit_test(test_create_options_chunk_errors),
        cmocka_unit_test(test_create_options_forms),
        cmocka_unit_test(test_create_options_typed),
        cmocka_unit_test(test_public_fixtures),
        cmocka_unit_test(test_module_errors),
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_document_errors),
        cmocka_unit_test(test_hub_schema_rules),
        cmocka_unit_test(test_numeric_ranges),
        cmocka_unit_test(test_agent_schema_versions),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_warnings),
        cmocka_unit_test(test_process_module),
        cmocka_unit_test(test_hash_stability),
        cmocka_unit_test(test_image_normalize),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
