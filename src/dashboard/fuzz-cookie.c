/* fuzz-cookie.c — arbitrary Cookie and Origin headers through the dashboard's session checks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dashboard/session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    char buf[80];
    dash_cookie_get(text, DASH_COOKIE, buf, sizeof(buf));
    static struct dash_sessions s;
    dash_sessions_init(&s, 60000);
    dash_session_create(&s, "00000000", 1000, 0);
    dash_session_find(&s, text, 10);
    dash_csrf_ok(&s.v[0], text);
    char *sep = strchr(text, '\n');
    if (sep) {
        *sep = 0;
        dash_origin_ok(text, sep + 1, size & 1);
    }
    free(text);
    return 0;
}
