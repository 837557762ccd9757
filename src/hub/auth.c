/* auth.c — who a client is (auth.h): this device, a module the deployment defines, and a SAS token
 * signed with that module's key for the IoT hub's or the gateway's host name, not expired. */
#include "hub/auth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/timeutil.h"
#include "identity/sas.h"

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
    if (!cr->sas_token ||
        sas_token_verify(cr->sas_token, hosts, 2, cr->device_id, cr->module_id, id->key, id->keylen,
                         (uint64_t)(ltime_now_ms() / 1000), &e) < 0)
        return lerr_set(err, -EACCES, "module %s: %s", cr->module_id,
                        cr->sas_token ? e.msg : "a SAS token is required");
    struct hub_identity who = {
        .kind = HUB_IDENTITY_MODULE,
        .method = HUB_AUTH_SAS,
        .device_id = h->rt.device_id,
        .module_id = id->module_id,
    };
    return hub_identity_copy(&who, ret);
}
