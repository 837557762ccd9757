/* database.c — twins.db (database.h): opened through ldb_open (WAL, synchronous=FULL, mode 0600,
 * quick_check at open, salvage when damaged), with the schema of every table in it in one place. */
#include "database.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "db/db.h"
#include "log/log.h"

#define COMP "hub"

struct database {
    sqlite3 *db;
    char *path;
    struct ldb_report report;
    char *error; /* why it could not be opened */
};

/* The schema. twins: desired and reported properties of each module with their versions and
 * the hash of the deployment's desired document last applied (twin.c). sessions: the
 * subscriptions of persistent MQTT sessions, JSON [[filter, qos], ...] (session.c). A salvage
 * copies these tables by column name. */
static const char schema[] =
    "CREATE TABLE IF NOT EXISTS twins (module TEXT PRIMARY KEY, desired TEXT NOT NULL, "
    "desired_version INTEGER NOT NULL, reported TEXT NOT NULL, reported_version INTEGER NOT "
    "NULL, manifest_hash TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, device TEXT NOT NULL, "
    "module TEXT NOT NULL, subs TEXT NOT NULL);";

int database_open(struct hub *h)
{
    struct database *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    h->db = d;
    d->path = lstr_printf("%s/twins.db", h->cfg.hub.store_dir);
    if (!d->path)
        return -ENOMEM;
    struct ldb_options o = {.schema = schema, .synchronous = LDB_SYNC_FULL};
    struct lerr err = {0};
    int r = ldb_open(d->path, &o, &d->db, &d->report, &err);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        d->error = strdup(lerr_str(&err));
        log_error(COMP,
                  "twins %s; running without twins and persistent sessions (the queues are "
                  "served)",
                  lerr_str(&err));
        return 0;
    }
    if (d->report.damaged) {
        _cleanup_free_ char *summary = ldb_report_summary(&d->report);
        log_warn(COMP, "twins database %s was damaged: %s", d->path,
                 summary ? summary : d->report.problem);
    }
    return 0;
}

void database_close(struct hub *h)
{
    struct database *d = h->db;
    if (!d)
        return;
    sqlite3_close(d->db);
    ldb_report_clear(&d->report);
    free(d->path);
    free(d->error);
    free(d);
    h->db = NULL;
}

struct sqlite3 *database_handle(struct hub *h)
{
    return h->db ? h->db->db : NULL;
}

json_t *database_status(struct hub *h)
{
    struct database *d = h->db;
    if (!d)
        return json_pack("{s:b}", "available", 0);
    json_t *o = d->db ? ldb_report_json(&d->report) : json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "path", json_string(d->path));
    json_object_set_new(o, "available", json_boolean(d->db != NULL));
    if (d->error)
        json_object_set_new(o, "error", json_string(d->error));
    return o;
}
