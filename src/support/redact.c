/* redact.c — the support bundle's secret redaction rule (redact.h). Two passes over a document:
 * the first redacts whole values (by name, by looks) and learns them, the second runs the text
 * rule over every string left, so a value learned anywhere is gone everywhere. */
#include "redact.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "base/json.h"

void redactor_init(struct redactor *r)
{
    *r = (struct redactor){.known = LSTRV_INIT};
}

void redactor_clear(struct redactor *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->known.n; i++)
        explicit_bzero(r->known.v[i], strlen(r->known.v[i]));
    lstrv_free(&r->known);
    r->count = 0;
}

static int learn_one(struct redactor *r, const char *v)
{
    if (strlen(v) < REDACT_KNOWN_MIN || lstrv_contains(&r->known, v))
        return 0;
    if (r->known.n >= REDACT_KNOWN_MAX)
        return 0;
    return lstrv_push(&r->known, v);
}

int redactor_learn(struct redactor *r, const char *value)
{
    if (!value)
        return 0;
    int res = learn_one(r, value);
    /* The forms the value takes in URLs (SAS signatures) and in JSON text. */
    _cleanup_lbuf_ struct lbuf enc = LBUF_INIT;
    if (res == 0 && lstr_url_encode(value, strlen(value), &enc) == 0 && enc.data)
        res = learn_one(r, enc.data);
    json_t *s = json_string(value);
    char *dumped = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    json_decref(s);
    if (res == 0 && dumped && strlen(dumped) >= 2) {
        dumped[strlen(dumped) - 1] = 0;
        res = learn_one(r, dumped + 1);
    }
    free(dumped);
    return res;
}

/* ------------------------------------------------------------------ names */

static bool word_in(const char *w, size_t n, const char *const *set)
{
    for (size_t i = 0; set[i]; i++)
        if (strlen(set[i]) == n && strncasecmp(w, set[i], n) == 0)
            return true;
    return false;
}

static bool word_contains(const char *w, size_t n, const char *const *set)
{
    for (size_t i = 0; set[i]; i++) {
        size_t m = strlen(set[i]);
        for (size_t j = 0; j + m <= n; j++)
            if (strncasecmp(w + j, set[i], m) == 0)
                return true;
    }
    return false;
}

static bool word_endswith(const char *w, size_t n, const char *const *set)
{
    for (size_t i = 0; set[i]; i++) {
        size_t m = strlen(set[i]);
        if (m < n && strncasecmp(w + n - m, set[i], m) == 0)
            return true;
    }
    return false;
}

/* Words that make a name secret on their own. */
static const char *const secret_words[] = {
    "password",    "passwd",        "pwd",     "pass",
    "passphrase",  "secret",        "secrets", "token",
    "tokens",      "sas",           "sig",     "signature",
    "key",         "keys",          "apikey",  "credential",
    "credentials", "authorization", "cookie",  "connectionstring",
    "accesskey",   "privatekey",    NULL};
/* Found inside one long word ("DBPASSWORD", "MYAPPSECRET"). */
static const char *const secret_parts[] = {
    "password",  "passwd",     "secret",     "token",      "apikey", "connectionstring",
    "accesskey", "privatekey", "passphrase", "credential", NULL};
/* A last word that says the name is about something else than the secret itself. */
static const char *const not_secret_last[] = {
    "file",   "files",    "path",     "dir",        "directory", "id",        "ids",
    "name",   "names",    "type",     "size",       "length",    "len",       "lifetime",
    "ttl",    "expiry",   "expires",  "expiration", "count",     "algorithm", "version",
    "format", "policy",   "url",      "uri",        "host",      "hostname",  "ref",
    "hash",   "mode",     "usage",    "renew",      "timeout",   "enabled",   "required",
    "source", "provider", "endpoint", "header",     "prefix",    "label",     NULL};

bool redact_name_is_secret(const char *name, size_t n)
{
    /* Split into words: non-alphanumerics, lower→Upper, letters↔digits, and the last capital of
     * an upper-case run followed by a lower-case letter ("APIKey" → API, Key). */
    struct {
        const char *p;
        size_t n;
    } words[32];
    size_t nw = 0;
    size_t i = 0;
    while (i < n && nw < ARRAY_SIZE(words)) {
        while (i < n && !isalnum((unsigned char)name[i]))
            i++;
        if (i >= n)
            break;
        size_t start = i++;
        while (i < n && isalnum((unsigned char)name[i])) {
            unsigned char a = (unsigned char)name[i - 1], b = (unsigned char)name[i];
            if (islower(a) && isupper(b))
                break;
            if (isalpha(a) != 0 && isdigit(b))
                break;
            if (isdigit(a) && isalpha(b))
                break;
            if (isupper(a) && isupper(b) && i + 1 < n && islower((unsigned char)name[i + 1]))
                break;
            i++;
        }
        words[nw].p = name + start;
        words[nw].n = i - start;
        nw++;
    }
    if (nw == 0)
        return false;
    /* A trailing number ("key1", "password2") does not change what the name is about. */
    size_t last = nw - 1;
    while (last > 0 && isdigit((unsigned char)words[last].p[0]))
        last--;
    if (word_in(words[last].p, words[last].n, not_secret_last))
        return false;
    for (size_t w = 0; w <= last; w++) {
        if (word_in(words[w].p, words[w].n, secret_words))
            return true;
        if (word_contains(words[w].p, words[w].n, secret_parts) &&
            !word_endswith(words[w].p, words[w].n, not_secret_last))
            return true;
        if (w + 1 <= last && words[w].n == 10 && strncasecmp(words[w].p, "connection", 10) == 0 &&
            words[w + 1].n == 6 && strncasecmp(words[w + 1].p, "string", 6) == 0)
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------ values */

static bool is_b64(unsigned char c)
{
    return isalnum(c) || c == '+' || c == '/';
}
static bool is_b64url(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_';
}

/* Length of a base64 key starting at s (0 when it is not one): a maximal run of the alphabet
 * with its padding, long enough, of mixed case and digits, and not a path (a run with '/' but
 * neither '+' nor padding is taken for one). */
static size_t base64_key_len(const char *s, size_t n)
{
    size_t i = 0;
    bool up = false, low = false, dig = false, plus = false, slash = false;
    while (i < n && is_b64((unsigned char)s[i])) {
        unsigned char c = (unsigned char)s[i];
        up |= isupper(c) != 0;
        low |= islower(c) != 0;
        dig |= isdigit(c) != 0;
        plus |= c == '+';
        slash |= c == '/';
        i++;
    }
    size_t pad = 0;
    while (i < n && s[i] == '=' && pad < 2) {
        i++;
        pad++;
    }
    if (i - pad < REDACT_BASE64_MIN || !up || !low || !dig)
        return 0;
    if (slash && !plus && !pad)
        return 0;
    return i;
}

/* Length of a JWT at s (three base64url parts, the first a JSON header "eyJ..."), or 0. */
static size_t jwt_len(const char *s, size_t n)
{
    if (n < 3 || strncmp(s, "eyJ", 3) != 0)
        return 0;
    size_t i = 0, parts = 1, seg = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (is_b64url(c)) {
            seg++;
        } else if (c == '.' && seg >= 4 && parts < 3) {
            parts++;
            seg = 0;
        } else {
            break;
        }
        i++;
    }
    return parts == 3 && i >= 24 ? i : 0;
}

static const char *find_ci(const char *s, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (strncasecmp(s + i, needle, m) == 0)
            return s + i;
    return NULL;
}

bool redact_value_is_secret(const char *v)
{
    size_t n = v ? strlen(v) : 0;
    if (n == 0)
        return false;
    static const char *const markers[] = {"sharedaccesskey=",
                                          "sharedaccesssignature",
                                          "accountkey=",
                                          "password=",
                                          "pwd=",
                                          "privatekey=",
                                          "secret=",
                                          NULL};
    for (size_t i = 0; markers[i]; i++)
        if (find_ci(v, n, markers[i]))
            return true;
    if (find_ci(v, n, "-----BEGIN") && find_ci(v, n, "PRIVATE KEY"))
        return true;
    if (jwt_len(v, n) == n)
        return true;
    return base64_key_len(v, n) == n;
}

/* ------------------------------------------------------------------ text */

static bool is_name_char(unsigned char c)
{
    return isalnum(c) || c == '_' || c == '-' || c == '.';
}

static bool is_value_end(unsigned char c)
{
    return isspace(c) || c == ';' || c == '&' || c == ',' || c == '"' || c == '\'' || c == '}' ||
           c == ')' || c == ']' || c == '<' || c == '>';
}

/* The end of a value starting at s: a quoted one ends at its closing quote (backslash escapes
 * skipped), else at a delimiter. An authorisation scheme word ("Bearer", "Basic",
 * "SharedAccessSignature") takes the word after it too. */
static size_t value_len(const char *s, size_t n, char quote)
{
    size_t i = 0;
    if (quote) {
        while (i < n && s[i] != quote && s[i] != '\n') {
            if (s[i] == '\\' && i + 1 < n)
                i++;
            i++;
        }
        return i;
    }
    while (i < n && !is_value_end((unsigned char)s[i]))
        i++;
    static const char *const schemes[] = {"Bearer", "Basic", "SharedAccessSignature", NULL};
    for (size_t k = 0; schemes[k]; k++) {
        size_t m = strlen(schemes[k]);
        if (i == m && strncasecmp(s, schemes[k], m) == 0 && i + 1 < n && s[i] == ' ') {
            size_t j = i + 1;
            while (j < n && !isspace((unsigned char)s[j]) && s[j] != '"' && s[j] != '\'')
                j++;
            return j;
        }
    }
    return i;
}

static int emit_redacted(struct redactor *r, struct lbuf *out)
{
    r->count++;
    return lbuf_puts(out, REDACTED);
}

/* Pass 1: learned values. Values are tried longest first so that a value containing another is
 * replaced whole. */
static int replace_known(struct redactor *r, const char *in, size_t n, struct lbuf *out)
{
    if (r->known.n == 0)
        return lbuf_append(out, in, n);
    size_t *order = calloc(r->known.n, sizeof(*order));
    size_t *lens = calloc(r->known.n, sizeof(*lens));
    if (!order || !lens) {
        free(order);
        free(lens);
        return -ENOMEM;
    }
    for (size_t i = 0; i < r->known.n; i++) {
        order[i] = i;
        lens[i] = strlen(r->known.v[i]);
    }
    for (size_t i = 1; i < r->known.n; i++) /* insertion sort by length, longest first */
        for (size_t j = i; j > 0 && lens[order[j]] > lens[order[j - 1]]; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    /* Which first bytes any value starts with, to skip most positions at once. */
    bool first[256] = {false};
    for (size_t i = 0; i < r->known.n; i++)
        first[(unsigned char)r->known.v[i][0]] = true;
    int res = 0;
    size_t done = 0, i = 0;
    while (i < n && res == 0) {
        if (!first[(unsigned char)in[i]]) {
            i++;
            continue;
        }
        size_t hit = 0;
        for (size_t k = 0; k < r->known.n; k++) {
            size_t m = lens[order[k]];
            if (m <= n - i && memcmp(in + i, r->known.v[order[k]], m) == 0) {
                hit = m;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        res = lbuf_append(out, in + done, i - done);
        if (res == 0)
            res = emit_redacted(r, out);
        i += hit;
        done = i;
    }
    if (res == 0)
        res = lbuf_append(out, in + done, n - done);
    free(order);
    free(lens);
    return res;
}

/* Pass 2: the patterns. */
static int replace_patterns(struct redactor *r, const char *in, size_t n, struct lbuf *out)
{
    int res = 0;
    size_t done = 0, i = 0;
#define FLUSH_TO(pos)                                                                              \
    do {                                                                                           \
        if (res == 0)                                                                              \
            res = lbuf_append(out, in + done, (pos)-done);                                         \
    } while (0)
    while (i < n && res == 0) {
        unsigned char c = (unsigned char)in[i];
        bool word_start = i == 0 || !is_name_char((unsigned char)in[i - 1]);
        /* PEM private keys: the whole block. */
        if (c == '-' && n - i > 16 && strncmp(in + i, "-----BEGIN ", 11) == 0) {
            const char *eol = memchr(in + i, '\n', n - i);
            size_t hdr = eol ? (size_t)(eol - (in + i)) : n - i;
            if (find_ci(in + i, hdr, "PRIVATE KEY")) {
                const char *end = find_ci(in + i + 11, n - i - 11, "-----END ");
                size_t stop = n;
                if (end) {
                    const char *close = find_ci(end + 9, n - (size_t)(end + 9 - in), "-----");
                    stop = close ? (size_t)(close - in) + 5 : n;
                }
                FLUSH_TO(i);
                if (res == 0)
                    res = emit_redacted(r, out);
                i = done = stop;
                continue;
            }
        }
        /* scheme://user:password@host */
        if (c == ':' && n - i > 3 && in[i + 1] == '/' && in[i + 2] == '/') {
            size_t j = i + 3, colon = 0;
            while (j < n && in[j] != '@' && in[j] != '/' && !isspace((unsigned char)in[j]) &&
                   in[j] != '"' && in[j] != '\'') {
                if (in[j] == ':' && !colon)
                    colon = j;
                j++;
            }
            if (colon && j < n && in[j] == '@' && j > colon + 1) {
                FLUSH_TO(colon + 1);
                if (res == 0)
                    res = emit_redacted(r, out);
                i = done = j;
                continue;
            }
        }
        if (word_start && (isalnum(c) || c == '_')) {
            size_t j = i;
            while (j < n && is_name_char((unsigned char)in[j]))
                j++;
            size_t name_len = j - i;
            /* NAME=VALUE, NAME: VALUE, "NAME": "VALUE" */
            size_t k = j;
            bool quoted_name = i > 0 && in[i - 1] == '"' && k < n && in[k] == '"';
            if (quoted_name)
                k++;
            while (k < n && (in[k] == ' ' || in[k] == '\t'))
                k++;
            if (k < n && (in[k] == '=' || in[k] == ':') &&
                redact_name_is_secret(in + i, name_len)) {
                bool colon = in[k] == ':';
                k++;
                while (k < n && (in[k] == ' ' || in[k] == '\t'))
                    k++;
                char quote = 0;
                if (k < n && (in[k] == '"' || in[k] == '\'')) {
                    quote = in[k];
                    k++;
                } else if (k < n && in[k] == '\\' && k + 1 < n && in[k + 1] == '"') {
                    /* JSON inside a JSON string: \"password\": \"...\" */
                    k += 2;
                    size_t v = k;
                    while (v < n && !(in[v] == '\\' && v + 1 < n && in[v + 1] == '"') &&
                           in[v] != '\n')
                        v++;
                    if (v > k) {
                        FLUSH_TO(k);
                        if (res == 0)
                            res = emit_redacted(r, out);
                        i = done = v;
                        continue;
                    }
                }
                size_t v = value_len(in + k, n - k, quote);
                /* "name: value" prose is redacted too, but a JSON member's value that is not a
                 * string (null, a number, an object: a document, not a secret to cut out of
                 * text) is left to the document rule, and so is an object after a colon. */
                bool skip = (quoted_name && !quote) ||
                            (colon && !quote && v > 0 && (in[k] == '{' || in[k] == '['));
                if (v > 0 && !skip) {
                    FLUSH_TO(k);
                    if (res == 0)
                        res = emit_redacted(r, out);
                    i = done = k + v;
                    continue;
                }
            }
            /* SharedAccessSignature sr=...&sig=...&se=... */
            if (name_len == 21 && strncasecmp(in + i, "SharedAccessSignature", 21) == 0 && j < n &&
                in[j] == ' ') {
                size_t v = value_len(in + j + 1, n - j - 1, 0);
                while (j + 1 + v < n && (in[j + 1 + v] == '&' || in[j + 1 + v] == ';'))
                    v += 1 + value_len(in + j + 2 + v, n - j - 2 - v, 0);
                if (v > 0) {
                    FLUSH_TO(j + 1);
                    if (res == 0)
                        res = emit_redacted(r, out);
                    i = done = j + 1 + v;
                    continue;
                }
            }
            size_t t = jwt_len(in + i, n - i);
            if (t) {
                FLUSH_TO(i);
                if (res == 0)
                    res = emit_redacted(r, out);
                i = done = i + t;
                continue;
            }
        }
        if (is_b64(c) && (i == 0 || !is_b64((unsigned char)in[i - 1]))) {
            size_t t = base64_key_len(in + i, n - i);
            if (t &&
                (i + t == n || !is_name_char((unsigned char)in[i + t]) || in[i + t - 1] == '=')) {
                FLUSH_TO(i);
                if (res == 0)
                    res = emit_redacted(r, out);
                i = done = i + t;
                continue;
            }
        }
        i++;
    }
    FLUSH_TO(n);
#undef FLUSH_TO
    return res;
}

int redact_text(struct redactor *r, const char *in, size_t n, struct lbuf *out)
{
    _cleanup_lbuf_ struct lbuf tmp = LBUF_INIT;
    int res = replace_known(r, in, n, &tmp);
    if (res < 0)
        return res;
    return replace_patterns(r, tmp.data ? tmp.data : "", tmp.len, out);
}

/* ------------------------------------------------------------------ documents */

static void redact_value(struct redactor *r, json_t *parent, const char *key, size_t index)
{
    json_t *v = key ? json_object_get(parent, key) : json_array_get(parent, index);
    if (json_is_string(v))
        redactor_learn(r, json_string_value(v));
    r->count++;
    if (key)
        json_object_set_new(parent, key, json_string(REDACTED));
    else
        json_array_set_new(parent, index, json_string(REDACTED));
}

static void walk_pass1(struct redactor *r, json_t *j, const char *name, int depth);

/* A string member: whole-value rules, NAME=VALUE, embedded JSON. */
static void string_pass1(struct redactor *r, json_t *parent, const char *key, size_t index,
                         json_t *v, bool secret_by_name, int depth)
{
    const char *s = json_string_value(v);
    if (secret_by_name || redact_value_is_secret(s)) {
        if (*s)
            redact_value(r, parent, key, index);
        return;
    }
    const char *eq = strchr(s, '=');
    if (eq && eq > s && redact_name_is_secret(s, (size_t)(eq - s))) {
        bool ident = true;
        for (const char *p = s; p < eq; p++)
            ident &= is_name_char((unsigned char)*p);
        if (ident && eq[1]) {
            redactor_learn(r, eq + 1);
            char *nv = lstr_printf("%.*s=%s", (int)(eq - s), s, REDACTED);
            json_t *js = nv ? json_string(nv) : NULL;
            free(nv);
            if (!js)
                js = json_string(REDACTED);
            r->count++;
            if (key)
                json_object_set_new(parent, key, js);
            else
                json_array_set_new(parent, index, js);
            return;
        }
    }
    const char *p = s;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if ((*p == '{' || *p == '[') && depth < 16) {
        json_t *inner = json_loads(s, JSON_DECODE_ANY, NULL);
        if (inner && (json_is_object(inner) || json_is_array(inner))) {
            walk_pass1(r, inner, key, depth + 1);
            char *text = json_dumps(inner, JSON_COMPACT | JSON_ENCODE_ANY);
            if (text) {
                if (key)
                    json_object_set_new(parent, key, json_string(text));
                else
                    json_array_set_new(parent, index, json_string(text));
            }
            free(text);
        }
        json_decref(inner);
    }
}

static void walk_pass1(struct redactor *r, json_t *j, const char *name, int depth)
{
    if (depth > 64)
        return;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        void *tmp;
        json_object_foreach_safe (j, tmp, k, v) {
            bool secret =
                redact_name_is_secret(k, strlen(k)) ||
                (strcmp(k, "value") == 0 && name && redact_name_is_secret(name, strlen(name)));
            if (json_is_string(v))
                string_pass1(r, j, k, 0, v, secret, depth);
            else if (json_is_number(v) && secret)
                redact_value(r, j, k, 0);
            else
                walk_pass1(r, v, k, depth + 1);
        }
    } else if (json_is_array(j)) {
        bool secret = name && redact_name_is_secret(name, strlen(name));
        for (size_t i = 0; i < json_array_size(j); i++) {
            json_t *v = json_array_get(j, i);
            if (json_is_string(v))
                string_pass1(r, j, NULL, i, v, secret, depth);
            else if (json_is_number(v) && secret)
                redact_value(r, j, NULL, i);
            else
                walk_pass1(r, v, name, depth + 1);
        }
    }
}

/* The text rule over one string; a result that is not a valid JSON string (cannot happen for
 * valid input, which is only cut at ASCII delimiters) becomes REDACTED whole. */
static json_t *text_pass(struct redactor *r, json_t *v)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    _cleanup_lbuf_ struct lbuf out = LBUF_INIT;
    if (redact_text(r, s, n, &out) < 0)
        return json_string(REDACTED);
    if (out.len == n && memcmp(out.data ? out.data : "", s, n) == 0)
        return NULL;
    json_t *ns = json_stringn(out.data ? out.data : "", out.len);
    return ns ? ns : json_string(REDACTED);
}

static void walk_pass2(struct redactor *r, json_t *j, int depth)
{
    if (depth > 64)
        return;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        void *tmp;
        json_object_foreach_safe (j, tmp, k, v) {
            json_t *ns = json_is_string(v) ? text_pass(r, v) : NULL;
            if (ns)
                json_object_set_new(j, k, ns);
            else if (!json_is_string(v))
                walk_pass2(r, v, depth + 1);
        }
    } else if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++) {
            json_t *v = json_array_get(j, i);
            json_t *ns = json_is_string(v) ? text_pass(r, v) : NULL;
            if (ns)
                json_array_set_new(j, i, ns);
            else if (!json_is_string(v))
                walk_pass2(r, v, depth + 1);
        }
    }
}

void redact_json(struct redactor *r, json_t *doc)
{
    walk_pass1(r, doc, NULL, 0);
    walk_pass2(r, doc, 0);
}
