/* apt.c — parsers of apt-cache's output for `ledge update --apt` (apt.h): a policy block's
 * Installed and Candidate lines and its version table's sources, and a record's Size field. */
#include "update/apt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "base/str.h"

/* The next line of *p (without its newline) into line[0..*n]; false at the end. */
static bool next_line(const char **p, const char **line, size_t *n)
{
    if (!**p)
        return false;
    const char *s = *p, *nl = strchr(s, '\n');
    *line = s;
    *n = nl ? (size_t)(nl - s) : strlen(s);
    *p = nl ? nl + 1 : s + *n;
    return true;
}

static size_t indent(const char *line, size_t n)
{
    size_t i = 0;
    while (i < n && line[i] == ' ')
        i++;
    return i;
}

/* "Key: value" at line (after its indent): a new string with the value, "(none)" as NULL. */
static int field_value(const char *line, size_t n, const char *key, char **ret, bool *ret_found)
{
    size_t k = strlen(key);
    if (n < k + 1 || strncmp(line, key, k) != 0 || line[k] != ':')
        return 0;
    const char *v = line + k + 1;
    size_t vn = n - k - 1;
    while (vn && (*v == ' ' || *v == '\t'))
        v++, vn--;
    while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\r' || v[vn - 1] == '\t'))
        vn--;
    *ret_found = true;
    if (vn == 0 || (vn == 6 && strncmp(v, "(none)", 6) == 0)) {
        *ret = NULL;
        return 0;
    }
    *ret = lstr_ndup(v, vn);
    return *ret ? 0 : -ENOMEM;
}

/* A version table's source line, "        PRIO SOURCE...": is SOURCE something other than
 * dpkg's status file? (Version lines are indented 5, " *** " or spaces; sources 8.) */
static bool offering_source(const char *line, size_t n)
{
    size_t i = indent(line, n);
    if (i < 8 || i == n)
        return false;
    size_t d = i;
    if (line[d] == '-')
        d++;
    size_t digits = d;
    while (d < n && line[d] >= '0' && line[d] <= '9')
        d++;
    if (d == digits || d >= n || line[d] != ' ')
        return false;
    while (d < n && line[d] == ' ')
        d++;
    static const char status[] = "/var/lib/dpkg/status";
    size_t rest = n - d;
    while (rest && (line[d + rest - 1] == ' ' || line[d + rest - 1] == '\r'))
        rest--;
    if (rest == 0)
        return false;
    return !(rest == sizeof(status) - 1 && strncmp(line + d, status, rest) == 0);
}

int upd_apt_policy_parse(const char *text, const char *pkg, struct upd_apt_policy *ret,
                         struct lerr *err)
{
    const char *p = text ? text : "", *line;
    size_t n, k = strlen(pkg);
    bool in = false, has_candidate = false, has_installed = false, table = false;
    struct upd_apt_policy res = {0};
    int r = 0;
    while (next_line(&p, &line, &n)) {
        if (n == 0)
            continue;
        size_t i = indent(line, n);
        if (i == 0) {
            if (in)
                break; /* the next package's block */
            /* "pkg:" or "pkg:arch:" */
            in = n > k && strncmp(line, pkg, k) == 0 && line[k] == ':' && line[n - 1] == ':';
            continue;
        }
        if (!in)
            continue;
        if (!table) {
            const char *l = line + i;
            size_t ln = n - i;
            if (!has_installed &&
                (r = field_value(l, ln, "Installed", &res.installed, &has_installed)) < 0)
                goto fail;
            if (!has_candidate &&
                (r = field_value(l, ln, "Candidate", &res.candidate, &has_candidate)) < 0)
                goto fail;
            if (ln >= 14 && strncmp(l, "Version table:", 14) == 0)
                table = true;
            continue;
        }
        if (offering_source(line, n))
            res.offered = true;
    }
    if (!in) {
        r = -ENOENT;
        goto fail;
    }
    if (!has_candidate) {
        r = lerr_set(err, -EINVAL, "apt-cache policy %s printed no Candidate line", pkg);
        goto fail;
    }
    *ret = res;
    return 0;
fail:
    upd_apt_policy_clear(&res);
    return r;
}

void upd_apt_policy_clear(struct upd_apt_policy *p)
{
    if (!p)
        return;
    free(p->installed);
    free(p->candidate);
    *p = (struct upd_apt_policy){0};
}

int upd_apt_size_parse(const char *text, unsigned long long *ret)
{
    const char *p = text ? text : "", *line;
    size_t n;
    while (next_line(&p, &line, &n)) {
        if (n < 5 || strncmp(line, "Size:", 5) != 0)
            continue;
        char num[32];
        size_t i = 5;
        while (i < n && line[i] == ' ')
            i++;
        size_t e = n;
        while (e > i && (line[e - 1] == ' ' || line[e - 1] == '\r'))
            e--;
        if (e == i || e - i >= sizeof(num))
            return -EINVAL;
        memcpy(num, line + i, e - i);
        num[e - i] = 0;
        for (size_t c = 0; num[c]; c++)
            if (num[c] < '0' || num[c] > '9')
                return -EINVAL;
        unsigned long long v;
        if (lstr_to_u64(num, &v) < 0)
            return -EINVAL;
        *ret = v;
        return 0;
    }
    return -ENOENT;
}
