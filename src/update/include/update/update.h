/* update.h — `ledge update`: replace the installed ledge package with another one, restart
 * ledged and the hub on it without recreating any module, hold the new runtime to the old one's
 * health within a deadline, and reinstall the previous package when it falls short — every step
 * journaled (journal.h) so that a power cut anywhere is finished or rolled back by the next start
 * (ledged) or by `ledge update --resume`. docs/update.md. Blocking; for the CLI. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"

struct upd_options {
    const char *state_dir;     /* the journal and the kept packages: <state_dir>/updates/ */
    const char *mgmt_socket;   /* ledged's management socket */
    const char *config_path;   /* passed to `ledge check --config` */
    const char *ledge_program; /* the CLI that runs `check` (the installed one: /usr/bin/ledge) */
    int64_t deadline_ms;       /* how long the restarted runtime has to be healthy */
    int stop_at; /* tests: SIGKILL ourselves right after journaling step N (enum upd_step) */
    void (*say)(void *ud, const char *line); /* progress, one line at a time */
    void *ud;
};

/* The folder of the journal and the packages, and the journal's path (into buf). */
void upd_dir(const char *state_dir, char *buf, size_t size);
void upd_journal_path(const char *state_dir, char *buf, size_t size);

/* Install deb. 0: installed and healthy. -ECANCELED: it was not healthy and the previous version
 * was reinstalled (err says why). Other < 0: refused or failed before anything changed, or the
 * rollback itself failed (err says what, and what state things are in). */
int upd_update(const struct upd_options *o, const char *deb, struct lerr *err);
/* The package `ledge update --apt` asks apt for. */
#define UPD_APT_PACKAGE "ledge"
/* Ask apt for the candidate version of UPD_APT_PACKAGE (apt-cache policy): 1 when it is not newer
 * than the installed one (said through o->say), else download it with apt-get download into
 * <state_dir>/updates/apt/ (removed after) and install it as upd_update() does, with the same
 * results. -ENOENT with err when apt is missing or no repository offers the package. */
int upd_update_apt(const struct upd_options *o, struct lerr *err);
/* Finish an update a crash interrupted: roll it back (or forget it when nothing was installed).
 * 0 with *ret_what "nothing", "abandoned" or "rolled-back"; < 0 with err. */
int upd_resume(const struct upd_options *o, const char **ret_what, struct lerr *err);
/* Is there an unfinished update that no updater is working on (its lock is free)? */
bool upd_resume_needed(const char *state_dir);
/* Run argv outside our session, process group and (with systemd) service cgroup, so that
 * stopping whoever started it does not stop it: systemd-run --scope when systemd runs the
 * machine, else setsid and a double fork. Its stdout and stderr append to log_path. */
int upd_spawn_detached(char *const argv[], const char *log_path);
