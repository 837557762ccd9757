/* fuzz-db.c — libFuzzer target: the input is a database file (seeds: small valid databases, some
 * cut short or with a page overwritten, from make-fuzz-seeds.py). ldb_open() must open it as it
 * is or salvage it without crashing, and keep its word: the file is 0600, a salvage's report adds
 * up (per table, and against what the fresh database holds) and its damaged copy is where it
 * says, a salvaged database takes a write, and opening the result again finds it sound. */
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "db/db.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;";

static void check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int64_t count(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char dir[64], path[96];
    snprintf(dir, sizeof(dir), "%s/fuzz-db-XXXXXX", base);
    if (!mkdtemp(dir))
        return 0;
    snprintf(path, sizeof(path), "%s/x.db", dir);
    if (lfs_write_atomic(path, data, size, 0600) < 0)
        goto out;

    const struct ldb_options o = {.schema = schema, .synchronous = LDB_SYNC_NORMAL};
    sqlite3 *db = NULL;
    struct ldb_report rep;
    struct lerr err = {0};
    int r = ldb_open(path, &o, &db, &rep, &err);
    if (r < 0) {
        /* Not damage: only what the file is not to blame for, which a fuzzer cannot cause
         * (a locked or unwritable file). A database valid to SQLite but with its own odd
         * schema can fail its CREATE TABLE IF NOT EXISTS: that is an error too. */
        check(err.msg[0] != 0);
        goto out;
    }
    struct stat st;
    check(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600);
    if (rep.damaged) {
        check(rep.problem && rep.damaged_path && !strchr(rep.problem, '\n'));
        check(stat(rep.damaged_path, &st) == 0 && (size_t)st.st_size == size);
        uint64_t sum = 0;
        for (size_t i = 0; i < rep.n_tables; i++)
            sum += rep.tables[i].rows;
        check(sum == rep.rows);
        check(count(db, "SELECT count(*) FROM items") ==
              (int64_t)ldb_report_table(&rep, "items")->rows);
        check(count(db, "SELECT count(*) FROM kv") == (int64_t)ldb_report_table(&rep, "kv")->rows);
        char *line = ldb_report_summary(&rep);
        check(line != NULL);
        free(line);
    }
    json_t *j = ldb_report_json(&rep);
    check(j != NULL);
    json_decref(j);
    /* Usable: a write and a read. Only in a database with our schema: a sound file may hold
     * tables of the same names shaped otherwise (the input's own schema text), which is the
     * caller's migration to make, not damage. */
    if (rep.damaged || rep.created) {
        check(sqlite3_exec(db, "INSERT OR REPLACE INTO kv VALUES ('fuzz', 'x')", NULL, NULL,
                           NULL) == SQLITE_OK);
        check(count(db, "SELECT count(*) FROM kv WHERE k = 'fuzz'") == 1);
    } else {
        check(count(db, "SELECT count(*) FROM sqlite_schema") >= 2);
    }
    ldb_report_clear(&rep);
    sqlite3_close(db);

    /* What ldb_open() left is sound. */
    db = NULL;
    r = ldb_open(path, &o, &db, &rep, &err);
    check(r == 0 && !rep.damaged);
    ldb_report_clear(&rep);
    sqlite3_close(db);
out:
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
