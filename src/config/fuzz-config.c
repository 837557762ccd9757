/* fuzz-config.c — libFuzzer target for the configuration loader: arbitrary bytes through
 * config_load_string(); every accepted config must survive a round trip through its own JSON
 * view (JSON is YAML), and no message may ever quote the device key. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *view(const struct ledge_config *c)
{
    json_t *j = config_to_json(c, false);
    if (!j)
        abort();
    json_object_del(json_object_get(j, "device"), "identity");
    return j;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ledge_config c;
    struct lstrv errors = LSTRV_INIT;
    int r = config_load_string((const char *)data, size, "fuzz.yaml", &c, &errors);
    if (r == 0) {
        if (errors.n != 0)
            abort();
        /* The secret must not reach the redacted view. */
        if (c.device.key) {
            json_t *red = config_to_json(&c, true);
            char *text = json_dumps(red, 0);
            if (!text || strstr(text, c.device.key))
                abort();
            free(text);
            json_decref(red);
        }
        json_t *j = view(&c);
        char *text = json_dumps(j, JSON_INDENT(1));
        struct ledge_config c2;
        struct lstrv errors2 = LSTRV_INIT;
        if (!text || config_load_string(text, strlen(text), "json", &c2, &errors2) != 0)
            abort();
        json_t *j2 = view(&c2);
        if (!json_equal(j, j2))
            abort();
        json_decref(j2);
        config_free(&c2);
        lstrv_free(&errors2);
        free(text);
        json_decref(j);
        config_free(&c);
    } else if (r == -EINVAL && errors.n == 0) {
        abort(); /* every failure says why */
    }
    lstrv_free(&errors);
    return 0;
}
