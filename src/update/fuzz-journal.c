/* fuzz-journal.c — libFuzzer target for the update journal's parser: arbitrary bytes as a
 * journal file; what parses must format and parse back to the same journal. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "update/journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct upd_journal j = {0};
    struct lerr e = {0};
    if (upd_journal_parse((const char *)data, size, &j, &e) < 0)
        return 0;
    char *text = upd_journal_format(&j);
    if (text) {
        struct upd_journal k = {0};
        if (upd_journal_parse(text, strlen(text), &k, &e) < 0 || k.step != j.step ||
            strcmp(k.id, j.id) != 0 || !json_equal(k.baseline, j.baseline))
            abort();
        upd_journal_clear(&k);
        free(text);
    }
    upd_journal_clear(&j);
    return 0;
}
