/* lex.c — the route lexer. It reproduces IoT Edge's ANTLR lexer (GrammarLexer.g4) exactly: at
 * each position every rule is tried, the longest match wins and ties go to the rule listed
 * first (enum tok_kind order). That is why "a-b" is one property name and "-5" one literal. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "route-internal.h"

/* Characters that end an ID (ID_CHARS excludes them), as two 64-bit sets over ASCII; every
 * other byte, >= 0x80 included, belongs to names. QUERY_PATH also allows '[' and ']'. */
#define LO(c) ((c) < 64 ? 1ULL << (c) : 0)
#define HI(c) ((c) >= 64 && (c) < 128 ? 1ULL << ((c)-64) : 0)
#define ID_STOP(F)                                                                                 \
    (F('(') | F(')') | F('<') | F('>') | F('@') | F(',') | F(';') | F(':') | F('\\') | F('"') |    \
     F('/') | F('[') | F(']') | F('?') | F('=') | F('{') | F('}') | F(' ') | F('\t') | F('\n') |   \
     F('\r') | F(0))

static bool is_id_char(unsigned char c)
{
    if (c >= 128)
        return true;
    uint64_t bit = c < 64 ? 1ULL << c : 1ULL << (c - 64);
    return !((c < 64 ? ID_STOP(LO) : ID_STOP(HI)) & bit);
}

static bool is_qp_char(unsigned char c)
{
    return c == '[' || c == ']' || is_id_char(c);
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static size_t count_digits(const unsigned char *s, size_t n, size_t i)
{
    size_t k = i;
    while (k < n && is_digit(s[k]))
        k++;
    return k - i;
}

/* EXP: [Ee] [+-]? [0-9]+ */
static size_t exp_len(const unsigned char *s, size_t n, size_t i)
{
    if (i >= n || (s[i] != 'e' && s[i] != 'E'))
        return 0;
    size_t k = i + 1;
    if (k < n && (s[k] == '+' || s[k] == '-'))
        k++;
    size_t d = count_digits(s, n, k);
    return d ? k + d - i : 0;
}

static bool word_ci(const unsigned char *s, size_t n, size_t i, const char *w)
{
    size_t l = strlen(w);
    return n - i >= l && strncasecmp((const char *)s + i, w, l) == 0;
}

static bool word(const unsigned char *s, size_t n, size_t i, const char *w)
{
    size_t l = strlen(w);
    return n - i >= l && memcmp(s + i, w, l) == 0;
}

/* ESC: '\\' (["'\\] | 'u' HEX HEX HEX HEX); 0 when no valid escape starts at i. */
static size_t esc_len(const unsigned char *s, size_t n, size_t i)
{
    if (i + 1 >= n)
        return 0;
    unsigned char c = s[i + 1];
    if (c == '"' || c == '\'' || c == '\\')
        return 2;
    if (c == 'u' && n - i >= 6 && is_hex(s[i + 2]) && is_hex(s[i + 3]) && is_hex(s[i + 4]) &&
        is_hex(s[i + 5]))
        return 6;
    return 0;
}

struct best {
    enum tok_kind kind;
    size_t len;
};

static void candidate(struct best *b, enum tok_kind kind, size_t len)
{
    if (len > b->len || (len == b->len && len > 0 && kind < b->kind)) {
        b->kind = kind;
        b->len = len;
    }
}

static struct best lex_one(const unsigned char *s, size_t n, size_t i)
{
    struct best b = {TK_UNKNOWN, 1};
    unsigned char c = s[i];
    size_t k;

    if (c == '{')
        candidate(&b, TK_LBRACE, 1);
    if (c == '}')
        candidate(&b, TK_RBRACE, 1);
    switch (c | 0x20) { /* keywords, by their first letter in either case */
    case 's':
        if (word_ci(s, n, i, "select"))
            candidate(&b, TK_SELECT, 6);
        break;
    case 'f':
        if (word_ci(s, n, i, "from"))
            candidate(&b, TK_FROM, 4);
        break;
    case 'w':
        if (word_ci(s, n, i, "where"))
            candidate(&b, TK_WHERE, 5);
        break;
    case 'i':
        if (word_ci(s, n, i, "into"))
            candidate(&b, TK_INTO, 4);
        break;
    case 'a':
        if (word_ci(s, n, i, "and"))
            candidate(&b, TK_AND, 3);
        break;
    case 'o':
        if (word_ci(s, n, i, "or"))
            candidate(&b, TK_OR, 2);
        break;
    case 'n':
        if (word_ci(s, n, i, "not"))
            candidate(&b, TK_NOT, 3);
        break;
    default:
        break;
    }

    if (c == '"' || c == '\'') {
        k = i + 1;
        for (;;) {
            if (k >= n) {
                candidate(&b, TK_UNTERMINATED, k - i);
                break;
            }
            if (s[k] == c) {
                candidate(&b, TK_STRING, k + 1 - i);
                break;
            }
            if (s[k] == '\\') {
                size_t e = esc_len(s, n, k);
                if (!e) { /* neither rule can go on: the unterminated prefix is the match */
                    candidate(&b, TK_UNTERMINATED, k - i);
                    break;
                }
                k += e;
            } else {
                k++;
            }
        }
    }

    /* INTEGER_LITERAL: '-'? [0-9]+ ; REAL_LITERAL: '-'? [0-9]* '.' [0-9]+ EXP? | '-'? [0-9]* EXP */
    k = i + (c == '-' ? 1 : 0);
    size_t d1 = count_digits(s, n, k);
    if (d1)
        candidate(&b, TK_INTEGER, k + d1 - i);
    size_t m = k + d1;
    if (m < n && s[m] == '.') {
        size_t d2 = count_digits(s, n, m + 1);
        if (d2) {
            size_t e = m + 1 + d2;
            candidate(&b, TK_REAL, e + exp_len(s, n, e) - i);
        }
    }
    size_t el = exp_len(s, n, m);
    if (el)
        candidate(&b, TK_REAL, m + el - i);

    if (c == '0' && i + 1 < n && (s[i + 1] == 'x' || s[i + 1] == 'X')) {
        k = i + 2;
        while (k < n && is_hex(s[k]))
            k++;
        if (k > i + 2)
            candidate(&b, TK_HEX, k - i);
    }

    if (word(s, n, i, "true"))
        candidate(&b, TK_TRUE, 4);
    if (word(s, n, i, "false"))
        candidate(&b, TK_FALSE, 5);
    if (word(s, n, i, "null"))
        candidate(&b, TK_NULL, 4);
    if (word(s, n, i, "undefined"))
        candidate(&b, TK_UNDEFINED, 9);

    unsigned char c2 = i + 1 < n ? s[i + 1] : 0;
    switch (c) {
    case '(':
        candidate(&b, TK_LPAREN, 1);
        break;
    case ')':
        candidate(&b, TK_RPAREN, 1);
        break;
    case ',':
        candidate(&b, TK_COMMA, 1);
        break;
    case '+':
        candidate(&b, TK_PLUS, 1);
        break;
    case '-':
        candidate(&b, TK_MINUS, 1);
        break;
    case '*':
        candidate(&b, TK_MUL, 1);
        break;
    case '/':
        candidate(&b, TK_DIV, 1);
        if (c2 == '*') {
            const char *end = NULL;
            for (size_t j = i + 2; j + 1 < n; j++)
                if (s[j] == '*' && s[j + 1] == '/') {
                    end = (const char *)s + j + 2;
                    break;
                }
            if (end)
                candidate(&b, TK_COMMENT, (size_t)(end - (const char *)s) - i);
        }
        break;
    case '%':
        candidate(&b, TK_MOD, 1);
        break;
    case '=':
        candidate(&b, TK_EQ, 1);
        break;
    case '!':
        if (c2 == '=')
            candidate(&b, TK_NE1, 2);
        break;
    case '<':
        candidate(&b, TK_LT, 1);
        if (c2 == '>')
            candidate(&b, TK_NE2, 2);
        if (c2 == '=')
            candidate(&b, TK_LE, 2);
        break;
    case '>':
        candidate(&b, TK_GT, 1);
        if (c2 == '=')
            candidate(&b, TK_GE, 2);
        break;
    case '|':
        if (c2 == '|')
            candidate(&b, TK_CONCAT, 2);
        break;
    case '?':
        if (c2 == '?')
            candidate(&b, TK_COALESCE, 2);
        break;
    default:
        break;
    }

    if (c == '$') {
        k = i + 1;
        while (k < n && is_qp_char(s[k]))
            k++;
        if (k > i + 1)
            candidate(&b, TK_SYSPROP, k - i);
    }
    k = i;
    while (k < n && is_id_char(s[k]))
        k++;
    candidate(&b, TK_ID, k - i);
    k = i;
    while (k < n && is_qp_char(s[k]))
        k++;
    candidate(&b, TK_QUERYPATH, k - i);
    k = i;
    while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r' || s[k] == '\n'))
        k++;
    candidate(&b, TK_WS, k - i);
    return b;
}

int route_lex(const char *text, size_t n, struct tok **ret, size_t *ret_n)
{
    const unsigned char *s = (const unsigned char *)text;
    if (n > UINT32_MAX - 1)
        return -E2BIG;
    /* At most one token per byte, plus EOF. */
    struct tok *toks = malloc((n + 1) * sizeof(*toks));
    if (!toks)
        return -ENOMEM;
    size_t nt = 0;
    for (size_t i = 0; i < n;) {
        struct best b = lex_one(s, n, i);
        if (b.kind != TK_WS && b.kind != TK_COMMENT)
            toks[nt++] = (struct tok){b.kind, (uint32_t)i, (uint32_t)b.len};
        i += b.len;
    }
    toks[nt++] = (struct tok){TK_EOF, (uint32_t)n, 0};
    *ret = toks;
    *ret_n = nt;
    return 0;
}
