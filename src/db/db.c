/* db.c — open a SQLite database checked, 0600 and in WAL mode; salvage it when damaged (db.h).
 *
 * Why `PRAGMA quick_check` and not `integrity_check`: both read every page of the file, but
 * integrity_check also cross-checks every index against its table (O(N log N) against quick_check's
 * O(N)): 2.4x the time on a database of many small rows (docs/benchmarks.md, bench/db/bench-db.c).
 * quick_check finds what truncation, garbage and torn pages do to the b-trees — the damage that
 * makes SQLite refuse the file — and an index that disagrees with its table is not a reason to
 * stop a program. `quick_check(1)` stops at the first problem, so a damaged file costs no more
 * than a sound one. */
#include "db/db.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/str.h"
#include "base/timeutil.h"

#define LDB_FILE_MODE 0600
#define LDB_DEFAULT_BUSY_MS 5000

static const char *const sidecars[] = {"-wal", "-shm"};

/* Damage is what SQLite reports as SQLITE_CORRUPT or SQLITE_NOTADB; everything else (EACCES,
 * a full disk, BUSY from another process) is an error the file is not to blame for. */
static bool is_damage(int rc)
{
    rc &= 0xff;
    return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

static int chmod_private(const char *path, bool create, bool *ret_created, bool *ret_empty)
{
    bool created = false;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 && errno == ENOENT && create) {
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, LDB_FILE_MODE);
        created = fd >= 0;
    }
    if (fd < 0)
        return neg_errno();
    struct stat st;
    if (fstat(fd, &st) < 0)
        return neg_errno();
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    /* Also when the umask or an older ledge made it 0644. */
    if ((st.st_mode & 07777) != LDB_FILE_MODE && fchmod(fd, LDB_FILE_MODE) < 0)
        return neg_errno();
    if (ret_created)
        *ret_created = created;
    if (ret_empty)
        *ret_empty = st.st_size == 0;
    return 0;
}

/* Make path (created if missing) and its existing -wal/-shm 0600. */
static int prepare_files(const char *path, bool *ret_created, bool *ret_empty, struct lerr *err)
{
    int r = chmod_private(path, true, ret_created, ret_empty);
    if (r < 0)
        return lerr_set(err, r, "database %s: %s", path,
                        r == -ELOOP ? "is a symbolic link" : strerror(-r));
    for (size_t i = 0; i < ARRAY_SIZE(sidecars); i++) {
        char p[PATH_MAX];
        if (snprintf(p, sizeof(p), "%s%s", path, sidecars[i]) >= (int)sizeof(p))
            return lerr_set(err, -ENAMETOOLONG, "database %s: path too long", path);
        r = chmod_private(p, false, NULL, NULL);
        if (r < 0 && r != -ENOENT)
            return lerr_set(err, r, "database %s: %s", p, strerror(-r));
    }
    return 0;
}

/* SQLite's messages can quote the damaged file ("malformed database schema (<bytes>)") and
 * quick_check's span lines: one line of printable ASCII, for logs and JSON (which wants UTF-8). */
static void one_printable_line(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
        else if (*p < 0x20 || *p > 0x7e)
            *p = '?';
}

/* 0: open and sound; 1: damaged (*ret_problem says how, nothing is open); < 0: error. */
static int open_checked(const char *path, const struct ldb_options *opt, sqlite3 **ret_db,
                        char **ret_problem, struct lerr *err)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int r = 0;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        goto sqlite_fail;
    sqlite3_busy_timeout(db, opt->busy_timeout_ms > 0 ? opt->busy_timeout_ms : LDB_DEFAULT_BUSY_MS);

    /* The first read of the file: garbage in the header fails here ("file is not a database"). */
    rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc != SQLITE_OK || (rc = sqlite3_step(st)) != SQLITE_ROW)
        goto sqlite_fail;
    if (!lstr_eq_ci((const char *)sqlite3_column_text(st, 0), "wal")) {
        r = lerr_set(err, -EIO, "database %s: cannot switch to WAL mode (journal mode %s)", path,
                     (const char *)sqlite3_column_text(st, 0));
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;

    rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &st, NULL);
    if (rc != SQLITE_OK || (rc = sqlite3_step(st)) != SQLITE_ROW)
        goto sqlite_fail;
    const char *verdict = (const char *)sqlite3_column_text(st, 0);
    if (!lstr_eq(verdict, "ok")) {
        char *problem = strdup(verdict ? verdict : "integrity check failed");
        if (!problem) {
            r = -ENOMEM;
            goto out;
        }
        one_printable_line(problem);
        *ret_problem = problem;
        r = 1;
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;

    /* Read-only although opened for writing: the file's mode (not its fault), or its header (a
     * write version SQLite does not know: damage, for a file we made). */
    if (sqlite3_db_readonly(db, "main") == 1) {
        if (access(path, W_OK) < 0) {
            r = lerr_set(err, -EACCES, "database %s: not writable", path);
            goto out;
        }
        char *problem = strdup("the header makes the file read-only");
        if (!problem) {
            r = -ENOMEM;
            goto out;
        }
        *ret_problem = problem;
        r = 1;
        goto out;
    }

    rc = sqlite3_exec(db,
                      opt->synchronous == LDB_SYNC_FULL ? "PRAGMA synchronous=FULL"
                                                        : "PRAGMA synchronous=NORMAL",
                      NULL, NULL, NULL);
    if (rc == SQLITE_OK && opt->schema)
        rc = sqlite3_exec(db, opt->schema, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        goto sqlite_fail;
    *ret_db = TAKE_PTR(db);
    return 0;

sqlite_fail:
    if (is_damage(rc)) {
        char *problem = strdup(db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        if (!problem) {
            r = -ENOMEM;
            goto out;
        }
        one_printable_line(problem);
        *ret_problem = problem;
        r = 1;
    } else {
        r = lerr_set(err, (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO, "database %s: %s", path,
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    }
out:
    sqlite3_finalize(st);
    if (db && r == 1) /* leave the damaged file as it is: no checkpoint of its WAL into it */
        sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
    sqlite3_close(db);
    return r;
}

/* Rename path and its -wal/-shm to "<path>.damaged-<UTC>[.N]"; returns the new name. */
static int move_aside(const char *path, int64_t now_ms, char **ret_aside, struct lerr *err)
{
    time_t secs = (time_t)(now_ms / 1000);
    struct tm tm;
    char stamp[32];
    if (!gmtime_r(&secs, &tm) || strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm) == 0)
        return lerr_set(err, -EINVAL, "database %s: cannot format the time", path);
    _cleanup_free_ char *aside = NULL;
    for (int n = 0; n < 100 && !aside; n++) {
        char *cand = n == 0 ? lstr_printf("%s.damaged-%s", path, stamp)
                            : lstr_printf("%s.damaged-%s.%d", path, stamp, n);
        if (!cand)
            return -ENOMEM;
        struct stat st;
        if (lstat(cand, &st) < 0 && errno == ENOENT)
            aside = cand;
        else
            free(cand);
    }
    if (!aside)
        return lerr_set(err, -EEXIST, "database %s: too many damaged copies beside it", path);
    if (rename(path, aside) < 0)
        return lerr_set(err, neg_errno(), "database %s: moving the damaged file aside: %s", path,
                        strerror(errno));
    for (size_t i = 0; i < ARRAY_SIZE(sidecars); i++) {
        char from[PATH_MAX], to[PATH_MAX];
        if (snprintf(from, sizeof(from), "%s%s", path, sidecars[i]) >= (int)sizeof(from) ||
            snprintf(to, sizeof(to), "%s%s", aside, sidecars[i]) >= (int)sizeof(to))
            return lerr_set(err, -ENAMETOOLONG, "database %s: path too long", path);
        if (rename(from, to) < 0 && errno != ENOENT)
            return lerr_set(err, neg_errno(), "database %s: moving %s aside: %s", path, from,
                            strerror(errno));
    }
    char dir[PATH_MAX];
    int r = lfs_dirname(path, dir, sizeof(dir));
    if (r >= 0)
        r = lfs_fsync_dir(dir);
    if (r < 0)
        return lerr_set(err, r, "database %s: %s", path, strerror(-r));
    *ret_aside = TAKE_PTR(aside);
    return 0;
}

static int report_add_table(struct ldb_report *rep, const char *name)
{
    struct ldb_table_report *t =
        realloc(rep->tables, (rep->n_tables + 1) * sizeof(struct ldb_table_report));
    if (!t)
        return -ENOMEM;
    rep->tables = t;
    t[rep->n_tables] = (struct ldb_table_report){.name = strdup(name)};
    if (!t[rep->n_tables].name)
        return -ENOMEM;
    rep->n_tables++;
    return 0;
}

/* The quoted column list ("a","b") of the columns table has in both databases; NULL when none. */
static int common_columns(sqlite3 *src, sqlite3 *dst, const char *table, char **ret_list,
                          int *ret_n)
{
    sqlite3_stmt *s = NULL, *d = NULL;
    char *sql = sqlite3_mprintf("SELECT * FROM \"%w\"", table);
    if (!sql)
        return -ENOMEM;
    int r = 0, n = 0;
    if (sqlite3_prepare_v2(src, sql, -1, &s, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(dst, sql, -1, &d, NULL) != SQLITE_OK) {
        r = -EIO; /* the damaged file's schema does not have it readable */
        goto out;
    }
    sqlite3_str *list = sqlite3_str_new(NULL);
    for (int i = 0; i < sqlite3_column_count(d); i++) {
        const char *col = sqlite3_column_name(d, i);
        for (int j = 0; j < sqlite3_column_count(s); j++) {
            if (sqlite3_stricmp(col, sqlite3_column_name(s, j)) == 0) {
                sqlite3_str_appendf(list, "%s\"%w\"", n ? "," : "", col);
                n++;
                break;
            }
        }
    }
    if (sqlite3_str_errcode(list) != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(list));
        r = -ENOMEM;
        goto out;
    }
    *ret_list = sqlite3_str_finish(list); /* NULL when empty */
    *ret_n = n;
out:
    sqlite3_free(sql);
    sqlite3_finalize(s);
    sqlite3_finalize(d);
    return r;
}

/* Copy rows the statement yields into ins until the end (0) or an unreadable page (1); column 0
 * of sel is the rowid when with_rowid, *last_rowid the last one copied. < 0: writing failed. */
static int copy_rows(sqlite3 *dst, sqlite3_stmt *sel, sqlite3_stmt *ins, int ncols, bool with_rowid,
                     struct ldb_table_report *t, int64_t *last_rowid, bool *seen)
{
    int off = with_rowid ? 1 : 0, rc;
    while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
        for (int i = 0; i < ncols; i++)
            sqlite3_bind_value(ins, i + 1, sqlite3_column_value(sel, i + off));
        rc = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (rc != SQLITE_DONE)
            return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
        t->rows += (uint64_t)sqlite3_changes(dst);
        if (with_rowid) {
            *last_rowid = sqlite3_column_int64(sel, 0);
            *seen = true;
        }
    }
    return rc == SQLITE_DONE ? 0 : 1;
}

static int salvage_table(sqlite3 *src, sqlite3 *dst, struct ldb_table_report *t)
{
    char *cols = NULL, *sql = NULL;
    sqlite3_stmt *ins = NULL, *sel = NULL;
    int ncols = 0;
    int r = common_columns(src, dst, t->name, &cols, &ncols);
    if (r == -EIO) {
        t->incomplete = true;
        return 0;
    }
    if (r < 0 || ncols == 0)
        return r;

    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendf(q, "INSERT OR IGNORE INTO \"%w\" (%s) VALUES (?", t->name, cols);
    for (int i = 1; i < ncols; i++)
        sqlite3_str_appendall(q, ",?");
    sqlite3_str_appendall(q, ")");
    sql = sqlite3_str_finish(q);
    if (!sql || sqlite3_prepare_v2(dst, sql, -1, &ins, NULL) != SQLITE_OK) {
        r = sql ? -EIO : -ENOMEM;
        goto out;
    }
    sqlite3_free(sql);

    /* Forward by rowid to the first unreadable page, then backward from the last row down to
     * the last row read: a damaged page in the middle costs only the rows on it. */
    int64_t last = 0;
    bool seen = false, with_rowid = true;
    sql = sqlite3_mprintf("SELECT rowid, %s FROM \"%w\" ORDER BY rowid", cols, t->name);
    if (!sql) {
        r = -ENOMEM;
        goto out;
    }
    if (sqlite3_prepare_v2(src, sql, -1, &sel, NULL) != SQLITE_OK) {
        /* WITHOUT ROWID: one pass in key order. */
        with_rowid = false;
        sqlite3_free(sql);
        sql = sqlite3_mprintf("SELECT %s FROM \"%w\"", cols, t->name);
        if (!sql) {
            r = -ENOMEM;
            goto out;
        }
        if (sqlite3_prepare_v2(src, sql, -1, &sel, NULL) != SQLITE_OK) {
            t->incomplete = true;
            r = 0;
            goto out;
        }
    }
    r = copy_rows(dst, sel, ins, ncols, with_rowid, t, &last, &seen);
    sqlite3_finalize(sel);
    sel = NULL;
    if (r <= 0)
        goto out;
    t->incomplete = true;
    if (!with_rowid) {
        r = 0;
        goto out;
    }
    sqlite3_free(sql);
    sql = sqlite3_mprintf("SELECT rowid, %s FROM \"%w\" %s ORDER BY rowid DESC", cols, t->name,
                          seen ? "WHERE rowid > ?1" : "");
    if (!sql) {
        r = -ENOMEM;
        goto out;
    }
    if (sqlite3_prepare_v2(src, sql, -1, &sel, NULL) != SQLITE_OK) {
        r = 0;
        goto out;
    }
    if (seen)
        sqlite3_bind_int64(sel, 1, last);
    r = copy_rows(dst, sel, ins, ncols, true, t, &last, &seen);
    if (r > 0)
        r = 0;
out:
    sqlite3_free(sql);
    sqlite3_free(cols);
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    return r;
}

/* Copy what can be read from the damaged file at src_path into dst, table by table of dst's
 * schema, in one transaction. */
static int salvage(const char *src_path, sqlite3 *dst, struct ldb_report *rep, struct lerr *err)
{
    sqlite3_stmt *st = NULL;
    sqlite3 *src = NULL;
    int r = 0;
    if (sqlite3_prepare_v2(dst,
                           "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE "
                           "'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
                           -1, &st, NULL) != SQLITE_OK)
        return lerr_set(err, -EIO, "database: listing tables: %s", sqlite3_errmsg(dst));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if ((r = report_add_table(rep, (const char *)sqlite3_column_text(st, 0))) < 0)
            break;
    sqlite3_finalize(st);
    if (r < 0)
        return r;
    if (rc != SQLITE_DONE)
        return lerr_set(err, -EIO, "database: listing tables: %s", sqlite3_errmsg(dst));

    /* Read-only: the damaged file and its WAL stay as they were found. */
    /* writable_schema makes SQLite trust the file's size over a header that claims more pages
     * (a truncated file) and skip schema entries it cannot parse, as the CLI's .recover does;
     * the connection is read-only, so nothing is written with it. */
    if (sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(src, "PRAGMA writable_schema=ON", NULL, NULL, NULL) != SQLITE_OK) {
        for (size_t i = 0; i < rep->n_tables; i++)
            rep->tables[i].incomplete = true;
        sqlite3_close(src);
        return 0;
    }
    if (sqlite3_exec(dst, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        r = lerr_set(err, -EIO, "database: %s", sqlite3_errmsg(dst));
        goto out;
    }
    for (size_t i = 0; i < rep->n_tables && r >= 0; i++) {
        r = salvage_table(src, dst, &rep->tables[i]);
        rep->rows += rep->tables[i].rows;
    }
    if (r >= 0 && sqlite3_exec(dst, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        r = -EIO;
    if (r < 0) {
        lerr_set(err, r, "database: copying the readable rows: %s",
                 r == -ENOMEM ? strerror(ENOMEM) : sqlite3_errmsg(dst));
        sqlite3_exec(dst, "ROLLBACK", NULL, NULL, NULL);
    }
out:
    sqlite3_close(src);
    return r;
}

int ldb_open(const char *path, const struct ldb_options *opt, sqlite3 **ret_db,
             struct ldb_report *ret_report, struct lerr *err)
{
    struct ldb_report rep = {0};
    _cleanup_free_ char *problem = NULL;
    sqlite3 *db = NULL;
    bool empty = false;
    int r = prepare_files(path, &rep.created, &empty, err);
    if (r < 0)
        return r;
    /* We create the file and write its header in the same call, so an existing empty file lost
     * what it held (truncated). */
    if (empty && !rep.created) {
        rep.problem = strdup("empty file");
        r = rep.problem ? 1 : -ENOMEM;
    } else {
        r = open_checked(path, opt, &db, &rep.problem, err);
    }
    if (r <= 0)
        goto out;

    rep.damaged = true;
    rep.salvaged_ms = ltime_now_ms();
    if ((r = move_aside(path, rep.salvaged_ms, &rep.damaged_path, err)) < 0 ||
        (r = prepare_files(path, NULL, NULL, err)) < 0)
        goto out;
    r = open_checked(path, opt, &db, &problem, err);
    if (r > 0)
        r = lerr_set(err, -EIO, "database %s: a new database fails its check: %s", path, problem);
    if (r >= 0)
        r = salvage(rep.damaged_path, db, &rep, err);
out:
    if (r < 0) {
        sqlite3_close(db);
        ldb_report_clear(&rep);
        return r;
    }
    *ret_db = db;
    *ret_report = rep;
    return 0;
}

void ldb_report_clear(struct ldb_report *r)
{
    if (!r)
        return;
    free(r->problem);
    free(r->damaged_path);
    for (size_t i = 0; i < r->n_tables; i++)
        free(r->tables[i].name);
    free(r->tables);
    *r = (struct ldb_report){0};
}

const struct ldb_table_report *ldb_report_table(const struct ldb_report *r, const char *name)
{
    for (size_t i = 0; i < r->n_tables; i++)
        if (strcmp(r->tables[i].name, name) == 0)
            return &r->tables[i];
    return NULL;
}

json_t *ldb_report_json(const struct ldb_report *r)
{
    if (!r->damaged)
        return json_pack("{s:b}", "damaged", 0);
    char when[LTIME_RFC3339_MAX];
    json_t *tables = json_array();
    if (!tables)
        return NULL;
    for (size_t i = 0; i < r->n_tables; i++)
        if (json_array_append_new(tables, json_pack("{s:s, s:I, s:b}", "name", r->tables[i].name,
                                                    "rows", (json_int_t)r->tables[i].rows,
                                                    "incomplete", r->tables[i].incomplete)) < 0) {
            json_decref(tables);
            return NULL;
        }
    return json_pack("{s:b, s:s, s:s, s:s, s:I, s:o}", "damaged", 1, "problem",
                     r->problem ? r->problem : "", "damagedPath",
                     r->damaged_path ? r->damaged_path : "", "salvagedAt",
                     ltime_format_rfc3339(r->salvaged_ms, when), "rowsRecovered",
                     (json_int_t)r->rows, "tables", tables);
}

char *ldb_report_summary(const struct ldb_report *r)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "%s; moved to %s; recovered %llu row%s", r->problem ? r->problem : "",
                        r->damaged_path ? r->damaged_path : "?", (unsigned long long)r->rows,
                        r->rows == 1 ? "" : "s");
    for (size_t i = 0; i < r->n_tables; i++)
        sqlite3_str_appendf(s, "%s%s %llu%s", i ? ", " : " (", r->tables[i].name,
                            (unsigned long long)r->tables[i].rows,
                            r->tables[i].incomplete ? " incomplete" : "");
    if (r->n_tables)
        sqlite3_str_appendall(s, ")");
    char *sq = sqlite3_str_finish(s);
    char *out = sq ? strdup(sq) : NULL;
    sqlite3_free(sq);
    return out;
}
