/* fuzz-http-header.c — the client's response-head pieces (hc_header_split, hc_status_line_code)
 * on arbitrary lines: what they hand back stays inside the line, a name is a token, a value has
 * no surrounding blanks, a status is a three-digit code. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/http_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        /* a copy of exactly n bytes, so that ASan sees any read past the line */
        char *line = malloc(n ? n : 1);
        if (!line)
            return 0;
        memcpy(line, p, n);
        const char *name, *value;
        size_t name_len, value_len;
        if (hc_header_split(line, n, &name, &name_len, &value, &value_len) == 0) {
            if (name != line || name_len == 0 || name_len >= n || memchr(name, ':', name_len))
                abort();
            if (value < line + name_len + 1 || value + value_len > line + n)
                abort();
            if (value_len && (value[0] == ' ' || value[0] == '\t' || value[value_len - 1] == ' ' ||
                              value[value_len - 1] == '\t'))
                abort();
        }
        int code = hc_status_line_code(line, n);
        if (code != 0 && (code < 100 || code > 999))
            abort();
        free(line);
        p += n;
    }
    return 0;
}
