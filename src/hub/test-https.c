/* test-https.c — the HTTPS API's request parsing (head_https.h): what the Node SDK's
 * ModuleClient.invokeMethod sends maps to a method call; every malformed part gets its status
 * and a reason; ids that would move the target elsewhere are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "base/macro.h"
#include "head_https.h"

#define TOKEN "SharedAccessSignature sr=h%2Fdevices%2Fdev1%2Fmodules%2Fa&sig=x&se=1"
#define BODY "{\"methodName\":\"ping\",\"payload\":{\"x\":[1,2]},\"responseTimeoutInSeconds\":7}"

static struct https_request sdk_request(const char *target, const char *body)
{
    return (struct https_request){
        .method = "POST",
        .target = target,
        .authorization = TOKEN,
        .edge_module_id = "dev1/a",
        .content_type = "application/json",
        .body = body,
        .body_len = strlen(body),
    };
}

static void test_module_call(void **state)
{
    struct https_request rq =
        sdk_request("/twins/dev1/modules/b/methods?api-version=2021-04-12", BODY);
    struct https_call c;
    struct lerr err = {0};
    int status = 0;
    assert_int_equal(https_request_parse(&rq, &c, &status, &err), 0);
    assert_string_equal(c.caller_device, "dev1");
    assert_string_equal(c.caller_module, "a");
    assert_string_equal(c.sas_token, TOKEN);
    assert_string_equal(c.device_id, "dev1");
    assert_string_equal(c.module_id, "b");
    assert_string_equal(c.api_version, "2021-04-12");
    assert_string_equal(c.method_name, "ping");
    assert_int_equal(c.response_timeout_s, 7);
    assert_int_equal(c.connect_timeout_s, 0);
    assert_int_equal(json_array_size(json_object_get(c.payload, "x")), 2);
    https_call_clear(&c);
}

static void test_device_call_defaults(void **state)
{
    /* the Node SDK sends no api-version; a charset; ids percent-encoded */
    struct https_request rq = sdk_request("/twins/leaf%2D1/methods", "{\"methodName\":\"m\"}");
    rq.content_type = "application/json; charset=utf-8";
    struct https_call c;
    struct lerr err = {0};
    int status = 0;
    assert_int_equal(https_request_parse(&rq, &c, &status, &err), 0);
    assert_string_equal(c.device_id, "leaf-1");
    assert_null(c.module_id);
    assert_null(c.api_version);
    assert_true(json_is_null(c.payload));
    assert_int_equal(c.response_timeout_s, HTTPS_DEFAULT_TIMEOUT_S);
    https_call_clear(&c);
    /* a caller header with no module: a device (auth decides, the head refuses it 403) */
    rq.edge_module_id = "leaf1";
    assert_int_equal(https_request_parse(&rq, &c, &status, &err), 0);
    assert_string_equal(c.caller_device, "leaf1");
    assert_null(c.caller_module);
    https_call_clear(&c);
}

static void test_refusals(void **state)
{
    static const struct {
        const char *method, *target, *auth, *who, *ctype, *body;
        int status;
        const char *why;
    } cases[] = {
        {"POST", "/twins/dev1/modules/b", NULL, NULL, NULL, NULL, 404, "no such resource"},
        {"POST", "/twins/dev1/modules/b/methods/x", NULL, NULL, NULL, NULL, 404, "no such"},
        {"POST", "/devices/dev1/methods", NULL, NULL, NULL, NULL, 404, "no such"},
        {"POST", "twins/dev1/methods", NULL, NULL, NULL, NULL, 400, "malformed path"},
        {"POST", "/twins//methods", NULL, NULL, NULL, NULL, 400, "device id"},
        {"POST", "/twins/a/b/c/d/e/f/g/h", NULL, NULL, NULL, NULL, 404, "no such"},
        {"GET", "/twins/dev1/modules/b/methods", NULL, NULL, NULL, NULL, 405, "POST only"},
        {"DELETE", "/twins/dev1/methods", NULL, NULL, NULL, NULL, 405, "DELETE"},
        /* ids that would address something else once decoded */
        {"POST", "/twins/dev1/modules/b%2Fc/methods", NULL, NULL, NULL, NULL, 400, "module id"},
        {"POST", "/twins/dev1/modules/b%23/methods", NULL, NULL, NULL, NULL, 400, "module id"},
        {"POST", "/twins/dev1/modules/b%00/methods", NULL, NULL, NULL, NULL, 400, "module id"},
        {"POST", "/twins/de%2Fv/methods", NULL, NULL, NULL, NULL, 400, "device id"},
        {"POST", "/twins/dev1/modules/b%zz/methods", NULL, NULL, NULL, NULL, 400, "malformed"},
        {"POST", "/twins/dev1/methods?api-version=1&api-version=2", NULL, NULL, NULL, NULL, 400,
         "api-version"},
        {"POST", "/twins/dev1/methods?api-version=", NULL, NULL, NULL, NULL, 400, "api-version"},
        /* the caller */
        {"POST", "/twins/dev1/methods", "", NULL, NULL, NULL, 401, "Authorization"},
        {"POST", "/twins/dev1/methods", "Bearer abc", NULL, NULL, NULL, 401,
         "SharedAccessSignature"},
        {"POST", "/twins/dev1/methods", TOKEN, "", NULL, NULL, 401, "x-ms-edge-moduleId"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a/b", NULL, NULL, 401, "x-ms-edge-moduleId"},
        {"POST", "/twins/dev1/methods", TOKEN, "/a", NULL, NULL, 401, "x-ms-edge-moduleId"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/", NULL, NULL, 401, "x-ms-edge-moduleId"},
        /* the body */
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "text/plain", BODY, 415, "text/plain"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "", BODY, 415, "application/json"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/jsonx", BODY, 415, "json"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json", "", 400, "methodName"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json", "{", 400, "body:"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json", "[1]", 400, "object"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json", "{\"payload\":1}", 400,
         "methodName"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json",
         "{\"methodName\":\"a/b\"}", 400, "methodName"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json",
         "{\"methodName\":\"a\\u0000b\"}", 400, "methodName"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json", "{\"methodName\":7}",
         400, "methodName"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json",
         "{\"methodName\":\"m\",\"responseTimeoutInSeconds\":0}", 400, "responseTimeout"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json",
         "{\"methodName\":\"m\",\"responseTimeoutInSeconds\":301}", 400, "responseTimeout"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json",
         "{\"methodName\":\"m\",\"responseTimeoutInSeconds\":\"5\"}", 400, "responseTimeout"},
        {"POST", "/twins/dev1/methods", TOKEN, "dev1/a", "application/json",
         "{\"methodName\":\"m\",\"connectTimeoutInSeconds\":-1}", 400, "connectTimeout"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct https_request rq = {
            .method = cases[i].method,
            .target = cases[i].target,
            .authorization = cases[i].auth,
            .edge_module_id = cases[i].who,
            .content_type = cases[i].ctype,
            .body = cases[i].body,
            .body_len = cases[i].body ? strlen(cases[i].body) : 0,
        };
        struct https_call c = {0};
        struct lerr err = {0};
        int status = 0;
        if (https_request_parse(&rq, &c, &status, &err) >= 0)
            fail_msg("case %zu (%s): accepted", i, cases[i].target);
        if (status != cases[i].status || !strstr(err.msg, cases[i].why))
            fail_msg("case %zu (%s): %d %s", i, cases[i].target, status, err.msg);
        assert_null(c.device_id); /* nothing written on failure */
    }
}

static void test_error_codes(void **state)
{
    assert_string_equal(https_error_code(404), "DeviceNotFound");
    assert_string_equal(https_error_code(504), "GatewayTimeout");
    assert_string_equal(https_error_code(401), "IotHubUnauthorizedAccess");
    assert_string_equal(https_error_code(599), "ServerError");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_module_call),
        cmocka_unit_test(test_device_call_defaults),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_error_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
