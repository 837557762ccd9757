/* test-manifest.c — manifests, indexes and configs as registries serve them (Docker v2 schema 2,
 * OCI, manifest lists), their errors, the bounds, and the platform rule (arm variants, arm64
 * v8, the host's name mapping). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/manifest.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"

/* JSON written with single quotes: every ' becomes ". */
static char *q(const char *s)
{
    char *r = strdup(s);
    assert_non_null(r);
    for (char *p = r; *p; p++)
        if (*p == '\'')
            *p = '"';
    return r;
}

static struct img_manifest *parse_ok(const char *text, const char *ct)
{
    char *t = q(text);
    struct img_manifest *m = NULL;
    struct lerr e = {0};
    if (img_manifest_parse(t, strlen(t), ct, &m, &e) != 0)
        fail_msg("%s: %s", t, e.msg);
    free(t);
    return m;
}

static void parse_bad(const char *text, const char *ct, int code, const char *msg)
{
    char *t = q(text);
    struct img_manifest *m = NULL;
    struct lerr e = {0};
    int r = img_manifest_parse(t, strlen(t), ct, &m, &e);
    if (r != code)
        fail_msg("%s: returned %d, wanted %d (%s)", t, r, code, e.msg);
    if (!strstr(e.msg, msg))
        fail_msg("%s: message \"%s\" lacks \"%s\"", t, e.msg, msg);
    assert_null(m);
    free(t);
}

static void test_docker_manifest(void **state)
{
    struct img_manifest *m = parse_ok(
        "{'schemaVersion': 2, 'mediaType': 'application/vnd.docker.distribution.manifest.v2+json',"
        " 'config': {'mediaType': 'application/vnd.docker.container.image.v1+json', 'size': 1469,"
        " 'digest': '" D1 "'}, 'layers': [{'mediaType': "
        "'application/vnd.docker.image.rootfs.diff.tar.gzip', 'size': 100, 'digest': '" D2 "'}]}",
        NULL);
    assert_int_equal(m->kind, IMG_KIND_IMAGE);
    assert_string_equal(m->config.digest, D1);
    assert_int_equal(m->config.size, 1469);
    assert_int_equal(m->n_descs, 1);
    assert_int_equal(m->descs[0].compression, IMG_COMPRESSION_GZIP);
    img_manifest_free(m);
}

static void test_oci_manifest(void **state)
{
    /* No mediaType in the document: the Content-Type says it; OCI layer types. */
    struct img_manifest *m = parse_ok(
        "{'schemaVersion': 2, 'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',"
        " 'size': 7, 'digest': '" D1 "'}, 'layers': ["
        "{'mediaType': 'application/vnd.oci.image.layer.v1.tar+zstd', 'size': 1, 'digest': '" D2
        "'}, {'mediaType': 'application/vnd.oci.image.layer.v1.tar', 'size': 2, 'digest': '" D3
        "', 'annotations': {'a': 'b'}}]}",
        IMG_MT_OCI_MANIFEST "; charset=utf-8");
    assert_string_equal(m->media_type, IMG_MT_OCI_MANIFEST);
    assert_int_equal(m->n_descs, 2);
    assert_int_equal(m->descs[0].compression, IMG_COMPRESSION_ZSTD);
    assert_int_equal(m->descs[1].compression, IMG_COMPRESSION_NONE);
    img_manifest_free(m);
    /* Neither: told by the fields. */
    m = parse_ok("{'schemaVersion': 2, 'config': {'mediaType': "
                 "'application/vnd.oci.image.config.v1+json', 'size': 7, 'digest': '" D1
                 "'}, 'layers': []}",
                 "application/json");
    assert_int_equal(m->kind, IMG_KIND_IMAGE);
    img_manifest_free(m);
}

static void test_index(void **state)
{
    struct img_manifest *m = parse_ok(
        "{'schemaVersion': 2, 'mediaType': "
        "'application/vnd.docker.distribution.manifest.list.v2+json', 'manifests': ["
        "{'mediaType': 'application/vnd.docker.distribution.manifest.v2+json', 'size': 1, "
        "'digest': '" D1 "', 'platform': {'architecture': 'amd64', 'os': 'linux'}},"
        "{'mediaType': 'application/vnd.docker.distribution.manifest.v2+json', 'size': 1, "
        "'digest': '" D2 "', 'platform': {'architecture': 'arm', 'os': 'linux', 'variant': 'v6'}},"
        "{'mediaType': 'application/vnd.docker.distribution.manifest.v2+json', 'size': 1, "
        "'digest': '" D3 "', 'platform': {'architecture': 'arm', 'os': 'linux', 'variant': 'v7'}},"
        "{'mediaType': 'application/vnd.oci.image.manifest.v1+json', 'size': 1, 'digest': '" D3
        "', 'platform': {'architecture': 'unknown', 'os': 'unknown'}}]}",
        NULL);
    assert_int_equal(m->kind, IMG_KIND_INDEX);
    assert_int_equal(m->n_descs, 4);
    static const struct {
        const char *want, *digest;
    } t[] = {
        {"linux/amd64", D1}, {"linux/arm/v7", D3}, {"linux/arm/v6", D2},
        {"linux/arm", D3},   {"armhf", D3},        {"linux/arm/v8", D3},
    };
    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        struct img_platform p;
        const struct img_desc *d = NULL;
        struct lerr e = {0};
        assert_int_equal(img_platform_parse(t[i].want, &p, &e), 0);
        if (img_index_select(m, &p, &d, &e) != 0)
            fail_msg("%s: %s", t[i].want, e.msg);
        if (strcmp(d->digest, t[i].digest) != 0)
            fail_msg("%s: chose %s", t[i].want, d->digest);
    }
    struct img_platform p;
    const struct img_desc *d;
    struct lerr e = {0};
    img_platform_parse("linux/arm64", &p, NULL);
    assert_int_equal(img_index_select(m, &p, &d, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "no manifest for platform linux/arm64"));
    assert_non_null(strstr(e.msg, "linux/amd64, linux/arm/v6, linux/arm/v7"));
    img_platform_parse("linux/arm/v5", &p, NULL);
    assert_int_equal(img_index_select(m, &p, &d, &e), -ENOENT); /* v6, v7 do not run on v5 */
    img_manifest_free(m);
}

static void test_platform(void **state)
{
    static const struct {
        const char *want, *have;
        bool match;
    } t[] = {
        {"linux/arm64", "linux/arm64/v8", true}, {"linux/arm64/v8", "linux/arm64", true},
        {"linux/aarch64", "linux/arm64", true},  {"linux/x86_64", "linux/amd64", true},
        {"linux/amd64", "linux/amd64/v2", true}, {"linux/arm/v7", "linux/arm/v5", true},
        {"linux/arm/v6", "linux/arm/v7", false}, {"linux/amd64", "linux/arm64", false},
        {"linux/amd64", "windows/amd64", false}, {"linux/arm64", "linux/arm/v7", false},
        {"LINUX/AMD64", "linux/amd64", true},
    };
    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        struct img_platform w, h;
        assert_int_equal(img_platform_parse(t[i].want, &w, NULL), 0);
        assert_int_equal(img_platform_parse(t[i].have, &h, NULL), 0);
        if ((img_platform_score(&w, &h) >= 0) != t[i].match)
            fail_msg("%s on %s: expected %s", t[i].have, t[i].want, t[i].match ? "yes" : "no");
    }
    struct img_platform w, a, b;
    img_platform_parse("linux/arm/v7", &w, NULL);
    img_platform_parse("linux/arm/v7", &a, NULL);
    img_platform_parse("linux/arm/v6", &b, NULL);
    assert_true(img_platform_score(&w, &a) > img_platform_score(&w, &b));
    struct img_platform host;
    assert_int_equal(img_platform_host(&host), 0);
    assert_string_equal(host.os, "linux");
    assert_true(strcmp(host.architecture, "x86_64") != 0 && strcmp(host.architecture, "aarch64"));
    char s[96];
    img_platform_parse("arm64", &w, NULL);
    img_platform_format(&w, s, sizeof(s));
    assert_string_equal(s, "linux/arm64");
    assert_int_equal(img_platform_parse("a/b/c/d", &w, NULL), -EINVAL);
    assert_int_equal(img_platform_parse("", &w, NULL), -EINVAL);
}

static void test_errors(void **state)
{
    parse_bad("{'schemaVersion': 1, 'name': 'x', 'fsLayers': []}", NULL, -ENOTSUP,
              "schema 1 manifests are not supported");
    parse_bad("{'schemaVersion': 3}", NULL, -EINVAL, "schemaVersion: must be 2");
    parse_bad("[]", NULL, -EINVAL, "must be a JSON object");
    parse_bad("{", NULL, -EINVAL, "not valid JSON");
    parse_bad("{'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.index.v1+json', "
              "'manifests': []}",
              IMG_MT_DOCKER_MANIFEST, -EINVAL, "disagrees with the Content-Type");
    parse_bad("{'schemaVersion': 2, 'mediaType': 'application/vnd.example+json'}", NULL, -ENOTSUP,
              "unsupported manifest media type application/vnd.example+json");
    parse_bad("{'schemaVersion': 2, 'config': {'mediaType': 'application/vnd.oci.empty.v1+json', "
              "'size': 2, 'digest': '" D1 "'}, 'layers': []}",
              NULL, -ENOTSUP, "is not a container image config");
    parse_bad("{'schemaVersion': 2, 'config': {'mediaType': "
              "'application/vnd.oci.image.config.v1+json', 'size': 2, 'digest': 'sha256:12'}, "
              "'layers': []}",
              NULL, -EINVAL, "config.digest: must be sha256");
    parse_bad("{'schemaVersion': 2, 'config': {'mediaType': "
              "'application/vnd.oci.image.config.v1+json', 'size': -1, 'digest': '" D1 "'}, "
              "'layers': []}",
              NULL, -EINVAL, "config.size: must be a non-negative integer");
    parse_bad("{'schemaVersion': 2, 'config': {'mediaType': "
              "'application/vnd.oci.image.config.v1+json', 'size': 999999999, 'digest': '" D1
              "'}, 'layers': []}",
              NULL, -E2BIG, "config.size");
    parse_bad(
        "{'schemaVersion': 2, 'config': {'mediaType': "
        "'application/vnd.oci.image.config.v1+json', 'size': 1, 'digest': '" D1 "'}, "
        "'layers': [{'mediaType': 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',"
        " 'size': 1, 'digest': '" D2 "'}]}",
        NULL, -ENOTSUP, "layers[0].mediaType");
    parse_bad("{'schemaVersion': 2, 'config': {'mediaType': "
              "'application/vnd.oci.image.config.v1+json', 'size': 1, 'digest': '" D1 "'}, "
              "'layers': [{'mediaType': 'text/plain', 'size': 1, 'digest': '" D2 "'}]}",
              NULL, -ENOTSUP, "unsupported layer type text/plain");
    parse_bad("{'schemaVersion': 2, 'manifests': [{'mediaType': 'x', 'size': 1, 'digest': '" D1
              "', 'platform': {'os': 'linux'}}]}",
              NULL, -EINVAL, "manifests[0].platform");
    /* Bounds: layer count, manifest size. */
    struct lbuf b = LBUF_INIT;
    lbuf_puts(&b, "{\"schemaVersion\": 2, \"config\": {\"mediaType\": "
                  "\"application/vnd.oci.image.config.v1+json\", \"size\": 1, \"digest\": \"" D1
                  "\"}, \"layers\": [");
    for (int i = 0; i <= IMG_LAYERS_MAX; i++)
        lbuf_printf(&b,
                    "%s{\"mediaType\": \"" IMG_MT_OCI_LAYER "\", \"size\": 1, \"digest\": "
                    "\"" D2 "\"}",
                    i ? "," : "");
    lbuf_puts(&b, "]}");
    struct img_manifest *m = NULL;
    struct lerr e = {0};
    assert_int_equal(img_manifest_parse(b.data, b.len, NULL, &m, &e), -E2BIG);
    assert_non_null(strstr(e.msg, "at most 256"));
    assert_int_equal(img_manifest_parse(b.data, IMG_MANIFEST_MAX + 1, NULL, &m, &e), -E2BIG);
    lbuf_free(&b);
}

static void test_config(void **state)
{
    char *t = q("{'architecture': 'arm', 'variant': 'v7', 'os': 'linux', 'config': {'Env': "
                "['PATH=/bin'], 'Cmd': ['/app']}, 'rootfs': {'type': 'layers', 'diff_ids': ['" D1
                "', '" D2 "']}, 'history': []}");
    struct img_config *c = NULL;
    struct lerr e = {0};
    assert_int_equal(img_config_parse(t, strlen(t), &c, &e), 0);
    assert_string_equal(c->platform.architecture, "arm");
    assert_string_equal(c->platform.variant, "v7");
    assert_int_equal(c->diff_ids.n, 2);
    assert_string_equal(c->diff_ids.v[1], D2);
    assert_non_null(json_object_get(json_object_get(c->doc, "config"), "Cmd"));
    img_config_free(c);
    free(t);

    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"{'os': 'linux', 'rootfs': {'type': 'layers', 'diff_ids': []}}", "os and architecture"},
        {"{'os': 'linux', 'architecture': 'amd64', 'rootfs': {'type': 'x', 'diff_ids': []}}",
         "rootfs.type"},
        {"{'os': 'linux', 'architecture': 'amd64', 'rootfs': {'type': 'layers'}}",
         "rootfs.diff_ids must be an array"},
        {"{'os': 'linux', 'architecture': 'amd64', 'rootfs': {'type': 'layers', 'diff_ids': "
         "['sha256:x']}}",
         "rootfs.diff_ids[0]"},
        {"{'os': 'linux', 'architecture': 'amd64', 'config': 3, 'rootfs': {'type': 'layers', "
         "'diff_ids': []}}",
         "config must be an object"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        t = q(bad[i].text);
        c = NULL;
        if (img_config_parse(t, strlen(t), &c, &e) >= 0 || !strstr(e.msg, bad[i].msg))
            fail_msg("%s: %s", t, e.msg);
        assert_null(c);
        free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docker_manifest), cmocka_unit_test(test_oci_manifest),
        cmocka_unit_test(test_index),           cmocka_unit_test(test_platform),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
