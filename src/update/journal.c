/* journal.c — the update journal's steps, its JSON form and its durable writes (journal.h). */
#include "update/journal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/str.h"
#include "base/timeutil.h"

static const char *const step_names[] = {
    [UPD_PREPARED] = "prepared",         [UPD_INSTALLING] = "installing",
    [UPD_INSTALLED] = "installed",       [UPD_RESTARTING] = "restarting",
    [UPD_CHECKING] = "checking",         [UPD_DONE] = "done",
    [UPD_ROLLING_BACK] = "rolling-back", [UPD_ROLLED_BACK] = "rolled-back",
};

const char *upd_step_name(enum upd_step s)
{
    if ((int)s < UPD_PREPARED || s > UPD_STEP_MAX)
        return "unknown";
    return step_names[s];
}

int upd_step_parse(const char *name, enum upd_step *ret)
{
    for (int s = UPD_PREPARED; s <= UPD_STEP_MAX; s++)
        if (lstr_eq(name, step_names[s])) {
            *ret = (enum upd_step)s;
            return 0;
        }
    return -EINVAL;
}

bool upd_step_unfinished(enum upd_step s)
{
    return s != UPD_DONE && s != UPD_ROLLED_BACK;
}

enum upd_resume_action upd_resume_action(enum upd_step s)
{
    switch (s) {
    case UPD_PREPARED:
        return UPD_RESUME_ABANDON;
    case UPD_INSTALLING:
    case UPD_INSTALLED:
    case UPD_RESTARTING:
    case UPD_CHECKING:
    case UPD_ROLLING_BACK:
        /* The new version never proved healthy (or the rollback was under way): whatever dpkg
         * and the processes were left as, the previous version is installed and started again. */
        return UPD_RESUME_ROLLBACK;
    case UPD_DONE:
    case UPD_ROLLED_BACK:
        break;
    }
    return UPD_RESUME_NOTHING;
}

void upd_journal_clear(struct upd_journal *j)
{
    if (!j)
        return;
    free(j->id);
    free(j->from_version);
    free(j->from_deb);
    free(j->to_version);
    free(j->to_deb);
    free(j->reason);
    json_decref(j->baseline);
    memset(j, 0, sizeof(*j));
}

static int take_str(const json_t *o, const char *key, bool required, char **ret, struct lerr *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return lerr_set(err, -EINVAL, "update journal: %s: missing", key);
        *ret = NULL;
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v))
        return lerr_set(err, -EINVAL, "update journal: %s: must be a non-empty string", key);
    *ret = strdup(json_string_value(v));
    return *ret ? 0 : lerr_set(err, -ENOMEM, "out of memory");
}

static int take_ms(const json_t *o, const char *key, int64_t *ret, struct lerr *err)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return lerr_set(err, -EINVAL, "update journal: %s: must be a non-negative integer", key);
    *ret = json_integer_value(v);
    return 0;
}

int upd_journal_parse(const char *text, size_t n, struct upd_journal *ret, struct lerr *err)
{
    if (n > UPD_JOURNAL_MAX)
        return lerr_set(err, -EFBIG, "update journal: larger than %d bytes", UPD_JOURNAL_MAX);
    _cleanup_json_ json_t *o = NULL;
    int r = ljson_parse(text, n, &o, err);
    if (r < 0) {
        lerr_prefix(err, "update journal");
        return r;
    }
    if (!json_is_object(o))
        return lerr_set(err, -EINVAL, "update journal: must be a JSON object");
    struct upd_journal j = {0};
    const char *step = ljson_str(o, "step");
    if (!step)
        r = lerr_set(err, -EINVAL, "update journal: step: missing");
    else if (upd_step_parse(step, &j.step) < 0)
        r = lerr_set(err, -EINVAL, "update journal: step: \"%.64s\" is no step", step);
    if (r >= 0)
        r = take_str(o, "id", true, &j.id, err);
    if (r >= 0)
        r = take_str(o, "fromVersion", true, &j.from_version, err);
    if (r >= 0)
        r = take_str(o, "fromDeb", true, &j.from_deb, err);
    if (r >= 0)
        r = take_str(o, "toVersion", true, &j.to_version, err);
    if (r >= 0)
        r = take_str(o, "toDeb", true, &j.to_deb, err);
    if (r >= 0)
        r = take_str(o, "reason", false, &j.reason, err);
    if (r >= 0)
        r = take_ms(o, "startedMs", &j.started_ms, err);
    if (r >= 0)
        r = take_ms(o, "updatedMs", &j.updated_ms, err);
    if (r >= 0) {
        json_t *b = json_object_get(o, "baseline");
        if (!json_is_object(b))
            r = lerr_set(err, -EINVAL, "update journal: baseline: must be an object");
        else
            j.baseline = json_incref(b);
    }
    if (r < 0) {
        upd_journal_clear(&j);
        return r;
    }
    *ret = j;
    return 0;
}

char *upd_journal_format(const struct upd_journal *j)
{
    _cleanup_json_ json_t *o = json_pack(
        "{s:s?, s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:I, s:I, s:O?}", "id", j->id, "step",
        upd_step_name(j->step), "fromVersion", j->from_version, "fromDeb", j->from_deb, "toVersion",
        j->to_version, "toDeb", j->to_deb, "reason", j->reason, "startedMs",
        (json_int_t)j->started_ms, "updatedMs", (json_int_t)j->updated_ms, "baseline", j->baseline);
    if (!o)
        return NULL;
    return json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
}

int upd_journal_load(const char *path, struct upd_journal *ret, struct lerr *err)
{
    _cleanup_free_ char *text = NULL;
    size_t n = 0;
    int r = lfs_read_file(path, UPD_JOURNAL_MAX, &text, &n);
    if (r < 0)
        return lerr_set(err, r, "%s: %s", path, strerror(-r));
    r = upd_journal_parse(text, n, ret, err);
    if (r < 0)
        lerr_prefix(err, "%s", path);
    return r;
}

int upd_journal_save(const char *path, struct upd_journal *j, enum upd_step step)
{
    j->step = step;
    j->updated_ms = ltime_now_ms();
    _cleanup_free_ char *text = upd_journal_format(j);
    if (!text)
        return -ENOMEM;
    return lfs_write_atomic(path, text, strlen(text), 0600);
}
