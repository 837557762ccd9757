/* database.h — the hub's SQLite database, <hub.store_dir>/twins.db: the one place that opens,
 * migrates and closes it. Its tables belong to twin.c (twins) and session.c (sessions); they get
 * the handle from here. */
#pragma once

#include "base/errors.h"
#include "hub/hub.h"

struct sqlite3;

int database_open(struct hub *h, struct lerr *err);
void database_close(struct hub *h);
/* The open database, or NULL (before database_open(), after database_close()). */
struct sqlite3 *database_handle(struct hub *h);
