/* manifest.c — parses an IoT Edge deployment manifest (modulesContent) into struct deployment:
 * IoT Edge's defaults applied, every problem reported with its JSON path (see manifest.h and
 * docs/manifest.md for what is accepted and why). */
#include "agent/manifest.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/json.h"
#include "engine/createopts.h"
#include "image/creds.h"
#include "image/ref.h"

#define PATH_LEN 512     /* a JSON path in a message; longer ones are cut */
#define SHOW_MAX 64      /* bytes of a user-supplied value shown in a message */
#define KEY_SHOW_MAX 128 /* bytes of a key shown in a path */
#define SHOW_BUF (SHOW_MAX * 4 + 8)
#define CHUNKS_MAX 100     /* createOptions, createOptions01 .. createOptions99 (IoT Edge) */
#define IMAGE_NAME_MAX 255 /* docker reference: repository name incl. registry */
#define IMAGE_TAG_MAX 128

struct ctx {
    struct lstrv *errors; /* caller's list, may be NULL */
    size_t n_errors;
    struct lstrv *warnings;
    size_t n_warnings;
    bool oom;
};

/* ---- messages ------------------------------------------------------------------------------ */

/* Append s to dst escaped for a log line (quotes, backslashes and control bytes as escapes),
 * cut after max source bytes with "...". UTF-8 is kept and never cut inside a sequence. */
static void append_shown(char *dst, size_t size, const char *s, size_t max)
{
    size_t o = strlen(dst);
    size_t n = strlen(s);
    bool cut = n > max;
    if (cut) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n && o + 5 < size; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            o += (size_t)snprintf(dst + o, size - o, "\\x%02x", ch);
        } else {
            dst[o++] = (char)ch;
        }
    }
    if (cut && o + 4 < size) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = 0;
}

struct shown {
    char s[SHOW_BUF];
};

/* A user string as it appears in a message: quoted, escaped and bounded. */
static const char *show(struct shown *b, const char *s)
{
    b->s[0] = '"';
    b->s[1] = 0;
    append_shown(b->s, sizeof(b->s) - 1, s, SHOW_MAX);
    strcat(b->s, "\"");
    return b->s;
}

static void path_join(char *dst, size_t size, const char *base, const char *key)
{
    dst[0] = 0;
    if (base && *base) {
        int n = snprintf(dst, size, "%s.", base);
        if (n < 0 || (size_t)n >= size)
            return;
    }
    append_shown(dst, size, key, KEY_SHOW_MAX);
}

_printf_(5, 0) static void vreport(struct ctx *c, struct lstrv *list, size_t *count,
                                   const char *path, const char *fmt, va_list ap)
{
    (*count)++;
    if (!list || *count > MANIFEST_MAX_ERRORS)
        return;
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    char *s = (path && *path) ? lstr_printf("%s: %s", path, msg) : strdup(msg);
    if (lstrv_push_take(list, s) < 0)
        c->oom = true;
}

/* A problem that makes the manifest invalid. */
_printf_(3, 4) static void problem(struct ctx *c, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, c->errors, &c->n_errors, path, fmt, ap);
    va_end(ap);
}

/* Something accepted that the operator should hear about. */
_printf_(3, 4) static void note(struct ctx *c, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(c, c->warnings, &c->n_warnings, path, fmt, ap);
    va_end(ap);
}

static void report_overflow(struct ctx *c, struct lstrv *list, size_t count)
{
    if (list && count > MANIFEST_MAX_ERRORS &&
        lstrv_printf(list, "manifest: %zu more not shown", count - MANIFEST_MAX_ERRORS) < 0)
        c->oom = true;
}

/* ---- field access ---------------------------------------------------------------------------- */

/* The key under which obj holds `key`: the exact spelling if present, else the first that
 * matches case-insensitively — IoT Edge (Newtonsoft) reads properties that way. */
static const char *field_key(const json_t *obj, const char *key)
{
    const char *k;
    json_t *v;
    if (!json_is_object(obj))
        return NULL;
    if (json_object_get(obj, key)) {
        json_object_foreach ((json_t *)obj, k, v) {
            if (strcmp(k, key) == 0)
                return k;
        }
    }
    json_object_foreach ((json_t *)obj, k, v) {
        if (strcasecmp(k, key) == 0)
            return k;
    }
    return NULL;
}

/* The value of a field; JSON null counts as absent (it is how a twin patch deletes). */
static json_t *field(const json_t *obj, const char *key)
{
    const char *k = field_key(obj, key);
    json_t *v = k ? json_object_get(obj, k) : NULL;
    return json_is_null(v) ? NULL : v;
}

/* Warn about keys of obj that are not in known (NULL-terminated). Keys starting with '$' are
 * twin metadata ($version, $metadata) and pass silently; so do keys skip() accepts. */
static void check_keys(struct ctx *c, const char *path, const json_t *obj, const char *const *known,
                       bool (*skip)(const char *key))
{
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)obj, k, v) {
        if (k[0] == '$' || (skip && skip(k)))
            continue;
        const char *exact = NULL, *folded = NULL;
        for (size_t i = 0; known[i]; i++) {
            if (strcmp(k, known[i]) == 0)
                exact = known[i];
            else if (strcasecmp(k, known[i]) == 0)
                folded = known[i];
        }
        if (exact)
            continue;
        char p[PATH_LEN];
        path_join(p, sizeof(p), path, k);
        struct shown s;
        if (!folded)
            note(c, p, "unknown key, ignored");
        else if (field_key(obj, folded) == k)
            note(c, p, "read as %s (keys match case-insensitively, as in IoT Edge)",
                 show(&s, folded));
        else
            note(c, p, "ignored: %s is also given", show(&s, field_key(obj, folded)));
    }
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* v as a C string, or NULL after reporting why not. */
static const char *string_value(struct ctx *c, const char *path, const json_t *v)
{
    if (!json_is_string(v)) {
        problem(c, path, "must be a string, got %s", json_type_name(v));
        return NULL;
    }
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) {
        problem(c, path, "must not contain NUL characters");
        return NULL;
    }
    return s;
}

static bool is_blank(const char *s)
{
    for (; *s; s++)
        if (!strchr(" \t\r\n\f\v", *s))
            return false;
    return true;
}

/* "null" in any case, surrounded by blanks. */
static bool is_null_word(const char *s)
{
    s += strspn(s, " \t\r\n\f\v");
    if (strncasecmp(s, "null", 4) != 0)
        return false;
    return is_blank(s + 4);
}

/* Shortest decimal form that reads back as v, with a decimal point like Newtonsoft writes. */
static char *real_to_string(double v)
{
    char buf[48];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (!strpbrk(buf, ".eEn"))
        strcat(buf, ".0");
    return strdup(buf);
}

/* A scalar as a string the way IoT Edge reads a string-typed property: strings as they are,
 * numbers in their JSON form, booleans as "true"/"false"; absent as NULL. Objects and arrays
 * are errors. Returns 0, -EINVAL (reported) or -ENOMEM. */
static int scalar_string(struct ctx *c, const char *path, const json_t *v, char **ret)
{
    char *s;
    if (!v) {
        *ret = NULL;
        return 0;
    }
    switch (json_typeof(v)) {
    case JSON_STRING: {
        const char *str = string_value(c, path, v);
        if (!str)
            return -EINVAL;
        s = strdup(str);
        break;
    }
    case JSON_INTEGER:
        s = lstr_printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        s = real_to_string(json_real_value(v));
        break;
    case JSON_TRUE:
        s = strdup("true");
        break;
    case JSON_FALSE:
        s = strdup("false");
        break;
    default:
        problem(c, path, "must be a string, number or boolean, got %s", json_type_name(v));
        return -EINVAL;
    }
    if (!s)
        return -ENOMEM;
    *ret = s;
    return 0;
}

/* An enum spelled as one of names (case-insensitively, as Newtonsoft's StringEnumConverter
 * reads it). Returns the index, or -1 after reporting. */
static int enum_value(struct ctx *c, const char *path, const json_t *v, const char *const *names,
                      size_t n, const char *expect)
{
    struct shown s;
    if (!json_is_string(v)) {
        problem(c, path, "must be %s, got %s", expect, json_type_name(v));
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(json_string_value(v), names[i]) == 0 &&
            strlen(names[i]) == json_string_length(v))
            return (int)i;
    problem(c, path, "must be %s, got %s", expect, show(&s, json_string_value(v)));
    return -1;
}

/* A JSON integer in [min, max] (every numeric field of the manifest has a documented range), or
 * false after reporting "must be an integer MIN-MAX (unit), got X": the range, what it means when
 * unit is not NULL, and what was there instead. */
static bool integer_range(struct ctx *c, const char *path, const json_t *v, long long min,
                          long long max, const char *unit, long long *ret)
{
    if (json_is_integer(v) && json_integer_value(v) >= min && json_integer_value(v) <= max) {
        *ret = json_integer_value(v);
        return true;
    }
    char range[64], got[SHOW_BUF];
    snprintf(range, sizeof(range), min < 0 ? "%lld to %lld" : "%lld-%lld", min, max);
    struct shown sh;
    if (json_is_integer(v)) {
        snprintf(got, sizeof(got), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_real(v)) {
        _cleanup_free_ char *r = real_to_string(json_real_value(v));
        snprintf(got, sizeof(got), "%s", r ? r : "a number");
    } else if (json_is_string(v)) {
        snprintf(got, sizeof(got), "%s", show(&sh, json_string_value(v)));
    } else {
        snprintf(got, sizeof(got), "%s", json_type_name(v));
    }
    problem(c, path, "must be an integer %s%s%s%s, got %s", range, unit ? " (" : "",
            unit ? unit : "", unit ? ")" : "", got);
    return false;
}

/* ---- names ----------------------------------------------------------------------------------- */

static const char *const status_names[] = {"running", "stopped"};
static const char *const restart_names[] = {"never", "on-failure", "on-unhealthy", "always"};
static const char *const pull_names[] = {"on-create", "never"};
static const char *const type_names[] = {"docker", "process"};

const char *module_status_name(enum module_status s)
{
    return (unsigned)s < ARRAY_SIZE(status_names) ? status_names[s] : "unknown";
}
const char *restart_policy_name(enum restart_policy p)
{
    return (unsigned)p < ARRAY_SIZE(restart_names) ? restart_names[p] : "unknown";
}
const char *pull_policy_name(enum pull_policy p)
{
    return (unsigned)p < ARRAY_SIZE(pull_names) ? pull_names[p] : "unknown";
}
const char *module_type_name(enum module_type t)
{
    return (unsigned)t < ARRAY_SIZE(type_names) ? type_names[t] : "unknown";
}

static bool is_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}
static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}
static bool is_lower_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || is_digit(ch);
}

/* A container name as docker accepts it: [a-zA-Z0-9][a-zA-Z0-9_.-]+ (two characters at least),
 * bounded. */
static bool module_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 2 || n > MODULE_NAME_MAX || !is_alnum(s[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!is_alnum(s[i]) && !strchr("_.-", s[i]))
            return false;
    return true;
}

/* ---- image references ------------------------------------------------------------------------ */

/* path-component := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)* */
static const char *check_path_component(const char *s, size_t n)
{
    if (n == 0)
        return "empty path component";
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            return "repository names must be lowercase";
    size_t i = 0;
    for (;;) {
        size_t start = i;
        while (i < n && is_lower_alnum(s[i]))
            i++;
        if (i == start)
            return "invalid repository name component";
        if (i == n)
            return NULL;
        if (s[i] == '.') {
            i++;
        } else if (s[i] == '_') {
            i++;
            if (i < n && s[i] == '_')
                i++;
        } else if (s[i] == '-') {
            while (i < n && s[i] == '-')
                i++;
        } else {
            return "invalid repository name component";
        }
        if (i == n)
            return "invalid repository name component";
    }
}

static bool port_valid(const char *s, size_t n)
{
    if (n == 0 || n > 5 || s[0] == '0')
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= 65535;
}

/* domain := host [':' port], host := label ('.' label)* | '[' IPv6 ']';
 * plus IoT Edge's nested-edge "$upstream:<port>", resolved later to the parent's host name. */
static const char *check_domain(const char *s, size_t n)
{
    if (n >= 9 && memcmp(s, "$upstream", 9) == 0) {
        if (n == 9 || s[9] != ':')
            return "$upstream needs a port, as in $upstream:443";
        return port_valid(s + 10, n - 10) ? NULL : "invalid registry port";
    }
    size_t host_end;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close || close == s + 1)
            return "invalid registry host";
        for (const char *p = s + 1; p < close; p++)
            if (!is_digit(*p) && !strchr("abcdefABCDEF:.", *p))
                return "invalid registry host";
        host_end = (size_t)(close - s) + 1;
    } else {
        const char *colon = memchr(s, ':', n);
        host_end = colon ? (size_t)(colon - s) : n;
        size_t label = 0;
        for (size_t i = 0; i <= host_end; i++) {
            if (i == host_end || s[i] == '.') {
                if (label == 0 || s[i - 1] == '-' || s[i - label] == '-')
                    return "invalid registry host";
                label = 0;
            } else if (is_alnum(s[i]) || s[i] == '-') {
                label++;
            } else {
                return "invalid registry host";
            }
        }
    }
    if (host_end == n)
        return NULL;
    if (s[host_end] != ':' || !port_valid(s + host_end + 1, n - host_end - 1))
        return "invalid registry port";
    return NULL;
}

/* digest := algorithm ':' hex{32,}, algorithm := [A-Za-z][A-Za-z0-9]* ([+._-] ...)* */
static bool digest_valid(const char *s)
{
    const char *colon = strchr(s, ':');
    if (!colon || colon == s)
        return false;
    bool need_alpha = true;
    for (const char *p = s; p < colon; p++) {
        if (need_alpha) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
                return false;
            need_alpha = false;
        } else if (strchr("+._-", *p)) {
            need_alpha = true;
        } else if (!is_alnum(*p)) {
            return false;
        }
    }
    if (need_alpha)
        return false;
    size_t hex = strlen(colon + 1);
    if (hex < 32 || hex > 256)
        return false;
    for (const char *p = colon + 1; *p; p++)
        if (!is_digit(*p) && !strchr("abcdefABCDEF", *p))
            return false;
    return true;
}

/* Where the registry part of an image ends (0 when there is none): the first component when
 * more follow and it contains '.' or ':', is "localhost" or is IoT Edge's "$upstream..." */
static size_t image_domain_len(const char *s, size_t n)
{
    const char *slash = memchr(s, '/', n);
    if (!slash)
        return 0;
    size_t len = (size_t)(slash - s);
    if (memchr(s, '.', len) || memchr(s, ':', len) || (len == 9 && !memcmp(s, "localhost", 9)) ||
        s[0] == '$')
        return len;
    return 0;
}

/* Check a trimmed reference against docker's grammar; *ret_tagged says whether it carries a
 * tag or a digest. Returns NULL when valid, else why not. */
static const char *image_check(const char *image, bool *ret_tagged)
{
    size_t len = strlen(image);
    if (len == 0)
        return "empty";
    const char *at = strchr(image, '@');
    size_t name_end = at ? (size_t)(at - image) : len;
    if (at && !digest_valid(at + 1))
        return "invalid digest";
    const char *slash = memrchr(image, '/', name_end);
    const char *colon = memrchr(image, ':', name_end);
    size_t repo_end = name_end;
    bool tagged = at != NULL;
    if (colon && (!slash || colon > slash)) {
        const char *tag = colon + 1;
        size_t tag_len = name_end - (size_t)(tag - image);
        if (tag_len == 0 || tag_len > IMAGE_TAG_MAX || !(is_alnum(tag[0]) || tag[0] == '_'))
            return "invalid tag";
        for (size_t i = 1; i < tag_len; i++)
            if (!is_alnum(tag[i]) && !strchr("_.-", tag[i]))
                return "invalid tag";
        repo_end = (size_t)(colon - image);
        tagged = true;
    }
    if (repo_end == 0)
        return "missing repository name";
    if (repo_end > IMAGE_NAME_MAX)
        return "repository name longer than 255 characters";
    size_t start = image_domain_len(image, repo_end);
    if (start) {
        const char *why = check_domain(image, start);
        if (why)
            return why;
        start++;
    }
    while (start <= repo_end) {
        const char *next = memchr(image + start, '/', repo_end - start);
        size_t end = next ? (size_t)(next - image) : repo_end;
        const char *why = check_path_component(image + start, end - start);
        if (why)
            return why;
        start = end + 1;
    }
    *ret_tagged = tagged;
    return NULL;
}

/* Normalise (trim, validate, add ":latest"); on failure *why says what is wrong. */
static int image_normalize(const char *image, char **ret, const char **why)
{
    while (*image && strchr(" \t\r\n\f\v", *image))
        image++;
    size_t n = strlen(image);
    while (n > 0 && strchr(" \t\r\n\f\v", image[n - 1]))
        n--;
    _cleanup_free_ char *trimmed = strndup(image, n);
    if (!trimmed)
        return -ENOMEM;
    bool tagged = false;
    *why = image_check(trimmed, &tagged);
    if (*why)
        return -EINVAL;
    char *s = tagged ? TAKE_PTR(trimmed) : lstr_printf("%s:latest", trimmed);
    if (!s)
        return -ENOMEM;
    *ret = s;
    return 0;
}

int manifest_normalize_image(const char *image, char **ret)
{
    const char *why;
    if (!image)
        return -EINVAL;
    return image_normalize(image, ret, &why);
}

/* ---- module settings ------------------------------------------------------------------------- */

/* createOptions followed by exactly two digits 01..99; returns the number or 0. */
static int chunk_number(const char *key)
{
    if (strncasecmp(key, "createOptions", 13) != 0)
        return 0;
    const char *d = key + 13;
    if (!is_digit(d[0]) || !is_digit(d[1]) || d[2])
        return 0;
    return (d[0] - '0') * 10 + (d[1] - '0');
}

static bool skip_create_options_chunk(const char *key)
{
    return strncasecmp(key, "createOptions", 13) == 0 && key[13];
}

struct co_report {
    struct ctx *c;
    bool notes;
};

static void co_report(void *ud, bool error, const char *path, const char *msg)
{
    struct co_report *r = ud;
    if (error)
        problem(r->c, path, "%s", msg);
    else if (r->notes)
        note(r->c, path, "%s", msg);
}

/* createOptions as IoT Edge reads them (engine/createopts.h): typed, coerced, in the API's
 * spelling; every value that cannot be coerced is a problem at its path. Takes given. */
static int normalize_create_options(struct ctx *c, const char *path, json_t *given, bool notes,
                                    json_t **ret)
{
    struct co_report r = {c, notes};
    json_t *doc = NULL;
    int res = createopts_normalize(given, path, co_report, &r, &doc);
    json_decref(given);
    if (res < 0)
        return res;
    if (json_object_size(doc) == 0) { /* only nulls: no options */
        json_decref(doc);
        doc = NULL;
    }
    *ret = doc;
    return 0;
}

/* settings.createOptions (+ chunks createOptions01..99 joined in order) as a normalised
 * ContainerCreate object; NULL for none ("", blank, "null", {}). The direct object form IoT Edge
 * also reads (it stringifies the token) is accepted when there are no chunks. notes: report the
 * fields the model does not know (not for system modules, whose createOptions ledge ignores). */
static int parse_create_options(struct ctx *c, const char *spath, const json_t *settings,
                                bool notes, json_t **ret)
{
    const json_t *chunk[CHUNKS_MAX] = {0};
    const char *chunk_key[CHUNKS_MAX] = {0};
    char p[PATH_LEN];
    struct shown s1;
    bool bad = false;
    int highest = 0, lowest = 0;

    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)settings, k, v) {
        if (!skip_create_options_chunk(k))
            continue;
        path_join(p, sizeof(p), spath, k);
        int i = chunk_number(k);
        if (i == 0) {
            problem(c, p, "not a createOptions chunk name (createOptions01 to createOptions99)");
            bad = true;
        } else if (chunk[i]) {
            problem(c, p, "duplicate chunk: %s is also given", show(&s1, chunk_key[i]));
            bad = true;
        } else {
            chunk[i] = v;
            chunk_key[i] = k;
            highest = i > highest ? i : highest;
            lowest = (lowest == 0 || i < lowest) ? i : lowest;
        }
    }
    const char *base_key = field_key(settings, "createOptions");
    json_t *base = field(settings, "createOptions");
    char base_path[PATH_LEN];
    path_join(base_path, sizeof(base_path), spath, base_key ? base_key : "createOptions");

    if (highest > 0 && !base) {
        problem(c, base_path, "missing, but chunk %s is present", show(&s1, chunk_key[lowest]));
        bad = true;
    }
    for (int i = 1; i < highest; i++) {
        if (chunk[i])
            continue;
        char name[32];
        snprintf(name, sizeof(name), "createOptions%02d", i);
        path_join(p, sizeof(p), spath, name);
        problem(c, p, "missing; chunks must be consecutive (%s is present)",
                show(&s1, chunk_key[highest]));
        bad = true;
    }

    _cleanup_lbuf_ struct lbuf text = LBUF_INIT;
    if (base && json_is_object(base) && highest == 0) {
        if (bad)
            return -EINVAL;
        if (json_object_size(base) == 0) {
            *ret = NULL;
            return 0;
        }
        json_t *copy = json_deep_copy(base);
        if (!copy)
            return -ENOMEM;
        return normalize_create_options(c, base_path, copy, notes, ret);
    }
    if (base) {
        if (!json_is_string(base)) {
            problem(c, base_path, "must be a string holding JSON, got %s", json_type_name(base));
            bad = true;
        } else if (lbuf_append(&text, json_string_value(base), json_string_length(base)) < 0) {
            return -ENOMEM;
        }
    }
    for (int i = 1; i <= highest; i++) {
        if (!chunk[i])
            continue;
        if (!json_is_string(chunk[i])) {
            path_join(p, sizeof(p), spath, chunk_key[i]);
            problem(c, p, "must be a string, got %s", json_type_name(chunk[i]));
            bad = true;
        } else if (lbuf_append(&text, json_string_value(chunk[i]), json_string_length(chunk[i])) <
                   0) {
            return -ENOMEM;
        }
    }
    if (bad)
        return -EINVAL;
    if (text.data && strlen(text.data) != text.len) {
        problem(c, base_path, "must not contain NUL characters");
        return -EINVAL;
    }
    /* IoT Edge: blank or "null" (any case) means no options. */
    if (!text.data || is_blank(text.data) || is_null_word(text.data)) {
        *ret = NULL;
        return 0;
    }
    json_t *j = NULL;
    struct lerr e = {0};
    if (ljson_parse(text.data, text.len, &j, &e) < 0) {
        problem(c, base_path, "%s%s", e.msg, highest ? " (in the joined chunks)" : "");
        return -EINVAL;
    }
    if (json_is_null(j) || (json_is_object(j) && json_object_size(j) == 0)) {
        json_decref(j);
        *ret = NULL;
        return 0;
    }
    if (!json_is_object(j)) {
        problem(c, base_path, "must be a JSON object, got %s", json_type_name(j));
        json_decref(j);
        return -EINVAL;
    }
    return normalize_create_options(c, base_path, j, notes, ret);
}

/* env: {"NAME": {"value": ...}} -> {"NAME": "..."} */
static int parse_env(struct ctx *c, const char *path, const json_t *env, json_t **ret)
{
    static const char *const entry_keys[] = {"value", NULL};
    json_t *out = json_object();
    bool bad = false;
    char p[PATH_LEN], vp[PATH_LEN];
    if (!out)
        return -ENOMEM;
    if (env && !json_is_object(env)) {
        problem(c, path, "must be an object {\"NAME\": {\"value\": \"...\"}}, got %s",
                json_type_name(env));
        json_decref(out);
        return -EINVAL;
    }
    const char *k;
    json_t *entry;
    json_object_foreach ((json_t *)env, k, entry) {
        path_join(p, sizeof(p), path, k);
        if (!*k || strchr(k, '=')) {
            problem(c, p, "variable names must not be empty or contain '='");
            bad = true;
            continue;
        }
        if (!json_is_object(entry)) {
            problem(c, p, "must be an object {\"value\": \"...\"}, got %s", json_type_name(entry));
            bad = true;
            continue;
        }
        check_keys(c, p, entry, entry_keys, NULL);
        path_join(vp, sizeof(vp), p, "value");
        _cleanup_free_ char *value = NULL;
        int r = scalar_string(c, vp, field(entry, "value"), &value);
        if (r == -ENOMEM) {
            json_decref(out);
            return r;
        }
        if (r < 0) {
            bad = true;
            continue;
        }
        /* IoT Edge: a missing or null value is the empty string. */
        if (json_object_set_new(out, k, json_string(value ? value : "")) < 0) {
            json_decref(out);
            return -ENOMEM;
        }
    }
    if (bad) {
        json_decref(out);
        return -EINVAL;
    }
    *ret = out;
    return 0;
}

/* ---- modules --------------------------------------------------------------------------------- */

enum role {
    ROLE_USER,  /* modules.<name> */
    ROLE_AGENT, /* systemModules.edgeAgent: validated, then only its env is kept */
    ROLE_HUB,   /* systemModules.edgeHub: becomes the process module "edgeHub" */
};

static void module_spec_clear(struct module_spec *m)
{
    free(m->name);
    free(m->version);
    free(m->image);
    json_decref(m->create_options);
    json_decref(m->env);
    free(m->path);
    json_decref(m->args);
    memset(m, 0, sizeof(*m));
}

static int parse_process_settings(struct ctx *c, const char *spath, const json_t *settings,
                                  struct module_spec *m)
{
    char p[PATH_LEN];
    bool bad = false;
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)settings, k, v) {
        if (strcasecmp(k, "image") == 0 || strncasecmp(k, "createOptions", 13) == 0) {
            path_join(p, sizeof(p), spath, k);
            problem(c, p, "not allowed for a process module");
            bad = true;
        }
    }
    path_join(p, sizeof(p), spath, "path");
    json_t *path = field(settings, "path");
    if (!path) {
        problem(c, p, "missing (the absolute path of the program)");
        bad = true;
    } else {
        const char *s = string_value(c, p, path);
        if (!s) {
            bad = true;
        } else if (s[0] != '/') {
            problem(c, p, "must be an absolute path");
            bad = true;
        } else if (!(m->path = strdup(s))) {
            return -ENOMEM;
        }
    }
    json_t *args = field(settings, "args");
    if (args) {
        path_join(p, sizeof(p), spath, "args");
        if (!json_is_array(args)) {
            problem(c, p, "must be an array of strings, got %s", json_type_name(args));
            bad = true;
        } else {
            size_t i;
            json_array_foreach (args, i, v) {
                char ap[PATH_LEN + 32];
                snprintf(ap, sizeof(ap), "%s[%zu]", p, i);
                if (!string_value(c, ap, v))
                    bad = true;
            }
            if (!bad && !(m->args = json_deep_copy(args)))
                return -ENOMEM;
        }
    }
    return bad ? -EINVAL : 0;
}

static int parse_docker_settings(struct ctx *c, const char *spath, const json_t *settings,
                                 bool user, struct module_spec *m)
{
    char p[PATH_LEN];
    bool bad = false;
    path_join(p, sizeof(p), spath, "image");
    json_t *image = field(settings, "image");
    if (!image) {
        problem(c, p, "missing");
        bad = true;
    } else {
        const char *s = string_value(c, p, image);
        const char *why = NULL;
        struct shown sh;
        int r = s ? image_normalize(s, &m->image, &why) : -EINVAL;
        if (r == -ENOMEM)
            return r;
        if (r < 0) {
            if (why)
                problem(c, p, "not a valid image reference %s: %s", show(&sh, s), why);
            bad = true;
        }
    }
    int r = parse_create_options(c, spath, settings, user, &m->create_options);
    if (r == -ENOMEM)
        return r;
    return (bad || r < 0) ? -EINVAL : 0;
}

static int parse_module(struct ctx *c, const char *path, const json_t *mod, enum role role,
                        bool schema_1_0, struct module_spec *m)
{
    static const char *const user_keys[] = {
        "type", "status", "restartPolicy", "imagePullPolicy", "startupOrder", "version", "settings",
        "env",  NULL};
    static const char *const agent_keys[] = {
        "type", "imagePullPolicy", "version", "settings", "env", NULL};
    static const char *const docker_keys[] = {"image", "createOptions", NULL};
    static const char *const process_keys[] = {"path", "args", NULL};
    char p[PATH_LEN];
    bool bad = false;
    int r, i;

    if (!json_is_object(mod)) {
        problem(c, path, "must be an object, got %s", json_type_name(mod));
        return -EINVAL;
    }
    check_keys(c, path, mod, role == ROLE_AGENT ? agent_keys : user_keys, NULL);

    /* System modules keep IoT Edge's shape (type "docker"); "process" is for user modules. */
    const char *expect = role == ROLE_USER ? "\"docker\" or \"process\"" : "\"docker\"";
    struct shown sh;
    path_join(p, sizeof(p), path, "type");
    json_t *type = field(mod, "type");
    int t = -1;
    if (!type)
        problem(c, p, "missing (must be %s)", expect);
    else if (!json_is_string(type))
        problem(c, p, "must be %s, got %s", expect, json_type_name(type));
    else if (lstr_eq(json_string_value(type), "docker"))
        t = MODULE_TYPE_DOCKER;
    else if (lstr_eq(json_string_value(type), "process") && role == ROLE_USER)
        t = MODULE_TYPE_PROCESS;
    else
        problem(c, p, "must be %s, got %s", expect, show(&sh, json_string_value(type)));
    if (t < 0)
        bad = true;
    else
        m->type = (enum module_type)t;

    m->status = MODULE_STATUS_RUNNING;
    m->restart_policy = role == ROLE_HUB ? RESTART_ALWAYS : RESTART_ON_UNHEALTHY;
    m->pull_policy = PULL_ON_CREATE;
    /* The hub routes for every module: it starts in the first group unless the manifest orders
     * it (an explicit 4294967295 included, so the default is not spelled as that value). */
    m->startup_order = role == ROLE_HUB ? 0 : MODULE_STARTUP_ORDER_DEFAULT;

    if (role != ROLE_AGENT) {
        path_join(p, sizeof(p), path, "status");
        json_t *status = field(mod, "status");
        if (!status && role == ROLE_USER) {
            problem(c, p, "missing (must be \"running\" or \"stopped\")");
            bad = true;
        } else if (status) {
            i = enum_value(c, p, status, status_names, ARRAY_SIZE(status_names),
                           "\"running\" or \"stopped\"");
            if (i < 0)
                bad = true;
            else
                m->status = (enum module_status)i;
        }

        path_join(p, sizeof(p), path, "restartPolicy");
        json_t *restart = field(mod, "restartPolicy");
        if (restart) {
            i = enum_value(c, p, restart, restart_names, ARRAY_SIZE(restart_names),
                           "\"never\", \"on-failure\", \"on-unhealthy\" or \"always\"");
            if (i < 0)
                bad = true;
            else
                m->restart_policy = (enum restart_policy)i;
        }

        path_join(p, sizeof(p), path, "startupOrder");
        json_t *order = field(mod, "startupOrder");
        long long o;
        if (order) {
            if (!integer_range(c, p, order, 0, UINT32_MAX, NULL, &o))
                bad = true;
            else
                m->startup_order = (uint32_t)o;
            if (schema_1_0)
                note(c, p, "needs schemaVersion 1.1; honoured anyway, as IoT Edge does");
        }
    }

    path_join(p, sizeof(p), path, "imagePullPolicy");
    json_t *pull = field(mod, "imagePullPolicy");
    if (pull) {
        i = enum_value(c, p, pull, pull_names, ARRAY_SIZE(pull_names),
                       "\"on-create\" or \"never\"");
        if (i < 0)
            bad = true;
        else
            m->pull_policy = (enum pull_policy)i;
    }

    path_join(p, sizeof(p), path, "version");
    r = scalar_string(c, p, field(mod, "version"), &m->version);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        bad = true;
    if (m->version && !*m->version) {
        /* IoT Edge reads an absent version as "": the two must compare (and hash) equal. */
        free(m->version);
        m->version = NULL;
    }

    path_join(p, sizeof(p), path, "env");
    r = parse_env(c, p, field(mod, "env"), &m->env);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        bad = true;

    path_join(p, sizeof(p), path, "settings");
    json_t *settings = field(mod, "settings");
    if (!settings) {
        problem(c, p, "missing");
        bad = true;
    } else if (!json_is_object(settings)) {
        problem(c, p, "must be an object, got %s", json_type_name(settings));
        bad = true;
    } else if (t == MODULE_TYPE_DOCKER) {
        check_keys(c, p, settings, docker_keys, skip_create_options_chunk);
        r = parse_docker_settings(c, p, settings, role == ROLE_USER, m);
        if (r == -ENOMEM)
            return r;
        if (r < 0)
            bad = true;
    } else if (t == MODULE_TYPE_PROCESS) {
        check_keys(c, p, settings, process_keys, skip_create_options_chunk);
        r = parse_process_settings(c, p, settings, m);
        if (r == -ENOMEM)
            return r;
        if (r < 0)
            bad = true;
    }
    return bad ? -EINVAL : 0;
}

/* SHA-256 over the key-sorted compact JSON of everything that forces a recreate. createOptions
 * is the parsed object, so its key order and whitespace do not matter. Changing this
 * serialisation recreates every module after an upgrade: treat it as a compatibility break. */
static int module_hash(struct module_spec *m)
{
    _cleanup_json_ json_t *o = json_object();
    if (!o)
        return -ENOMEM;
    int r = json_object_set_new(o, "type", json_string(module_type_name(m->type)));
    r |= json_object_set_new(o, "restartPolicy",
                             json_string(restart_policy_name(m->restart_policy)));
    r |= json_object_set_new(o, "imagePullPolicy", json_string(pull_policy_name(m->pull_policy)));
    r |= json_object_set_new(o, "startupOrder", json_integer((json_int_t)m->startup_order));
    r |= json_object_set(o, "env", m->env);
    if (m->image)
        r |= json_object_set_new(o, "image", json_string(m->image));
    if (m->create_options)
        r |= json_object_set(o, "createOptions", m->create_options);
    if (m->version)
        r |= json_object_set_new(o, "version", json_string(m->version));
    if (m->path)
        r |= json_object_set_new(o, "path", json_string(m->path));
    if (m->args)
        r |= json_object_set(o, "args", m->args);
    if (r)
        return -ENOMEM;
    _cleanup_free_ char *text = ljson_dump_sorted(o);
    if (!text)
        return -ENOMEM;
    return lcrypto_sha256_hex(text, strlen(text), m->config_hash);
}

static int module_cmp(const void *a, const void *b)
{
    return strcmp(((const struct module_spec *)a)->name, ((const struct module_spec *)b)->name);
}

static int credential_cmp(const void *a, const void *b)
{
    return strcmp(((const struct registry_credential *)a)->name,
                  ((const struct registry_credential *)b)->name);
}

/* ---- $edgeAgent ------------------------------------------------------------------------------ */

/* .NET Version syntax: 2 to 4 dot-separated decimal components; absent ones are -1. */
static bool version_parse(const char *s, long v[4])
{
    int n = 0;
    v[0] = v[1] = v[2] = v[3] = -1;
    for (;;) {
        if (n == 4 || !is_digit(*s))
            return false;
        long x = 0;
        while (is_digit(*s)) {
            x = x * 10 + (*s++ - '0');
            if (x > 0x7fffffff)
                return false;
        }
        v[n++] = x;
        if (!*s)
            return n >= 2;
        if (*s++ != '.')
            return false;
    }
}

static void parse_credentials(struct ctx *c, const char *path, const json_t *creds,
                              struct deployment *d)
{
    static const char *const cred_keys[] = {"username", "password", "address", NULL};
    static const char *const fields[] = {"username", "password", "address"};
    if (!json_is_object(creds)) {
        problem(c, path, "must be an object, got %s", json_type_name(creds));
        return;
    }
    d->credentials =
        calloc(json_object_size(creds) ? json_object_size(creds) : 1, sizeof(*d->credentials));
    if (!d->credentials) {
        c->oom = true;
        return;
    }
    const char *k;
    json_t *v;
    char p[PATH_LEN], fp[PATH_LEN];
    json_object_foreach ((json_t *)creds, k, v) {
        path_join(p, sizeof(p), path, k);
        if (!json_is_object(v)) {
            problem(c, p, "must be an object {\"username\", \"password\", \"address\"}, got %s",
                    json_type_name(v));
            continue;
        }
        check_keys(c, p, v, cred_keys, NULL);
        const char *val[3] = {0};
        bool ok = true;
        for (size_t i = 0; i < 3; i++) {
            path_join(fp, sizeof(fp), p, fields[i]);
            json_t *f = field(v, fields[i]);
            if (!f) {
                problem(c, fp, "missing");
                ok = false;
            } else if (!(val[i] = string_value(c, fp, f))) {
                ok = false;
            } else if (is_blank(val[i])) {
                problem(c, fp, "must not be empty");
                ok = false;
            }
        }
        if (!ok)
            continue;
        struct registry_credential *rc = &d->credentials[d->n_credentials++];
        rc->name = strdup(k);
        rc->username = strdup(val[0]);
        rc->password = strdup(val[1]);
        rc->address = strdup(val[2]);
        if (!rc->name || !rc->username || !rc->password || !rc->address)
            c->oom = true;
    }
}

static void parse_runtime(struct ctx *c, const json_t *runtime, struct deployment *d)
{
    static const char *const runtime_keys[] = {"type", "settings", NULL};
    static const char *const settings_keys[] = {"minDockerVersion", "loggingOptions",
                                                "registryCredentials", NULL};
    struct shown sh;
    if (!runtime) {
        problem(c, "runtime", "missing");
        return;
    }
    if (!json_is_object(runtime)) {
        problem(c, "runtime", "must be an object, got %s", json_type_name(runtime));
        return;
    }
    check_keys(c, "runtime", runtime, runtime_keys, NULL);
    json_t *type = field(runtime, "type");
    if (!type)
        problem(c, "runtime.type", "missing (must be \"docker\")");
    else if (!json_is_string(type))
        problem(c, "runtime.type", "must be \"docker\", got %s", json_type_name(type));
    else if (!lstr_eq(json_string_value(type), "docker"))
        problem(c, "runtime.type", "must be \"docker\", got %s",
                show(&sh, json_string_value(type)));

    json_t *settings = field(runtime, "settings");
    if (!settings)
        return;
    if (!json_is_object(settings)) {
        problem(c, "runtime.settings", "must be an object, got %s", json_type_name(settings));
        return;
    }
    check_keys(c, "runtime.settings", settings, settings_keys, NULL);
    json_t *v = field(settings, "minDockerVersion");
    const char *s;
    if (v && (s = string_value(c, "runtime.settings.minDockerVersion", v)) &&
        !(d->min_docker_version = strdup(s)))
        c->oom = true;
    v = field(settings, "loggingOptions");
    if (v && (s = string_value(c, "runtime.settings.loggingOptions", v)) &&
        !(d->logging_options = strdup(s)))
        c->oom = true;
    v = field(settings, "registryCredentials");
    if (v)
        parse_credentials(c, "runtime.settings.registryCredentials", v, d);
}

static int parse_agent(struct ctx *c, const json_t *desired, const char *hub_program,
                       struct deployment *d)
{
    static const char *const desired_keys[] = {"schemaVersion", "runtime",   "systemModules",
                                               "modules",       "integrity", NULL};
    static const char *const system_keys[] = {"edgeAgent", "edgeHub", NULL};
    struct shown sh, sh2;
    bool schema_1_0 = false;
    int r;

    check_keys(c, "", desired, desired_keys, NULL);

    json_t *schema = field(desired, "schemaVersion");
    const char *sv;
    long ver[4];
    if (!schema) {
        problem(c, "schemaVersion", "missing");
    } else if ((sv = string_value(c, "schemaVersion", schema))) {
        /* IoT Edge accepts major 1 up to 1.1.0 (EdgeAgentConnection.ValidateSchemaVersion). */
        if (!version_parse(sv, ver) || ver[0] != 1 ||
            !(ver[1] == 0 || (ver[1] == 1 && ver[2] <= 0 && ver[3] < 0)))
            problem(c, "schemaVersion", "unsupported %s", show(&sh, sv));
        else if (!(d->schema_version = strdup(sv)))
            return -ENOMEM;
        else
            schema_1_0 = ver[1] == 0;
    }
    if (field(desired, "integrity"))
        note(c, "integrity", "manifest signatures are not verified by ledge");

    parse_runtime(c, field(desired, "runtime"), d);

    struct module_spec hub = {0};
    bool have_hub = false;
    json_t *system = field(desired, "systemModules");
    if (!system) {
        problem(c, "systemModules", "missing");
    } else if (!json_is_object(system)) {
        problem(c, "systemModules", "must be an object, got %s", json_type_name(system));
    } else {
        check_keys(c, "systemModules", system, system_keys, NULL);
        json_t *agent = field(system, "edgeAgent");
        if (agent) {
            struct module_spec a = {0};
            r = parse_module(c, "systemModules.edgeAgent", agent, ROLE_AGENT, schema_1_0, &a);
            if (r == 0)
                d->agent_env = TAKE_PTR(a.env);
            module_spec_clear(&a);
            if (r == -ENOMEM)
                return r;
        }
        json_t *edge_hub = field(system, "edgeHub");
        if (edge_hub) {
            r = parse_module(c, "systemModules.edgeHub", edge_hub, ROLE_HUB, schema_1_0, &hub);
            if (r == -ENOMEM) {
                module_spec_clear(&hub);
                return r;
            }
            have_hub = r == 0;
        } else {
            note(c, "systemModules.edgeHub",
                 "absent: no hub runs, modules cannot exchange "
                 "messages");
        }
    }

    json_t *modules = field(desired, "modules");
    size_t n = json_object_size(modules);
    if (modules && !json_is_object(modules)) {
        problem(c, "modules", "must be an object, got %s", json_type_name(modules));
        n = 0;
    } else if (n > MANIFEST_MAX_MODULES) {
        problem(c, "modules", "too many modules (%zu, at most %d)", n, MANIFEST_MAX_MODULES);
        n = 0;
    }
    d->modules = calloc(n + 1, sizeof(*d->modules));
    if (!d->modules) {
        module_spec_clear(&hub);
        return -ENOMEM;
    }
    if (n > 0) {
        const char **names = calloc(n, sizeof(*names));
        if (!names) {
            module_spec_clear(&hub);
            return -ENOMEM;
        }
        size_t j = 0;
        const char *k;
        json_t *v;
        char p[PATH_LEN];
        json_object_foreach (modules, k, v) {
            names[j] = k;
            path_join(p, sizeof(p), "modules", k);
            bool name_ok = true;
            if (!module_name_valid(k)) {
                problem(c, p,
                        "invalid module name (must match [a-zA-Z0-9][a-zA-Z0-9_.-]+: 2 to "
                        "%d characters)",
                        MODULE_NAME_MAX);
                name_ok = false;
            } else if (strcasecmp(k, "edgeAgent") == 0 || strcasecmp(k, "edgeHub") == 0) {
                problem(c, p, "name is reserved for the system module %s",
                        show(&sh, strcasecmp(k, "edgeAgent") == 0 ? "edgeAgent" : "edgeHub"));
                name_ok = false;
            } else {
                for (size_t i = 0; i < j; i++) {
                    if (strcasecmp(names[i], k) == 0) {
                        problem(c, p,
                                "clashes with module %s (names must differ in more than "
                                "case)",
                                show(&sh2, names[i]));
                        name_ok = false;
                        break;
                    }
                }
            }
            j++;
            struct module_spec *m = &d->modules[d->n_modules];
            r = parse_module(c, p, v, ROLE_USER, schema_1_0, m);
            if (r == 0 && name_ok && !(m->name = strdup(k)))
                r = -ENOMEM;
            if (r == -ENOMEM) {
                free(names);
                module_spec_clear(m);
                module_spec_clear(&hub);
                return r;
            }
            if (r == 0 && name_ok)
                d->n_modules++;
            else
                module_spec_clear(m);
        }
        free(names);
    }
    if (c->oom) {
        module_spec_clear(&hub);
        return -ENOMEM;
    }
    /* Manifest order carries no meaning; sorting makes the result independent of it. */
    if (d->n_modules > 1)
        qsort(d->modules, d->n_modules, sizeof(*d->modules), module_cmp);
    if (d->n_credentials > 1)
        qsort(d->credentials, d->n_credentials, sizeof(*d->credentials), credential_cmp);

    if (have_hub && hub_program) {
        struct module_spec *m = &d->modules[d->n_modules];
        *m = hub;
        memset(&hub, 0, sizeof(hub));
        d->n_modules++;
        free(m->image);
        m->image = NULL;
        json_decref(m->create_options);
        m->create_options = NULL;
        free(m->path);
        json_decref(m->args);
        m->args = NULL;
        m->type = MODULE_TYPE_PROCESS;
        m->system = true;
        m->name = strdup("edgeHub");
        m->path = strdup(hub_program);
        if (!m->name || !m->path)
            return -ENOMEM;
    }
    module_spec_clear(&hub);

    for (size_t i = 0; i < d->n_modules; i++) {
        r = module_hash(&d->modules[i]);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- $edgeHub -------------------------------------------------------------------------------- */

static bool route_name_valid(const char *s)
{
    if (!*s || is_blank(s))
        return false;
    return !strpbrk(s, ".$# ");
}

static void check_route(struct ctx *c, const char *p, const json_t *route, long minor)
{
    static const char *const route_keys[] = {"route", "priority", "timeToLiveSecs", NULL};
    char fp[PATH_LEN];
    long long x;
    if (json_is_string(route)) {
        const char *s = string_value(c, p, route);
        /* 1.0 skips blank routes; later schemas reject them (RouteSpec CheckNonWhiteSpace). */
        if (s && minor != 0 && is_blank(s))
            problem(c, p, "must not be empty");
        return;
    }
    if (minor == 0) {
        problem(c, p, "must be a string (route objects need schemaVersion 1.1 or later)");
        return;
    }
    if (!json_is_object(route)) {
        problem(c, p, "must be a string or an object {\"route\": ...}, got %s",
                json_type_name(route));
        return;
    }
    check_keys(c, p, route, route_keys, NULL);
    path_join(fp, sizeof(fp), p, "route");
    json_t *r = field(route, "route");
    const char *s;
    if (!r)
        problem(c, fp, "missing");
    else if ((s = string_value(c, fp, r)) && is_blank(s))
        problem(c, fp, "must not be empty");
    json_t *v = field(route, "priority");
    path_join(fp, sizeof(fp), p, "priority");
    if (v)
        integer_range(c, fp, v, 0, 9, "0 is the highest", &x);
    v = field(route, "timeToLiveSecs");
    path_join(fp, sizeof(fp), p, "timeToLiveSecs");
    if (v)
        integer_range(c, fp, v, 0, UINT32_MAX, "seconds; 0 = the global timeToLiveSecs", &x);
}

/* Shape only: the hub parses route syntax itself. */
static void check_edge_hub(struct ctx *c, const json_t *desired)
{
    static const char *const hub_keys[] = {
        "schemaVersion", "routes", "storeAndForwardConfiguration", "mqttBroker", "integrity", NULL};
    static const char *const saf_keys[] = {"timeToLiveSecs", "storeLimits", NULL};
    static const char *const limits_keys[] = {"maxSizeBytes", NULL};
    const char *pfx = "$edgeHub";
    char p[PATH_LEN];
    struct shown sh;
    long minor = -1; /* unknown: accept both route shapes, require nothing more */
    long long x;

    check_keys(c, pfx, desired, hub_keys, NULL);
    json_t *schema = field(desired, "schemaVersion");
    const char *sv;
    long ver[4];
    if (!schema) {
        problem(c, "$edgeHub.schemaVersion", "missing");
    } else if ((sv = string_value(c, "$edgeHub.schemaVersion", schema))) {
        /* EdgeHubConfigParser: major 1, minor 0 to 3; build and revision are not looked at. */
        if (!version_parse(sv, ver) || ver[0] != 1 || ver[1] > 3)
            problem(c, "$edgeHub.schemaVersion", "unsupported %s", show(&sh, sv));
        else
            minor = ver[1];
    }

    json_t *routes = field(desired, "routes");
    if (!routes) {
        if (minor >= 1)
            problem(c, "$edgeHub.routes", "missing");
    } else if (!json_is_object(routes)) {
        problem(c, "$edgeHub.routes", "must be an object, got %s", json_type_name(routes));
    } else {
        const char *k;
        json_t *v;
        json_object_foreach (routes, k, v) {
            path_join(p, sizeof(p), "$edgeHub.routes", k);
            if (!route_name_valid(k))
                problem(c, p,
                        "invalid route name (must not be empty or contain '.', '$', '#' "
                        "or spaces)");
            else
                check_route(c, p, v, minor);
        }
    }

    json_t *saf = field(desired, "storeAndForwardConfiguration");
    const char *sp = "$edgeHub.storeAndForwardConfiguration";
    if (!saf) {
        if (minor >= 1)
            problem(c, sp, "missing");
        return;
    }
    if (!json_is_object(saf)) {
        problem(c, sp, "must be an object, got %s", json_type_name(saf));
        return;
    }
    check_keys(c, sp, saf, saf_keys, NULL);
    json_t *ttl = field(saf, "timeToLiveSecs");
    if (ttl)
        integer_range(c, "$edgeHub.storeAndForwardConfiguration.timeToLiveSecs", ttl, INT32_MIN,
                      INT32_MAX, "seconds; negative = forever", &x);
    json_t *limits = field(saf, "storeLimits");
    const char *lp = "$edgeHub.storeAndForwardConfiguration.storeLimits";
    if (!limits)
        return;
    if (!json_is_object(limits)) {
        problem(c, lp, "must be an object, got %s", json_type_name(limits));
        return;
    }
    check_keys(c, lp, limits, limits_keys, NULL);
    json_t *max = field(limits, "maxSizeBytes");
    const char *mp = "$edgeHub.storeAndForwardConfiguration.storeLimits.maxSizeBytes";
    if (!max)
        problem(c, mp, "missing");
    else
        integer_range(c, mp, max, 1, INT64_MAX, "bytes", &x);
}

/* ---- modulesContent -------------------------------------------------------------------------- */

static bool is_layered_path(const char *key)
{
    return strncmp(key, "properties.desired.", 19) == 0;
}

/* A modulesContent entry: {"properties.desired": {...}}; returns the desired object or NULL. */
static json_t *twin_desired(struct ctx *c, const char *name, const json_t *entry)
{
    static const char *const twin_keys[] = {"properties.desired", NULL};
    char p[PATH_LEN];
    const char *k;
    json_t *v;
    if (!json_is_object(entry)) {
        problem(c, name, "must be an object {\"properties.desired\": {...}}, got %s",
                json_type_name(entry));
        return NULL;
    }
    json_object_foreach ((json_t *)entry, k, v) {
        if (is_layered_path(k)) {
            path_join(p, sizeof(p), name, k);
            problem(c, p,
                    "layered deployment paths are not supported; merge them into "
                    "\"properties.desired\"");
        }
    }
    check_keys(c, name, entry, twin_keys, is_layered_path);
    path_join(p, sizeof(p), name, "properties.desired");
    json_t *desired = field(entry, "properties.desired");
    if (!desired) {
        problem(c, p, "missing");
        return NULL;
    }
    if (!json_is_object(desired)) {
        problem(c, p, "must be an object, got %s", json_type_name(desired));
        return NULL;
    }
    return desired;
}

static void parse_content(struct ctx *c, const json_t *content, const char *hub_program,
                          struct deployment *d, int *oom)
{
    const char *k;
    json_t *v;
    json_t *agent = NULL, *hub = NULL;
    struct shown sh;

    json_object_foreach ((json_t *)content, k, v) {
        if (strcmp(k, "$edgeAgent") == 0)
            agent = v;
        else if (strcmp(k, "$edgeHub") == 0)
            hub = v;
    }
    if (!agent || json_is_null(agent)) {
        /* IoT Edge's "empty configuration" (417). */
        problem(c, "$edgeAgent", "missing");
    } else {
        json_t *desired = twin_desired(c, "$edgeAgent", agent);
        if (desired && parse_agent(c, desired, hub_program, d) == -ENOMEM)
            *oom = -ENOMEM;
    }
    if (!hub || json_is_null(hub)) {
        note(c, "$edgeHub", "missing: the hub runs without routes");
    } else {
        json_t *desired = twin_desired(c, "$edgeHub", hub);
        if (desired) {
            check_edge_hub(c, desired);
            d->edge_hub = json_incref(desired);
        }
    }

    json_object_foreach ((json_t *)content, k, v) {
        if (strcmp(k, "$edgeAgent") == 0 || strcmp(k, "$edgeHub") == 0)
            continue;
        if (k[0] == '$') {
            note(c, k, "unknown system twin, ignored");
            continue;
        }
        json_t *desired = twin_desired(c, k, v);
        if (!desired)
            continue;
        if (json_object_set(d->module_twins, k, desired) < 0) {
            *oom = -ENOMEM;
            return;
        }
        const struct module_spec *m = deployment_find(d, k);
        if (!m || m->system)
            note(c, k,
                 "desired properties for %s, which is not a module of this deployment; "
                 "kept",
                 show(&sh, k));
    }
}

int manifest_parse(const char *text, size_t n, const char *hub_program, struct deployment **ret,
                   struct lstrv *errors)
{
    _cleanup_deployment_ struct deployment *d = calloc(1, sizeof(*d));
    _cleanup_lstrv_ struct lstrv errs = LSTRV_INIT;
    struct ctx c = {.errors = &errs};
    int oom = 0;

    if (!d)
        return -ENOMEM;
    c.warnings = &d->warnings;
    if (!(d->module_twins = json_object()))
        return -ENOMEM;

    if (hub_program && hub_program[0] != '/') {
        problem(&c, "hub_program", "must be an absolute path");
    } else if (!text || n > MANIFEST_MAX_SIZE) {
        problem(&c, "manifest", "larger than %d bytes", MANIFEST_MAX_SIZE);
    } else {
        struct lerr e = {0};
        if (ljson_parse(text, n, &d->manifest, &e) < 0) {
            if (e.code == -ENOMEM)
                return -ENOMEM;
            problem(&c, "manifest", "%s", e.msg);
        } else if (!json_is_object(d->manifest)) {
            problem(&c, "manifest", "must be a JSON object, got %s", json_type_name(d->manifest));
        } else {
            /* {"modulesContent": {...}}, the bare modulesContent, or the shape
             * `az iot edge deployment` uses: {"content": {"modulesContent": {...}}}. */
            json_t *content = d->manifest;
            json_t *wrapper = json_object_get(content, "content");
            if (!json_object_get(content, "modulesContent") && json_is_object(wrapper) &&
                json_object_get(wrapper, "modulesContent"))
                content = wrapper;
            if (json_object_get(content, "modulesContent")) {
                content = json_object_get(content, "modulesContent");
                if (!json_is_object(content)) {
                    problem(&c, "modulesContent", "must be an object, got %s",
                            json_type_name(content));
                    content = NULL;
                }
            }
            if (content)
                parse_content(&c, content, hub_program, d, &oom);
        }
    }
    if (oom || c.oom)
        return -ENOMEM;
    if (c.n_errors > 0) {
        report_overflow(&c, &errs, c.n_errors);
        if (c.oom)
            return -ENOMEM;
        for (size_t i = 0; errors && i < errs.n; i++) {
            if (lstrv_push_take(errors, TAKE_PTR(errs.v[i])) < 0)
                return -ENOMEM;
        }
        return -EINVAL;
    }
    report_overflow(&c, &d->warnings, c.n_warnings);
    if (c.oom)
        return -ENOMEM;
    *ret = TAKE_PTR(d);
    return 0;
}

void deployment_free(struct deployment *d)
{
    if (!d)
        return;
    free(d->schema_version);
    free(d->min_docker_version);
    free(d->logging_options);
    for (size_t i = 0; i < d->n_credentials; i++) {
        struct registry_credential *rc = &d->credentials[i];
        free(rc->name);
        free(rc->address);
        free(rc->username);
        if (rc->password)
            lcrypto_wipe(rc->password, strlen(rc->password));
        free(rc->password);
    }
    free(d->credentials);
    for (size_t i = 0; i < d->n_modules; i++)
        module_spec_clear(&d->modules[i]);
    free(d->modules);
    json_decref(d->edge_hub);
    json_decref(d->module_twins);
    json_decref(d->manifest);
    json_decref(d->agent_env);
    lstrv_free(&d->warnings);
    free(d);
}

const struct module_spec *deployment_find(const struct deployment *d, const char *name)
{
    for (size_t i = 0; d && name && i < d->n_modules; i++)
        if (strcmp(d->modules[i].name, name) == 0)
            return &d->modules[i];
    return NULL;
}

const struct registry_credential *deployment_credential_for(const struct deployment *d,
                                                            const char *image)
{
    if (!d || !image)
        return NULL;
    /* The image's registry as Docker reads the reference; IoT Edge's nested-edge
     * "$upstream:<port>/..." is no reference grammar knows, and names its registry first. */
    char registry[IMG_REF_MAX + 1];
    struct img_ref ref;
    if (img_ref_parse(image, &ref, NULL) == 0) {
        snprintf(registry, sizeof(registry), "%s", ref.registry);
    } else {
        size_t dl = image_domain_len(image, strlen(image));
        if (!dl || dl >= sizeof(registry))
            return NULL;
        snprintf(registry, sizeof(registry), "%.*s", (int)dl, image);
    }
    /* creds.h's rule; the entries are in name order, so the first match is the lowest name. */
    for (size_t i = 0; i < d->n_credentials; i++)
        if (img_registry_matches(d->credentials[i].address, registry))
            return &d->credentials[i];
    return NULL;
}
