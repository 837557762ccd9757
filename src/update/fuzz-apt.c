/* fuzz-apt.c — libFuzzer target for apt.c's parsers: arbitrary bytes as `apt-cache policy` and
 * `apt-cache show` output; whatever parses must hold what the header promises. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "update/apt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = lstr_ndup(data, size);
    if (!text)
        return 0;
    struct upd_apt_policy p = {0};
    struct lerr e = {0};
    if (upd_apt_policy_parse(text, "ledge", &p, &e) == 0) {
        if ((p.candidate && (!*p.candidate || strcmp(p.candidate, "(none)") == 0)) ||
            (p.installed && (!*p.installed || strchr(p.installed, '\n'))))
            abort();
        upd_apt_policy_clear(&p);
    }
    unsigned long long n;
    upd_apt_size_parse(text, &n);
    free(text);
    return 0;
}
