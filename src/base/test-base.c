/* test-base.c — unit tests for the base layer: buffers, strings, URL coding, JSON, time, files,
 * crypto helpers, the intrusive list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/deb.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/list.h"
#include "base/proc.h"
#include "base/str.h"
#include "base/timeutil.h"

static void test_buf_bounded(void **state)
{
    struct lbuf b = LBUF_INIT;
    b.max = 8;
    assert_int_equal(lbuf_puts(&b, "abcd"), 0);
    assert_int_equal(lbuf_printf(&b, "%d", 1234), 0);
    assert_string_equal(b.data, "abcd1234");
    assert_int_equal(lbuf_putc(&b, 'x'), -E2BIG);
    assert_string_equal(b.data, "abcd1234");
    lbuf_consume(&b, 2);
    assert_string_equal(b.data, "cd1234");
    char *s = lbuf_steal(&b);
    assert_string_equal(s, "cd1234");
    free(s);
    assert_null(b.data);
    /* reserved but never written: still an empty string */
    b.max = 0;
    assert_int_equal(lbuf_reserve(&b, 10), 0);
    s = lbuf_steal(&b);
    assert_string_equal(s, "");
    free(s);
}

static void test_url_coding(void **state)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(lstr_url_encode("a b/c=d", 7, &b), 0);
    assert_string_equal(b.data, "a%20b%2Fc%3Dd");
    lbuf_reset(&b);
    assert_int_equal(lstr_url_decode("a%20b%2fc+d", 11, true, &b), 0);
    assert_string_equal(b.data, "a b/c d");
    lbuf_reset(&b);
    assert_int_equal(lstr_url_decode("bad%2", 5, false, &b), -EINVAL);
    lbuf_reset(&b);
    assert_int_equal(lstr_url_decode("bad%zz", 6, false, &b), -EINVAL);
    lbuf_free(&b);
}

static void test_strv_and_numbers(void **state)
{
    _cleanup_lstrv_ struct lstrv sv = LSTRV_INIT;
    assert_int_equal(lstrv_push(&sv, "a"), 0);
    assert_int_equal(lstrv_printf(&sv, "b%d", 2), 0);
    assert_true(lstrv_contains(&sv, "b2"));
    _cleanup_free_ char *j = lstrv_join(&sv, ", ");
    assert_string_equal(j, "a, b2");
    unsigned long long u;
    assert_int_equal(lstr_to_u64("42", &u), 0);
    assert_int_equal(u, 42);
    assert_int_equal(lstr_to_u64("-1", &u), -EINVAL);
    assert_int_equal(lstr_to_u64("4x", &u), -EINVAL);
    assert_true(lstr_startswith_ci("FROM /x", "from"));
    assert_true(lstr_endswith("abc.json", ".json"));
}

static void test_json_errors(void **state)
{
    struct lerr e = {0};
    json_t *j = NULL;
    assert_int_equal(ljson_parse("{\"a\": }", 7, &j, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "column 7"));
    assert_int_equal(ljson_parse("{\"a\": [1, {\"b\": true}]}", 23, &j, &e), 0);
    assert_int_equal(ljson_depth(j), 3);
    _cleanup_free_ char *d = ljson_dump_sorted(j);
    assert_string_equal(d, "{\"a\":[1,{\"b\":true}]}");
    json_decref(j);
    /* nesting bound */
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_int_equal(ljson_parse(deep, 200, &j, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "nested"));
}

static void test_time(void **state)
{
    char buf[LTIME_RFC3339_MAX];
    assert_string_equal(ltime_format_rfc3339(1700000000123LL, buf), "2023-11-14T22:13:20.123Z");
    int64_t ms;
    assert_int_equal(ltime_parse_rfc3339("2023-11-14T22:13:20.123Z", &ms), 0);
    assert_int_equal(ms, 1700000000123LL);
    assert_int_equal(ltime_parse_rfc3339("2023-11-14T23:13:20+01:00", &ms), 0);
    assert_int_equal(ms, 1700000000000LL);
    assert_int_equal(ltime_parse_rfc3339("2023-11-14", &ms), -EINVAL);
    assert_int_equal(ltime_parse_rfc3339("2023-11-14T23:13:20+1:2", &ms), -EINVAL);
    assert_int_equal(ltime_parse_rfc3339("2023-11-14T23:13:20+01", &ms), -EINVAL);
    assert_int_equal(ltime_parse_since("10m", 1000000, &ms), 0);
    assert_int_equal(ms, 1000000 - 600000);
    assert_int_equal(ltime_parse_since("1700000000", 0, &ms), 0);
    assert_int_equal(ms, 1700000000000LL);
    assert_int_equal(ltime_parse_duration_ms("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(ltime_parse_duration_ms("5 years", &ms), -EINVAL);
    assert_int_equal(ltime_parse_duration_ms("nan", &ms), -EINVAL);
    assert_int_equal(ltime_parse_duration_ms("inf", &ms), -EINVAL);
    assert_int_equal(ltime_parse_duration_ms("1e3", &ms), -EINVAL);
    assert_int_equal(ltime_parse_duration_ms("0x10", &ms), -EINVAL);
    assert_int_equal(ltime_parse_duration_ms("-1s", &ms), -EINVAL);
    assert_int_equal(ltime_parse_duration_ms("1.5s", &ms), 0);
    assert_int_equal(ms, 1500);
}

static void test_crypto(void **state)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(lcrypto_b64_encode("hello", 5, &b), 0);
    assert_string_equal(b.data, "aGVsbG8=");
    struct lbuf d = LBUF_INIT;
    assert_int_equal(lcrypto_b64_decode(b.data, b.len, &d), 0);
    assert_int_equal(d.len, 5);
    assert_memory_equal(d.data, "hello", 5);
    lbuf_reset(&d);
    assert_int_equal(lcrypto_b64_decode("aGVsbG8", 7, &d), -EINVAL);
    assert_int_equal(lcrypto_b64_decode("aGV$bG8=", 8, &d), -EINVAL);
    assert_int_equal(lcrypto_b64_decode("aG=sbG8=", 8, &d), -EINVAL);
    char hex[65];
    assert_int_equal(lcrypto_sha256_hex("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    uint8_t sha1[LCRYPTO_SHA1_LEN];
    assert_int_equal(lcrypto_sha1("abc", 3, sha1), 0);
    assert_int_equal(sha1[0], 0xa9);
    assert_int_equal(sha1[19], 0x9d);
    /* RFC 4231 test case 2 */
    uint8_t mac[32];
    assert_int_equal(lcrypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac), 0);
    assert_int_equal(mac[0], 0x5b);
    assert_int_equal(mac[31], 0x43);
    assert_true(lcrypto_memeq("abc", "abc", 3));
    assert_false(lcrypto_memeq("abc", "abd", 3));
    lbuf_free(&b);
    lbuf_free(&d);
}

static void test_fs_atomic(void **state)
{
    char dir[] = "/tmp/ledge-test-fs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[256], path[300];
    snprintf(sub, sizeof(sub), "%s/a/b", dir);
    assert_int_equal(lfs_mkdir_p(sub, 0700), 0);
    snprintf(path, sizeof(path), "%s/state.json", sub);
    assert_int_equal(lfs_write_atomic(path, "one", 3, 0600), 0);
    assert_int_equal(lfs_write_atomic(path, "two!", 4, 0600), 0);
    char *data;
    size_t n;
    assert_int_equal(lfs_read_file(path, 100, &data, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(data, "two!");
    free(data);
    assert_int_equal(lfs_read_file(path, 3, &data, &n), -EFBIG);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

struct item {
    int v;
    struct llist node;
};

/* The values on the list, front to back, as a string ("123"). */
static void list_values(struct llist *h, char *out)
{
    struct item *it;
    llist_foreach (it, h, node)
        *out++ = (char)('0' + it->v);
    *out = 0;
}

static void test_list(void **state)
{
    struct llist h = LLIST_INIT(h);
    struct item a = {1}, b = {2}, c = {3}, zeroed = {4};
    char s[8];
    assert_true(llist_empty(&h));
    assert_null(llist_first(&h, struct item, node));
    assert_false(llist_linked(&zeroed.node));
    llist_remove(&zeroed.node); /* never added: a no-op */
    llist_add_tail(&h, &b.node);
    llist_add_head(&h, &a.node);
    llist_add_tail(&h, &c.node);
    list_values(&h, s);
    assert_string_equal(s, "123");
    assert_int_equal(llist_count(&h), 3);
    assert_ptr_equal(llist_first(&h, struct item, node), &a);
    assert_ptr_equal(llist_last(&h, struct item, node), &c);
    struct item *it;
    char *p = s;
    llist_foreach_reverse (it, &h, node)
        *p++ = (char)('0' + it->v);
    *p = 0;
    assert_string_equal(s, "321");
    llist_remove(&b.node);
    assert_false(llist_linked(&b.node));
    llist_remove(&b.node); /* twice: still a no-op */
    list_values(&h, s);
    assert_string_equal(s, "13");
    /* removing while walking */
    struct item *tmp;
    llist_foreach_safe (it, tmp, &h, node)
        llist_remove(&it->node);
    assert_true(llist_empty(&h));
    assert_int_equal(llist_count(&h), 0);
    struct llist h2;
    llist_init(&h2);
    llist_add_head(&h2, &c.node);
    assert_true(llist_linked(&c.node));
    assert_ptr_equal(llist_first(&h2, struct item, node), &c);
}

static void test_proc_starttime(void **state)
{
    unsigned long long st = 0;
    /* a command name with spaces and parentheses: the fields count from the last ')' */
    const char *line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
                       "987654 1000 200 18446744073709551615\n";
    assert_int_equal(lproc_starttime_parse(line, &st), 0);
    assert_int_equal(st, 987654ULL);
    assert_int_equal(lproc_starttime_parse("4242 (x) S 1 2 3", &st), -EINVAL);
    assert_int_equal(lproc_starttime_parse("no parenthesis at all", &st), -EINVAL);
    assert_int_equal(lproc_starttime_parse("1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 z", &st),
                     -EINVAL);
    /* our own process: a start time, and the same one twice */
    unsigned long long a = 0, b = 0;
    assert_int_equal(lproc_starttime(getpid(), &a), 0);
    assert_int_equal(lproc_starttime(getpid(), &b), 0);
    assert_true(a > 0 && a == b);
    assert_int_equal(lproc_starttime(-5, &a), -ENOENT);
}

/* A minimal package pkg version arch built with dpkg-deb into path. */
static int make_deb(const char *tmp, const char *version, const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "set -e; r=%s/pkgroot; rm -rf $r; mkdir -p $r/DEBIAN; printf 'Package: ledge\\n"
             "Version: %s\\nArchitecture: amd64\\nMaintainer: t <t@t>\\nDescription: t\\n' "
             "> $r/DEBIAN/control; dpkg-deb --root-owner-group --build $r %s >/dev/null",
             tmp, version, path);
    return system(cmd);
}

static void test_deb(void **state)
{
    (void)state;
    _cleanup_free_ char *name = ldeb_file_name("ledge", "1:0.2.0-1", "amd64");
    assert_string_equal(name, "ledge_1%3a0.2.0-1_amd64.deb");
    if (system("command -v dpkg-deb >/dev/null") != 0)
        skip();
    char tmp[] = "/tmp/test-base-deb-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char dir[300], apt[300], p[600];
    snprintf(dir, sizeof(dir), "%s/kept", tmp);
    snprintf(apt, sizeof(apt), "%s/apt", tmp);
    assert_int_equal(lfs_mkdir_p(dir, 0755), 0);
    assert_int_equal(lfs_mkdir_p(apt, 0755), 0);
    snprintf(p, sizeof(p), "%s/ledge_0.2.0-1_amd64.deb", apt);
    assert_int_equal(make_deb(tmp, "0.2.0-1", p), 0);
    _cleanup_free_ char *v = NULL;
    struct lerr e = {0};
    assert_int_equal(ldeb_field(p, "Version", &v, &e), 0);
    assert_string_equal(v, "0.2.0-1");
    assert_true(ldeb_has_version(p, "0.2.0-1"));
    assert_false(ldeb_has_version(p, "0.3.0-1"));
    snprintf(p, sizeof(p), "%s/nothing.deb", tmp);
    assert_false(ldeb_has_version(p, "0.2.0-1"));
    assert_true(ldeb_field(p, "Version", &v, &e) < 0);

    /* apt's copy is copied into dir; a second call finds it kept there */
    char *got = NULL;
    enum ldeb_origin o;
    assert_int_equal(ldeb_recover("ledge", "0.2.0-1", "amd64", dir, apt, &got, &o, &e), 0);
    assert_int_equal(o, LDEB_APT);
    snprintf(p, sizeof(p), "%s/ledge_0.2.0-1_amd64.deb", dir);
    assert_string_equal(got, p);
    free(got);
    snprintf(p, sizeof(p), "%s/ledge_0.2.0-1_amd64.deb", apt);
    unlink(p);
    assert_int_equal(ldeb_recover("ledge", "0.2.0-1", "amd64", dir, apt, &got, &o, &e), 0);
    assert_int_equal(o, LDEB_KEPT);
    free(got);
    /* a version nobody has: dpkg-repack is tried (it is not installed here, or ledge is not
     * installed at that version); the error says what was tried */
    got = NULL;
    assert_int_equal(ldeb_recover("ledge", "9.9-1", "amd64", dir, apt, &got, &o, &e), -ENOENT);
    assert_null(got);
    assert_non_null(strstr(e.msg, "no package of the installed ledge 9.9-1"));
    assert_non_null(strstr(e.msg, "dpkg-repack"));
    assert_non_null(strstr(e.msg, "ledge_9.9-1_amd64.deb"));

    /* a package dpkg does not know */
    char *ver = NULL, *arch = NULL;
    int r = ldeb_installed("ledge-no-such-package", &ver, &arch, &e);
    assert_int_equal(r, -ENOENT);
    assert_non_null(strstr(e.msg, "not installed as a package"));
    snprintf(p, sizeof(p), "rm -rf %s", tmp);
    assert_int_equal(system(p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_bounded),
        cmocka_unit_test(test_url_coding),
        cmocka_unit_test(test_strv_and_numbers),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_crypto),
        cmocka_unit_test(test_fs_atomic),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_proc_starttime),
        cmocka_unit_test(test_deb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
