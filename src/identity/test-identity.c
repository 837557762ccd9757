/* test-identity.c — unit tests for the identity layer: SAS tokens (known answer, SDK-style
 * tokens, every rejection), key storage and derivation, device identities, the edge CA (create,
 * load, issue, two-phase renewal, user CAs), encrypt/decrypt, and every workload API call and
 * error status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "identity/ca.h"
#include "crypt.h"
#include "identity/keys.h"
#include "identity/leaf.h"
#include "identity/sas.h"
#include "identity/workload.h"

#define HUB "myhub.azure-devices.net"
#define T0 1700000000LL

static const uint8_t key32[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                  16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *_h = (hay);                                                                    \
        if (!_h || !strstr(_h, (needle)))                                                          \
            fail_msg("'%s' does not contain '%s'", _h ? _h : "(null)", (needle));                  \
    } while (0)

/* ---- temp dirs ---------------------------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p);
}

static char *make_tmpdir(void)
{
    char *d = strdup("/tmp/ledge-identity-test-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void rm_tmpdir(char *d)
{
    nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
}

static mode_t file_mode(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* ---- SAS ----------------------------------------------------------------------------------- */

static const char *const hosts[] = {"gateway.local", HUB};

static void test_sas_known_answer(void **state)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(sas_token_make(HUB "/devices/dev1/modules/$edgeHub", key32, 32, T0, NULL, &b),
                     0);
    assert_string_equal(b.data, "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1"
                                "%2Fmodules%2F%24edgeHub&sig=yJ3Da8WxlaEarH3eLQjL4kr5ceG5BboIK5DN2"
                                "mr9DR8%3D&se=1700000000");
    struct lerr e = {0};
    assert_int_equal(sas_token_verify(b.data, hosts, 2, "dev1", "$edgeHub", key32, 32, T0 - 1, &e),
                     0);
    lbuf_reset(&b);
    assert_int_equal(sas_token_make(HUB "/devices/d", key32, 32, 5, "policy name", &b), 0);
    assert_true(lstr_endswith(b.data, "&se=5&skn=policy%20name"));
    lbuf_free(&b);
}

static void test_sas_make_verify(void **state)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(
        sas_token_make(HUB "/devices/Dev1/modules/Mod1", key32, 32, T0 + 3600, NULL, &b), 0);
    struct lerr e = {0};
    /* Hosts and ids compare case-insensitively. */
    const char *const upper[] = {"MYHUB.Azure-Devices.NET"};
    assert_int_equal(sas_token_verify(b.data, upper, 1, "dev1", "MOD1", key32, 32, T0, &e), 0);
    /* Made for the gateway host: accepted too. */
    lbuf_reset(&b);
    assert_int_equal(
        sas_token_make("gateway.local/devices/dev1/modules/m", key32, 32, T0 + 10, NULL, &b), 0);
    assert_int_equal(sas_token_verify(b.data, hosts, 2, "dev1", "m", key32, 32, T0, &e), 0);
    /* Device-scoped token. */
    lbuf_reset(&b);
    assert_int_equal(sas_token_make(HUB "/devices/dev1", key32, 32, T0 + 10, NULL, &b), 0);
    assert_int_equal(sas_token_verify(b.data, hosts, 2, "dev1", NULL, key32, 32, T0, &e), 0);
    lbuf_free(&b);
}

static void test_sas_node_sdk_style(void **state)
{
    /* As azure-iot-common makes them: sr, sig, skn, se order; '*' escaped lower-case ("%2a") by
     * encodeUriComponentStrict. The signature covers sr exactly as sent. */
    const char *tok = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2F"
                      "modules%2Fmod%2a1&sig=ik%2BXqW3gKAJ%2FQXO2XdZqoIIRssvYPxS0hBQiQ%2B%2BhDLY"
                      "%3D&skn=pol&se=1700000000";
    struct lerr e = {0};
    assert_int_equal(sas_token_verify(tok, hosts, 2, "dev1", "mod*1", key32, 32, T0 - 5, &e), 0);
    struct sas_token t;
    assert_int_equal(sas_token_parse(tok, strlen(tok), &t, &e), 0);
    assert_string_equal(t.sr_dec, HUB "/devices/dev1/modules/mod*1");
    assert_string_equal(t.skn, "pol");
    assert_string_equal(t.sig, "ik+XqW3gKAJ/QXO2XdZqoIIRssvYPxS0hBQiQ++hDLY=");
    assert_int_equal(t.se, 1700000000);
    sas_token_done(&t);
}

static void expect_verify_fail(const char *tok, const char *dev, const char *mod, const void *key,
                               uint64_t now, int code, const char *msg)
{
    struct lerr e = {0};
    int r = sas_token_verify(tok, hosts, 2, dev, mod, key, 32, now, &e);
    if (r != code)
        fail_msg("verify '%s': got %d (%s), want %d", tok, r, e.msg, code);
    assert_contains(e.msg, msg);
}

static void test_sas_verify_rejections(void **state)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(sas_token_make(HUB "/devices/dev1/modules/m1", key32, 32, T0, NULL, &b), 0);
    expect_verify_fail(b.data, "dev1", "m1", key32, T0, -EKEYEXPIRED, "expired at 1700000000");
    expect_verify_fail(b.data, "dev1", "m1", key32, T0 + 100, -EKEYEXPIRED, "expired");
    expect_verify_fail(b.data, "dev2", "m1", key32, T0 - 1, -EACCES, "is not for dev2/m1");
    expect_verify_fail(b.data, "dev1", "m2", key32, T0 - 1, -EACCES, "is not for dev1/m2");
    expect_verify_fail(b.data, "dev1", NULL, key32, T0 - 1, -EACCES, "is not for dev1");
    expect_verify_fail(b.data, "dev1/modules", "m1", key32, T0 - 1, -EINVAL, "invalid device");
    expect_verify_fail(b.data, "dev1", "", key32, T0 - 1, -EINVAL, "nothing to verify");
    uint8_t other[32];
    memset(other, 7, sizeof(other));
    expect_verify_fail(b.data, "dev1", "m1", other, T0 - 1, -EACCES, "signature does not match");

    lbuf_reset(&b);
    assert_int_equal(
        sas_token_make("evil.example/devices/dev1/modules/m1", key32, 32, T0, NULL, &b), 0);
    expect_verify_fail(b.data, "dev1", "m1", key32, T0 - 1, -EACCES,
                       "audience host 'evil.example' is not this hub or gateway");
    lbuf_reset(&b);
    /* A suffix or prefix of an accepted host is not accepted. */
    assert_int_equal(sas_token_make("x" HUB "/devices/dev1/modules/m1", key32, 32, T0, NULL, &b),
                     0);
    expect_verify_fail(b.data, "dev1", "m1", key32, T0 - 1, -EACCES, "audience host");
    lbuf_reset(&b);
    assert_int_equal(sas_token_make(HUB "/devices/dev1/modules/m1/", key32, 32, T0, NULL, &b), 0);
    expect_verify_fail(b.data, "dev1", "m1", key32, T0 - 1, -EACCES, "is not for");
    lbuf_reset(&b);
    assert_int_equal(sas_token_make(HUB, key32, 32, T0, NULL, &b), 0);
    expect_verify_fail(b.data, "dev1", "m1", key32, T0 - 1, -EACCES, "is not <host>/devices/<id>");
    lbuf_free(&b);

    expect_verify_fail("SharedAccessSignature sr=" HUB "%2Fdevices%2Fdev1%2Fmodules%2Fm1&sig=AAAA"
                       "&se=1800000000",
                       "dev1", "m1", key32, T0, -EACCES, "sig is not a base64 HMAC-SHA256");
    expect_verify_fail("SharedAccessSignature sr=" HUB "%2Fdevices%2Fdev1%2Fmodules%2Fm1&sig=%%%"
                       "&se=1800000000",
                       "dev1", "m1", key32, T0, -EINVAL, "malformed %-escape");
}

static void test_sas_parse_rejections(void **state)
{
    static const struct {
        const char *tok, *msg;
    } cases[] = {
        {"", "empty"},
        {"SharedAccessSignaturesr=a&sig=b&se=1", "does not start with"},
        {"sharedaccesssignature sr=a&sig=b&se=1", "does not start with"},
        {"Bearer abc", "does not start with"},
        {"SharedAccessSignature ", "empty field"},
        {"SharedAccessSignature sig=b&se=1", "missing sr"},
        {"SharedAccessSignature sr=a&se=1", "missing sig"},
        {"SharedAccessSignature sr=a&sig=b", "missing se"},
        {"SharedAccessSignature sr=a&sr=a&sig=b&se=1", "sr given more than once"},
        {"SharedAccessSignature sr=a&sig=b&se=1&se=1", "se given more than once"},
        {"SharedAccessSignature sr=a&sig=b&se=1&skn=x&skn=y", "skn given more than once"},
        {"SharedAccessSignature sr=a&sig=b&se=1&foo=1", "unknown field 'foo'"},
        {"SharedAccessSignature sr=a&SIG=b&se=1", "unknown field 'SIG'"},
        {"SharedAccessSignature sr=a&sig&se=1", "field 'sig' has no '='"},
        {"SharedAccessSignature sr=&sig=b&se=1", "sr is empty"},
        {"SharedAccessSignature sr=a&sig=b&se=", "se is empty"},
        {"SharedAccessSignature sr=a&&sig=b&se=1", "empty field"},
        {"SharedAccessSignature sr=a&sig=b&se=1&", "empty field"},
        {"SharedAccessSignature &sr=a&sig=b&se=1", "empty field"},
        {"SharedAccessSignature =x&sr=a&sig=b&se=1", "unknown field ''"},
        {"SharedAccessSignature sr=a&sig=b&se=-1", "plain decimal"},
        {"SharedAccessSignature sr=a&sig=b&se=+1", "plain decimal"},
        {"SharedAccessSignature sr=a&sig=b&se=0123", "plain decimal"},
        {"SharedAccessSignature sr=a&sig=b&se=12a", "plain decimal"},
        {"SharedAccessSignature sr=a&sig=b&se=1.5", "plain decimal"},
        {"SharedAccessSignature sr=a&sig=b&se=18446744073709551616", "plain decimal"},
        {"SharedAccessSignature sr=a&sig=b&se=9999999999999999999", "out of range"},
        {"SharedAccessSignature sr=a%zz&sig=b&se=1", "sr has a malformed %-escape"},
        {"SharedAccessSignature sr=a%2&sig=b&se=1", "sr has a malformed %-escape"},
        {"SharedAccessSignature sr=a%00b&sig=b&se=1", "sr contains a control character"},
        {"SharedAccessSignature sr=a%0Ab&sig=b&se=1", "control character"},
        {"SharedAccessSignature sr=a&sig=%&se=1", "sig has a malformed %-escape"},
        {"SharedAccessSignature sr=a b&sig=b&se=1", "whitespace, control or non-ASCII"},
        {"SharedAccessSignature  sr=a&sig=b&se=1", "whitespace"},
        {"SharedAccessSignature sr=a\t&sig=b&se=1", "whitespace"},
        {"SharedAccessSignature sr=\xc3\xa9&sig=b&se=1", "non-ASCII"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct sas_token t;
        struct lerr e = {0};
        int r = sas_token_parse(cases[i].tok, strlen(cases[i].tok), &t, &e);
        if (r != -EINVAL)
            fail_msg("case %zu '%s': parsed (%d)", i, cases[i].tok, r);
        assert_contains(e.msg, cases[i].msg);
    }
    /* Embedded NUL (an MQTT password is a byte string). */
    struct sas_token t;
    struct lerr e = {0};
    assert_int_equal(sas_token_parse("SharedAccessSignature sr=a\0&sig=b&se=1", 38, &t, &e),
                     -EINVAL);
    assert_contains(e.msg, "control");
    /* Length bound. */
    char *big = malloc(SAS_TOKEN_MAX + 2);
    memset(big, 'a', SAS_TOKEN_MAX + 1);
    memcpy(big, "SharedAccessSignature sr=", 25);
    big[SAS_TOKEN_MAX + 1] = 0;
    assert_int_equal(sas_token_parse(big, strlen(big), &t, &e), -EINVAL);
    assert_contains(e.msg, "longer than 4096");
    expect_verify_fail(big, "d", "m", key32, 0, -EINVAL, "longer than");
    free(big);
    /* Accepted: fields in any order, se = 0, the largest se. */
    const char *ok = "SharedAccessSignature se=9223372036854775807&skn=k%20n&sig=a%2Bb&sr=h%2Fx";
    assert_int_equal(sas_token_parse(ok, strlen(ok), &t, &e), 0);
    assert_int_equal(t.se, INT64_MAX);
    assert_string_equal(t.sr, "h%2Fx");
    assert_string_equal(t.sr_dec, "h/x");
    assert_string_equal(t.sig, "a+b");
    assert_string_equal(t.skn, "k n");
    sas_token_done(&t);
    ok = "SharedAccessSignature sr=a&sig=b&se=0";
    assert_int_equal(sas_token_parse(ok, strlen(ok), &t, &e), 0);
    assert_int_equal(t.se, 0);
    sas_token_done(&t);
}

/* ---- keys and device identity -------------------------------------------------------------- */

static void hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static struct identity_keys *test_keys(void)
{
    uint8_t secret[32];
    memset(secret, 0x42, sizeof(secret));
    struct identity_keys *k = NULL;
    assert_int_equal(identity_keys_from_secret(secret, sizeof(secret), &k), 0);
    return k;
}

static void test_module_keys(void **state)
{
    _cleanup_(identity_keys_freep) struct identity_keys *k = test_keys();
    uint8_t a[32], b[32];
    char h[65];
    /* Known answers: HMAC-SHA256(0x42 * 32, label 0 dev1 0 mod1 0 gen1). */
    assert_int_equal(identity_module_key(k, "dev1", "mod1", "gen1", a), 0);
    hex(a, 32, h);
    assert_string_equal(h, "f095092a09c381aadf90835d7fca2a4ab72ed0f1aa4a495946b65ac6214f6ed4");
    assert_int_equal(identity_module_crypt_key(k, "dev1", "mod1", "gen1", b), 0);
    hex(b, 32, h);
    assert_string_equal(h, "9f4e8fbdd306839b843644c60b58909faecd57bef318433fd7075badb4bca34a");
    /* A new generation, another module or device: another key. */
    assert_int_equal(identity_module_key(k, "dev1", "mod1", "gen2", b), 0);
    assert_memory_not_equal(a, b, 32);
    assert_int_equal(identity_module_key(k, "dev1", "mod2", "gen1", b), 0);
    assert_memory_not_equal(a, b, 32);
    assert_int_equal(identity_module_key(k, "dev2", "mod1", "gen1", b), 0);
    assert_memory_not_equal(a, b, 32);
    /* Unambiguous encoding: moving a character across the boundary changes the key. */
    assert_int_equal(identity_module_key(k, "dev1", "mod1g", "en1", b), 0);
    assert_memory_not_equal(a, b, 32);
    char long_id[IDENTITY_ID_MAX + 2];
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = 0;
    assert_int_equal(identity_module_key(k, "dev1", "", "g", b), -EINVAL);
    assert_int_equal(identity_module_key(k, "dev1", long_id, "g", b), -EINVAL);
    assert_int_equal(identity_module_key(k, NULL, "m", "g", b), -EINVAL);
    uint8_t small[3] = {0};
    struct identity_keys *bad = NULL;
    assert_int_equal(identity_keys_from_secret(small, 3, &bad), -EINVAL);

    char g1[IDENTITY_GENID_SIZE], g2[IDENTITY_GENID_SIZE];
    assert_int_equal(identity_new_generation_id(g1), 0);
    assert_int_equal(identity_new_generation_id(g2), 0);
    assert_int_equal(strlen(g1), 32);
    assert_int_equal(strspn(g1, "0123456789abcdef"), 32);
    assert_string_not_equal(g1, g2);
    assert_true(identity_id_valid(g1));

    assert_true(identity_id_valid("$edgeHub"));
    assert_true(identity_id_valid("a-b.c%d_e*f?g!h(i)j,k:l=m@n$o'p"));
    assert_false(identity_id_valid(""));
    assert_false(identity_id_valid("a/b"));
    assert_false(identity_id_valid("a b"));
    assert_false(identity_id_valid(long_id));
}

/* The credentials `ledge token` hands out: the hub's verifier accepts the token with the key of
 * that generation only; client id and user name are the IoT Hub MQTT forms. */
static void test_module_credentials(void **state)
{
    _cleanup_(identity_keys_freep) struct identity_keys *k = test_keys();
    struct identity_module_credentials c;
    assert_int_equal(identity_module_credentials(k, HUB, "dev1", "mod1", "gen1", T0 + 60, &c), 0);
    assert_string_equal(c.client_id, "dev1/mod1");
    assert_string_equal(c.username, HUB "/dev1/mod1/?api-version=2021-04-12");
    assert_int_equal(c.expiry, T0 + 60);
    uint8_t key[IDENTITY_MODULE_KEY_LEN], other[IDENTITY_MODULE_KEY_LEN];
    assert_int_equal(identity_module_key(k, "dev1", "mod1", "gen1", key), 0);
    assert_int_equal(identity_module_key(k, "dev1", "mod1", "gen2", other), 0);
    struct lerr e = {0};
    assert_int_equal(sas_token_verify(c.token, hosts, 2, "dev1", "mod1", key, sizeof(key), T0, &e),
                     0);
    assert_int_equal(
        sas_token_verify(c.token, hosts, 2, "dev1", "mod1", other, sizeof(other), T0, &e), -EACCES);
    assert_int_equal(
        sas_token_verify(c.token, hosts, 2, "dev1", "mod1", key, sizeof(key), T0 + 61, &e),
        -EKEYEXPIRED);
    identity_module_credentials_clear(&c);
    assert_null(c.token);
    identity_module_credentials_clear(NULL);
    /* Refused: what the module key refuses, and no host; ret untouched. */
    struct identity_module_credentials untouched = {.client_id = (char *)"x"};
    assert_int_equal(identity_module_credentials(k, HUB, "dev1", "", "g", T0, &untouched), -EINVAL);
    assert_int_equal(identity_module_credentials(k, "", "dev1", "m", "g", T0, &untouched), -EINVAL);
    assert_string_equal(untouched.client_id, "x");
}

static void test_master_key_storage(void **state)
{
    char *dir = make_tmpdir();
    struct lerr e = {0};
    struct identity_keys *k1 = NULL, *k2 = NULL;
    assert_int_equal(identity_keys_load_or_create(dir, &k1, &e), 0);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/identity/master.key", dir);
    assert_int_equal(file_mode(path), 0600);
    char idir[PATH_MAX];
    snprintf(idir, sizeof(idir), "%s/identity", dir);
    assert_int_equal(file_mode(idir), 0700);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 32);
    /* Second start: the same secret, so the same module keys. */
    assert_int_equal(identity_keys_load_or_create(dir, &k2, &e), 0);
    uint8_t a[32], b[32];
    assert_int_equal(identity_module_key(k1, "d", "m", "g", a), 0);
    assert_int_equal(identity_module_key(k2, "d", "m", "g", b), 0);
    assert_memory_equal(a, b, 32);
    identity_keys_free(k2);
    k2 = NULL;

    /* Readable by others: refused, with the reason. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(identity_keys_load_or_create(dir, &k2, &e), -EPERM);
    assert_contains(e.msg, "mode 0644 lets others read the master secret");
    assert_int_equal(chmod(path, 0600), 0);
    /* Wrong size. */
    assert_int_equal(lfs_write_atomic(path, "short", 5, 0600), 0);
    assert_int_equal(identity_keys_load_or_create(dir, &k2, &e), -EINVAL);
    assert_contains(e.msg, "5 bytes, expected 32");
    /* Not a regular file. */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(identity_keys_load_or_create(dir, &k2, &e), -EINVAL);
    assert_contains(e.msg, "not a regular file");
    assert_int_equal(rmdir(path), 0);
    /* Removed: a new secret, new keys. */
    assert_int_equal(identity_keys_load_or_create(dir, &k2, &e), 0);
    assert_int_equal(identity_module_key(k2, "d", "m", "g", b), 0);
    assert_memory_not_equal(a, b, 32);
    identity_keys_free(k1);
    identity_keys_free(k2);
    rm_tmpdir(dir);
}

static void test_connection_string(void **state)
{
    struct lerr e = {0};
    struct identity_device *d = NULL;
    assert_int_equal(identity_device_from_connection_string(
                         "DeviceId=dev1;SharedAccessKey=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
                         "=;HostName=" HUB ";GatewayHostName=parent.local",
                         &d, &e),
                     0);
    assert_string_equal(d->hub_hostname, HUB);
    assert_string_equal(d->device_id, "dev1");
    assert_string_equal(d->gateway_hostname, "parent.local");
    assert_int_equal(d->auth, IDENTITY_AUTH_SAS);
    assert_int_equal(d->keylen, 32);
    assert_memory_equal(d->key, key32, 32);
    /* A device token made with it verifies against the device scope. */
    struct lbuf b = LBUF_INIT;
    assert_int_equal(identity_device_sas_token(d, T0 + 60, &b), 0);
    assert_int_equal(sas_token_verify(b.data, hosts, 2, "dev1", NULL, key32, 32, T0, &e), 0);
    lbuf_free(&b);
    identity_device_free(d);

    static const struct {
        const char *cs, *msg;
    } bad[] = {
        {"", "empty"},
        {"HostName=" HUB ";DeviceId=d", "missing SharedAccessKey"},
        {"DeviceId=d;SharedAccessKey=AAAA", "missing HostName"},
        {"HostName=" HUB ";SharedAccessKey=AAAA", "missing DeviceId"},
        {"HostName=" HUB ";DeviceId=d;SharedAccessKey=AAAA;Foo=1", "unknown field 'Foo'"},
        {"HostName=" HUB ";DeviceId=d;DeviceId=e;SharedAccessKey=AAAA", "DeviceId given twice"},
        {"HostName=" HUB ";DeviceId=d;ModuleId=m;SharedAccessKey=AAAA", "module connection"},
        {"HostName=" HUB ";SharedAccessKeyName=iothubowner;SharedAccessKey=AAAA", "policy"},
        {"HostName=" HUB ";DeviceId=d;x509=true", "x509"},
        {"HostName=" HUB ";DeviceId=d;SharedAccessKey=not base64!", "not valid base64"},
        {"HostName=" HUB ";DeviceId=d;SharedAccessKey=", "device key is missing"},
        {"HostName=nodot;DeviceId=d;SharedAccessKey=AAAA", "not a fully qualified host name"},
        {"HostName=" HUB ";DeviceId=a/b;SharedAccessKey=AAAA", "device id 'a/b' is not valid"},
        {"HostName=" HUB ";DeviceId=d;SharedAccessKey=AAAA;GatewayHostName=bad host",
         "GatewayHostName"},
        {"HostName=" HUB ";garbage;DeviceId=d", "expected Name=value"},
        {"=x;HostName=" HUB, "expected Name=value"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        e = (struct lerr){0};
        d = NULL;
        if (identity_device_from_connection_string(bad[i].cs, &d, &e) >= 0)
            fail_msg("case %zu '%s' accepted", i, bad[i].cs);
        assert_null(d);
        assert_contains(e.msg, bad[i].msg);
    }
    assert_int_equal(identity_device_from_key(HUB, "dev1", "AAECAw==", &d, &e), 0);
    assert_int_equal(d->keylen, 4);
    /* a cloud module identity's key: HMAC-SHA256(device key, module id) (docs/upstream.md) */
    static const uint8_t want[32] = {0xfe, 0x75, 0x06, 0x00, 0xf3, 0x34, 0x29, 0xc8,
                                     0xa9, 0xf1, 0xb4, 0xf3, 0x1d, 0xe8, 0x7b, 0xea,
                                     0x54, 0x9c, 0x74, 0x4d, 0x87, 0xc0, 0x79, 0x8c,
                                     0xb4, 0xc1, 0x6b, 0x48, 0xf3, 0x8b, 0x35, 0x63};
    uint8_t key[IDENTITY_MODULE_KEY_LEN];
    assert_int_equal(identity_cloud_module_key(d, "$edgeAgent", key), 0);
    assert_memory_equal(key, want, sizeof(want));
    assert_int_equal(identity_cloud_module_key(d, "", key), -EINVAL);
    struct lbuf b64 = LBUF_INIT;
    assert_int_equal(identity_cloud_module_key_b64(d, "$edgeAgent", &b64), 0);
    assert_string_equal(b64.data, "/nUGAPM0Kcip8bTzHeh76lScdE2HwHmMtMFrSPOLNWM=");
    lbuf_free(&b64);
    assert_int_equal(identity_cloud_module_key_b64(d, "", &b64), -EINVAL);
    lbuf_free(&b64);
    identity_device_free(d);
    /* a child edge device's module keys, on its parent: the same derivation from the key the
     * parent holds for it (docs/nested.md), of either slot */
    const char *k16[2] = {"AAECAwQFBgcICQoLDA0ODw==", "EBESExQVFhcYGRobHB0eHw=="};
    struct identity_leaf_spec ls = {
        .device_id = "child", .primary_key = k16[0], .secondary_key = k16[1]};
    struct identity_leaf *l = NULL;
    assert_int_equal(identity_leaf_new(&ls, 0, &l, &e), 0);
    uint8_t want2[IDENTITY_MODULE_KEY_LEN], got[IDENTITY_MODULE_KEY_LEN];
    for (int slot = 0; slot < 2; slot++) {
        assert_int_equal(identity_device_from_key(HUB, "child", k16[slot], &d, &e), 0);
        assert_int_equal(identity_cloud_module_key(d, "$edgeHub", want2), 0);
        identity_device_free(d);
        assert_int_equal(identity_leaf_module_key(l, slot, "$edgeHub", got), 0);
        assert_memory_equal(got, want2, sizeof(got));
    }
    assert_int_equal(identity_leaf_module_key(l, 2, "$edgeHub", got), -EOPNOTSUPP);
    assert_int_equal(identity_leaf_module_key(l, 0, "", got), -EINVAL);
    identity_leaf_free(l);
    assert_int_equal(identity_device_from_key(HUB, "dev1", "AAECAw", &d, &e), -EINVAL);
    assert_contains(e.msg, "not valid base64");
}

/* ---- CA helpers ---------------------------------------------------------------------------- */

static struct ca *open_mem_ca(int64_t now, int64_t lifetime)
{
    struct ca_config cfg = {.device_id = "dev1", .lifetime_s = lifetime};
    struct lerr e = {0};
    struct ca *ca = NULL;
    if (ca_open(&cfg, now, &ca, &e) < 0)
        fail_msg("ca_open: %s", e.msg);
    return ca;
}

static STACK_OF(X509) * certs_of(const char *pem)
{
    STACK_OF(X509) *sk = NULL;
    struct lerr e = {0};
    if (ca_pem_read_certs(pem, strlen(pem), &sk, &e) < 0)
        fail_msg("PEM: %s", e.msg);
    return sk;
}

/* X509_verify_cert of chain[0] (untrusted rest) against a trust bundle PEM, at a given time. */
static int verify_at(const char *chain_pem, const char *bundle_pem, int64_t at, int purpose)
{
    STACK_OF(X509) *chain = certs_of(chain_pem), *trust = certs_of(bundle_pem);
    X509_STORE *store = X509_STORE_new();
    for (int i = 0; i < sk_X509_num(trust); i++)
        X509_STORE_add_cert(store, sk_X509_value(trust, i));
    X509 *leaf = sk_X509_shift(chain);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, chain);
    X509_STORE_CTX_set_time(ctx, 0, (time_t)at);
    if (purpose)
        X509_STORE_CTX_set_purpose(ctx, purpose);
    int ok = X509_verify_cert(ctx);
    int err = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(leaf);
    ca_cert_stack_free(chain);
    ca_cert_stack_free(trust);
    ERR_clear_error();
    return ok == 1 ? 0 : err;
}

static char *bundle_of(struct ca *ca)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(ca_trust_bundle(ca, &b), 0);
    return lbuf_steal(&b);
}

static int count_certs(const char *pem)
{
    STACK_OF(X509) *sk = certs_of(pem);
    int n = sk_X509_num(sk);
    ca_cert_stack_free(sk);
    return n;
}

/* Sorted SAN list "DNS:x,IP:1.2.3.4,URI:..." of a PEM's first certificate. */
static char *sans_of(const char *pem)
{
    STACK_OF(X509) *sk = certs_of(pem);
    X509 *x = sk_X509_value(sk, 0);
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    struct lbuf b = LBUF_INIT;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        int type;
        ASN1_STRING *v = GENERAL_NAME_get0_value(g, &type);
        if (i)
            lbuf_putc(&b, ',');
        if (type == GEN_IPADD) {
            const unsigned char *p = ASN1_STRING_get0_data(v);
            if (ASN1_STRING_length(v) == 4)
                lbuf_printf(&b, "IP:%u.%u.%u.%u", p[0], p[1], p[2], p[3]);
            else
                lbuf_printf(&b, "IP6:%02x%02x..%02x", p[0], p[1], p[15]);
        } else {
            lbuf_printf(&b, "%s:%.*s",
                        type == GEN_DNS   ? "DNS"
                        : type == GEN_URI ? "URI"
                                          : "?",
                        ASN1_STRING_length(v), ASN1_STRING_get0_data(v));
        }
    }
    GENERAL_NAMES_free(gens);
    ca_cert_stack_free(sk);
    return lbuf_steal(&b);
}

static char *cn_of(const char *pem)
{
    STACK_OF(X509) *sk = certs_of(pem);
    char buf[128] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(sk_X509_value(sk, 0)), NID_commonName, buf,
                              sizeof(buf));
    ca_cert_stack_free(sk);
    return strdup(buf);
}

static uint32_t xku_of(const char *pem)
{
    STACK_OF(X509) *sk = certs_of(pem);
    uint32_t x = X509_get_extended_key_usage(sk_X509_value(sk, 0));
    ca_cert_stack_free(sk);
    return x;
}

/* ---- CA ------------------------------------------------------------------------------------ */

static void test_ca_create_and_issue(void **state)
{
    char *dir = make_tmpdir();
    char cdir[1024], path[PATH_MAX];
    snprintf(cdir, sizeof(cdir), "%s/certs", dir);
    struct ca_config cfg = {.dir = cdir, .device_id = "dev1", .lifetime_s = 86400};
    struct lerr e = {0};
    struct ca *ca = NULL;
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), 0);
    assert_false(ca_is_user_provided(ca));
    assert_int_equal(ca_not_after(ca), T0 + 86400);
    snprintf(path, sizeof(path), "%s/edge-ca.pem", cdir);
    assert_int_equal(file_mode(path), 0600);
    assert_int_equal(file_mode(cdir), 0700);
    snprintf(path, sizeof(path), "%s/edge-ca.crt", cdir);
    assert_int_equal(access(path, F_OK), 0);
    char cn[128];
    X509_NAME_get_text_by_NID(X509_get_subject_name(ca_cert(ca)), NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, "ledge edge CA dev1");
    assert_true(X509_check_ca(ca_cert(ca)) >= 1);
    EVP_PKEY *pub = X509_get0_pubkey(ca_cert(ca));
    assert_int_equal(EVP_PKEY_get_id(pub), EVP_PKEY_EC);

    /* Reopen: the same CA. */
    struct ca *ca2 = NULL;
    assert_int_equal(ca_open(&cfg, T0 + 10, &ca2, &e), 0);
    assert_int_equal(X509_cmp(ca_cert(ca), ca_cert(ca2)), 0);
    ca_free(ca2);

    /* Server certificate: SANs, EKU, chain verifies against the bundle, lifetime capped. */
    const char *dns[] = {"gateway.local", "edgeHub"};
    const char *ips[] = {"10.0.0.1", "::1"};
    struct ca_leaf_request req = {.kind = CA_LEAF_SERVER,
                                  .common_name = "gateway.local",
                                  .dns = dns,
                                  .n_dns = 2,
                                  .ips = ips,
                                  .n_ips = 2,
                                  .lifetime_s = 10 * 86400};
    struct ca_leaf leaf = {0};
    assert_int_equal(ca_issue(ca, &req, T0 + 100, &leaf, &e), 0);
    assert_int_equal(leaf.not_after, T0 + 86400); /* capped by the CA */
    assert_contains(leaf.key_pem, "-----BEGIN PRIVATE KEY-----");
    assert_int_equal(count_certs(leaf.cert_pem), 2);
    char *bundle = bundle_of(ca);
    assert_int_equal(count_certs(bundle), 1);
    assert_int_equal(verify_at(leaf.cert_pem, bundle, T0 + 200, X509_PURPOSE_SSL_SERVER), 0);
    assert_int_equal(verify_at(leaf.cert_pem, bundle, T0 + 86401, 0), X509_V_ERR_CERT_HAS_EXPIRED);
    char *s = sans_of(leaf.cert_pem);
    assert_string_equal(s, "DNS:gateway.local,DNS:edgeHub,IP:10.0.0.1,IP6:0000..01");
    free(s);
    s = cn_of(leaf.cert_pem);
    assert_string_equal(s, "gateway.local");
    free(s);
    assert_true(xku_of(leaf.cert_pem) & XKU_SSL_SERVER);
    assert_false(xku_of(leaf.cert_pem) & XKU_SSL_CLIENT);
    /* The key is the certificate's. */
    BIO *kb = BIO_new_mem_buf(leaf.key_pem, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    STACK_OF(X509) *sk = certs_of(leaf.cert_pem);
    assert_int_equal(X509_check_private_key(sk_X509_value(sk, 0), k), 1);
    assert_true(X509_check_ca(sk_X509_value(sk, 0)) == 0);
    ca_cert_stack_free(sk);
    EVP_PKEY_free(k);
    BIO_free(kb);
    ca_leaf_done(&leaf);

    /* Client (module identity) certificate, with the default lifetime capped too. */
    struct ca_leaf_request creq = {.kind = CA_LEAF_CLIENT,
                                   .common_name = "mod1",
                                   .uri = "azureiot://" HUB "/devices/dev1/modules/mod1",
                                   .lifetime_s = 3600};
    assert_int_equal(ca_issue(ca, &creq, T0 + 100, &leaf, &e), 0);
    assert_int_equal(leaf.not_after, T0 + 3700);
    assert_int_equal(verify_at(leaf.cert_pem, bundle, T0 + 200, X509_PURPOSE_SSL_CLIENT), 0);
    s = sans_of(leaf.cert_pem);
    assert_string_equal(s, "URI:azureiot://" HUB "/devices/dev1/modules/mod1");
    free(s);
    assert_true(xku_of(leaf.cert_pem) & XKU_SSL_CLIENT);
    ca_leaf_done(&leaf);
    free(bundle);

    /* Bad requests, each with its message. */
    static const struct {
        const char *cn, *dns, *ip, *uri, *msg;
    } bad[] = {
        {"", NULL, NULL, NULL, "common name must be 1-64"},
        {"a\nb", NULL, NULL, NULL, "common name"},
        {"x", "a b", NULL, NULL, "'a b' is not a valid DNS name"},
        {"x", "*.example.com", NULL, NULL, "not a valid DNS name"},
        {"x", "-a.com", NULL, NULL, "not a valid DNS name"},
        {"x", "a..com", NULL, NULL, "not a valid DNS name"},
        {"x", "a.com.", NULL, NULL, "not a valid DNS name"},
        {"x", NULL, "300.1.1.1", NULL, "not a valid IP address"},
        {"x", NULL, "1.2.3", NULL, "not a valid IP address"},
        {"x", NULL, NULL, "a b", "URI name"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct ca_leaf_request r = {.kind = CA_LEAF_SERVER,
                                    .common_name = bad[i].cn,
                                    .dns = &bad[i].dns,
                                    .n_dns = bad[i].dns ? 1 : 0,
                                    .ips = &bad[i].ip,
                                    .n_ips = bad[i].ip ? 1 : 0,
                                    .uri = bad[i].uri};
        e = (struct lerr){0};
        assert_int_equal(ca_issue(ca, &r, T0, &leaf, &e), -EINVAL);
        assert_contains(e.msg, bad[i].msg);
    }
    char longcn[70];
    memset(longcn, 'a', 65);
    longcn[65] = 0;
    struct ca_leaf_request r = {.kind = CA_LEAF_SERVER, .common_name = longcn};
    assert_int_equal(ca_issue(ca, &r, T0, &leaf, &e), -EINVAL);
    const char *many[CA_SAN_MAX + 1];
    for (size_t i = 0; i < ARRAY_SIZE(many); i++)
        many[i] = "a.example";
    r = (struct ca_leaf_request){
        .kind = CA_LEAF_SERVER, .common_name = "x", .dns = many, .n_dns = ARRAY_SIZE(many)};
    assert_int_equal(ca_issue(ca, &r, T0, &leaf, &e), -EINVAL);
    assert_contains(e.msg, "more than 16");
    /* Near or past the CA's end: refused. */
    r = (struct ca_leaf_request){.kind = CA_LEAF_SERVER, .common_name = "x"};
    assert_int_equal(ca_issue(ca, &r, T0 + 86400 - 30, &leaf, &e), -EKEYEXPIRED);
    assert_contains(e.msg, "edge CA expires");

    ca_free(ca);
    /* A CA found expired at start is replaced at once. */
    assert_int_equal(ca_open(&cfg, T0 + 86400, &ca2, &e), 0);
    assert_int_equal(ca_not_after(ca2), T0 + 2 * 86400);
    ca_free(ca2);

    /* A key file others can read is refused. */
    snprintf(path, sizeof(path), "%s/edge-ca.pem", cdir);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(ca_open(&cfg, T0 + 86400, &ca2, &e), -EPERM);
    assert_contains(e.msg, "mode 0600");
    assert_int_equal(chmod(path, 0600), 0);
    /* A damaged one is refused too (not silently replaced). */
    assert_int_equal(lfs_write_atomic(path, "garbage", 7, 0600), 0);
    assert_int_equal(ca_open(&cfg, T0 + 86400, &ca2, &e), -EINVAL);
    assert_contains(e.msg, "not a private key followed by a certificate");

    /* Inconsistent renewal settings. */
    struct ca_config badcfg = {.device_id = "d", .lifetime_s = 1000, .renew_threshold_s = 1000};
    assert_int_equal(ca_open(&badcfg, T0, &ca2, &e), -EINVAL);
    assert_contains(e.msg, "renewal threshold");
    rm_tmpdir(dir);
}

static void test_ca_renewal_overlap(void **state)
{
    char *dir = make_tmpdir();
    struct ca_config cfg = {.dir = dir,
                            .device_id = "dev1",
                            .lifetime_s = 1000,
                            .renew_threshold_s = 200,
                            .overlap_s = 100};
    struct lerr e = {0};
    struct ca *ca = NULL;
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), 0);
    X509 *old = X509_dup(ca_cert(ca));
    assert_int_equal(ca_renew(ca, T0 + 500, &e), 0);
    assert_false(ca_needs_renewal(ca_cert(ca), T0 + 799, 200));
    assert_true(ca_needs_renewal(ca_cert(ca), T0 + 800, 200));

    /* A leaf served before renewal. */
    struct ca_leaf_request req = {.kind = CA_LEAF_SERVER,
                                  .common_name = "gw.local",
                                  .dns = (const char *[]){"gw.local"},
                                  .n_dns = 1};
    struct ca_leaf before = {0};
    assert_int_equal(ca_issue(ca, &req, T0 + 790, &before, &e), 0);
    assert_int_equal(before.not_after, T0 + 1000);

    /* Phase 1, announce: the next CA joins the bundle; leaves still come from the old one. */
    assert_int_equal(ca_renew(ca, T0 + 850, &e), CA_RENEW_ANNOUNCED);
    char *bundle = bundle_of(ca);
    assert_int_equal(count_certs(bundle), 2);
    assert_int_equal(X509_cmp(ca_cert(ca), old), 0);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/edge-ca-next.pem", dir);
    assert_int_equal(file_mode(path), 0600);
    free(bundle);
    assert_int_equal(ca_renew(ca, T0 + 900, &e), 0); /* overlap not over yet */

    /* A restart during the overlap keeps the announced CA. */
    struct ca *re = NULL;
    assert_int_equal(ca_open(&cfg, T0 + 900, &re, &e), 0);
    bundle = bundle_of(re);
    assert_int_equal(count_certs(bundle), 2);
    free(bundle);
    ca_free(re);

    /* Phase 2, switch: new leaves from the new CA; the old CA stays trusted, so the leaf issued
     * before renewal still verifies against the bundle until it expires with its CA. */
    assert_int_equal(ca_renew(ca, T0 + 950, &e), CA_RENEW_SWITCHED);
    assert_int_not_equal(X509_cmp(ca_cert(ca), old), 0);
    assert_int_equal(ca_not_after(ca), T0 + 850 + 1000);
    bundle = bundle_of(ca);
    assert_int_equal(count_certs(bundle), 2);
    assert_int_equal(verify_at(before.cert_pem, bundle, T0 + 990, 0), 0);
    struct ca_leaf after = {0};
    assert_int_equal(ca_issue(ca, &req, T0 + 960, &after, &e), 0);
    assert_int_equal(verify_at(after.cert_pem, bundle, T0 + 990, 0), 0);
    STACK_OF(X509) *sk = certs_of(after.cert_pem);
    assert_int_equal(X509_check_issued(ca_cert(ca), sk_X509_value(sk, 0)), X509_V_OK);
    ca_cert_stack_free(sk);
    snprintf(path, sizeof(path), "%s/edge-ca-next.pem", dir);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/edge-ca-previous.crt", dir);
    assert_int_equal(access(path, F_OK), 0);
    free(bundle);

    /* Restart after the switch: same current CA, old one still in the bundle. */
    assert_int_equal(ca_open(&cfg, T0 + 970, &re, &e), 0);
    assert_int_equal(X509_cmp(ca_cert(re), ca_cert(ca)), 0);
    bundle = bundle_of(re);
    assert_int_equal(count_certs(bundle), 2);
    free(bundle);
    ca_free(re);

    /* The old CA (and with it every leaf it signed) expires: it leaves the bundle. */
    assert_int_equal(ca_renew(ca, T0 + 1000, &e), CA_RENEW_PRUNED);
    bundle = bundle_of(ca);
    assert_int_equal(count_certs(bundle), 1);
    assert_int_equal(verify_at(after.cert_pem, bundle, T0 + 1000, 0), 0);
    assert_int_not_equal(verify_at(before.cert_pem, bundle, T0 + 999, 0), 0);
    free(bundle);
    assert_int_equal(access(path, F_OK), -1);

    /* Expiry while stopped (no overlap possible): a new CA at once. */
    assert_int_equal(ca_open(&cfg, T0 + 5000, &re, &e), 0);
    assert_int_equal(ca_not_after(re), T0 + 6000);
    ca_free(re);

    ca_leaf_done(&before);
    ca_leaf_done(&after);
    X509_free(old);
    ca_free(ca);
    rm_tmpdir(dir);
}

static void test_ca_leaf_ensure(void **state)
{
    char *dir = make_tmpdir();
    struct ca_config cfg = {.dir = dir,
                            .device_id = "dev1",
                            .lifetime_s = 10000,
                            .renew_threshold_s = 2000,
                            .overlap_s = 100};
    struct lerr e = {0};
    struct ca *ca = NULL;
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), 0);
    char cert[PATH_MAX], key[PATH_MAX];
    snprintf(cert, sizeof(cert), "%s/hub.crt", dir);
    snprintf(key, sizeof(key), "%s/hub.key", dir);
    const char *dns[] = {"gw.local"};
    const char *ips[] = {"192.168.1.2"};
    struct ca_leaf_request req = {.kind = CA_LEAF_SERVER,
                                  .common_name = "gw.local",
                                  .dns = dns,
                                  .n_dns = 1,
                                  .ips = ips,
                                  .n_ips = 1,
                                  .lifetime_s = 1000};
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0, 0, &e), 1);
    assert_int_equal(file_mode(key), 0600);
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 10, 0, &e), 0);
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 700, 0, &e), 0);
    /* Within a fifth of its life of expiry: re-issued. */
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 900, 0, &e), 1);
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 901, 0, &e), 0);
    /* Names changed (config edit): re-issued. Case of DNS names does not matter. */
    const char *dns2[] = {"GW.local"};
    req.dns = dns2;
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 902, 0, &e), 0);
    const char *ips2[] = {"192.168.1.3"};
    req.ips = ips2;
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 903, 0, &e), 1);
    req.kind = CA_LEAF_CLIENT;
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 904, 0, &e), 1);
    req.kind = CA_LEAF_SERVER;
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 905, 0, &e), 1);
    /* Key lost or mismatched: re-issued. */
    assert_int_equal(unlink(key), 0);
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 906, 0, &e), 1);
    /* After the CA switches, the leaf is re-issued by the new CA. */
    assert_int_equal(ca_renew(ca, T0 + 8500, &e), CA_RENEW_ANNOUNCED);
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 8500, 10, &e), 1);
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 8501, 10, &e), 0);
    assert_int_equal(ca_renew(ca, T0 + 8600, &e), CA_RENEW_SWITCHED);
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 8600, 10, &e), 1);
    /* A bad request is reported. */
    req.common_name = "";
    assert_int_equal(ca_leaf_ensure(ca, &req, cert, key, T0 + 8600, 10, &e), -EINVAL);
    ca_free(ca);
    rm_tmpdir(dir);
}

/* A CA certificate made the way an operator's tooling would (for the user-CA tests). */
static void make_ca_files(const char *dir, const char *name, X509 *issuer, EVP_PKEY *issuer_key,
                          bool is_ca, int64_t nb, int64_t na, X509 **ret_cert, EVP_PKEY **ret_key)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_NAME_free(n);
    ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb);
    ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na);
    X509_set_pubkey(x, key);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                                              is_ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage,
                              is_ca ? "critical,keyCertSign,cRLSign" : "digitalSignature");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
    struct lbuf b = LBUF_INIT;
    char path[PATH_MAX];
    assert_int_equal(ca_pem_write_cert(x, &b), 0);
    snprintf(path, sizeof(path), "%s/%s.crt", dir, name);
    assert_int_equal(lfs_write_atomic(path, b.data, b.len, 0644), 0);
    lbuf_reset(&b);
    assert_int_equal(ca_pem_write_key(key, &b), 0);
    snprintf(path, sizeof(path), "%s/%s.key", dir, name);
    assert_int_equal(lfs_write_atomic(path, b.data, b.len, 0600), 0);
    lbuf_free(&b);
    *ret_cert = x;
    *ret_key = key;
}

static void test_ca_user_provided(void **state)
{
    char *dir = make_tmpdir();
    X509 *root, *inter, *other, *leafish;
    EVP_PKEY *root_k, *inter_k, *other_k, *leafish_k;
    make_ca_files(dir, "root", NULL, NULL, true, T0 - 100, T0 + 100000, &root, &root_k);
    make_ca_files(dir, "inter", root, root_k, true, T0 - 100, T0 + 50000, &inter, &inter_k);
    make_ca_files(dir, "other", NULL, NULL, true, T0 - 100, T0 + 100000, &other, &other_k);
    make_ca_files(dir, "leafish", NULL, NULL, false, T0 - 100, T0 + 100000, &leafish, &leafish_k);
    char c[PATH_MAX], k[PATH_MAX], chain[PATH_MAX], extra[PATH_MAX], bad[PATH_MAX];
    snprintf(c, sizeof(c), "%s/inter.crt", dir);
    snprintf(k, sizeof(k), "%s/inter.key", dir);
    snprintf(chain, sizeof(chain), "%s/root.crt", dir);
    snprintf(extra, sizeof(extra), "%s/other.crt", dir);
    snprintf(bad, sizeof(bad), "%s/bad.pem", dir);
    assert_int_equal(lfs_write_atomic(bad, "-----BEGIN CERTIFICATE-----\nAAAA\n", 33, 0644), 0);

    const char *trusted[] = {extra};
    struct ca_config cfg = {.device_id = "dev1",
                            .cert_path = c,
                            .key_path = k,
                            .chain_path = chain,
                            .trusted_ca_paths = trusted,
                            .n_trusted_ca_paths = 1};
    struct lerr e = {0};
    struct ca *ca = NULL;
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), 0);
    assert_true(ca_is_user_provided(ca));
    assert_int_equal(X509_cmp(ca_cert(ca), inter), 0);
    char *bundle = bundle_of(ca);
    assert_int_equal(count_certs(bundle), 3); /* intermediate, root, extra */
    struct ca_leaf_request req = {.kind = CA_LEAF_SERVER,
                                  .common_name = "gw.local",
                                  .dns = (const char *[]){"gw.local"},
                                  .n_dns = 1,
                                  .lifetime_s = 1000000};
    struct ca_leaf leaf = {0};
    assert_int_equal(ca_issue(ca, &req, T0, &leaf, &e), 0);
    assert_int_equal(leaf.not_after, T0 + 50000); /* capped by the intermediate */
    assert_int_equal(count_certs(leaf.cert_pem), 3);
    assert_int_equal(verify_at(leaf.cert_pem, bundle, T0 + 10, X509_PURPOSE_SSL_SERVER), 0);
    /* Only the root trusted (what a leaf device would hold): the served chain still verifies. */
    struct lbuf rootpem = LBUF_INIT;
    assert_int_equal(ca_pem_write_cert(root, &rootpem), 0);
    assert_int_equal(verify_at(leaf.cert_pem, rootpem.data, T0 + 10, 0), 0);
    lbuf_free(&rootpem);
    ca_leaf_done(&leaf);
    free(bundle);
    assert_int_equal(ca_renew(ca, T0 + 49999, &e), 0); /* never renews a user CA */
    ca_free(ca);

    /* Errors. */
    cfg.key_path = NULL;
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), -EINVAL);
    assert_contains(e.msg, "both a certificate and a key");
    char ok[PATH_MAX];
    snprintf(ok, sizeof(ok), "%s/other.key", dir);
    cfg.key_path = ok;
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), -EINVAL);
    assert_contains(e.msg, "does not match the certificate");
    char lc[PATH_MAX], lk[PATH_MAX];
    snprintf(lc, sizeof(lc), "%s/leafish.crt", dir);
    snprintf(lk, sizeof(lk), "%s/leafish.key", dir);
    cfg.cert_path = lc;
    cfg.key_path = lk;
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), -EINVAL);
    assert_contains(e.msg, "not a CA certificate");
    cfg.cert_path = c;
    cfg.key_path = k;
    assert_int_equal(ca_open(&cfg, T0 + 50000, &ca, &e), -EKEYEXPIRED);
    assert_contains(e.msg, "expired at");
    assert_int_equal(ca_open(&cfg, T0 - 1000, &ca, &e), -EKEYEXPIRED);
    assert_contains(e.msg, "not valid before");
    trusted[0] = bad;
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), -EINVAL);
    assert_contains(e.msg, "bad.pem");
    trusted[0] = "/nonexistent/ca.pem";
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), -ENOENT);
    assert_contains(e.msg, "/nonexistent/ca.pem");

    /* An X.509 device identity from files. */
    struct identity_device *d = NULL;
    assert_int_equal(identity_device_from_x509(HUB, "dev1", lc, lk, &d, &e), 0);
    assert_int_equal(d->auth, IDENTITY_AUTH_X509);
    assert_contains(d->cert_pem, "BEGIN CERTIFICATE");
    struct lbuf tok = LBUF_INIT;
    assert_int_equal(identity_device_sas_token(d, T0, &tok), -EOPNOTSUPP);
    identity_device_free(d);
    assert_int_equal(identity_device_from_x509(HUB, "dev1", lc, ok, &d, &e), -EINVAL);
    assert_contains(e.msg, "does not match the certificate");
    assert_int_equal(identity_device_from_x509(HUB, "dev1", lc, lc, &d, &e), -EINVAL);
    assert_contains(e.msg, "no PEM private key");
    assert_int_equal(identity_device_from_x509(HUB, "dev1", NULL, lk, &d, &e), -EINVAL);

    X509 *xs[] = {root, inter, other, leafish};
    EVP_PKEY *ks[] = {root_k, inter_k, other_k, leafish_k};
    for (size_t i = 0; i < 4; i++) {
        X509_free(xs[i]);
        EVP_PKEY_free(ks[i]);
    }
    rm_tmpdir(dir);
}

static void test_pem_helpers(void **state)
{
    struct lerr e = {0};
    STACK_OF(X509) *sk = NULL;
    assert_int_equal(ca_pem_read_certs("", 0, &sk, &e), -EINVAL);
    assert_contains(e.msg, "no PEM certificate");
    const char *broken = "-----BEGIN CERTIFICATE-----\nMIIB!!\n-----END CERTIFICATE-----\n";
    assert_int_equal(ca_pem_read_certs(broken, strlen(broken), &sk, &e), -EINVAL);
    assert_contains(e.msg, "malformed PEM");
    assert_true(ca_dns_name_valid("a"));
    assert_true(ca_dns_name_valid("edge_hub.local"));
    assert_false(ca_dns_name_valid("a-"));
    assert_false(ca_dns_name_valid(""));
    char label[70];
    memset(label, 'a', 64);
    label[64] = 0;
    assert_false(ca_dns_name_valid(label));
    label[63] = 0;
    assert_true(ca_dns_name_valid(label));
    assert_true(ca_ip_valid("fe80::1"));
    assert_false(ca_ip_valid("fe80::1%eth0"));
    assert_false(ca_ip_valid("localhost"));
}

/* ---- crypt --------------------------------------------------------------------------------- */

static void test_crypt(void **state)
{
    uint8_t k1[32], k2[32];
    memset(k1, 1, 32);
    memset(k2, 2, 32);
    struct lbuf ct = LBUF_INIT, ct2 = LBUF_INIT, pt = LBUF_INIT;
    struct lerr e = {0};
    assert_int_equal(crypt_encrypt(k1, "iv", 2, "secret", 6, &ct), 0);
    assert_int_equal(ct.len, 6 + CRYPT_OVERHEAD);
    assert_int_equal((uint8_t)ct.data[0], CRYPT_VERSION);
    assert_int_equal(crypt_encrypt(k1, "iv", 2, "secret", 6, &ct2), 0);
    assert_memory_not_equal(ct.data, ct2.data, ct.len); /* fresh nonce */
    assert_int_equal(crypt_decrypt(k1, "iv", 2, ct.data, ct.len, &pt, &e), 0);
    assert_int_equal(pt.len, 6);
    assert_memory_equal(pt.data, "secret", 6);
    lbuf_reset(&pt);

    /* Wrong key (another module), wrong iv, tampering anywhere: refused, out untouched. */
    assert_int_equal(crypt_decrypt(k2, "iv", 2, ct.data, ct.len, &pt, &e), -EBADMSG);
    assert_contains(e.msg, "does not authenticate");
    assert_int_equal(crypt_decrypt(k1, "iw", 2, ct.data, ct.len, &pt, &e), -EBADMSG);
    assert_int_equal(crypt_decrypt(k1, "iv", 1, ct.data, ct.len, &pt, &e), -EBADMSG);
    for (size_t i = 1; i < ct.len; i++) {
        ct.data[i] ^= 0x01;
        assert_int_equal(crypt_decrypt(k1, "iv", 2, ct.data, ct.len, &pt, &e), -EBADMSG);
        ct.data[i] ^= 0x01;
    }
    assert_int_equal(pt.len, 0);
    ct.data[0] = 2;
    assert_int_equal(crypt_decrypt(k1, "iv", 2, ct.data, ct.len, &pt, &e), -EINVAL);
    assert_contains(e.msg, "unsupported ciphertext version 2");
    ct.data[0] = 1;
    assert_int_equal(crypt_decrypt(k1, "iv", 2, ct.data, ct.len - 1, &pt, &e), -EBADMSG);
    assert_int_equal(crypt_decrypt(k1, "iv", 2, ct.data, CRYPT_OVERHEAD - 1, &pt, &e), -EINVAL);
    assert_contains(e.msg, "shorter than 29 bytes");

    /* Empty plaintext and empty iv work. */
    lbuf_reset(&ct);
    assert_int_equal(crypt_encrypt(k1, NULL, 0, "", 0, &ct), 0);
    assert_int_equal(ct.len, CRYPT_OVERHEAD);
    assert_int_equal(crypt_decrypt(k1, NULL, 0, ct.data, ct.len, &pt, &e), 0);
    assert_int_equal(pt.len, 0);
    lbuf_free(&ct);
    lbuf_free(&ct2);
    lbuf_free(&pt);
}

/* ---- workload ------------------------------------------------------------------------------ */

struct wfix {
    struct identity_keys *keys;
    struct ca *ca;
    struct workload_ctx *ctx;
    int64_t now;
};

static int64_t fix_now(void *ud)
{
    return ((struct wfix *)ud)->now;
}

static int wsetup(void **state)
{
    struct wfix *f = calloc(1, sizeof(*f));
    f->now = T0;
    f->keys = test_keys();
    f->ca = open_mem_ca(T0 - 10, 30 * 86400);
    const char *reserved[] = {"gateway.local"};
    struct workload_config cfg = {.iothub_hostname = HUB,
                                  .device_id = "dev1",
                                  .hub_module_id = "$edgeHub",
                                  .reserved_server_names = reserved,
                                  .n_reserved_server_names = 1,
                                  .identity_cert_lifetime_s = 7 * 86400,
                                  .server_cert_lifetime_s = 86400,
                                  .max_body = 4096,
                                  .now = fix_now,
                                  .now_userdata = f};
    assert_int_equal(workload_ctx_new(&cfg, f->keys, f->ca, &f->ctx), 0);
    *state = f;
    return 0;
}

static int wteardown(void **state)
{
    struct wfix *f = *state;
    workload_ctx_free(f->ctx);
    ca_free(f->ca);
    identity_keys_free(f->keys);
    free(f);
    return 0;
}

static const struct workload_caller mod1 = {"mod1", "gen1"};
static const struct workload_caller hubmod = {"$edgeHub", "g7"};

/* Call and parse the reply; asserts status and, for errors, a message substring. */
static json_t *call(struct wfix *f, const struct workload_caller *c, const char *method,
                    const char *target, const char *body, int status, const char *msg)
{
    struct workload_reply rep;
    assert_int_equal(
        workload_handle(f->ctx, c, method, target, body, body ? strlen(body) : 0, &rep), 0);
    if (rep.status != status)
        fail_msg("%s %s: status %d, want %d: %s", method, target, rep.status, status, rep.body);
    assert_string_equal(rep.content_type, "application/json");
    json_t *j = NULL;
    struct lerr e = {0};
    assert_int_equal(ljson_parse(rep.body, rep.body_len, &j, &e), 0);
    if (msg)
        assert_contains(ljson_str(j, "message"), msg);
    workload_reply_done(&rep);
    return j;
}

#define V "?api-version=2018-06-28"

static void test_workload_trust_bundle(void **state)
{
    struct wfix *f = *state;
    json_t *j = call(f, &mod1, "GET", "/trust-bundle" V, NULL, 200, NULL);
    char *bundle = bundle_of(f->ca);
    assert_string_equal(ljson_str(j, "certificate"), bundle);
    free(bundle);
    json_decref(j);
    j = call(f, &mod1, "GET", "/manifest-trust-bundle?api-version=2020-07-07", NULL, 200, NULL);
    assert_string_equal(ljson_str(j, "certificate"), "");
    json_decref(j);
    /* No module in the path: any caller, even an unknown one. */
    json_decref(call(f, NULL, "GET", "/trust-bundle" V, NULL, 200, NULL));
}

static void test_workload_sign(void **state)
{
    struct wfix *f = *state;
    json_t *j =
        call(f, &mod1, "POST", "/modules/mod1/genid/gen1/sign" V,
             "{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":\"aGVsbG8=\"}", 200, NULL);
    /* HMAC-SHA256(module key of dev1/mod1/gen1, "hello"), computed independently. */
    assert_string_equal(ljson_str(j, "digest"), "+K2WKBuEflBFK9C1d+kJd78W9cCUVB15/F4UfLzX65E=");
    json_decref(j);

    /* What ModuleClient.fromEnvironment() does: sign sr + "\n" + se, build the token, and the
     * hub verifies it with the module key. */
    const char *sr = "myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1";
    _cleanup_free_ char *to_sign = lstr_printf("%s\n%lld", sr, T0 + 3600);
    struct lbuf b64 = LBUF_INIT;
    assert_int_equal(lcrypto_b64_encode(to_sign, strlen(to_sign), &b64), 0);
    _cleanup_free_ char *body =
        lstr_printf("{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":\"%s\"}", b64.data);
    lbuf_free(&b64);
    j = call(f, &mod1, "POST", "/modules/mod1/genid/gen1/sign" V, body, 200, NULL);
    struct lbuf sig = LBUF_INIT;
    const char *digest = ljson_str(j, "digest");
    assert_int_equal(lstr_url_encode(digest, strlen(digest), &sig), 0);
    _cleanup_free_ char *tok =
        lstr_printf("SharedAccessSignature sr=%s&sig=%s&se=%lld", sr, sig.data, T0 + 3600);
    lbuf_free(&sig);
    json_decref(j);
    uint8_t mk[32];
    assert_int_equal(identity_module_key(f->keys, "dev1", "mod1", "gen1", mk), 0);
    struct lerr e = {0};
    assert_int_equal(sas_token_verify(tok, hosts, 2, "dev1", "mod1", mk, 32, T0, &e), 0);

    /* Field errors. */
    static const struct {
        const char *body, *msg;
    } bad[] = {
        {"{\"keyId\":\"secondary\",\"algo\":\"HMACSHA256\",\"data\":\"aGk=\"}",
         "field 'keyId' must be \"primary\""},
        {"{\"keyId\":\"primary\",\"algo\":\"HMACSHA1\",\"data\":\"aGk=\"}",
         "field 'algo' must be \"HMACSHA256\""},
        {"{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":\"~~\"}",
         "field 'data' is not valid base64"},
        {"{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\"}", "missing required field 'data'"},
        {"{\"algo\":\"HMACSHA256\",\"data\":\"aGk=\"}", "missing required field 'keyId'"},
        {"{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":5}",
         "field 'data' must be a string"},
        {"{\"keyId\":\"prim\\u0000ary\",\"algo\":\"HMACSHA256\",\"data\":\"aGk=\"}",
         "contains a NUL"},
        {"{\"keyId\":", "request body: not valid JSON"},
        {"[1,2]", "request body must be a JSON object"},
        {"", "missing request body"},
        {"\"\xff\"", "not valid JSON"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/sign" V, bad[i].body, 400,
                         bad[i].msg));
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/sign" V, NULL, 400,
                     "missing request body"));
}

static void test_workload_caller_checks(void **state)
{
    struct wfix *f = *state;
    const char *sign = "{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":\"aGk=\"}";
    /* Another module's path: 403, whatever the call. */
    json_decref(call(f, &mod1, "POST", "/modules/mod2/genid/gen1/sign" V, sign, 403,
                     "module 'mod1' may not act for module 'mod2'"));
    json_decref(call(f, &mod1, "POST", "/modules/Mod1/genid/gen1/sign" V, sign, 403, "may not"));
    json_decref(
        call(f, &mod1, "POST", "/modules/mod2/certificate/identity" V, "{}", 403, "may not"));
    json_decref(call(f, &mod1, "POST", "/modules/%24edgeHub/genid/g7/certificate/server" V,
                     "{\"commonName\":\"x\"}", 403, "may not"));
    json_decref(
        call(f, NULL, "POST", "/modules/mod1/genid/gen1/sign" V, sign, 403, "identity is unknown"));
    /* A generation that is not the caller's current one: 404. */
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen0/sign" V, sign, 404,
                     "module 'mod1' has no generation 'gen0'"));
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen0/encrypt" V,
                     "{\"plaintext\":\"\",\"initializationVector\":\"\"}", 404, "generation"));
    const struct workload_caller nogen = {"mod1", NULL};
    json_decref(
        call(f, &nogen, "POST", "/modules/mod1/genid/gen1/sign" V, sign, 404, "generation"));
    /* Percent-encoded ids are decoded ($edgeHub arrives as %24edgeHub). */
    json_decref(call(f, &hubmod, "POST", "/modules/%24edgeHub/genid/g7/sign" V, sign, 200, NULL));
    json_decref(
        call(f, &hubmod, "POST", "/modules/%24edge%48ub/genid/%67%37/sign" V, sign, 200, NULL));
}

static void test_workload_routing_and_versions(void **state)
{
    struct wfix *f = *state;
    static const char *const versions[] = {"2018-06-28", "2019-01-30", "2019-10-22", "2019-11-05",
                                           "2020-07-07", "2020-10-10", "2021-12-07", "2022-08-03"};
    for (size_t i = 0; i < ARRAY_SIZE(versions); i++) {
        _cleanup_free_ char *t = lstr_printf("/trust-bundle?api-version=%s", versions[i]);
        json_decref(call(f, &mod1, "GET", t, NULL, 200, NULL));
    }
    json_decref(
        call(f, &mod1, "GET", "/trust-bundle?x=1&api-version=2019%2D01%2D30&y", NULL, 200, NULL));
    static const struct {
        const char *target, *msg;
    } bad[] = {
        {"/trust-bundle", "missing required query parameter 'api-version'"},
        {"/trust-bundle?", "missing required"},
        {"/trust-bundle?api-versions=2018-06-28", "missing required"},
        {"/trust-bundle?api-version=2017-11-08", "unsupported api-version '2017-11-08'"},
        {"/trust-bundle?api-version=2021-05-11", "unsupported"},
        {"/trust-bundle?api-version=", "unsupported api-version ''"},
        {"/trust-bundle?api-version", "unsupported"},
        {"/trust-bundle?api-version=2018-06-28&api-version=2018-06-28", "more than once"},
        {"/trust-bundle?api-version=%zz", "malformed %-escape in the query"},
        {"/modules/%zz/genid/g/sign" V, "malformed %-escape in the request path"},
        {"/modules/a%00b/genid/g/sign" V, "control character"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        json_decref(call(f, &mod1, "GET", bad[i].target, NULL, 400, bad[i].msg));

    static const char *const notfound[] = {
        "/",
        "",
        "trust-bundle" V,
        "/trust-bundle/" V,
        "//trust-bundle" V,
        "/Trust-Bundle" V,
        "/modules/mod1/genid/gen1" V,
        "/modules//genid/gen1/sign" V,
        "/modules/mod1/genid//sign" V,
        "/modules/mod1/genid/gen1/sign/x" V,
        "/modules/mod1/genid/gen1/verify" V,
        "/modules/mod1/certificate/server" V,
        "/modules" V,
        "/a/b/c/d/e/f/g/h/i/j" V,
        "/modules/mod1/genid/gen1/sign%2F" V,
    };
    for (size_t i = 0; i < ARRAY_SIZE(notfound); i++)
        json_decref(call(f, &mod1, "POST", notfound[i], "{}", 404, "not found"));

    struct workload_reply rep;
    assert_int_equal(workload_handle(f->ctx, &mod1, "POST", "/trust-bundle" V, NULL, 0, &rep), 0);
    assert_int_equal(rep.status, 405);
    assert_string_equal(rep.allow, "GET");
    assert_contains(rep.body, "method not allowed");
    workload_reply_done(&rep);
    assert_int_equal(
        workload_handle(f->ctx, &mod1, "GET", "/modules/mod1/genid/gen1/sign" V, NULL, 0, &rep), 0);
    assert_int_equal(rep.status, 405);
    assert_string_equal(rep.allow, "POST");
    workload_reply_done(&rep);
    json_decref(
        call(f, &mod1, "DELETE", "/modules/mod1/certificate/identity" V, NULL, 405, "use POST"));

    /* Bounds. */
    char *big = malloc(5000);
    memset(big, ' ', 4999);
    big[4999] = 0;
    big[0] = '{';
    big[4998] = '}';
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/sign" V, big, 413,
                     "larger than 4096 bytes"));
    free(big);
    char *longt = malloc(WORKLOAD_MAX_TARGET + 10);
    memset(longt, 'a', WORKLOAD_MAX_TARGET + 9);
    longt[0] = '/';
    longt[WORKLOAD_MAX_TARGET + 9] = 0;
    json_decref(call(f, &mod1, "GET", longt, NULL, 414, "longer than 2048"));
    free(longt);
    json_decref(call(f, &mod1, NULL, "/trust-bundle" V, NULL, 400, "missing method"));
}

static void test_workload_encrypt_decrypt(void **state)
{
    struct wfix *f = *state;
    json_t *j = call(f, &mod1, "POST", "/modules/mod1/genid/gen1/encrypt" V,
                     "{\"plaintext\":\"c2VjcmV0\",\"initializationVector\":\"aXY=\"}", 200, NULL);
    _cleanup_free_ char *ct = strdup(ljson_str(j, "ciphertext"));
    json_decref(j);
    _cleanup_free_ char *body =
        lstr_printf("{\"ciphertext\":\"%s\",\"initializationVector\":\"aXY=\"}", ct);
    j = call(f, &mod1, "POST", "/modules/mod1/genid/gen1/decrypt" V, body, 200, NULL);
    assert_string_equal(ljson_str(j, "plaintext"), "c2VjcmV0");
    json_decref(j);

    /* Known answer from an independent AES-GCM (Python cryptography): version 1, zero nonce,
     * key HMAC-SHA256(0x42 * 32, "ledge/module-crypt/v1" 0 "dev1" 0 "mod1" 0 "gen1"), AAD
     * 0x01 "iv". */
    j = call(f, &mod1, "POST", "/modules/mod1/genid/gen1/decrypt" V,
             "{\"ciphertext\":\"AQAAAAAAAAAAAAAAADqpRHApvp8ZSDGvW5rEt+4xKDnNrOc=\","
             "\"initializationVector\":\"aXY=\"}",
             200, NULL);
    assert_string_equal(ljson_str(j, "plaintext"), "c2VjcmV0");
    json_decref(j);

    /* Another iv, another generation of the module, another module: refused. */
    _cleanup_free_ char *body2 =
        lstr_printf("{\"ciphertext\":\"%s\",\"initializationVector\":\"aXc=\"}", ct);
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/decrypt" V, body2, 400,
                     "does not authenticate"));
    const struct workload_caller gen2 = {"mod1", "gen2"};
    json_decref(call(f, &gen2, "POST", "/modules/mod1/genid/gen2/decrypt" V, body, 400,
                     "does not authenticate"));
    const struct workload_caller other = {"mod2", "gen1"};
    json_decref(call(f, &other, "POST", "/modules/mod2/genid/gen1/decrypt" V, body, 400,
                     "does not authenticate"));
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/decrypt" V,
                     "{\"ciphertext\":\"AAAA\",\"initializationVector\":\"aXY=\"}", 400,
                     "unsupported ciphertext version 0"));
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/decrypt" V,
                     "{\"ciphertext\":\"AQ==\",\"initializationVector\":\"aXY=\"}", 400,
                     "shorter than"));
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/decrypt" V,
                     "{\"initializationVector\":\"aXY=\"}", 400,
                     "missing required field 'ciphertext'"));
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/encrypt" V,
                     "{\"plaintext\":\"c2VjcmV0\"}", 400,
                     "missing required field 'initializationVector'"));
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/encrypt" V,
                     "{\"plaintext\":\"c2VjcmV0=\",\"initializationVector\":\"aXY=\"}", 400,
                     "field 'plaintext' is not valid base64"));
}

static void test_workload_identity_cert(void **state)
{
    struct wfix *f = *state;
    json_t *j = call(f, &mod1, "POST", "/modules/mod1/certificate/identity" V,
                     "{\"expiration\":\"2023-11-15T00:00:00Z\"}", 201, NULL);
    json_t *pk = json_object_get(j, "privateKey");
    assert_string_equal(ljson_str(pk, "type"), "key");
    assert_contains(ljson_str(pk, "bytes"), "BEGIN PRIVATE KEY");
    const char *cert = ljson_str(j, "certificate");
    char *s = cn_of(cert);
    assert_string_equal(s, "mod1");
    free(s);
    s = sans_of(cert);
    assert_string_equal(s, "URI:azureiot://" HUB "/devices/dev1/modules/mod1");
    free(s);
    assert_true(xku_of(cert) & XKU_SSL_CLIENT);
    assert_int_equal(count_certs(cert), 2);
    char *bundle = bundle_of(f->ca);
    assert_int_equal(verify_at(cert, bundle, T0 + 60, X509_PURPOSE_SSL_CLIENT), 0);
    free(bundle);
    /* The requested expiration is honoured below the configured maximum (7 days). */
    int64_t ms;
    assert_int_equal(ltime_parse_rfc3339(ljson_str(j, "expiration"), &ms), 0);
    assert_int_equal(ms / 1000, 1700006400);
    json_decref(j);
    j = call(f, &mod1, "POST", "/modules/mod1/certificate/identity" V,
             "{\"expiration\":\"2030-01-01T00:00:00.1234567+02:00\"}", 201, NULL);
    assert_int_equal(ltime_parse_rfc3339(ljson_str(j, "expiration"), &ms), 0);
    assert_int_equal(ms / 1000, T0 + 7 * 86400);
    json_decref(j);
    /* No expiration: the maximum. The caller's identity, not the body, names the module. */
    j = call(f, &hubmod, "POST", "/modules/%24edgeHub/certificate/identity" V, "{}", 201, NULL);
    s = sans_of(ljson_str(j, "certificate"));
    assert_string_equal(s, "URI:azureiot://" HUB "/devices/dev1/modules/%24edgeHub");
    free(s);
    json_decref(j);

    static const char *const bad[] = {
        "{\"expiration\":\"2023-11-14T22:13:20Z\"}",    "{\"expiration\":\"yesterday\"}",
        "{\"expiration\":\"2030-01-01T00:00:00+1:2\"}", "{\"expiration\":\"2030-01-01T00:00:00\"}",
        "{\"expiration\":\"2030-01-01T00:00:00.Z\"}",   "{\"expiration\":5}"};
    static const char *const msgs[] = {"in the past",          "not an RFC 3339 time",
                                       "not an RFC 3339 time", "not an RFC 3339 time",
                                       "not an RFC 3339 time", "must be a string"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        json_decref(
            call(f, &mod1, "POST", "/modules/mod1/certificate/identity" V, bad[i], 400, msgs[i]));
    const struct workload_caller longmod = {
        "m123456789012345678901234567890123456789012345678901234567890123456789", "g"};
    json_decref(call(f, &longmod, "POST",
                     "/modules/m123456789012345678901234567890123456789012345678901234567890123456"
                     "789/certificate/identity" V,
                     "{}", 400, "longer than a certificate common name"));
}

static void test_workload_server_cert(void **state)
{
    struct wfix *f = *state;
    json_t *j =
        call(f, &mod1, "POST", "/modules/mod1/genid/gen1/certificate/server" V,
             "{\"commonName\":\"mod1.local\",\"expiration\":\"2030-01-01T00:00:00Z\"}", 201, NULL);
    const char *cert = ljson_str(j, "certificate");
    char *s = sans_of(cert);
    assert_string_equal(s, "DNS:mod1.local,DNS:mod1");
    free(s);
    s = cn_of(cert);
    assert_string_equal(s, "mod1.local");
    free(s);
    assert_true(xku_of(cert) & XKU_SSL_SERVER);
    char *bundle = bundle_of(f->ca);
    assert_int_equal(verify_at(cert, bundle, T0 + 60, X509_PURPOSE_SSL_SERVER), 0);
    free(bundle);
    int64_t ms;
    assert_int_equal(ltime_parse_rfc3339(ljson_str(j, "expiration"), &ms), 0);
    assert_int_equal(ms / 1000, T0 + 86400);
    /* The key in the reply is the certificate's. */
    BIO *kb = BIO_new_mem_buf(ljson_str(json_object_get(j, "privateKey"), "bytes"), -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    STACK_OF(X509) *sk = certs_of(cert);
    assert_int_equal(X509_check_private_key(sk_X509_value(sk, 0), k), 1);
    ca_cert_stack_free(sk);
    EVP_PKEY_free(k);
    BIO_free(kb);
    json_decref(j);

    /* An IP address common name is an IP SAN; a CN equal to the module id is not repeated. */
    j = call(f, &mod1, "POST", "/modules/mod1/genid/gen1/certificate/server" V,
             "{\"commonName\":\"10.1.2.3\"}", 201, NULL);
    s = sans_of(ljson_str(j, "certificate"));
    assert_string_equal(s, "DNS:mod1,IP:10.1.2.3");
    free(s);
    json_decref(j);
    j = call(f, &mod1, "POST", "/modules/mod1/genid/gen1/certificate/server" V,
             "{\"commonName\":\"MOD1\"}", 201, NULL);
    s = sans_of(ljson_str(j, "certificate"));
    assert_string_equal(s, "DNS:MOD1");
    free(s);
    json_decref(j);

    /* The gateway name is reserved for the hub module. */
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/certificate/server" V,
                     "{\"commonName\":\"Gateway.Local\"}", 403,
                     "issued only to module '$edgeHub'"));
    j = call(f, &hubmod, "POST", "/modules/%24edgeHub/genid/g7/certificate/server" V,
             "{\"commonName\":\"gateway.local\"}", 201, NULL);
    s = sans_of(ljson_str(j, "certificate"));
    assert_string_equal(s, "DNS:gateway.local,DNS:edgeHub");
    free(s);
    json_decref(j);

    static const char *const bad[] = {"{}", "{\"commonName\":\"a b\"}",
                                      "{\"commonName\":\"*.evil.com\"}", "{\"commonName\":7}",
                                      "{\"commonName\":\"x\",\"expiration\":\"nope\"}"};
    static const char *const msgs[] = {
        "missing required field 'commonName'", "field 'commonName' must be a host name",
        "must be a host name", "must be a string", "not an RFC 3339 time"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/certificate/server" V, bad[i],
                         400, msgs[i]));

    /* The CA at its end: 500, and the message says why. */
    f->now = T0 + 31 * 86400;
    json_decref(call(f, &mod1, "POST", "/modules/mod1/genid/gen1/certificate/server" V,
                     "{\"commonName\":\"x\"}", 500, "edge CA expires"));
    f->now = T0;
}

static void test_workload_api_versions(void **state)
{
    assert_true(workload_api_version_supported("2018-06-28"));
    assert_true(workload_api_version_supported("2022-08-03"));
    assert_false(workload_api_version_supported("2022-08-04"));
    assert_false(workload_api_version_supported(NULL));
    struct workload_config cfg = {.iothub_hostname = HUB, .device_id = "bad/id"};
    struct workload_ctx *ctx = NULL;
    _cleanup_(identity_keys_freep) struct identity_keys *k = test_keys();
    struct ca *ca = open_mem_ca(T0, 86400);
    assert_int_equal(workload_ctx_new(&cfg, k, ca, &ctx), -EINVAL);
    cfg.device_id = "dev1";
    assert_int_equal(workload_ctx_new(&cfg, k, NULL, &ctx), -EINVAL);
    cfg.manifest_trust_bundle_pem = "PEM";
    assert_int_equal(workload_ctx_new(&cfg, k, ca, &ctx), 0);
    struct workload_reply rep;
    assert_int_equal(workload_handle(ctx, NULL, "GET", "/manifest-trust-bundle" V, NULL, 0, &rep),
                     0);
    assert_string_equal(rep.body, "{\"certificate\":\"PEM\"}");
    workload_reply_done(&rep);
    workload_ctx_free(ctx);
    ca_free(ca);
}

/* ---- leaf devices ------------------------------------------------------------------------- */

static void test_leaf_sas(void **state)
{
    struct identity_keys *k = NULL;
    assert_int_equal(identity_keys_from_secret(key32, 32, &k), 0);
    struct lerr e = {0};
    struct identity_leaf *l = NULL;
    /* generated: two distinct 32-byte keys, a fresh generation id */
    struct identity_leaf_spec spec = {.device_id = "leaf-1", .auth = IDENTITY_LEAF_SAS};
    assert_int_equal(identity_leaf_new(&spec, T0 * 1000, &l, &e), 0);
    assert_int_equal(l->keylen[0], 32);
    assert_int_equal(l->keylen[1], 32);
    assert_false(memcmp(l->key[0], l->key[1], 32) == 0);
    assert_int_equal(strlen(l->generation_id), IDENTITY_GENID_LEN);
    char *cs = identity_leaf_connection_string(l, HUB, "gw.local", 0);
    assert_non_null(cs);
    assert_true(lstr_startswith(cs, "HostName=" HUB ";DeviceId=leaf-1;SharedAccessKey="));
    assert_true(lstr_endswith(cs, ";GatewayHostName=gw.local"));
    /* the connection string parses as a device's, with the same key */
    struct identity_device *dev = NULL;
    assert_int_equal(identity_device_from_connection_string(cs, &dev, &e), 0);
    assert_string_equal(dev->gateway_hostname, "gw.local");
    assert_int_equal(dev->keylen, 32);
    assert_memory_equal(dev->key, l->key[0], 32);
    identity_device_free(dev);
    free(cs);

    /* the stored form seals the keys: no key bytes in it, and it opens only under the same
     * master secret, for the same edge device, in the same record */
    json_t *rec = NULL;
    assert_int_equal(identity_leaf_seal(k, "edge1", l, &rec), 0);
    char *text = ljson_dump(rec);
    struct lbuf b64 = LBUF_INIT;
    assert_int_equal(lcrypto_b64_encode(l->key[0], 32, &b64), 0);
    assert_null(strstr(text, b64.data));
    lbuf_free(&b64);
    free(text);
    struct identity_leaf *back = NULL;
    assert_int_equal(identity_leaf_unseal(k, "edge1", rec, &back, &e), 0);
    assert_string_equal(back->device_id, "leaf-1");
    assert_string_equal(back->generation_id, l->generation_id);
    assert_memory_equal(back->key, l->key, sizeof(l->key));
    identity_leaf_free(back);
    assert_int_equal(identity_leaf_unseal(k, "edge2", rec, &back, &e), -EBADMSG);
    assert_contains(e.msg, "do not unseal");
    uint8_t other_secret[32] = {9};
    struct identity_keys *k2 = NULL;
    assert_int_equal(identity_keys_from_secret(other_secret, 32, &k2), 0);
    assert_int_equal(identity_leaf_unseal(k2, "edge1", rec, &back, &e), -EBADMSG);
    identity_keys_free(k2);
    /* a sealed key moved into another device's record does not open there */
    json_t *moved = json_deep_copy(rec);
    json_object_set_new(moved, "deviceId", json_string("leaf-2"));
    assert_int_equal(identity_leaf_unseal(k, "edge1", moved, &back, &e), -EBADMSG);
    json_decref(moved);
    /* primary and secondary swapped: each is bound to its slot */
    moved = json_deep_copy(rec);
    json_t *sk = json_object_get(moved, "sealedKeys");
    json_t *first = json_incref(json_array_get(sk, 0));
    json_array_remove(sk, 0);
    json_array_append_new(sk, first);
    assert_int_equal(identity_leaf_unseal(k, "edge1", moved, &back, &e), -EBADMSG);
    json_decref(moved);
    json_decref(rec);

    /* rotation: the chosen slot changes, the other stays */
    uint8_t old[2][IDENTITY_LEAF_KEY_MAX];
    memcpy(old, l->key, sizeof(old));
    assert_int_equal(identity_leaf_rotate(l, 1, T0 * 1000 + 5, &e), 0);
    assert_false(memcmp(old[0], l->key[0], 32) == 0);
    assert_memory_equal(old[1], l->key[1], 32);
    assert_int_equal(l->keys_changed_ms, T0 * 1000 + 5);

    /* the runtime file's form round-trips */
    json_t *rt = identity_leaf_runtime_json(l);
    assert_int_equal(identity_leaf_from_runtime_json("leaf-1", rt, &back, &e), 0);
    assert_memory_equal(back->key, l->key, sizeof(l->key));
    assert_int_equal(back->auth, IDENTITY_LEAF_SAS);
    identity_leaf_free(back);
    json_object_del(rt, "keys");
    assert_int_equal(identity_leaf_from_runtime_json("leaf-1", rt, &back, &e), -EINVAL);
    json_decref(rt);
    /* the public view carries no key */
    json_t *pub = identity_leaf_json(l);
    assert_null(json_object_get(pub, "keys"));
    assert_string_equal(ljson_str(pub, "auth"), "sas");
    json_decref(pub);
    identity_leaf_free(l);

    /* given keys, and the refusals */
    spec.primary_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; /* 32 bytes */
    assert_int_equal(identity_leaf_new(&spec, T0 * 1000, &l, &e), 0);
    assert_memory_equal(l->key[0], key32, 32);
    assert_int_equal(l->keylen[1], 32); /* the secondary generated */
    identity_leaf_free(l);
    spec.primary_key = "not base64!";
    assert_int_equal(identity_leaf_new(&spec, 0, &l, &e), -EINVAL);
    assert_contains(e.msg, "primary key: not valid base64");
    spec.primary_key = "AAECAwQFBgc="; /* 8 bytes */
    assert_int_equal(identity_leaf_new(&spec, 0, &l, &e), -EINVAL);
    assert_contains(e.msg, "16-64 bytes");
    spec.primary_key = spec.secondary_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    assert_int_equal(identity_leaf_new(&spec, 0, &l, &e), -EINVAL);
    assert_contains(e.msg, "the same");
    spec = (struct identity_leaf_spec){.device_id = "bad/id", .auth = IDENTITY_LEAF_SAS};
    assert_int_equal(identity_leaf_new(&spec, 0, &l, &e), -EINVAL);
    spec = (struct identity_leaf_spec){
        .device_id = "x", .auth = IDENTITY_LEAF_X509_CA, .primary_key = "AAAA"};
    assert_int_equal(identity_leaf_new(&spec, 0, &l, &e), -EINVAL);
    identity_keys_free(k);
}

static void test_leaf_x509(void **state)
{
    struct lerr e = {0};
    char t[IDENTITY_THUMBPRINT_SIZE];
    assert_int_equal(identity_thumbprint_parse("ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:"
                                               "ab:cd:ef:01",
                                               t, &e),
                     0);
    assert_string_equal(t, "ABCDEF0123456789ABCDEF0123456789ABCDEF01");
    assert_int_equal(identity_thumbprint_parse("abcdef", t, &e), -EINVAL);
    assert_contains(e.msg, "6 hex digits");
    assert_int_equal(identity_thumbprint_parse("ZZcdef0123456789abcdef0123456789abcdef01", t, &e),
                     -EINVAL);
    assert_int_equal(identity_thumbprint_parse(":bcdef0123456789abcdef0123456789abcdef01", t, &e),
                     -EINVAL);
    char sha256[65];
    memset(sha256, 'a', 64);
    sha256[64] = 0;
    assert_int_equal(identity_thumbprint_parse(sha256, t, &e), 0);
    assert_int_equal(strlen(t), 64);

    struct identity_leaf *l = NULL;
    struct identity_leaf_spec spec = {
        .device_id = "cam",
        .auth = IDENTITY_LEAF_X509_THUMBPRINT,
        .thumbprints = "abcdef0123456789abcdef0123456789abcdef01,"
                       "1111111111111111111111111111111111111111",
    };
    assert_int_equal(identity_leaf_new(&spec, 0, &l, &e), 0);
    assert_string_equal(l->thumbprint[0], "ABCDEF0123456789ABCDEF0123456789ABCDEF01");
    assert_string_equal(l->thumbprint[1], "1111111111111111111111111111111111111111");
    assert_int_equal(identity_leaf_rotate(l, 3, 0, &e), -EINVAL); /* no keys */
    char *cs = identity_leaf_connection_string(l, HUB, "gw", 0);
    assert_string_equal(cs, "HostName=" HUB ";DeviceId=cam;x509=true;GatewayHostName=gw");
    free(cs);
    json_t *rt = identity_leaf_runtime_json(l);
    struct identity_leaf *back = NULL;
    assert_int_equal(identity_leaf_from_runtime_json("cam", rt, &back, &e), 0);
    assert_string_equal(back->thumbprint[1], l->thumbprint[1]);
    identity_leaf_free(back);
    json_decref(rt);
    identity_leaf_free(l);
    spec.thumbprints = "abcdef0123456789abcdef0123456789abcdef01,"
                       "ABCDEF0123456789ABCDEF0123456789ABCDEF01";
    assert_int_equal(identity_leaf_new(&spec, 0, &l, &e), -EINVAL);
    spec.thumbprints = NULL;
    assert_int_equal(identity_leaf_new(&spec, 0, &l, &e), -EINVAL);

    /* registered CAs: a CA, one certificate, its thumbprint; a leaf is refused */
    struct ca_config cfg = {.dir = NULL, .device_id = "dev1", .lifetime_s = 86400};
    struct ca *ca = NULL;
    assert_int_equal(ca_open(&cfg, T0, &ca, &e), 0);
    struct lbuf pem = LBUF_INIT;
    assert_int_equal(ca_pem_write_cert(ca_cert(ca), &pem), 0);
    struct identity_device_ca dca;
    assert_int_equal(identity_device_ca_parse(pem.data, pem.len, T0 + 10, &dca, &e), 0);
    char sha1[41], s256[65];
    assert_int_equal(identity_cert_thumbprints(ca_cert(ca), sha1, s256), 0);
    assert_string_equal(dca.thumbprint, s256);
    assert_int_equal(strlen(sha1), 40);
    assert_contains(dca.subject, "ledge edge CA dev1");
    identity_device_ca_clear(&dca);
    assert_int_equal(identity_device_ca_parse(pem.data, pem.len, T0 + 86400 * 2, &dca, &e),
                     -EINVAL);
    assert_contains(e.msg, "not valid now");
    struct lbuf two = LBUF_INIT;
    lbuf_append(&two, pem.data, pem.len);
    lbuf_append(&two, pem.data, pem.len);
    assert_int_equal(identity_device_ca_parse(two.data, two.len, 0, &dca, &e), -EINVAL);
    assert_contains(e.msg, "2 certificates");
    lbuf_free(&two);
    struct ca_leaf_request req = {.kind = CA_LEAF_CLIENT, .common_name = "cam"};
    struct ca_leaf leaf = {0};
    assert_int_equal(ca_issue(ca, &req, T0, &leaf, &e), 0);
    /* the leaf alone (its PEM carries the CA after it) */
    char *end = strstr(leaf.cert_pem, "-----END CERTIFICATE-----");
    assert_non_null(end);
    size_t leaf_len = (size_t)(end - leaf.cert_pem) + strlen("-----END CERTIFICATE-----\n");
    assert_int_equal(identity_device_ca_parse(leaf.cert_pem, leaf_len, 0, &dca, &e), -EINVAL);
    assert_contains(e.msg, "not a CA");
    ca_leaf_done(&leaf);
    /* the issuers' bundle: the edge CA alone, without the extra trusted CAs */
    struct lbuf issuers = LBUF_INIT;
    assert_int_equal(ca_issuers_bundle(ca, &issuers), 0);
    assert_int_equal(issuers.len, pem.len);
    lbuf_free(&issuers);
    lbuf_free(&pem);
    ca_free(ca);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sas_known_answer),
        cmocka_unit_test(test_sas_make_verify),
        cmocka_unit_test(test_sas_node_sdk_style),
        cmocka_unit_test(test_sas_verify_rejections),
        cmocka_unit_test(test_sas_parse_rejections),
        cmocka_unit_test(test_module_keys),
        cmocka_unit_test(test_module_credentials),
        cmocka_unit_test(test_master_key_storage),
        cmocka_unit_test(test_connection_string),
        cmocka_unit_test(test_ca_create_and_issue),
        cmocka_unit_test(test_ca_renewal_overlap),
        cmocka_unit_test(test_ca_leaf_ensure),
        cmocka_unit_test(test_ca_user_provided),
        cmocka_unit_test(test_pem_helpers),
        cmocka_unit_test(test_crypt),
        cmocka_unit_test(test_leaf_sas),
        cmocka_unit_test(test_leaf_x509),
        cmocka_unit_test_setup_teardown(test_workload_trust_bundle, wsetup, wteardown),
        cmocka_unit_test_setup_teardown(test_workload_sign, wsetup, wteardown),
        cmocka_unit_test_setup_teardown(test_workload_caller_checks, wsetup, wteardown),
        cmocka_unit_test_setup_teardown(test_workload_routing_and_versions, wsetup, wteardown),
        cmocka_unit_test_setup_teardown(test_workload_encrypt_decrypt, wsetup, wteardown),
        cmocka_unit_test_setup_teardown(test_workload_identity_cert, wsetup, wteardown),
        cmocka_unit_test_setup_teardown(test_workload_server_cert, wsetup, wteardown),
        cmocka_unit_test(test_workload_api_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
