/* state.h — ledged's durable state in SQLite (WAL, synchronous=FULL, 0600): the applied deployment,
 * each module's runtime record, the leaf devices and their registered CAs. Survives restarts and
 * power loss: a deployment is acknowledged only after its transaction is on disk. A damaged file
 * is salvaged at open (db/db.h). */
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

/* The current deployment (manifest text), replacing the previous one; history keeps the last
 * few for `ledge deploy --rollback`-style inspection. */
int state_save_deployment(struct state_db *db, const char *text, int64_t now_ms);
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
