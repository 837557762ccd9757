/* fuzz-check.c — libFuzzer target for the parsers `ledge check` feeds with untrusted bytes: an
 * NTP reply from the network, and host files (os-release, meminfo, cpuinfo) and host names. The
 * first byte picks the parser; results must be self-consistent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check/check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t which = data[0] % 5;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    switch (which) {
    case 0: {
        struct check_os os;
        if (check_parse_os_release(text, n, &os) == 0 &&
            (strlen(os.id) >= sizeof(os.id) || strlen(os.pretty) >= sizeof(os.pretty)))
            abort();
        break;
    }
    case 1: {
        uint64_t v;
        if (check_parse_meminfo(text, n, &v) == 0 && v % 1024 != 0)
            abort();
        break;
    }
    case 2:
        (void)check_cpuinfo_has_flag(text, n, "hypervisor");
        break;
    case 3: {
        char *s = malloc(n + 1); /* the input is not NUL-terminated */
        if (!s)
            return 0;
        memcpy(s, text, n);
        s[n] = 0;
        struct lerr why = {0};
        if (check_hostname_valid(s, &why) == 0 && (strlen(s) > CHECK_HOSTNAME_MAX || !*s))
            abort();
        free(s);
        break;
    }
    case 4: {
        /* The reply must echo this request's timestamp; the fuzzer learns it from the seed. */
        int64_t t1 = 1700000000000;
        uint64_t sent = check_ntp_timestamp(t1);
        int64_t off;
        (void)check_ntp_parse_reply(data + 1, n, sent, t1, t1 + 10, &off);
        break;
    }
    }
    return 0;
}
