/* test-cloud.c — unit tests for cloud.h: JSON merge patches both ways, desired properties to the
 * manifest (twin keys stripped, then accepted by manifest_parse), the validation problems as
 * lastDesiredStatus, and the reported properties in IoT Edge's schema. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "agent/cloud.h"
#include "agent/manifest.h"
#include "base/json.h"

#define HUB "/usr/libexec/ledge/ledge-hub"

/* JSON written with single quotes for readability. */
static json_t *J(const char *s)
{
    char *t = strdup(s);
    assert_non_null(t);
    for (char *p = t; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t e;
    json_t *j = json_loads(t, JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("bad test JSON: %s: %s", e.text, t);
    free(t);
    return j;
}

static void assert_json(const json_t *got, const char *want)
{
    json_t *w = J(want);
    if (!json_equal(got, w)) {
        char *g = got ? json_dumps(got, JSON_SORT_KEYS | JSON_ENCODE_ANY) : strdup("(null)");
        char *x = json_dumps(w, JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fail_msg("got %s\nwant %s", g, x);
    }
    json_decref(w);
}

static void test_merge_patch(void **state)
{
    json_t *t = J("{'a': 1, 'b': {'c': 2, 'd': 3}, 'e': [1]}");
    json_t *p = J("{'a': null, 'b': {'c': 5, 'x': {'y': 1}}, 'e': {'z': 1}, 'n': 'new'}");
    cloud_merge_patch(&t, p);
    assert_json(t, "{'b': {'c': 5, 'd': 3, 'x': {'y': 1}}, 'e': {'z': 1}, 'n': 'new'}");
    json_decref(p);
    /* a non-object patch replaces */
    p = J("[1, 2]");
    cloud_merge_patch(&t, p);
    assert_json(t, "[1, 2]");
    json_decref(p);
    /* an object patch over a non-object starts from {} */
    p = J("{'k': null, 'v': 1}");
    cloud_merge_patch(&t, p);
    assert_json(t, "{'v': 1}");
    json_decref(p);
    json_decref(t);
}

static void test_merge_diff(void **state)
{
    json_t *a = J("{'x': 1, 'm': {'s1': {'runtimeStatus': 'running', 'exitCode': 0}, 'gone': {}}, "
                  "'arr': [1, 2]}");
    json_t *b = J("{'x': 1, 'm': {'s1': {'runtimeStatus': 'failed', 'exitCode': 1}, 'new': {'v': "
                  "'1'}}, 'arr': [1, 3]}");
    json_t *d = cloud_merge_diff(a, b);
    assert_json(d, "{'m': {'s1': {'runtimeStatus': 'failed', 'exitCode': 1}, 'gone': null, 'new': "
                   "{'v': '1'}}, 'arr': [1, 3]}");
    /* the diff applied to a gives b */
    json_t *c = json_deep_copy(a);
    cloud_merge_patch(&c, d);
    assert_true(json_equal(c, b));
    json_decref(c);
    json_decref(d);
    assert_null(cloud_merge_diff(b, b));
    /* from nothing: the whole document */
    d = cloud_merge_diff(NULL, b);
    assert_true(json_equal(d, b));
    json_decref(d);
    json_decref(a);
    json_decref(b);
}

static const char *AGENT_DESIRED =
    "{'schemaVersion': '1.1', '$version': 7, '$metadata': {'$lastUpdated': 'x'},"
    " 'runtime': {'type': 'docker', 'settings': {'minDockerVersion': 'v1.25',"
    "   'registryCredentials': {'r': {'address': 'r.example', 'username': 'u', 'password': 'p'}}}},"
    " 'systemModules': {'edgeAgent': {'type': 'docker', 'settings': {'image': "
    "'mcr.microsoft.com/azureiotedge-agent:1.4'}},"
    "   'edgeHub': {'type': 'docker', 'status': 'running', 'restartPolicy': 'always', 'settings': "
    "{'image': 'mcr.microsoft.com/azureiotedge-hub:1.4'}}},"
    " 'modules': {'sensor': {'type': 'docker', 'status': 'running', 'restartPolicy': 'always',"
    "   'version': '1.0', 'settings': {'image': 'ledge-tempsensor:latest', '$metadata': {}},"
    "   'env': {'N': {'value': '5'}}}}}";
static const char *HUB_DESIRED =
    "{'$version': 3, 'schemaVersion': '1.1', 'routes': {'up': 'FROM /messages/* INTO $upstream'},"
    " 'storeAndForwardConfiguration': {'timeToLiveSecs': 7200}}";

static void test_manifest_text(void **state)
{
    json_t *a = J(AGENT_DESIRED), *h = J(HUB_DESIRED);
    assert_int_equal(cloud_desired_version(a), 7);
    assert_int_equal(cloud_desired_version(h), 3);
    assert_true(cloud_desired_has_deployment(a));
    json_t *empty = J("{'$version': 1}");
    assert_false(cloud_desired_has_deployment(empty));
    assert_false(cloud_desired_has_deployment(NULL));
    assert_int_equal(cloud_desired_version(NULL), -1);
    char *text = cloud_manifest_text(a, h);
    assert_non_null(text);
    assert_null(strstr(text, "$version"));
    assert_null(strstr(text, "$metadata"));
    struct deployment *d = NULL;
    struct lstrv errors = LSTRV_INIT;
    int r = manifest_parse(text, strlen(text), HUB, &d, &errors);
    if (r < 0)
        fail_msg("manifest_parse: %s", errors.n ? errors.v[0] : "?");
    assert_non_null(deployment_find(d, "sensor"));
    assert_non_null(deployment_find(d, "edgeHub"));
    assert_non_null(json_object_get(json_object_get(d->edge_hub, "routes"), "up"));
    deployment_free(d);
    free(text);
    /* no $edgeHub desired: no $edgeHub entry */
    text = cloud_manifest_text(a, empty);
    assert_null(strstr(text, "$edgeHub"));
    free(text);
    json_decref(empty);
    json_decref(a);
    json_decref(h);
}

static void test_invalid_paths(void **state)
{
    json_t *a = J("{'$version': 2, 'schemaVersion': '1.1', 'runtime': {'type': 'docker', "
                  "'settings': {}}, 'systemModules': {'edgeAgent': {'type': 'docker', 'settings': "
                  "{'image': 'a'}}}, 'modules': {'bad': {'type': 'docker', 'status': 'running', "
                  "'restartPolicy': 'always', 'settings': {'image': 5}}}}");
    char *text = cloud_manifest_text(a, NULL);
    struct deployment *d = NULL;
    struct lstrv errors = LSTRV_INIT;
    assert_int_equal(manifest_parse(text, strlen(text), HUB, &d, &errors), -EINVAL);
    char *desc = cloud_describe_errors(&errors);
    assert_non_null(strstr(desc, "invalid deployment: "));
    assert_non_null(strstr(desc, "modules.bad.settings.image"));
    free(desc);
    lstrv_free(&errors);
    free(text);
    json_decref(a);
    /* long descriptions are cut */
    struct lstrv many = LSTRV_INIT;
    for (int i = 0; i < 200; i++)
        lstrv_push(&many, "modules.x.settings.image: must be a string, got a number here");
    desc = cloud_describe_errors(&many);
    assert_true(strlen(desc) <= CLOUD_DESCRIPTION_MAX);
    assert_non_null(strstr(desc, "..."));
    free(desc);
    lstrv_free(&many);
}

static void test_agent_reported(void **state)
{
    json_t *desired = J(AGENT_DESIRED);
    json_t *mods = J(
        "[{'name': 'sensor', 'type': 'docker', 'runtimeStatus': 'running', 'statusDescription': "
        "'running', 'exitCode': 0, 'lastStartTimeUtc': '2026-12-07T06:00:00Z', 'lastExitTimeUtc': "
        "null, 'restartCount': 2, 'lastRestartTimeUtc': '2026-12-07T06:00:00Z', 'system': false, "
        "'status': 'running', 'version': '1.0', 'image': 'ledge-tempsensor:latest'},"
        " {'name': 'edgeHub', 'type': 'process', 'runtimeStatus': 'running', 'statusDescription': "
        "'running', 'exitCode': 0, 'lastStartTimeUtc': '2026-12-07T05:59:00Z', 'lastExitTimeUtc': "
        "null, 'restartCount': 0, 'lastRestartTimeUtc': null, 'system': true},"
        " {'name': 'local', 'type': 'docker', 'runtimeStatus': 'failed', 'statusDescription': "
        "'exited with code 3', 'exitCode': 3, 'lastStartTimeUtc': null, 'lastExitTimeUtc': "
        "'2026-12-07T06:01:00Z', 'restartCount': 0, 'lastRestartTimeUtc': null, 'system': false, "
        "'status': 'running', 'restartPolicy': 'never', 'image': 'busybox:latest'}]");
    struct cloud_agent_report in = {
        .modules = mods,
        .desired = desired,
        .desired_version = 7,
        .status_code = CLOUD_STATUS_OK,
        .status_description = "",
        .version = "0.9",
        .os = "linux",
        .arch = "x86_64",
        .started_utc = "2026-12-07T05:58:00Z",
    };
    json_t *r = cloud_agent_reported(&in);
    assert_json(json_object_get(r, "lastDesiredStatus"), "{'code': 200, 'description': ''}");
    assert_json(json_object_get(r, "lastDesiredVersion"), "7");
    assert_json(json_object_get(r, "schemaVersion"), "'" CLOUD_SCHEMA_VERSION "'");
    assert_json(json_object_get(r, "runtime"),
                "{'type': 'docker', 'platform': {'os': 'linux', 'architecture': 'x86_64', "
                "'version': '0.9'}, 'settings': {'minDockerVersion': 'v1.25', "
                "'registryCredentials': {'r': {'address': 'r.example', 'username': 'u', "
                "'password': 'p'}}}}");
    json_t *sensor = json_object_get(json_object_get(r, "modules"), "sensor");
    assert_json(sensor, "{'runtimeStatus': 'running', 'statusDescription': 'running', 'exitCode': "
                        "0, 'lastStartTimeUtc': '2026-12-07T06:00:00Z', 'lastExitTimeUtc': "
                        "'0001-01-01T00:00:00Z', 'restartCount': 2, 'lastRestartTimeUtc': "
                        "'2026-12-07T06:00:00Z', 'type': 'docker', 'status': 'running', "
                        "'restartPolicy': 'always', 'version': '1.0', 'settings': {'image': "
                        "'ledge-tempsensor:latest'}, 'env': {'N': {'value': '5'}}}");
    /* a module the cloud's deployment does not name (a local ledge deploy): from the agent */
    json_t *local = json_object_get(json_object_get(r, "modules"), "local");
    assert_json(local, "{'runtimeStatus': 'failed', 'statusDescription': 'exited with code 3', "
                       "'exitCode': 3, 'lastStartTimeUtc': '0001-01-01T00:00:00Z', "
                       "'lastExitTimeUtc': '2026-12-07T06:01:00Z', 'restartCount': 0, "
                       "'lastRestartTimeUtc': '0001-01-01T00:00:00Z', 'type': 'docker', 'status': "
                       "'running', 'restartPolicy': 'never', 'settings': {'image': "
                       "'busybox:latest'}, 'version': ''}");
    json_t *sys = json_object_get(r, "systemModules");
    assert_json(json_object_get(json_object_get(sys, "edgeAgent"), "runtimeStatus"), "'running'");
    assert_json(json_object_get(json_object_get(sys, "edgeAgent"), "lastStartTimeUtc"),
                "'2026-12-07T05:58:00Z'");
    assert_json(json_object_get(json_object_get(sys, "edgeHub"), "settings"),
                "{'image': 'mcr.microsoft.com/azureiotedge-hub:1.4'}");
    assert_null(json_object_get(json_object_get(r, "modules"), "edgeHub"));
    json_decref(r);

    /* never deployed: no version, 417 */
    in.desired = NULL;
    in.desired_version = -1;
    in.status_code = CLOUD_STATUS_MISSING;
    in.status_description = "no deployment";
    r = cloud_agent_reported(&in);
    assert_json(json_object_get(r, "lastDesiredVersion"), "null");
    assert_json(json_object_get(r, "lastDesiredStatus"),
                "{'code': 417, 'description': 'no deployment'}");
    json_decref(r);
    json_decref(mods);
    json_decref(desired);
}

static void test_hub_reported(void **state)
{
    struct cloud_hub_report in = {.desired_version = 3,
                                  .status_code = 400,
                                  .status_description = "invalid deployment: x",
                                  .version = "0.9"};
    json_t *r = cloud_hub_reported(&in);
    assert_json(r, "{'schemaVersion': '" CLOUD_SCHEMA_VERSION "', 'version': {'version': '0.9', "
                   "'build': '0.9', 'commit': 'ledge'}, 'lastDesiredVersion': 3, "
                   "'lastDesiredStatus': {'code': 400, 'description': 'invalid deployment: x'}, "
                   "'clients': {}}");
    json_decref(r);
}

static void test_strip(void **state)
{
    json_t *a = J("{'$version': 1, 'x': [{'$metadata': 1, 'k': 2}], 'y': {'$version': 3}}");
    json_t *s = cloud_strip_twin_keys(a);
    assert_json(s, "{'x': [{'k': 2}], 'y': {}}");
    json_decref(s);
    json_decref(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_patch),    cmocka_unit_test(test_merge_diff),
        cmocka_unit_test(test_manifest_text),  cmocka_unit_test(test_invalid_paths),
        cmocka_unit_test(test_agent_reported), cmocka_unit_test(test_hub_reported),
        cmocka_unit_test(test_strip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
