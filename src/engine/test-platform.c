/* test-platform.c — unit tests for the host/guest platform rule: normalising every architecture
 * spelling, the host's own platform, and which images run on which hosts, with the messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/utsname.h>

#include "engine/platform.h"

static void assert_norm(const char *os, const char *arch, const char *variant, const char *want)
{
    struct platform p;
    char buf[PLATFORM_STR_MAX];
    assert_int_equal(platform_normalize(os, arch, variant, &p), 0);
    assert_string_equal(platform_format(&p, buf), want);
}

static void test_normalize(void **state)
{
    assert_norm("Linux", "x86_64", NULL, "linux/amd64");
    assert_norm("linux", "amd64", "", "linux/amd64");
    assert_norm(NULL, "aarch64", NULL, "linux/arm64");
    assert_norm("linux", "arm64", "v8", "linux/arm64");
    assert_norm("linux", "armv7l", NULL, "linux/arm/v7");
    assert_norm("linux", "armhf", NULL, "linux/arm/v7");
    assert_norm("linux", "armel", NULL, "linux/arm/v6");
    assert_norm("linux", "armv6l", NULL, "linux/arm/v6");
    assert_norm("linux", "armv8l", NULL, "linux/arm/v8");
    assert_norm("linux", "arm", "7", "linux/arm/v7");
    assert_norm("linux", "arm", "v6", "linux/arm/v6");
    assert_norm("linux", "arm", NULL, "linux/arm");
    assert_norm("linux", "i686", NULL, "linux/386");
    assert_norm("windows", "AMD64", NULL, "windows/amd64");
    assert_norm("linux", "riscv64", NULL, "linux/riscv64");
    assert_norm("linux", "ppc64le", NULL, "linux/ppc64le");

    struct platform p;
    assert_int_equal(platform_normalize("linux", "", NULL, &p), -EINVAL);
    assert_int_equal(platform_normalize("linux", NULL, NULL, &p), -EINVAL);
    assert_int_equal(platform_normalize("linux", "averyveryverylongarchitecture", NULL, &p),
                     -EINVAL);
    assert_int_equal(platform_normalize("linux", "arm", "v77777777777777777", &p), -EINVAL);
}

static void test_host(void **state)
{
    struct platform p;
    assert_int_equal(platform_host(&p), 0);
    assert_string_equal(p.os, "linux");
    struct utsname u;
    assert_int_equal(uname(&u), 0);
#if defined(__x86_64__)
    assert_string_equal(p.arch, "amd64");
#elif defined(__aarch64__)
    assert_string_equal(p.arch, "arm64");
#elif defined(__arm__)
    /* under qemu-user the kernel reports what qemu emulates: armv7l */
    assert_string_equal(p.arch, "arm");
#endif
}

static struct platform host(const char *arch)
{
    struct platform p;
    assert_int_equal(platform_normalize("linux", arch, NULL, &p), 0);
    return p;
}

static void test_compatible(void **state)
{
    struct lerr err = {0};
    struct platform amd64 = host("x86_64"), arm64 = host("aarch64"), armv7 = host("armv7l"),
                    armv6 = host("armv6l");
    assert_int_equal(platform_compatible(&amd64, "linux", "amd64", NULL, &err), PLATFORM_MATCH);
    assert_int_equal(platform_compatible(&arm64, "linux", "arm64", "v8", &err), PLATFORM_MATCH);
    assert_int_equal(platform_compatible(&armv7, "linux", "arm", "v7", &err), PLATFORM_MATCH);
    assert_int_equal(platform_compatible(&armv7, "linux", "arm", "v6", &err), PLATFORM_MATCH);
    assert_int_equal(platform_compatible(&armv7, "linux", "arm", "", &err), PLATFORM_MATCH);
    assert_int_equal(platform_compatible(&amd64, "linux", "386", NULL, &err), PLATFORM_COMPAT_32);
    assert_int_equal(platform_compatible(&arm64, "linux", "arm", "v7", &err), PLATFORM_COMPAT_32);
    assert_int_equal(platform_compatible(&amd64, NULL, "amd64", NULL, &err), PLATFORM_UNDECLARED);
    assert_int_equal(platform_compatible(&amd64, "linux", "", NULL, &err), PLATFORM_UNDECLARED);
    assert_int_equal(err.code, 0);

    /* OS family: the rule is stated */
    assert_int_equal(platform_compatible(&amd64, "windows", "amd64", NULL, &err), -ENOEXEC);
    assert_non_null(strstr(err.msg, "image is built for windows/amd64, this host is linux/amd64"));
    assert_non_null(strstr(err.msg, "must be the host's OS family"));
    assert_non_null(strstr(err.msg, "a virtual machine counts as the host it is"));

    /* architecture */
    lerr_clear(&err);
    assert_int_equal(platform_compatible(&amd64, "linux", "arm64", NULL, &err), -ENOEXEC);
    assert_string_equal(err.msg,
                        "image is built for linux/arm64, this host is linux/amd64: a module's "
                        "image must match the host's OS family (linux) and an architecture the "
                        "host's CPU runs (amd64); use an image built for linux/amd64 or a "
                        "multi-platform image that includes it");
    assert_int_equal(platform_compatible(&arm64, "linux", "amd64", NULL, &err), -ENOEXEC);
    assert_int_equal(platform_compatible(&armv7, "linux", "arm64", NULL, &err), -ENOEXEC);
    assert_int_equal(platform_compatible(&amd64, "linux", "arm", "v7", &err), -ENOEXEC);

    /* ARM versions: newer than the CPU is refused */
    lerr_clear(&err);
    assert_int_equal(platform_compatible(&armv6, "linux", "arm", "v7", &err), -ENOEXEC);
    assert_non_null(strstr(err.msg, "linux/arm/v7, this host is linux/arm/v6"));
    assert_non_null(strstr(err.msg, "ARMv7 instructions"));

    /* unreadable platform */
    assert_int_equal(
        platform_compatible(&amd64, "linux", "a-very-long-architecture-name", NULL, &err),
        -ENOEXEC);
    assert_non_null(strstr(err.msg, "cannot read"));
    /* NULL err is allowed */
    assert_int_equal(platform_compatible(&amd64, "windows", "amd64", NULL, NULL), -ENOEXEC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_compatible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
