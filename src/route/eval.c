/* eval.c — evaluates a typed route condition against a message: property lookup, the lazily
 * parsed JSON body, IoT Edge's three-valued logic and its builtin functions. Where IoT Edge's
 * behaviour depends on the static (compile-time) type of an operand, so does ours: the parser
 * records those types in the tree. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wctype.h>

#include "base/json.h"
#include "route-internal.h"

/* ---- messages ------------------------------------------------------------------------------ */

static const char *prop_find(const struct route_prop *props, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (props[i].name && props[i].value && strcasecmp(props[i].name, name) == 0)
            return props[i].value;
    return NULL;
}

void route_message_release(struct route_message *m)
{
    if (!m)
        return;
    if (m->body_json_)
        json_decref(m->body_json_);
    m->body_json_ = NULL;
    m->body_state_ = 0;
}

/* Decode UTF-16LE or UTF-32LE (what .NET's Encoding.Unicode and Encoding.UTF32 read) to UTF-8;
 * malformed units become U+FFFD. */
static char *decode_wide(const unsigned char *s, size_t n, unsigned width, size_t *ret_len)
{
    if (n > (SIZE_MAX - 8) / 2)
        return NULL;
    char *out = malloc(n * 2 + 8); /* UTF-8 never needs more than twice the UTF-16/32 bytes */
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    while (i + width <= n) {
        uint32_t cp;
        if (width == 4) {
            cp = (uint32_t)s[i] | (uint32_t)s[i + 1] << 8 | (uint32_t)s[i + 2] << 16 |
                 (uint32_t)s[i + 3] << 24;
            i += 4;
        } else {
            cp = (uint32_t)s[i] | (uint32_t)s[i + 1] << 8;
            i += 2;
            if (cp >= 0xd800 && cp <= 0xdbff && i + 2 <= n) {
                uint32_t lo = (uint32_t)s[i] | (uint32_t)s[i + 1] << 8;
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    i += 2;
                }
            }
        }
        o += u8_encode(cp, out + o); /* surrogates and out-of-range values encode as U+FFFD */
    }
    if (i < n)
        o += u8_encode(0xfffd, out + o);
    out[o] = 0;
    *ret_len = o;
    return out;
}

/* The parsed body, or NULL when $body queries are undefined for this message: IoT Edge reads
 * the body only when contentType is exactly application/json and contentEncoding is utf-8,
 * utf-16 or utf-32 (case-insensitive), and the text is a JSON object. Parsed once per message. */
static int body_load(struct route_message *m, json_t **ret)
{
    *ret = m->body_json_;
    if (m->body_state_)
        return 0;
    const char *ct = prop_find(m->sys, m->n_sys, "contentType");
    const char *ce = prop_find(m->sys, m->n_sys, "contentEncoding");
    unsigned width = 0;
    if (ce && strcasecmp(ce, "utf-8") == 0)
        width = 1;
    else if (ce && strcasecmp(ce, "utf-16") == 0)
        width = 2;
    else if (ce && strcasecmp(ce, "utf-32") == 0)
        width = 4;
    if (!ct || strcasecmp(ct, "application/json") != 0 || !width || (!m->body && m->body_len)) {
        m->body_state_ = -1;
        return 0;
    }
    const unsigned char *b = m->body ? m->body : (const unsigned char *)"";
    size_t n = m->body_len;
    _cleanup_free_ char *wide = NULL;
    if (width > 1) {
        wide = decode_wide(b, n, width, &n);
        if (!wide)
            return -ENOMEM;
        b = (const unsigned char *)wide;
    }
    if (n >= 3 && b[0] == 0xef && b[1] == 0xbb && b[2] == 0xbf) /* byte order mark */
        b += 3, n -= 3;
    json_error_t je;
    json_t *j = json_loadb((const char *)b, n, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &je);
    if (!j || !json_is_object(j) || ljson_depth(j) > LJSON_MAX_DEPTH) {
        if (j)
            json_decref(j);
        m->body_state_ = -1;
        return 0;
    }
    m->body_json_ = j;
    m->body_state_ = 1;
    *ret = j;
    return 0;
}

/* Newtonsoft SelectTokens over our JsonPath subset: 1 found, 0 no such token, -1 undefined. */
static int body_walk(json_t *root, const struct path_seg *segs, size_t n, json_t **ret)
{
    json_t *cur = root;
    for (size_t i = 0; i < n; i++) {
        cur = json_is_object(cur) ? json_object_get(cur, segs[i].key) : NULL;
        if (cur && segs[i].has_index) {
            if (segs[i].index_too_big)
                return -1;
            cur = json_is_array(cur) ? json_array_get(cur, segs[i].index) : NULL;
        }
        if (!cur)
            return 0;
    }
    *ret = cur;
    return 1;
}

/* ---- evaluation ---------------------------------------------------------------------------- */

struct ev {
    const struct route *r;
    struct route_message *m;
    struct arena arena; /* strings built by this evaluation, bounded */
    int rc;
};

static const struct rval undef = {.t = RV_UNDEF};

static struct rval boolean(bool b)
{
    return (struct rval){.t = RV_BOOL, .b = b};
}

/* A number result; NaN is undefined (IoT Edge's Undefined.IsDefined(double)). */
static struct rval number(double d)
{
    return isnan(d) ? undef : (struct rval){.t = RV_NUM, .n = d};
}

static struct rval string(const char *s, size_t len)
{
    return (struct rval){.t = RV_STR, .s = s, .len = len};
}

static char *ev_alloc(struct ev *ev, size_t n)
{
    if (arena_over_limit(&ev->arena, n)) {
        ev->rc = -E2BIG;
        return NULL;
    }
    char *p = arena_alloc(&ev->arena, n);
    if (!p)
        ev->rc = -ENOMEM;
    return p;
}

static int eval(struct ev *ev, const struct node *n, struct rval *out);

static struct rval prop_value(const char *v)
{
    return v ? string(v, strlen(v)) : undef;
}

static int body_query(struct ev *ev, const struct node *n, struct rval *out)
{
    json_t *root, *v = NULL;
    int rc = body_load(ev->m, &root);
    if (rc < 0)
        return rc;
    *out = undef;
    if (!root)
        return 0;
    rc = body_walk(root, n->path, n->n_path, &v);
    if (rc < 0)
        return 0;
    if (rc == 0) { /* SelectTokens found nothing: IoT Edge answers QueryValue.Null */
        out->t = RV_NULL;
        return 0;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        *out = string(json_string_value(v), json_string_length(v));
        break;
    case JSON_REAL:
        *out = number(json_real_value(v));
        break;
    case JSON_INTEGER:
        *out = number((double)json_integer_value(v));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        *out = boolean(json_is_true(v));
        break;
    case JSON_NULL:
        out->t = RV_NULL;
        break;
    default: /* objects and arrays: BodyQuery makes them undefined */
        break;
    }
    return 0;
}

/* Next UTF-16 code unit of s, or -1 at the end; *pending holds a low surrogate still owed. */
static int32_t next_unit(const char *s, size_t n, size_t *i, int32_t *pending)
{
    if (*pending >= 0) {
        int32_t u = *pending;
        *pending = -1;
        return u;
    }
    if (*i >= n)
        return -1;
    uint32_t cp;
    *i += u8_decode((const unsigned char *)s, n, *i, &cp);
    if (cp < 0x10000)
        return (int32_t)cp;
    cp -= 0x10000;
    *pending = (int32_t)(0xdc00 + (cp & 0x3ff));
    return (int32_t)(0xd800 + (cp >> 10));
}

/* string.Compare(a, b, StringComparison.Ordinal): by UTF-16 code units. */
static int u16_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    size_t i = 0, j = 0;
    int32_t pa = -1, pb = -1;
    for (;;) {
        int32_t ua = next_unit(a, an, &i, &pa), ub = next_unit(b, bn, &j, &pb);
        if (ua != ub)
            return ua < ub ? -1 : 1;
        if (ua < 0)
            return 0;
    }
}

static struct rval compare(enum node_op op, struct rval a, struct rval b)
{
    if (a.t == RV_UNDEF || b.t == RV_UNDEF)
        return undef;
    if (a.t != b.t) {
        /* Only dynamic ($body) values get here. IoT Edge orders values of different types by
         * an internal type number; we keep its = and != answers, ordering is undefined. */
        if (op == OP_EQ || op == OP_NE)
            return boolean(op == OP_NE);
        return undef;
    }
    int c = 0;
    switch (a.t) {
    case RV_BOOL:
        c = (int)a.b - (int)b.b;
        break;
    case RV_NUM:
        c = a.n < b.n ? -1 : a.n > b.n ? 1 : 0;
        break;
    case RV_STR:
        c = u16_cmp(a.s, a.len, b.s, b.len);
        break;
    default: /* null = null */
        break;
    }
    switch (op) {
    case OP_LT:
        return boolean(c < 0);
    case OP_LE:
        return boolean(c <= 0);
    case OP_GT:
        return boolean(c > 0);
    case OP_GE:
        return boolean(c >= 0);
    case OP_EQ:
        return boolean(c == 0);
    default:
        return boolean(c != 0);
    }
}

static int eval_logic(struct ev *ev, const struct node *n, struct rval *out)
{
    const struct node *l = n->args[0], *r = n->args[1];
    bool is_and = n->op == OP_AND;
    struct rval a, b;
    int rc;
    if (l->type == ST_DYN || r->type == ST_DYN) {
        /* QueryValue & and |: both operands must be booleans, else undefined. */
        if ((rc = eval(ev, l, &a)) < 0)
            return rc;
        *out = undef;
        if (a.t != RV_BOOL)
            return 0;
        if ((rc = eval(ev, r, &b)) < 0)
            return rc;
        if (b.t == RV_BOOL)
            *out = boolean(is_and ? a.b && b.b : a.b || b.b);
        return 0;
    }
    if (l->type == ST_NULL || r->type == ST_NULL) {
        /* The Null operators: null AND x is null; null OR x is x; null OR null is null. */
        if (is_and || (l->type == ST_NULL && r->type == ST_NULL)) {
            out->t = RV_NULL;
            return 0;
        }
        return eval(ev, l->type == ST_NULL ? r : l, out);
    }
    /* Bool and Undefined: false (AND) or true (OR) dominates, otherwise undefined wins. */
    if ((rc = eval(ev, l, &a)) < 0)
        return rc;
    if (a.t == RV_BOOL && a.b == !is_and) {
        *out = a;
        return 0;
    }
    if ((rc = eval(ev, r, &b)) < 0)
        return rc;
    if (b.t == RV_BOOL && b.b == !is_and)
        *out = b;
    else if (a.t == RV_BOOL && b.t == RV_BOOL)
        *out = boolean(!is_and ? false : true);
    else
        *out = undef;
    return 0;
}

static int eval_binary(struct ev *ev, const struct node *n, struct rval *out)
{
    if (n->op == OP_AND || n->op == OP_OR)
        return eval_logic(ev, n, out);
    struct rval a, b;
    int rc;
    if (n->op == OP_COALESCE) {
        if (n->args[0]->type != ST_UNDEF) {
            if ((rc = eval(ev, n->args[0], &a)) < 0)
                return rc;
            if (a.t != RV_UNDEF) {
                *out = a;
                return 0;
            }
        }
        return eval(ev, n->args[1], out);
    }
    if ((rc = eval(ev, n->args[0], &a)) < 0 || (rc = eval(ev, n->args[1], &b)) < 0)
        return rc;
    *out = undef;
    switch (n->op) {
    case OP_MUL:
    case OP_DIV:
    case OP_MOD:
    case OP_ADD:
    case OP_SUB:
        if (a.t != RV_NUM || b.t != RV_NUM)
            return 0;
        switch (n->op) {
        case OP_MUL:
            *out = number(a.n * b.n);
            break;
        case OP_DIV:
            *out = number(a.n / b.n);
            break;
        case OP_MOD:
            *out = number(fmod(a.n, b.n));
            break;
        case OP_ADD:
            *out = number(a.n + b.n);
            break;
        default:
            *out = number(a.n - b.n);
            break;
        }
        return 0;
    case OP_CONCAT: {
        if (a.t != RV_STR || b.t != RV_STR)
            return 0;
        char *s = ev_alloc(ev, a.len + b.len + 1);
        if (!s)
            return ev->rc;
        memcpy(s, a.s, a.len);
        memcpy(s + a.len, b.s, b.len);
        *out = string(s, a.len + b.len);
        return 0;
    }
    default:
        *out = compare(n->op, a, b);
        return 0;
    }
}

/* ---- builtins ------------------------------------------------------------------------------ */

static bool is_ws(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* double.TryParse(s, NumberStyles.Any, CultureInfo.InvariantCulture): surrounding white space,
 * a leading or trailing sign or parentheses, thousands separators, a decimal point, an exponent,
 * "Infinity"; overflow gives infinity. (Currency symbols are not accepted.) */
static int parse_number(struct ev *ev, const char *s, size_t n, struct rval *out)
{
    *out = undef;
    while (n && is_ws(*s))
        s++, n--;
    while (n && is_ws(s[n - 1]))
        n--;
    bool neg = false;
    if (n >= 2 && s[0] == '(' && s[n - 1] == ')') {
        neg = true;
        s++, n -= 2;
    } else if (n && (s[0] == '+' || s[0] == '-')) {
        neg = s[0] == '-';
        s++, n--;
    } else if (n && (s[n - 1] == '+' || s[n - 1] == '-')) {
        neg = s[n - 1] == '-';
        n--;
    }
    if (n == 8 && strncasecmp(s, "infinity", 8) == 0) {
        *out = number(neg ? -INFINITY : INFINITY);
        return 0;
    }
    char *buf = ev_alloc(ev, n + 3);
    if (!buf)
        return ev->rc;
    size_t o = 0, i = 0, digits = 0;
    buf[o++] = neg ? '-' : '+';
    while (i < n && ((s[i] >= '0' && s[i] <= '9') || (s[i] == ',' && digits))) {
        if (s[i] != ',')
            buf[o++] = s[i], digits++;
        i++;
    }
    if (i < n && s[i] == '.') {
        buf[o++] = s[i++];
        while (i < n && s[i] >= '0' && s[i] <= '9')
            buf[o++] = s[i++], digits++;
    }
    if (!digits)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        buf[o++] = s[i++];
        if (i < n && (s[i] == '+' || s[i] == '-'))
            buf[o++] = s[i++];
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            buf[o++] = s[i++];
        if (i == d)
            return 0;
    }
    if (i != n)
        return 0;
    buf[o] = 0;
    *out = number(ev->r->loc ? strtod_l(buf, NULL, ev->r->loc) : strtod(buf, NULL));
    return 0;
}

/* ToLowerInvariant / ToUpperInvariant: simple one-to-one case mapping per character. */
static int change_case(struct ev *ev, struct rval a, bool upper, struct rval *out)
{
    size_t cap = a.len * 2 + 4;
    char *s = ev_alloc(ev, cap);
    if (!s)
        return ev->rc;
    const unsigned char *in = (const unsigned char *)a.s;
    size_t o = 0;
    for (size_t i = 0; i < a.len;) {
        uint32_t cp;
        size_t l = u8_decode(in, a.len, i, &cp);
        if (cp < 0x80 || (cp == 0xfffd && l == 1)) { /* ASCII, or a byte that is not UTF-8 */
            char c = (char)in[i];
            if (upper && c >= 'a' && c <= 'z')
                c = (char)(c - 'a' + 'A');
            else if (!upper && c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            s[o++] = c;
        } else {
            uint32_t m = cp;
            if (ev->r->loc_unicode)
                m = (uint32_t)(upper ? towupper_l((wint_t)cp, ev->r->loc)
                                     : towlower_l((wint_t)cp, ev->r->loc));
            /* Invariant o <= 2 * i keeps the output within cap. Real mappings lengthen a
             * character by one byte at most (2 -> 3); a longer one keeps the character. */
            char enc[4];
            size_t el = u8_encode(m, enc);
            if (o + el > 2 * (i + l))
                el = u8_encode(cp, enc);
            memcpy(s + o, enc, el);
            o += el;
        }
        i += l;
    }
    *out = string(s, o);
    return 0;
}

/* String.Substring(start[, length]) over UTF-16 code units; a surrogate pair cut in half
 * leaves U+FFFD for the half kept. */
static int substring(struct ev *ev, struct rval s, double start, double length, bool has_length,
                     struct rval *out)
{
    size_t units = u16_length(s.s, s.len);
    *out = undef;
    if (has_length) {
        if (!(start >= 0 && start < (double)units && length >= 0 &&
              length <= (double)units - start))
            return 0;
    } else if (!(start >= 0 && start <= (double)units)) {
        return 0;
    }
    size_t from = (size_t)start;
    size_t to = has_length ? from + (size_t)length : units;
    char *r = ev_alloc(ev, s.len + 1);
    if (!r)
        return ev->rc;
    size_t o = 0, u = 0;
    const unsigned char *in = (const unsigned char *)s.s;
    for (size_t i = 0; i < s.len && u < to;) {
        uint32_t cp;
        size_t l = u8_decode(in, s.len, i, &cp);
        size_t w = cp >= 0x10000 ? 2 : 1;
        size_t keep_from = u > from ? u : from, keep_to = u + w < to ? u + w : to;
        if (keep_to > keep_from) {
            if (keep_to - keep_from == w) {
                memcpy(r + o, in + i, l);
                o += l;
            } else {
                o += u8_encode(0xfffd, r + o); /* 3 bytes, where the 4-byte pair was */
            }
        }
        u += w;
        i += l;
    }
    *out = string(r, o);
    return 0;
}

static struct rval twin_includes(struct ev *ev, const struct node *n, int *rc)
{
    json_t *root, *v;
    *rc = body_load(ev->m, &root);
    if (*rc < 0 || !root)
        return undef;
    int found = body_walk(root, n->path, n->n_path, &v);
    return found < 0 ? undef : boolean(found > 0);
}

static double sign(double x)
{
    return x > 0 ? 1 : x < 0 ? -1 : 0;
}

static int eval_call(struct ev *ev, const struct node *n, struct rval *out)
{
    struct rval a[3] = {undef, undef, undef};
    int rc;
    *out = undef;
    switch (n->fn) {
    case FN_TWIN_CHANGE_INCLUDES:
        *out = twin_includes(ev, n, &rc);
        return rc;
    case FN_IS_BOOL: /* AnyArgs executors answer false for other static types */
        if (n->args[0]->type != ST_BOOL && n->args[0]->type != ST_DYN) {
            *out = boolean(false);
            return 0;
        }
        break;
    case FN_IS_NULL:
        if (n->args[0]->type == ST_NULL || n->args[0]->type != ST_DYN) {
            *out = boolean(n->args[0]->type == ST_NULL);
            return 0;
        }
        break;
    case FN_CONCAT: {
        size_t total = 0;
        struct rval *vals = (struct rval *)ev_alloc(ev, n->n_args * sizeof(*vals));
        if (!vals)
            return ev->rc;
        for (size_t i = 0; i < n->n_args; i++) {
            if ((rc = eval(ev, n->args[i], &vals[i])) < 0)
                return rc;
            if (vals[i].t != RV_STR)
                return 0;
            total += vals[i].len;
        }
        char *s = ev_alloc(ev, total + 1);
        if (!s)
            return ev->rc;
        size_t o = 0;
        for (size_t i = 0; i < n->n_args; i++) {
            memcpy(s + o, vals[i].s, vals[i].len);
            o += vals[i].len;
        }
        *out = string(s, o);
        return 0;
    }
    default:
        break;
    }
    for (size_t i = 0; i < n->n_args && i < 3; i++)
        if ((rc = eval(ev, n->args[i], &a[i])) < 0)
            return rc;

    switch (n->fn) {
    case FN_ABS:
    case FN_EXP:
    case FN_SQUARE:
    case FN_CEILING:
    case FN_FLOOR:
    case FN_SIGN:
    case FN_SQRT: {
        if (a[0].t != RV_NUM)
            return 0;
        double x = a[0].n;
        switch (n->fn) {
        case FN_ABS:
            *out = number(fabs(x));
            break;
        case FN_EXP:
            *out = number(exp(x));
            break;
        case FN_SQUARE:
            *out = number(pow(x, 2));
            break;
        case FN_CEILING:
            *out = number(ceil(x));
            break;
        case FN_FLOOR:
            *out = number(floor(x));
            break;
        case FN_SIGN:
            *out = number(sign(x));
            break;
        default:
            *out = number(sqrt(x));
            break;
        }
        return 0;
    }
    case FN_POWER:
        if (a[0].t == RV_NUM && a[1].t == RV_NUM)
            *out = number(pow(a[0].n, a[1].n));
        return 0;
    case FN_AS_NUMBER:
        if (a[0].t == RV_NUM)
            *out = a[0];
        else if (a[0].t == RV_STR)
            return parse_number(ev, a[0].s, a[0].len, out);
        return 0;
    case FN_IS_BOOL:
        if (a[0].t != RV_UNDEF)
            *out = boolean(a[0].t == RV_BOOL);
        return 0;
    case FN_IS_DEFINED:
        *out = boolean(a[0].t != RV_UNDEF);
        return 0;
    case FN_IS_NULL: /* dynamic: IoT Edge compares references here and answers wrongly */
        if (a[0].t != RV_UNDEF)
            *out = boolean(a[0].t == RV_NULL);
        return 0;
    case FN_IS_NUMBER:
        *out = boolean(a[0].t == RV_NUM && isfinite(a[0].n));
        return 0;
    case FN_IS_STRING:
        *out = boolean(a[0].t == RV_STR);
        return 0;
    case FN_LENGTH:
        if (a[0].t == RV_STR)
            *out = number((double)u16_length(a[0].s, a[0].len));
        return 0;
    case FN_LOWER:
    case FN_UPPER:
        if (a[0].t == RV_STR)
            return change_case(ev, a[0], n->fn == FN_UPPER, out);
        return 0;
    case FN_SUBSTRING:
        if (a[0].t != RV_STR || a[1].t != RV_NUM || (n->n_args == 3 && a[2].t != RV_NUM))
            return 0;
        return substring(ev, a[0], a[1].n, a[2].n, n->n_args == 3, out);
    default:
        break;
    }
    /* index_of, starts_with, ends_with, contains: two strings, ordinal. */
    if (a[0].t != RV_STR || a[1].t != RV_STR)
        return 0;
    const char *hit;
    switch (n->fn) {
    case FN_INDEX_OF:
        hit = memmem(a[0].s, a[0].len, a[1].s, a[1].len);
        *out = number(hit ? (double)u16_length(a[0].s, (size_t)(hit - a[0].s)) : -1);
        return 0;
    case FN_STARTS_WITH:
        *out = boolean(a[1].len <= a[0].len && memcmp(a[0].s, a[1].s, a[1].len) == 0);
        return 0;
    case FN_ENDS_WITH:
        *out = boolean(a[1].len <= a[0].len &&
                       memcmp(a[0].s + a[0].len - a[1].len, a[1].s, a[1].len) == 0);
        return 0;
    default: /* FN_CONTAINS */
        *out = boolean(a[1].len == 0 || memmem(a[0].s, a[0].len, a[1].s, a[1].len) != NULL);
        return 0;
    }
}

static int eval(struct ev *ev, const struct node *n, struct rval *out)
{
    const struct route_message *m = ev->m;
    const char *v;
    int rc;
    switch (n->kind) {
    case NK_LIT:
        *out = n->lit;
        return 0;
    case NK_APP:
        *out = prop_value(prop_find(m->app, m->n_app, n->name));
        return 0;
    case NK_DOLLAR:
        v = prop_find(m->app, m->n_app, n->name);
        *out = prop_value(v ? v : prop_find(m->sys, m->n_sys, n->name + 1));
        return 0;
    case NK_SYS:
        *out = prop_value(prop_find(m->sys, m->n_sys, n->name));
        return 0;
    case NK_BODY:
        if (n->app_first && (v = prop_find(m->app, m->n_app, n->name))) {
            *out = prop_value(v);
            return 0;
        }
        return body_query(ev, n, out);
    case NK_UNARY:
        if (n->op == OP_NOT && n->args[0]->type == ST_NULL) {
            *out = boolean(true); /* Null's ! operator */
            return 0;
        }
        if ((rc = eval(ev, n->args[0], out)) < 0)
            return rc;
        if (n->op == OP_NEG)
            *out = out->t == RV_NUM ? number(-out->n) : undef;
        else
            *out = out->t == RV_BOOL ? boolean(!out->b) : undef;
        return 0;
    case NK_BINARY:
        return eval_binary(ev, n, out);
    case NK_CALL:
        return eval_call(ev, n, out);
    }
    *out = undef;
    return 0;
}

static int eval_root(const struct route *r, struct route_message *m, struct arena *arena,
                     struct rval *ret)
{
    if (!r->cond) {
        *ret = boolean(true);
        return 0;
    }
    struct ev ev = {.r = r, .m = m, .arena = {.limit = ROUTE_EVAL_MAX_BYTES}};
    int rc = eval(&ev, r->cond, ret);
    *arena = ev.arena;
    return rc;
}

int route_eval(const struct route *r, struct route_message *m, enum route_truth *ret)
{
    struct arena a = {0};
    struct rval v;
    int rc = eval_root(r, m, &a, &v);
    arena_free(&a);
    if (rc < 0)
        return rc;
    /* Convert(condition, Bool): booleans stay, a null-typed condition is false, anything else
     * (numbers, strings, undefined, non-boolean $body values) is undefined. */
    if (v.t == RV_BOOL)
        *ret = v.b ? ROUTE_TRUE : ROUTE_FALSE;
    else if (v.t == RV_NULL && r->cond->type == ST_NULL)
        *ret = ROUTE_FALSE;
    else
        *ret = ROUTE_UNDEFINED;
    return 0;
}

int route_eval_describe(const struct route *r, struct route_message *m, char *buf, size_t size)
{
    struct arena a = {0};
    struct rval v;
    int rc = eval_root(r, m, &a, &v);
    if (rc >= 0) {
        switch (v.t) {
        case RV_UNDEF:
            snprintf(buf, size, "undefined");
            break;
        case RV_NULL:
            snprintf(buf, size, "null");
            break;
        case RV_BOOL:
            snprintf(buf, size, "%s", v.b ? "true" : "false");
            break;
        case RV_NUM:
            snprintf(buf, size, "number %.17g", v.n);
            break;
        case RV_STR:
            snprintf(buf, size, "string '%.*s'", v.len > INT32_MAX ? INT32_MAX : (int)v.len, v.s);
            break;
        }
    }
    arena_free(&a);
    return rc;
}
