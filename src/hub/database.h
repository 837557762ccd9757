/* database.h — the hub's SQLite database, <hub.store_dir>/twins.db: the one place that opens,
 * migrates, checks and closes it. Its tables belong to twin.c (twins) and session.c (sessions);
 * they get the handle from here. A damaged file is salvaged (src/db: kept aside with a timestamp,
 * what SQLite can still read copied into a fresh database); a database that cannot be opened at
 * all leaves the hub running without twins and persistent sessions: the queues are served
 * whatever happened to twins.db. */
#pragma once

#include <jansson.h>

#include "base/errors.h"
#include "hub.h"

struct sqlite3;

/* Open twins.db, logging a salvage or a failure. 0, or -ENOMEM. */
int database_open(struct hub *h);
void database_close(struct hub *h);
/* The open database, or NULL (not opened, could not be opened, closed). */
struct sqlite3 *database_handle(struct hub *h);
/* For `ledge hub status`: {"path", "available", "error"?, "damaged", "problem"?, ...}. */
json_t *database_status(struct hub *h);
