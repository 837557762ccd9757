/* bench-db.c — what ldb_open()'s integrity check costs at start-up: a twins.db-shaped database
 * (TEXT primary keys, so each table has an index) of a given size, filled with documents of 2 KiB
 * (twins) and of 64 bytes (many small rows: the index is a larger part), then ldb_open() (which
 * runs quick_check), PRAGMA quick_check and PRAGMA integrity_check on it, the two checks in
 * alternating order. Page cache warm (the file was just written or read); medians of ROUNDS.
 * Usage: bench-db DIR [MiB...]   (default 10 100) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/timeutil.h"
#include "db/db.h"

#define ROUNDS 5

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS twins (module TEXT PRIMARY KEY, desired TEXT NOT NULL, "
    "desired_version INTEGER NOT NULL, reported TEXT NOT NULL, reported_version INTEGER NOT NULL, "
    "manifest_hash TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, device TEXT NOT NULL, "
    "module TEXT NOT NULL, subs TEXT NOT NULL);";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return v[n / 2];
}

static long fill(sqlite3 *db, long mib, size_t doc_bytes)
{
    char doc[2048];
    memset(doc, 'x', doc_bytes - 1);
    doc[0] = '{';
    doc[doc_bytes - 2] = '}';
    doc[doc_bytes - 1] = 0;
    long rows = mib * 1024 * 1024 / (2 * (long)doc_bytes + 48);
    sqlite3_stmt *st = NULL;
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "INSERT INTO twins VALUES (printf('module-%08d', ?1), ?2, 1, ?2, 1, "
                           "'0123456789abcdef')",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    for (long i = 0; i < rows; i++) {
        sqlite3_bind_int64(st, 1, i);
        sqlite3_bind_text(st, 2, doc, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            return -EIO;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return sqlite3_exec(db, "COMMIT; PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) ==
                   SQLITE_OK
               ? rows
               : -EIO;
}

static double time_pragma(sqlite3 *db, const char *sql)
{
    int64_t t0 = ltime_mono_ms();
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    while (sqlite3_step(st) == SQLITE_ROW)
        ;
    sqlite3_finalize(st);
    return (double)(ltime_mono_ms() - t0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench-db DIR [MiB...]\n");
        return 2;
    }
    static const char *const dflt[] = {"10", "100"};
    int nsizes = argc > 2 ? argc - 2 : 2;
    printf(
        "| size | document | rows | ldb_open (quick_check) ms | quick_check ms | integrity_check "
        "ms |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int k = 0; k < 2 * nsizes; k++) {
        long mib = atol(argc > 2 ? argv[2 + k / 2] : dflt[k / 2]);
        size_t doc_bytes = k % 2 ? 64 : 2048;
        char path[4096];
        snprintf(path, sizeof(path), "%s/bench-%ld.db", argv[1], mib);
        unlink(path);
        sqlite3 *db = NULL;
        struct ldb_report rep;
        struct lerr err = {0};
        const struct ldb_options o = {.schema = schema, .synchronous = LDB_SYNC_NORMAL};
        long rows = -1;
        if (ldb_open(path, &o, &db, &rep, &err) < 0 || (rows = fill(db, mib, doc_bytes)) < 0) {
            fprintf(stderr, "bench-db: %s: %s\n", path, err.msg[0] ? err.msg : "fill failed");
            return 1;
        }
        sqlite3_close(db);
        ldb_report_clear(&rep);
        double open_ms[ROUNDS], quick_ms[ROUNDS], full_ms[ROUNDS];
        for (int r = 0; r < ROUNDS; r++) {
            int64_t t0 = ltime_mono_ms();
            if (ldb_open(path, &o, &db, &rep, &err) < 0) {
                fprintf(stderr, "bench-db: %s\n", err.msg);
                return 1;
            }
            open_ms[r] = (double)(ltime_mono_ms() - t0);
            ldb_report_clear(&rep);
            /* alternate the order of the two checks round by round */
            if (r % 2) {
                full_ms[r] = time_pragma(db, "PRAGMA integrity_check");
                quick_ms[r] = time_pragma(db, "PRAGMA quick_check");
            } else {
                quick_ms[r] = time_pragma(db, "PRAGMA quick_check");
                full_ms[r] = time_pragma(db, "PRAGMA integrity_check");
            }
            sqlite3_close(db);
        }
        printf("| %ld MiB | %zu B | %ld | %.0f | %.0f | %.0f |\n", mib, doc_bytes, rows,
               median(open_ms, ROUNDS), median(quick_ms, ROUNDS), median(full_ms, ROUNDS));
        unlink(path);
    }
    return 0;
}
