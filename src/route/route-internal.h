/* route-internal.h — what the route lexer, parser, evaluator and table share: tokens, the typed
 * syntax tree, runtime values, the arena, and UTF-8/UTF-16 helpers. Not installed. */
#pragma once

#include <locale.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "route/route.h"

/* ---- arena: many small allocations freed together ----------------------------------------- */

struct arena_block;
struct arena {
    struct arena_block *head;
    size_t total; /* bytes handed out */
    size_t limit; /* 0 = unlimited */
};

/* NULL on ENOMEM or when the limit would be exceeded (check arena_over_limit()). */
void *arena_alloc(struct arena *a, size_t n);
char *arena_strndup(struct arena *a, const char *s, size_t n);
bool arena_over_limit(const struct arena *a, size_t n);
void arena_free(struct arena *a);

/* ---- tokens ------------------------------------------------------------------------------- */

/* Token kinds in the priority order of IoT Edge's ANTLR lexer (GrammarLexer.g4): the lexer
 * takes the longest match and breaks ties by this order. */
enum tok_kind {
    TK_LBRACE,
    TK_RBRACE,
    TK_SELECT,
    TK_FROM,
    TK_WHERE,
    TK_INTO,
    TK_STRING,
    TK_UNTERMINATED,
    TK_INTEGER,
    TK_HEX,
    TK_REAL,
    TK_TRUE,
    TK_FALSE,
    TK_NULL,
    TK_UNDEFINED,
    TK_LPAREN,
    TK_RPAREN,
    TK_COMMA,
    TK_PLUS,
    TK_MINUS,
    TK_MUL,
    TK_DIV,
    TK_MOD,
    TK_AND,
    TK_OR,
    TK_NOT,
    TK_EQ,
    TK_NE1,
    TK_NE2,
    TK_LE,
    TK_GE,
    TK_GT,
    TK_LT,
    TK_CONCAT,
    TK_COALESCE,
    TK_SYSPROP,
    TK_ID,
    TK_QUERYPATH,
    TK_WS,
    TK_COMMENT,
    TK_UNKNOWN,
    TK_EOF, /* not a lexer rule: end of input */
};

struct tok {
    enum tok_kind kind;
    uint32_t off;
    uint32_t len;
};

/* Tokenise s[0..n) into *ret (whitespace and comments dropped, TK_EOF appended). */
int route_lex(const char *s, size_t n, struct tok **ret, size_t *ret_n);

/* ---- types and values --------------------------------------------------------------------- */

/* Static types, as IoT Edge's compiler assigns them (C# types string, double, Bool, Null,
 * Undefined and QueryValue). Checks on them decide which routes compile. */
enum stype {
    ST_UNDEF,
    ST_NULL,
    ST_BOOL,
    ST_NUM,
    ST_STR,
    ST_DYN, /* a $body value: any of the runtime types */
};

enum rtype {
    RV_UNDEF,
    RV_NULL,
    RV_BOOL,
    RV_NUM, /* never NaN: NaN is undefined */
    RV_STR,
};

struct rval {
    enum rtype t;
    bool b;
    double n;
    const char *s; /* not NUL-terminated */
    size_t len;
};

/* ---- syntax tree -------------------------------------------------------------------------- */

enum node_kind {
    NK_LIT,
    NK_APP,    /* name: application property */
    NK_DOLLAR, /* $name: application property "$name", else system property "name" */
    NK_SYS,    /* {$name}: system property only */
    NK_BODY,   /* $body.path: application property "$body.path" first when app_first */
    NK_UNARY,
    NK_BINARY,
    NK_CALL,
};

enum node_op {
    OP_NEG,
    OP_NOT,
    OP_MUL,
    OP_DIV,
    OP_MOD,
    OP_ADD,
    OP_SUB,
    OP_CONCAT,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_EQ,
    OP_NE,
    OP_AND,
    OP_OR,
    OP_COALESCE,
};

enum fn_id {
    FN_ABS,
    FN_EXP,
    FN_POWER,
    FN_SQUARE,
    FN_CEILING,
    FN_FLOOR,
    FN_SIGN,
    FN_SQRT,
    FN_AS_NUMBER,
    FN_IS_BOOL,
    FN_IS_DEFINED,
    FN_IS_NULL,
    FN_IS_NUMBER,
    FN_IS_STRING,
    FN_CONCAT,
    FN_LENGTH,
    FN_LOWER,
    FN_UPPER,
    FN_SUBSTRING,
    FN_INDEX_OF,
    FN_STARTS_WITH,
    FN_ENDS_WITH,
    FN_CONTAINS,
    FN_TWIN_CHANGE_INCLUDES,
};

/* One step of a JSON path: a member name, optionally followed by [index]. */
struct path_seg {
    const char *key; /* NUL-terminated */
    bool has_index;
    bool index_too_big; /* beyond INT32_MAX: IoT Edge fails the query, so: undefined */
    uint32_t index;
};

struct node {
    enum node_kind kind;
    enum stype type;
    unsigned depth;
    uint32_t off; /* byte offset of the operator / name in the route text */
    union {
        enum node_op op;
        enum fn_id fn;
    };
    bool app_first;        /* NK_BODY: an application property of the full name wins */
    struct rval lit;       /* NK_LIT */
    const char *name;      /* NK_APP/NK_DOLLAR (full "$x")/NK_SYS ("x")/NK_BODY (full text) */
    struct path_seg *path; /* NK_BODY, twin_change_includes */
    size_t n_path;
    struct node **args; /* operands or call arguments */
    size_t n_args;
};

struct route {
    char *text;
    char *source;       /* as written */
    char *match_prefix; /* normalised source + "/", compared case-insensitively */
    struct route_sink sink;
    struct node *cond;  /* NULL: always true */
    locale_t loc;       /* "C" for numbers, or C.UTF-8 when case mapping is needed; may be 0 */
    bool loc_unicode;   /* loc is C.UTF-8 */
    struct arena arena; /* the tree */
};

const char *route_stype_name(enum stype t);

/* ---- text helpers ------------------------------------------------------------------------- */

/* Decode one UTF-8 sequence at s[i] (i < n); invalid bytes decode as U+FFFD one at a time. */
size_t u8_decode(const unsigned char *s, size_t n, size_t i, uint32_t *ret_cp);
/* Encode cp into out (>= 4 bytes); returns the length. */
size_t u8_encode(uint32_t cp, char *out);
/* Length in UTF-16 code units, as .NET strings count. */
size_t u16_length(const char *s, size_t n);
/* 1-based column (in characters) of byte offset off. */
uint32_t u8_column(const char *s, size_t off);
