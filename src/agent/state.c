/* state.c — SQLite-backed state (see state.h). One connection, used from the event loop thread
 * only; statements are small and synchronous (a few per deployment or module event). Opened and
 * salvaged by db/db.h. */
#include "agent/state.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/str.h"
#include "db/db.h"

#define STATE_SCHEMA_VERSION 1
/* Manifests kept beyond the ones in force, previous, in progress: as many as the history shows,
 * so any deployment in it can be applied again (`ledge deploy --rollback N`). */
#define DEPLOYMENT_HISTORY STATE_HISTORY_MAX
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

struct state_db {
    sqlite3 *db;
    struct ldb_report report; /* what ldb_open() found */
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS deployments ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT, applied_ms INTEGER NOT NULL, manifest TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS modules ("
    "  name TEXT PRIMARY KEY, generation_id TEXT, restart_count INTEGER NOT NULL DEFAULT 0,"
    "  last_start_ms INTEGER NOT NULL DEFAULT 0, last_exit_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_restart_ms INTEGER NOT NULL DEFAULT 0, exit_code INTEGER NOT NULL DEFAULT 0,"
    "  gave_up INTEGER NOT NULL DEFAULT 0, user_stopped INTEGER NOT NULL DEFAULT 0,"
    "  description TEXT);"
    /* Leaf devices and the CAs registered for CA-signed ones (src/daemon/devices.c): one JSON
     * record each (identity/leaf.h's stored form; its keys are sealed). */
    "CREATE TABLE IF NOT EXISTS leaf_devices (id TEXT PRIMARY KEY, record TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS device_cas (id TEXT PRIMARY KEY, record TEXT NOT NULL);"
    /* The deployment being applied (at most one row): what a restarted ledged finishes. */
    "CREATE TABLE IF NOT EXISTS deploy_tx ("
    "  one INTEGER PRIMARY KEY CHECK (one = 1), id INTEGER NOT NULL, previous_id INTEGER NOT NULL,"
    "  kind TEXT NOT NULL, rollback INTEGER NOT NULL, rolling_back INTEGER NOT NULL DEFAULT 0,"
    "  timeout_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL, user_stopped TEXT);"
    /* One row per deployment (the id of its manifest in deployments), the last few. */
    "CREATE TABLE IF NOT EXISTS deploy_history ("
    "  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, previous_id INTEGER NOT NULL,"
    "  rollback INTEGER NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER NOT NULL,"
    "  outcome TEXT NOT NULL, reason TEXT, modules TEXT);";

int state_open(const char *dir, struct state_db **ret, struct lerr *err)
{
    int r = lfs_mkdir_p(dir, 0700);
    if (r < 0)
        return lerr_set(err, r, "state directory %s: %s", dir, strerror(-r));
    _cleanup_free_ char *path = lstr_printf("%s/ledged.db", dir);
    if (!path)
        return -ENOMEM;
    struct state_db *db = calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    /* WAL with synchronous=FULL: every commit is fsynced before it returns, so what the API
     * acknowledged survives power loss. 0600, checked, salvaged when damaged (db/db.h). */
    const struct ldb_options o = {.schema = schema, .synchronous = LDB_SYNC_FULL};
    r = ldb_open(path, &o, &db->db, &db->report, err);
    if (r < 0) {
        free(db);
        lerr_prefix(err, "state");
        return r;
    }
    if (sqlite3_exec(db->db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL) != SQLITE_OK) {
        r = lerr_set(err, -EIO, "state database %s: %s", path, sqlite3_errmsg(db->db));
        state_close(db);
        return r;
    }
    char v[16];
    snprintf(v, sizeof(v), "%d", STATE_SCHEMA_VERSION);
    state_set_meta(db, "schema_version", v);
    *ret = db;
    return 0;
}

void state_close(struct state_db *db)
{
    if (!db)
        return;
    sqlite3_close(db->db);
    ldb_report_clear(&db->report);
    free(db);
}

const struct ldb_report *state_open_report(const struct state_db *db)
{
    return &db->report;
}

static int exec_simple(struct state_db *db, const char *sql)
{
    return sqlite3_exec(db->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

/* Manifests older than the last DEPLOYMENT_HISTORY go, except the ones still needed: in force,
 * the previous one (`ledge deploy --rollback`) and the one a transaction would roll back to. */
static const char trim_sql[] =
    "DELETE FROM deployments WHERE id <= (SELECT MAX(id) FROM deployments) - " STRINGIFY(
        DEPLOYMENT_HISTORY) " AND id NOT IN (SELECT CAST(value AS INTEGER) FROM meta WHERE key "
                            "IN ('deployment_id', 'previous_deployment_id'))"
                            " AND id NOT IN (SELECT previous_id FROM deploy_tx);"
                            "DELETE FROM deploy_history WHERE id <= (SELECT MAX(id) FROM "
                            "deploy_history) - " STRINGIFY(STATE_HISTORY_MAX) ";";

static int insert_deployment(struct state_db *db, const char *text, int64_t now_ms, int64_t *ret_id)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, "INSERT INTO deployments (applied_ms, manifest) VALUES (?, ?)",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    if (r == 0)
        *ret_id = sqlite3_last_insert_rowid(db->db);
    return r;
}

static int set_meta_id(struct state_db *db, const char *key, int64_t id)
{
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)id);
    return state_set_meta(db, key, v);
}

int state_save_deployment(struct state_db *db, const char *text, int64_t now_ms)
{
    int64_t id = 0;
    int r = exec_simple(db, "BEGIN IMMEDIATE");
    if (r < 0)
        return r;
    /* The id of the one in force, beside it: after a salvage it tells the newest row that came
     * back from an older one (state_load_deployment). */
    if (insert_deployment(db, text, now_ms, &id) < 0 || set_meta_id(db, "deployment_id", id) < 0 ||
        exec_simple(db, trim_sql) < 0 || exec_simple(db, "COMMIT") < 0) {
        exec_simple(db, "ROLLBACK");
        return -EIO;
    }
    return 0;
}

static int bind_step(sqlite3_stmt *st)
{
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    return r;
}

int state_begin_deployment(struct state_db *db, const char *text, const struct state_tx *tx,
                           int64_t now_ms, int64_t *ret_id)
{
    int64_t id = 0;
    sqlite3_stmt *st = NULL;
    int r = exec_simple(db, "BEGIN IMMEDIATE");
    if (r < 0)
        return r;
    if (insert_deployment(db, text, now_ms, &id) < 0)
        goto fail;
    if (sqlite3_prepare_v2(
            db->db,
            "INSERT OR REPLACE INTO deploy_tx (one, id, previous_id, kind, rollback, "
            "rolling_back, timeout_ms, started_ms, user_stopped) "
            "VALUES (1, ?, ?, ?, ?, 0, ?, ?, ?)",
            -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, tx->previous_id);
    sqlite3_bind_text(st, 3, tx->kind ? tx->kind : "deploy", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, tx->rollback);
    sqlite3_bind_int64(st, 5, tx->timeout_ms);
    sqlite3_bind_int64(st, 6, now_ms);
    sqlite3_bind_text(st, 7, tx->user_stopped, -1, SQLITE_STATIC);
    if (bind_step(st) < 0)
        goto fail;
    if (sqlite3_prepare_v2(
            db->db,
            "INSERT OR REPLACE INTO deploy_history (id, kind, previous_id, rollback, "
            "started_ms, finished_ms, outcome) VALUES (?, ?, ?, ?, ?, 0, ?)",
            -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, tx->kind ? tx->kind : "deploy", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, tx->previous_id);
    sqlite3_bind_int(st, 4, tx->rollback);
    sqlite3_bind_int64(st, 5, now_ms);
    sqlite3_bind_text(st, 6, state_outcome_name(STATE_OUTCOME_IN_PROGRESS), -1, SQLITE_STATIC);
    if (bind_step(st) < 0 || set_meta_id(db, "deployment_id", id) < 0 ||
        exec_simple(db, trim_sql) < 0 || exec_simple(db, "COMMIT") < 0)
        goto fail;
    *ret_id = id;
    return 0;
fail:
    exec_simple(db, "ROLLBACK");
    return -EIO;
}

static int update_history(struct state_db *db, int64_t id, enum state_outcome outcome,
                          const char *reason, const char *modules, int64_t finished_ms)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           "UPDATE deploy_history SET outcome = ?, reason = ?, modules = ?, "
                           "finished_ms = ? WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, state_outcome_name(outcome), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, modules, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, finished_ms);
    sqlite3_bind_int64(st, 5, id);
    return bind_step(st);
}

int state_rollback_deployment(struct state_db *db, const struct state_tx *tx, const char *reason,
                              const char *modules)
{
    int r = exec_simple(db, "BEGIN IMMEDIATE");
    if (r < 0)
        return r;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, "UPDATE deploy_tx SET rolling_back = 1 WHERE id = ?", -1, &st,
                           NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, tx->id);
    if (bind_step(st) < 0 ||
        update_history(db, tx->id, STATE_OUTCOME_ROLLING_BACK, reason, modules, 0) < 0 ||
        set_meta_id(db, "deployment_id", tx->previous_id) < 0 || exec_simple(db, "COMMIT") < 0)
        goto fail;
    return 0;
fail:
    exec_simple(db, "ROLLBACK");
    return -EIO;
}

int state_finish_deployment(struct state_db *db, const struct state_tx *tx,
                            enum state_outcome outcome, const char *reason, const char *modules,
                            int64_t now_ms)
{
    int r = exec_simple(db, "BEGIN IMMEDIATE");
    if (r < 0)
        return r;
    /* Applied: the one it replaced becomes the previous deployment (`ledge deploy --rollback`). */
    if (update_history(db, tx->id, outcome, reason, modules, now_ms) < 0 ||
        (outcome == STATE_OUTCOME_APPLIED &&
         set_meta_id(db, "previous_deployment_id", tx->previous_id) < 0) ||
        exec_simple(db, "DELETE FROM deploy_tx") < 0 || exec_simple(db, trim_sql) < 0 ||
        exec_simple(db, "COMMIT") < 0) {
        exec_simple(db, "ROLLBACK");
        return -EIO;
    }
    return 0;
}

int state_load_tx(struct state_db *db, struct state_tx *ret)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           "SELECT id, previous_id, kind, rollback, rolling_back, timeout_ms, "
                           "started_ms, user_stopped FROM deploy_tx",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        sqlite3_finalize(st);
        return r == SQLITE_DONE ? -ENOENT : -EIO;
    }
    const char *kind = (const char *)sqlite3_column_text(st, 2);
    const char *us = (const char *)sqlite3_column_text(st, 7);
    struct state_tx tx = {
        .id = sqlite3_column_int64(st, 0),
        .previous_id = sqlite3_column_int64(st, 1),
        .kind = strdup(kind ? kind : "deploy"),
        .rollback = sqlite3_column_int(st, 3) != 0,
        .rolling_back = sqlite3_column_int(st, 4) != 0,
        .timeout_ms = sqlite3_column_int64(st, 5),
        .started_ms = sqlite3_column_int64(st, 6),
        .user_stopped = us ? strdup(us) : NULL,
    };
    sqlite3_finalize(st);
    if (!tx.kind || (us && !tx.user_stopped)) {
        state_tx_clear(&tx);
        return -ENOMEM;
    }
    *ret = tx;
    return 0;
}

void state_tx_clear(struct state_tx *tx)
{
    free(tx->kind);
    free(tx->user_stopped);
    tx->kind = tx->user_stopped = NULL;
}

int state_deployment_text(struct state_db *db, int64_t id, char **ret_text)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, "SELECT manifest FROM deployments WHERE id = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_int64(st, 1, id);
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        sqlite3_finalize(st);
        return r == SQLITE_DONE ? -ENOENT : -EIO;
    }
    char *text = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (!text)
        return -ENOMEM;
    *ret_text = text;
    return 0;
}

int64_t state_meta_id(struct state_db *db, const char *key)
{
    _cleanup_free_ char *v = NULL;
    long long id;
    if (state_get_meta(db, key, &v) < 0 || lstr_to_i64(v, &id) < 0 || id < 0)
        return 0;
    return id;
}

int state_history(struct state_db *db, bool (*cb)(void *ud, const struct state_history_entry *e),
                  void *ud)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           "SELECT id, kind, previous_id, rollback, started_ms, finished_ms, "
                           "outcome, reason, modules, EXISTS (SELECT 1 FROM deployments d WHERE "
                           "d.id = deploy_history.id) FROM deploy_history ORDER BY id DESC",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const struct state_history_entry e = {
            .id = sqlite3_column_int64(st, 0),
            .kind = (const char *)sqlite3_column_text(st, 1),
            .previous_id = sqlite3_column_int64(st, 2),
            .rollback = sqlite3_column_int(st, 3) != 0,
            .started_ms = sqlite3_column_int64(st, 4),
            .finished_ms = sqlite3_column_int64(st, 5),
            .outcome = (const char *)sqlite3_column_text(st, 6),
            .reason = (const char *)sqlite3_column_text(st, 7),
            .modules = (const char *)sqlite3_column_text(st, 8),
            .has_manifest = sqlite3_column_int(st, 9) != 0,
        };
        if (!cb(ud, &e)) {
            r = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : -EIO;
}

const char *state_outcome_name(enum state_outcome o)
{
    static const char *const names[] = {"in-progress", "rolling-back", "applied",
                                        "failed",      "rolled-back",  "rollback-failed"};
    return (size_t)o < ARRAY_SIZE(names) ? names[o] : "?";
}

/* After a salvage, whether the newest deployment that came back is the one that was in force:
 * the table was read to its end, or its id is the one recorded with it in meta. */
static bool salvaged_deployment_is_latest(struct state_db *db, int64_t id)
{
    const struct ldb_table_report *t = ldb_report_table(&db->report, "deployments");
    if (t && !t->incomplete)
        return true;
    _cleanup_free_ char *recorded = NULL;
    long long v;
    return state_get_meta(db, "deployment_id", &recorded) == 0 && lstr_to_i64(recorded, &v) == 0 &&
           v == id;
}

int state_load_deployment(struct state_db *db, char **ret_text, int64_t *ret_applied_ms)
{
    /* The one in force is the one meta names (a rollback names an older one again); without
     * that record (a salvage lost it), the newest, when it can be shown to be the last saved. */
    _cleanup_free_ char *recorded = NULL;
    long long want = -1;
    if (state_get_meta(db, "deployment_id", &recorded) == 0 && lstr_to_i64(recorded, &want) == 0 &&
        want == 0)
        return -ENOENT; /* a first deployment rolled back: none in force */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           want > 0
                               ? "SELECT manifest, applied_ms, id FROM deployments WHERE id = ?"
                               : "SELECT manifest, applied_ms, id FROM deployments ORDER BY "
                                 "id DESC LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    if (want > 0)
        sqlite3_bind_int64(st, 1, want);
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        sqlite3_finalize(st);
        /* named but gone: only a salvage loses rows the trim keeps */
        return want > 0 ? -ESTALE : -ENOENT;
    }
    if (r != SQLITE_ROW) {
        sqlite3_finalize(st);
        return -EIO;
    }
    if (db->report.damaged && want <= 0 &&
        !salvaged_deployment_is_latest(db, sqlite3_column_int64(st, 2))) {
        sqlite3_finalize(st);
        return -ESTALE;
    }
    char *text = strdup((const char *)sqlite3_column_text(st, 0));
    int64_t applied = sqlite3_column_int64(st, 1);
    sqlite3_finalize(st);
    if (!text)
        return -ENOMEM;
    *ret_text = text;
    if (ret_applied_ms)
        *ret_applied_ms = applied;
    return 0;
}

int state_read_deployments(const char *dir,
                           bool (*cb)(void *ud, const char *text, int64_t applied_ms), void *ud)
{
    _cleanup_free_ char *path = lstr_printf("%s/ledged.db", dir);
    if (!path)
        return -ENOMEM;
    if (access(path, F_OK) < 0)
        return -ENOENT;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return -EIO;
    }
    sqlite3_busy_timeout(db, 2000);
    sqlite3_stmt *st = NULL;
    int r = 0;
    if (sqlite3_prepare_v2(db, "SELECT manifest, applied_ms FROM deployments ORDER BY id DESC", -1,
                           &st, NULL) != SQLITE_OK) {
        r = -EIO;
    } else {
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            const char *text = (const char *)sqlite3_column_text(st, 0);
            if (text && !cb(ud, text, sqlite3_column_int64(st, 1)))
                break;
        }
        if (s != SQLITE_ROW && s != SQLITE_DONE)
            r = -EIO;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return r;
}

int state_save_record(struct state_db *db, const struct module_record *rec)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           "INSERT OR REPLACE INTO modules (name, generation_id, restart_count, "
                           "last_start_ms, last_exit_ms, last_restart_ms, exit_code, gave_up, "
                           "user_stopped, description) VALUES (?,?,?,?,?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, rec->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, rec->generation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, rec->restart_count);
    sqlite3_bind_int64(st, 4, rec->last_start_ms);
    sqlite3_bind_int64(st, 5, rec->last_exit_ms);
    sqlite3_bind_int64(st, 6, rec->last_restart_ms);
    sqlite3_bind_int(st, 7, rec->exit_code);
    sqlite3_bind_int(st, 8, rec->gave_up);
    sqlite3_bind_int(st, 9, rec->user_stopped);
    sqlite3_bind_text(st, 10, rec->description, -1, SQLITE_STATIC);
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    return r;
}

int state_delete_record(struct state_db *db, const char *name)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, "DELETE FROM modules WHERE name = ?", -1, &st, NULL) !=
        SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    return r;
}

int state_load_records(struct state_db *db, void (*cb)(void *ud, const struct module_record *rec),
                       void *ud)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db,
                           "SELECT name, generation_id, restart_count, last_start_ms, "
                           "last_exit_ms, last_restart_ms, exit_code, gave_up, user_stopped, "
                           "description FROM modules",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        struct module_record rec = {
            .name = (char *)sqlite3_column_text(st, 0),
            .generation_id = (char *)sqlite3_column_text(st, 1),
            .restart_count = (unsigned)sqlite3_column_int64(st, 2),
            .last_start_ms = sqlite3_column_int64(st, 3),
            .last_exit_ms = sqlite3_column_int64(st, 4),
            .last_restart_ms = sqlite3_column_int64(st, 5),
            .exit_code = sqlite3_column_int(st, 6),
            .gave_up = sqlite3_column_int(st, 7) != 0,
            .user_stopped = sqlite3_column_int(st, 8) != 0,
            .description = (char *)sqlite3_column_text(st, 9),
        };
        cb(ud, &rec);
    }
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : -EIO;
}

int state_get_meta(struct state_db *db, const char *key, char **ret_value)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, "SELECT value FROM meta WHERE key = ?", -1, &st, NULL) !=
        SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r != SQLITE_ROW) {
        sqlite3_finalize(st);
        return r == SQLITE_DONE ? -ENOENT : -EIO;
    }
    char *v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (!v)
        return -ENOMEM;
    *ret_value = v;
    return 0;
}

int state_set_meta(struct state_db *db, const char *key, const char *value)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", -1,
                           &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    return r;
}

void module_record_clear(struct module_record *r)
{
    free(r->name);
    free(r->generation_id);
    free(r->description);
    r->name = r->generation_id = r->description = NULL;
}

/* ------------------------------------------------------------------ records by id */

static const char *table_name(enum state_table t)
{
    return t == STATE_DEVICE_CAS ? "device_cas" : "leaf_devices";
}

int state_put(struct state_db *db, enum state_table t, const char *id, const char *record)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO %s (id, record) VALUES (?, ?)",
             table_name(t));
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, record, -1, SQLITE_STATIC);
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    return r;
}

int state_remove(struct state_db *db, enum state_table t, const char *id)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE id = ?", table_name(t));
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    if (r == 0 && sqlite3_changes(db->db) == 0)
        r = -ENOENT;
    sqlite3_finalize(st);
    return r;
}

int state_load_all(struct state_db *db, enum state_table t,
                   void (*cb)(void *ud, const char *id, const char *record), void *ud)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "SELECT id, record FROM %s ORDER BY id", table_name(t));
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *rec = (const char *)sqlite3_column_text(st, 1);
        if (id && rec)
            cb(ud, id, rec);
    }
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : -EIO;
}
