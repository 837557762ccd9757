/* sas-verify.c — test tool: checks a module's SAS token the way ledge's hub will, with the module
 * key ledged derives from its master secret (<state_dir>/identity/master.key) and the module's
 * generation id. Exit 0 "ok: ..." when sas_token_verify() accepts it, 1 with the reason if not,
 * 2 on a usage or setup error. The state directory is only read: a missing secret is an error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/crypto.h"
#include "base/errors.h"
#include "identity/keys.h"
#include "identity/sas.h"

#define MAX_HOSTS 8

static int usage(void)
{
    fprintf(stderr, "usage: sas-verify STATE_DIR DEVICE_ID MODULE_ID GENERATION_ID HOSTS TOKEN\n"
                    "       sas-verify --print-key STATE_DIR DEVICE_ID MODULE_ID GENERATION_ID\n"
                    "  --print-key: the module's signing key in base64 (tests that look for it)\n"
                    "  HOSTS: comma-separated host names the token's audience may name\n"
                    "         (the IoT hub host name and the gateway host name)\n"
                    "  TOKEN: \"SharedAccessSignature sr=...&sig=...&se=...\", or - for stdin\n");
    return 2;
}

/* Splits a comma-separated list in place; at most MAX_HOSTS entries. */
static int split_hosts(char *list, const char **ret, size_t *ret_n)
{
    size_t n = 0;
    for (char *save = NULL, *h = strtok_r(list, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
        if (n == MAX_HOSTS)
            return -E2BIG;
        ret[n++] = h;
    }
    if (n == 0)
        return -EINVAL;
    *ret_n = n;
    return 0;
}

static int read_token(const char *arg, char *buf, size_t size)
{
    if (strcmp(arg, "-") != 0) {
        if (strlen(arg) >= size)
            return -E2BIG;
        strcpy(buf, arg);
        return 0;
    }
    size_t n = fread(buf, 1, size - 1, stdin);
    if (ferror(stdin))
        return -EIO;
    if (n == size - 1 && fgetc(stdin) != EOF)
        return -E2BIG;
    buf[n] = 0;
    buf[strcspn(buf, "\r\n")] = 0; /* one line, as `echo` or a log line gives it */
    return 0;
}

/* The module key of a generation, in base64 (what a test greps support bundles for). */
static int print_key(const char *state_dir, const char *device, const char *module, const char *gen)
{
    struct lerr err = {0};
    _cleanup_(identity_keys_freep) struct identity_keys *keys = NULL;
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/identity/master.key", state_dir);
    if (stat(path, &st) < 0 || identity_keys_load_or_create(state_dir, &keys, &err) < 0) {
        fprintf(stderr, "sas-verify: %s: no master secret there\n", path);
        return 2;
    }
    uint8_t key[IDENTITY_MODULE_KEY_LEN];
    if (identity_module_key(keys, device, module, gen, key) < 0)
        return 2;
    struct lbuf b64 = LBUF_INIT;
    int r = lcrypto_b64_encode(key, sizeof(key), &b64);
    lcrypto_wipe(key, sizeof(key));
    if (r < 0)
        return 2;
    printf("%s\n", b64.data);
    lbuf_free(&b64);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "--print-key") == 0)
        return print_key(argv[2], argv[3], argv[4], argv[5]);
    if (argc != 7)
        return usage();
    const char *state_dir = argv[1], *device = argv[2], *module = argv[3], *gen = argv[4];
    /* identity_keys_load_or_create() would create a secret; a verifier must never do that. */
    char path[4096];
    struct stat st;
    if (snprintf(path, sizeof(path), "%s/identity/master.key", state_dir) >= (int)sizeof(path) ||
        stat(path, &st) < 0) {
        fprintf(stderr, "sas-verify: %s: no master secret there\n", path);
        return 2;
    }
    const char *hosts[MAX_HOSTS];
    size_t n_hosts = 0;
    if (split_hosts(argv[5], hosts, &n_hosts) < 0) {
        fprintf(stderr, "sas-verify: HOSTS: give 1 to %d comma-separated host names\n", MAX_HOSTS);
        return 2;
    }
    static char token[SAS_TOKEN_MAX + 2];
    if (read_token(argv[6], token, sizeof(token)) < 0) {
        fprintf(stderr, "sas-verify: cannot read the token (longer than %d bytes?)\n",
                SAS_TOKEN_MAX);
        return 2;
    }

    struct lerr err = {0};
    _cleanup_(identity_keys_freep) struct identity_keys *keys = NULL;
    int r = identity_keys_load_or_create(state_dir, &keys, &err);
    if (r < 0) {
        fprintf(stderr, "sas-verify: %s\n", lerr_str(&err));
        return 2;
    }
    uint8_t key[IDENTITY_MODULE_KEY_LEN];
    r = identity_module_key(keys, device, module, gen, key);
    if (r < 0) {
        fprintf(stderr, "sas-verify: cannot derive the key of %s/%s generation %s: %s\n", device,
                module, gen, strerror(-r));
        return 2;
    }
    r = sas_token_verify(token, hosts, n_hosts, device, module, key, sizeof(key),
                         (uint64_t)time(NULL), &err);
    lcrypto_wipe(key, sizeof(key));
    if (r < 0) {
        printf("rejected: %s\n", lerr_str(&err));
        return 1;
    }
    printf("ok: token of %s/%s generation %s verifies\n", device, module, gen);
    return 0;
}
