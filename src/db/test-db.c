/* test-db.c — unit tests of ldb_open(): a new database is WAL and 0600, an old 0644 one is made
 * 0600, and damaged files (garbage, truncated, an empty file, a page destroyed in the middle,
 * with rows still in the WAL, a header that makes the file read-only) are moved aside and what
 * can be read comes back; a locked file, a directory or a symbolic link are errors, not damage. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "db/db.h"

#define PJ(buf, ...) assert_true(snprintf(buf, sizeof(buf), __VA_ARGS__) < (int)sizeof(buf))
#define NROWS 2000

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS added_later (x INTEGER);";

static const struct ldb_options opts = {.schema = schema, .synchronous = LDB_SYNC_FULL};

struct ctx {
    char dir[PATH_MAX];
    char path[PATH_MAX];
};

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    PJ(c->dir, "/tmp/ledge-test-db-XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    PJ(c->path, "%s/state.db", c->dir);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    nftw(c->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(c);
    return 0;
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
}

static int64_t count(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* An old-style database written without ldb: items 1..NROWS (~200 bytes each, ~100 leaf
 * pages), 3 kv rows, an extra column ldb's schema does not have, no added_later table. All in
 * the main file (checkpointed). */
static void make_old_db(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    exec_ok(db, "PRAGMA journal_mode=WAL;"
                "CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL, extra TEXT);"
                "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;"
                "INSERT INTO kv VALUES ('a', '1'), ('b', '2'), ('c', '3');"
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
                "INSERT INTO items SELECT i, printf('%0200d', i), 'x' FROM n;"
                "PRAGMA wal_checkpoint(TRUNCATE);");
    sqlite3_close(db);
}

static void write_at(const char *path, off_t off, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, n, off), (ssize_t)n);
    close(fd);
}

static mode_t file_mode(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* The one "<name>.damaged-*" file (not -wal/-shm) in dir, or "" */
static void find_damaged(const char *dir, char *out, size_t size)
{
    out[0] = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (strstr(de->d_name, ".damaged-") &&
            !(len > 4 &&
              (!strcmp(de->d_name + len - 4, "-wal") || !strcmp(de->d_name + len - 4, "-shm")))) {
            assert_true(snprintf(out, size, "%s/%s", dir, de->d_name) < (int)size);
            n++;
        }
    }
    closedir(d);
    assert_true(n <= 1);
}

static const struct ldb_table_report *table(const struct ldb_report *rep, const char *name)
{
    const struct ldb_table_report *t = ldb_report_table(rep, name);
    if (!t)
        fail_msg("no table %s in the report", name);
    return t;
}

static void test_new_database(void **state)
{
    struct ctx *c = *state;
    sqlite3 *db = NULL;
    struct ldb_report rep;
    struct lerr err = {0};
    assert_int_equal(ldb_open(c->path, &opts, &db, &rep, &err), 0);
    assert_true(rep.created);
    assert_false(rep.damaged);
    assert_int_equal(file_mode(c->path), 0600);
    exec_ok(db, "INSERT INTO items VALUES (1, 'one')");
    char wal[PATH_MAX], shm[PATH_MAX];
    PJ(wal, "%s-wal", c->path);
    PJ(shm, "%s-shm", c->path);
    assert_int_equal(file_mode(wal), 0600);
    assert_int_equal(file_mode(shm), 0600);
    assert_int_equal(count(db, "PRAGMA synchronous"), 2);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal(sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    json_t *j = ldb_report_json(&rep);
    assert_false(json_is_true(json_object_get(j, "damaged")));
    json_decref(j);
    ldb_report_clear(&rep);

    /* Reopened: not created, not damaged, the row is there. */
    assert_int_equal(ldb_open(c->path, &opts, &db, &rep, &err), 0);
    assert_false(rep.created);
    assert_false(rep.damaged);
    assert_int_equal(count(db, "SELECT count(*) FROM items"), 1);
    sqlite3_close(db);
    ldb_report_clear(&rep);

    struct ldb_options normal = {.schema = schema, .synchronous = LDB_SYNC_NORMAL};
    assert_int_equal(ldb_open(c->path, &normal, &db, &rep, &err), 0);
    assert_int_equal(count(db, "PRAGMA synchronous"), 1);
    sqlite3_close(db);
    ldb_report_clear(&rep);
}

/* ledge before 0.1 left its databases 0644: they (and their -wal/-shm) become 0600. */
static void test_old_mode_tightened(void **state)
{
    struct ctx *c = *state;
    make_old_db(c->path);
    sqlite3 *keep = NULL; /* keeps a -wal and -shm in place */
    assert_int_equal(sqlite3_open(c->path, &keep), SQLITE_OK);
    exec_ok(keep, "INSERT INTO kv VALUES ('d', '4')");
    char wal[PATH_MAX], shm[PATH_MAX];
    PJ(wal, "%s-wal", c->path);
    PJ(shm, "%s-shm", c->path);
    assert_int_equal(chmod(c->path, 0644), 0);
    assert_int_equal(chmod(wal, 0644), 0);
    assert_int_equal(chmod(shm, 0644), 0);

    sqlite3 *db = NULL;
    struct ldb_report rep;
    struct lerr err = {0};
    assert_int_equal(ldb_open(c->path, &opts, &db, &rep, &err), 0);
    assert_false(rep.damaged);
    assert_false(rep.created);
    assert_int_equal(file_mode(c->path), 0600);
    assert_int_equal(file_mode(wal), 0600);
    assert_int_equal(file_mode(shm), 0600);
    assert_int_equal(count(db, "SELECT count(*) FROM kv"), 4);
    /* the schema ran: the new table exists */
    assert_int_equal(count(db, "SELECT count(*) FROM added_later"), 0);
    sqlite3_close(db);
    sqlite3_close(keep);
    ldb_report_clear(&rep);
}

/* Open the damaged file at c->path, expecting a salvage; returns the new connection. */
static sqlite3 *open_damaged(struct ctx *c, struct ldb_report *rep, const void *want_bytes,
                             size_t want_len)
{
    sqlite3 *db = NULL;
    struct lerr err = {0};
    assert_int_equal(ldb_open(c->path, &opts, &db, rep, &err), 0);
    assert_true(rep->damaged);
    assert_false(rep->created);
    assert_non_null(rep->problem);
    assert_null(strchr(rep->problem, '\n')); /* one line, for logs */
    assert_true(rep->salvaged_ms > 0);
    char found[PATH_MAX];
    find_damaged(c->dir, found, sizeof(found));
    assert_string_equal(found, rep->damaged_path);
    assert_non_null(strstr(rep->damaged_path, "/state.db.damaged-20"));
    if (want_bytes) { /* kept aside byte for byte */
        char *kept = NULL;
        size_t n = 0;
        assert_int_equal(lfs_read_file(rep->damaged_path, 1 << 24, &kept, &n), 0);
        assert_int_equal(n, want_len);
        assert_memory_equal(kept, want_bytes, n);
        free(kept);
    }
    assert_int_equal(file_mode(c->path), 0600);
    /* the fresh database works and has the whole schema */
    exec_ok(db, "INSERT INTO added_later VALUES (1)");
    assert_int_equal(count(db, "SELECT count(*) FROM pragma_quick_check WHERE quick_check = 'ok'"),
                     1);
    assert_int_equal(table(rep, "items")->rows + table(rep, "kv")->rows, rep->rows);
    char *line = ldb_report_summary(rep);
    assert_non_null(line);
    assert_non_null(strstr(line, rep->damaged_path));
    assert_non_null(strstr(line, rep->problem));
    free(line);
    json_t *j = ldb_report_json(rep);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "damaged")));
    assert_string_equal(json_string_value(json_object_get(j, "damagedPath")), rep->damaged_path);
    assert_int_equal(json_integer_value(json_object_get(j, "rowsRecovered")),
                     (json_int_t)rep->rows);
    assert_int_equal(json_array_size(json_object_get(j, "tables")), rep->n_tables);
    json_decref(j);
    return db;
}

static void test_garbage(void **state)
{
    struct ctx *c = *state;
    char junk[8192];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 131 + 7);
    assert_int_equal(lfs_write_atomic(c->path, junk, sizeof(junk), 0644), 0);
    struct ldb_report rep;
    sqlite3 *db = open_damaged(c, &rep, junk, sizeof(junk));
    assert_non_null(strstr(rep.problem, "not a database"));
    assert_int_equal(rep.rows, 0);
    assert_true(table(&rep, "items")->incomplete);
    assert_int_equal(rep.n_tables, 3);
    assert_int_equal(count(db, "SELECT count(*) FROM items"), 0);
    sqlite3_close(db);
    ldb_report_clear(&rep);

    /* A second open finds the fresh database sound. */
    struct lerr err = {0};
    assert_int_equal(ldb_open(c->path, &opts, &db, &rep, &err), 0);
    assert_false(rep.damaged);
    assert_int_equal(count(db, "SELECT count(*) FROM added_later"), 1);
    sqlite3_close(db);
    ldb_report_clear(&rep);
}

static void test_empty_file(void **state)
{
    struct ctx *c = *state;
    assert_int_equal(lfs_write_atomic(c->path, "", 0, 0600), 0);
    struct ldb_report rep;
    sqlite3 *db = open_damaged(c, &rep, NULL, 0);
    assert_string_equal(rep.problem, "empty file");
    assert_int_equal(rep.rows, 0);
    sqlite3_close(db);
    ldb_report_clear(&rep);
}

static void test_truncated(void **state)
{
    struct ctx *c = *state;
    make_old_db(c->path);
    struct stat st;
    assert_int_equal(stat(c->path, &st), 0);
    /* at a page boundary: a page cut in two can give rows with the wrong content (db.h) */
    assert_int_equal(truncate(c->path, st.st_size / 2 / 4096 * 4096), 0);
    char *before = NULL;
    size_t n = 0;
    assert_int_equal(lfs_read_file(c->path, 1 << 24, &before, &n), 0);

    struct ldb_report rep;
    sqlite3 *db = open_damaged(c, &rep, before, n);
    free(before);
    const struct ldb_table_report *items = table(&rep, "items");
    assert_true(items->incomplete);
    assert_true(items->rows > 0 && items->rows < NROWS);
    assert_int_equal(count(db, "SELECT count(*) FROM items"), (int64_t)items->rows);
    /* the rows that came back are whole: the column the new schema has, in order from 1 */
    assert_int_equal(count(db, "SELECT min(id) FROM items"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM items WHERE body = printf('%0200d', id)"),
                     (int64_t)items->rows);
    sqlite3_close(db);
    ldb_report_clear(&rep);
}

/* The number and page of one leaf of items in the middle of the b-tree, by dbstat. */
static int64_t middle_leaf(const char *path, int64_t *ret_rows)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    int64_t leaves = count(db, "SELECT count(*) FROM dbstat WHERE name = 'items' AND "
                               "pagetype = 'leaf'");
    assert_true(leaves > 20);
    char sql[256];
    PJ(sql,
       "SELECT pageno FROM dbstat WHERE name = 'items' AND pagetype = 'leaf' ORDER BY path "
       "LIMIT 1 OFFSET %lld",
       (long long)leaves / 2);
    int64_t page = count(db, sql);
    PJ(sql, "SELECT ncell FROM dbstat WHERE name = 'items' AND pageno = %lld", (long long)page);
    *ret_rows = count(db, sql);
    sqlite3_close(db);
    return page;
}

/* One page in the middle overwritten: everything but that page's rows comes back, rows after it
 * included (read backward from the end), and rows that were only in the WAL too. */
static void test_damaged_middle_with_wal(void **state)
{
    struct ctx *c = *state;
    make_old_db(c->path);
    int64_t lost = 0;
    int64_t page = middle_leaf(c->path, &lost);
    assert_true(lost > 0);

    /* 10 more rows that stay in the WAL (no checkpoint when this connection closes). */
    sqlite3 *w = NULL;
    assert_int_equal(sqlite3_open(c->path, &w), SQLITE_OK);
    exec_ok(w, "WITH RECURSIVE n(i) AS (SELECT 2001 UNION ALL SELECT i + 1 FROM n WHERE i < 2010) "
               "INSERT INTO items SELECT i, printf('%0200d', i), 'y' FROM n;");
    sqlite3_db_config(w, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
    sqlite3_close(w);
    char wal[PATH_MAX];
    PJ(wal, "%s-wal", c->path);
    struct stat st;
    assert_int_equal(stat(wal, &st), 0);
    assert_true(st.st_size > 0);

    char junk[4096];
    memset(junk, 0xa5, sizeof(junk));
    write_at(c->path, (page - 1) * 4096, junk, sizeof(junk));

    struct ldb_report rep;
    sqlite3 *db = open_damaged(c, &rep, NULL, 0);
    char aside_wal[PATH_MAX];
    PJ(aside_wal, "%s-wal", rep.damaged_path);
    assert_int_equal(stat(aside_wal, &st), 0); /* the WAL went aside with it, unchanged */
    assert_true(st.st_size > 0);
    assert_int_equal(access(wal, F_OK) == 0 ? file_mode(wal) : 0600, 0600);

    const struct ldb_table_report *items = table(&rep, "items");
    assert_true(items->incomplete);
    assert_int_equal(items->rows, (uint64_t)(NROWS + 10 - lost));
    assert_int_equal(count(db, "SELECT max(id) FROM items"), NROWS + 10);
    assert_int_equal(count(db, "SELECT count(*) FROM items WHERE body = printf('%0200d', id)"),
                     NROWS + 10 - lost);
    /* the WITHOUT ROWID table was untouched */
    assert_false(table(&rep, "kv")->incomplete);
    assert_int_equal(table(&rep, "kv")->rows, 3);
    assert_int_equal(table(&rep, "added_later")->rows, 0);
    sqlite3_close(db);
    ldb_report_clear(&rep);
}

/* A header whose write version SQLite does not know makes the file read-only: damage (found by
 * fuzz-db), and every row comes back. */
static void test_header_read_only(void **state)
{
    struct ctx *c = *state;
    make_old_db(c->path);
    write_at(c->path, 18, "\x04", 1);
    struct ldb_report rep;
    sqlite3 *db = open_damaged(c, &rep, NULL, 0);
    assert_string_equal(rep.problem, "the header makes the file read-only");
    assert_false(table(&rep, "items")->incomplete);
    assert_int_equal(table(&rep, "items")->rows, NROWS);
    assert_int_equal(table(&rep, "kv")->rows, 3);
    sqlite3_close(db);
    ldb_report_clear(&rep);
}

/* Not damage: a path that is a directory or a symbolic link fails and nothing is moved. */
static void test_not_damage(void **state)
{
    struct ctx *c = *state;
    sqlite3 *db = NULL;
    struct ldb_report rep;
    struct lerr err = {0};
    assert_int_equal(mkdir(c->path, 0700), 0);
    assert_int_equal(ldb_open(c->path, &opts, &db, &rep, &err), -EINVAL);
    assert_non_null(strstr(err.msg, c->path));
    assert_int_equal(rmdir(c->path), 0);

    char target[PATH_MAX];
    PJ(target, "%s/elsewhere.db", c->dir);
    make_old_db(target);
    assert_int_equal(symlink(target, c->path), 0);
    assert_int_equal(ldb_open(c->path, &opts, &db, &rep, &err), -ELOOP);
    assert_non_null(strstr(err.msg, "symbolic link"));
    char found[PATH_MAX];
    find_damaged(c->dir, found, sizeof(found));
    assert_string_equal(found, "");
}

/* Locked by another connection is not damage: an error, the file stays where it is. */
static void test_locked_is_not_damage(void **state)
{
    struct ctx *c = *state;
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(c->path, &other), SQLITE_OK);
    exec_ok(other, "CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
                   "BEGIN EXCLUSIVE; INSERT INTO items VALUES (1, 'held');");
    sqlite3 *db = NULL;
    struct ldb_report rep;
    struct lerr err = {0};
    struct ldb_options quick = {.schema = schema, .busy_timeout_ms = 1};
    assert_int_equal(ldb_open(c->path, &quick, &db, &rep, &err), -EIO);
    assert_non_null(strstr(err.msg, "locked"));
    char found[PATH_MAX];
    find_damaged(c->dir, found, sizeof(found));
    assert_string_equal(found, "");
    exec_ok(other, "COMMIT");
    sqlite3_close(other);
    assert_int_equal(ldb_open(c->path, &quick, &db, &rep, &err), 0);
    assert_false(rep.damaged);
    assert_int_equal(count(db, "SELECT count(*) FROM items"), 1);
    sqlite3_close(db);
    ldb_report_clear(&rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_mode_tightened, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_middle_with_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locked_is_not_damage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
