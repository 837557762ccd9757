/* update.h — `ledge vm update NAME`: A/B updates of a guest. The new image's root, kernel and
 * initramfs are prepared beside the running ones (<vm>/next/), the VM is stopped, the slots
 * switched (the old files to <vm>/prev/), the VM boots the new image and is held to the health it
 * had (its ledged answers, the hub reports, every module adopted with the same container id and
 * running as before, the guest's `ledge check` no worse, the guest's ledge the new package's);
 * when it falls short the previous files are put back and the VM boots them again. The guest's
 * state lives on its data disk (VM_FILE_DATA), which both images share. Every step is journaled
 * (<vm>/update.json) so that a killed updater is finished by `ledge vm update NAME --resume`.
 * docs/vm.md "Updates". Blocking, for the CLI. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"
#include "vm/host.h"

#define VMU_JOURNAL "update.json"
#define VMU_LOCK "update.lock"
#define VMU_NEXT "next" /* the new image's files, before the switch */
#define VMU_PREV "prev" /* the previous image's files, after it */

enum vmu_step {
    VMU_NONE = 0,
    VMU_PREPARING,    /* writing next/ (the VM runs the old image) */
    VMU_PREPARED,     /* next/ complete, the baseline taken */
    VMU_SWITCHING,    /* stopping the VM, moving the slots */
    VMU_SWITCHED,     /* the new files in place, the old ones in prev/ */
    VMU_CHECKING,     /* the VM boots the new image; health being checked */
    VMU_ROLLING_BACK, /* putting prev/ back and booting it */
    VMU_DONE,         /* healthy on the new image */
    VMU_ROLLED_BACK,  /* back on the previous image (reason says why) */
    VMU_ABANDONED,    /* stopped before the switch; nothing changed */
};
#define VMU_STEP_MAX VMU_ABANDONED

const char *vmu_step_name(enum vmu_step s);
int vmu_step_parse(const char *s, enum vmu_step *ret);
/* A finished journal (done, rolled back, abandoned) needs nothing more. */
bool vmu_step_final(enum vmu_step s);

struct vmu_journal {
    enum vmu_step step;
    char *from_image; /* the keys of the two images */
    char *to_image;
    char *to_ledge; /* the new image's ledge package version (its manifest) */
    char *from_ledge;
    char *started;    /* ISO 8601 */
    char *reason;     /* why it was rolled back (or abandoned) */
    json_t *baseline; /* {"modules": {NAME: {"containerId", "running"}}, "hub": bool,
                          "checkErrors": [ID...]} */
};

void vmu_journal_clear(struct vmu_journal *j);
json_t *vmu_journal_to_json(const struct vmu_journal *j);
/* Parse a journal's text (bounded: every field checked; the fuzzed parser). */
int vmu_journal_parse(const char *text, size_t len, struct vmu_journal *ret, struct lerr *err);
/* <dir>/VMU_JOURNAL written atomically and durably / read (-ENOENT: none). */
int vmu_journal_save(const char *dir, const struct vmu_journal *j, struct lerr *err);
int vmu_journal_load(const char *dir, struct vmu_journal *ret, struct lerr *err);

/* The slots, file moves that can be repeated after a crash at any point:
 * switch: for each of the root, kernel and initramfs, the current file to prev/ and next/'s in
 * its place; restore: prev/'s files back in place (the new ones dropped). */
int vmu_slots_switch(const char *dir, struct lerr *err);
int vmu_slots_restore(const char *dir, struct lerr *err);
/* next/ made from image key (a sparse root grown to disk bytes, the kernel, the initramfs). */
int vmu_slots_prepare(const char *dir, const char *cache, const char *key, uint64_t disk,
                      struct lerr *err);

struct vmu_options {
    int timeout_s; /* how long the new image has to boot and be healthy */
    /* tests: SIGKILL ourselves right after journaling this step (VMU_NONE: never) */
    enum vmu_step stop_at;
    void (*say)(void *ud, const char *line); /* progress, one line at a time */
    void *ud;
};

/* Update running VM name to image key. 0: healthy on it. -ECANCELED: it was not healthy and the
 * VM runs the previous image again (err says why). Other < 0: refused or failed before anything
 * changed, or the rollback itself failed (err says what state it is in). */
int vm_update(const struct vm_host *h, const char *name, const char *key,
              const struct vmu_options *o, struct lerr *err);
/* Finish an update whose updater was killed: before the switch it is abandoned (next/ removed),
 * after it rolled back. 0 with *ret_what "nothing", "abandoned" or "rolled-back". */
int vm_update_resume(const struct vm_host *h, const char *name, const struct vmu_options *o,
                     const char **ret_what, struct lerr *err);
/* For a VM that is not running (ledged's autostart, before it starts the VM): an unfinished
 * update is finished without booting — abandoned before the switch, else the previous image's
 * files put back — so that the VM boots a whole image. *ret_what "nothing", "abandoned" or
 * "rolled-back"; -EBUSY when an updater holds the VM (it boots the VM itself). h->cache unused. */
int vm_update_recover_stopped(const struct vm_host *h, const char *name, const char **ret_what,
                              struct lerr *err);
/* The journal of VM name's last update as JSON, -ENOENT when it never had one. */
int vm_update_status(const struct vm_host *h, const char *name, json_t **ret, struct lerr *err);
