/* test-update.c — unit tests for the update journal: its JSON form both ways, what its parser
 * refuses, durable saves, what resuming does from each step, the lock that tells ledged whether
 * an updater is at work, and resuming a journal that never installed anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/str.h"
#include "update/journal.h"
#include "update/update.h"

static struct upd_journal sample(void)
{
    struct upd_journal j = {
        .id = strdup("1765000000000-42"),
        .step = UPD_INSTALLING,
        .from_version = strdup("0.1.0-1"),
        .from_deb = strdup("/var/lib/ledge/updates/ledge_0.1.0-1_amd64.deb"),
        .to_version = strdup("0.1.0-2"),
        .to_deb = strdup("/var/lib/ledge/updates/ledge_0.1.0-2_amd64.deb"),
        .started_ms = 1765000000000,
        .updated_ms = 1765000000500,
        .baseline =
            json_pack("{s:I, s:{s:{s:s, s:b}}, s:[s]}", "ledgedPid", (json_int_t)1234, "modules",
                      "one", "containerId", "abc", "running", 1, "checkErrors", "engine"),
    };
    return j;
}

static void test_roundtrip(void **state)
{
    for (int s = UPD_PREPARED; s <= UPD_STEP_MAX; s++) {
        struct upd_journal j = sample();
        j.step = (enum upd_step)s;
        if (s == UPD_ROLLED_BACK)
            j.reason = strdup("ledged exited at start");
        char *text = upd_journal_format(&j);
        assert_non_null(text);
        struct upd_journal k = {0};
        struct lerr e = {0};
        assert_int_equal(upd_journal_parse(text, strlen(text), &k, &e), 0);
        assert_int_equal(k.step, s);
        assert_string_equal(k.id, j.id);
        assert_string_equal(k.from_version, "0.1.0-1");
        assert_string_equal(k.to_deb, j.to_deb);
        assert_int_equal(k.started_ms, j.started_ms);
        assert_true(json_equal(k.baseline, j.baseline));
        if (s == UPD_ROLLED_BACK)
            assert_string_equal(k.reason, "ledged exited at start");
        else
            assert_null(k.reason);
        assert_string_equal(upd_step_name(k.step), upd_step_name(j.step));
        free(text);
        upd_journal_clear(&j);
        upd_journal_clear(&k);
    }
}

static void refused(const char *text, const char *want)
{
    struct upd_journal j = {0};
    struct lerr e = {0};
    assert_true(upd_journal_parse(text, strlen(text), &j, &e) < 0);
    if (!strstr(e.msg, want))
        fail_msg("\"%s\": message \"%s\" lacks \"%s\"", text, e.msg, want);
    assert_null(j.id);
}

static void test_refusals(void **state)
{
    refused("", "update journal");
    refused("[]", "must be a JSON object");
    refused("{\"id\": \"x\"}", "step: missing");
    refused("{\"step\": \"exploded\"}", "\"exploded\" is no step");
    const char *ok_head = "{\"step\": \"prepared\", \"id\": \"x\", \"fromVersion\": \"1\", "
                          "\"fromDeb\": \"/a.deb\", \"toVersion\": \"2\", \"toDeb\": \"/b.deb\", ";
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s\"startedMs\": 1, \"updatedMs\": 2}", ok_head);
    refused(buf, "baseline: must be an object");
    snprintf(buf, sizeof(buf), "%s\"startedMs\": -1, \"updatedMs\": 2, \"baseline\": {}}", ok_head);
    refused(buf, "startedMs: must be a non-negative integer");
    snprintf(buf, sizeof(buf),
             "%s\"startedMs\": 1, \"updatedMs\": 2, \"baseline\": {}, "
             "\"reason\": 3}",
             ok_head);
    refused(buf, "reason: must be a non-empty string");
    refused("{\"step\": \"done\", \"id\": \"x\", \"fromVersion\": \"1\"}", "fromDeb: missing");
    snprintf(buf, sizeof(buf), "%s\"startedMs\": 1, \"updatedMs\": 2, \"baseline\": {}}", ok_head);
    struct upd_journal j = {0};
    assert_int_equal(upd_journal_parse(buf, strlen(buf), &j, NULL), 0);
    assert_int_equal(j.step, UPD_PREPARED);
    upd_journal_clear(&j);
}

static void test_resume_actions(void **state)
{
    assert_int_equal(upd_resume_action(UPD_PREPARED), UPD_RESUME_ABANDON);
    for (int s = UPD_INSTALLING; s <= UPD_CHECKING; s++)
        assert_int_equal(upd_resume_action((enum upd_step)s), UPD_RESUME_ROLLBACK);
    assert_int_equal(upd_resume_action(UPD_ROLLING_BACK), UPD_RESUME_ROLLBACK);
    assert_int_equal(upd_resume_action(UPD_DONE), UPD_RESUME_NOTHING);
    assert_int_equal(upd_resume_action(UPD_ROLLED_BACK), UPD_RESUME_NOTHING);
    assert_false(upd_step_unfinished(UPD_DONE));
    assert_false(upd_step_unfinished(UPD_ROLLED_BACK));
    assert_true(upd_step_unfinished(UPD_CHECKING));
    enum upd_step s;
    assert_int_equal(upd_step_parse("rolling-back", &s), 0);
    assert_int_equal(s, UPD_ROLLING_BACK);
    assert_int_equal(upd_step_parse("Rolling-Back", &s), -EINVAL);
}

struct dirs {
    char state[64];
    char updates[128];
    char journal[160];
};

static int setup_dirs(void **state)
{
    struct dirs *d = calloc(1, sizeof(*d));
    strcpy(d->state, "/tmp/test-update-XXXXXX");
    assert_non_null(mkdtemp(d->state));
    upd_dir(d->state, d->updates, sizeof(d->updates));
    upd_journal_path(d->state, d->journal, sizeof(d->journal));
    assert_int_equal(lfs_mkdir_p(d->updates, 0700), 0);
    *state = d;
    return 0;
}

static int teardown_dirs(void **state)
{
    struct dirs *d = *state;
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d->state);
    assert_int_equal(system(cmd), 0);
    free(d);
    return 0;
}

static void test_save_load(void **state)
{
    struct dirs *d = *state;
    struct upd_journal j = sample();
    struct upd_journal k = {0};
    assert_int_equal(upd_journal_load(d->journal, &k, NULL), -ENOENT);
    assert_int_equal(upd_journal_save(d->journal, &j, UPD_CHECKING), 0);
    assert_int_equal(j.step, UPD_CHECKING);
    struct stat st;
    assert_int_equal(stat(d->journal, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char tmp[200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", d->journal);
    assert_int_equal(access(tmp, F_OK), -1);
    /* a write cut short leaves its temp file, never a torn journal */
    assert_int_equal(lfs_write_atomic(d->journal, "{\"step\": \"rol", 13, 0600), 0);
    assert_int_equal(upd_journal_save(d->journal, &j, UPD_ROLLING_BACK), 0);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"st", 4), 4);
    close(fd);
    struct lerr e = {0};
    assert_int_equal(upd_journal_load(d->journal, &k, &e), 0);
    assert_int_equal(k.step, UPD_ROLLING_BACK);
    upd_journal_clear(&k);
    /* a damaged journal names its file */
    assert_int_equal(lfs_write_atomic(d->journal, "{\"step\": 7}", 11, 0600), 0);
    assert_true(upd_journal_load(d->journal, &k, &e) < 0);
    assert_non_null(strstr(e.msg, d->journal));
    upd_journal_clear(&j);
}

static void test_resume_needed_and_lock(void **state)
{
    struct dirs *d = *state;
    assert_false(upd_resume_needed(d->state));
    struct upd_journal j = sample();
    assert_int_equal(upd_journal_save(d->journal, &j, UPD_RESTARTING), 0);
    assert_true(upd_resume_needed(d->state));
    /* an updater at work holds the lock: ledged leaves the journal to it */
    char lock[200];
    snprintf(lock, sizeof(lock), "%s/lock", d->updates);
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    assert_false(upd_resume_needed(d->state));
    struct upd_options o = {.state_dir = d->state, .mgmt_socket = "/nonexistent"};
    const char *what = NULL;
    struct lerr e = {0};
    assert_int_equal(upd_resume(&o, &what, &e), -EBUSY);
    assert_non_null(strstr(e.msg, "another `ledge update` is running"));
    close(fd);
    assert_true(upd_resume_needed(d->state));
    assert_int_equal(upd_journal_save(d->journal, &j, UPD_DONE), 0);
    assert_false(upd_resume_needed(d->state));
    upd_journal_clear(&j);
}

static void say(void *ud, const char *line)
{
    lstrv_push(ud, line);
}

static void test_resume_prepared_abandons(void **state)
{
    struct dirs *d = *state;
    struct upd_journal j = sample();
    assert_int_equal(upd_journal_save(d->journal, &j, UPD_PREPARED), 0);
    struct lstrv said = LSTRV_INIT;
    struct upd_options o = {
        .state_dir = d->state, .mgmt_socket = "/nonexistent", .say = say, .ud = &said};
    const char *what = NULL;
    struct lerr e = {0};
    assert_int_equal(upd_resume(&o, &what, &e), 0);
    assert_string_equal(what, "abandoned");
    assert_int_equal(said.n, 1);
    assert_non_null(strstr(said.v[0], "ledge 0.1.0-1 stays"));
    struct upd_journal k = {0};
    assert_int_equal(upd_journal_load(d->journal, &k, NULL), 0);
    assert_int_equal(k.step, UPD_ROLLED_BACK);
    assert_string_equal(k.reason, "interrupted before anything was installed");
    /* and once finished there is nothing more to do */
    assert_int_equal(upd_resume(&o, &what, &e), 0);
    assert_string_equal(what, "nothing");
    upd_journal_clear(&k);
    upd_journal_clear(&j);
    lstrv_free(&said);
}

static void test_spawn_detached(void **state)
{
    struct dirs *d = *state;
    char log[200];
    snprintf(log, sizeof(log), "%s/spawned.log", d->state);
    /* the 6th field of /proc/PID/stat is the session */
    char *argv[] = {"/bin/sh", "-c", "echo \"$$ $(cut -d' ' -f6 /proc/$$/stat)\"", NULL};
    int pid = upd_spawn_detached(argv, log);
    assert_true(pid > 0);
    for (int i = 0; i < 500; i++) {
        char *text = NULL;
        if (lfs_read_file(log, 4096, &text, NULL) == 0 && strchr(text, '\n')) {
            int who = 0, sid = 0;
            assert_int_equal(sscanf(text, "%d %d", &who, &sid), 2);
            free(text);
            /* the grandchild, in the session its parent made (and left): a signal to our group
             * or session misses it, and it can never take a controlling terminal */
            assert_int_equal(who, pid);
            assert_int_not_equal(sid, getsid(0));
            assert_int_not_equal(sid, pid);
            return;
        }
        free(text);
        usleep(10000);
    }
    fail_msg("the detached program wrote nothing to %s", log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_resume_actions),
        cmocka_unit_test_setup_teardown(test_save_load, setup_dirs, teardown_dirs),
        cmocka_unit_test_setup_teardown(test_resume_needed_and_lock, setup_dirs, teardown_dirs),
        cmocka_unit_test_setup_teardown(test_resume_prepared_abandons, setup_dirs, teardown_dirs),
        cmocka_unit_test_setup_teardown(test_spawn_detached, setup_dirs, teardown_dirs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
