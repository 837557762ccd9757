/* db.h — opening the programs' SQLite databases (ledged.db, twins.db) one way: WAL, a stated
 * synchronous level, mode 0600, an integrity check at open, and salvage when the file is damaged.
 * Never logs: ldb_open() says what happened in a struct ldb_report the caller logs and shows. */
#pragma once

#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"

enum ldb_sync {
    LDB_SYNC_NORMAL, /* WAL + NORMAL: a commit may be lost on power loss, never corrupts */
    LDB_SYNC_FULL,   /* WAL + FULL: every commit is fsynced before it returns */
};

struct ldb_options {
    /* Run on every open (and into the fresh database of a salvage): CREATE TABLE IF NOT EXISTS
     * statements. Its tables are the ones a salvage copies, by column name. */
    const char *schema;
    enum ldb_sync synchronous;
    int busy_timeout_ms; /* 0: 5000 */
};

/* What a salvage got back from one table of the damaged file. */
struct ldb_table_report {
    char *name;
    uint64_t rows;   /* rows copied into the fresh database */
    bool incomplete; /* reading stopped at damage: rows may be missing */
};

struct ldb_report {
    bool created;       /* no file was there: a new, empty database */
    bool damaged;       /* the file was damaged; everything below describes the salvage */
    char *problem;      /* what SQLite said ("file is not a database", quick_check's first line) */
    char *damaged_path; /* where the damaged file went ("<path>.damaged-<UTC>", -wal/-shm beside) */
    int64_t salvaged_ms; /* wall clock of the salvage */
    uint64_t rows;       /* rows recovered, all tables */
    size_t n_tables;
    struct ldb_table_report *tables; /* in schema order */
};

/* Open (creating if missing) the database at path. The file and its -wal/-shm are made mode
 * 0600 (also when an older version left them 0644). `PRAGMA quick_check` runs before anything
 * else (db.c says why not integrity_check).
 *
 * A damaged file — one SQLite calls "not a database" or "malformed", one that fails the check,
 * or an existing empty file — is renamed to "<path>.damaged-<YYYYmmddTHHMMSSZ>" with its -wal
 * and -shm, a fresh database is created with opt->schema, and every row SQLite can still read
 * from the damaged file's tables of the same names is copied into it (Debian 12's libsqlite3
 * 3.40 has neither the recovery extension nor sqlite_dbpage, so this is a row-by-row copy:
 * forward by rowid until the first unreadable page, then backward from the end to it). That is
 * a success: 0 with ret_report->damaged set. A row comes back as SQLite decodes it: from a page
 * that is only partly destroyed that can be a row with wrong content, so callers parse what they
 * read back (as they do anyway).
 *
 * Errors that are not damage (permissions, a full disk, a database locked by another process)
 * fail with -errno and a message in err, and leave the file alone. On success *ret_db is the
 * open connection (close with sqlite3_close) and *ret_report is filled (ldb_report_clear). */
int ldb_open(const char *path, const struct ldb_options *opt, sqlite3 **ret_db,
             struct ldb_report *ret_report, struct lerr *err);

void ldb_report_clear(struct ldb_report *r);

/* The salvage report of the table called name, or NULL (not damaged, or no such table). */
const struct ldb_table_report *ldb_report_table(const struct ldb_report *r, const char *name);

/* {"damaged": true, "problem": ..., "damagedPath": ..., "salvagedAt": RFC 3339, "rowsRecovered":
 * N, "tables": [{"name", "rows", "incomplete"}]} or {"damaged": false}; NULL on ENOMEM. */
json_t *ldb_report_json(const struct ldb_report *r);

/* One line for a log: "file is not a database; moved to X; recovered 3 rows (meta 2, modules
 * 1 incomplete, deployments 0)". NULL on ENOMEM; free(). Only meaningful when r->damaged. */
char *ldb_report_summary(const struct ldb_report *r);
