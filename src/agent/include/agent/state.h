/* state.h — ledged's durable state in SQLite (WAL, synchronous=FULL, 0600): the applied deployment,
 * the one being applied and the one before (atomic deployments, docs/deployments.md), the
 * deployment history, each module's runtime record, the leaf devices and their registered CAs.
 * Survives restarts and power loss: a deployment is acknowledged only after its transaction is on
 * disk. A damaged file is salvaged at open (db/db.h). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"
#include "db/db.h"

struct state_db;

struct module_record {
    char *name;
    char *generation_id;
    unsigned restart_count;
    int64_t last_start_ms;
    int64_t last_exit_ms;
    int64_t last_restart_ms;
    int exit_code;
    bool gave_up;      /* restart policy gave up: failed until redeployed or started by hand */
    bool user_stopped; /* stopped by request: stays stopped until started or redeployed */
    char *description; /* last status description */
};

/* <dir>/ledged.db. A damaged file is not an error: it is moved aside and what could be read is
 * kept (state_open_report() says what happened, for the caller to log and show). */
int state_open(const char *dir, struct state_db **ret, struct lerr *err);
void state_close(struct state_db *db);
/* What opening found: report->damaged, where the file went, the rows recovered per table. */
const struct ldb_report *state_open_report(const struct state_db *db);

/* The current deployment (manifest text), in force at once, replacing the previous one (no
 * transaction, no history entry: tests and tools). */
int state_save_deployment(struct state_db *db, const char *text, int64_t now_ms);

/* How a deployment ended, as the history says it (docs/deployments.md). */
enum state_outcome {
    STATE_OUTCOME_IN_PROGRESS,
    STATE_OUTCOME_ROLLING_BACK,
    STATE_OUTCOME_APPLIED,
    STATE_OUTCOME_FAILED,          /* a step or a module failed, kept as it is (--no-rollback) */
    STATE_OUTCOME_ROLLED_BACK,     /* failed; the previous deployment is restored */
    STATE_OUTCOME_ROLLBACK_FAILED, /* failed, and restoring the previous one failed too */
};
const char *state_outcome_name(enum state_outcome o);

/* A deployment being applied: stored, with the one it replaces, before anything is touched, so
 * that a restarted ledged finishes it (or its rollback). */
struct state_tx {
    int64_t id;          /* its manifest in deployments; in force while it is applied */
    int64_t previous_id; /* in force before it, 0 for none: what a rollback restores */
    char *kind;          /* "deploy", or "rollback" for `ledge deploy --rollback` */
    bool rollback;       /* roll back when it fails (false: --no-rollback) */
    bool rolling_back;   /* failed; previous_id is in force again and being restored */
    int64_t timeout_ms;  /* deadline for its modules to run */
    int64_t started_ms;
    char *user_stopped; /* JSON array: modules stopped by request before it (restored too) */
};
/* Store text as the deployment in force, tx (id and started_ms ignored) as in progress and its
 * history entry, in one transaction. */
int state_begin_deployment(struct state_db *db, const char *text, const struct state_tx *tx,
                           int64_t now_ms, int64_t *ret_id);
/* It failed: previous_id is in force again; reason and modules (JSON array of {module, reason})
 * go to its history entry. */
int state_rollback_deployment(struct state_db *db, const struct state_tx *tx, const char *reason,
                              const char *modules);
/* It ended: the history entry says how, the transaction is gone; when applied, the one it
 * replaced becomes the previous deployment. */
int state_finish_deployment(struct state_db *db, const struct state_tx *tx,
                            enum state_outcome outcome, const char *reason, const char *modules,
                            int64_t now_ms);
/* -ENOENT when no deployment is in progress. */
int state_load_tx(struct state_db *db, struct state_tx *ret);
void state_tx_clear(struct state_tx *tx);
/* A kept manifest by id; -ENOENT when it is gone (only the last few are kept). */
int state_deployment_text(struct state_db *db, int64_t id, char **ret_text);
/* An id kept in meta: "deployment_id" (in force), "previous_deployment_id"; 0 when none. */
int64_t state_meta_id(struct state_db *db, const char *key);

/* The history: the last STATE_HISTORY_MAX deployments, newest first, until cb returns false.
 * Strings are valid during the call; modules is a JSON array text or NULL. */
#define STATE_HISTORY_MAX 20
struct state_history_entry {
    int64_t id;
    const char *kind;
    int64_t previous_id;
    bool rollback;
    int64_t started_ms, finished_ms; /* finished 0: in progress */
    const char *outcome;
    const char *reason;
    const char *modules;
    bool has_manifest; /* its manifest is kept: it can be applied again */
};
int state_history(struct state_db *db, bool (*cb)(void *ud, const struct state_history_entry *e),
                  void *ud);
/* The deployment in force. -ENOENT when none was ever applied (or none was recovered); -ESTALE
 * after a salvage when the newest one that came back cannot be shown to be the last one saved
 * (the table was damaged and the id recorded with it is lost or names another): booting an older
 * one would recreate modules with outdated settings. */
int state_load_deployment(struct state_db *db, char **ret_text, int64_t *ret_applied_ms);
/* Read <dir>/ledged.db without opening it for writing (no salvage, nothing created: for tools
 * that look while ledged may be running or down, such as support bundles): cb gets every
 * deployment kept, newest first, until it returns false. -ENOENT without a database. */
int state_read_deployments(const char *dir,
                           bool (*cb)(void *ud, const char *text, int64_t applied_ms), void *ud);

int state_save_record(struct state_db *db, const struct module_record *rec);
int state_delete_record(struct state_db *db, const char *name);
/* Calls cb for each stored record; the record is only valid during the call. */
int state_load_records(struct state_db *db, void (*cb)(void *ud, const struct module_record *rec),
                       void *ud);

int state_get_meta(struct state_db *db, const char *key, char **ret_value);
int state_set_meta(struct state_db *db, const char *key, const char *value);

/* Records kept by id, one JSON text each: leaf devices (identity/leaf.h's stored form, keys
 * sealed) and the CAs registered for CA-signed leaf devices (src/daemon/devices.c). */
enum state_table {
    STATE_LEAF_DEVICES,
    STATE_DEVICE_CAS,
};
/* Insert or replace; committed (synchronous=FULL) when it returns 0. */
int state_put(struct state_db *db, enum state_table t, const char *id, const char *record);
/* -ENOENT when there was none. */
int state_remove(struct state_db *db, enum state_table t, const char *id);
/* cb for each record, in id order; valid during the call only. */
int state_load_all(struct state_db *db, enum state_table t,
                   void (*cb)(void *ud, const char *id, const char *record), void *ud);

void module_record_clear(struct module_record *r);
