/* config.c — loading /etc/ledge/config.yaml: a libyaml event pass that rejects what we do not
 * accept (anchors, aliases, tags, several documents, deep nesting), a document pass that walks
 * the mappings against the key table in schema.c, cross-key checks, and derived defaults. */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "schema.h"

#define KEY_SHOWN_MAX 64 /* longer key names are quoted and cut in messages */

struct loader {
    const char *origin;
    const char *text;
    size_t len;
    struct ledge_config *c;
    struct lstrv *errors;
    size_t nerr;
    bool full; /* CONFIG_MAX_ERRORS reached: stop looking */
    bool oom;
    int *line; /* per cfg_keys[] index: line where the file set it, 0 when it did not */
    yaml_document_t *doc;
    /* device.connection_string, parsed; applied (or found conflicting) after the walk */
    bool cs_present;
    char *cs_host, *cs_id, *cs_gateway;
};

const char *config_log_level_name(enum config_log_level l)
{
    static const char *const names[] = {"error", "warn", "info", "debug", "trace"};
    return (unsigned)l < ARRAY_SIZE(names) ? names[l] : "?";
}

const char *config_identity_name(enum config_identity id)
{
    static const char *const names[] = {"generated", "key", "connection_string", "x509"};
    return (unsigned)id < ARRAY_SIZE(names) ? names[id] : "?";
}

/* ---- messages ---- */

/* "origin:line: key: message", "origin:line: message" or "origin: key: message"; YAML-level
 * problems carry "origin:line:column: ". */
static void vreport(struct loader *L, int line, int col, const char *key, const char *fmt,
                    va_list ap) _printf_(5, 0);
static void vreport(struct loader *L, int line, int col, const char *key, const char *fmt,
                    va_list ap)
{
    if (L->full)
        return;
    if (L->nerr == CONFIG_MAX_ERRORS) {
        L->full = true;
        if (L->errors && lstrv_printf(L->errors, "%s: too many errors, stopping after %d",
                                      L->origin, CONFIG_MAX_ERRORS) < 0)
            L->oom = true;
        return;
    }
    if (!L->errors) { /* the caller only wants to know whether the text is valid */
        L->nerr++;
        return;
    }
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    lbuf_puts(&b, L->origin);
    if (line > 0)
        lbuf_printf(&b, ":%d", line);
    if (line > 0 && col > 0)
        lbuf_printf(&b, ":%d", col);
    lbuf_puts(&b, ": ");
    if (key)
        lbuf_printf(&b, "%s: ", key);
    int r = lbuf_vprintf(&b, fmt, ap);
    L->nerr++;
    if (r < 0 || !b.data || lstrv_push(L->errors, b.data) < 0)
        L->oom = true;
}

static void report(struct loader *L, int line, const char *key, const char *fmt, ...)
    _printf_(4, 5);
static void report(struct loader *L, int line, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(L, line, 0, key, fmt, ap);
    va_end(ap);
}

static void report_lc(struct loader *L, int line, int col, const char *fmt, ...) _printf_(4, 5);
static void report_lc(struct loader *L, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(L, line, col, NULL, fmt, ap);
    va_end(ap);
}

static int node_line(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

/* The line where the file set the key at path, 0 when it did not. */
static int line_of(const struct loader *L, const char *path)
{
    const struct cfg_key *k = cfg_find(path);
    return k ? L->line[k - cfg_keys] : 0;
}

/* ---- YAML pass 1: events ---- */

static int line_at_offset(const char *text, size_t len, size_t off, int *ret_col)
{
    int line = 1, col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    *ret_col = col;
    return line;
}

static void report_yaml_error(struct loader *L, const yaml_parser_t *p)
{
    int line, col;
    const char *problem = p->problem ? p->problem : "unknown problem";
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        L->oom = true;
        return;
    case YAML_READER_ERROR:
        line = line_at_offset(L->text, L->len, p->problem_offset, &col);
        report_lc(L, line, col, "not valid YAML text: %s", problem);
        return;
    default:
        line = (int)p->problem_mark.line + 1;
        col = (int)p->problem_mark.column + 1;
        if (p->context)
            report_lc(L, line, col, "YAML syntax error: %s (%s at line %d)", problem, p->context,
                      (int)p->context_mark.line + 1);
        else
            report_lc(L, line, col, "YAML syntax error: %s", problem);
        return;
    }
}

#define report_at(L, mark, what)                                                                   \
    report_lc(L, (int)(mark).line + 1, (int)(mark).column + 1, "%s", what)

/* Reject, before building any tree, what could make the document pass expensive or ambiguous:
 * aliases (billion laughs), anchors and tags (not needed), several documents, nesting beyond
 * CONFIG_MAX_DEPTH and more than CONFIG_MAX_NODES nodes. Returns false when the document pass
 * must not run. */
static bool yaml_prescan(struct loader *L)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        L->oom = true;
        return false;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)L->text, L->len);
    int depth = 0, docs = 0;
    size_t nodes = 0;
    bool ok = true, done = false;
    while (!done && !L->full) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            report_yaml_error(L, &p);
            ok = false;
            break;
        }
        const yaml_char_t *anchor = NULL, *tag = NULL;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                report_at(L, ev.start_mark, "only one YAML document is allowed");
                ok = false;
                done = true;
            }
            break;
        case YAML_ALIAS_EVENT:
            report_at(L, ev.start_mark, "YAML aliases (*name) are not supported");
            ok = false;
            break;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            tag = ev.data.scalar.tag;
            nodes++;
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (ev.type == YAML_SEQUENCE_START_EVENT) {
                anchor = ev.data.sequence_start.anchor;
                tag = ev.data.sequence_start.tag;
            } else {
                anchor = ev.data.mapping_start.anchor;
                tag = ev.data.mapping_start.tag;
            }
            nodes++;
            if (++depth > CONFIG_MAX_DEPTH) {
                report_lc(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                          "nesting is deeper than %d levels", CONFIG_MAX_DEPTH);
                ok = false;
                done = true;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        default:
            break;
        }
        if (anchor) {
            report_at(L, ev.start_mark, "YAML anchors (&name) are not supported");
            ok = false;
        }
        if (tag) {
            report_at(L, ev.start_mark, "YAML tags (!name) are not supported");
            ok = false;
        }
        if (nodes > CONFIG_MAX_NODES && !done) {
            report_lc(L, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                      "too many YAML nodes (more than %d)", CONFIG_MAX_NODES);
            ok = false;
            done = true;
        }
        if (ev.type == YAML_SCALAR_EVENT)
            lcrypto_wipe(ev.data.scalar.value, ev.data.scalar.length);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return ok;
}

/* ---- YAML pass 2: the document against the schema ---- */

static yaml_node_t *get_node(struct loader *L, int index)
{
    return yaml_document_get_node(L->doc, index);
}

/* Plain "", "~" and "null" mean "not set here": the default applies. This lets a file keep an
 * emptied section ("agent:" with every line commented out). */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

static const char *kind_name(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    default:
        return "a single value";
    }
}

/* The scalar's text, or NULL (after reporting) when it holds a NUL byte. */
static const char *scalar_text(struct loader *L, const yaml_node_t *n, const char *key)
{
    const char *s = (const char *)n->data.scalar.value;
    if (strlen(s) != n->data.scalar.length) {
        report(L, node_line(n), key, "must not contain NUL characters");
        return NULL;
    }
    return s;
}

static size_t levenshtein(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[KEY_SHOWN_MAX + 1];
    if (la > KEY_SHOWN_MAX || lb > KEY_SHOWN_MAX)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t sub = diag + (a[i - 1] != b[j - 1]);
            row[j] = MIN(MIN(row[j] + 1, row[j - 1] + 1), sub);
            diag = up;
        }
    }
    return row[lb];
}

/* Lower case without '_' and '-', so backoffMax and backoff-max find backoff_max. */
static void normalise_name(const char *s, char *out, size_t size)
{
    size_t o = 0;
    for (; *s && o + 1 < size; s++)
        if (*s != '_' && *s != '-')
            out[o++] = (char)tolower((unsigned char)*s);
    out[o] = 0;
}

/* How alike an unknown name is to a known one: 0 same but for case and separators
 * (backoffMax, BACKOFF-MAX), 1 one is a prefix of the other ("cert" and "cert_file"), else 1 +
 * edit distance; SIZE_MAX when too far apart to suggest. norm is normalise_name(name). */
static size_t likeness(const char *name, const char *norm, const char *cand)
{
    char cnorm[KEY_SHOWN_MAX + 1];
    normalise_name(cand, cnorm, sizeof(cnorm));
    if (strcmp(norm, cnorm) == 0)
        return 0;
    size_t n = strlen(name), m = strlen(cand);
    if (MIN(n, m) >= 3 && strncmp(name, cand, MIN(n, m)) == 0)
        return 1;
    size_t limit = n <= 4 ? 1 : 2;
    if (n > m + limit || m > n + limit) /* the distance is at least the length difference */
        return SIZE_MAX;
    size_t d = levenshtein(name, cand);
    return d <= limit ? d + 1 : SIZE_MAX;
}

/* Suggestions for an unknown key: a similar sibling, else keys of the same name in other
 * sections ("backoff_max" at the top level → "agent.backoff_max"). */
static void suggest(const char *prefix, const char *name, struct lbuf *out)
{
    size_t plen = strlen(prefix);
    size_t best_d = SIZE_MAX;
    char best[KEY_SHOWN_MAX + 1] = "", prev[KEY_SHOWN_MAX + 1] = "", norm[KEY_SHOWN_MAX + 1];
    if (strlen(name) > KEY_SHOWN_MAX)
        return;
    normalise_name(name, norm, sizeof(norm));
    for (size_t i = 0; i < cfg_n_keys; i++) {
        const char *p = cfg_keys[i].path;
        if (plen && (strncmp(p, prefix, plen) != 0 || p[plen] != '.'))
            continue;
        const char *child = p + (plen ? plen + 1 : 0);
        char cand[KEY_SHOWN_MAX + 1];
        size_t n = strcspn(child, ".");
        if (n > KEY_SHOWN_MAX)
            continue;
        memcpy(cand, child, n);
        cand[n] = 0;
        if (strcmp(cand, prev) == 0) /* a section's keys are adjacent in the table */
            continue;
        memcpy(prev, cand, n + 1);
        size_t d = likeness(name, norm, cand);
        if (d < best_d) {
            best_d = d;
            memcpy(best, cand, n + 1);
        }
    }
    if (best[0]) {
        lbuf_printf(out, " (did you mean \"%s\"?)", best);
        return;
    }
    /* Same name elsewhere first; only when there is none, merely similar names. */
    int found = 0;
    for (int pass = 0; pass < 2 && !found; pass++)
        for (size_t i = 0; i < cfg_n_keys && found < 3; i++) {
            const char *p = cfg_keys[i].path;
            const char *leaf = strrchr(p, '.');
            if (!leaf || (plen && strncmp(p, prefix, plen) == 0 && p[plen] == '.'))
                continue;
            size_t d = likeness(name, norm, leaf + 1);
            if (pass == 0 ? d == 0 : d != SIZE_MAX) {
                lbuf_printf(out, "%s\"%s\"", found ? " or " : " (did you mean ", p);
                found++;
            }
        }
    if (found)
        lbuf_puts(out, "?)");
}

static void parse_connection_string(struct loader *L, const char *s, int line);

static void set_list(struct loader *L, size_t idx, const char *key, yaml_node_t *v)
{
    const struct cfg_key *k = &cfg_keys[idx];
    struct lstrv *list = cfg_field(k, L->c);
    if (v->type != YAML_SEQUENCE_NODE) {
        report(L, node_line(v), key,
               "must be a list, not %s (write [a, b] or one \"- item\" per line)", kind_name(v));
        return;
    }
    lstrv_free(list); /* the file's list replaces the default */
    size_t n = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++, n++) {
        yaml_node_t *item = get_node(L, *it);
        if (!item)
            continue;
        char ikey[200];
        snprintf(ikey, sizeof(ikey), "%s[%zu]", key, n);
        if (n == CONFIG_MAX_LIST) {
            report(L, node_line(item), key, "has more than %d items", CONFIG_MAX_LIST);
            break;
        }
        if (item->type != YAML_SCALAR_NODE || is_null(item)) {
            report(L, node_line(item), ikey, "must be a string, not %s",
                   is_null(item) ? "empty" : kind_name(item));
            continue;
        }
        const char *s = scalar_text(L, item, ikey);
        if (!s)
            continue;
        _cleanup_lbuf_ struct lbuf why = LBUF_INIT;
        int r = cfg_set_scalar(k, s, L->c, &why);
        if (r == -ENOMEM)
            L->oom = true;
        else if (r < 0)
            report(L, node_line(item), ikey, "%s", why.data ? why.data : "is not valid");
    }
    L->line[idx] = node_line(v);
}

static void set_key(struct loader *L, size_t idx, const char *key, yaml_node_t *v)
{
    const struct cfg_key *k = &cfg_keys[idx];
    if (is_null(v))
        return;
    if (k->type == CT_STRLIST) {
        set_list(L, idx, key, v);
        return;
    }
    if (v->type != YAML_SCALAR_NODE) {
        if (k->type == CT_ENUM) {
            _cleanup_lbuf_ struct lbuf names = LBUF_INIT;
            for (int i = 0; k->names[i]; i++)
                lbuf_printf(&names, "%s%s", i ? ", " : "", k->names[i]);
            report(L, node_line(v), key, "must be one of %s, not %s", names.data, kind_name(v));
        } else {
            report(L, node_line(v), key, "must be %s, not %s", cfg_type_noun(k), kind_name(v));
        }
        return;
    }
    const char *s = scalar_text(L, v, key);
    if (!s)
        return;
    L->line[idx] = node_line(v);
    if (k->type == CT_CONNSTR) {
        if (!*s)
            report(L, node_line(v), key, "must not be empty");
        else
            parse_connection_string(L, s, node_line(v));
        return;
    }
    _cleanup_lbuf_ struct lbuf why = LBUF_INIT;
    int r = cfg_set_scalar(k, s, L->c, &why);
    if (r == -ENOMEM)
        L->oom = true;
    else if (r < 0)
        report(L, node_line(v), key, "%s", why.data ? why.data : "is not valid");
}

/* A key name as it may appear in a message: as is when it is a tame identifier, else quoted. */
static void show_key(struct lbuf *out, const char *prefix, const char *name, size_t n)
{
    if (*prefix)
        lbuf_printf(out, "%s.", prefix);
    if (n > 0 && n <= KEY_SHOWN_MAX &&
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n)
        lbuf_puts(out, name);
    else
        cfg_quote_n(out, name, n);
}

static void walk_mapping(struct loader *L, yaml_node_t *map, const char *prefix)
{
    /* Names of known keys seen so far in this mapping, for duplicate detection. Only known
     * keys are recorded, so this stays as small as the schema's widest section. */
    struct {
        const char *name;
        int line;
    } seen[32];
    size_t nseen = 0;

    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
         pair < map->data.mapping.pairs.top && !L->full && !L->oom; pair++) {
        yaml_node_t *kn = get_node(L, pair->key), *vn = get_node(L, pair->value);
        if (!kn || !vn)
            continue;
        if (kn->type != YAML_SCALAR_NODE) {
            report(L, node_line(kn), *prefix ? prefix : NULL, "keys must be names, not %s",
                   kind_name(kn));
            continue;
        }
        const char *name = (const char *)kn->data.scalar.value;
        _cleanup_lbuf_ struct lbuf shown = LBUF_INIT;
        show_key(&shown, prefix, name, kn->data.scalar.length);
        if (!shown.data) {
            L->oom = true;
            return;
        }
        /* A NUL inside the name would truncate it into a valid key: treat it as unknown. */
        bool clean = strlen(name) == kn->data.scalar.length && strlen(name) <= KEY_SHOWN_MAX;
        char full[160] = "";
        if (clean)
            snprintf(full, sizeof(full), "%s%s%s", prefix, *prefix ? "." : "", name);
        const struct cfg_key *k = clean ? cfg_find(full) : NULL;
        bool section = clean && !k && cfg_is_section(full);

        if (!k && !section) {
            _cleanup_lbuf_ struct lbuf hint = LBUF_INIT;
            if (clean)
                suggest(prefix, name, &hint);
            report(L, node_line(kn), shown.data, "unknown key%s", hint.data ? hint.data : "");
            continue;
        }
        bool dup = false;
        for (size_t i = 0; i < nseen; i++)
            if (strcmp(seen[i].name, name) == 0) {
                report(L, node_line(kn), shown.data, "duplicate key (first on line %d)",
                       seen[i].line);
                dup = true;
            }
        if (dup)
            continue;
        if (nseen < ARRAY_SIZE(seen))
            seen[nseen++] = (typeof(seen[0])){name, node_line(kn)};

        if (k) {
            set_key(L, (size_t)(k - cfg_keys), full, vn);
        } else if (vn->type == YAML_MAPPING_NODE) {
            walk_mapping(L, vn, full);
        } else if (!is_null(vn)) {
            report(L, node_line(vn), full, "must be a section (a mapping of keys), not %s",
                   kind_name(vn));
        }
    }
}

/* ---- device.connection_string ---- */

/* Secret: no message quotes any part of the value, only the names of its parts. */
static void parse_connection_string(struct loader *L, const char *s, int line)
{
    static const char *const key = "device.connection_string";
    enum { HOST, DEVICE, KEY, GATEWAY, N_PARTS };
    static const char *const names[N_PARTS] = {"HostName", "DeviceId", "SharedAccessKey",
                                               "GatewayHostName"};
    const char *val[N_PARTS] = {NULL};
    bool seen[N_PARTS] = {false};
    size_t n = strlen(s);
    char *copy = strdup(s);
    bool bad = false;
    if (!copy) {
        L->oom = true;
        return;
    }
    L->cs_present = true;
    size_t part = 0;
    for (char *seg = copy, *next; seg; seg = next, part++) {
        next = strchr(seg, ';');
        if (next)
            *next++ = 0;
        if (!*seg)
            continue;
        char *eq = strchr(seg, '=');
        if (!eq) {
            report(L, line, key, "part %zu is not Name=value (value not shown)", part + 1);
            bad = true;
            continue;
        }
        *eq = 0;
        size_t which = N_PARTS;
        for (size_t i = 0; i < N_PARTS; i++)
            if (strcasecmp(seg, names[i]) == 0)
                which = i;
        if (which == N_PARTS) {
            /* Not even the name is shown: a stray key fragment could stand where it should. */
            if (strcasecmp(seg, "ModuleId") == 0)
                report(L, line, key, "is a module connection string; use the device's");
            else if (strcasecmp(seg, "SharedAccessKeyName") == 0)
                report(L, line, key,
                       "is an IoT hub policy connection string; use the device's own");
            else if (strcasecmp(seg, "x509") == 0)
                report(L, line, key,
                       "x509 connection strings are not supported; set "
                       "device.x509 instead");
            else
                report(L, line, key,
                       "part %zu has an unknown name (expected HostName, DeviceId, "
                       "SharedAccessKey, GatewayHostName; value not shown)",
                       part + 1);
            bad = true;
        } else if (seen[which]) {
            report(L, line, key, "%s appears twice", names[which]);
            bad = true;
        } else if (!eq[1]) {
            report(L, line, key, "%s is empty", names[which]);
            seen[which] = bad = true;
        } else {
            val[which] = eq + 1;
            seen[which] = true;
        }
    }
    for (size_t i = 0; i < GATEWAY; i++)
        if (!seen[i]) {
            report(L, line, key, "%s is missing", names[i]);
            bad = true;
        }
    _cleanup_lbuf_ struct lbuf why = LBUF_INIT;
    if (val[HOST] && cfg_check_iothub_hostname(val[HOST], &why) < 0) {
        report(L, line, key, "HostName is not a fully qualified host name (value not shown)");
        bad = true;
    }
    if (val[DEVICE] && cfg_check_device_id(val[DEVICE], &why) < 0) {
        report(L, line, key, "DeviceId is not a valid device id (value not shown)");
        bad = true;
    }
    if (val[GATEWAY] && cfg_check_hostname(val[GATEWAY], &why) < 0) {
        report(L, line, key, "GatewayHostName is not a valid host name (value not shown)");
        bad = true;
    }
    if (val[KEY]) {
        int r = cfg_check_device_key(val[KEY], &why);
        if (r == -ENOMEM)
            L->oom = true;
        else if (r < 0) {
            report(L, line, key,
                   "SharedAccessKey is not base64 of 16 to 64 bytes (value not shown)");
            bad = true;
        }
    }
    if (!bad) {
        L->cs_host = strdup(val[HOST]);
        L->cs_id = strdup(val[DEVICE]);
        L->cs_gateway = val[GATEWAY] ? strdup(val[GATEWAY]) : NULL;
        char *k = strdup(val[KEY]);
        if (!L->cs_host || !L->cs_id || (val[GATEWAY] && !L->cs_gateway) || !k)
            L->oom = true;
        if (L->c->device.key)
            lcrypto_wipe(L->c->device.key, strlen(L->c->device.key));
        free(L->c->device.key);
        L->c->device.key = k;
    }
    lcrypto_wipe(copy, n);
    free(copy);
}

/* ---- checks across keys ---- */

/* Take a value from the connection string unless the file sets the key itself, in which case
 * the two must agree (neither value is shown: they come from a secret). */
static void merge_from_connection_string(struct loader *L, const char *path, char **field,
                                         char **from_cs, const char *part)
{
    if (!*from_cs)
        return;
    if (line_of(L, path) && *field) {
        if (strcmp(*field, *from_cs) != 0)
            report(L, line_of(L, path), path,
                   "conflicts with the %s of device.connection_string (line %d)", part,
                   line_of(L, "device.connection_string"));
        return;
    }
    free(*field);
    *field = TAKE_PTR(*from_cs);
}

static void check_device(struct loader *L)
{
    struct config_device *d = &L->c->device;
    const char *sources[] = {"device.key", "device.connection_string", "device.x509.cert_file",
                             "device.x509.key_file"};
    int nset = 0, first = 0;
    for (size_t i = 0; i < ARRAY_SIZE(sources); i++) {
        int line = line_of(L, sources[i]);
        if (!line || (i == 3 && line_of(L, sources[2])))
            continue; /* x509's two files are one source */
        if (nset++ && !L->full) {
            report(L, line, sources[i],
                   "only one of device.key, device.connection_string and device.x509 may be "
                   "set (another is on line %d)",
                   first);
            return;
        }
        first = line;
    }

    if (line_of(L, "device.key")) {
        d->identity = CONFIG_IDENTITY_KEY;
    } else if (L->cs_present) {
        d->identity = CONFIG_IDENTITY_CONNECTION_STRING;
        merge_from_connection_string(L, "device.id", &d->id, &L->cs_id, "DeviceId");
        merge_from_connection_string(L, "device.iothub_hostname", &d->iothub_hostname, &L->cs_host,
                                     "HostName");
        merge_from_connection_string(L, "device.gateway_hostname", &d->gateway_hostname,
                                     &L->cs_gateway, "GatewayHostName");
    } else if (line_of(L, "device.x509.cert_file") || line_of(L, "device.x509.key_file")) {
        d->identity = CONFIG_IDENTITY_X509;
        /* presence, not validity: a rejected path has its own message already */
        if (!line_of(L, "device.x509.cert_file"))
            report(L, line_of(L, "device.x509.key_file"), "device.x509.cert_file",
                   "is required with device.x509.key_file");
        if (!line_of(L, "device.x509.key_file"))
            report(L, line_of(L, "device.x509.cert_file"), "device.x509.key_file",
                   "is required with device.x509.cert_file");
    }

    /* A device registered in an IoT hub must name itself and its hub: a made-up default would
     * only fail later, upstream. */
    const char *src = d->identity == CONFIG_IDENTITY_KEY    ? "device.key"
                      : d->identity == CONFIG_IDENTITY_X509 ? "device.x509"
                                                            : NULL;
    int src_line = d->identity == CONFIG_IDENTITY_KEY    ? line_of(L, "device.key")
                   : line_of(L, "device.x509.cert_file") ? line_of(L, "device.x509.cert_file")
                                                         : line_of(L, "device.x509.key_file");
    if (src && !d->id)
        report(L, src_line, "device.id", "is required when %s is set", src);
    if (src && !d->iothub_hostname)
        report(L, src_line, "device.iothub_hostname", "is required when %s is set", src);
}

static void check_relations(struct loader *L)
{
    struct ledge_config *c = L->c;
    char a[32], b[32];

    if (c->agent.backoff_base_ms > c->agent.backoff_max_ms) {
        cfg_format_duration(c->agent.backoff_base_ms, a);
        cfg_format_duration(c->agent.backoff_max_ms, b);
        const char *at =
            line_of(L, "agent.backoff_base") ? "agent.backoff_base" : "agent.backoff_max";
        report(L, line_of(L, at), at,
               "agent.backoff_base (%s) is longer than agent.backoff_max (%s)", a, b);
    }

    struct config_certificates *ct = &c->certificates;
    if (ct->ca_cert && !ct->ca_key)
        report(L, line_of(L, "certificates.ca_cert"), "certificates.ca_key",
               "is required with certificates.ca_cert");
    if (ct->ca_key && !ct->ca_cert)
        report(L, line_of(L, "certificates.ca_key"), "certificates.ca_cert",
               "is required with certificates.ca_key");
    if (ct->ca_chain && !ct->ca_cert)
        report(L, line_of(L, "certificates.ca_chain"), "certificates.ca_chain",
               "needs certificates.ca_cert and certificates.ca_key");
    if (!ct->ca_cert && ct->cert_lifetime_ms > ct->ca_lifetime_ms) {
        cfg_format_duration(ct->cert_lifetime_ms, a);
        cfg_format_duration(ct->ca_lifetime_ms, b);
        const char *at = line_of(L, "certificates.cert_lifetime") ? "certificates.cert_lifetime"
                                                                  : "certificates.ca_lifetime";
        report(L, line_of(L, at), at,
               "certificates.cert_lifetime (%s) is longer than certificates.ca_lifetime (%s)", a,
               b);
    }
    if (ct->renew_before.ms && ct->renew_before.ms >= ct->cert_lifetime_ms) {
        cfg_format_duration(ct->renew_before.ms, a);
        cfg_format_duration(ct->cert_lifetime_ms, b);
        report(L, line_of(L, "certificates.renew_before"), "certificates.renew_before",
               "%s is not shorter than certificates.cert_lifetime (%s)", a, b);
    }

    if (c->hub.plain_port && c->hub.plain_port == c->hub.tls_port)
        report(L, line_of(L, "hub.plain_port"), "hub.plain_port",
               "must differ from hub.tls_port (%d)", c->hub.tls_port);
    if (c->hub.websocket_port &&
        (c->hub.websocket_port == c->hub.tls_port || c->hub.websocket_port == c->hub.plain_port))
        report(L, line_of(L, "hub.websocket_port"), "hub.websocket_port",
               "must differ from hub.tls_port (%d) and hub.plain_port (%d)", c->hub.tls_port,
               c->hub.plain_port);
    if (c->hub.amqp_port &&
        (c->hub.amqp_port == c->hub.tls_port || c->hub.amqp_port == c->hub.plain_port ||
         c->hub.amqp_port == c->hub.websocket_port))
        report(L, line_of(L, "hub.amqp_port"), "hub.amqp_port",
               "must differ from hub.tls_port (%d), hub.plain_port (%d) and hub.websocket_port "
               "(%d)",
               c->hub.tls_port, c->hub.plain_port, c->hub.websocket_port);

    /* A parent ledge (nested edge) is an IoT Hub to its child: the child logs in with its SAS
     * device identity, registered on the parent with `ledge device add ID --edge`, over TLS
     * checked against the parent's trust bundle. */
    struct config_upstream *u = &c->upstream;
    int pl = line_of(L, "upstream.parent");
    if (u->parent) {
        if (u->host && strcasecmp(u->host, u->parent) != 0)
            report(L, line_of(L, "upstream.host"), "upstream.host",
                   "\"%s\" differs from upstream.parent (\"%s\"): leave it out, the parent is the "
                   "upstream",
                   u->host, u->parent);
        if (line_of(L, "upstream.enabled") && !u->enabled)
            report(L, line_of(L, "upstream.enabled"), "upstream.enabled",
                   "cannot be false with upstream.parent (the parent is the upstream)");
        if (u->iothub_mode == CONFIG_IOTHUB_FALSE)
            report(
                L, line_of(L, "upstream.iothub"), "upstream.iothub",
                "cannot be false with upstream.parent: a parent ledge speaks IoT Hub's protocol");
        if (c->device.identity != CONFIG_IDENTITY_KEY &&
            c->device.identity != CONFIG_IDENTITY_CONNECTION_STRING)
            report(L, pl, "upstream.parent",
                   "needs a SAS device identity (device.key or device.connection_string) that the "
                   "parent knows: `ledge device add %s` on the parent prints it",
                   c->device.id ? c->device.id : "<this device>");
        if (u->tls && !u->ca_file)
            report(L, pl, "upstream.ca_file",
                   "is required with upstream.parent: the parent's trust bundle (`ledge device "
                   "trust-bundle` on the parent), which signs its hub's certificate");
    }

    if (c->upstream.enabled && !c->upstream.host && c->device.identity == CONFIG_IDENTITY_GENERATED)
        report(L, line_of(L, "upstream.enabled"), "upstream.host",
               "is required when upstream.enabled is true and the device has no IoT hub "
               "identity (device.key, device.connection_string or device.x509)");

    /* (a key given with a bad value has its own error) */
    if (!c->registry_proxy.listen != !c->registry_proxy.target &&
        !line_of(L, c->registry_proxy.listen ? "registry_proxy.target" : "registry_proxy.listen"))
        report(L,
               line_of(L, c->registry_proxy.listen ? "registry_proxy.listen"
                                                   : "registry_proxy.target"),
               c->registry_proxy.listen ? "registry_proxy.target" : "registry_proxy.listen",
               "is required with registry_proxy.%s",
               c->registry_proxy.listen ? "listen" : "target");
    if (c->registry_proxy.target && strstr(c->registry_proxy.target, "://$upstream") &&
        !c->upstream.parent)
        report(L, line_of(L, "registry_proxy.target"), "registry_proxy.target",
               "names $upstream: upstream.parent (the parent ledge's host name) is required");
}

/* ---- derived defaults ---- */

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    return lstr_printf("%.*s%s%s", (int)n, dir, n == 1 && dir[0] == '/' ? "" : "/", name);
}

static char *machine_hostname(void)
{
    char host[256] = "";
    if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
        return strdup("localhost");
    lstr_lower(host);
    return strdup(host);
}

/* Fill what the file left unset and whose default depends on other settings. Returns -ENOMEM
 * or 0. */
static int resolve_derived(struct ledge_config *c)
{
    struct {
        char **field;
        const char *base;
        const char *name;
    } paths[] = {
        {&c->management.socket, c->run_dir, "mgmt.sock"},
        {&c->workload.dir, c->run_dir, "workload"},
        {&c->hub.control_socket, c->run_dir, "hub.sock"},
        {&c->hub.store_dir, c->state_dir, "hub"},
        {&c->vm.dir, c->state_dir, "vm"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
        if (!*paths[i].field && !(*paths[i].field = path_join(paths[i].base, paths[i].name)))
            return -ENOMEM;

    struct config_device *d = &c->device;
    if (!d->gateway_hostname && !(d->gateway_hostname = machine_hostname()))
        return -ENOMEM;
    if (!d->id) {
        /* A local-only device is named after the machine: host names are valid device ids. */
        d->id = strndup(d->gateway_hostname, 128);
        if (!d->id)
            return -ENOMEM;
        for (char *p = d->id; *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr("-:.+%_#*?!(),=@;$'", *p))
                *p = '-';
    }
    if (!d->iothub_hostname) {
        char *h = lstr_printf("%s.local.ledge", d->id);
        if (h && !cfg_is_hostname(h)) {
            free(h);
            h = strdup("local.ledge");
        }
        if (!(d->iothub_hostname = h))
            return -ENOMEM;
    }
    if (c->upstream.parent) {
        c->upstream.enabled = true;
        if (!c->upstream.host && !(c->upstream.host = strdup(c->upstream.parent)))
            return -ENOMEM;
    }
    if (c->upstream.enabled && !c->upstream.host && d->identity != CONFIG_IDENTITY_GENERATED &&
        !(c->upstream.host = strdup(d->iothub_hostname)))
        return -ENOMEM;
    c->upstream.iothub = c->upstream.enabled && c->upstream.host &&
                         d->identity != CONFIG_IDENTITY_GENERATED &&
                         (c->upstream.iothub_mode == CONFIG_IOTHUB_TRUE || c->upstream.parent ||
                          (c->upstream.iothub_mode == CONFIG_IOTHUB_AUTO &&
                           strcasecmp(c->upstream.host, d->iothub_hostname) == 0));
    return 0;
}

/* Derived paths inherit state_dir/run_dir's length: blame those keys when they get too long. */
static void check_derived_paths(struct loader *L)
{
    static const struct {
        const char *key, *base;
    } derived[] = {
        {"management.socket", "run_dir"},  {"workload.dir", "run_dir"},
        {"hub.control_socket", "run_dir"}, {"hub.store_dir", "state_dir"},
        {"vm.dir", "state_dir"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(derived); i++) {
        const struct cfg_key *k = cfg_find(derived[i].key);
        if (line_of(L, derived[i].key))
            continue;
        const char *v = *(char **)cfg_field(k, L->c);
        size_t max = (k->flags & CF_SOCKET) ? 107 : 4095;
        if (v && strlen(v) > max)
            report(L, line_of(L, derived[i].base), derived[i].base,
                   "is too long: %s under it would exceed %zu bytes%s", derived[i].key, max,
                   (k->flags & CF_SOCKET) ? " (the unix socket limit)" : "");
    }
}

/* ---- public API ---- */

static int apply_table_defaults(struct ledge_config *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < cfg_n_keys; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (!k->dflt)
            continue;
        _cleanup_lbuf_ struct lbuf why = LBUF_INIT;
        int r = cfg_set_scalar(k, k->dflt, c, &why);
        if (r < 0) /* only -ENOMEM: the unit tests check that every default parses */
            return r;
    }
    return 0;
}

int config_defaults(struct ledge_config *c)
{
    struct ledge_config tmp;
    int r = apply_table_defaults(&tmp);
    if (r >= 0)
        r = resolve_derived(&tmp);
    if (r < 0) {
        config_free(&tmp);
        return r;
    }
    *c = tmp;
    return 0;
}

void config_free(struct ledge_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < cfg_n_keys; i++)
        cfg_free_value(&cfg_keys[i], c);
    memset(c, 0, sizeof(*c));
}

/* The document's scalars may hold secrets: overwrite them before libyaml frees them. */
static void wipe_document(yaml_document_t *doc)
{
    for (yaml_node_t *n = doc->nodes.start; n < doc->nodes.top; n++)
        if (n->type == YAML_SCALAR_NODE)
            lcrypto_wipe(n->data.scalar.value, n->data.scalar.length);
}

/* Returns true when the document was parsed and walked, so cross-key checks make sense. */
static bool load_document(struct loader *L)
{
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) {
        L->oom = true;
        return false;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)L->text, L->len);
    if (!yaml_parser_load(&p, &doc)) {
        report_yaml_error(L, &p);
        yaml_parser_delete(&p);
        return false;
    }
    L->doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type == YAML_MAPPING_NODE)
        walk_mapping(L, root, "");
    else if (root && !is_null(root))
        report(L, node_line(root), NULL,
               "the file must be a mapping of settings (key: value), "
               "not %s",
               kind_name(root));
    L->doc = NULL;
    wipe_document(&doc);
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    return true;
}

int config_load_string(const char *text, size_t len, const char *origin, struct ledge_config *c,
                       struct lstrv *errors)
{
    struct ledge_config tmp;
    _cleanup_free_ int *lines = calloc(cfg_n_keys, sizeof(int));
    struct loader L = {
        .origin = origin ? origin : "<config>",
        .text = text ? text : "",
        .len = text ? len : 0,
        .c = &tmp,
        .errors = errors,
        .line = lines,
    };
    int r = apply_table_defaults(&tmp);
    if (r < 0 || !lines) {
        config_free(&tmp);
        return -ENOMEM;
    }

    bool walked = false;
    if (L.len > CONFIG_MAX_FILE_SIZE)
        report(&L, 0, NULL, "is larger than 1 MiB");
    else if (yaml_prescan(&L) && !L.oom)
        walked = load_document(&L);

    /* Cross-key checks run even after per-key errors, so one pass reports everything; a key
     * whose value was rejected keeps its default meanwhile. */
    if (walked && !L.oom && !L.full) {
        check_device(&L);
        check_relations(&L);
        if (resolve_derived(&tmp) < 0)
            L.oom = true;
        check_derived_paths(&L);
    }

    free(L.cs_host);
    free(L.cs_id);
    free(L.cs_gateway);
    if (L.oom || L.nerr) {
        config_free(&tmp);
        return L.oom ? -ENOMEM : -EINVAL;
    }
    *c = tmp;
    return 0;
}

/* Read a regular file of at most CONFIG_MAX_FILE_SIZE bytes into one buffer sized up front, so
 * that no stale copy of its secrets is left behind by a realloc. */
static int read_config_file(const char *path, char **ret, size_t *ret_len)
{
    /* O_NONBLOCK: a FIFO put in the file's place must not hang start-up (it is refused
     * below); it changes nothing for a regular file. */
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return neg_errno();
    struct stat st;
    if (fstat(fd, &st) < 0)
        return neg_errno();
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    if (st.st_size > CONFIG_MAX_FILE_SIZE)
        return -EFBIG;
    size_t cap = (size_t)st.st_size + 1, len = 0; /* +1 sees growth since fstat */
    char *buf = malloc(cap + 1);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (len += (size_t)n) == cap) {
            int r = n < 0 ? neg_errno() : -EAGAIN; /* the file grew while we read it */
            lcrypto_wipe(buf, len);
            free(buf);
            return r;
        }
        if (n == 0)
            break;
    }
    buf[len] = 0;
    *ret = buf;
    *ret_len = len;
    return 0;
}

static int load_file(const char *path, struct ledge_config *c, struct lstrv *errors,
                     bool missing_ok)
{
    char *text = NULL;
    size_t len = 0;
    int r = read_config_file(path, &text, &len);
    if (r == -ENOENT && missing_ok) {
        r = config_defaults(c);
        return r < 0 ? r : 1;
    }
    if (r < 0) {
        const char *why = r == -EFBIG    ? "is larger than 1 MiB"
                          : r == -EINVAL ? "is not a regular file"
                          : r == -EAGAIN ? "changed while being read"
                                         : NULL;
        int pr = why ? lstrv_printf(errors, "%s: %s", path, why)
                     : lstrv_printf(errors, "%s: cannot read: %s", path, strerror(-r));
        return pr < 0 ? pr : r;
    }
    r = config_load_string(text, len, path, c, errors);
    lcrypto_wipe(text, len);
    free(text);
    return r;
}

int config_load_file(const char *path, struct ledge_config *c, struct lstrv *errors)
{
    return load_file(path, c, errors, false);
}

int config_load_file_or_defaults(const char *path, struct ledge_config *c, struct lstrv *errors)
{
    return load_file(path, c, errors, true);
}

json_t *config_to_json(const struct ledge_config *c, bool redact_secrets)
{
    _cleanup_json_ json_t *root = json_object();
    if (!root)
        return NULL;
    for (size_t i = 0; i < cfg_n_keys; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (k->type == CT_CONNSTR)
            continue; /* parsed into device.*; not kept */
        json_t *obj = root;
        const char *p = k->path, *dot;
        while ((dot = strchr(p, '.'))) {
            char sect[64];
            snprintf(sect, sizeof(sect), "%.*s", (int)(dot - p), p);
            json_t *sub = json_object_get(obj, sect);
            if (!sub && json_object_set_new(obj, sect, sub = json_object()) < 0)
                return NULL;
            obj = sub;
            p = dot + 1;
        }
        if (json_object_set_new(obj, p, cfg_value_json(k, c, redact_secrets)) < 0)
            return NULL;
        if (strcmp(k->path, "device.key") == 0 &&
            json_object_set_new(obj, "identity",
                                json_string(config_identity_name(c->device.identity))) < 0)
            return NULL;
    }
    return TAKE_PTR(root);
}
