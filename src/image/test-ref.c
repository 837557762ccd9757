/* test-ref.c — tables for image references (Docker's normalisation and errors), registry
 * credential matching (registryCredentials addresses as users write them), X-Registry-Auth and
 * WWW-Authenticate challenges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/crypto.h"
#include "base/json.h"
#include "image/auth.h"
#include "image/creds.h"
#include "image/ref.h"

static void test_ref_normalise(void **state)
{
    static const struct {
        const char *in, *registry, *repo, *tag, *digest, *formatted;
    } ok[] = {
        {"alpine", "docker.io", "library/alpine", "latest", "", "docker.io/library/alpine:latest"},
        {"alpine:3.19", "docker.io", "library/alpine", "3.19", "", NULL},
        {"library/alpine", "docker.io", "library/alpine", "latest", "", NULL},
        {"docker.io/alpine", "docker.io", "library/alpine", "latest", "", NULL},
        {"index.docker.io/alpine", "docker.io", "library/alpine", "latest", "",
         "docker.io/library/alpine:latest"},
        {"docker.io/team/app:v1", "docker.io", "team/app", "v1", "", NULL},
        {"team/app", "docker.io", "team/app", "latest", "", NULL},
        {"localhost/app", "localhost", "app", "latest", "", "localhost/app:latest"},
        {"localhost:5000/app", "localhost:5000", "app", "latest", "", NULL},
        {"localhost:5000/a/b/c:tag-1.0_x", "localhost:5000", "a/b/c", "tag-1.0_x", "", NULL},
        {"127.0.0.1:5000/app:1", "127.0.0.1:5000", "app", "1", "", NULL},
        {"[::1]:5000/app", "[::1]:5000", "app", "latest", "", NULL},
        {"myreg.azurecr.io/mod/temp:1.0-arm32v7", "myreg.azurecr.io", "mod/temp", "1.0-arm32v7", "",
         NULL},
        {"MyReg.AzureCR.io/mod", "MyReg.AzureCR.io", "mod", "latest", "",
         "MyReg.AzureCR.io/mod:latest"},
        {"mcr.microsoft.com/azureiotedge-agent:1.4", "mcr.microsoft.com", "azureiotedge-agent",
         "1.4", "", NULL},
        {"Registry/app", "Registry", "app", "latest", "", NULL}, /* upper case: a registry */
        {"a__b/c.d-e---f", "docker.io", "a__b/c.d-e---f", "latest", "", NULL},
        {"alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "docker.io", "library/alpine", "",
         "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "docker.io/library/alpine@sha256:"
         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
        {"host:5000/app:v2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
         "host:5000", "app", "v2",
         "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", NULL},
    };
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        struct img_ref r;
        struct lerr e = {0};
        if (img_ref_parse(ok[i].in, &r, &e) != 0)
            fail_msg("%s: %s", ok[i].in, e.msg);
        assert_string_equal(r.registry, ok[i].registry);
        assert_string_equal(r.repo, ok[i].repo);
        assert_string_equal(r.tag, ok[i].tag);
        assert_string_equal(r.digest, ok[i].digest);
        char out[IMG_REF_MAX * 2];
        assert_int_equal(img_ref_format(&r, out, sizeof(out)), 0);
        if (ok[i].formatted)
            assert_string_equal(out, ok[i].formatted);
        /* A formatted reference is a fixed point. */
        struct img_ref again;
        assert_int_equal(img_ref_parse(out, &again, NULL), 0);
        char out2[IMG_REF_MAX * 2];
        img_ref_format(&again, out2, sizeof(out2));
        assert_string_equal(out, out2);
    }
}

static void test_ref_errors(void **state)
{
    static const struct {
        const char *in, *msg;
    } bad[] = {
        {"", "empty image reference"},
        {"Alpine", "repository name must be lowercase"},
        {"docker.io/Team/app", "repository name must be lowercase"},
        {"alpine:", "invalid tag"},
        {"alpine:-x", "invalid tag"},
        {"alpine:a/b", "invalid registry"}, /* ':' before the last '/' is not a tag */
        {"/alpine", "invalid repository name"},
        {"alpine/", "invalid repository name"},
        {"a//b", "invalid repository name"},
        {"a-/b", "invalid repository name"},
        {"a_-b", "invalid repository name"},
        {"a...b", "invalid repository name"},
        {"host:port/app", "invalid registry"},
        {"-host.io/app", "invalid registry"},
        {"alpine@md5:abc", "unsupported digest algorithm"},
        {"alpine@sha256:abc", "sha256 needs 64 hex digits"},
        {"alpine@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
         "not lower-case hex"},
        {"alpine@", "invalid digest"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct img_ref r;
        struct lerr e = {0};
        if (img_ref_parse(bad[i].in, &r, &e) != -EINVAL)
            fail_msg("%s: accepted", bad[i].in);
        if (!strstr(e.msg, bad[i].msg))
            fail_msg("%s: message \"%s\" lacks \"%s\"", bad[i].in, e.msg, bad[i].msg);
    }
    /* Long names: a 255-character name is the limit. */
    char longname[400];
    memset(longname, 'a', sizeof(longname));
    longname[sizeof(longname) - 1] = 0;
    assert_int_equal(img_ref_parse(longname, &(struct img_ref){0}, NULL), -EINVAL);
    snprintf(longname, sizeof(longname), "h.io/%0245d", 0);
    assert_int_equal(img_ref_parse(longname, &(struct img_ref){0}, NULL), 0);
    snprintf(longname, sizeof(longname), "h.io/%0251d", 0);
    assert_int_equal(img_ref_parse(longname, &(struct img_ref){0}, NULL), -EINVAL);
}

static void test_loopback(void **state)
{
    assert_true(img_registry_is_loopback("localhost:5000"));
    assert_true(img_registry_is_loopback("LOCALHOST"));
    assert_true(img_registry_is_loopback("127.0.0.1:5000"));
    assert_true(img_registry_is_loopback("127.10.20.30"));
    assert_true(img_registry_is_loopback("[::1]:5000"));
    assert_false(img_registry_is_loopback("128.0.0.1:5000"));
    assert_false(img_registry_is_loopback("127.0.0.1.example.com"));
    assert_false(img_registry_is_loopback("localhost.example.com:5000"));
    assert_false(img_registry_is_loopback("docker.io"));
    assert_false(img_registry_is_loopback("[::2]:5000"));
}

static void test_registry_match(void **state)
{
    static const struct {
        const char *address, *registry;
        bool match;
    } t[] = {
        {"myreg.azurecr.io", "myreg.azurecr.io", true},
        {"MyReg.AzureCR.io", "myreg.azurecr.io", true},
        {"https://myreg.azurecr.io", "myreg.azurecr.io", true},
        {"https://myreg.azurecr.io/", "myreg.azurecr.io", true},
        {"http://myreg.azurecr.io/v2/", "myreg.azurecr.io", true},
        {"myreg.azurecr.io:443", "myreg.azurecr.io", true},
        {"https://myreg.azurecr.io:443/", "myreg.azurecr.io", true},
        {"myreg.azurecr.io.", "myreg.azurecr.io", true},
        {" myreg.azurecr.io", "myreg.azurecr.io", true},
        {"localhost:5000", "localhost:5000", true},
        {"http://localhost:5000", "localhost:5000", true},
        {"127.0.0.1:5000", "127.0.0.1:5000", true},
        {"docker.io", "docker.io", true},
        {"index.docker.io", "docker.io", true},
        {"https://index.docker.io/v1/", "docker.io", true},
        {"registry-1.docker.io", "docker.io", true},
        {"registry.hub.docker.com", "docker.io", true},
        {"otherreg.azurecr.io", "myreg.azurecr.io", false},
        {"myreg.azurecr.io", "myreg.azurecr.io:5000", false},
        {"localhost:5000", "localhost:5001", false},
        {"localhost", "localhost:5000", false},
        {"myreg.azurecr.io.evil.com", "myreg.azurecr.io", false},
        {"myreg", "myreg.azurecr.io", false},
        {"", "docker.io", false},
        {"https://", "docker.io", false},
    };
    for (size_t i = 0; i < ARRAY_SIZE(t); i++)
        if (img_registry_matches(t[i].address, t[i].registry) != t[i].match)
            fail_msg("%s vs %s: expected %s", t[i].address, t[i].registry,
                     t[i].match ? "a match" : "no match");
}

static void test_creds_lookup(void **state)
{
    json_error_t je;
    json_t *creds = json_loads("{\"hub\": {\"address\": \"https://index.docker.io/v1/\", "
                               "\"username\": \"u1\", \"password\": \"p1\"},"
                               "\"acr\": {\"address\": \"myreg.azurecr.io\", \"username\": \"u2\", "
                               "\"password\": \"p2\"},"
                               "\"acr2\": {\"address\": \"https://myreg.azurecr.io\", "
                               "\"username\": \"u3\", \"password\": \"p3\"},"
                               "\"local\": {\"address\": \"localhost:5000\", \"username\": \"u4\"},"
                               "\"a-hub\": {\"address\": \"docker.io\", \"username\": \"u5\", "
                               "\"password\": \"p5\"}}",
                               0, &je);
    assert_non_null(creds);
    struct img_cred c;
    struct lerr e = {0};
    assert_int_equal(img_creds_lookup(creds, "docker.io", &c, &e), 0);
    assert_string_equal(c.name, "a-hub"); /* the lowest name, wherever it stands */
    assert_string_equal(c.username, "u5");
    assert_int_equal(img_creds_lookup(creds, "myreg.azurecr.io", &c, &e), 0);
    assert_string_equal(c.name, "acr"); /* "acr" < "acr2" */
    assert_string_equal(c.password, "p2");
    assert_int_equal(img_creds_lookup(creds, "other.io", &c, &e), -ENOENT);
    assert_int_equal(img_creds_lookup(creds, "localhost:5000", &c, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "registryCredentials.local"));
    assert_non_null(strstr(e.msg, "password must be a string"));
    assert_int_equal(img_creds_lookup(NULL, "docker.io", &c, &e), -ENOENT);

    /* X-Registry-Auth: base64url of the AuthConfig JSON. */
    assert_int_equal(img_creds_lookup(creds, "myreg.azurecr.io", &c, &e), 0);
    struct lbuf out = LBUF_INIT, dec = LBUF_INIT;
    assert_int_equal(img_creds_registry_auth(&c, "myreg.azurecr.io", &out), 0);
    assert_null(strpbrk(out.data, "+/"));
    for (size_t i = 0; i < out.len; i++)
        out.data[i] = out.data[i] == '-' ? '+' : out.data[i] == '_' ? '/' : out.data[i];
    assert_int_equal(lcrypto_b64_decode(out.data, out.len, &dec), 0);
    json_t *j = json_loads(dec.data, 0, &je);
    assert_non_null(j);
    assert_string_equal(ljson_str(j, "username"), "u2");
    assert_string_equal(ljson_str(j, "password"), "p2");
    assert_string_equal(ljson_str(j, "serveraddress"), "myreg.azurecr.io");
    json_decref(j);
    lbuf_free(&out);
    lbuf_free(&dec);
    json_decref(creds);
}

static void test_challenge(void **state)
{
    struct img_challenge c;
    const char *h = "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
                    "scope=\"repository:samalba/my-app:pull,push\"";
    assert_int_equal(img_challenge_parse(h, strlen(h), &c), 0);
    assert_int_equal(c.scheme, IMG_AUTH_BEARER);
    assert_string_equal(c.realm, "https://auth.docker.io/token");
    assert_string_equal(c.service, "registry.docker.io");
    assert_string_equal(c.scope, "repository:samalba/my-app:pull,push");

    h = "basic realm=\"basic-realm\"";
    assert_int_equal(img_challenge_parse(h, strlen(h), &c), 0);
    assert_int_equal(c.scheme, IMG_AUTH_BASIC);
    assert_string_equal(c.realm, "basic-realm");

    h = "Bearer realm=tok, service=\"a\\\"b\" , error=\"insufficient_scope\"";
    assert_int_equal(img_challenge_parse(h, strlen(h), &c), 0);
    assert_string_equal(c.realm, "tok");
    assert_string_equal(c.service, "a\"b");
    assert_string_equal(c.scope, "");

    static const char *const bad[] = {"",          "Bearer realm=\"x",        "Bearer realm",
                                      "Bearer =x", "Bearer realm=\"x\" junk", "Bearer realm=\"x\\"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (img_challenge_parse(bad[i], strlen(bad[i]), &c) != -EINVAL)
            fail_msg("accepted: %s", bad[i]);
    h = "Negotiate abc";
    assert_int_equal(img_challenge_parse(h, strlen(h), &c), -ENOTSUP);
    /* an unknown parameter's value is not bounded by what is kept */
    char longv[IMG_AUTH_PARAM_MAX + 64];
    int n = snprintf(longv, sizeof(longv), "Bearer realm=r,error_description=\"");
    memset(longv + n, 'x', IMG_AUTH_PARAM_MAX + 10);
    strcpy(longv + n + IMG_AUTH_PARAM_MAX + 10, "\"");
    assert_int_equal(img_challenge_parse(longv, strlen(longv), &c), 0);
    assert_string_equal(c.realm, "r");
}

/* A registry proxy's rewrite: the realm replaced, everything else as it came. */
static void test_challenge_rewrite(void **state)
{
    char old[IMG_AUTH_PARAM_MAX];
    struct lbuf out = LBUF_INIT;
    const char *h = "Bearer realm=\"https://auth.example/token\",service=\"reg\","
                    "scope=\"repository:app:pull\",error=\"insufficient_scope\"";
    assert_int_equal(
        img_challenge_rewrite_realm(h, strlen(h), "https://parent:5000/ledge/token/0", &out, old),
        0);
    assert_string_equal(old, "https://auth.example/token");
    assert_string_equal(out.data, "Bearer realm=\"https://parent:5000/ledge/token/0\","
                                  "service=\"reg\",scope=\"repository:app:pull\","
                                  "error=\"insufficient_scope\"");
    struct img_challenge c;
    assert_int_equal(img_challenge_parse(out.data, out.len, &c), 0);
    assert_string_equal(c.realm, "https://parent:5000/ledge/token/0");
    assert_string_equal(c.scope, "repository:app:pull");
    /* a token realm, spacing and case kept; a quote in the new realm escaped */
    lbuf_reset(&out);
    h = "bearer  service=s ,  REALM=tok";
    assert_int_equal(img_challenge_rewrite_realm(h, strlen(h), "a\"b", &out, old), 0);
    assert_string_equal(old, "tok");
    assert_string_equal(out.data, "bearer  service=s ,  REALM=\"a\\\"b\"");
    assert_int_equal(img_challenge_parse(out.data, out.len, &c), 0);
    assert_string_equal(c.realm, "a\"b");
    /* refusals leave out as it was */
    lbuf_reset(&out);
    assert_int_equal(lbuf_puts(&out, "kept"), 0);
    static const struct {
        const char *h;
        int r;
    } bad[] = {{"Basic realm=\"x\"", -ENOTSUP},
               {"Bearer service=x", -ENOENT},
               {"Bearer realm=\"x", -EINVAL},
               {"Negotiate", -ENOTSUP}};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        assert_int_equal(img_challenge_rewrite_realm(bad[i].h, strlen(bad[i].h), "r", &out, old),
                         bad[i].r);
    h = "Bearer realm=x";
    assert_int_equal(img_challenge_rewrite_realm(h, strlen(h), "a\r\nX-Injected: 1", &out, old),
                     -EINVAL);
    assert_string_equal(out.data, "kept");
    lbuf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_normalise),     cmocka_unit_test(test_ref_errors),
        cmocka_unit_test(test_loopback),          cmocka_unit_test(test_registry_match),
        cmocka_unit_test(test_creds_lookup),      cmocka_unit_test(test_challenge),
        cmocka_unit_test(test_challenge_rewrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
