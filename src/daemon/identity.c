/* identity.c — the daemon's identity material: the master secret module keys derive from, the
 * device identity from the config, the edge CA, the hub's TLS server certificate (kept valid on
 * disk for ledge-hub), and the renewal timer that rotates them before they expire. */
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "ledged.h"
#include "identity/ca.h"
#include "identity/keys.h"
#include "log/log.h"

#define COMP "identity"
#define RENEW_CHECK_S 3600

static int64_t now_s(void)
{
    return ltime_now_ms() / 1000;
}

static int device_identity(struct ledged *d, struct lerr *err)
{
    const struct config_device *c = &d->cfg.device;
    switch (c->identity) {
    case CONFIG_IDENTITY_KEY:
    case CONFIG_IDENTITY_CONNECTION_STRING:
        return identity_device_from_key(c->iothub_hostname, c->id, c->key, &d->device, err);
    case CONFIG_IDENTITY_X509:
        return identity_device_from_x509(c->iothub_hostname, c->id, c->x509.cert_file,
                                         c->x509.key_file, &d->device, err);
    case CONFIG_IDENTITY_GENERATED: {
        /* A local-only device: its key is derived from the master secret, so it is stable
         * across restarts without another secret file (docs/security.md). */
        uint8_t key[IDENTITY_MODULE_KEY_LEN];
        int r = identity_module_key(d->keys, c->id, "$device", "ledge-local-device", key);
        if (r < 0)
            return lerr_set(err, r, "cannot derive the local device key");
        struct lbuf b64 = LBUF_INIT;
        r = lcrypto_b64_encode(key, sizeof(key), &b64);
        lcrypto_wipe(key, sizeof(key));
        if (r == 0)
            r = identity_device_from_key(c->iothub_hostname, c->id, b64.data, &d->device, err);
        if (b64.data)
            lcrypto_wipe(b64.data, b64.len);
        lbuf_free(&b64);
        return r;
    }
    }
    return lerr_set(err, -EINVAL, "unknown identity source");
}

/* The hub's server certificate: CN and SAN = the gateway host name, plus certificates.extra_names
 * (DNS names or IP addresses) and the loopback names a local client may use; and the trust
 * bundle file next to it. Returns 1 when either changed on disk, 0 when both were current. */
static int ensure_hub_cert(struct ledged *d, int64_t threshold_s, struct lerr *err)
{
    const char *dns[CONFIG_MAX_LIST + 3];
    const char *ips[CONFIG_MAX_LIST + 2];
    size_t n_dns = 0, n_ips = 0;
    dns[n_dns++] = d->cfg.device.gateway_hostname;
    dns[n_dns++] = "localhost";
    ips[n_ips++] = "127.0.0.1";
    for (size_t i = 0; i < d->cfg.certificates.extra_names.n; i++) {
        const char *name = d->cfg.certificates.extra_names.v[i];
        if (ca_ip_valid(name))
            ips[n_ips++] = name;
        else
            dns[n_dns++] = name;
    }
    struct ca_leaf_request req = {
        .kind = CA_LEAF_SERVER,
        .common_name = d->cfg.device.gateway_hostname,
        .dns = dns,
        .n_dns = n_dns,
        .ips = ips,
        .n_ips = n_ips,
        .lifetime_s = d->cfg.certificates.cert_lifetime_ms / 1000,
    };
    int issued =
        ca_leaf_ensure(d->ca, &req, d->hub_cert_path, d->hub_key_path, now_s(), threshold_s, err);
    if (issued < 0)
        return issued;
    if (issued > 0)
        log_info(COMP, "hub server certificate issued: %s", d->hub_cert_path);
    /* The bundle is rewritten (and the hub told) only when it changed: this runs at every
     * renewal check. */
    _cleanup_lbuf_ struct lbuf bundle = LBUF_INIT;
    _cleanup_free_ char *old = NULL;
    size_t old_len = 0;
    int r = ca_trust_bundle(d->ca, &bundle);
    bool same = r == 0 &&
                lfs_read_file(d->trust_bundle_path, CA_PEM_FILE_MAX, &old, &old_len) == 0 &&
                old_len == bundle.len && memcmp(old, bundle.data, old_len) == 0;
    if (r == 0 && !same)
        r = lfs_write_atomic(d->trust_bundle_path, bundle.data, bundle.len, 0644);
    if (r < 0)
        return lerr_set(err, r, "cannot write %s: %s", d->trust_bundle_path, strerror(-r));
    return issued > 0 || !same;
}

static void restarted(void *ud, int result, const json_t *report) {}

/* Modules read the trust bundle when they start (the SDKs fetch it once); as IoT Edge does, restart
 * them when a new CA joins the bundle. The hub reloads its TLS material on SIGHUP instead. */
static void restart_modules_for_trust_bundle(struct ledged *d)
{
    const struct deployment *dep = d->agent ? agent_deployment(d->agent) : NULL;
    for (size_t i = 0; dep && i < dep->n_modules; i++) {
        const struct module_spec *m = &dep->modules[i];
        struct lerr err = {0};
        if (m->system || m->status != MODULE_STATUS_RUNNING)
            continue;
        if (agent_module_command(d->agent, m->name, "restart", restarted, NULL, &err) < 0)
            log_warn(COMP, "%s: cannot restart it for the new trust bundle: %s", m->name,
                     lerr_str(&err));
    }
}

static int64_t renew_threshold(struct ledged *d, int64_t lifetime_s)
{
    const struct config_renew *rb = &d->cfg.certificates.renew_before;
    if (rb->ms > 0)
        return rb->ms / 1000;
    return lifetime_s * (rb->percent > 0 ? rb->percent : 20) / 100;
}

/* Seconds until the hub's certificate on disk enters its renewal window, or -1 when that is
 * unknown or already the case (a leaf capped by an expiring CA stays "due" until the CA switch,
 * which the CA schedule below covers; re-checking it sooner would only re-issue it again). */
static int64_t hub_cert_due_in(struct ledged *d, int64_t threshold_s)
{
    STACK_OF(X509) *certs = NULL;
    struct lerr err = {0};
    int64_t not_after;
    if (ca_pem_load_certs(d->hub_cert_path, &certs, &err) < 0)
        return -1;
    int r = ca_cert_not_after(sk_X509_value(certs, 0), &not_after);
    ca_cert_stack_free(certs);
    if (r < 0)
        return -1;
    int64_t due = not_after - threshold_s - now_s();
    return due > 0 ? due : -1;
}

static void renew_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ledged *d = arg;
    struct lerr err = {0};
    int r = ca_renew(d->ca, now_s(), &err);
    if (r < 0)
        log_error(COMP, "edge CA renewal: %s", lerr_str(&err));
    else if (r & CA_RENEW_ANNOUNCED) {
        log_info(COMP, "a new edge CA was created; it is in the trust bundle from now on: "
                       "restarting modules so they fetch it before it signs anything");
        restart_modules_for_trust_bundle(d);
    } else if (r & CA_RENEW_SWITCHED)
        log_info(COMP, "certificates are issued by the new edge CA from now on");
    int64_t life = d->cfg.certificates.cert_lifetime_ms / 1000;
    int64_t threshold = renew_threshold(d, life);
    int c = ensure_hub_cert(d, threshold, &err);
    if (c < 0)
        log_error(COMP, "hub server certificate: %s", lerr_str(&err));
    else if (r > 0 || c > 0)
        hub_certificates_changed(d);
    /* Check again at the next renewal point (the hub certificate's, the CA's) or hourly,
     * whichever is first. */
    int64_t next = RENEW_CHECK_S;
    int64_t leaf_due = hub_cert_due_in(d, threshold);
    if (leaf_due > 0 && leaf_due + 1 < next)
        next = leaf_due + 1;
    int64_t ca_left = ca_not_after(d->ca) - now_s();
    if (ca_left > 0 && ca_left / 5 < next)
        next = ca_left / 5 > 1 ? ca_left / 5 : 1;
    if (life / 10 < next)
        next = life / 10 > 1 ? life / 10 : 1;
    struct timeval tv = {next, 0};
    evtimer_add(d->renew_timer, &tv);
}

int identity_start(struct ledged *d)
{
    struct lerr err = {0};
    int r = identity_keys_load_or_create(d->cfg.state_dir, &d->keys, &err);
    if (r < 0) {
        log_error(COMP, "%s", lerr_str(&err));
        return r;
    }
    if ((r = device_identity(d, &err)) < 0) {
        log_error(COMP, "device identity: %s", lerr_str(&err));
        return r;
    }
    _cleanup_free_ char *certs = lstr_printf("%s/certs", d->cfg.state_dir);
    if (!certs)
        return -ENOMEM;
    struct ca_config cc = {
        .dir = certs,
        .device_id = d->cfg.device.id,
        .cert_path = d->cfg.certificates.ca_cert,
        .key_path = d->cfg.certificates.ca_key,
        .chain_path = d->cfg.certificates.ca_chain,
        .trusted_ca_paths = (const char *const *)d->cfg.certificates.trusted_ca_files.v,
        .n_trusted_ca_paths = d->cfg.certificates.trusted_ca_files.n,
        .lifetime_s = d->cfg.certificates.ca_lifetime_ms / 1000,
        .renew_threshold_s = renew_threshold(d, d->cfg.certificates.ca_lifetime_ms / 1000),
    };
    if ((r = ca_open(&cc, now_s(), &d->ca, &err)) < 0) {
        log_error(COMP, "edge CA: %s", lerr_str(&err));
        return r;
    }
    d->hub_cert_path = lstr_printf("%s/hub-server.pem", certs);
    d->hub_key_path = lstr_printf("%s/hub-server.key.pem", certs);
    d->trust_bundle_path = lstr_printf("%s/trust-bundle.pem", certs);
    if (!d->hub_cert_path || !d->hub_key_path || !d->trust_bundle_path)
        return -ENOMEM;
    d->renew_timer = evtimer_new(d->base, renew_cb, d);
    if (!d->renew_timer)
        return -ENOMEM;
    renew_cb(-1, 0, d); /* issue what is missing now, then keep it fresh */
    log_info(COMP, "device %s (%s identity); edge CA %s, valid until %lld", d->cfg.device.id,
             config_identity_name(d->cfg.device.identity),
             ca_is_user_provided(d->ca) ? "provided by the user" : "generated by ledge",
             (long long)ca_not_after(d->ca));
    return 0;
}

void identity_stop(struct ledged *d)
{
    if (d->renew_timer)
        event_free(d->renew_timer);
    d->renew_timer = NULL;
    ca_free(d->ca);
    d->ca = NULL;
    identity_device_free(d->device);
    d->device = NULL;
    identity_keys_free(d->keys);
    d->keys = NULL;
    free(d->hub_cert_path);
    free(d->hub_key_path);
    free(d->trust_bundle_path);
    d->hub_cert_path = d->hub_key_path = d->trust_bundle_path = NULL;
}
