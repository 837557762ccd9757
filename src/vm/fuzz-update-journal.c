/* fuzz-update-journal.c — libFuzzer target for a VM update's journal (update.h): arbitrary text
 * must parse or be refused without reading out of bounds or leaking, and a journal that parses
 * must print and parse again to the same journal. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vm/update.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct vmu_journal j;
    if (vmu_journal_parse((const char *)data, size, &j, NULL) < 0)
        return 0;
    json_t *o = vmu_journal_to_json(&j);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    struct vmu_journal k;
    if (!text || vmu_journal_parse(text, strlen(text), &k, NULL) < 0)
        abort();
    json_t *p = vmu_journal_to_json(&k);
    if (!json_equal(o, p))
        abort();
    json_decref(p);
    vmu_journal_clear(&k);
    free(text);
    json_decref(o);
    vmu_journal_clear(&j);
    return 0;
}
