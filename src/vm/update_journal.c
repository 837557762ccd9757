/* update_journal.c — the journal of a VM's update and its slots (update.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "vm/def.h"
#include "vm/image.h"
#include "vm/update.h"

/* A journal is a few KiB (the baseline lists the modules). */
#define JOURNAL_MAX (1u << 20)
#define FIELD_MAX 4096

static const char *const step_names[] = {
    [VMU_NONE] = "none",
    [VMU_PREPARING] = "preparing",
    [VMU_PREPARED] = "prepared",
    [VMU_SWITCHING] = "switching",
    [VMU_SWITCHED] = "switched",
    [VMU_CHECKING] = "checking",
    [VMU_ROLLING_BACK] = "rolling-back",
    [VMU_DONE] = "done",
    [VMU_ROLLED_BACK] = "rolled-back",
    [VMU_ABANDONED] = "abandoned",
};

const char *vmu_step_name(enum vmu_step s)
{
    return (unsigned)s <= VMU_STEP_MAX ? step_names[s] : "?";
}

int vmu_step_parse(const char *s, enum vmu_step *ret)
{
    for (unsigned i = 0; s && i <= VMU_STEP_MAX; i++)
        if (lstr_eq(s, step_names[i])) {
            *ret = (enum vmu_step)i;
            return 0;
        }
    return -EINVAL;
}

bool vmu_step_final(enum vmu_step s)
{
    return s == VMU_NONE || s == VMU_DONE || s == VMU_ROLLED_BACK || s == VMU_ABANDONED;
}

void vmu_journal_clear(struct vmu_journal *j)
{
    free(j->from_image);
    free(j->to_image);
    free(j->to_ledge);
    free(j->from_ledge);
    free(j->started);
    free(j->reason);
    json_decref(j->baseline);
    memset(j, 0, sizeof(*j));
}

static void set_str(json_t *o, const char *key, const char *v)
{
    if (v)
        json_object_set_new(o, key, json_string(v));
}

json_t *vmu_journal_to_json(const struct vmu_journal *j)
{
    json_t *o = json_pack("{s:i, s:s}", "version", 1, "step", vmu_step_name(j->step));
    if (!o)
        return NULL;
    set_str(o, "fromImage", j->from_image);
    set_str(o, "toImage", j->to_image);
    set_str(o, "fromLedge", j->from_ledge);
    set_str(o, "toLedge", j->to_ledge);
    set_str(o, "started", j->started);
    set_str(o, "reason", j->reason);
    if (j->baseline)
        json_object_set(o, "baseline", j->baseline);
    return o;
}

/* An optional string field (at most FIELD_MAX bytes) copied into *ret. */
static int get_str(const json_t *o, const char *key, char **ret, struct lerr *err)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) > FIELD_MAX ||
        strlen(json_string_value(v)) != json_string_length(v))
        return lerr_set(err, -EINVAL, "update journal: %s must be a string", key);
    *ret = strdup(json_string_value(v));
    return *ret ? 0 : -ENOMEM;
}

/* The baseline: {"modules": {NAME: {"containerId": S, "running": B}}, "hub": B,
 * "checkErrors": [S...]}; anything else is refused (it is compared field by field later). */
static int check_baseline(const json_t *b, struct lerr *err)
{
    if (!json_is_object(b))
        return lerr_set(err, -EINVAL, "update journal: baseline must be an object");
    const json_t *mods = json_object_get(b, "modules");
    if (mods && !json_is_object(mods))
        return lerr_set(err, -EINVAL, "update journal: baseline.modules must be an object");
    const char *name;
    json_t *m;
    json_object_foreach ((json_t *)mods, name, m) {
        const json_t *id = json_object_get(m, "containerId");
        const json_t *run = json_object_get(m, "running");
        const json_t *type = json_object_get(m, "type");
        if (!json_is_object(m) || !json_is_string(id) || (run && !json_is_boolean(run)) ||
            (type && !json_is_string(type)))
            return lerr_set(err, -EINVAL,
                            "update journal: baseline.modules.%.64s needs a containerId", name);
    }
    const json_t *hub = json_object_get(b, "hub");
    if (hub && !json_is_boolean(hub))
        return lerr_set(err, -EINVAL, "update journal: baseline.hub must be true or false");
    const json_t *ce = json_object_get(b, "checkErrors");
    if (ce && !json_is_array(ce))
        return lerr_set(err, -EINVAL, "update journal: baseline.checkErrors must be a list");
    size_t i;
    json_t *v;
    json_array_foreach (ce, i, v)
        if (!json_is_string(v))
            return lerr_set(err, -EINVAL, "update journal: baseline.checkErrors holds strings");
    return 0;
}

int vmu_journal_parse(const char *text, size_t len, struct vmu_journal *ret, struct lerr *err)
{
    memset(ret, 0, sizeof(*ret));
    if (len > JOURNAL_MAX)
        return lerr_set(err, -EFBIG, "update journal: larger than %u bytes", JOURNAL_MAX);
    _cleanup_json_ json_t *o = NULL;
    int r = ljson_parse(text, len, &o, err);
    if (r < 0)
        return lerr_prefix(err, "update journal");
    if (!json_is_object(o))
        return lerr_set(err, -EINVAL, "update journal: not an object");
    if (ljson_int(o, "version", 0) != 1)
        return lerr_set(err, -EINVAL, "update journal: version 1 expected");
    struct vmu_journal j = {0};
    if (vmu_step_parse(ljson_str(o, "step"), &j.step) < 0) {
        r = lerr_set(err, -EINVAL, "update journal: unknown step");
        goto fail;
    }
    if ((r = get_str(o, "fromImage", &j.from_image, err)) < 0 ||
        (r = get_str(o, "toImage", &j.to_image, err)) < 0 ||
        (r = get_str(o, "fromLedge", &j.from_ledge, err)) < 0 ||
        (r = get_str(o, "toLedge", &j.to_ledge, err)) < 0 ||
        (r = get_str(o, "started", &j.started, err)) < 0 ||
        (r = get_str(o, "reason", &j.reason, err)) < 0)
        goto fail;
    if ((j.from_image && vm_image_key_check(j.from_image, NULL) < 0) ||
        (j.to_image && vm_image_key_check(j.to_image, NULL) < 0)) {
        r = lerr_set(err, -EINVAL, "update journal: an image key is malformed");
        goto fail;
    }
    if (j.step != VMU_NONE && (!j.from_image || !j.to_image)) {
        r = lerr_set(err, -EINVAL, "update journal: fromImage and toImage are needed");
        goto fail;
    }
    json_t *b = json_object_get(o, "baseline");
    if (b) {
        if ((r = check_baseline(b, err)) < 0)
            goto fail;
        j.baseline = json_incref(b);
    }
    *ret = j;
    return 0;
fail:
    vmu_journal_clear(&j);
    return r;
}

int vmu_journal_save(const char *dir, const struct vmu_journal *j, struct lerr *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, VMU_JOURNAL);
    _cleanup_json_ json_t *o = vmu_journal_to_json(j);
    _cleanup_free_ char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (!text)
        return lerr_set(err, -ENOMEM, "out of memory");
    int r = lfs_write_atomic(path, text, strlen(text), 0600);
    if (r < 0)
        return lerr_set(err, r, "%s: %s", path, strerror(-r));
    return 0;
}

int vmu_journal_load(const char *dir, struct vmu_journal *ret, struct lerr *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, VMU_JOURNAL);
    _cleanup_free_ char *text = NULL;
    size_t n = 0;
    int r = lfs_read_file(path, JOURNAL_MAX, &text, &n);
    if (r < 0)
        return lerr_set(err, r, "%s: %s", path, strerror(-r));
    return vmu_journal_parse(text, n, ret, err);
}

/* ------------------------------------------------------------------ slots */

static const char *const slot_files[] = {VM_FILE_DISK, VM_FILE_KERNEL, VM_FILE_INITRD};

static bool exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

static int move(const char *from, const char *to, struct lerr *err)
{
    if (rename(from, to) < 0)
        return lerr_set(err, neg_errno(), "rename %s to %s: %s", from, to, strerror(errno));
    return 0;
}

int vmu_slots_switch(const char *dir, struct lerr *err)
{
    char next[PATH_MAX], prev[PATH_MAX];
    snprintf(next, sizeof(next), "%s/%s", dir, VMU_NEXT);
    snprintf(prev, sizeof(prev), "%s/%s", dir, VMU_PREV);
    if (mkdir(prev, 0750) < 0 && errno != EEXIST)
        return lerr_set(err, neg_errno(), "%s: %s", prev, strerror(errno));
    for (size_t i = 0; i < ARRAY_SIZE(slot_files); i++) {
        char cur[PATH_MAX + 32], n[PATH_MAX + 32], p[PATH_MAX + 32];
        snprintf(cur, sizeof(cur), "%s/%s", dir, slot_files[i]);
        snprintf(n, sizeof(n), "%s/%s", next, slot_files[i]);
        snprintf(p, sizeof(p), "%s/%s", prev, slot_files[i]);
        int r;
        /* cur, next -> prev, next -> prev, cur; a crash in between is the middle state */
        if (exists(n) && exists(cur) && !exists(p) && (r = move(cur, p, err)) < 0)
            return r;
        if (exists(n) && !exists(cur) && (r = move(n, cur, err)) < 0)
            return r;
        if (!exists(cur) || !exists(p))
            return lerr_set(err, -ENOENT, "%s: the slots are incomplete (%s, %s/%s)", dir,
                            slot_files[i], VMU_PREV, slot_files[i]);
    }
    lfs_fsync_dir(prev);
    lfs_fsync_dir(dir);
    rmdir(next);
    return 0;
}

int vmu_slots_restore(const char *dir, struct lerr *err)
{
    char prev[PATH_MAX];
    snprintf(prev, sizeof(prev), "%s/%s", dir, VMU_PREV);
    for (size_t i = 0; i < ARRAY_SIZE(slot_files); i++) {
        char cur[PATH_MAX + 32], p[PATH_MAX + 32];
        snprintf(cur, sizeof(cur), "%s/%s", dir, slot_files[i]);
        snprintf(p, sizeof(p), "%s/%s", prev, slot_files[i]);
        int r;
        if (exists(p) && (r = move(p, cur, err)) < 0)
            return r;
        if (!exists(cur))
            return lerr_set(err, -ENOENT, "%s: %s is missing and %s has none", dir, slot_files[i],
                            VMU_PREV);
    }
    lfs_fsync_dir(dir);
    rmdir(prev);
    /* a switch cut short left the new files in next/ */
    char next[PATH_MAX];
    snprintf(next, sizeof(next), "%s/%s", dir, VMU_NEXT);
    vm_rm_rf(next);
    return 0;
}

int vmu_slots_prepare(const char *dir, const char *cache, const char *key, uint64_t disk,
                      struct lerr *err)
{
    char next[PATH_MAX];
    snprintf(next, sizeof(next), "%s/%s", dir, VMU_NEXT);
    vm_rm_rf(next);
    if (mkdir(next, 0750) < 0)
        return lerr_set(err, neg_errno(), "%s: %s", next, strerror(errno));
    const char *copies[][2] = {{VM_IMAGE_ROOTFS, VM_FILE_DISK},
                               {VM_IMAGE_KERNEL, VM_FILE_KERNEL},
                               {VM_IMAGE_INITRD, VM_FILE_INITRD}};
    int r = 0;
    for (size_t i = 0; i < ARRAY_SIZE(copies); i++) {
        char src[PATH_MAX + 64], dst[PATH_MAX + 32];
        snprintf(src, sizeof(src), "%s/%s/%s", cache, key, copies[i][0]);
        snprintf(dst, sizeof(dst), "%s/%s", next, copies[i][1]);
        if ((r = vm_copy_sparse(src, dst, err)) < 0)
            goto fail;
    }
    char root[PATH_MAX + 32];
    snprintf(root, sizeof(root), "%s/%s", next, VM_FILE_DISK);
    struct stat st;
    if (stat(root, &st) < 0) {
        r = lerr_set(err, neg_errno(), "%s: %s", root, strerror(errno));
        goto fail;
    }
    if ((uint64_t)st.st_size > disk) {
        char a[32];
        r = lerr_set(err, -EINVAL, "the image's root needs %s, more than the VM's disk",
                     vm_size_format((uint64_t)st.st_size, a, sizeof(a)));
        goto fail;
    }
    if (truncate(root, (off_t)disk) < 0) {
        r = lerr_set(err, neg_errno(), "%s: %s", root, strerror(errno));
        goto fail;
    }
    lfs_fsync_dir(next);
    return 0;
fail:
    vm_rm_rf(next);
    return r;
}
