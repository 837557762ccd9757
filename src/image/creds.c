/* creds.c — registryCredentials matching and X-Registry-Auth (see creds.h). IoT Edge compares
 * the image's registry with the address case-insensitively; ledge also accepts what users write
 * for the same registry: a scheme, a path, the https port, and Docker Hub's other names. */
#include "image/creds.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "image/ref.h"

int img_registry_key(const char *address, char *dst, size_t size)
{
    if (lstr_empty(address))
        return -EINVAL;
    const char *p = address;
    while (*p == ' ' || *p == '\t')
        p++;
    if (lstr_startswith_ci(p, "https://"))
        p += 8;
    else if (lstr_startswith_ci(p, "http://"))
        p += 7;
    size_t n = strcspn(p, "/ \t"), before;
    /* A trailing dot of a fully qualified name is the same host; :443 is https's own port. */
    do {
        before = n;
        while (n && p[n - 1] == '.')
            n--;
        if (n >= 4 && memcmp(p + n - 4, ":443", 4) == 0)
            n -= 4;
    } while (n != before);
    if (n == 0 || n >= size)
        return n ? -ENAMETOOLONG : -EINVAL;
    memcpy(dst, p, n);
    dst[n] = 0;
    lstr_lower(dst);
    if (strcmp(dst, "index.docker.io") == 0 || strcmp(dst, "registry-1.docker.io") == 0 ||
        strcmp(dst, "registry.hub.docker.com") == 0)
        snprintf(dst, size, "%s", IMG_DOCKER_HUB);
    return 0;
}

bool img_registry_matches(const char *address, const char *registry)
{
    char a[IMG_REF_MAX + 1], b[IMG_REF_MAX + 1];
    if (img_registry_key(address, a, sizeof(a)) < 0 || img_registry_key(registry, b, sizeof(b)) < 0)
        return false;
    return strcmp(a, b) == 0;
}

int img_creds_lookup(const json_t *registry_credentials, const char *registry, struct img_cred *ret,
                     struct lerr *e)
{
    if (!json_is_object(registry_credentials) || lstr_empty(registry))
        return -ENOENT;
    /* The lowest name among the matches: a deployment's key order carries no meaning (IoT Hub
     * keeps no order in a twin), and the manifest parser keeps its entries in name order too. */
    const char *name, *best = NULL;
    json_t *v, *found = NULL;
    json_object_foreach ((json_t *)registry_credentials, name, v) {
        const char *address = ljson_str(v, "address");
        if (!address || !img_registry_matches(address, registry))
            continue;
        if (!best || strcmp(name, best) < 0) {
            best = name;
            found = v;
        }
    }
    if (!found)
        return -ENOENT;
    const char *user = ljson_str(found, "username"), *pass = ljson_str(found, "password");
    if (!user || !pass)
        return lerr_set(e, -EINVAL, "registryCredentials.%.100s (for %.100s): %s must be a string",
                        best, registry, user ? "password" : "username");
    *ret = (struct img_cred){
        .name = best, .address = ljson_str(found, "address"), .username = user, .password = pass};
    return 0;
}

int img_creds_registry_auth(const struct img_cred *c, const char *registry, struct lbuf *out)
{
    _cleanup_json_ json_t *j = json_pack("{s:s, s:s, s:s}", "username", c->username, "password",
                                         c->password, "serveraddress", registry);
    if (!j)
        return -ENOMEM;
    char *text = ljson_dump(j);
    if (!text)
        return -ENOMEM;
    size_t n = strlen(text);
    size_t start = out->len;
    int r = lcrypto_b64_encode(text, n, out);
    lcrypto_wipe(text, n);
    free(text);
    if (r < 0)
        return r;
    for (size_t i = start; i < out->len; i++) {
        if (out->data[i] == '+')
            out->data[i] = '-';
        else if (out->data[i] == '/')
            out->data[i] = '_';
    }
    return 0;
}
