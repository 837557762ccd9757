/* test-apt.c — unit tests for apt.c: `apt-cache policy` blocks (a newer candidate from a
 * repository, only dpkg's status, no candidate, another package's block, multiarch names, junk)
 * and the Size field of `apt-cache show`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "update/apt.h"

static void test_policy_newer_from_repository(void **state)
{
    (void)state;
    const char *text = "ledge:\n"
                       "  Installed: 0.1.0-1\n"
                       "  Candidate: 0.1.0-2\n"
                       "  Version table:\n"
                       "     0.1.0-2 500\n"
                       "        500 file:/srv/ledge-repo ./ Packages\n"
                       " *** 0.1.0-1 100\n"
                       "        100 /var/lib/dpkg/status\n";
    struct upd_apt_policy p = {0};
    struct lerr e = {0};
    assert_int_equal(upd_apt_policy_parse(text, "ledge", &p, &e), 0);
    assert_string_equal(p.installed, "0.1.0-1");
    assert_string_equal(p.candidate, "0.1.0-2");
    assert_true(p.offered);
    upd_apt_policy_clear(&p);
    assert_null(p.candidate);
}

static void test_policy_only_dpkg_status(void **state)
{
    (void)state;
    /* installed with dpkg -i, no repository lists it: apt's candidate is the installed one */
    const char *text = "ledge:\n"
                       "  Installed: 0.1.0-1\n"
                       "  Candidate: 0.1.0-1\n"
                       "  Version table:\n"
                       " *** 0.1.0-1 100\n"
                       "        100 /var/lib/dpkg/status\n";
    struct upd_apt_policy p = {0};
    assert_int_equal(upd_apt_policy_parse(text, "ledge", &p, NULL), 0);
    assert_string_equal(p.candidate, "0.1.0-1");
    assert_false(p.offered);
    upd_apt_policy_clear(&p);
}

static void test_policy_up_to_date_with_repository(void **state)
{
    (void)state;
    const char *text = "ledge:\n"
                       "  Installed: 0.1.0-2\n"
                       "  Candidate: 0.1.0-2\n"
                       "  Version table:\n"
                       " *** 0.1.0-2 500\n"
                       "        500 http://deb.example.org/ledge bookworm/main amd64 Packages\n"
                       "        100 /var/lib/dpkg/status\n"
                       "     0.1.0-1 500\n"
                       "        500 http://deb.example.org/ledge bookworm/main amd64 Packages\n";
    struct upd_apt_policy p = {0};
    assert_int_equal(upd_apt_policy_parse(text, "ledge", &p, NULL), 0);
    assert_string_equal(p.installed, "0.1.0-2");
    assert_string_equal(p.candidate, "0.1.0-2");
    assert_true(p.offered);
    upd_apt_policy_clear(&p);
}

static void test_policy_none(void **state)
{
    (void)state;
    const char *text = "ledge:\n"
                       "  Installed: (none)\n"
                       "  Candidate: (none)\n"
                       "  Version table:\n";
    struct upd_apt_policy p = {0};
    assert_int_equal(upd_apt_policy_parse(text, "ledge", &p, NULL), 0);
    assert_null(p.installed);
    assert_null(p.candidate);
    assert_false(p.offered);
}

static void test_policy_unknown_package(void **state)
{
    (void)state;
    struct upd_apt_policy p = {0};
    assert_int_equal(upd_apt_policy_parse("", "ledge", &p, NULL), -ENOENT);
    assert_int_equal(upd_apt_policy_parse(NULL, "ledge", &p, NULL), -ENOENT);
    /* another package whose name starts the same is not ours */
    const char *other = "ledge-tools:\n  Installed: 1\n  Candidate: 2\n  Version table:\n"
                        "     2 500\n        500 file:/srv ./ Packages\n";
    assert_int_equal(upd_apt_policy_parse(other, "ledge", &p, NULL), -ENOENT);
}

static void test_policy_first_block_and_multiarch(void **state)
{
    (void)state;
    const char *text = "ledge:amd64:\n"
                       "  Installed: 1.0-1\n"
                       "  Candidate: 1:1.1-1\n"
                       "  Version table:\n"
                       "     1:1.1-1 990\n"
                       "        990 file:/srv/ledge-repo ./ Packages\r\n"
                       "ledge:arm64:\n"
                       "  Installed: (none)\n"
                       "  Candidate: 9.9\n";
    struct upd_apt_policy p = {0};
    assert_int_equal(upd_apt_policy_parse(text, "ledge", &p, NULL), 0);
    assert_string_equal(p.installed, "1.0-1");
    assert_string_equal(p.candidate, "1:1.1-1");
    assert_true(p.offered);
    upd_apt_policy_clear(&p);
}

static void test_policy_refuses_a_block_without_candidate(void **state)
{
    (void)state;
    struct upd_apt_policy p = {0};
    struct lerr e = {0};
    assert_int_equal(upd_apt_policy_parse("ledge:\n  Installed: 1\n", "ledge", &p, &e), -EINVAL);
    assert_non_null(strstr(lerr_str(&e), "Candidate"));
    /* a version line (indent 5) whose priority looks like a source is not a source */
    const char *text = "ledge:\n  Candidate: 2\n  Version table:\n     2 500\n";
    assert_int_equal(upd_apt_policy_parse(text, "ledge", &p, NULL), 0);
    assert_false(p.offered);
    upd_apt_policy_clear(&p);
}

static void test_size(void **state)
{
    (void)state;
    unsigned long long n = 0;
    assert_int_equal(upd_apt_size_parse("Package: ledge\nVersion: 1\nSize: 4096123\nMD5sum: x\n"
                                        "Size: 7\n",
                                        &n),
                     0);
    assert_int_equal(n, 4096123);
    assert_int_equal(upd_apt_size_parse("Package: ledge\nInstalled-Size: 12\n", &n), -ENOENT);
    assert_int_equal(upd_apt_size_parse("Size: 12k\n", &n), -EINVAL);
    assert_int_equal(upd_apt_size_parse("Size: \n", &n), -EINVAL);
    assert_int_equal(upd_apt_size_parse("Size: 99999999999999999999999\n", &n), -EINVAL);
    assert_int_equal(upd_apt_size_parse(NULL, &n), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_newer_from_repository),
        cmocka_unit_test(test_policy_only_dpkg_status),
        cmocka_unit_test(test_policy_up_to_date_with_repository),
        cmocka_unit_test(test_policy_none),
        cmocka_unit_test(test_policy_unknown_package),
        cmocka_unit_test(test_policy_first_block_and_multiarch),
        cmocka_unit_test(test_policy_refuses_a_block_without_candidate),
        cmocka_unit_test(test_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
