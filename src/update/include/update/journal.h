/* journal.h — the durable record of one `ledge update`: which step it reached, the versions and
 * packages on both sides, what the runtime looked like before (the baseline its health is held
 * to) and why it was rolled back. Written with lfs_write_atomic() before every step, so that a
 * power cut leaves the last step begun; upd_resume_action() says what the next start does. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"

/* In order; a journal only moves forward through them (rolling back is forward too). */
enum upd_step {
    UPD_PREPARED = 1, /* baseline taken, both packages kept; nothing changed yet */
    UPD_INSTALLING,   /* dpkg -i of the new package began */
    UPD_INSTALLED,    /* the new package is installed */
    UPD_RESTARTING,   /* ledged and the hub are being restarted on the new version */
    UPD_CHECKING,     /* the new runtime's health is being checked */
    UPD_DONE,         /* healthy: the update is finished */
    UPD_ROLLING_BACK, /* the previous package is being reinstalled and restarted */
    UPD_ROLLED_BACK,  /* the previous version runs again (reason says why) */
};
#define UPD_STEP_MAX UPD_ROLLED_BACK

/* A bound on a journal file, and on what its parser accepts. */
#define UPD_JOURNAL_MAX (1024 * 1024)

struct upd_journal {
    char *id; /* "<start time in ms>-<pid>" */
    enum upd_step step;
    char *from_version, *from_deb; /* the installed version and a .deb of it */
    char *to_version, *to_deb;     /* the new version and its kept .deb */
    char *reason;                  /* why it was rolled back; NULL otherwise */
    int64_t started_ms, updated_ms;
    /* What ledged, the hub and the modules looked like before (owned; see update.h):
     * {"ledgedPid": N, "ledgedArgv": [...], "ledgedLog": "...", "hub": bool,
     *  "modules": {"name": {"containerId": "...", "running": bool}}, "checkErrors": [ids]} */
    json_t *baseline;
};

const char *upd_step_name(enum upd_step s);
/* -EINVAL for a name that is no step. */
int upd_step_parse(const char *name, enum upd_step *ret);
/* Is an update in this step still to be finished (by resuming)? */
bool upd_step_unfinished(enum upd_step s);

/* What resuming does with a journal left in a step. */
enum upd_resume_action {
    UPD_RESUME_NOTHING,  /* finished (done or rolled back) */
    UPD_RESUME_ABANDON,  /* nothing was installed: forget the update, the old version runs */
    UPD_RESUME_ROLLBACK, /* interrupted mid-update: roll back to the previous version */
};
enum upd_resume_action upd_resume_action(enum upd_step s);

/* Parse a journal (strict: unknown steps, missing fields and wrong types are refused with the
 * field in err). On success *ret is filled (free with upd_journal_clear). */
int upd_journal_parse(const char *text, size_t n, struct upd_journal *ret, struct lerr *err);
/* The journal as JSON text (malloc'd), or NULL without memory. */
char *upd_journal_format(const struct upd_journal *j);
/* Load from path: -ENOENT when there is none. */
int upd_journal_load(const char *path, struct upd_journal *ret, struct lerr *err);
/* Set step (and updated_ms) and write the journal durably. */
int upd_journal_save(const char *path, struct upd_journal *j, enum upd_step step);
void upd_journal_clear(struct upd_journal *j);
