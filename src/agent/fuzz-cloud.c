/* fuzz-cloud.c — libFuzzer target for what the cloud sends: arbitrary bytes as a twin's desired
 * properties (whole, then as a merge patch over them), through cloud.h's conversion to the
 * manifest and on into manifest_parse; merge_diff's result applied must give the target back. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/cloud.h"
#include "agent/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t e;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, &e);
    if (!j)
        return 0;
    (void)cloud_desired_version(j);
    (void)cloud_desired_has_deployment(j);
    char *text = cloud_manifest_text(j, j);
    if (text) {
        struct deployment *d = NULL;
        struct lstrv errors = LSTRV_INIT;
        int r = manifest_parse(text, strlen(text), "/usr/libexec/ledge/ledge-hub", &d, &errors);
        if (r == 0)
            deployment_free(d);
        else if (r == -EINVAL) {
            char *desc = cloud_describe_errors(&errors);
            if (!desc || strlen(desc) > CLOUD_DESCRIPTION_MAX)
                abort();
            free(desc);
        }
        lstrv_free(&errors);
        free(text);
    }
    /* a patch of the document over an empty object, and the diff back */
    json_t *t = json_object();
    cloud_merge_patch(&t, j);
    json_t *base = json_pack("{s:i, s:{s:i}}", "a", 1, "m", "x", 2);
    json_t *diff = cloud_merge_diff(base, t);
    json_t *again = json_deep_copy(base);
    if (diff)
        cloud_merge_patch(&again, diff);
    /* merge patches cannot express null values: compare only null-free targets */
    char *dump = t ? json_dumps(t, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (dump && !strstr(dump, "null") && json_is_object(t) && !json_equal(again, t))
        abort();
    free(dump);
    json_decref(again);
    json_decref(diff);
    json_decref(base);
    json_decref(t);
    json_decref(j);
    return 0;
}
