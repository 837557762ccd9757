/* apt.h — what `ledge update --apt` reads from apt (docs/update.md): `apt-cache policy PKG`
 * (installed, candidate, whether any repository lists the package) and the Size field of
 * `apt-cache show`. Pure parsers of apt's C-locale output; update.c runs the programs. */
#pragma once

#include <stdbool.h>

#include "base/errors.h"

struct upd_apt_policy {
    char *installed; /* NULL for "(none)" */
    char *candidate; /* NULL for "(none)": no version apt would install */
    bool offered;    /* a source other than /var/lib/dpkg/status lists a version */
};

/* Parse the first package block of `LC_ALL=C apt-cache policy pkg`. -ENOENT when the text has no
 * block for pkg (apt knows no such package), -EINVAL with err for a block without a Candidate
 * line. */
int upd_apt_policy_parse(const char *text, const char *pkg, struct upd_apt_policy *ret,
                         struct lerr *err);
void upd_apt_policy_clear(struct upd_apt_policy *p);

/* The first "Size:" field of `apt-cache show` output (bytes). -ENOENT when there is none,
 * -EINVAL when it is not a number. */
int upd_apt_size_parse(const char *text, unsigned long long *ret);
