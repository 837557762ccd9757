/* fuzz-workload.c — libFuzzer target for the workload API handler. Input: a method line, a
 * target line, then the body. Runs with a test context (fixed master secret, in-memory edge CA,
 * fixed clock) as caller mod1/gen1, and checks every reply is well-formed JSON with a status
 * from the documented set. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "identity/ca.h"
#include "identity/keys.h"
#include "identity/workload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define NOW 1700000000LL

static struct identity_keys *keys;
static struct ca *ca;
static struct workload_ctx *ctx;

static int64_t fixed_now(void *ud)
{
    return NOW;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    uint8_t secret[32];
    memset(secret, 0x42, sizeof(secret));
    struct ca_config cc = {.device_id = "dev1", .lifetime_s = 90LL * 86400};
    const char *reserved[] = {"gateway.local"};
    struct workload_config wc = {.iothub_hostname = "myhub.azure-devices.net",
                                 .device_id = "dev1",
                                 .hub_module_id = "$edgeHub",
                                 .reserved_server_names = reserved,
                                 .n_reserved_server_names = 1,
                                 .max_body = 8192,
                                 .now = fixed_now};
    if (identity_keys_from_secret(secret, sizeof(secret), &keys) < 0 ||
        ca_open(&cc, NOW - 60, &ca, NULL) < 0 || workload_ctx_new(&wc, keys, ca, &ctx) < 0)
        abort();
    return 0;
}

static char *take_line(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
    const uint8_t *le = nl ? nl : end;
    size_t n = (size_t)(le - *p);
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, *p, n);
    s[n] = 0;
    *p = nl ? nl + 1 : end;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    char *method = take_line(&p, end);
    char *target = take_line(&p, end);
    const struct workload_caller caller = {"mod1", "gen1"};
    struct workload_reply rep;
    if (workload_handle(ctx, &caller, method, target, (const char *)p, (size_t)(end - p), &rep) !=
        0)
        abort();
    static const int statuses[] = {200, 201, 400, 403, 404, 405, 413, 414, 500};
    int known = 0;
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        known |= rep.status == statuses[i];
    if (!known || !rep.body || strlen(rep.body) != rep.body_len || !rep.content_type)
        abort();
    json_error_t je;
    json_t *j = json_loadb(rep.body, rep.body_len, 0, &je);
    if (!j || !json_is_object(j))
        abort();
    if (rep.status >= 400 && !json_is_string(json_object_get(j, "message")))
        abort();
    if (rep.status == 405 && !rep.allow)
        abort();
    json_decref(j);
    workload_reply_done(&rep);
    free(method);
    free(target);
    return 0;
}
