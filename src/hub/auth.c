/* auth.c — who a client is (auth.h): this device, a module the deployment defines, and a SAS token
 * signed with that module's key for the IoT hub's or the gateway's host name, not expired. */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/timeutil.h"
#include "clients.h"
#include "head.h"
#include "identity/sas.h"
#include "log/log.h"

#define COMP "hub"

int auth_check(struct hub *h, const struct hub_credentials *cr, struct hub_identity *ret,
               struct lerr *err)
{
    if (!cr->module_id || !*cr->module_id)
        return lerr_set(err, -EACCES, "device identities cannot connect here; modules only");
    if (!cr->device_id || strcasecmp(cr->device_id, h->rt.device_id) != 0)
        return lerr_set(err, -EACCES, "unknown device");
    const struct hub_module_identity *id = hub_runtime_module(&h->rt, cr->module_id);
    if (!id)
        return lerr_set(err, -EACCES, "unknown module");
    const char *hosts[] = {h->rt.iothub_hostname, h->rt.gateway_hostname};
    struct lerr e = {0};
    uint64_t now = (uint64_t)(ltime_now_ms() / 1000);
    if (!cr->sas_token || sas_token_verify(cr->sas_token, hosts, 2, cr->device_id, cr->module_id,
                                           id->key, id->keylen, now, &e) < 0)
        return lerr_set(err, -EACCES, "module %s: %s", cr->module_id,
                        cr->sas_token ? e.msg : "a SAS token is required");
    /* An authentic token that stays valid for longer than hub.max_token_lifetime is refused
     * too: a leaked one must not be good for years. */
    struct sas_token t;
    uint64_t max_s = (uint64_t)h->cfg.hub.max_token_lifetime_ms / 1000;
    if (sas_token_parse(cr->sas_token, strlen(cr->sas_token), &t, &e) < 0)
        return lerr_set(err, -EACCES, "module %s: %s", cr->module_id, e.msg);
    uint64_t se = t.se;
    sas_token_done(&t);
    if (max_s && se > now + max_s)
        return lerr_set(err, -EACCES,
                        "module %s: the token expires in %llu s, beyond hub.max_token_lifetime "
                        "(%llu s)",
                        cr->module_id, (unsigned long long)(se - now), (unsigned long long)max_s);
    struct hub_identity who = {
        .kind = HUB_IDENTITY_MODULE,
        .method = HUB_AUTH_SAS,
        .device_id = h->rt.device_id,
        .module_id = id->module_id,
    };
    return hub_identity_copy(&who, ret);
}

void auth_identities_changed(struct hub *h, const struct hub_runtime *old)
{
    bool device_changed =
        !old->device_id || !h->rt.device_id || strcasecmp(old->device_id, h->rt.device_id) != 0;
    for (size_t i = 0; i < old->n_modules; i++) {
        const struct hub_module_identity *was = &old->modules[i];
        const struct hub_module_identity *now =
            device_changed ? NULL : hub_runtime_module(&h->rt, was->module_id);
        const char *why;
        bool forget = true;
        if (!now)
            why = device_changed ? "the device identity changed" : "it left the deployment";
        else if (!was->generation_id || !now->generation_id ||
                 strcmp(was->generation_id, now->generation_id) != 0)
            why = "it was recreated (new generation id)";
        else if (was->keylen != now->keylen || memcmp(was->key, now->key, was->keylen) != 0) {
            why = "its key was rotated";
            forget = false;
        } else {
            continue;
        }
        size_t n = clients_close_module(h, was->module_id, why);
        if (forget)
            for (size_t k = 0; k < h->n_heads; k++)
                if (h->heads[k]->forget_module)
                    h->heads[k]->forget_module(h, was->module_id);
        log_info(COMP, "module %s: %s: %zu connection%s closed%s", was->module_id, why, n,
                 n == 1 ? "" : "s", forget ? ", its persistent sessions dropped" : "");
    }
}
