/* fuzz-createopts.c — libFuzzer target: createOptions JSON through the normaliser. A document
 * that normalises is a fixed point (normalising it again gives the same document, without
 * errors), a refused one says why at least once, and the accessors read either safely. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/json.h"
#include "engine/createopts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct count {
    size_t errors, notes;
};

static void count_report(void *ud, bool error, const char *path, const char *msg)
{
    struct count *c = ud;
    if (!path || !msg || !*msg)
        abort();
    if (error)
        c->errors++;
    else
        c->notes++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *given = NULL;
    if (ljson_parse((const char *)data, size, &given, NULL) < 0)
        return 0;
    struct count c = {0};
    json_t *doc = NULL;
    int r = createopts_normalize(given, "createOptions", count_report, &c, &doc);
    if (r == 0) {
        if (c.errors)
            abort();
        struct count c2 = {0};
        json_t *again = NULL;
        if (createopts_normalize(doc, "", count_report, &c2, &again) != 0 || c2.errors ||
            c2.notes != c.notes || !json_equal(doc, again))
            abort();
        json_decref(again);
        (void)createopts_string(doc, "HostConfig.NetworkMode");
        (void)createopts_bool(doc, "HostConfig.Privileged", false);
        (void)createopts_int(doc, "HostConfig.Memory", 0);
        (void)createopts_get(doc, "NetworkingConfig.EndpointsConfig");
        json_t *hc = createopts_object(doc, "HostConfig");
        if (!hc)
            abort(); /* a normalised HostConfig is an object */
        json_decref(doc);
    } else if (r == -EINVAL && c.errors == 0) {
        abort();
    }
    json_decref(given);
    return 0;
}
