/* database.c — twins.db (database.h): WAL, synchronous=FULL, and the schema of every table in it
 * in one place. */
#include "hub/database.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>

#include "base/str.h"

struct database {
    sqlite3 *db;
};

/* The schema. twins: desired and reported properties of each module with their versions and
 * the hash of the deployment's desired document last applied (twin.c). sessions: the
 * subscriptions of persistent MQTT sessions, JSON [[filter, qos], ...] (session.c). */
static const char *const schema[] = {
    "CREATE TABLE IF NOT EXISTS twins (module TEXT PRIMARY KEY, desired TEXT NOT NULL, "
    "desired_version INTEGER NOT NULL, reported TEXT NOT NULL, reported_version INTEGER NOT "
    "NULL, manifest_hash TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, device TEXT NOT NULL, "
    "module TEXT NOT NULL, subs TEXT NOT NULL)",
};

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

int database_open(struct hub *h, struct lerr *err)
{
    struct database *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    h->db = d;
    _cleanup_free_ char *path = lstr_printf("%s/twins.db", h->cfg.hub.store_dir);
    if (!path)
        return -ENOMEM;
    int r = sqlite3_open_v2(path, &d->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) == SQLITE_OK
                ? exec(d->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
                : -EIO;
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(schema); i++)
        r = exec(d->db, schema[i]);
    if (r < 0)
        return lerr_set(err, -EIO, "twins database %s: %s", path,
                        d->db ? sqlite3_errmsg(d->db) : "cannot open");
    return 0;
}

void database_close(struct hub *h)
{
    if (!h->db)
        return;
    sqlite3_close(h->db->db);
    free(h->db);
    h->db = NULL;
}

struct sqlite3 *database_handle(struct hub *h)
{
    return h->db ? h->db->db : NULL;
}
