/* test-route.c — unit tests for the route language: lexer quirks, every operator and function
 * with their undefined rules, static type errors, $body queries and the content type rule,
 * source matching, sinks, parse errors with columns, and the $edgeHub route table. Many vectors
 * come from IoT Edge's own tests (Routing.Core.Test/query), so behaviour is checked against it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/json.h"
#include "route/route.h"

#define T ROUTE_TRUE
#define F ROUTE_FALSE
#define U ROUTE_UNDEFINED

/* ---- helpers ------------------------------------------------------------------------------- */

static int parse_cond_from(const char *source, const char *cond, struct route **r, struct lerr *e)
{
    static char text[ROUTE_MAX_TEXT * 2];
    snprintf(text, sizeof(text), "FROM %s WHERE %s INTO $upstream", source, cond);
    return route_parse(text, r, e);
}

static int parse_cond(const char *cond, struct route **r, struct lerr *e)
{
    return parse_cond_from("/messages/*", cond, r, e);
}

struct truth_case {
    const char *cond;
    enum route_truth want;
};

struct value_case {
    const char *cond;
    const char *want; /* route_eval_describe() text */
};

struct error_case {
    const char *route;
    const char *want; /* the whole lerr message */
};

static const char *truth_name(enum route_truth t)
{
    return t == T ? "true" : t == F ? "false" : "undefined";
}

static int check_truths(const char *source, const struct truth_case *c, size_t n,
                        struct route_message *m)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        struct route *r = NULL;
        struct lerr e = {0};
        if (parse_cond_from(source, c[i].cond, &r, &e) < 0) {
            print_error("  [%s] does not parse: %s\n", c[i].cond, e.msg);
            failures++;
            continue;
        }
        enum route_truth t;
        if (route_eval(r, m, &t) < 0 || t != c[i].want) {
            print_error("  [%s] is %s, expected %s\n", c[i].cond, truth_name(t),
                        truth_name(c[i].want));
            failures++;
        }
        route_free(r);
    }
    return failures;
}

static int check_values(const struct value_case *c, size_t n, struct route_message *m)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        struct route *r = NULL;
        struct lerr e = {0};
        if (parse_cond(c[i].cond, &r, &e) < 0) {
            print_error("  [%s] does not parse: %s\n", c[i].cond, e.msg);
            failures++;
            continue;
        }
        char buf[256];
        if (route_eval_describe(r, m, buf, sizeof(buf)) < 0 || strcmp(buf, c[i].want) != 0) {
            print_error("  [%s] is [%s], expected [%s]\n", c[i].cond, buf, c[i].want);
            failures++;
        }
        route_free(r);
    }
    return failures;
}

static int check_compile_failures(const char *const *conds, size_t n)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        struct route *r = NULL;
        struct lerr e = {0};
        if (parse_cond(conds[i], &r, &e) == 0) {
            print_error("  [%s] parses, but IoT Edge rejects it\n", conds[i]);
            route_free(r);
            failures++;
        } else if (e.code != -EINVAL || strncmp(e.msg, "column ", 7) != 0) {
            print_error("  [%s] fails oddly: %d %s\n", conds[i], e.code, e.msg);
            failures++;
        }
    }
    return failures;
}

static int check_errors(const struct error_case *c, size_t n)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        struct route *r = NULL;
        struct lerr e = {0};
        if (route_parse(c[i].route, &r, &e) == 0) {
            print_error("  [%s] parses\n", c[i].route);
            route_free(r);
            failures++;
        } else if (strcmp(e.msg, c[i].want) != 0) {
            print_error("  [%s]\n    got:  %s\n    want: %s\n", c[i].route, e.msg, c[i].want);
            failures++;
        }
    }
    return failures;
}

/* ---- IoT Edge's ConditionCompilerTest message --------------------------------------------- */

static const struct route_prop cc_app[] = {
    {"key1", "value1"}, {"key2", "3"}, {"key3", "VALUE3"}, {"$sys4", "value4"}};
static const struct route_prop cc_sys[] = {
    {"sys1", "sysvalue1"}, {"sys2", "4"}, {"sys3", "SYSVALUE3"}, {"sys4", "sysvalue4"}};

static struct route_message cc_message(void)
{
    return (struct route_message){.source = "/messages",
                                  .app = cc_app,
                                  .n_app = ARRAY_SIZE(cc_app),
                                  .sys = cc_sys,
                                  .n_sys = ARRAY_SIZE(cc_sys)};
}

/* ConditionCompilerTest.TestSuccessDataSource, minus the cases about null-valued properties
 * (our properties are always strings). */
static const struct truth_case iotedge_truths[] = {
    {"3", U},
    {"\"a string\"", U},
    {"'a string'", U},
    {"3 = 3", T},
    {"3 = 4", F},
    {"\"3\" = \"3\"", T},
    {"\"3\" = \"4\"", F},
    {"'3' = '3'", T},
    {"'3' = '4'", F},
    {"true = true", T},
    {"true = false", F},
    {"false = false", T},
    {"false = true", F},
    {"key2 = \"3\"", T},
    {"key2 = '3'", T},
    {"as_number(key2) = 3", T},
    {"as_number(key2) = 4", F},
    {"is_defined(none = \"4\")", F},
    {"as_number(none) = 3", U},
    {"$sys2 = \"4\"", T},
    {"$sys2 = '4'", T},
    {"as_number($sys2) = 4", T},
    {"as_number($sys2) = 3", F},
    {"is_defined($none)", F},
    {"as_number($none) = 3", U},
    {"3 != 3", F},
    {"3 != 4", T},
    {"'3' != '4'", T},
    {"true != false", T},
    {"key2 != '3'", F},
    {"none != \"4\"", U},
    {"as_number(none) != 3", U},
    {"3 <> 3", F},
    {"3 <> 4", T},
    {"true <> false", T},
    {"key2 <> '3'", F},
    {"none <> \"4\"", U},
    {"true", T},
    {"false", F},
    {"not true", F},
    {"not false", T},
    {"not (true and false)", T},
    {"true AND true", T},
    {"true AND not true", F},
    {"true and false", F},
    {"false and true", F},
    {"false and false", F},
    {"true OR true", T},
    {"true or false", T},
    {"false or true", T},
    {"false or false", F},
    {"undefined", U},
    {"undefined or false", U},
    {"undefined or true", T},
    {"true or undefined", T},
    {"false or undefined", U},
    {"undefined or undefined", U},
    {"true and undefined", U},
    {"false and undefined", F},
    {"undefined and false", F},
    {"undefined and undefined", U},
    {"undefined < undefined", U},
    {"true or none = 'true'", T},
    {"false or none = 'true'", U},
    {"none = 'true' or true", T},
    {"none = 'true' or false", U},
    {"none = 'true' or none2 = 'true'", U},
    {"true and none = 'true'", U},
    {"false and none = 'true'", F},
    {"none = 'true' and true", U},
    {"none = 'true' and false", F},
    {"none = 'true' and none2 = 'true'", U},
    {"not (none = 'true')", U},
    {"undefined ?? undefined", U},
    {"(key1 ?? \"hello\") = \"value1\"", T},
    {"(none ?? \"hello\") = \"hello\"", T},
    {"(none ?? none ?? \"hello\") = \"hello\"", T},
    {"(as_number(key2) ?? 12.34) = 3", T},
    {"(as_number(key1) ?? 12.34) = 12.34", T},
    {"(3 % 0 ?? 12.34) = 12.34", T},
    {"(none ?? none) = \"value\"", U},
    {"null and null", F},
    {"(null and null) = null", T},
    {"(null and false) = null", T},
    {"(null and true) = null", T},
    {"null or true", T},
    {"null or false", F},
    {"(null or null) = null", T},
    {"null", F},
    {"not null", T},
    {"3 + 4 = 7", T},
    {"(3 + as_number(key2)) = 6", T},
    {"is_defined(3 + as_number(none))", F},
    {"is_defined(3 + as_number(key1))", F},
    {"3 - 4 = -1", T},
    {"(3 - as_number(key2)) = 0", T},
    {"3 * 4 = 12", T},
    {"(3 * as_number(key2)) = 9", T},
    {"3 / 4 = 0.75", T},
    {"(3 / as_number(key2)) = 1", T},
    {"is_defined(3 / as_number(none))", F},
    {"4 % 3 = 1", T},
    {"(3 % as_number(key2)) = 0", T},
    {"is_defined(3 % 0)", F},
    {"-1 < 0", T},
    {"-(3 + 4) = -7", T},
    {"is_defined(-undefined)", F},
    {"4 < 7", T},
    {"7 < 7", F},
    {"8 < 7", F},
    {"3 + 4 < 7", F},
    {"3 < as_number(none)", U},
    {"'a' < 'b'", T},
    {"'a' < 'a'", F},
    {"'b' < 'a'", F},
    {"'a' < none", U},
    {"4 <= 7", T},
    {"7 <= 7", T},
    {"8 <= 7", F},
    {"3 + 4 <= 7", T},
    {"'a' <= 'a'", T},
    {"'b' <= 'a'", F},
    {"'a' <= none", U},
    {"4 > 7", F},
    {"8 > 7", T},
    {"'b' > 'a'", T},
    {"'a' > none", U},
    {"7 >= 7", T},
    {"8 >= 7", T},
    {"'a' >= 'b'", F},
    {"'b' >= 'a'", T},
    {"key1 = \"value1\"", T},
    {"KEY1 = \"value1\"", T},
    {"key1 = \"value1\" and key1 = \"value1\"", T},
    {"key1 = \"value2\" or key1 = \"value1\"", T},
    {"key1 = \"value2\"", F},
    {"none = \"value1\"", U},
    {"$sys4 = \"value4\"", T},
    {"{$sys4} = \"sysvalue4\"", T},
    {"$sys1 = \"sysvalue1\"", T},
    {"{$sys1} = \"sysvalue1\"", T},
    {"{ $sys1 } = \"sysvalue1\"", T},
    {"as_number(\"3\") = 3", T},
    {"AS_NUMBER(\"3\") = 3", T},
    {"AS_NUMBER('10e10') = 10e10", T},
    {"AS_NUMBER('10e1000') = 10e1000", T},
    {"AS_NUMBER('10e1000') = 1/0", T},
    {"AS_NUMBER('10000000000000000000000000') = 1e25", T},
    {"as_number(key1) = 3", U},
    {"as_number(key2) * 3 = 9", T},
    {"as_number(none) * 3 = 9", U},
    {"as_number(as_number(4)) * 3 = 12", T},
    {"is_bool(12.34)", F},
    {"is_bool('not a number')", F},
    {"is_bool(true)", T},
    {"IS_BOOL(true)", T},
    {"is_bool(false)", T},
    {"is_bool(none)", F},
    {"is_bool(key1)", F},
    {"is_defined(undefined)", F},
    {"IS_DEFINED(undefined)", F},
    {"is_defined(key1)", T},
    {"is_defined(key4)", F},
    {"is_defined(3 * as_number(key4))", F},
    {"is_defined(undefined and true)", F},
    {"is_defined(as_number(\"3\"))", T},
    {"is_defined(as_number(\"apple\"))", F},
    {"is_defined(null)", T},
    {"is_defined(10e1000)", T},
    {"is_null(12.34)", F},
    {"is_null('not a number')", F},
    {"is_null(true)", F},
    {"is_null(3 / 0)", F},
    {"is_null(as_number(key2))", F},
    {"is_null(null)", T},
    {"IS_NULL(null)", T},
    {"is_null(none)", F},
    {"is_number(12.34)", T},
    {"is_number('not a number')", F},
    {"is_number(true)", F},
    {"is_number(3 / 0)", F},
    {"is_number(as_number(key2))", T},
    {"is_number(as_number(key1))", F},
    {"is_string(12.34)", F},
    {"is_string('not a number')", T},
    {"is_string(true)", F},
    {"is_string(none)", F},
    {"is_string(key1)", T},
    {"is_string('a' || 'b')", T},
    {"concat('a', 'b', 'c', 'd') = 'abcd'", T},
    {"CONCAT('a', 'b', 'c', 'd') = 'abcd'", T},
    {"concat('a', 'b') = concat('a', 'b')", T},
    {"concat('a', key1, 'd') = 'avalue1d'", T},
    {"is_defined(concat('a', none, 'd'))", F},
    {"'a' || 'b' || 'c' || 'd' = 'abcd'", T},
    {"'a' || key1 || 'd' = 'avalue1d'", T},
    {"is_defined('a' || none || 'd')", F},
    {"length('HELLO') = 5", T},
    {"LENGTH('') = 0", T},
    {"length(key3) = 6", T},
    {"is_defined(length(none))", F},
    {"lower('HELLO') = 'hello'", T},
    {"lower(key3) = 'value3'", T},
    {"is_defined(lower(none))", F},
    {"upper('hello') = 'HELLO'", T},
    {"upper(key1) = 'VALUE1'", T},
    {"is_defined(upper(none))", F},
    {"substring('abc', 1) = 'bc'", T},
    {"substring('abc', 2) = 'c'", T},
    {"SUBSTRING('abc', 3) = 'c'", F},
    {"SUBSTRING('abc', 4) = 'c'", U},
    {"substring(key1, 1) = 'alue1'", T},
    {"substring('abc', -1) = ''", U},
    {"substring('abc', 1 % 0) = ''", U},
    {"substring(none, 1) = 'a'", U},
    {"substring('abc', 1, 1) = 'b'", T},
    {"substring('abc', 1, 0) = ''", T},
    {"SUBSTRING(key1, 1, 1) = 'a'", T},
    {"substring('abc', -1, 0) = ''", U},
    {"substring('abc', 1, -2) = ''", U},
    {"substring('abc', 1 % 0, 1) = ''", U},
    {"substring('abc', 1, 1 % 0) = ''", U},
    {"substring('hello', 0, 5) = 'hello'", T},
    {"substring('start', 0, 4) = 'star'", T},
    {"substring('hello', 1, 4) = 'ello'", T},
    {"substring('hello', 4, 1) = 'o'", T},
    {"substring('hello', 4, 0) = ''", T},
    {"index_of('abcdef', 'cd') = 2", T},
    {"index_of('abc', 'xz') = -1", T},
    {"INDEX_OF(key1, 'val') = 0", T},
    {"index_of('lue1value1', key1) = 4", T},
    {"index_of(none, '1') = 0", U},
    {"starts_with('abc', 'ab')", T},
    {"starts_with('abc', 'xz')", F},
    {"STARTS_WITH(key1, 'val')", T},
    {"starts_with('value1value1', key1)", T},
    {"starts_with(none, '1')", U},
    {"ends_with('abc', 'bc')", T},
    {"ends_with('abc', 'xz')", F},
    {"ENDS_WITH(key1, 'e1')", T},
    {"ends_with(none, '1')", U},
    {"contains('abc', 'ab')", T},
    {"contains('abc', 'xz')", F},
    {"CONTAINS(key1, 'val')", T},
    {"contains('abc', key1)", F},
    {"contains(none, '1')", U},
    {"abs(-12) = 12", T},
    {"ABS(as_number(key2)) = 3", T},
    {"is_defined(abs(as_number(key1)))", F},
    {"is_defined(abs(3 / 0))", T},
    {"is_defined(abs(3 % 0))", F},
    {"exp(0) = 1", T},
    {"abs(exp(1) - 2.718281) < 1e-6", T},
    {"abs(EXP(as_number(key2)) - 20.085536) < 1e-6", T},
    {"exp(4000) = 3/0", T},
    {"power(2, 3) = 8", T},
    {"POWER(10, 4000) = 3/0", T},
    {"power(as_number(key2), as_number(key2)) = 27", T},
    {"is_defined(power(3 % 0, 2))", F},
    {"is_defined(power(2, 3 / 0))", T},
    {"square(2) = 4", T},
    {"square(as_number(key2)) = 9", T},
    {"is_defined(square(3 % 0))", F},
    {"ceiling(2.1) = 3", T},
    {"ceiling(-2.1) = -2", T},
    {"is_defined(ceiling(3 / 0))", T},
    {"floor(2.1) = 2", T},
    {"floor(-2.1) = -3", T},
    {"FLOOR(-2) = -2", T},
    {"sign(0) = 0", T},
    {"sign(2.1) = 1", T},
    {"sign(-2.1) = -1", T},
    {"sign(3 / 0) = 1", T},
    {"sign(-3 / 0) = -1", T},
    {"is_defined(sign(3 % 0))", F},
    {"sqrt(4) = 2", T},
    {"SQRT(-4) = -2", U},
    {"abs(sqrt(as_number(key2)) - 1.732050) < 1e-6", T},
    {"is_defined(sqrt(3 / 0))", T},
};

static void test_iotedge_conditions(void **state)
{
    struct route_message m = cc_message();
    assert_int_equal(check_truths("/messages/*", iotedge_truths, ARRAY_SIZE(iotedge_truths), &m),
                     0);
}

/* ConditionCompilerTest.TestCompilationFailureDataSource (static type errors, arity, syntax). */
static const char *const iotedge_failures[] = {
    "is_defined(3 + none)",
    "is_defined(true + 3)",
    "is_defined(3 + true)",
    "is_defined(3 + undefined)",
    "is_defined('a' + 'b')",
    "is_defined(undefined + 3)",
    "is_defined(undefined + undefined)",
    "is_defined(3 - none)",
    "is_defined('a' - 'b')",
    "is_defined(3 * true)",
    "is_defined(3 / undefined)",
    "is_defined(3 % none)",
    "is_defined(3 = none)",
    "is_defined(3 != none)",
    "is_defined(3 <> none)",
    "is_defined(3 > none)",
    "is_defined(3 >= none)",
    "is_defined(3 < none)",
    "is_defined(3 <= none.key1.key2)",
    "key1 ?? \"hello\" = \"value1\"",
    "(key1 ?? 12.34)",
    "(12.34 ?? key1)",
    "(as_number(key2) ?? key1)",
    "(key1 ?? null)",
    "(null && key1)",
    "(key1 ?? true)",
    "(true && key1)",
    "concat() = 'avalue1d'",
    "concat('a') = 'avalue1d'",
    "concat(3) = 'avalue1d'",
    "concat('a', null) = 'avalue1d'",
    "concat('a', undefined) = 'avalue1d'",
    "concat('a', true) = 'avalue1d'",
    "'a' || null = 'avalue1d'",
    "'a' || undefined = 'avalue1d'",
    "'a' || true = 'avalue1d'",
    "length(12.34) = 'hello'",
    "length(null) = 'hello'",
    "length(undefined) = 'value1'",
    "length(true) = 'value1'",
    "lower(12.34) = 'hello'",
    "upper(false) = 'value1'",
    "substring() = 'hello'",
    "substring('hello') = 'hello'",
    "substring('hello', 'a') = 'hello'",
    "substring('hello', 'a', 'b') = 'hello'",
    "substring(12.34) = 'hello'",
    "index_of()",
    "index_of('hello')",
    "index_of('hello', 'a', 'b')",
    "index_of('hello', 12.34)",
    "index_of(null, 'hello')",
    "index_of('hello', undefined)",
    "index_of(true, true)",
    "starts_with()",
    "starts_with('hello', 12.34)",
    "starts_with(null, null)",
    "ends_with('hello', 'a', 'b')",
    "ends_with(undefined, 'hello')",
    "contains('hello')",
    "contains(12.34, 'hello')",
    "contains('hello', true)",
    "is_defined(abs(null))",
    "is_defined(abs(undefined))",
    "is_defined(abs(true))",
    "is_defined(abs(key1))",
    "is_defined(abs(3, 4))",
    "is_defined(exp(key1))",
    "is_defined(power(null, 2))",
    "is_defined(power(2, undefined))",
    "is_defined(power(key1, 2))",
    "is_defined(power(2, 3, 4))",
    "is_defined(square(true))",
    "is_defined(ceiling(key1))",
    "is_defined(floor(3, 3))",
    "is_defined(sign(undefined))",
    "is_defined(sqrt(key1))",
    "test == true",
    "true == test",
    "none = \"",
    "none and true",
    "undefined and \"hello\"",
    "none or true",
    "- (key1)",
    "is_defined(not key1)",
};

static void test_iotedge_compile_failures(void **state)
{
    assert_int_equal(check_compile_failures(iotedge_failures, ARRAY_SIZE(iotedge_failures)), 0);
}

/* ---- lexer ----------------------------------------------------------------------------------- */

static const struct route_prop lex_app[] = {
    {"a-1", "minus"},  {"it's", "quote"}, {"-undefined", "odd"}, {"TRUE", "upper"},
    {"x.y", "dotted"}, {"e5x", "e5x"},    {"a!", "bang"},        {"3-5", "digits"},
};

static void test_lexer_quirks(void **state)
{
    /* IoT Edge's ANTLR lexer takes the longest match: most punctuation belongs to names,
     * "-5" is one literal and true/false/null/undefined are lower case only. */
    static const struct value_case ok[] = {
        {"a-1", "string 'minus'"},
        {"it's", "string 'quote'"},
        {"-undefined", "string 'odd'"},
        {"TRUE", "string 'upper'"},
        {"True", "string 'upper'"}, /* ...and property names are case-insensitive */
        {"x.y", "string 'dotted'"},
        {"e5x", "string 'e5x'"},
        {"3-5", "string 'digits'"},
        {"a!=b", "undefined"},
        {"a! = 'bang'", "true"},
        {"e5", "undefined"},
        {"-e5", "undefined"},
        {"1e3", "number 1000"},
        {"-2.5E-1", "number -0.25"},
        {".5", "number 0.5"},
        {"-7", "number -7"},
        {"3 - -7", "number 10"},
        {"0x1F", "number 31"},
        {"0X0000000000000000000001", "number 1"},
        {"0xFFFFFFFFFFFFFFFF", "number -1"},
        {"0x10000000000000000", "undefined"},
        {"10e1000", "number inf"},
        {"'it''s'", "undefined"},
        {"\"a\\\"b\\'c\\\\d\"", "string 'a\"b'c\\d'"},
        {"'\\u00e9\\u20AC'", "string '\xc3\xa9\xe2\x82\xac'"},
        {"'\\ud83d\\ude00'", "string '\xf0\x9f\x98\x80'"},
        {"'\\ud83d'", "string '\xef\xbf\xbd'"},
        {"'\\\\u0041'", "string '\\u0041'"}, /* decoded left to right */
        {"'line\nbreak'", "string 'line\nbreak'"},
    };
    struct route_message m = {.source = "/messages", .app = lex_app, .n_app = ARRAY_SIZE(lex_app)};
    assert_int_equal(check_values(ok, ARRAY_SIZE(ok), &m), 0);

    /* Comments are skipped anywhere... */
    static const struct truth_case comments[] = {
        {"/* comment */ 1 /* another */ + 2 = 3", T},
        {"1/*x*/=/**/1", T},
    };
    assert_int_equal(check_truths("/messages", comments, ARRAY_SIZE(comments), &m), 0);
    /* ...but when the source ends in slash-star, a later comment's end would make the whole
     * condition a comment (IoT Edge then routes everything): refused. */
    struct route *r = NULL;
    struct lerr e = {0};
    assert_int_equal(
        route_parse("FROM /messages/* WHERE a = 'x' /* note */ INTO $upstream", &r, &e), -EINVAL);
    assert_string_equal(e.msg, "column 15: \"/*\" after the source path starts a comment that "
                               "ends at column 41 and hides the route in between");
    assert_int_equal(route_parse("FROM /messages/* WHERE a = 'x' INTO $upstream /* ok? */", &r, &e),
                     -EINVAL);
    assert_int_equal(route_parse("FROM /messages/ * WHERE a = 'x' /* ok */ INTO $upstream", &r, &e),
                     0);
    route_free(r);
    assert_int_equal(route_parse("FROM /*c*/ /messages/m /*c*/ INTO $upstream", &r, &e), 0);
    assert_string_equal(route_source(r), "/messages/m");
    route_free(r);
    assert_int_equal(route_parse("FROM /* WHERE a = 'x' /* note */ INTO $upstream", &r, &e),
                     -EINVAL);
    assert_string_equal(e.msg, "column 6: \"/*\" after the source path starts a comment that "
                               "ends at column 32 and hides the route in between");

    /* "-5" is one token, so "3 -5" is two expressions in a row; whitespace is not needed
     * around operators that cannot be part of a name. */
    static const char *const bad[] = {"3 -5",      "x[0] = 1", "a && b", "a == b",
                                      "NOT fAlSe", "from = 1", "'abc",   "'a\\nb'"};
    assert_int_equal(check_compile_failures(bad, ARRAY_SIZE(bad)), 0);
    static const struct value_case tight[] = {
        {"1<2", "true"},           {"(1)+(2)", "number 3"},
        {"'a'||'b'", "undefined"}, /* one name: quotes and | are name characters */
        {"1??2", "number 1"},      {"{$sys1}='x'", "undefined"},
    };
    assert_int_equal(check_values(tight, ARRAY_SIZE(tight), &m), 0);
}

/* ---- operators: undefined propagation tables ---------------------------------------------- */

static const struct route_prop op_app[] = {{"s", "str"}, {"n", "5"}, {"t", "true"}};
static const struct route_prop json_sys[] = {{"contentType", "application/json"},
                                             {"contentEncoding", "utf-8"}};
static const char op_body[] =
    "{\"num\":5,\"zero\":0,\"str\":\"abc\",\"yes\":true,\"no\":false,\"nul\":null,"
    "\"obj\":{\"a\":1},\"arr\":[1,2,{\"k\":\"v\"}],\"big\":1e308}";

static struct route_message op_message(void)
{
    return (struct route_message){.source = "/messages",
                                  .app = op_app,
                                  .n_app = ARRAY_SIZE(op_app),
                                  .sys = json_sys,
                                  .n_sys = ARRAY_SIZE(json_sys),
                                  .body = op_body,
                                  .body_len = sizeof(op_body) - 1};
}

/* Operand spellings: N a number, NU an undefined number, S a string, SU an undefined string,
 * B/BU booleans, D* dynamic ($body) values of each runtime type. */
#define NU "as_number(s)"
#define SU "missing"
#define BU "(missing = 'x')"

static void test_arithmetic(void **state)
{
    static const struct value_case cases[] = {
        {"7 + 2", "number 9"},
        {"7 - 2", "number 5"},
        {"7 * 2", "number 14"},
        {"7 / 2", "number 3.5"},
        {"7 % 2", "number 1"},
        {"-7 % 2", "number -1"},
        {"7.5 % 2", "number 1.5"},
        {"1 / 0", "number inf"},
        {"-1 / 0", "number -inf"},
        {"0 / 0", "undefined"},
        {"1 % 0", "undefined"},
        {"1 + 2 * 3", "number 7"},
        {"(1 + 2) * 3", "number 9"},
        {"10 - 4 - 3", "number 3"},
        {"64 / 4 / 2", "number 8"},
        {"- 3 * 2", "number -6"},
        {"-(3) * 2", "number -6"},
        {"- - 3", "number 3"},
        /* undefined numbers */
        {"2 + " NU, "undefined"},
        {NU " * 2", "undefined"},
        {"- " NU, "undefined"},
        {NU " % " NU, "undefined"},
        /* dynamic operands: numbers compute, anything else is undefined */
        {"$body.num + 1", "number 6"},
        {"1 - $body.num", "number -4"},
        {"$body.num * $body.num", "number 25"},
        {"$body.num / $body.zero", "number inf"},
        {"$body.zero / $body.zero", "undefined"},
        {"$body.num % 3", "number 2"},
        {"$body.str + 1", "undefined"},
        {"$body.yes * 2", "undefined"},
        {"$body.nul + 1", "undefined"},
        {"$body.missing + 1", "undefined"},
        {"$body.obj + 1", "undefined"},
        {"- $body.num", "number -5"},
        {"- $body.str", "undefined"},
        {"$body.big * 10", "number inf"},
    };
    struct route_message m = op_message();
    assert_int_equal(check_values(cases, ARRAY_SIZE(cases), &m), 0);
    route_message_release(&m);
    static const char *const bad[] = {"1 + s",        "s + 1",    "'a' + 'b'",     "true + 1",
                                      "null + 1",     "1 + null", "undefined + 1", "1 * undefined",
                                      "- s",          "- true",   "- null",        "- undefined",
                                      "$body.num + s"};
    assert_int_equal(check_compile_failures(bad, ARRAY_SIZE(bad)), 0);
}

static void test_concat_operator(void **state)
{
    static const struct value_case ok[] = {
        {"'a' || 'b'", "string 'ab'"},
        {"s || '!'", "string 'str!'"},
        {"'' || ''", "string ''"},
        {SU " || 'x'", "undefined"},
        {"'x' || " SU, "undefined"},
        {"$body.str || s", "string 'abcstr'"},
        {"$body.num || 'x'", "undefined"},
        {"$body.nul || 'x'", "undefined"},
        {"$body.missing || 'x'", "undefined"},
        {"'a' || 'b' || 'c'", "string 'abc'"},
    };
    struct route_message m = op_message();
    assert_int_equal(check_values(ok, ARRAY_SIZE(ok), &m), 0);
    route_message_release(&m);
    /* || binds like +, so '1' || 2 + 3 is ('1' || 2) + 3: a type error. */
    static const char *const bad[] = {"'1' || 2 + 3", "'a' || 1",    "1 || 'a'",
                                      "'a' || null",  "'a' || true", "'a' || undefined"};
    assert_int_equal(check_compile_failures(bad, ARRAY_SIZE(bad)), 0);
}

static void test_comparisons(void **state)
{
    static const struct value_case cases[] = {
        /* same static types */
        {"1 < 2", "true"},
        {"2 <= 2", "true"},
        {"3 > 2", "true"},
        {"2 >= 3", "false"},
        {"2 = 2.0", "true"},
        {"2 != 2", "false"},
        {"2 <> 3", "true"},
        {"'a' < 'b'", "true"},
        {"'B' < 'a'", "true"},
        {"'abc' > 'ab'", "true"},
        {"'\xef\xbd\x81' < '\xf0\x9f\x98\x80'", "false"}, /* UTF-16 ordinal: U+FF41 > D83D */
        {"false < true", "true"},
        {"true = true", "true"},
        {"false >= true", "false"},
        {"null = null", "true"},
        {"null != null", "false"},
        {"null <= null", "true"},
        {"null < null", "false"},
        {"null > null", "false"},
        {"null >= null", "true"},
        {"undefined = undefined", "undefined"},
        {"undefined != undefined", "undefined"},
        {"1/0 = 1/0", "true"},
        {"-1/0 < 1", "true"},
        /* undefined values of each type */
        {NU " = 1", "undefined"},
        {NU " != 1", "undefined"},
        {"1 < " NU, "undefined"},
        {SU " = 'x'", "undefined"},
        {SU " != 'x'", "undefined"},
        {"'x' >= " SU, "undefined"},
        {BU " = true", "undefined"},
        {BU " != false", "undefined"},
        {SU " = " SU, "undefined"},
        /* dynamic values against anything */
        {"$body.num = 5", "true"},
        {"$body.num > 4.5", "true"},
        {"5 <= $body.num", "true"},
        {"$body.str = 'abc'", "true"},
        {"$body.str < 'b'", "true"},
        {"$body.yes = true", "true"},
        {"$body.nul = null", "true"},
        {"$body.missing = null", "true"},
        {"$body.arr[5] = null", "true"},
        {"$body.num.deeper = null", "true"},
        {"$body.nul != null", "false"},
        {"$body.num = $body.num", "true"},
        {"$body.obj = null", "undefined"},
        {"$body.arr = null", "undefined"},
        {"$body.arr[2] = null", "undefined"},
        {"$body.arr[2].k = 'v'", "true"},
        /* different runtime types: = is false, != true, ordering undefined (IoT Edge orders
         * by an internal type number; see docs/routes.md) */
        {"$body.num = '5'", "false"},
        {"$body.num != '5'", "true"},
        {"$body.num < '5'", "undefined"},
        {"$body.missing <> 'x'", "true"},
        {"$body.missing > 25", "undefined"},
        {"$body.str = 5", "false"},
        {"$body.yes = 1", "false"},
        {"$body.nul >= 0", "undefined"},
        {"$body.num = s", "false"},
        {"$body.str = " SU, "undefined"},
        {"$body.num = " NU, "undefined"},
    };
    struct route_message m = op_message();
    assert_int_equal(check_values(cases, ARRAY_SIZE(cases), &m), 0);
    route_message_release(&m);
    static const char *const bad[] = {
        "1 = '1'",
        "'1' = 1",
        "n > 3",
        "1 = true",
        "true = 'true'",
        "null = 1",
        "1 = null",
        "undefined = 1",
        "1 = undefined",
        "'a' = undefined",
        "null = undefined",
        "$body.num = undefined",
        "undefined = $body.num",
        "1 < 2 < 3",
        "1 = 1 = true = 1",
    };
    assert_int_equal(check_compile_failures(bad, ARRAY_SIZE(bad)), 0);
}

static void test_logic(void **state)
{
    /* Three-valued AND/OR/NOT over true, false, undefined (static Bool and Undefined), the
     * Null operators, and dynamic operands (both must be booleans, else undefined). */
    static const struct value_case cases[] = {
        {"true and true", "true"},
        {"true and false", "false"},
        {"false and " BU, "false"},
        {BU " and false", "false"},
        {"true and " BU, "undefined"},
        {BU " and " BU, "undefined"},
        {"undefined and false", "false"},
        {"undefined and true", "undefined"},
        {"true or " BU, "true"},
        {BU " or true", "true"},
        {"false or " BU, "undefined"},
        {BU " or " BU, "undefined"},
        {"false or false", "false"},
        {"undefined or true", "true"},
        {"not " BU, "undefined"},
        {"not not true", "true"},
        {"not null", "true"},
        {"null and true", "null"},
        {"null and false", "null"},
        {"null and null", "null"},
        {"false and null", "null"},
        {"null or true", "true"},
        {"null or false", "false"},
        {"false or null", "false"},
        {"null or " BU, "undefined"},
        {"null or null", "null"},
        {"null and undefined", "null"},
        {"null or undefined", "undefined"},
        {"$body.yes and true", "true"},
        {"$body.yes and $body.no", "false"},
        {"$body.no or $body.yes", "true"},
        {"$body.no and false", "false"},
        {"$body.missing and false", "undefined"},
        {"false and $body.missing", "undefined"},
        {"$body.nul or true", "undefined"},
        {"$body.str and true", "undefined"},
        {"$body.yes and s", "undefined"},
        {"$body.yes and 1", "undefined"},
        {"true and $body.yes", "true"},
        {"$body.num > 1 and $body.yes", "true"},
        {"false or $body.str", "undefined"},
        {BU " or $body.yes", "undefined"},
        {"not $body.yes", "false"},
        {"not $body.no", "true"},
        {"not $body.nul", "undefined"},
        {"not $body.missing", "undefined"},
        {"not $body.num", "undefined"},
        /* precedence: NOT binds tightest, AND before OR, OR before ?? */
        {"not false and false", "false"},
        {"true or false and false", "true"},
        {"false and true or true", "true"},
        {"1 = 1 and 2 = 2", "true"},
        {"not (1 = 2)", "true"},
    };
    struct route_message m = op_message();
    assert_int_equal(check_values(cases, ARRAY_SIZE(cases), &m), 0);
    route_message_release(&m);
    static const char *const bad[] = {"1 and true",    "true and 1", "s or true",
                                      "true or s",     "not 1",      "not s",
                                      "not undefined", "true and 1", "not 1 = 2"};
    assert_int_equal(check_compile_failures(bad, ARRAY_SIZE(bad)), 0);

    /* The truth of a condition: only true routes; a null-typed condition is false. */
    static const struct truth_case truths[] = {
        {"null", F},     {"null and true", F}, {"$body.nul", U}, {"$body.yes", T},
        {"$body.no", F}, {"$body.num", U},     {"$body.str", U}, {"'x'", U},
        {"1", U},        {"undefined", U},
    };
    m = op_message();
    assert_int_equal(check_truths("/messages/*", truths, ARRAY_SIZE(truths), &m), 0);
    route_message_release(&m);
}

static void test_coalesce(void **state)
{
    static const struct value_case cases[] = {
        {SU " ?? 'd'", "string 'd'"},
        {"s ?? 'd'", "string 'str'"},
        {NU " ?? 4", "number 4"},
        {"1 ?? 2", "number 1"},
        {BU " ?? true", "true"},
        {"undefined ?? undefined", "undefined"},
        {"null ?? null", "null"},
        {SU " ?? " SU " ?? 'x'", "string 'x'"},
        {"$body.num ?? 1", "number 5"},
        {"$body.missing ?? 1", "null"}, /* a missing path is null, which is defined */
        {"$body.obj ?? 1", "number 1"}, /* objects are undefined */
        {"1 ?? $body.num", "number 1"},
        {"s ?? $body.num", "string 'str'"},
        {"(0 / 0) ?? 7", "number 7"},
    };
    struct route_message m = op_message();
    assert_int_equal(check_values(cases, ARRAY_SIZE(cases), &m), 0);
    route_message_release(&m);
    static const char *const bad[] = {
        "s ?? 1",    "1 ?? 's'",  "undefined ?? 1",        "1 ?? undefined",
        "null ?? 1", "true ?? 1", "$body.num ?? undefined"};
    assert_int_equal(check_compile_failures(bad, ARRAY_SIZE(bad)), 0);
}

/* ---- functions ----------------------------------------------------------------------------- */

static void test_functions(void **state)
{
    static const struct value_case cases[] = {
        {"abs(-2.5)", "number 2.5"},
        {"abs(" NU ")", "undefined"},
        {"abs($body.num)", "number 5"},
        {"abs($body.str)", "undefined"},
        {"exp(0)", "number 1"},
        {"exp(" NU ")", "undefined"},
        {"power(2, 10)", "number 1024"},
        {"power(-8, 1/3)", "undefined"},
        {"power(2, " NU ")", "undefined"},
        {"power($body.num, 2)", "number 25"},
        {"square(-3)", "number 9"},
        {"square($body.nul)", "undefined"},
        {"ceiling(1.2)", "number 2"},
        {"ceiling(-1.2)", "number -1"},
        {"floor(-1.2)", "number -2"},
        {"floor(1/0)", "number inf"},
        {"sign(-0.5)", "number -1"},
        {"sign(0)", "number 0"},
        {"sign(" NU ")", "undefined"},
        {"sqrt(16)", "number 4"},
        {"sqrt(-1)", "undefined"},
        /* as_number: NumberStyles.Any */
        {"as_number('42')", "number 42"},
        {"as_number(' -4.5e1 ')", "number -45"},
        {"as_number('1,000')", "number 1000"},
        {"as_number('(12)')", "number -12"},
        {"as_number('12-')", "number -12"},
        {"as_number('+.5')", "number 0.5"},
        {"as_number('5.')", "number 5"},
        {"as_number('Infinity')", "number inf"},
        {"as_number('-infinity')", "number -inf"},
        {"as_number('NaN')", "undefined"},
        {"as_number('0x10')", "undefined"},
        {"as_number('1e')", "undefined"},
        {"as_number('')", "undefined"},
        {"as_number('.')", "undefined"},
        {"as_number(',1')", "undefined"},
        {"as_number('1 2')", "undefined"},
        {"as_number(n)", "number 5"},
        {"as_number(3)", "number 3"},
        {"as_number($body.num)", "number 5"},
        {"as_number($body.str)", "undefined"},
        {"as_number($body.yes)", "undefined"},
        {"as_number(" SU ")", "undefined"},
        /* type tests */
        {"is_bool(true)", "true"},
        {"is_bool(" BU ")", "undefined"},
        {"is_bool($body.yes)", "true"},
        {"is_bool($body.num)", "false"},
        {"is_bool($body.obj)", "undefined"},
        {"is_bool(t)", "false"},
        {"is_bool(null)", "false"},
        {"is_bool(undefined)", "false"},
        {"is_defined(" NU ")", "false"},
        {"is_defined(" SU ")", "false"},
        {"is_defined(" BU ")", "false"},
        {"is_defined(null)", "true"},
        {"is_defined($body.nul)", "true"},
        {"is_defined($body.missing)", "true"},
        {"is_defined($body.obj)", "false"},
        {"is_defined($body.arr[0])", "true"},
        {"is_null(null)", "true"},
        {"is_null($body.nul)", "true"},
        {"is_null($body.missing)", "true"},
        {"is_null($body.num)", "false"},
        {"is_null($body.obj)", "undefined"},
        {"is_null(" SU ")", "false"},
        {"is_null(undefined)", "false"},
        {"is_number(1)", "true"},
        {"is_number(1/0)", "false"},
        {"is_number($body.num)", "true"},
        {"is_number($body.str)", "false"},
        {"is_number(n)", "false"},
        {"is_string(s)", "true"},
        {"is_string($body.str)", "true"},
        {"is_string($body.nul)", "false"},
        {"is_string(" SU ")", "false"},
        {"is_string(1)", "false"},
        /* strings */
        {"concat('a', 'b')", "string 'ab'"},
        {"concat(s, '-', $body.str)", "string 'str-abc'"},
        {"concat('a', $body.num)", "undefined"},
        {"concat('a', " SU ")", "undefined"},
        {"length('abc')", "number 3"},
        {"length('\xc3\xa9\xf0\x9f\x98\x80')", "number 3"},
        {"length($body.num)", "undefined"},
        {"length(" SU ")", "undefined"},
        {"lower('AbC\xc3\x89')", "string 'abc\xc3\xa9'"},
        {"upper('stra\xc3\x9f"
         "e')",
         "string 'STRA\xc3\x9f"
         "E'"},
        {"upper($body.str)", "string 'ABC'"},
        {"lower($body.num)", "undefined"},
        {"substring('hello', 5)", "string ''"},
        {"substring('hello', 1.9)", "string 'ello'"},
        {"substring('hello', 1.5, 2.5)", "string 'el'"},
        {"substring('', 0)", "string ''"},
        {"substring('', 0, 0)", "undefined"},
        {"substring('hello', 0, 6)", "undefined"},
        {"substring('\xf0\x9f\x98\x80x', 1)", "string '\xef\xbf\xbdx'"},
        {"substring('\xf0\x9f\x98\x80x', 0, 2)", "string '\xf0\x9f\x98\x80'"},
        {"substring($body.str, 1)", "string 'bc'"},
        {"substring($body.str, $body.nul)", "undefined"},
        {"index_of('a\xf0\x9f\x98\x80"
         "b', 'b')",
         "number 3"},
        {"index_of('abc', '')", "number 0"},
        {"index_of($body.str, 'c')", "number 2"},
        {"index_of('abc', " SU ")", "undefined"},
        {"starts_with('abc', '')", "true"},
        {"ends_with('abc', 'abcd')", "false"},
        {"contains('abc', '')", "true"},
        {"contains($body.str, 'b')", "true"},
        {"starts_with($body.num, '5')", "undefined"},
        {"ends_with(s, 'tr')", "true"},
    };
    struct route_message m = op_message();
    assert_int_equal(check_values(cases, ARRAY_SIZE(cases), &m), 0);
    route_message_release(&m);
}

static void test_properties(void **state)
{
    static const struct route_prop app[] = {
        {"Temp", "app"},  {"$dollar", "app-dollar"}, {"$body.b", "app-body"},
        {"dup", "first"}, {"DUP", "second"},
    };
    static const struct route_prop sys[] = {
        {"messageId", "m1"},
        {"dollar", "sys-dollar"},
        {"temp", "sys"},
        {"contentType", "application/json"},
        {"contentEncoding", "utf-8"},
    };
    static const char body[] = "{\"b\":\"body\",\"c\":[\"c0\"]}";
    struct route_message m = {.source = "/messages",
                              .app = app,
                              .n_app = ARRAY_SIZE(app),
                              .sys = sys,
                              .n_sys = ARRAY_SIZE(sys),
                              .body = body,
                              .body_len = sizeof(body) - 1};
    static const struct value_case cases[] = {
        {"temp", "string 'app'"}, /* names are case-insensitive */
        {"TEMP", "string 'app'"},
        {"$temp", "string 'sys'"}, /* no app property "$temp": system property */
        {"$MessageId", "string 'm1'"},
        {"{$messageId}", "string 'm1'"},
        {"$dollar", "string 'app-dollar'"}, /* an app property named "$dollar" wins */
        {"{$dollar}", "string 'sys-dollar'"},
        {"$body.b", "string 'app-body'"}, /* so does one named "$body.b" */
        {"{$body.b}", "string 'body'"},   /* braces: the body only */
        {"$BODY.c[0]", "string 'c0'"},    /* brackets: the body only */
        {"$nothing", "undefined"},
        {"$x[0]", "undefined"}, /* not a body query, cannot be a property */
        {"{$x[0]}", "undefined"},
        {"$body", "undefined"}, /* no path: property "$body" / system "body" */
        {"dup", "string 'first'"},
        {"$body.b = 'app-body'", "true"},
    };
    assert_int_equal(check_values(cases, ARRAY_SIZE(cases), &m), 0);
    route_message_release(&m);
}

/* ---- $body ----------------------------------------------------------------------------------- */

/* IoT Edge's BodyQueryTest message. */
static const char bq_body[] =
    "{\"message\":{\"Weather\":{\"Temperature\":50,\"FreezingTemperature\":-50.4,"
    "\"PreciseTemperature\":50.4,\"Temperature_PropertyConflict\":50,\"NullValue\":null,"
    "\"Time\":\"2017-03-09T00:00:00.000Z\",\"PrevTemperatures\":[20,30,40],\"IsEnabled\":true,"
    "\"IsDisabled\":false,\"Location\":{\"Street\":\"One Microsoft Way\",\"City\":\"Redmond\","
    "\"State\":\"WA\"},\"HistoricalData\":[{\"Month\":\"Feb\",\"Temperature\":40},"
    "{\"Month\":\"Jan\",\"Temperature\":30}]}}}";
static const struct route_prop bq_app[] = {
    {"City", "Redmond"},
    {"$State", "WA"},
    {"$body.message.Weather.Temperature_PropertyConflict", "100"},
    {"IntegerProperty", "110"}};
static const struct route_prop bq_sys[] = {{"State", "CA"},
                                           {"$body.message.Weather.Location.State", "CA"},
                                           {"contentEncoding", "UTF-8"},
                                           {"contentType", "application/json"}};

static struct route_message bq_message(void)
{
    return (struct route_message){.source = "/messages",
                                  .app = bq_app,
                                  .n_app = ARRAY_SIZE(bq_app),
                                  .sys = bq_sys,
                                  .n_sys = ARRAY_SIZE(bq_sys),
                                  .body = bq_body,
                                  .body_len = sizeof(bq_body) - 1};
}

static void test_body_queries(void **state)
{
    static const struct truth_case cases[] = {
        /* BodyQuery_Double_Success / _Failure */
        {"50 >= $body.message.Weather.Temperature", T},
        {"$BODY.message.Weather.Temperature >= 50", T},
        {"$bODy.message.Weather.Temperature <= 50", T},
        {"$BoDY.message.Weather.Temperature != 60", T},
        {"$body.message.Weather.Temperature <> 500", T},
        {"$body.message.Weather.Temperature = 40 + 10", T},
        {"$body.message.Weather.Temperature >= $body.message.Weather.PrevTemperatures[0]", T},
        {"$body.message.Weather.PrevTemperatures[0] + $body.message.Weather.PrevTemperatures[1]= "
         "50 ",
         T},
        {"$body.message.Weather.PrevTemperatures[1] * $body.message.Weather.PrevTemperatures[2] = "
         "1200",
         T},
        {"$body.message.Weather.PrevTemperatures[1] / $body.message.Weather.PrevTemperatures[0] = "
         "1.5",
         T},
        {"$body.message.Weather.HistoricalData[0].Temperature - 10 = "
         "$body.message.Weather.HistoricalData[1].Temperature",
         T},
        {"$body.message.Weather.HistoricalData[0].Month = 'Feb'", T},
        {"10 >= $body.message.Weather.Temperature", F},
        {"$body.message.Weather.Temperature = '50'", F},
        {"$body.message.Weather.Temperature <> 40 + 10", F},
        {"$body.message.Weather.PrevTemperatures[1] / $body.message.Weather.PrevTemperatures[0] = "
         "3/3",
         F},
        /* strings, properties, conflicts */
        {"$body.message.Weather.Temperature <> '100'", T},
        {"$body.message.Weather.Location.City = City", T},
        {"$body.message.Weather.Location.State = $State", T},
        {"$body.message.Weather.Location.State <> $body.message.Weather.Location.City", T},
        {"$body.message.Weather.Temperature ='100'", F},
        {"$body.message.Weather.Location.City != City", F},
        {"$body.message.Weather.Location.State = $body.message.Weather.Location.City", F},
        {"$body.message.Weather.IsEnabled", T},
        {"$body.message.Weather.IsDisabled = false", T},
        {"NOT $body.message.Weather.IsDisabled", T},
        {"$body.message.Weather.InvalidKey <> '100'", T},
        {"$body.message.Weather.IsEnabled AND $body.message.Weather.IsEnabled", T},
        {"$body.message.Weather.IsDisabled OR NOT($body.message.Weather.IsDisabled)", T},
        {"$body", U},
        {"$body.message.Weather.HistoricalData[0].Temperature.InvalidKey", U},
        {"$City <> $body.message.Weather.InvalidKey", U},
        {"$body.message.Weather.Temperature_PropertyConflict = '100'", T},
        {"as_number($body.message.Weather.Temperature_PropertyConflict) = 100", T},
        {"{$body.message.Weather.Temperature_PropertyConflict} <> 100", T},
        {"$body.message.Weather.Location.State = 'WA'", T},
        {"{$body.message.Weather.Location.State} <> 'CA'", T},
        {"$body.message.Weather <> null", U},
        {"$body.message.Weather.NullValue = null", T},
        {"$body.message.Temperature = null", T},
        {"$body.message.Weather.Temperature != null", T},
        {"$body.message.Weather.InvalidProperty = null", T},
        {"NOT ($body.message.Weather.InvalidProperty != null)", T},
        /* BodyQuery_Builtins */
        {"abs($body.message.Weather.FreezingTemperature) = 50.4", T},
        {"ceiling(as_number($body.message.Weather.PreciseTemperature)) = 51", T},
        {"concat($body.message.Weather.Location.Street, ', ', $body.message.Weather.Location.City, "
         "', ', $body.message.Weather.Location.State) = 'One Microsoft Way, Redmond, WA'",
         T},
        {"contains($body.message.Weather.Location.Street, 'Microsoft')", T},
        {"exp(($body.message.Weather.Temperature - 49)) < ($body.message.Weather.Temperature - 47)",
         T},
        {"index_of($body.message.Weather.Location.Street, 'Way') > 6", T},
        {"is_null($body.message.Weather.NullValue)", T},
        {"power($body.message.Weather.Temperature, length($body.message.Weather.Location.State)) "
         "= square($body.message.Weather.Temperature)",
         T},
        {"sign($body.message.Weather.FreezingTemperature) = -1", T},
        {"substring($body.message.Weather.Location.Street, "
         "length($body.message.Weather.Location.Street) - 3) = 'Way'",
         T},
        {"upper($body.message.Weather.Location.Street) = 'ONE MICROSOFT WAY'", T},
        /* differences we chose: date-like strings stay strings (IoT Edge: undefined) */
        {"$body.message.Weather.Time <> '100'", T},
        {"$body.message.Weather.Time = '2017-03-09T00:00:00.000Z'", T},
    };
    struct route_message m = bq_message();
    assert_int_equal(check_truths("/messages/*", cases, ARRAY_SIZE(cases), &m), 0);
    route_message_release(&m);

    static const char *const bad[] = {
        "$body.properties[]", "$body.properties[1:2]", "$body;@",   "$body.",   "$body.a..b",
        "$body.a[x]",         "$body.a[0]b",           "$body.[0]", "$body.a.", "$body.a]"};
    assert_int_equal(check_compile_failures(bad, ARRAY_SIZE(bad)), 0);
}

static void test_content_type_rule(void **state)
{
    static const char body[] = "{\"v\":1}";
    static const uint8_t utf16[] = {'{', 0, '"', 0, 'v', 0, '"', 0, ':', 0, '1', 0, '}', 0};
    static const uint8_t utf16_bom[] = {0xff, 0xfe, '{', 0, '"', 0, 'v', 0,
                                        '"',  0,    ':', 0, '1', 0, '}', 0};
    static const uint8_t utf32[] = {'{', 0, 0,   0, '"', 0, 0,   0, 'v', 0, 0,   0, '"', 0,
                                    0,   0, ':', 0, 0,   0, '1', 0, 0,   0, '}', 0, 0,   0};
    static const char bom8[] = "\xef\xbb\xbf{\"v\":1}";
    struct {
        const char *ct, *ce;
        const void *body;
        size_t len;
        enum route_truth want;
    } cases[] = {
        {"application/json", "utf-8", body, sizeof(body) - 1, T},
        {"Application/JSON", "UTF-8", body, sizeof(body) - 1, T},
        {"application/json", "utf-16", utf16, sizeof(utf16), T},
        {"application/json", "UTF-16", utf16_bom, sizeof(utf16_bom), T},
        {"application/json", "utf-32", utf32, sizeof(utf32), T},
        {"application/json", "utf-8", bom8, sizeof(bom8) - 1, T},
        {"application/json; charset=utf-8", "utf-8", body, sizeof(body) - 1, U},
        {" application/json", "utf-8", body, sizeof(body) - 1, U},
        {"text/plain", "utf-8", body, sizeof(body) - 1, U},
        {"application/json", "utf8", body, sizeof(body) - 1, U},
        {"application/json", "ascii", body, sizeof(body) - 1, U},
        {"application/json", NULL, body, sizeof(body) - 1, U},
        {NULL, "utf-8", body, sizeof(body) - 1, U},
        {"application/json", "utf-8", utf16, sizeof(utf16), U}, /* wrong encoding */
        {"application/json", "utf-8", "[1]", 3, U},             /* not an object */
        {"application/json", "utf-8", "{\"v\":1", 6, U},        /* not JSON */
        {"application/json", "utf-8", "", 0, U},
        {"application/json", "utf-8", "{\"v\":1,}", 8, U},     /* strict JSON */
        {"application/json", "utf-8", "{\"v\":1e999}", 11, U}, /* jansson rejects overflow */
        {"application/json", "utf-8", "{\"v\":1.0}", 9, T},
        {"application/json", "utf-8", "{\"v\":1, \"v\":2}", 14, F}, /* last one wins */
        {"application/json", "utf-8", "{\"v\":1, \"big\":123456789012345678901234567890}", 45, T},
    };
    struct route *r = NULL;
    struct lerr e = {0};
    assert_int_equal(parse_cond("$body.v = 1", &r, &e), 0);
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct route_prop sys[2];
        size_t n = 0;
        if (cases[i].ct)
            sys[n++] = (struct route_prop){"contentType", cases[i].ct};
        if (cases[i].ce)
            sys[n++] = (struct route_prop){"contentEncoding", cases[i].ce};
        struct route_message m = {.source = "/messages",
                                  .sys = sys,
                                  .n_sys = n,
                                  .body = cases[i].body,
                                  .body_len = cases[i].len};
        enum route_truth t;
        assert_int_equal(route_eval(r, &m, &t), 0);
        if (t != cases[i].want)
            fail_msg("case %zu (%s, %s): %s", i, cases[i].ct, cases[i].ce, truth_name(t));
        route_message_release(&m);
    }
    route_free(r);

    /* Deep nesting is refused like any body that cannot be parsed. */
    char deep[400] = "{\"v\":1,\"d\":";
    size_t l = strlen(deep);
    for (int i = 0; i < 70; i++)
        deep[l++] = '[';
    for (int i = 0; i < 70; i++)
        deep[l++] = ']';
    deep[l++] = '}';
    assert_int_equal(parse_cond("$body.v = 1", &r, &e), 0);
    struct route_prop sys[] = {{"contentType", "application/json"}, {"contentEncoding", "utf-8"}};
    struct route_message m = {
        .source = "/messages", .sys = sys, .n_sys = 2, .body = deep, .body_len = l};
    enum route_truth t;
    assert_int_equal(route_eval(r, &m, &t), 0);
    assert_int_equal(t, U);
    route_message_release(&m);
    route_free(r);
}

static void test_body_parsed_once(void **state)
{
    struct route *a = NULL, *b = NULL, *c = NULL;
    struct lerr e = {0};
    assert_int_equal(parse_cond("$body.num = 5", &a, &e), 0);
    assert_int_equal(parse_cond("$body.str = 'abc'", &b, &e), 0);
    assert_int_equal(parse_cond("s = 'str'", &c, &e), 0);
    struct route_message m = op_message();
    enum route_truth t;
    assert_int_equal(route_eval(c, &m, &t), 0);
    assert_int_equal(t, T);
    assert_int_equal(m.body_state_, 0); /* no $body query yet: not parsed */
    assert_int_equal(route_eval(a, &m, &t), 0);
    assert_int_equal(t, T);
    assert_int_equal(m.body_state_, 1);
    json_t *parsed = m.body_json_;
    assert_non_null(parsed);
    assert_int_equal(route_eval(b, &m, &t), 0);
    assert_int_equal(t, T);
    assert_ptr_equal(m.body_json_, parsed); /* the same parse serves every route */
    route_message_release(&m);
    assert_null(m.body_json_);

    /* An unparseable body is tried once too. */
    struct route_message bad = op_message();
    bad.body = "{oops";
    bad.body_len = 5;
    assert_int_equal(route_eval(a, &bad, &t), 0);
    assert_int_equal(t, U);
    assert_int_equal(bad.body_state_, -1);
    assert_int_equal(route_eval(b, &bad, &t), 0);
    assert_int_equal(t, U);
    route_message_release(&bad);
    route_free(a);
    route_free(b);
    route_free(c);
}

/* ---- twin_change_includes ------------------------------------------------------------------ */

static void test_twin_change_includes(void **state)
{
    /* IoT Edge's TwinChangeIncludesTest notification. */
    static const char twin[] =
        "{\"properties\":{\"reported\":{\"WeatherTwin\":{\"Temperature\":50,\"Location\":{"
        "\"Street\":\"One Microsoft Way\",\"City\":\"Redmond\",\"State\":\"WA\"}},"
        "\"Metadata\":\"metadata\",\"Gone\":null,\"$version\":4}}}";
    static const struct route_prop sys[] = {{"contentEncoding", "UTF-8"},
                                            {"contentType", "application/json"}};
    struct route_message m = {.source = "/twinChangeNotifications",
                              .sys = sys,
                              .n_sys = 2,
                              .body = twin,
                              .body_len = sizeof(twin) - 1};
    static const struct truth_case cases[] = {
        {"twin_change_includes(properties.reported.WeatherTwin)", T},
        {"TWIN_CHANGE_INCLUDES(properties.reported.WeatherTwin)", T},
        {"Twin_Change_Includes(properties.reported.WeatherTwin)", T},
        {"twin_change_includes(properties.reported.WeatherTwin.Temperature)", T},
        {"twin_change_includes(properties.reported.WeatherTwin.Location.Street)", T},
        {"twin_change_includes(properties.reported.WeatherTwin.Location.City) AND "
         "twin_change_includes(properties.reported.WeatherTwin.Temperature) = true",
         T},
        {"twin_change_includes(properties.reported.WeatherTwin.Location.City) AND "
         "Not(twin_change_includes(properties.reported.WeatherTwin.Temperature123))",
         T},
        {"twin_change_includes(properties.reported.Gone)", T}, /* present, even if null */
        {"twin_change_includes(properties.desired.WeatherTwin)", F},
        {"twin_change_includes(properties.reported.weathertwin)", F}, /* keys: exact case */
        {"twin_change_includes(tags.x)", F},
    };
    assert_int_equal(check_truths("/twinChangeNotifications", cases, ARRAY_SIZE(cases), &m), 0);
    route_message_release(&m);

    /* Not JSON, or the wrong encoding: undefined. */
    struct route *r = NULL;
    struct lerr e = {0};
    assert_int_equal(parse_cond_from("/twinChangeNotifications",
                                     "twin_change_includes(properties.reported.WeatherTwin)", &r,
                                     &e),
                     0);
    static const char *const bodies[] = {"", "random message"};
    for (size_t i = 0; i < ARRAY_SIZE(bodies); i++) {
        struct route_message bad = m;
        bad.body = bodies[i];
        bad.body_len = strlen(bodies[i]);
        bad.body_state_ = 0;
        bad.body_json_ = NULL;
        enum route_truth t;
        assert_int_equal(route_eval(r, &bad, &t), 0);
        assert_int_equal(t, U);
        route_message_release(&bad);
    }
    route_free(r);

    static const struct error_case errors[] = {
        {"FROM /twinChangeNotifications WHERE twin_change_includes() INTO $upstream",
         "column 37: wrong number of arguments to 'twin_change_includes': expected 1, got 0"},
        {"FROM /twinChangeNotifications WHERE twin_change_includes(properties.) INTO $upstream",
         "column 58: twin_change_includes path 'properties.' must start with properties.reported., "
         "properties.desired. or tags."},
        {"FROM /twinChangeNotifications WHERE twin_change_includes(properties.abcd123) INTO "
         "$upstream",
         "column 58: twin_change_includes path 'properties.abcd123' must start with "
         "properties.reported., properties.desired. or tags."},
        {"FROM /twinChangeNotifications WHERE twin_change_includes(123abc) INTO $upstream",
         "column 58: twin_change_includes path '123abc' must start with properties.reported., "
         "properties.desired. or tags."},
        {"FROM /twinChangeNotifications WHERE twin_change_includes(123123) INTO $upstream",
         "column 58: twin_change_includes takes one property path, e.g. "
         "properties.reported.temperature"},
        {"FROM /twinChangeNotifications WHERE twin_change_includes(tags.a, b) INTO $upstream",
         "column 58: twin_change_includes takes one property path, e.g. "
         "properties.reported.temperature"},
        {"FROM /twinChangeNotifications WHERE twin_change_includes(properties[0]) INTO $upstream",
         "column 58: twin_change_includes takes one property path, e.g. "
         "properties.reported.temperature"},
        {"FROM /twinChangeNotifications WHERE twin_change_includes(tags.a..b) INTO $upstream",
         "column 58: twin_change_includes path 'tags.a..b' must start with properties.reported., "
         "properties.desired. or tags."},
        {"FROM /messages/* WHERE twin_change_includes(tags.a) INTO $upstream",
         "column 24: twin_change_includes is only valid in routes FROM /twinChangeNotifications"},
        {"FROM /twinChangeNotifications WHERE twin_change_includes(tags.a INTO $upstream",
         "column 58: twin_change_includes takes one property path, e.g. "
         "properties.reported.temperature"},
    };
    assert_int_equal(check_errors(errors, ARRAY_SIZE(errors)), 0);
}

/* ---- sources and sinks --------------------------------------------------------------------- */

static bool matches(const char *route_source_path, const char *message_source)
{
    char text[512];
    snprintf(text, sizeof(text), "FROM %s INTO $upstream", route_source_path);
    struct route *r = NULL;
    struct lerr e = {0};
    if (route_parse(text, &r, &e) < 0)
        fail_msg("%s: %s", text, e.msg);
    bool m = route_source_matches(r, message_source);
    route_free(r);
    return m;
}

static void test_source_matching(void **state)
{
    const char *out = "/messages/modules/abc/outputs/out1";
    assert_true(matches("/*", out));
    assert_true(matches("/*", "/messages"));
    assert_true(matches("/*", "/twinChangeNotifications"));
    assert_true(matches("/messages/*", out));
    assert_true(matches("/messages/*", "/messages"));
    assert_false(matches("/messages/*", "/twinChangeNotifications"));
    assert_true(matches("/messages", out)); /* a prefix even without the star */
    assert_true(matches("/messages/modules/abc/*", out));
    assert_true(matches("/messages/modules/abc", out));
    assert_true(matches("/messages/modules/abc/outputs/*", out));
    assert_true(matches("/messages/modules/abc/outputs/out1", out));
    assert_true(matches("/messages/modules/abc/outputs/out1", out + 0));
    assert_true(matches("/MESSAGES/Modules/ABC/*", out)); /* case-insensitive */
    assert_true(
        matches("/messages/modules/abc/outputs/out1", "/messages/modules/abc/outputs/out1/"));
    /* whole segments only */
    assert_false(matches("/messages/modules/ab", out));
    assert_false(matches("/messages/modules/ab/*", out));
    assert_false(matches("/messages/modules/ab*", out)); /* '*' is dropped, not a wildcard */
    assert_false(matches("/messages/modules/abc/outputs/out", out));
    assert_false(
        matches("/messages/modules/abc/outputs/out1", "/messages/modules/abc/outputs/out10"));
    assert_false(matches("/messages/modules/abc/outputs/out1", "/messages/modules/abc"));
    assert_false(matches("/messages/modules/abc/*", "/messages"));
    assert_true(matches("/twinChangeNotifications", "/twinChangeNotifications"));
    assert_false(matches("/twinChangeNotifications", "/messages"));
    /* spaces between tokens are ignored; names may use digits and keywords (IoT Edge would not
     * take "/123" or "/and": a deliberate superset) */
    assert_true(matches("/ messages / modules / abc / *", out));
    assert_true(matches("/messages/modules/123/*", "/messages/modules/123/outputs/x"));
    assert_true(matches("/messages/modules/and/*", "/messages/modules/and/outputs/x"));
    assert_true(matches("/messages/modules/my-mod.v2/*", "/messages/modules/my-mod.v2/outputs/x"));

    struct route *r = NULL;
    struct lerr e = {0};
    assert_int_equal(route_parse("SELECT * FROM /messages/modules/m/* INTO $upstream", &r, &e), 0);
    assert_string_equal(route_source(r), "/messages/modules/m/*");
    assert_false(route_has_condition(r));
    route_free(r);
}

static void test_sinks(void **state)
{
    static const struct {
        const char *route, *id, *module, *input;
    } cases[] = {
        {"FROM /* INTO $upstream", "$upstream", NULL, NULL},
        {"FROM /* INTO $UpStream", "$upstream", NULL, NULL},
        {"FROM /* INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")",
         "/modules/filter/inputs/input1", "filter", "input1"},
        {"FROM /* INTO brokeredendpoint('/modules/Filter/inputs/in')", "/modules/Filter/inputs/in",
         "Filter", "in"},
        {"FROM /* INTO BrokeredEndpoint(\" modules/f/inputs/i/ \")", "/modules/f/inputs/i", "f",
         "i"},
        {"FROM /* INTO BrokeredEndpoint(\"/Modules/f/Inputs/i\")", "/modules/f/inputs/i", "f", "i"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct route *r = NULL;
        struct lerr e = {0};
        if (route_parse(cases[i].route, &r, &e) < 0)
            fail_msg("%s: %s", cases[i].route, e.msg);
        const struct route_sink *s = route_sink(r);
        assert_string_equal(s->id, cases[i].id);
        if (cases[i].module) {
            assert_int_equal(s->kind, ROUTE_SINK_MODULE);
            assert_string_equal(s->module, cases[i].module);
            assert_string_equal(s->input, cases[i].input);
        } else {
            assert_int_equal(s->kind, ROUTE_SINK_UPSTREAM);
            assert_null(s->module);
        }
        assert_string_equal(route_text(r), cases[i].route);
        route_free(r);
    }
}

/* ---- parse errors ------------------------------------------------------------------------- */

static void test_parse_errors(void **state)
{
    static const struct error_case cases[] = {
        {"", "column 1: expected FROM"},
        {"   ", "column 4: expected FROM"},
        {"TO /* INTO $upstream", "column 1: expected FROM"},
        {"SELECT FROM /* INTO $upstream", "column 8: expected '*' after SELECT, found 'FROM'"},
        {"SELECT * /* INTO $upstream", "column 10: expected FROM"},
        {"FROM messages INTO $upstream",
         "column 6: expected a source path such as /messages/*, found 'messages'"},
        {"FROM /messages/ INTO $upstream",
         "column 17: expected a path segment after '/', found 'INTO'"},
        {"FROM /messages/(x) INTO $upstream",
         "column 16: expected a path segment after '/', found '('"},
        {"FROM /messages $upstream", "column 16: expected WHERE or INTO, found '$upstream'"},
        {"FROM /messages", "column 15: expected WHERE or INTO, found end of route"},
        {"FROM /messages/* WHERE", "column 23: expected an expression, found end of route"},
        {"FROM /messages/* WHERE INTO $upstream",
         "column 24: expected an expression, found 'INTO'"},
        {"FROM /messages/* WHERE a = '1' $upstream", "column 32: expected INTO"},
        {"FROM /messages/* WHERE a = '1'", "column 31: expected INTO"},
        {"FROM /messages/* WHERE a = 'x' 'y' INTO $upstream", "column 32: expected INTO"},
        {"FROM /messages/* WHERE 3 -5 INTO $upstream", "column 26: expected INTO"},
        {"FROM /messages/* WHERE a = 'x INTO $upstream", "column 28: unterminated string"},
        {"FROM /messages/* WHERE a = \"x\\\" INTO $upstream", "column 28: unterminated string"},
        {"FROM /messages/* WHERE a = 'x\\n' INTO $upstream",
         "column 30: invalid escape sequence in string"},
        {"FROM /messages/* WHERE a = 'x' AND 'y INTO $upstream", "column 36: unterminated string"},
        {"FROM /messages/* WHERE lenght(a) = 3 INTO $upstream",
         "column 24: unknown function 'lenght'"},
        {"FROM /messages/* WHERE length(a, 'b') = 3 INTO $upstream",
         "column 24: wrong number of arguments to 'length': expected 1, got 2"},
        {"FROM /messages/* WHERE concat('a') = 'a' INTO $upstream",
         "column 24: wrong number of arguments to 'concat': expected at least 2, got 1"},
        {"FROM /messages/* WHERE substring('a') = 'a' INTO $upstream",
         "column 24: wrong number of arguments to 'substring': expected 2 or 3, got 1"},
        {"FROM /messages/* WHERE abs() = 1 INTO $upstream",
         "column 24: wrong number of arguments to 'abs': expected 1, got 0"},
        {"FROM /messages/* WHERE ABS('x') = 1 INTO $upstream",
         "column 24: invalid arguments to built-in function 'abs': abs(string)"},
        {"FROM /messages/* WHERE substring(1, 'a', null) = 'x' INTO $upstream",
         "column 24: invalid arguments to built-in function 'substring': "
         "substring(number, string, null)"},
        {"FROM /messages/* WHERE temperature > 25 INTO $upstream",
         "column 36: invalid operands to binary operator '>': have 'string' and 'number', "
         "expected 'string' and 'string'"},
        {"FROM /messages/* WHERE 1 + 'a' = 2 INTO $upstream",
         "column 26: invalid operands to binary operator '+': have 'number' and 'string', "
         "expected 'number' and 'number'"},
        {"FROM /messages/* WHERE a and 1 = 1 INTO $upstream",
         "column 26: invalid operands to binary operator 'and': have 'string' and 'bool', "
         "expected 'bool' and 'bool'"},
        {"FROM /messages/* WHERE NOT a INTO $upstream",
         "column 24: invalid operands to unary operator 'NOT': have 'string', expected 'bool'"},
        {"FROM /messages/* WHERE - 'a' = 1 INTO $upstream",
         "column 24: invalid operands to unary operator '-': have 'string', expected 'number'"},
        {"FROM /messages/* WHERE (a = 'b' INTO $upstream", "column 24: missing closing ')'"},
        {"FROM /messages/* WHERE (a = 'b'", "column 24: missing closing ')'"},
        {"FROM /messages/* WHERE (a = 'b' 'c') INTO $upstream",
         "column 33: expected ')', found ''c''"},
        {"FROM /messages/* WHERE a = 'b') INTO $upstream", "column 31: unmatched closing ')'"},
        {"FROM /messages/* WHERE () INTO $upstream", "column 25: unmatched closing ')'"},
        {"FROM /messages/* WHERE abs(1 INTO $upstream", "column 27: missing closing ')'"},
        {"FROM /messages/* WHERE abs(1 2) INTO $upstream",
         "column 30: expected ',' or ')', found '2'"},
        {"FROM /messages/* WHERE a = @ INTO $upstream", "column 28: unexpected character '@'"},
        {"FROM /messages/* WHERE a[0] = 1 INTO $upstream",
         "column 24: unexpected 'a[0]': '[' and ']' are only allowed in $body queries"},
        {"FROM /messages/* WHERE $body.a..b = 1 INTO $upstream",
         "column 24: invalid $body query 'a..b'"},
        {"FROM /messages/* WHERE $body. = 1 INTO $upstream", "column 24: empty $body query"},
        {"FROM /messages/* WHERE {a} = 1 INTO $upstream",
         "column 25: expected a $property after '{', found 'a'"},
        {"FROM /messages/* WHERE {$a = 1 INTO $upstream", "column 28: expected '}', found '='"},
        {"FROM /messages/* WHERE select = 1 INTO $upstream",
         "column 24: expected an expression, found 'select'"},
        {"FROM /messages/* INTO",
         "column 22: expected an endpoint: $upstream or "
         "BrokeredEndpoint(\"/modules/<module>/inputs/<input>\"), found end "
         "of route"},
        {"FROM /messages/* INTO $downstream",
         "column 23: unknown endpoint '$downstream' (expected $upstream)"},
        {"FROM /messages/* INTO upstream",
         "column 23: expected an endpoint: $upstream or "
         "BrokeredEndpoint(\"/modules/<module>/inputs/<input>\"), found 'upstream'"},
        {"FROM /messages/* INTO Endpoint(\"/modules/a/inputs/b\")",
         "column 23: unknown endpoint function 'Endpoint' (expected BrokeredEndpoint)"},
        {"FROM /messages/* INTO BrokeredEndpoint",
         "column 23: expected an endpoint: $upstream or "
         "BrokeredEndpoint(\"/modules/<module>/inputs/<input>\"), found 'BrokeredEndpoint'"},
        {"FROM /messages/* INTO BrokeredEndpoint(/modules/a/inputs/b)",
         "column 40: expected a string with the endpoint address, found '/'"},
        {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/a/inputs/b\"",
         "column 39: missing closing ')'"},
        {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/a/inputs/b", "column 40: "
                                                                         "unterminated string"},
        {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/a/outputs/b\")",
         "column 40: BrokeredEndpoint address must be \"/modules/<module>/inputs/<input>\""},
        {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/a/inputs/b/c\")",
         "column 40: BrokeredEndpoint address must be \"/modules/<module>/inputs/<input>\""},
        {"FROM /messages/* INTO BrokeredEndpoint(\"/modules//inputs/b\")",
         "column 40: BrokeredEndpoint address must be \"/modules/<module>/inputs/<input>\""},
        {"FROM /messages/* INTO BrokeredEndpoint(\"/modules/a/inputs/\")",
         "column 40: BrokeredEndpoint address must be \"/modules/<module>/inputs/<input>\""},
        {"FROM /messages/* INTO $upstream WHERE a = 1",
         "column 33: unexpected text after the endpoint, found 'WHERE'"},
        {"FROM /messages/* INTO $upstream garbage",
         "column 33: unexpected text after the endpoint, found 'garbage'"},
        /* columns count characters, not bytes */
        {"FROM /messages/* WHERE '\xc3\xa9\xc3\xa9' = x = 1 INTO $upstream",
         "column 33: invalid operands to binary operator '=': have 'bool' and 'number', expected "
         "'bool' and 'bool'"},
    };
    assert_int_equal(check_errors(cases, ARRAY_SIZE(cases)), 0);
}

static void test_limits(void **state)
{
    struct route *r = NULL;
    struct lerr e = {0};
    /* length */
    char *text = malloc(ROUTE_MAX_TEXT + 64);
    assert_non_null(text);
    int n = snprintf(text, ROUTE_MAX_TEXT + 64, "FROM /* WHERE a = '");
    memset(text + n, 'x', ROUTE_MAX_TEXT);
    strcpy(text + ROUTE_MAX_TEXT - 20, "' INTO $upstream");
    assert_int_equal(route_parse(text, &r, &e), 0); /* exactly at the limit is fine */
    assert_int_equal((int)strlen(text), ROUTE_MAX_TEXT - 4);
    route_free(r);
    memset(text + n, 'x', ROUTE_MAX_TEXT);
    strcpy(text + ROUTE_MAX_TEXT, "' INTO $upstream");
    assert_int_equal(route_parse(text, &r, &e), -E2BIG);
    assert_string_equal(e.msg, "route longer than 8192 bytes");

    /* nesting: parentheses, unary operators, chains */
    struct lbuf b = LBUF_INIT;
    for (int i = 0; i < ROUTE_MAX_DEPTH + 1; i++)
        lbuf_puts(&b, "(");
    lbuf_puts(&b, "true");
    for (int i = 0; i < ROUTE_MAX_DEPTH + 1; i++)
        lbuf_puts(&b, ")");
    assert_int_equal(parse_cond(b.data, &r, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "expression nested too deeply (limit 128)"));
    lbuf_reset(&b);
    for (int i = 0; i < 100; i++)
        lbuf_puts(&b, "(");
    lbuf_puts(&b, "true");
    for (int i = 0; i < 100; i++)
        lbuf_puts(&b, ")");
    assert_int_equal(parse_cond(b.data, &r, &e), 0);
    route_free(r);
    lbuf_reset(&b);
    for (int i = 0; i < 200; i++)
        lbuf_puts(&b, "not ");
    lbuf_puts(&b, "true");
    assert_int_equal(parse_cond(b.data, &r, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "nested too deeply"));
    lbuf_reset(&b);
    lbuf_puts(&b, "a = '1'");
    for (int i = 0; i < 200; i++)
        lbuf_puts(&b, " or a = '1'");
    assert_int_equal(parse_cond(b.data, &r, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "nested too deeply"));
    lbuf_reset(&b);
    lbuf_puts(&b, "a = '1'");
    for (int i = 0; i < 60; i++)
        lbuf_puts(&b, " or a = '1'");
    assert_int_equal(parse_cond(b.data, &r, &e), 0);
    route_free(r);

    /* evaluation memory: concatenating big properties is cut off with -E2BIG */
    lbuf_reset(&b);
    lbuf_puts(&b, "length(concat(");
    for (int i = 0; i < 40; i++)
        lbuf_printf(&b, "%sbig", i ? ", " : "");
    lbuf_puts(&b, ")) > 0");
    assert_int_equal(parse_cond(b.data, &r, &e), 0);
    char *big = malloc(64 * 1024);
    assert_non_null(big);
    memset(big, 'b', 64 * 1024 - 1);
    big[64 * 1024 - 1] = 0;
    struct route_prop app[] = {{"big", big}};
    struct route_message m = {.source = "/messages", .app = app, .n_app = 1};
    enum route_truth t;
    assert_int_equal(route_eval(r, &m, &t), -E2BIG);
    big[1024] = 0;
    assert_int_equal(route_eval(r, &m, &t), 0);
    assert_int_equal(t, T);
    route_free(r);
    free(big);
    free(text);
    lbuf_free(&b);
}

/* ---- the route table ----------------------------------------------------------------------- */

static struct route_table *table_from(const char *json, struct lstrv *errors, int *ret)
{
    struct lerr e = {0};
    json_t *j = NULL;
    if (ljson_parse(json, strlen(json), &j, &e) < 0)
        fail_msg("bad test JSON: %s", e.msg);
    struct route_table *t = NULL;
    *ret = route_table_new(j, &t, errors);
    json_decref(j);
    return t;
}

static int match(const struct route_table *t, const char *source, struct route_match *res)
{
    struct route_message m = {.source = source};
    int n = route_table_match(t, &m, res);
    route_message_release(&m);
    return n;
}

/* The $edgeHub desired properties of the manifests in /work/shared/fixtures/iotedge (IoT Edge's
 * e2e_deployment_files), with every route exactly as written there. */
static const char *const fixtures[] = {
    /* connectivity_deployment.template.json */
    "{\"schemaVersion\":\"1.0\",\"routes\":{"
    "\"loadGen1ToRelayer1\":\"FROM /messages/modules/loadGen1/outputs/output1 INTO "
    "BrokeredEndpoint(\\\"/modules/relayer1/inputs/input1\\\")\","
    "\"relayer1ToCloud\":\"FROM /messages/modules/relayer1/outputs/output1 INTO $upstream\","
    "\"loadGen2ToRelayer2\":\"FROM /messages/modules/loadGen2/outputs/output2 INTO "
    "BrokeredEndpoint(\\\"/modules/relayer2/inputs/input2\\\")\","
    "\"relayer2ToCloud\":\"FROM /messages/modules/relayer2/outputs/output2 INTO $upstream\"},"
    "\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":86400}}",
    /* dm_module_to_module_deployment.json */
    "{\"schemaVersion\":\"1.0\",\"routes\":{\"TempFilterToCloud\":\"FROM /* INTO $upstream\"},"
    "\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":7200}}",
    /* module_to_functions_deployment.template.json */
    "{\"schemaVersion\":\"1.0\",\"routes\":{"
    "\"TempFilterFunctionsToCloud\":\"FROM /messages/modules/tempFilterFunctions/outputs/* INTO "
    "$upstream\","
    "\"TempSensorToTempFilter\":\"FROM /messages/modules/tempSensor/outputs/temperatureOutput "
    "INTO BrokeredEndpoint(\\\"/modules/tempFilterFunctions/inputs/input1\\\")\"},"
    "\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":7200}}",
    /* module_to_module_deployment.template.json */
    "{\"schemaVersion\":\"1.0\",\"routes\":{"
    "\"TempFilterToCloud\":\"FROM /messages/modules/tempFilter/outputs/* INTO $upstream\","
    "\"TempSensorToTempFilter\":\"FROM /messages/modules/tempSensor/outputs/temperatureOutput "
    "INTO BrokeredEndpoint(\\\"/modules/tempFilter/inputs/input1\\\")\"},"
    "\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":7200}}",
    /* nestededge_middleLayerBaseDeployment_mqtt.json */
    "{\"schemaVersion\":\"1.2\",\"routes\":{\"ToUpstream\":\"FROM /messages/* INTO $upstream\"},"
    "\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":7200}}",
    /* quickstart_deployment.template.json */
    "{\"schemaVersion\":\"1.0\",\"routes\":{\"route\":\"FROM /* INTO $upstream\"},"
    "\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":7200}}",
};

static void test_fixture_routes(void **state)
{
    struct route_match res[8];
    int rc;
    struct route_table *t;

    /* connectivity: module to module and to the cloud */
    t = table_from(fixtures[0], NULL, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(t->n_routes, 4);
    assert_int_equal(t->n_sinks, 3);
    assert_string_equal(t->sinks[0].id, "/modules/relayer1/inputs/input1");
    assert_string_equal(t->sinks[1].id, "$upstream");
    assert_string_equal(t->sinks[2].id, "/modules/relayer2/inputs/input2");
    assert_int_equal(t->ttl_secs, 86400);
    assert_string_equal(t->schema_version, "1.0");
    assert_int_equal(match(t, "/messages/modules/loadGen1/outputs/output1", res), 1);
    assert_string_equal(t->sinks[res[0].sink].module, "relayer1");
    assert_string_equal(t->sinks[res[0].sink].input, "input1");
    assert_string_equal(res[0].route, "loadGen1ToRelayer1");
    assert_int_equal(res[0].priority, ROUTE_PRIORITY_DEFAULT);
    assert_int_equal(res[0].ttl_secs, 86400);
    assert_int_equal(match(t, "/messages/modules/relayer2/outputs/output2", res), 1);
    assert_int_equal(t->sinks[res[0].sink].kind, ROUTE_SINK_UPSTREAM);
    assert_int_equal(match(t, "/messages/modules/loadGen1/outputs/output2", res), 0);
    assert_int_equal(match(t, "/messages/modules/loadGen1", res), 0);
    route_table_free(t);

    /* dm_module_to_module and quickstart: everything upstream */
    for (int i = 1; i <= 5; i += 4) {
        t = table_from(fixtures[i], NULL, &rc);
        assert_int_equal(rc, 0);
        assert_int_equal(t->n_sinks, 1);
        assert_int_equal(match(t, "/messages/modules/x/outputs/y", res), 1);
        assert_int_equal(res[0].ttl_secs, 7200);
        assert_int_equal(match(t, "/messages", res), 1);
        assert_int_equal(match(t, "/twinChangeNotifications", res), 1);
        route_table_free(t);
    }

    /* module to functions / module to module */
    for (int i = 2; i <= 3; i++) {
        const char *filter = i == 2 ? "tempFilterFunctions" : "tempFilter";
        char src[128];
        t = table_from(fixtures[i], NULL, &rc);
        assert_int_equal(rc, 0);
        assert_int_equal(match(t, "/messages/modules/tempSensor/outputs/temperatureOutput", res),
                         1);
        assert_string_equal(t->sinks[res[0].sink].module, filter);
        assert_string_equal(res[0].route, "TempSensorToTempFilter");
        snprintf(src, sizeof(src), "/messages/modules/%s/outputs/alertOutput", filter);
        assert_int_equal(match(t, src, res), 1);
        assert_int_equal(t->sinks[res[0].sink].kind, ROUTE_SINK_UPSTREAM);
        assert_int_equal(match(t, "/messages/modules/tempSensor/outputs/other", res), 0);
        assert_int_equal(match(t, "/messages/modules/tempFilterX/outputs/o", res), 0);
        route_table_free(t);
    }

    /* nested edge, schema 1.2: telemetry only */
    t = table_from(fixtures[4], NULL, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(t->schema_version, "1.2");
    assert_int_equal(match(t, "/messages", res), 1);
    assert_int_equal(match(t, "/messages/modules/m/outputs/o", res), 1);
    assert_int_equal(match(t, "/twinChangeNotifications", res), 0);
    route_table_free(t);
}

static void test_table_priority_ttl(void **state)
{
    /* doc/Route_priority_and_TTL.md's example, plus a second endpoint and a condition. */
    static const char json[] =
        "{\"schemaVersion\":\"1.1.0\",\"routes\":{"
        "\"secCamAlerts\":{\"route\":\"FROM /messages/modules/SecCamMod/outputs/P0_Alerts INTO "
        "$upstream\",\"priority\":0,\"timeToLiveSecs\":86400},"
        "\"floorCamAlerts\":{\"route\":\"FROM /messages/modules/FloorCamMod/outputs/P0_Alerts INTO "
        "$upstream\",\"priority\":0,\"timeToLiveSecs\":86400},"
        "\"secCamData\":{\"route\":\"FROM /messages/modules/SecCamMod/outputs/P1_Data INTO "
        "$upstream\",\"priority\":1,\"timeToLiveSecs\":1800},"
        "\"upstream\":\"FROM /messages/* INTO $upstream\","
        "\"local\":{\"route\":\"FROM /messages/* WHERE level = 'high' INTO "
        "BrokeredEndpoint(\\\"/modules/alarm/inputs/in\\\")\",\"priority\":5},"
        "\"local2\":{\"route\":\"FROM /messages/modules/SecCamMod/* INTO "
        "BrokeredEndpoint(\\\"/modules/alarm/inputs/in\\\")\",\"priority\":5,"
        "\"timeToLiveSecs\":60}},"
        "\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":7200,"
        "\"storeLimits\":{\"maxSizeBytes\":1048576}}}";
    int rc;
    struct route_table *t = table_from(json, NULL, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(t->n_routes, 6);
    assert_int_equal(t->n_sinks, 2);
    assert_int_equal(t->max_size_bytes, 1048576);
    assert_int_equal(t->routes[3].priority, ROUTE_PRIORITY_DEFAULT);
    assert_int_equal(t->routes[3].ttl_secs, 0);
    struct route_match res[2];

    /* two routes into $upstream: the better priority wins, with its TTL */
    assert_int_equal(match(t, "/messages/modules/SecCamMod/outputs/P0_Alerts", res), 2);
    assert_string_equal(t->sinks[res[0].sink].id, "$upstream");
    assert_int_equal(res[0].priority, 0);
    assert_int_equal(res[0].ttl_secs, 86400);
    assert_string_equal(res[0].route, "secCamAlerts");
    assert_string_equal(res[1].route, "local2");
    assert_int_equal(res[1].ttl_secs, 60);
    assert_int_equal(match(t, "/messages/modules/SecCamMod/outputs/P1_Data", res), 2);
    assert_int_equal(res[0].priority, 1);
    assert_int_equal(res[0].ttl_secs, 1800);
    /* catch-all: default priority, global TTL */
    assert_int_equal(match(t, "/messages/modules/Other/outputs/x", res), 1);
    assert_int_equal(res[0].priority, ROUTE_PRIORITY_DEFAULT);
    assert_int_equal(res[0].ttl_secs, 7200);
    assert_string_equal(res[0].route, "upstream");

    /* the condition decides; a tie in priority goes to the route listed first */
    static const struct route_prop high[] = {{"level", "high"}};
    struct route_message m = {
        .source = "/messages/modules/SecCamMod/outputs/x", .app = high, .n_app = 1};
    assert_int_equal(route_table_match(t, &m, res), 2);
    assert_string_equal(res[1].route, "local");
    assert_int_equal(res[1].ttl_secs, 7200);
    m.source = "/messages/modules/Other/outputs/x";
    assert_int_equal(route_table_match(t, &m, res), 2);
    route_table_free(t);

    /* negative global TTL: forever; a route's own TTL still applies */
    t = table_from("{\"schemaVersion\":\"1.1\",\"routes\":{\"a\":{\"route\":\"FROM /* INTO "
                   "$upstream\",\"timeToLiveSecs\":0},\"b\":{\"route\":\"FROM /* INTO "
                   "BrokeredEndpoint('/modules/m/inputs/i')\",\"timeToLiveSecs\":10}},"
                   "\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":-1}}",
                   NULL, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(t->ttl_secs, ROUTE_TTL_FOREVER);
    assert_int_equal(match(t, "/messages", res), 2);
    assert_int_equal(res[0].ttl_secs, ROUTE_TTL_FOREVER);
    assert_int_equal(res[1].ttl_secs, 10);
    route_table_free(t);

    /* no storeAndForwardConfiguration, no routes */
    t = table_from("{\"schemaVersion\":\"1.3\"}", NULL, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(t->n_routes, 0);
    assert_int_equal(t->ttl_secs, ROUTE_DEFAULT_TTL_SECS);
    assert_int_equal(t->max_size_bytes, 0);
    assert_int_equal(match(t, "/messages", res), 0);
    route_table_free(t);

    /* schema 1.0 ignores blank routes, as IoT Edge does */
    t = table_from("{\"schemaVersion\":\"1.0\",\"routes\":{\"a\":\"  \",\"b\":\"FROM /* INTO "
                   "$upstream\"}}",
                   NULL, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(t->n_routes, 1);
    assert_string_equal(t->routes[0].name, "b");
    route_table_free(t);
}

static void test_table_errors(void **state)
{
    static const struct {
        const char *json;
        const char *errors; /* joined with " | " */
    } cases[] = {
        {"[]", "properties.desired: must be an object"},
        {"{\"routes\":{}}", "schemaVersion: missing"},
        {"{\"schemaVersion\":1.1}", "schemaVersion: must be a string"},
        {"{\"schemaVersion\":\"2.0\"}",
         "schemaVersion: unsupported version '2.0' (1.0 to 1.3 are supported)"},
        {"{\"schemaVersion\":\"1.4\"}",
         "schemaVersion: unsupported version '1.4' (1.0 to 1.3 are supported)"},
        {"{\"schemaVersion\":\"1\"}",
         "schemaVersion: unsupported version '1' (1.0 to 1.3 are supported)"},
        {"{\"schemaVersion\":\"1.1.0.0.0\"}",
         "schemaVersion: unsupported version '1.1.0.0.0' (1.0 to 1.3 are supported)"},
        {"{\"schemaVersion\":\"1.0\",\"routes\":[]}", "routes: must be an object"},
        {"{\"schemaVersion\":\"1.0\",\"routes\":{\"r1\":\"FROM /messages/* WHERE a = '1' "
         "$upstream\"}}",
         "routes.r1: column 32: expected INTO"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r1\":{\"route\":\"FROM /* WHERE lenght(a) = 1 "
         "INTO $upstream\"}}}",
         "routes.r1.route: column 15: unknown function 'lenght'"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r2\":{\"route\":\"FROM /* INTO $upstream\","
         "\"priority\":10}}}",
         "routes.r2.priority: must be an integer 0-9"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r2\":{\"route\":\"FROM /* INTO $upstream\","
         "\"priority\":\"1\"}}}",
         "routes.r2.priority: must be an integer 0-9"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r2\":{\"route\":\"FROM /* INTO $upstream\","
         "\"priority\":-1,\"timeToLiveSecs\":-5}}}",
         "routes.r2.priority: must be an integer 0-9 | "
         "routes.r2.timeToLiveSecs: must be an integer 0-4294967295"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r2\":{\"route\":\"FROM /* INTO $upstream\","
         "\"timeToLiveSecs\":4294967296}}}",
         "routes.r2.timeToLiveSecs: must be an integer 0-4294967295"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r3\":{\"priority\":1}}}",
         "routes.r3.route: missing"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r3\":{\"route\":5}}}",
         "routes.r3.route: must be a string"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r3\":{\"route\":\" \"}}}",
         "routes.r3.route: route is empty"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r3\":\"\"}}", "routes.r3: route is empty"},
        {"{\"schemaVersion\":\"1.1\",\"routes\":{\"r4\":true}}",
         "routes.r4: must be a string or an object {\"route\", \"priority\", \"timeToLiveSecs\"}"},
        {"{\"schemaVersion\":\"1.0\",\"routes\":{\"r4\":{\"route\":\"FROM /* INTO $upstream\"}}}",
         "routes.r4: must be a string (schemaVersion 1.0)"},
        {"{\"schemaVersion\":\"1.0\",\"routes\":{\"a.b\":\"FROM /* INTO $upstream\",\"$x\":\"FROM "
         "/* INTO $upstream\",\"a b\":\"FROM /* INTO $upstream\",\"#\":\"FROM /* INTO "
         "$upstream\",\"\":\"FROM /* INTO $upstream\"}}",
         "routes.a.b: route names must not be empty or contain '.', '$', '#' or spaces | "
         "routes.$x: route names must not be empty or contain '.', '$', '#' or spaces | "
         "routes.a b: route names must not be empty or contain '.', '$', '#' or spaces | "
         "routes.#: route names must not be empty or contain '.', '$', '#' or spaces | "
         "routes.: route names must not be empty or contain '.', '$', '#' or spaces"},
        {"{\"schemaVersion\":\"1.0\",\"routes\":{\"r\":\"FROM /* INTO $upstream\\u0000x\"}}",
         "routes.r: contains a NUL character"},
        {"{\"schemaVersion\":\"1.0\",\"storeAndForwardConfiguration\":5}",
         "storeAndForwardConfiguration: must be an object"},
        {"{\"schemaVersion\":\"1.0\",\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":\"7200\"}"
         "}",
         "storeAndForwardConfiguration.timeToLiveSecs: must be an integer (seconds; negative = "
         "forever)"},
        {"{\"schemaVersion\":\"1.0\",\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":"
         "3000000000}}",
         "storeAndForwardConfiguration.timeToLiveSecs: must be an integer (seconds; negative = "
         "forever)"},
        {"{\"schemaVersion\":\"1.0\",\"storeAndForwardConfiguration\":{\"storeLimits\":[]}}",
         "storeAndForwardConfiguration.storeLimits: must be an object"},
        {"{\"schemaVersion\":\"1.0\",\"storeAndForwardConfiguration\":{\"storeLimits\":{"
         "\"maxSizeBytes\":0}}}",
         "storeAndForwardConfiguration.storeLimits.maxSizeBytes: must be a positive integer"},
        {"{\"schemaVersion\":\"1.0\",\"storeAndForwardConfiguration\":{\"storeLimits\":{}}}",
         "storeAndForwardConfiguration.storeLimits.maxSizeBytes: must be a positive integer"},
        /* several problems are all reported */
        {"{\"schemaVersion\":\"9\",\"routes\":{\"ok\":\"FROM /* INTO $upstream\",\"bad\":\"FROM "
         "/* INTO nowhere\"},\"storeAndForwardConfiguration\":{\"timeToLiveSecs\":1.5}}",
         "schemaVersion: unsupported version '9' (1.0 to 1.3 are supported) | "
         "routes.bad: column 14: expected an endpoint: $upstream or "
         "BrokeredEndpoint(\"/modules/<module>/inputs/<input>\"), found 'nowhere' | "
         "storeAndForwardConfiguration.timeToLiveSecs: must be an integer (seconds; negative = "
         "forever)"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct lstrv errors = LSTRV_INIT;
        int rc;
        struct route_table *t = table_from(cases[i].json, &errors, &rc);
        assert_null(t);
        assert_int_equal(rc, -EINVAL);
        char *joined = lstrv_join(&errors, " | ");
        if (!joined || strcmp(joined, cases[i].errors) != 0)
            fail_msg("case %zu\n   got: %s\n  want: %s", i, joined, cases[i].errors);
        free(joined);
        lstrv_free(&errors);
        /* without an error list it still fails */
        t = table_from(cases[i].json, NULL, &rc);
        assert_null(t);
        assert_int_equal(rc, -EINVAL);
    }

    /* too many routes */
    struct lbuf b = LBUF_INIT;
    lbuf_puts(&b, "{\"schemaVersion\":\"1.0\",\"routes\":{");
    for (int i = 0; i <= ROUTE_TABLE_MAX_ROUTES; i++)
        lbuf_printf(&b, "%s\"r%d\":\"FROM /* INTO $upstream\"", i ? "," : "", i);
    lbuf_puts(&b, "}}");
    struct lstrv errors = LSTRV_INIT;
    int rc;
    assert_null(table_from(b.data, &errors, &rc));
    assert_int_equal(rc, -EINVAL);
    assert_int_equal(errors.n, 1);
    assert_string_equal(errors.v[0], "routes: more than 1000 routes");
    lstrv_free(&errors);
    lbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iotedge_conditions),
        cmocka_unit_test(test_iotedge_compile_failures),
        cmocka_unit_test(test_lexer_quirks),
        cmocka_unit_test(test_arithmetic),
        cmocka_unit_test(test_concat_operator),
        cmocka_unit_test(test_comparisons),
        cmocka_unit_test(test_logic),
        cmocka_unit_test(test_coalesce),
        cmocka_unit_test(test_functions),
        cmocka_unit_test(test_properties),
        cmocka_unit_test(test_body_queries),
        cmocka_unit_test(test_content_type_rule),
        cmocka_unit_test(test_body_parsed_once),
        cmocka_unit_test(test_twin_change_includes),
        cmocka_unit_test(test_source_matching),
        cmocka_unit_test(test_sinks),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_fixture_routes),
        cmocka_unit_test(test_table_priority_ttl),
        cmocka_unit_test(test_table_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
