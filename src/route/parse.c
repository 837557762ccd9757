/* parse.c — route parser: "[SELECT *] FROM <path> [WHERE <condition>] INTO <sink>" by recursive
 * descent with precedence climbing for the condition, building a typed tree. Types are checked
 * as IoT Edge's compiler (ConditionVisitor) checks them, so the routes it rejects fail here too,
 * with "column N: <reason>". */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "route-internal.h"

struct parser {
    const char *text;
    struct tok *toks;
    size_t n_toks;
    size_t pos;
    struct route *r;
    struct lerr *e;
    int rc;         /* first error */
    unsigned depth; /* recursion depth, bounded by ROUTE_MAX_DEPTH */
    bool twin_ok;   /* the route reads /twinChangeNotifications */
};

static char lower_ascii(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static const struct tok *peek(const struct parser *p)
{
    return &p->toks[p->pos];
}
static const struct tok *next(struct parser *p)
{
    const struct tok *t = &p->toks[p->pos];
    if (t->kind != TK_EOF)
        p->pos++;
    return t;
}
static const char *tok_ptr(const struct parser *p, const struct tok *t)
{
    return p->text + t->off;
}
static uint32_t col_of(const struct parser *p, uint32_t off)
{
    return u8_column(p->text, off);
}

_printf_(3, 4) static void *fail_at(struct parser *p, uint32_t off, const char *fmt, ...)
{
    if (p->rc)
        return NULL;
    char msg[LERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    p->rc = lerr_set(p->e, -EINVAL, "column %u: %s", col_of(p, off), msg);
    return NULL;
}

static void *fail_nomem(struct parser *p)
{
    if (!p->rc)
        p->rc = lerr_set(p->e, -ENOMEM, "out of memory");
    return NULL;
}

/* "'text'" of a token for messages (shortened), or "end of route". */
static const char *describe(const struct parser *p, const struct tok *t, char *buf, size_t size)
{
    if (t->kind == TK_EOF)
        return "end of route";
    int len = t->len > 40 ? 40 : (int)t->len;
    snprintf(buf, size, "'%.*s%s'", len, tok_ptr(p, t), t->len > 40 ? "..." : "");
    return buf;
}

static void *fail_unexpected(struct parser *p, const struct tok *t, const char *what)
{
    char buf[64];
    if (t->kind == TK_UNTERMINATED) {
        size_t end = t->off + t->len;
        if (p->text[end] == '\\')
            return fail_at(p, (uint32_t)end, "invalid escape sequence in string");
        return fail_at(p, t->off, "unterminated string");
    }
    if (t->kind == TK_UNKNOWN)
        return fail_at(p, t->off, "unexpected character '%c'", p->text[t->off]);
    if (t->kind == TK_QUERYPATH)
        return fail_at(p, t->off, "unexpected %s: '[' and ']' are only allowed in $body queries",
                       describe(p, t, buf, sizeof(buf)));
    return fail_at(p, t->off, "%s, found %s", what, describe(p, t, buf, sizeof(buf)));
}

/* ---- the tree ------------------------------------------------------------------------------ */

const char *route_stype_name(enum stype t)
{
    switch (t) {
    case ST_UNDEF:
        return "undefined";
    case ST_NULL:
        return "null";
    case ST_BOOL:
        return "bool";
    case ST_NUM:
        return "number";
    case ST_STR:
        return "string";
    case ST_DYN:
        return "dynamic";
    }
    return "?";
}

static struct node *new_node(struct parser *p, enum node_kind kind, enum stype type, uint32_t off)
{
    struct node *n = arena_alloc(&p->r->arena, sizeof(*n));
    if (!n)
        return fail_nomem(p);
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->type = type;
    n->depth = 1;
    n->off = off;
    return n;
}

static bool set_args(struct parser *p, struct node *n, struct node **args, size_t n_args,
                     uint32_t off)
{
    n->args = arena_alloc(&p->r->arena, (n_args ? n_args : 1) * sizeof(*n->args));
    if (!n->args) {
        fail_nomem(p);
        return false;
    }
    for (size_t i = 0; i < n_args; i++) {
        n->args[i] = args[i];
        if (args[i]->depth + 1 > n->depth)
            n->depth = args[i]->depth + 1;
    }
    n->n_args = n_args;
    if (n->depth > ROUTE_MAX_DEPTH) {
        fail_at(p, off, "expression nested too deeply (limit %d)", ROUTE_MAX_DEPTH);
        return false;
    }
    return true;
}

/* ---- literals ------------------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return c - 'A' + 10;
}

static uint32_t hex4(const char *s)
{
    return (uint32_t)(hexval(s[0]) << 12 | hexval(s[1]) << 8 | hexval(s[2]) << 4 | hexval(s[3]));
}

/* Unescape the body of a STRING token: \" \' \\ and \uXXXX (UTF-16 units, pairs combined; a
 * lone surrogate becomes U+FFFD). The lexer guaranteed every backslash starts a valid escape. */
static char *unescape(struct parser *p, const char *s, size_t n, size_t *ret_len)
{
    char *out = arena_alloc(&p->r->arena, n + 1); /* escapes never grow the text */
    if (!out)
        return fail_nomem(p);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            out[o++] = s[i++];
            continue;
        }
        if (s[i + 1] != 'u') {
            out[o++] = s[i + 1];
            i += 2;
            continue;
        }
        uint32_t cp = hex4(s + i + 2);
        i += 6;
        if (cp >= 0xd800 && cp <= 0xdbff && i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u') {
            uint32_t lo = hex4(s + i + 2);
            if (lo >= 0xdc00 && lo <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            }
        }
        o += u8_encode(cp, out + o); /* 6 escaped bytes never encode to more than 4 */
    }
    out[o] = 0;
    *ret_len = o;
    return out;
}

/* Number parsing needs the "C" locale (free to get); lower() and upper() need C.UTF-8, whose
 * loading costs tens of microseconds, so only routes calling them pay for it. Without C.UTF-8
 * case mapping falls back to ASCII. */
static bool ensure_locale(struct parser *p, bool unicode)
{
    struct route *r = p->r;
    if (r->loc && (r->loc_unicode || !unicode))
        return true;
    locale_t l = unicode ? newlocale(LC_CTYPE_MASK | LC_NUMERIC_MASK, "C.UTF-8", (locale_t)0) : 0;
    if (l) {
        if (r->loc)
            freelocale(r->loc);
        r->loc = l;
        r->loc_unicode = true;
        return true;
    }
    if (!r->loc)
        r->loc = newlocale(LC_CTYPE_MASK | LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!r->loc) {
        fail_nomem(p);
        return false;
    }
    return true;
}

/* INTEGER/REAL token to a value. IoT Edge parses with double.TryParse: overflow gives
 * infinity, and a REAL without mantissa digits ("e5") fails, which makes it undefined. */
static bool number_literal(struct parser *p, const struct tok *t, struct node *n)
{
    const char *s = tok_ptr(p, t);
    size_t digits = 0;
    for (size_t i = 0; i < t->len && s[i] != 'e' && s[i] != 'E'; i++)
        digits += s[i] >= '0' && s[i] <= '9';
    if (!digits) {
        n->type = ST_UNDEF;
        n->lit.t = RV_UNDEF;
        return true;
    }
    if (!ensure_locale(p, false))
        return false;
    char buf[64];
    char *tmp = t->len < sizeof(buf) ? buf : arena_alloc(&p->r->arena, t->len + 1);
    if (!tmp) {
        fail_nomem(p);
        return false;
    }
    memcpy(tmp, s, t->len);
    tmp[t->len] = 0;
    n->lit.t = RV_NUM;
    n->lit.n = strtod_l(tmp, NULL, p->r->loc);
    return true;
}

/* HEX token: long.TryParse(HexNumber) — at most 16 significant digits, two's complement. */
static void hex_literal(struct parser *p, const struct tok *t, struct node *n)
{
    const char *s = tok_ptr(p, t) + 2;
    size_t len = t->len - 2;
    while (len > 1 && *s == '0')
        s++, len--;
    if (len > 16) {
        n->type = ST_UNDEF;
        n->lit.t = RV_UNDEF;
        return;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++)
        v = v << 4 | (uint64_t)hexval(s[i]);
    n->lit.t = RV_NUM;
    n->lit.n = (double)(int64_t)v;
}

/* ---- properties and $body ------------------------------------------------------------------ */

/* JsonPath.g4: IDENT ('[' INT ']')? ('.' IDENT ('[' INT ']')?)* where IDENT excludes "[]." and
 * the characters a SYS_PROP token cannot hold anyway. */
static bool parse_json_path(struct parser *p, const char *s, size_t n, struct path_seg **ret,
                            size_t *ret_n)
{
    size_t count = 1;
    for (size_t i = 0; i < n; i++)
        count += s[i] == '.';
    struct path_seg *segs = arena_alloc(&p->r->arena, count * sizeof(*segs));
    if (!segs) {
        fail_nomem(p);
        return false;
    }
    size_t ns = 0, i = 0;
    for (;;) {
        size_t start = i;
        while (i < n && s[i] != '.' && s[i] != '[' && s[i] != ']')
            i++;
        if (i == start)
            return false;
        struct path_seg *seg = &segs[ns++];
        memset(seg, 0, sizeof(*seg));
        seg->key = arena_strndup(&p->r->arena, s + start, i - start);
        if (!seg->key) {
            fail_nomem(p);
            return false;
        }
        if (i < n && s[i] == '[') {
            size_t d = ++i;
            uint64_t v = 0;
            while (i < n && s[i] >= '0' && s[i] <= '9') {
                if (v <= INT32_MAX)
                    v = v * 10 + (uint64_t)(s[i] - '0');
                i++;
            }
            if (i == d || i >= n || s[i] != ']')
                return false;
            i++;
            seg->has_index = true;
            seg->index_too_big = v > INT32_MAX;
            seg->index = (uint32_t)(v > INT32_MAX ? 0 : v);
        }
        if (i == n)
            break;
        if (s[i] != '.')
            return false;
        i++;
    }
    *ret = segs;
    *ret_n = ns;
    return true;
}

/* A SYS_PROP token ($name), braced ({$name}) or not. ConditionVisitor.VisitSysProperty:
 * "$body.<path>" is a body query (an application property of that full name wins unless braced
 * or the path has brackets); other names containing brackets are undefined; otherwise the
 * application property "$name", else the system property "name" (braced: system only). */
static struct node *sys_prop(struct parser *p, const struct tok *t, bool braced)
{
    const char *s = tok_ptr(p, t);
    struct node *n = new_node(p, NK_SYS, ST_STR, t->off);
    if (!n)
        return NULL;
    n->name = arena_strndup(&p->r->arena, s, t->len);
    if (!n->name)
        return fail_nomem(p);
    bool brackets = memchr(s, '[', t->len) || memchr(s, ']', t->len);
    if (t->len >= 6 && strncasecmp(s, "$body.", 6) == 0) {
        if (t->len == 6)
            return fail_at(p, t->off, "empty $body query");
        if (!parse_json_path(p, s + 6, t->len - 6, &n->path, &n->n_path))
            return p->rc
                       ? NULL
                       : fail_at(p, t->off, "invalid $body query '%.*s'", (int)(t->len - 6), s + 6);
        n->kind = NK_BODY;
        n->type = ST_DYN;
        n->app_first = !braced && !brackets;
        return n;
    }
    if (brackets) {
        n->kind = NK_LIT;
        n->type = ST_UNDEF;
        n->lit.t = RV_UNDEF;
        return n;
    }
    if (braced)
        n->name++; /* the system property's name has no '$' */
    else
        n->kind = NK_DOLLAR;
    return n;
}

/* ---- functions ----------------------------------------------------------------------------- */

struct fn_def {
    const char *name;
    enum fn_id id;
    unsigned min, max;
};

static const struct fn_def fns[] = {
    {"abs", FN_ABS, 1, 1},
    {"exp", FN_EXP, 1, 1},
    {"power", FN_POWER, 2, 2},
    {"square", FN_SQUARE, 1, 1},
    {"ceiling", FN_CEILING, 1, 1},
    {"floor", FN_FLOOR, 1, 1},
    {"sign", FN_SIGN, 1, 1},
    {"sqrt", FN_SQRT, 1, 1},
    {"as_number", FN_AS_NUMBER, 1, 1},
    {"is_bool", FN_IS_BOOL, 1, 1},
    {"is_defined", FN_IS_DEFINED, 1, 1},
    {"is_null", FN_IS_NULL, 1, 1},
    {"is_number", FN_IS_NUMBER, 1, 1},
    {"is_string", FN_IS_STRING, 1, 1},
    {"concat", FN_CONCAT, 2, UINT32_MAX},
    {"length", FN_LENGTH, 1, 1},
    {"lower", FN_LOWER, 1, 1},
    {"upper", FN_UPPER, 1, 1},
    {"substring", FN_SUBSTRING, 2, 3},
    {"index_of", FN_INDEX_OF, 2, 2},
    {"starts_with", FN_STARTS_WITH, 2, 2},
    {"ends_with", FN_ENDS_WITH, 2, 2},
    {"contains", FN_CONTAINS, 2, 2},
    {"twin_change_includes", FN_TWIN_CHANGE_INCLUDES, 1, 1},
};

static const struct fn_def *find_fn(const char *s, size_t n)
{
    for (size_t i = 0; i < ARRAY_SIZE(fns); i++)
        if (strlen(fns[i].name) == n && strncasecmp(fns[i].name, s, n) == 0)
            return &fns[i];
    return NULL;
}

static bool is_s(enum stype t)
{
    return t == ST_STR || t == ST_DYN;
}
static bool is_n(enum stype t)
{
    return t == ST_NUM || t == ST_DYN;
}

/* The static result type of a call (the first matching executor of the IoT Edge builtin), or -1
 * when the argument types match none. */
static int fn_type(enum fn_id fn, struct node **a, size_t n)
{
    if (!a || n == 0) /* arity was checked before; this keeps the compiler informed */
        return -1;
    switch (fn) {
    case FN_ABS:
    case FN_EXP:
    case FN_SQUARE:
    case FN_CEILING:
    case FN_FLOOR:
    case FN_SIGN:
    case FN_SQRT:
        return is_n(a[0]->type) ? ST_NUM : -1;
    case FN_POWER:
        return is_n(a[0]->type) && is_n(a[1]->type) ? ST_NUM : -1;
    case FN_AS_NUMBER:
        return is_s(a[0]->type) || a[0]->type == ST_NUM ? ST_NUM : -1;
    case FN_IS_BOOL:
    case FN_IS_DEFINED:
    case FN_IS_NULL:
    case FN_IS_NUMBER:
    case FN_IS_STRING:
        return ST_BOOL;
    case FN_CONCAT:
        for (size_t i = 0; i < n; i++)
            if (!is_s(a[i]->type))
                return -1;
        return ST_STR;
    case FN_LENGTH:
        return is_s(a[0]->type) ? ST_NUM : -1;
    case FN_LOWER:
    case FN_UPPER:
        return is_s(a[0]->type) ? ST_STR : -1;
    case FN_SUBSTRING:
        return is_s(a[0]->type) && is_n(a[1]->type) && (n < 3 || is_n(a[2]->type)) ? ST_STR : -1;
    case FN_INDEX_OF:
        return is_s(a[0]->type) && is_s(a[1]->type) ? ST_NUM : -1;
    case FN_STARTS_WITH:
    case FN_ENDS_WITH:
    case FN_CONTAINS:
        return is_s(a[0]->type) && is_s(a[1]->type) ? ST_BOOL : -1;
    case FN_TWIN_CHANGE_INCLUDES:
        return ST_BOOL;
    }
    return -1;
}

static struct node *parse_expr(struct parser *p, int min_prec);

/* twin_change_includes(properties.reported.x): the argument is a property path, not an
 * expression; IoT Edge validates it as a JSON path under properties.reported., properties.desired.
 * or tags. It only makes sense (and only compiles) for twin change notifications. */
static struct node *twin_change_includes(struct parser *p, const struct tok *name,
                                         const struct tok *open)
{
    if (!p->twin_ok)
        return fail_at(
            p, name->off,
            "twin_change_includes is only valid in routes FROM /twinChangeNotifications");
    const struct tok *arg = next(p);
    if (arg->kind == TK_RPAREN)
        return fail_at(p, name->off,
                       "wrong number of arguments to 'twin_change_includes': expected 1, got 0");
    if (arg->kind != TK_ID || peek(p)->kind != TK_RPAREN) {
        if (arg->kind == TK_EOF)
            return fail_at(p, open->off, "missing closing ')'");
        return fail_at(p, arg->off,
                       "twin_change_includes takes one property path, e.g. "
                       "properties.reported.temperature");
    }
    next(p);
    struct node *n = new_node(p, NK_CALL, ST_BOOL, name->off);
    if (!n)
        return NULL;
    n->fn = FN_TWIN_CHANGE_INCLUDES;
    const char *s = tok_ptr(p, arg);
    static const char *const prefixes[] = {"properties.reported.", "properties.desired.", "tags."};
    bool prefix_ok = false;
    for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
        prefix_ok |= arg->len >= strlen(prefixes[i]) &&
                     strncasecmp(s, prefixes[i], strlen(prefixes[i])) == 0;
    if (!parse_json_path(p, s, arg->len, &n->path, &n->n_path) || !prefix_ok)
        return p->rc ? NULL
                     : fail_at(p, arg->off,
                               "twin_change_includes path '%.*s' must start with "
                               "properties.reported., properties.desired. or tags.",
                               (int)arg->len, s);
    return n;
}

static struct node *call(struct parser *p, const struct tok *name)
{
    const struct tok *open = next(p); /* '(' */
    const struct fn_def *def = find_fn(tok_ptr(p, name), name->len);
    if (!def)
        return fail_at(p, name->off, "unknown function '%.*s'", (int)name->len, tok_ptr(p, name));
    if (def->id == FN_TWIN_CHANGE_INCLUDES)
        return twin_change_includes(p, name, open);
    if ((def->id == FN_LOWER || def->id == FN_UPPER || def->id == FN_AS_NUMBER) &&
        !ensure_locale(p, def->id != FN_AS_NUMBER))
        return NULL;

    struct node **args = NULL;
    size_t n_args = 0, cap = 0;
    struct node *n = NULL;
    if (peek(p)->kind == TK_RPAREN) {
        next(p);
    } else {
        for (;;) {
            struct node *a = parse_expr(p, 1);
            if (!a)
                goto out;
            if (n_args == cap) {
                cap = cap ? cap * 2 : 4;
                struct node **na = realloc(args, cap * sizeof(*na));
                if (!na) {
                    fail_nomem(p);
                    goto out;
                }
                args = na;
            }
            args[n_args++] = a;
            const struct tok *t = next(p);
            if (t->kind == TK_RPAREN)
                break;
            if (t->kind == TK_COMMA)
                continue;
            if (t->kind == TK_EOF || t->kind == TK_INTO)
                fail_at(p, open->off, "missing closing ')'");
            else
                fail_unexpected(p, t, "expected ',' or ')'");
            goto out;
        }
    }
    if (n_args < def->min || n_args > def->max) {
        char expected[32];
        if (def->max == UINT32_MAX)
            snprintf(expected, sizeof(expected), "at least %u", def->min);
        else if (def->min != def->max)
            snprintf(expected, sizeof(expected), "%u or %u", def->min, def->max);
        else
            snprintf(expected, sizeof(expected), "%u", def->min);
        fail_at(p, name->off, "wrong number of arguments to '%s': expected %s, got %zu", def->name,
                expected, n_args);
        goto out;
    }
    int type = fn_type(def->id, args, n_args);
    if (type < 0) {
        char have[256] = "";
        size_t used = 0;
        for (size_t i = 0; i < n_args && used < sizeof(have); i++) {
            int k = snprintf(have + used, sizeof(have) - used, "%s%s", i ? ", " : "",
                             route_stype_name(args[i]->type));
            if (k < 0)
                break;
            used += (size_t)k;
        }
        fail_at(p, name->off, "invalid arguments to built-in function '%s': %s(%s)", def->name,
                def->name, have);
        goto out;
    }
    n = new_node(p, NK_CALL, (enum stype)type, name->off);
    if (!n)
        goto out;
    n->fn = def->id;
    if (!set_args(p, n, args, n_args, name->off))
        n = NULL;
out:
    free(args);
    return n;
}

/* ---- operators ----------------------------------------------------------------------------- */

static bool dyn_supported(enum stype t)
{
    return t == ST_NULL || t == ST_NUM || t == ST_STR || t == ST_BOOL;
}

/* CheckOperands(op, left.Type): both the left type, or one dynamic and the other a value. */
static bool same_or_dyn(enum stype l, enum stype r)
{
    return l == r || (l == ST_DYN && dyn_supported(r)) || (r == ST_DYN && dyn_supported(l));
}

static int binary_type(enum node_op op, enum stype l, enum stype r, const char **want_l,
                       const char **want_r)
{
    switch (op) {
    case OP_MUL:
    case OP_DIV:
    case OP_MOD:
    case OP_ADD:
    case OP_SUB:
        *want_l = *want_r = "number";
        if (!is_n(l) || !is_n(r))
            return -1;
        return l == ST_NUM && r == ST_NUM ? ST_NUM : ST_DYN;
    case OP_CONCAT:
        *want_l = *want_r = "string";
        return is_s(l) && is_s(r) ? ST_STR : -1;
    case OP_LT:
    case OP_LE:
    case OP_GT:
    case OP_GE:
    case OP_EQ:
    case OP_NE:
        *want_l = *want_r = route_stype_name(l);
        return same_or_dyn(l, r) ? ST_BOOL : -1;
    case OP_COALESCE:
        *want_l = *want_r = route_stype_name(l);
        if (!same_or_dyn(l, r))
            return -1;
        return l == ST_DYN || r == ST_DYN ? ST_DYN : l;
    case OP_AND:
    case OP_OR: {
        /* CheckBooleanOperands. Its right-hand test looks at the left type by mistake: a
         * dynamic left operand lets anything through on the right (which then evaluates to
         * undefined unless both are booleans), while "true AND $body.flag" fails to compile.
         * We keep the first quirk and fix the second (a superset: more routes compile). */
        *want_l = *want_r = "bool";
        bool lv = l == ST_NULL || l == ST_BOOL || l == ST_UNDEF || l == ST_DYN;
        bool rv = r == ST_NULL || r == ST_BOOL || r == ST_UNDEF || r == ST_DYN || l == ST_DYN;
        if (!lv || !rv)
            return -1;
        if (l == ST_DYN || r == ST_DYN)
            return ST_BOOL;
        if (op == OP_AND)
            return l == ST_NULL || r == ST_NULL ? ST_NULL : ST_BOOL;
        return l == ST_NULL && r == ST_NULL ? ST_NULL : ST_BOOL;
    }
    default:
        return -1;
    }
}

static int binop(enum tok_kind k, enum node_op *op)
{
    switch (k) {
    case TK_MUL:
        *op = OP_MUL;
        return 7;
    case TK_DIV:
        *op = OP_DIV;
        return 7;
    case TK_MOD:
        *op = OP_MOD;
        return 7;
    case TK_PLUS:
        *op = OP_ADD;
        return 6;
    case TK_MINUS:
        *op = OP_SUB;
        return 6;
    case TK_CONCAT:
        *op = OP_CONCAT;
        return 6;
    case TK_LT:
        *op = OP_LT;
        return 5;
    case TK_LE:
        *op = OP_LE;
        return 5;
    case TK_GT:
        *op = OP_GT;
        return 5;
    case TK_GE:
        *op = OP_GE;
        return 5;
    case TK_EQ:
        *op = OP_EQ;
        return 4;
    case TK_NE1:
    case TK_NE2:
        *op = OP_NE;
        return 4;
    case TK_AND:
        *op = OP_AND;
        return 3;
    case TK_OR:
        *op = OP_OR;
        return 2;
    case TK_COALESCE:
        *op = OP_COALESCE;
        return 1;
    default:
        return 0;
    }
}

static bool enter(struct parser *p, uint32_t off)
{
    if (++p->depth > ROUTE_MAX_DEPTH) {
        fail_at(p, off, "expression nested too deeply (limit %d)", ROUTE_MAX_DEPTH);
        return false;
    }
    return true;
}

static struct node *parse_unary(struct parser *p);

static struct node *parse_primary(struct parser *p)
{
    const struct tok *t = peek(p);
    struct node *n;
    switch (t->kind) {
    case TK_LPAREN: {
        next(p);
        struct node *inner = parse_expr(p, 1);
        if (!inner)
            return NULL;
        const struct tok *c = peek(p);
        if (c->kind == TK_RPAREN) {
            next(p);
            return inner;
        }
        if (c->kind == TK_EOF || c->kind == TK_INTO)
            return fail_at(p, t->off, "missing closing ')'");
        return fail_unexpected(p, c, "expected ')'");
    }
    case TK_STRING: {
        next(p);
        if (!(n = new_node(p, NK_LIT, ST_STR, t->off)))
            return NULL;
        n->lit.t = RV_STR;
        n->lit.s = unescape(p, tok_ptr(p, t) + 1, t->len - 2, &n->lit.len);
        return n->lit.s ? n : NULL;
    }
    case TK_INTEGER:
    case TK_REAL:
        next(p);
        if (!(n = new_node(p, NK_LIT, ST_NUM, t->off)))
            return NULL;
        return number_literal(p, t, n) ? n : NULL;
    case TK_HEX:
        next(p);
        if (!(n = new_node(p, NK_LIT, ST_NUM, t->off)))
            return NULL;
        hex_literal(p, t, n);
        return n;
    case TK_TRUE:
    case TK_FALSE:
        next(p);
        if (!(n = new_node(p, NK_LIT, ST_BOOL, t->off)))
            return NULL;
        n->lit.t = RV_BOOL;
        n->lit.b = t->kind == TK_TRUE;
        return n;
    case TK_NULL:
        next(p);
        if (!(n = new_node(p, NK_LIT, ST_NULL, t->off)))
            return NULL;
        n->lit.t = RV_NULL;
        return n;
    case TK_UNDEFINED:
        next(p);
        if (!(n = new_node(p, NK_LIT, ST_UNDEF, t->off)))
            return NULL;
        n->lit.t = RV_UNDEF;
        return n;
    case TK_SYSPROP:
        next(p);
        return sys_prop(p, t, false);
    case TK_LBRACE: {
        next(p);
        const struct tok *prop = next(p);
        if (prop->kind != TK_SYSPROP)
            return fail_unexpected(p, prop, "expected a $property after '{'");
        const struct tok *close = next(p);
        if (close->kind != TK_RBRACE)
            return fail_unexpected(p, close, "expected '}'");
        return sys_prop(p, prop, true);
    }
    case TK_ID:
        next(p);
        if (peek(p)->kind == TK_LPAREN)
            return call(p, t);
        if (!(n = new_node(p, NK_APP, ST_STR, t->off)))
            return NULL;
        n->name = arena_strndup(&p->r->arena, tok_ptr(p, t), t->len);
        return n->name ? n : fail_nomem(p);
    case TK_RPAREN:
        return fail_at(p, t->off, "unmatched closing ')'");
    default:
        return fail_unexpected(p, t, "expected an expression");
    }
}

static struct node *parse_unary(struct parser *p)
{
    const struct tok *t = peek(p);
    if (t->kind != TK_MINUS && t->kind != TK_NOT)
        return parse_primary(p);
    if (!enter(p, t->off))
        return NULL;
    next(p);
    /* Prefix operators bind tighter than every binary operator (they come first in
     * Condition.g4), so the operand is another unary expression. */
    struct node *operand = parse_unary(p);
    p->depth--;
    if (!operand)
        return NULL;
    enum stype ot = operand->type;
    bool neg = t->kind == TK_MINUS;
    bool ok = neg ? is_n(ot) : (ot == ST_NULL || ot == ST_BOOL || ot == ST_DYN);
    if (!ok)
        return fail_at(p, t->off,
                       "invalid operands to unary operator '%.*s': have '%s', expected '%s'",
                       (int)t->len, tok_ptr(p, t), route_stype_name(ot), neg ? "number" : "bool");
    struct node *n = new_node(p, NK_UNARY, neg ? ST_NUM : ST_BOOL, t->off);
    if (!n)
        return NULL;
    n->op = neg ? OP_NEG : OP_NOT;
    return set_args(p, n, &operand, 1, t->off) ? n : NULL;
}

/* Precedence climbing; every binary operator is left-associative. */
static struct node *parse_expr(struct parser *p, int min_prec)
{
    if (!enter(p, peek(p)->off))
        return NULL;
    struct node *left = parse_unary(p);
    while (left) {
        const struct tok *t = peek(p);
        enum node_op op;
        int prec = binop(t->kind, &op);
        if (prec == 0 || prec < min_prec)
            break;
        next(p);
        struct node *right = parse_expr(p, prec + 1);
        if (!right)
            return NULL;
        const char *want_l, *want_r;
        int type = binary_type(op, left->type, right->type, &want_l, &want_r);
        if (type < 0)
            return fail_at(p, t->off,
                           "invalid operands to binary operator '%.*s': have '%s' and '%s', "
                           "expected '%s' and '%s'",
                           (int)t->len, tok_ptr(p, t), route_stype_name(left->type),
                           route_stype_name(right->type), want_l, want_r);
        struct node *n = new_node(p, NK_BINARY, (enum stype)type, t->off);
        if (!n)
            return NULL;
        n->op = op;
        struct node *pair[2] = {left, right};
        if (!set_args(p, n, pair, 2, t->off))
            return NULL;
        left = n;
    }
    p->depth--;
    return left;
}

/* ---- the route ----------------------------------------------------------------------------- */

/* Tokens accepted as a source path segment. IoT Edge takes only '*' and IDs, so a module named
 * "123" or "and" cannot be routed from there; we also take the other word-like tokens. */
static bool path_item(enum tok_kind k)
{
    switch (k) {
    case TK_MUL:
    case TK_ID:
    case TK_INTEGER:
    case TK_HEX:
    case TK_REAL:
    case TK_TRUE:
    case TK_FALSE:
    case TK_NULL:
    case TK_UNDEFINED:
    case TK_AND:
    case TK_OR:
    case TK_NOT:
    case TK_SYSPROP:
        return true;
    default:
        return false;
    }
}

/* A source ending in slash-star followed, anywhere later, by a comment's star-slash lexes as
 * one long comment: in IoT Edge such a route silently loses its condition (and more). We refuse
 * it rather than route everything. off is where the source continues. */
static bool comment_trap(struct parser *p, uint32_t off)
{
    if (p->text[off] != '/' || p->text[off + 1] != '*')
        return false;
    const char *close = strstr(p->text + off + 2, "*/");
    if (!close) /* no comment: '/' and '*' are path tokens */
        return false;
    fail_at(p, off,
            "\"/*\" after the source path starts a comment that ends at column %u and hides "
            "the route in between",
            col_of(p, (uint32_t)(close - p->text + 1)));
    return true;
}

static bool parse_source(struct parser *p)
{
    struct lbuf b = LBUF_INIT;
    bool ok = false;
    const struct tok *from = &p->toks[p->pos - 1];
    uint32_t after = from->off + from->len;
    while (p->text[after] == ' ' || p->text[after] == '\t' || p->text[after] == '\r' ||
           p->text[after] == '\n')
        after++;
    if (peek(p)->kind != TK_DIV) {
        /* No path: perhaps its slash-star opened a comment, closed much later. */
        if (!comment_trap(p, after))
            fail_unexpected(p, peek(p), "expected a source path such as /messages/*");
        goto out;
    }
    while (peek(p)->kind == TK_DIV) {
        next(p);
        const struct tok *item = next(p);
        if (!path_item(item->kind)) {
            fail_unexpected(p, item, "expected a path segment after '/'");
            goto out;
        }
        if (lbuf_append(&b, "/", 1) < 0 || lbuf_append(&b, tok_ptr(p, item), item->len) < 0) {
            fail_nomem(p);
            goto out;
        }
    }
    const struct tok *last = &p->toks[p->pos - 1];
    if (comment_trap(p, last->off + last->len))
        goto out;
    size_t n = b.len;
    const char *s = b.data;
    p->r->source = strndup(s, n);
    /* CustomMessageSource.Create and BaseMessageSource: drop trailing '*', then (unless only
     * "/" is left) trailing '/', and compare with a single '/' appended. */
    while (n > 0 && s[n - 1] == '*')
        n--;
    if (n > 1)
        while (n > 0 && s[n - 1] == '/')
            n--;
    while (n > 0 && s[n - 1] == '/')
        n--;
    p->r->match_prefix = malloc(n + 2);
    if (!p->r->source || !p->r->match_prefix) {
        fail_nomem(p);
        goto out;
    }
    memcpy(p->r->match_prefix, s, n);
    memcpy(p->r->match_prefix + n, "/", 2);
    p->twin_ok = strcasecmp(p->r->match_prefix, "/twinChangeNotifications/") == 0;
    ok = true;
out:
    lbuf_free(&b);
    return ok;
}

/* EndpointFactory: "$upstream", or BrokeredEndpoint("/modules/<m>/inputs/<i>"). IoT Edge only
 * counts the four segments; we also insist on "modules" and "inputs". */
static bool parse_sink(struct parser *p)
{
    const struct tok *t = next(p);
    struct route_sink *sink = &p->r->sink;
    if (t->kind == TK_SYSPROP) {
        if (t->len != 9 || strncasecmp(tok_ptr(p, t), "$upstream", 9) != 0) {
            fail_at(p, t->off, "unknown endpoint '%.*s' (expected $upstream)", (int)t->len,
                    tok_ptr(p, t));
            return false;
        }
        sink->kind = ROUTE_SINK_UPSTREAM;
        if (!(sink->id = strdup("$upstream"))) {
            fail_nomem(p);
            return false;
        }
        return true;
    }
    if (t->kind != TK_ID || peek(p)->kind != TK_LPAREN) {
        fail_unexpected(p, t,
                        "expected an endpoint: $upstream or "
                        "BrokeredEndpoint(\"/modules/<module>/inputs/<input>\")");
        return false;
    }
    if (t->len != 16 || strncasecmp(tok_ptr(p, t), "BrokeredEndpoint", 16) != 0) {
        fail_at(p, t->off, "unknown endpoint function '%.*s' (expected BrokeredEndpoint)",
                (int)t->len, tok_ptr(p, t));
        return false;
    }
    const struct tok *open = next(p); /* '(' */
    const struct tok *str = next(p);
    if (str->kind != TK_STRING) {
        fail_unexpected(p, str, "expected a string with the endpoint address");
        return false;
    }
    const struct tok *close = next(p);
    if (close->kind != TK_RPAREN) {
        if (close->kind == TK_EOF)
            fail_at(p, open->off, "missing closing ')'");
        else
            fail_unexpected(p, close, "expected ')'");
        return false;
    }
    size_t len;
    const char *addr = unescape(p, tok_ptr(p, str) + 1, str->len - 2, &len);
    if (!addr)
        return false;
    /* Trim, drop one leading and one trailing '/', then split into exactly four segments. */
    while (len > 0 && (*addr == ' ' || *addr == '\t' || *addr == '\r' || *addr == '\n'))
        addr++, len--;
    while (len > 0 && (addr[len - 1] == ' ' || addr[len - 1] == '\t' || addr[len - 1] == '\r' ||
                       addr[len - 1] == '\n'))
        len--;
    if (len > 0 && addr[0] == '/')
        addr++, len--;
    if (len > 0 && addr[len - 1] == '/')
        len--;
    const char *seg[4];
    size_t seg_len[4], ns = 0, start = 0;
    for (size_t i = 0; i <= len && ns <= 4; i++) {
        if (i == len || addr[i] == '/') {
            if (ns < 4) {
                seg[ns] = addr + start;
                seg_len[ns] = i - start;
            }
            ns++;
            start = i + 1;
        }
    }
    if (ns != 4 || seg_len[0] != 7 || strncasecmp(seg[0], "modules", 7) != 0 || seg_len[2] != 6 ||
        strncasecmp(seg[2], "inputs", 6) != 0 || seg_len[1] == 0 || seg_len[3] == 0 ||
        memchr(addr, 0, len)) {
        fail_at(p, str->off,
                "BrokeredEndpoint address must be \"/modules/<module>/inputs/<input>\"");
        return false;
    }
    sink->kind = ROUTE_SINK_MODULE;
    sink->module = strndup(seg[1], seg_len[1]);
    sink->input = strndup(seg[3], seg_len[3]);
    if (sink->module && sink->input)
        sink->id = lstr_printf("/modules/%s/inputs/%s", sink->module, sink->input);
    if (!sink->id) {
        fail_nomem(p);
        return false;
    }
    return true;
}

static bool parse_route(struct parser *p)
{
    const struct tok *t = peek(p);
    if (t->kind == TK_SELECT) {
        next(p);
        const struct tok *star = next(p);
        if (star->kind != TK_MUL) {
            fail_unexpected(p, star, "expected '*' after SELECT");
            return false;
        }
        t = peek(p);
    }
    if (t->kind != TK_FROM) {
        fail_at(p, t->off, "expected FROM");
        return false;
    }
    next(p);
    if (!parse_source(p))
        return false;
    t = next(p);
    if (t->kind == TK_WHERE) {
        p->r->cond = parse_expr(p, 1);
        if (!p->r->cond)
            return false;
        t = next(p);
        if (t->kind == TK_RPAREN) {
            fail_at(p, t->off, "unmatched closing ')'");
            return false;
        }
        if (t->kind != TK_INTO) {
            if (t->kind == TK_UNTERMINATED || t->kind == TK_UNKNOWN || t->kind == TK_QUERYPATH)
                fail_unexpected(p, t, "");
            else
                fail_at(p, t->off, "expected INTO");
            return false;
        }
    } else if (t->kind != TK_INTO) {
        fail_unexpected(p, t, "expected WHERE or INTO");
        return false;
    }
    if (!parse_sink(p))
        return false;
    t = peek(p);
    if (t->kind != TK_EOF) {
        fail_unexpected(p, t, "unexpected text after the endpoint");
        return false;
    }
    return true;
}

void route_free(struct route *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->source);
    free(r->match_prefix);
    free(r->sink.module);
    free(r->sink.input);
    free(r->sink.id);
    if (r->loc)
        freelocale(r->loc);
    arena_free(&r->arena);
    free(r);
}

int route_parse(const char *text, struct route **ret, struct lerr *e)
{
    size_t len = strlen(text);
    if (len > ROUTE_MAX_TEXT)
        return lerr_set(e, -E2BIG, "route longer than %d bytes", ROUTE_MAX_TEXT);
    _cleanup_route_ struct route *r = calloc(1, sizeof(*r));
    if (!r || !(r->text = strdup(text)))
        return lerr_set(e, -ENOMEM, "out of memory");
    struct parser p = {.text = r->text, .r = r, .e = e};
    int rc = route_lex(r->text, len, &p.toks, &p.n_toks);
    if (rc < 0)
        return lerr_set(e, rc, "out of memory");
    bool ok = parse_route(&p);
    free(p.toks);
    if (!ok)
        return p.rc ? p.rc : lerr_set(e, -EINVAL, "invalid route");
    *ret = TAKE_PTR(r);
    return 0;
}

const char *route_text(const struct route *r)
{
    return r->text;
}
const char *route_source(const struct route *r)
{
    return r->source;
}
const struct route_sink *route_sink(const struct route *r)
{
    return &r->sink;
}
bool route_has_condition(const struct route *r)
{
    return r->cond != NULL;
}

bool route_source_matches(const struct route *r, const char *source)
{
    if (!source)
        return false;
    /* BaseMessageSource.Match: (source without trailing '/') + "/" starts with the prefix. */
    size_t ml = strlen(source);
    while (ml > 0 && source[ml - 1] == '/')
        ml--;
    size_t pl = strlen(r->match_prefix);
    if (ml + 1 < pl)
        return false;
    for (size_t i = 0; i < pl; i++) {
        char c = i < ml ? source[i] : '/';
        char d = r->match_prefix[i];
        if (c != d && lower_ascii(c) != lower_ascii(d))
            return false;
    }
    return true;
}
