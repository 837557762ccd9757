/* test-dashboard.c — the dashboard's token store (hash at rest, expiry, revocation, the cap) and
 * its sessions, cookies, CSRF and Origin checks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "dashboard/fleet.h"
#include "dashboard/samples.h"
#include "dashboard/session.h"
#include "dashboard/tokens.h"

static char dir[] = "/tmp/test-dashboard-XXXXXX";

static char *store_path(void)
{
    static char p[256];
    snprintf(p, sizeof(p), "%s/tokens.json", dir);
    return p;
}

static void test_issue_verify_hashed(void **state)
{
    unlink(store_path());
    struct dash_tokens *t;
    assert_int_equal(dash_tokens_open(store_path(), &t), 0);
    char *tok, id[DASH_TOKEN_ID_LEN + 1], id2[DASH_TOKEN_ID_LEN + 1];
    int64_t exp;
    assert_int_equal(dash_tokens_issue(t, 1000, 60000, &tok, id, &exp), 0);
    assert_int_equal(exp, 61000);
    assert_true(strncmp(tok, DASH_TOKEN_PREFIX, strlen(DASH_TOKEN_PREFIX)) == 0);
    assert_int_equal(dash_tokens_verify(t, tok, 2000, id2, NULL), 0);
    assert_string_equal(id, id2);
    /* at rest: the hash, never the token */
    char *text;
    assert_int_equal(lfs_read_file(store_path(), 65536, &text, NULL), 0);
    assert_null(strstr(text, tok + strlen(DASH_TOKEN_PREFIX) + DASH_TOKEN_ID_LEN + 1));
    assert_non_null(strstr(text, "sha256"));
    free(text);
    /* a reload knows it */
    dash_tokens_free(t);
    assert_int_equal(dash_tokens_open(store_path(), &t), 0);
    assert_int_equal(dash_tokens_verify(t, tok, 2000, id2, NULL), 0);
    /* a wrong secret with the right id, garbage, NULL */
    char *bad = strdup(tok);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'a' ? 'b' : 'a';
    assert_int_equal(dash_tokens_verify(t, bad, 2000, id2, NULL), -EACCES);
    assert_int_equal(dash_tokens_verify(t, "ldt_x", 2000, id2, NULL), -EACCES);
    assert_int_equal(dash_tokens_verify(t, NULL, 2000, id2, NULL), -EACCES);
    free(bad);
    free(tok);
    dash_tokens_free(t);
}

static void test_expiry_and_revoke(void **state)
{
    unlink(store_path());
    struct dash_tokens *t;
    assert_int_equal(dash_tokens_open(store_path(), &t), 0);
    char *a, *b, ida[DASH_TOKEN_ID_LEN + 1], idb[DASH_TOKEN_ID_LEN + 1], id[DASH_TOKEN_ID_LEN + 1];
    assert_int_equal(dash_tokens_issue(t, 0, 1000, &a, ida, NULL), 0);
    assert_int_equal(dash_tokens_issue(t, 0, 5000, &b, idb, NULL), 0);
    assert_int_equal(dash_tokens_verify(t, a, 999, id, NULL), 0);
    assert_int_equal(dash_tokens_verify(t, a, 1000, id, NULL), -EACCES); /* expired */
    assert_int_equal(dash_tokens_revoke(t, idb), 1);
    assert_int_equal(dash_tokens_verify(t, b, 10, id, NULL), -EACCES);
    assert_int_equal(dash_tokens_revoke(t, idb), -ENOENT);
    json_t *list = dash_tokens_json(t, 10);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    assert_int_equal(dash_tokens_revoke(t, NULL), 1);
    assert_int_equal(dash_tokens_verify(t, a, 10, id, NULL), -EACCES);
    assert_int_equal(dash_tokens_issue(t, 0, 0, &a, ida, NULL) == 0 ? 0 : -1, -1); /* ttl 0 */
    free(a);
    free(b);
    dash_tokens_free(t);
}

static void test_cap_drops_oldest(void **state)
{
    unlink(store_path());
    struct dash_tokens *t;
    assert_int_equal(dash_tokens_open(store_path(), &t), 0);
    char *first, *tok, id[DASH_TOKEN_ID_LEN + 1];
    assert_int_equal(dash_tokens_issue(t, 0, 100000, &first, id, NULL), 0);
    for (int i = 1; i <= DASH_TOKENS_MAX; i++) {
        assert_int_equal(dash_tokens_issue(t, i, 100000, &tok, id, NULL), 0);
        free(tok);
    }
    assert_int_equal(dash_tokens_verify(t, first, 50, id, NULL), -EACCES);
    free(first);
    dash_tokens_free(t);
}

static void test_damaged_store(void **state)
{
    lfs_write_atomic(store_path(), "{nope", 5, 0600);
    struct dash_tokens *t = NULL;
    assert_int_equal(dash_tokens_open(store_path(), &t), -EINVAL);
    unlink(store_path());
}

static void test_sessions(void **state)
{
    static struct dash_sessions s;
    dash_sessions_init(&s, 1000);
    struct dash_session *e = dash_session_create(&s, "aaaaaaaa", 10000, 0);
    assert_non_null(e);
    char id[DASH_SECRET_HEX + 1], csrf[DASH_SECRET_HEX + 1];
    memcpy(id, e->id, sizeof(id));
    memcpy(csrf, e->csrf, sizeof(csrf));
    assert_string_not_equal(id, csrf);
    char cookie[200];
    snprintf(cookie, sizeof(cookie), "theme=dark; " DASH_COOKIE "=%s; x=y", id);
    e = dash_session_find(&s, cookie, 500);
    assert_non_null(e);
    assert_true(dash_csrf_ok(e, csrf));
    assert_false(dash_csrf_ok(e, NULL));
    assert_false(dash_csrf_ok(e, "abc"));
    char other[DASH_SECRET_HEX + 1];
    memcpy(other, csrf, sizeof(other));
    other[0] = other[0] == '0' ? '1' : '0';
    assert_false(dash_csrf_ok(e, other));
    /* idle timeout, counted from the last request */
    assert_non_null(dash_session_find(&s, cookie, 1400));
    assert_null(dash_session_find(&s, cookie, 2500));
    /* a session ends with its token's expiry and with its revocation */
    e = dash_session_create(&s, "bbbbbbbb", 3000, 2500);
    snprintf(cookie, sizeof(cookie), DASH_COOKIE "=%s", e->id);
    assert_non_null(dash_session_find(&s, cookie, 2900));
    assert_null(dash_session_find(&s, cookie, 3000));
    e = dash_session_create(&s, "bbbbbbbb", 9000, 3000);
    snprintf(cookie, sizeof(cookie), DASH_COOKIE "=%s", e->id);
    assert_int_equal(dash_sessions_revoke(&s, "cccccccc"), 0);
    assert_int_equal(dash_sessions_revoke(&s, "bbbbbbbb"), 1);
    assert_null(dash_session_find(&s, cookie, 3001));
    /* unknown, malformed */
    assert_null(dash_session_find(&s, NULL, 0));
    assert_null(dash_session_find(&s, DASH_COOKIE "=", 0));
    assert_null(dash_session_find(&s, DASH_COOKIE "=zz", 0));
}

static void test_session_cap(void **state)
{
    static struct dash_sessions s;
    dash_sessions_init(&s, 0);
    for (int i = 0; i < DASH_SESSIONS_MAX + 5; i++)
        assert_non_null(dash_session_create(&s, "aaaaaaaa", 1000000, i));
    assert_int_equal(s.n, DASH_SESSIONS_MAX);
}

static void test_cookie_parse_format(void **state)
{
    char buf[16];
    assert_int_equal(dash_cookie_get("a=1; b=2", "b", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "2");
    assert_int_equal(dash_cookie_get("ab=1; a=\"q\"", "a", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "q");
    assert_int_equal(dash_cookie_get("xa=1", "a", buf, sizeof(buf)), -ENOENT);
    assert_int_equal(dash_cookie_get("a", "a", buf, sizeof(buf)), -ENOENT);
    assert_int_equal(dash_cookie_get("a=0123456789abcdefgh", "a", buf, sizeof(buf)), -E2BIG);
    assert_int_equal(dash_cookie_get(NULL, "a", buf, sizeof(buf)), -ENOENT);
    char c[200];
    dash_cookie_format(c, sizeof(c), "v", 60, false);
    assert_string_equal(c, DASH_COOKIE "=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60");
    dash_cookie_format(c, sizeof(c), "v", 0, true);
    assert_string_equal(c, DASH_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure");
}

static void test_origin(void **state)
{
    assert_true(dash_origin_ok("http://127.0.0.1:8484", "127.0.0.1:8484", false));
    assert_true(dash_origin_ok("https://gw.local:8484", "GW.local:8484", true));
    assert_false(dash_origin_ok("https://127.0.0.1:8484", "127.0.0.1:8484", false));
    assert_false(dash_origin_ok("http://evil.example", "127.0.0.1:8484", false));
    assert_false(dash_origin_ok("http://127.0.0.1:8484.evil", "127.0.0.1:8484", false));
    assert_false(dash_origin_ok("null", "127.0.0.1:8484", false));
    assert_false(dash_origin_ok(NULL, "127.0.0.1:8484", false));
    assert_false(dash_origin_ok("http://127.0.0.1:8484", NULL, false));
    assert_true(dash_method_changes("POST"));
    assert_true(dash_method_changes("DELETE"));
    assert_false(dash_method_changes("GET"));
}

static double value_at(json_t *j, const char *name, size_t i)
{
    json_t *v = json_array_get(
        json_object_get(json_object_get(json_object_get(j, "series"), name), "values"), i);
    assert_non_null(v);
    return json_is_null(v) ? -1 : json_number_value(v);
}

/* The charts' ring: bounded, gauges as they are, counters as rates, gaps, restarts, the clock
 * going back, names beyond the limit dropped and stale ones reused. */
static void test_samples(void **state)
{
    (void)state;
    struct dash_samples *s;
    assert_int_equal(dash_samples_new(0, &s), -EINVAL);
    assert_int_equal(dash_samples_new(3, &s), 0);
    assert_int_equal(dash_samples_put(s, "x", DASH_SERIES_GAUGE, 1), -EINVAL); /* not begun */
    for (int i = 0; i < 5; i++) {
        dash_samples_begin(s, 10000 * (i + 1));
        assert_int_equal(dash_samples_put(s, "depth", DASH_SERIES_GAUGE, i), 0);
        assert_int_equal(dash_samples_put(s, "msgs", DASH_SERIES_COUNTER, 100.0 * i), 0);
        if (i != 3)
            assert_int_equal(dash_samples_put(s, "mem.a", DASH_SERIES_GAUGE, 5), 0);
    }
    assert_int_equal(dash_samples_count(s), 3);
    json_t *j = dash_samples_json(s, NULL);
    json_t *times = json_object_get(j, "times");
    assert_int_equal(json_array_size(times), 3);
    assert_int_equal(json_integer_value(json_array_get(times, 0)), 30000); /* oldest first */
    assert_int_equal(json_integer_value(json_array_get(times, 2)), 50000);
    assert_true(value_at(j, "depth", 0) == 2 && value_at(j, "depth", 2) == 4);
    assert_true(value_at(j, "msgs", 0) == -1); /* no sample before */
    assert_true(value_at(j, "msgs", 1) == 10 && value_at(j, "msgs", 2) == 10); /* 100 per 10 s */
    assert_true(value_at(j, "mem.a", 1) == -1);                                /* the gap */
    assert_string_equal(ljson_str(json_object_get(json_object_get(j, "series"), "msgs"), "kind"),
                        "counter");
    json_decref(j);
    j = dash_samples_json(s, "mem.");
    assert_int_equal(json_object_size(json_object_get(j, "series")), 1);
    json_decref(j);

    /* a counter that went down (the hub restarted): no rate there */
    dash_samples_begin(s, 60000);
    dash_samples_put(s, "msgs", DASH_SERIES_COUNTER, 3);
    j = dash_samples_json(s, "msgs");
    assert_true(value_at(j, "msgs", 2) == -1);
    json_decref(j);

    /* the clock went back: the ring starts again */
    dash_samples_begin(s, 1000);
    assert_int_equal(dash_samples_count(s), 1);
    dash_samples_put(s, "depth", DASH_SERIES_GAUGE, 7);
    j = dash_samples_json(s, NULL);
    assert_int_equal(json_object_size(json_object_get(j, "series")), 1);
    json_decref(j);

    /* names beyond the limit are dropped; once one's values left the ring, its slot is reused */
    char name[32];
    for (int i = 0; i < DASH_SAMPLES_MAX_SERIES - 1; i++) {
        snprintf(name, sizeof(name), "m%d", i);
        assert_int_equal(dash_samples_put(s, name, DASH_SERIES_GAUGE, i), 0);
    }
    assert_int_equal(dash_samples_put(s, "one-too-many", DASH_SERIES_GAUGE, 1), -ENOSPC);
    char longname[DASH_SAMPLES_NAME_MAX + 2];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    assert_int_equal(dash_samples_put(s, longname, DASH_SERIES_GAUGE, 1), -EINVAL);
    for (int i = 0; i < 3; i++) {
        dash_samples_begin(s, 2000 + i * 1000);
        dash_samples_put(s, "depth", DASH_SERIES_GAUGE, i);
    }
    assert_int_equal(dash_samples_put(s, "new", DASH_SERIES_GAUGE, 1), 0);
    j = dash_samples_json(s, NULL);
    assert_int_equal(json_object_size(json_object_get(j, "series")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "dropped")), 1);
    json_decref(j);
    dash_samples_free(s);
    dash_samples_free(NULL);
}

static json_t *J(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    return j;
}

/* The fleet page's line of a device: its answers summarised, its unreachability explained. */
static void test_fleet(void **state)
{
    (void)state;
    char buf[64];
    assert_null(dash_fleet_reason(0, 200, buf, sizeof(buf)));
    assert_string_equal(dash_fleet_reason(-EKEYREJECTED, 0, buf, sizeof(buf)), "key changed");
    assert_string_equal(dash_fleet_reason(-ECONNREFUSED, 0, buf, sizeof(buf)), "refused");
    assert_string_equal(dash_fleet_reason(-ETIMEDOUT, 0, buf, sizeof(buf)), "timeout");
    assert_string_equal(dash_fleet_reason(0, 401, buf, sizeof(buf)), "token refused");
    assert_string_equal(dash_fleet_reason(0, 503, buf, sizeof(buf)), "answered 503");

    json_t *si = J("{\"deviceId\": \"d1\", \"version\": \"1.2\"}");
    json_t *mods = J("{\"modules\": [{\"name\": \"a\", \"runtimeStatus\": \"running\", \"status\": "
                     "\"running\"}, {\"name\": \"b\", \"runtimeStatus\": \"backoff\", \"status\": "
                     "\"running\"}, {\"name\": \"c\", \"runtimeStatus\": \"stopped\", \"status\": "
                     "\"stopped\"}, {\"name\": \"old\", \"runtimeStatus\": \"failed\", \"status\": "
                     "\"removed\"}, {\"runtimeStatus\": \"running\"}]}");
    json_t *deps = J("{\"current\": 4, \"inProgress\": null, \"deployments\": [{\"id\": 5, "
                     "\"outcome\": \"failed\"}, {\"id\": 4, \"kind\": \"rollback\", \"outcome\": "
                     "\"applied\"}]}");
    json_t *hub = J("{\"upstream\": {\"enabled\": true, \"connected\": false, \"host\": \"h.net\", "
                    "\"lastError\": \"refused\"}}");
    json_t *vms = J("{\"vms\": [{\"name\": \"f1\", \"state\": \"running\", \"arch\": \"amd64\"}, "
                    "{\"name\": \"f2\"}, {\"state\": \"running\"}]}");
    struct dash_fleet_answers a = {.systeminfo = si,
                                   .modules = mods,
                                   .deployments = deps,
                                   .hub = hub,
                                   .vms = vms,
                                   .status = 200};
    json_t *o = dash_fleet_device(&a);
    assert_true(json_is_true(json_object_get(o, "reachable")));
    assert_null(json_object_get(o, "reason"));
    assert_string_equal(ljson_str(o, "deviceId"), "d1");
    assert_string_equal(ljson_str(o, "version"), "1.2");
    json_t *m = json_object_get(o, "modules");
    assert_int_equal(json_integer_value(json_object_get(m, "running")), 1);
    assert_int_equal(json_integer_value(json_object_get(m, "total")), 3);
    json_t *failed = json_object_get(m, "failed");
    assert_int_equal(json_array_size(failed), 1);
    assert_string_equal(ljson_str(json_array_get(failed, 0), "name"), "b");
    assert_string_equal(ljson_str(json_array_get(failed, 0), "status"), "backoff");
    json_t *d = json_object_get(o, "deployment");
    assert_int_equal(json_integer_value(json_object_get(d, "id")), 4);
    assert_string_equal(ljson_str(d, "outcome"), "applied");
    assert_string_equal(ljson_str(d, "kind"), "rollback");
    json_t *h = json_object_get(o, "hub");
    assert_string_equal(ljson_str(h, "state"), "disconnected");
    assert_string_equal(ljson_str(h, "host"), "h.net");
    assert_string_equal(ljson_str(h, "error"), "refused");
    json_t *v = json_object_get(o, "vms");
    assert_int_equal(json_array_size(v), 2);
    assert_string_equal(ljson_str(json_array_get(v, 1), "name"), "f2");
    assert_string_equal(ljson_str(json_array_get(v, 1), "state"), "?");
    json_decref(o);

    /* the hub and the VMs unavailable: said, the rest still there */
    a.hub = NULL;
    a.hub_error = "the hub is not running";
    a.vms = NULL;
    a.vms_error = "answered 500";
    o = dash_fleet_device(&a);
    assert_string_equal(ljson_str(json_object_get(o, "hub"), "state"), "unavailable");
    assert_string_equal(ljson_str(json_object_get(o, "hub"), "error"), "the hub is not running");
    assert_true(json_is_null(json_object_get(o, "vms")));
    assert_string_equal(ljson_str(o, "vmsError"), "answered 500");
    json_decref(o);

    /* an upstream link that is off; a device that is not reachable */
    json_t *off = J("{\"upstream\": {\"enabled\": false}}");
    a.hub = off;
    o = dash_fleet_device(&a);
    assert_string_equal(ljson_str(json_object_get(o, "hub"), "state"), "off");
    json_decref(o);
    a.result = -EKEYREJECTED;
    a.status = 0;
    o = dash_fleet_device(&a);
    assert_false(json_is_true(json_object_get(o, "reachable")));
    assert_string_equal(ljson_str(o, "reason"), "key changed");
    assert_null(json_object_get(o, "modules"));
    json_decref(o);

    /* answers of the wrong shape: nothing invented */
    json_t *junk = J("{\"modules\": 3, \"vms\": {}, \"upstream\": [], \"current\": \"x\"}");
    struct dash_fleet_answers b = {.systeminfo = junk,
                                   .modules = junk,
                                   .deployments = junk,
                                   .hub = junk,
                                   .vms = junk,
                                   .status = 200};
    o = dash_fleet_device(&b);
    assert_true(json_is_null(json_object_get(o, "modules")));
    assert_true(json_is_null(json_object_get(json_object_get(o, "deployment"), "id")));
    assert_string_equal(ljson_str(json_object_get(o, "hub"), "state"), "unavailable");
    json_decref(o);
    b.systeminfo = NULL;
    o = dash_fleet_device(&b);
    assert_string_equal(ljson_str(o, "reason"), "not like a ledge dashboard");
    json_decref(o);
    json_decref(junk);
    json_decref(off);
    json_decref(si);
    json_decref(mods);
    json_decref(deps);
    json_decref(hub);
    json_decref(vms);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_verify_hashed),
        cmocka_unit_test(test_expiry_and_revoke),
        cmocka_unit_test(test_cap_drops_oldest),
        cmocka_unit_test(test_damaged_store),
        cmocka_unit_test(test_sessions),
        cmocka_unit_test(test_session_cap),
        cmocka_unit_test(test_cookie_parse_format),
        cmocka_unit_test(test_origin),
        cmocka_unit_test(test_samples),
        cmocka_unit_test(test_fleet),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(store_path());
    rmdir(dir);
    return r;
}
