/* config.c — the module's identity and hub address from its environment (IOTEDGE_* as ledged and
 * IoT Edge inject them, or the legacy EdgeHubConnectionString), and SAS token assembly. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/str.h"
#include "modclient-internal.h"

#define CONNSTR_MAX 4096
#define ENV_VALUE_MAX 1024

void modclient_config_clear(struct modclient_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->device_id);
    free(cfg->module_id);
    free(cfg->generation_id);
    free(cfg->iothub_hostname);
    free(cfg->gateway_hostname);
    free(cfg->connect_host);
    free(cfg->workload_socket);
    free(cfg->api_version);
    free(cfg->ca_file);
    free(cfg->on_behalf_of);
    if (cfg->sas_key) {
        lcrypto_wipe(cfg->sas_key, strlen(cfg->sas_key));
        free(cfg->sas_key);
    }
    memset(cfg, 0, sizeof(*cfg));
}

static const char *default_getenv(const char *name, void *ud)
{
    return getenv(name);
}

static int set_str(char **dst, const char *v, size_t n)
{
    char *s = strndup(v, n);
    if (!s)
        return -ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

/* An id that goes into topics and paths: non-empty, no '/', '+', '#', no control characters. */
static bool valid_id(const char *s)
{
    if (lstr_empty(s))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '+' || *p == '#')
            return false;
    return true;
}

int modclient_config_from_connection_string(const char *s, struct modclient_config *cfg,
                                            struct lerr *e)
{
    static const char *const names[] = {"HostName", "GatewayHostName", "DeviceId", "ModuleId",
                                        "SharedAccessKey"};
    size_t total = strlen(s);
    if (total > CONNSTR_MAX)
        return lerr_set(e, -E2BIG, "EdgeHubConnectionString: longer than %d bytes", CONNSTR_MAX);
    char **dst[] = {&cfg->iothub_hostname, &cfg->gateway_hostname, &cfg->device_id, &cfg->module_id,
                    &cfg->sas_key};
    bool seen[ARRAY_SIZE(names)] = {0};
    for (const char *p = s; *p;) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (n == 0) {
            p += end ? 1 : 0;
            continue;
        }
        if (!eq || eq == p)
            return lerr_set(e, -EINVAL,
                            "EdgeHubConnectionString: expected Name=value, got \"%.*s\"",
                            (int)MIN(n, 40), p);
        size_t klen = (size_t)(eq - p);
        size_t i;
        for (i = 0; i < ARRAY_SIZE(names); i++)
            if (strlen(names[i]) == klen && strncasecmp(names[i], p, klen) == 0)
                break;
        /* Other parts (SharedAccessKeyName, x509, ...) are not for a module: refuse them. */
        if (i == ARRAY_SIZE(names))
            return lerr_set(e, -EINVAL, "EdgeHubConnectionString: unsupported part \"%.*s\"",
                            (int)MIN(klen, 40), p);
        if (seen[i])
            return lerr_set(e, -EINVAL, "EdgeHubConnectionString: %s given twice", names[i]);
        seen[i] = true;
        int r = set_str(dst[i], eq + 1, n - klen - 1);
        if (r < 0)
            return r;
        p += n + (end ? 1 : 0);
    }
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (i != 1 && (!seen[i] || !**dst[i]))
            return lerr_set(e, -EINVAL, "EdgeHubConnectionString: %s missing or empty", names[i]);
    struct lbuf raw = LBUF_INIT;
    int r = lcrypto_b64_decode(cfg->sas_key, strlen(cfg->sas_key), &raw);
    lcrypto_wipe(raw.data, raw.len);
    lbuf_free(&raw);
    if (r < 0)
        return lerr_set(e, -EINVAL, "EdgeHubConnectionString: SharedAccessKey is not base64");
    if (!valid_id(cfg->device_id) || !valid_id(cfg->module_id))
        return lerr_set(e, -EINVAL,
                        "EdgeHubConnectionString: DeviceId and ModuleId must not contain / + # "
                        "or control characters");
    if (!cfg->gateway_hostname && (r = set_str(&cfg->gateway_hostname, cfg->iothub_hostname,
                                               strlen(cfg->iothub_hostname))) < 0)
        return r;
    return 0;
}

struct env_reader {
    const char *(*get)(const char *, void *);
    void *ud;
    struct lerr *e;
};

/* The variable's value, or NULL when unset or empty; -E2BIG for absurd lengths. */
static int env_get(struct env_reader *r, const char *name, bool required, const char **ret)
{
    const char *v = r->get(name, r->ud);
    if (v && strlen(v) > (lstr_eq(name, "EdgeHubConnectionString") ? CONNSTR_MAX : ENV_VALUE_MAX))
        return lerr_set(r->e, -E2BIG, "%s: too long", name);
    if (lstr_empty(v)) {
        if (required)
            return lerr_set(r->e, -EINVAL, "%s: not set", name);
        v = NULL;
    }
    *ret = v;
    return 0;
}

static int env_copy(struct env_reader *r, const char *name, bool required, char **dst)
{
    const char *v;
    int rc = env_get(r, name, required, &v);
    if (rc < 0 || !v)
        return rc;
    return set_str(dst, v, strlen(v));
}

static int parse_bool(const char *v, bool *ret)
{
    if (lstr_eq_ci(v, "true") || lstr_eq(v, "1") || lstr_eq_ci(v, "yes"))
        *ret = true;
    else if (lstr_eq_ci(v, "false") || lstr_eq(v, "0") || lstr_eq_ci(v, "no"))
        *ret = false;
    else
        return -EINVAL;
    return 0;
}

static int from_env(struct env_reader *er, struct modclient_config *c)
{
    const char *v;
    int r;
    if ((r = env_get(er, "EdgeHubConnectionString", false, &v)) < 0)
        return r;
    if (v) {
        if ((r = modclient_config_from_connection_string(v, c, er->e)) < 0 ||
            (r = env_copy(er, "EdgeModuleCACertificateFile", false, &c->ca_file)) < 0)
            return r;
    } else {
        static const char *const required[] = {
            "IOTEDGE_WORKLOADURI",        "IOTEDGE_DEVICEID",       "IOTEDGE_MODULEID",
            "IOTEDGE_MODULEGENERATIONID", "IOTEDGE_IOTHUBHOSTNAME", "IOTEDGE_GATEWAYHOSTNAME"};
        char *uri = NULL;
        char **dst[] = {&uri,
                        &c->device_id,
                        &c->module_id,
                        &c->generation_id,
                        &c->iothub_hostname,
                        &c->gateway_hostname};
        for (size_t i = 0; i < ARRAY_SIZE(required); i++)
            if ((r = env_copy(er, required[i], true, dst[i])) < 0) {
                free(uri);
                return r;
            }
        r = mc_workload_socket_path(uri, &c->workload_socket, er->e);
        free(uri);
        if (r < 0)
            return r;
        if ((r = env_get(er, "IOTEDGE_AUTHSCHEME", false, &v)) < 0)
            return r;
        if (v && !lstr_eq(v, "sasToken"))
            return lerr_set(er->e, -EINVAL,
                            "IOTEDGE_AUTHSCHEME: \"%s\" is not supported (only sasToken)", v);
        if ((r = env_copy(er, "IOTEDGE_APIVERSION", false, &c->api_version)) < 0)
            return r;
        if (!valid_id(c->device_id) || !valid_id(c->module_id) || !valid_id(c->generation_id))
            return lerr_set(
                er->e, -EINVAL,
                "IOTEDGE_DEVICEID, IOTEDGE_MODULEID and IOTEDGE_MODULEGENERATIONID must "
                "not contain / + # or control characters");
    }
    if ((r = env_copy(er, "LEDGE_HUB_HOST", false, &c->connect_host)) < 0)
        return r;
    if ((r = env_get(er, "LEDGE_HUB_PORT", false, &v)) < 0)
        return r;
    unsigned long long port;
    if (v && (lstr_to_u64(v, &port) < 0 || port < 1 || port > 65535))
        return lerr_set(er->e, -EINVAL, "LEDGE_HUB_PORT: \"%s\" is not a port number (1-65535)", v);
    if (v)
        c->port = (int)port;
    if ((r = env_get(er, "LEDGE_HUB_TLS", false, &v)) < 0)
        return r;
    if (v && parse_bool(v, &c->tls) < 0)
        return lerr_set(er->e, -EINVAL, "LEDGE_HUB_TLS: \"%s\": expected true or false", v);
    if (!c->api_version && !(c->api_version = strdup(MODCLIENT_API_VERSION_DEFAULT)))
        return -ENOMEM;
    return 0;
}

int modclient_config_from_env(const char *(*getenv_fn)(const char *name, void *ud), void *ud,
                              struct modclient_config *ret, struct lerr *e)
{
    struct env_reader er = {getenv_fn ? getenv_fn : default_getenv, ud, e};
    struct modclient_config c = {
        .port = MODCLIENT_PORT_DEFAULT,
        .tls = true,
        .token_lifetime_s = MODCLIENT_TOKEN_LIFETIME_DEFAULT,
        .max_pending = MODCLIENT_MAX_PENDING_DEFAULT,
    };
    int r = from_env(&er, &c);
    if (r < 0) {
        modclient_config_clear(&c);
        return r;
    }
    *ret = c;
    return 0;
}

/* ------------------------------------------------------------------ SAS tokens */

char *modclient_token_resource(const struct modclient_config *cfg)
{
    if (cfg->on_behalf_of)
        return lstr_printf("%s/devices/%s/modules/" MODCLIENT_OBO_MODULE, cfg->iothub_hostname,
                           cfg->on_behalf_of);
    if (!cfg->module_id)
        return lstr_printf("%s/devices/%s", cfg->iothub_hostname, cfg->device_id);
    return lstr_printf("%s/devices/%s/modules/%s", cfg->iothub_hostname, cfg->device_id,
                       cfg->module_id);
}

int modclient_token_string_to_sign(const char *resource, uint64_t expiry, struct lbuf *out)
{
    int r = lstr_url_encode(resource, strlen(resource), out);
    return r < 0 ? r : lbuf_printf(out, "\n%llu", (unsigned long long)expiry);
}

int modclient_token_build(const char *resource, const char *signature_b64, uint64_t expiry,
                          struct lbuf *out)
{
    int r = lbuf_puts(out, "SharedAccessSignature sr=");
    if (r == 0)
        r = lstr_url_encode(resource, strlen(resource), out);
    if (r == 0)
        r = lbuf_puts(out, "&sig=");
    if (r == 0)
        r = lstr_url_encode(signature_b64, strlen(signature_b64), out);
    if (r == 0)
        r = lbuf_printf(out, "&se=%llu", (unsigned long long)expiry);
    return r;
}
