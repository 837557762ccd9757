/* test-support.c — unit tests for the support library: the redaction rule (names, values, text
 * patterns, documents, learned values in their encoded forms) and a whole bundle made while no
 * ledged answers (the files, the configuration, the process modules' logs), read back with
 * libarchive and searched for every secret the test planted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/proc.h"
#include "base/str.h"
#include "support/bundle.h"
#include "redact.h"

static bool secret_name(const char *n)
{
    return redact_name_is_secret(n, strlen(n));
}

static void test_names(void **state)
{
    const char *yes[] = {"password",
                         "DB_PASSWORD",
                         "dbPassword",
                         "DBPASSWORD",
                         "pwd",
                         "sharedAccessKey",
                         "SharedAccessKey",
                         "primaryKey",
                         "API_KEY",
                         "apiKey",
                         "APIKey",
                         "x-api-key",
                         "token",
                         "SAS_TOKEN",
                         "accessToken",
                         "client_secret",
                         "MYAPPSECRET",
                         "connectionString",
                         "CONNECTION_STRING",
                         "IOTHUB_CONNECTION_STRING",
                         "key",
                         "device.key",
                         "sig",
                         "Authorization",
                         "credentials",
                         "passphrase",
                         "key1",
                         "password2",
                         "privateKey",
                         "cookie"};
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++)
        if (!secret_name(yes[i]))
            fail_msg("%s should be secret", yes[i]);
    const char *no[] = {"username",
                        "address",
                        "keyFile",
                        "key_file",
                        "tokenLifetime",
                        "token_lifetime",
                        "sharedAccessKeyName",
                        "image",
                        "MODE",
                        "LOG_LEVEL",
                        "monkey",
                        "passthrough",
                        "keyId",
                        "secretName",
                        "bypass",
                        "tokenTtl",
                        "hostname",
                        "createOptions",
                        "env",
                        "value",
                        "auth",
                        "keyboard",
                        "x509",
                        ""};
    for (size_t i = 0; i < ARRAY_SIZE(no); i++)
        if (secret_name(no[i]))
            fail_msg("%s should not be secret", no[i]);
}

static void test_values(void **state)
{
    assert_true(redact_value_is_secret("HostName=h.net;DeviceId=d;SharedAccessKey=abc"));
    assert_true(redact_value_is_secret("SharedAccessSignature sr=x&sig=y&se=1"));
    assert_true(
        redact_value_is_secret("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k"));
    assert_true(redact_value_is_secret("Server=s;User Id=u;Password=p;"));
    assert_true(redact_value_is_secret("-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC "
                                       "PRIVATE KEY-----\n"));
    assert_true(redact_value_is_secret("8uN2KvTq+1zDQ0mF5ZxXb3yJr7Wc9GhEaLsPo4iUe6A="));
    assert_true(redact_value_is_secret(
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0"));
    /* digests, ids, paths and words are not */
    assert_false(redact_value_is_secret(
        "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"));
    assert_false(redact_value_is_secret("/var/lib/ledge/certs/ModuleCertificate2024Renewed/x"));
    assert_false(redact_value_is_secret("mcr.microsoft.com/azureiotedge-hub:1.4"));
    assert_false(redact_value_is_secret("8f14e45fceea167a5a36dedd4bea2543"));
    assert_false(redact_value_is_secret("running"));
    assert_false(redact_value_is_secret(""));
}

static char *redacted(struct redactor *r, const char *in)
{
    struct lbuf out = LBUF_INIT;
    assert_int_equal(redact_text(r, in, strlen(in), &out), 0);
    return lbuf_steal(&out);
}

#define assert_text(r, in, want)                                                                   \
    do {                                                                                           \
        char *_got = redacted(r, in);                                                              \
        if (strcmp(_got, want) != 0)                                                               \
            fail_msg("redact(%s):\n  got  %s\n  want %s", in, _got, want);                         \
        free(_got);                                                                                \
    } while (0)

static void test_text(void **state)
{
    struct redactor r;
    redactor_init(&r);
    assert_text(&r, "DB_PASSWORD=hunter2 MODE=fast", "DB_PASSWORD=<redacted> MODE=fast");
    assert_text(&r, "{\"password\": \"p w\", \"user\": \"u\"}",
                "{\"password\": \"<redacted>\", \"user\": \"u\"}");
    assert_text(&r, "HostName=h.net;DeviceId=d;SharedAccessKey=abc+/=;x=1",
                "HostName=h.net;DeviceId=d;SharedAccessKey=<redacted>;x=1");
    assert_text(&r, "auth SharedAccessSignature sr=h%2Fdevices%2Fd&sig=AbC%2B&se=17 end",
                "auth SharedAccessSignature <redacted> end");
    assert_text(&r, "Authorization: Bearer abc.def.ghi next", "Authorization: <redacted> next");
    assert_text(&r, "GET https://bob:s3cret@reg.io/v2/ ok",
                "GET https://bob:<redacted>@reg.io/v2/ ok");
    assert_text(&r, "k 8uN2KvTq+1zDQ0mF5ZxXb3yJr7Wc9GhEaLsPo4iUe6A= done", "k <redacted> done");
    assert_text(&r,
                "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIB\nxyz\n-----END RSA PRIVATE KEY-----\nb",
                "a\n<redacted>\nb");
    assert_text(&r, "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n tail",
                "t=<redacted> tail");
    /* what is not secret passes unchanged */
    const char *plain = "2024-01-01T00:00:00Z ledged info agent: module sensor started "
                        "(sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945)"
                        " /var/lib/ledge/process/edgeHub.log";
    assert_text(&r, plain, plain);
    /* learned values, raw, URL-encoded and JSON-escaped */
    assert_int_equal(redactor_learn(&r, "pa ss/w\"rd"), 0);
    assert_text(&r, "x pa ss/w\"rd y", "x <redacted> y");
    assert_text(&r, "x pa%20ss%2Fw%22rd y", "x <redacted> y");
    assert_text(&r, "{\"v\":\"pa ss/w\\\"rd\"}", "{\"v\":\"<redacted>\"}");
    /* too short to learn: only found by name */
    assert_int_equal(redactor_learn(&r, "abc"), 0);
    assert_text(&r, "abc", "abc");
    redactor_clear(&r);
}

static void test_json(void **state)
{
    const char *manifest =
        "{\"modulesContent\":{\"$edgeAgent\":{\"properties.desired\":{\"runtime\":{\"settings\":"
        "{\"registryCredentials\":{\"acr\":{\"username\":\"bob\",\"password\":\"RegPass-9876\","
        "\"address\":\"r.azurecr.io\"}}}},\"modules\":{\"m\":{\"env\":{\"DB_PASSWORD\":{\"value\":"
        "\"EnvSecret-1\"},\"MODE\":{\"value\":\"fast\"},\"IOTHUB\":{\"value\":\"HostName=a;"
        "DeviceId=b;SharedAccessKey=ConnKey-abcdef\"}},\"settings\":{\"image\":\"m:1\","
        "\"createOptions\":\"{\\\"Env\\\":[\\\"API_TOKEN=CoToken-123\\\",\\\"LEVEL=3\\\"]}\"}}}}},"
        "\"$edgeHub\":{\"properties.desired\":{\"routes\":{\"r\":\"FROM /messages/* INTO "
        "$upstream\""
        "}}}}}";
    json_t *j = NULL;
    assert_int_equal(ljson_parse(manifest, strlen(manifest), &j, NULL), 0);
    struct redactor r;
    redactor_init(&r);
    redact_json(&r, j);
    char *out = json_dumps(j, JSON_COMPACT);
    assert_non_null(out);
    const char *gone[] = {"RegPass-9876", "EnvSecret-1", "ConnKey-abcdef", "CoToken-123"};
    for (size_t i = 0; i < ARRAY_SIZE(gone); i++)
        if (strstr(out, gone[i]))
            fail_msg("%s left in %s", gone[i], out);
    const char *kept[] = {
        "bob", "r.azurecr.io", "fast", "LEVEL=3", "FROM /messages/* INTO $upstream", "m:1"};
    for (size_t i = 0; i < ARRAY_SIZE(kept); i++)
        if (!strstr(out, kept[i]))
            fail_msg("%s lost from %s", kept[i], out);
    /* learned: the same secrets in a log line */
    assert_text(&r, "connecting with RegPass-9876 and EnvSecret-1",
                "connecting with <redacted> and <redacted>");
    assert_true(r.count >= 4);
    free(out);
    json_decref(j);
    redactor_clear(&r);
}

/* ------------------------------------------------------------------ a whole bundle */

struct entry {
    char name[256];
    char *data;
    size_t len;
};

static size_t read_bundle(const char *path, struct entry *v, size_t max)
{
    struct archive *a = archive_read_new();
    archive_read_support_filter_gzip(a);
    archive_read_support_format_tar(a);
    assert_int_equal(archive_read_open_filename(a, path, 10240), ARCHIVE_OK);
    struct archive_entry *e;
    size_t n = 0;
    while (n < max && archive_read_next_header(a, &e) == ARCHIVE_OK) {
        snprintf(v[n].name, sizeof(v[n].name), "%s", archive_entry_pathname(e));
        size_t len = (size_t)archive_entry_size(e);
        v[n].data = calloc(1, len + 1);
        assert_int_equal(archive_read_data(a, v[n].data, len), (la_ssize_t)len);
        v[n].len = len;
        n++;
    }
    archive_read_free(a);
    return n;
}

/* The bundle's entry whose name ends in suffix; the test fails when there is none. */
static const struct entry *find_entry(const struct entry *v, size_t n, const char *suffix)
{
    for (size_t i = 0; i < n; i++)
        if (lstr_endswith(v[i].name, suffix))
            return &v[i];
    fail_msg("no entry ending in %s in the bundle", suffix);
    abort(); /* not reached: tells the compiler the result is never NULL */
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    assert_int_equal(lfs_write_atomic(p, text, strlen(text), 0600), 0);
}

static void test_bundle_offline(void **state)
{
    char dir[] = "/tmp/ledge-test-support-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[512];
    snprintf(p, sizeof(p), "%s/state/process", dir);
    assert_int_equal(lfs_mkdir_p(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/run/hub", dir);
    assert_int_equal(lfs_mkdir_p(p, 0700), 0);
    const char *device_key = "ZGV2aWNla2V5ZGV2aWNla2V5ZGV2aWNla2V5MTIzNA==";
    const char *module_key = "bW9kdWxla2V5bW9kdWxla2V5bW9kdWxla2V5NDU2Nw==";
    char cfg[2048];
    snprintf(cfg, sizeof(cfg),
             "state_dir: %s/state\nrun_dir: %s/run\ndevice:\n  id: dev1\n"
             "  iothub_hostname: hub.example.net\n  key: %s\n"
             "engine:\n  uri: unix://%s/no-docker.sock\nvm:\n  dir: %s/vms\n",
             dir, dir, device_key, dir, dir);
    write_file(dir, "config.yaml", cfg);
    char runtime[1024];
    snprintf(runtime, sizeof(runtime),
             "{\"deviceId\":\"dev1\",\"device\":{\"auth\":\"sas\",\"key\":\"%s\"},"
             "\"modules\":{\"sensor\":{\"generationId\":\"g1\",\"key\":\"%s\"}}}",
             device_key, module_key);
    snprintf(p, sizeof(p), "%s/run", dir);
    write_file(p, "hub/runtime.json", runtime);
    snprintf(p, sizeof(p), "%s/state/process", dir);
    char hublog[512];
    snprintf(hublog, sizeof(hublog),
             "2024-01-01T00:00:00.000Z ledge-hub info conn: sensor connected\n"
             "a module printed its key %s\n",
             module_key);
    write_file(p, "edgeHub.log", hublog);
    write_file(p, "edgeHub.log.1", "2023-12-31T23:59:00.000Z ledge-hub info older line\n");

    char out[600];
    snprintf(out, sizeof(out), "%s/bundle.tar.gz", dir);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    char cfgpath[600], sock[600];
    snprintf(cfgpath, sizeof(cfgpath), "%s/config.yaml", dir);
    snprintf(sock, sizeof(sock), "%s/run/mgmt.sock", dir);
    struct support_options o = {
        .config_path = cfgpath, .mgmt_socket = sock, .ledged_stderr_fd = -1};
    json_t *index = NULL;
    struct lerr err = {0};
    assert_int_equal(support_bundle_write(&o, fd, &index, &err), 0);
    close(fd);
    assert_non_null(index);
    assert_true(lstr_startswith(ljson_str(index, "ledged"), "not answering"));

    struct entry v[64];
    size_t n = read_bundle(out, v, ARRAY_SIZE(v));
    assert_true(n >= 5);
    for (size_t i = 0; i < n; i++) {
        assert_true(lstr_startswith(v[i].name, "ledge-support-dev1-"));
        if (memmem(v[i].data, v[i].len, device_key, strlen(device_key)) ||
            memmem(v[i].data, v[i].len, module_key, strlen(module_key)))
            fail_msg("a key is in %s:\n%s", v[i].name, v[i].data);
    }
    const struct entry *e = find_entry(v, n, "/modules/edgeHub.log");
    assert_non_null(e);
    assert_non_null(strstr(e->data, "sensor connected"));
    assert_non_null(strstr(e->data, "older line"));
    assert_true(strstr(e->data, "older line") < strstr(e->data, "sensor connected"));
    assert_non_null(strstr(e->data, "printed its key <redacted>"));
    e = find_entry(v, n, "/config.json");
    assert_non_null(e);
    assert_non_null(strstr(e->data, "\"dev1\""));
    assert_non_null(find_entry(v, n, "/check.json"));
    assert_non_null(find_entry(v, n, "/host.json"));
    e = find_entry(v, n, "/index.json");
    assert_non_null(e);
    assert_non_null(strstr(e->data, "engine.json")); /* missing: no engine at that socket */
    for (size_t i = 0; i < n; i++)
        free(v[i].data);
    json_decref(index);
    char *rm[] = {"rm", "-rf", dir, NULL};
    int st;
    assert_int_equal(lproc_run_ok(&(struct lproc){.argv = rm, .in_fd = -1}, &st), 0);
}

static void test_proc(void **state)
{
    struct lbuf out = LBUF_INIT, err = LBUF_INIT;
    out.max = 5;
    char *argv[] = {"sh", "-c", "printf 0123456789; echo oops >&2; exit 3", NULL};
    int st;
    assert_int_equal(
        lproc_run(&(struct lproc){.argv = argv, .in_fd = -1, .out = &out, .err = &err}, &st), 0);
    assert_string_equal(out.data, "01234");
    assert_string_equal(err.data, "oops\n");
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    char *sleeper[] = {"sh", "-c", "sleep 30 & sleep 30", NULL};
    assert_int_equal(
        lproc_run(&(struct lproc){.argv = sleeper, .in_fd = -1, .timeout_ms = 200}, &st),
        -ETIMEDOUT);
    char *none[] = {"/nonexistent/program", NULL};
    assert_int_equal(lproc_run(&(struct lproc){.argv = none, .in_fd = -1}, &st), -ENOENT);
    lbuf_free(&out);
    lbuf_free(&err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names), cmocka_unit_test(test_values),
        cmocka_unit_test(test_text),  cmocka_unit_test(test_json),
        cmocka_unit_test(test_proc),  cmocka_unit_test(test_bundle_offline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
