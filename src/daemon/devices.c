/* devices.c — the leaf devices behind this gateway (docs/gateway.md): their identities kept in
 * ledged.db (keys sealed, identity/leaf.h), the management API's /devices, /device-cas and
 * /trust-bundle routes (add, list, show, remove, keys and their rotation, certificates from the
 * edge CA, registered CAs), the connection string and trust bundle a device is given, and what
 * the hub is told: the runtime file's leafDevices and the CA bundle its TLS listener verifies
 * devices' certificates with. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "ledged.h"
#include "identity/ca.h"
#include "identity/leaf.h"
#include "log/log.h"

#define COMP "devices"
/* The registry's bounds (docs/gateway.md "Limits"). */
#define DEVICES_MAX 1000
#define DEVICE_CAS_MAX 100
#define DEVICE_CERT_DAYS_MAX 365

/* A stored record that could not be read back (a damaged row, keys sealed under another master
 * secret): listed with its reason, removable, never given to the hub. */
struct broken_record {
    char *device_id;
    char *why;
};

struct devices {
    struct identity_leaf **v;
    size_t n;
    struct broken_record *broken;
    size_t n_broken;
    struct identity_device_ca *cas;
    size_t n_cas;
    char *ca_bundle_path; /* <run_dir>/hub/device-ca.pem */
};

static int64_t now_ms(void)
{
    return ltime_now_ms();
}

/* ------------------------------------------------------------------ the registry */

static struct identity_leaf *find(struct devices *ds, const char *id)
{
    for (size_t i = 0; i < ds->n; i++)
        if (strcasecmp(ds->v[i]->device_id, id) == 0)
            return ds->v[i];
    return NULL;
}

static ssize_t find_broken(struct devices *ds, const char *id)
{
    for (size_t i = 0; i < ds->n_broken; i++)
        if (strcasecmp(ds->broken[i].device_id, id) == 0)
            return (ssize_t)i;
    return -1;
}

static int save(struct ledged *d, const struct identity_leaf *l)
{
    json_t *rec = NULL;
    int r = identity_leaf_seal(d->keys, d->cfg.device.id, l, &rec);
    if (r < 0)
        return r;
    char *text = ljson_dump(rec);
    json_decref(rec);
    r = text ? state_put(d->db, STATE_LEAF_DEVICES, l->device_id, text) : -ENOMEM;
    free(text);
    return r;
}

static void load_device(void *ud, const char *id, const char *text)
{
    struct ledged *d = ud;
    struct devices *ds = d->devices;
    json_t *rec = NULL;
    struct lerr err = {0};
    struct identity_leaf *l = NULL;
    int r = ljson_parse(text, strlen(text), &rec, &err);
    if (r == 0)
        r = identity_leaf_unseal(d->keys, d->cfg.device.id, rec, &l, &err);
    json_decref(rec);
    if (r == 0 && strcmp(l->device_id, id) != 0)
        r = lerr_set(&err, -EINVAL, "the record names device %s", l->device_id);
    if (r == 0 && ds->n < DEVICES_MAX) {
        struct identity_leaf **v = realloc(ds->v, (ds->n + 1) * sizeof(*v));
        if (v) {
            ds->v = v;
            ds->v[ds->n++] = l;
            return;
        }
        r = lerr_set(&err, -ENOMEM, "out of memory");
    }
    identity_leaf_free(l);
    log_error(COMP, "leaf device %s: %s; it cannot connect until it is removed and added again", id,
              lerr_str(&err));
    struct broken_record *b = realloc(ds->broken, (ds->n_broken + 1) * sizeof(*b));
    if (!b)
        return;
    ds->broken = b;
    ds->broken[ds->n_broken++] = (struct broken_record){strdup(id), strdup(lerr_str(&err))};
}

static void load_ca(void *ud, const char *id, const char *text)
{
    struct ledged *d = ud;
    struct devices *ds = d->devices;
    struct identity_device_ca ca;
    struct lerr err = {0};
    if (ds->n_cas >= DEVICE_CAS_MAX ||
        identity_device_ca_parse(text, strlen(text), 0, &ca, &err) < 0) {
        log_error(COMP, "registered device CA %s: %s; ignored", id, lerr_str(&err));
        return;
    }
    struct identity_device_ca *v = realloc(ds->cas, (ds->n_cas + 1) * sizeof(*v));
    if (!v) {
        identity_device_ca_clear(&ca);
        return;
    }
    ds->cas = v;
    ds->cas[ds->n_cas++] = ca;
}

int devices_start(struct ledged *d)
{
    struct devices *ds = calloc(1, sizeof(*ds));
    if (!ds)
        return -ENOMEM;
    d->devices = ds;
    ds->ca_bundle_path = lstr_printf("%s/hub/device-ca.pem", d->cfg.run_dir);
    if (!ds->ca_bundle_path)
        return -ENOMEM;
    int r = state_load_all(d->db, STATE_LEAF_DEVICES, load_device, d);
    if (r == 0)
        r = state_load_all(d->db, STATE_DEVICE_CAS, load_ca, d);
    if (r < 0) {
        log_error(COMP, "cannot read the leaf devices from the state database: %s", strerror(-r));
        return r;
    }
    if (ds->n || ds->n_cas)
        log_info(COMP, "%zu leaf devices, %zu registered device CAs", ds->n, ds->n_cas);
    return 0;
}

void devices_stop(struct ledged *d)
{
    struct devices *ds = d->devices;
    if (!ds)
        return;
    for (size_t i = 0; i < ds->n; i++)
        identity_leaf_free(ds->v[i]);
    free(ds->v);
    for (size_t i = 0; i < ds->n_broken; i++) {
        free(ds->broken[i].device_id);
        free(ds->broken[i].why);
    }
    free(ds->broken);
    for (size_t i = 0; i < ds->n_cas; i++)
        identity_device_ca_clear(&ds->cas[i]);
    free(ds->cas);
    free(ds->ca_bundle_path);
    free(ds);
    d->devices = NULL;
}

/* ------------------------------------------------------------------ what the hub is told */

json_t *devices_runtime_json(struct ledged *d)
{
    json_t *o = json_object();
    struct devices *ds = d->devices;
    for (size_t i = 0; o && ds && i < ds->n; i++)
        json_object_set_new(o, ds->v[i]->device_id, identity_leaf_runtime_json(ds->v[i]));
    return o;
}

const char *devices_ca_bundle_write(struct ledged *d)
{
    struct devices *ds = d->devices;
    if (!ds)
        return NULL;
    /* The edge CA's own certificates (what `ledge device cert` issues from), the registered CAs
     * and hub.x509_device_ca: the hub's TLS listener takes each of them as a trust anchor. */
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    int r = ca_issuers_bundle(d->ca, &b);
    for (size_t i = 0; r >= 0 && i < ds->n_cas; i++)
        r = lbuf_puts(&b, ds->cas[i].pem);
    if (r >= 0 && d->cfg.hub.x509_device_ca) {
        _cleanup_free_ char *extra = NULL;
        size_t len = 0;
        int rr = lfs_read_file(d->cfg.hub.x509_device_ca, CA_PEM_FILE_MAX, &extra, &len);
        if (rr < 0)
            log_error(COMP,
                      "hub.x509_device_ca %s: %s; CA-signed devices are checked against the "
                      "edge CA and the registered CAs only",
                      d->cfg.hub.x509_device_ca, strerror(-rr));
        else
            r = lbuf_append(&b, extra, len);
    }
    _cleanup_free_ char *dir = lstr_printf("%s/hub", d->cfg.run_dir);
    if (r >= 0)
        r = dir ? lfs_mkdir_p(dir, 0700) : -ENOMEM;
    if (r >= 0)
        r = lfs_write_atomic(ds->ca_bundle_path, b.data ? b.data : "", b.len, 0600);
    if (r < 0) {
        log_error(COMP, "cannot write %s: %s", ds->ca_bundle_path, strerror(-r));
        return NULL;
    }
    return ds->ca_bundle_path;
}

const struct identity_leaf *devices_find(struct ledged *d, const char *id)
{
    return d->devices ? find(d->devices, id) : NULL;
}

bool devices_known(struct ledged *d, const char *id, const char **ret_canonical)
{
    struct identity_leaf *l = d->devices ? find(d->devices, id) : NULL;
    if (l && ret_canonical)
        *ret_canonical = l->device_id;
    return l != NULL;
}

/* ------------------------------------------------------------------ API helpers */

static struct ledged *D(void *ud)
{
    return ud;
}

static int http_status(int r)
{
    switch (r) {
    case -EINVAL:
        return 400;
    case -ENOENT:
        return 404;
    case -EEXIST:
        return 409;
    case -ENOSPC:
        return 507;
    default:
        return 500;
    }
}

/* Keys and connection strings of l, for the reply that hands them out. */
static json_t *credentials_json(struct ledged *d, const struct identity_leaf *l)
{
    json_t *o =
        json_pack("{s:s, s:s}", "deviceId", l->device_id, "auth", identity_leaf_auth_name(l->auth));
    if (!o)
        return NULL;
    const char *host = d->cfg.device.iothub_hostname, *gw = d->cfg.device.gateway_hostname;
    static const char *const names[] = {"connectionString", "secondaryConnectionString"};
    static const char *const keys[] = {"primaryKey", "secondaryKey"};
    int slots = l->auth == IDENTITY_LEAF_SAS ? IDENTITY_LEAF_SLOTS : 1;
    for (int s = 0; s < slots; s++) {
        char *cs = identity_leaf_connection_string(l, host, gw, s);
        if (cs) {
            json_object_set_new(o, names[s], json_string(cs));
            lcrypto_wipe(cs, strlen(cs));
        }
        free(cs);
        if (l->auth != IDENTITY_LEAF_SAS)
            continue;
        struct lbuf b64 = LBUF_INIT;
        if (lcrypto_b64_encode(l->key[s], l->keylen[s], &b64) == 0)
            json_object_set_new(o, keys[s], json_string(b64.data));
        if (b64.data)
            lcrypto_wipe(b64.data, b64.len);
        lbuf_free(&b64);
    }
    if (l->auth == IDENTITY_LEAF_X509_THUMBPRINT) {
        json_t *pub = identity_leaf_json(l);
        json_object_set(o, "thumbprints", json_object_get(pub, "thumbprints"));
        json_decref(pub);
    }
    return o;
}

/* A reply carrying keys: the body is wiped before it is freed (hs_reply copies it). */
static void reply_secret(struct hs_request *r, int status, json_t *o)
{
    char *text = o ? ljson_dump(o) : NULL;
    json_decref(o);
    if (!text) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    hs_reply(r, status, "application/json", text, strlen(text));
    lcrypto_wipe(text, strlen(text));
    free(text);
}

static struct identity_leaf *device_param(struct hs_request *r, struct ledged *d)
{
    const char *id = hs_request_param(r, 0);
    struct identity_leaf *l = find(d->devices, id);
    if (!l)
        hs_reply_error(r, 404, "no leaf device named \"%s\" (ledge device list)", id);
    return l;
}

/* ------------------------------------------------------------------ /devices */

void mgmt_devices_list(struct hs_request *r, void *ud)
{
    struct devices *ds = D(ud)->devices;
    json_t *a = json_array();
    for (size_t i = 0; a && i < ds->n; i++)
        json_array_append_new(a, identity_leaf_json(ds->v[i]));
    for (size_t i = 0; a && i < ds->n_broken; i++)
        json_array_append_new(a, json_pack("{s:s, s:s}", "deviceId", ds->broken[i].device_id,
                                           "error", ds->broken[i].why));
    hs_reply_json(r, 200, json_pack("{s:o}", "devices", a ? a : json_array()));
}

void mgmt_device_get(struct hs_request *r, void *ud)
{
    struct identity_leaf *l = device_param(r, ud);
    if (l)
        hs_reply_json(r, 200, identity_leaf_json(l));
}

/* "thumbprints": "A,B" or ["A", "B"] */
static int thumbprints_text(const json_t *v, char *out, size_t size)
{
    if (!v)
        return 0;
    if (json_is_string(v))
        return lstr_copy(out, size, json_string_value(v)) < 0 ? -EINVAL : 1;
    if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > 2)
        return -EINVAL;
    out[0] = 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const char *s = json_string_value(json_array_get(v, i));
        if (!s || strlen(out) + strlen(s) + 2 > size)
            return -EINVAL;
        if (i)
            strcat(out, ",");
        strcat(out, s);
    }
    return 1;
}

void mgmt_device_add(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct devices *ds = d->devices;
    json_t *body = NULL;
    if (hs_request_body_json(r, false, &body) < 0)
        return;
    _cleanup_json_ json_t *b = body;
    const char *id = ljson_str(b, "deviceId");
    const char *auth = ljson_str(b, "auth");
    struct identity_leaf_spec spec = {
        .device_id = id,
        .auth = IDENTITY_LEAF_SAS,
        .primary_key = ljson_str(b, "primaryKey"),
        .secondary_key = ljson_str(b, "secondaryKey"),
    };
    char thumbs[2 * IDENTITY_THUMBPRINT_SIZE + 64];
    int t = thumbprints_text(json_object_get(b, "thumbprints"), thumbs, sizeof(thumbs));
    if (t < 0) {
        hs_reply_error(r, 400, "thumbprints: expected \"HEX[,HEX2]\" or [\"HEX\", \"HEX2\"]");
        return;
    }
    if (t > 0)
        spec.thumbprints = thumbs;
    if (auth && identity_leaf_auth_from_name(auth, &spec.auth) < 0) {
        hs_reply_error(r, 400, "auth: expected sas, x509-thumbprint or x509-ca, got \"%s\"", auth);
        return;
    }
    if (!id) {
        hs_reply_error(r, 400, "deviceId: required");
        return;
    }
    if (strcasecmp(id, d->cfg.device.id) == 0) {
        hs_reply_error(r, 409, "\"%s\" is this edge device's own id; a leaf device needs another",
                       id);
        return;
    }
    if (find(ds, id) || find_broken(ds, id) >= 0) {
        hs_reply_error(r, 409,
                       "a leaf device named \"%s\" exists already (ids compare "
                       "case-insensitively); remove it first",
                       id);
        return;
    }
    if (ds->n + ds->n_broken >= DEVICES_MAX) {
        hs_reply_error(r, 507, "at most %d leaf devices", DEVICES_MAX);
        return;
    }
    struct lerr err = {0};
    _cleanup_(identity_leaf_freep) struct identity_leaf *l = NULL;
    int rc = identity_leaf_new(&spec, now_ms(), &l, &err);
    if (rc < 0) {
        hs_reply_error(r, http_status(rc), "%s", lerr_str(&err));
        return;
    }
    for (size_t i = 0; i < ds->n; i++)
        for (int s = 0; s < IDENTITY_LEAF_SLOTS; s++)
            for (int u = 0; u < IDENTITY_LEAF_SLOTS; u++)
                if (l->thumbprint[s][0] && strcmp(l->thumbprint[s], ds->v[i]->thumbprint[u]) == 0) {
                    hs_reply_error(r, 409, "thumbprint %s is device %s's already", l->thumbprint[s],
                                   ds->v[i]->device_id);
                    return;
                }
    struct identity_leaf **v = realloc(ds->v, (ds->n + 1) * sizeof(*v));
    if (!v) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    ds->v = v;
    if ((rc = save(d, l)) < 0) {
        hs_reply_error(r, 500, "cannot save the device: %s", strerror(-rc));
        return;
    }
    ds->v[ds->n++] = l;
    log_info(COMP, "leaf device %s added (%s)", l->device_id, identity_leaf_auth_name(l->auth));
    hub_runtime_changed(d);
    json_t *o = credentials_json(d, l);
    if (o)
        json_object_set_new(o, "device", identity_leaf_json(l));
    TAKE_PTR(l);
    reply_secret(r, 201, o);
}

void mgmt_device_remove(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct devices *ds = d->devices;
    const char *id = hs_request_param(r, 0);
    struct identity_leaf *l = find(ds, id);
    ssize_t broken = l ? -1 : find_broken(ds, id);
    if (!l && broken < 0) {
        hs_reply_error(r, 404, "no leaf device named \"%s\" (ledge device list)", id);
        return;
    }
    const char *canonical = l ? l->device_id : ds->broken[broken].device_id;
    int rc = state_remove(d->db, STATE_LEAF_DEVICES, canonical);
    if (rc < 0 && rc != -ENOENT) {
        hs_reply_error(r, 500, "cannot remove the device: %s", strerror(-rc));
        return;
    }
    json_t *o = json_pack("{s:s, s:b}", "deviceId", canonical, "removed", 1);
    log_info(COMP, "leaf device %s removed", canonical);
    if (l) {
        for (size_t i = 0; i < ds->n; i++)
            if (ds->v[i] == l) {
                ds->v[i] = ds->v[--ds->n];
                break;
            }
        identity_leaf_free(l);
    } else {
        free(ds->broken[broken].device_id);
        free(ds->broken[broken].why);
        ds->broken[broken] = ds->broken[--ds->n_broken];
    }
    /* The hub cuts the device's connections as soon as it reads this. */
    hub_runtime_changed(d);
    hs_reply_json(r, 200, o);
}

void mgmt_device_keys(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct identity_leaf *l = device_param(r, d);
    if (l)
        reply_secret(r, 200, credentials_json(d, l));
}

void mgmt_device_rotate(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct identity_leaf *l = device_param(r, d);
    if (!l)
        return;
    const char *which = hs_request_query(r, "slot");
    unsigned mask = 3;
    if (lstr_eq(which, "primary"))
        mask = 1;
    else if (lstr_eq(which, "secondary"))
        mask = 2;
    else if (which && !lstr_eq(which, "both")) {
        hs_reply_error(r, 400, "slot: expected primary, secondary or both, got \"%s\"", which);
        return;
    }
    struct identity_leaf next = *l;
    struct lerr err = {0};
    int rc = identity_leaf_rotate(&next, mask, now_ms(), &err);
    if (rc == 0) {
        if ((rc = save(d, &next)) < 0)
            lerr_set(&err, rc, "cannot save the new keys: %s", strerror(-rc));
    }
    if (rc < 0) {
        lcrypto_wipe(&next, sizeof(next));
        hs_reply_error(r, http_status(rc), "%s", lerr_str(&err));
        return;
    }
    memcpy(l->key, next.key, sizeof(l->key));
    memcpy(l->keylen, next.keylen, sizeof(l->keylen));
    l->keys_changed_ms = next.keys_changed_ms;
    lcrypto_wipe(&next, sizeof(next));
    log_info(COMP, "leaf device %s: %s key%s rotated", l->device_id,
             mask == 3   ? "both"
             : mask == 1 ? "the primary"
                         : "the secondary",
             mask == 3 ? "s" : "");
    /* Connections authenticated by a key that is gone are cut by the hub. */
    hub_runtime_changed(d);
    reply_secret(r, 200, credentials_json(d, l));
}

void mgmt_device_cert(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct identity_leaf *l = device_param(r, d);
    if (!l)
        return;
    json_t *body = NULL;
    if (hs_request_body_json(r, true, &body) < 0)
        return;
    long long days = ljson_int(body, "days", 30);
    json_decref(body);
    if (days < 1 || days > DEVICE_CERT_DAYS_MAX) {
        hs_reply_error(r, 400, "days: expected 1-%d", DEVICE_CERT_DAYS_MAX);
        return;
    }
    if (strlen(l->device_id) > CA_COMMON_NAME_MAX) {
        hs_reply_error(r, 400,
                       "device id \"%s\" is longer than a certificate's common name may be (%d)",
                       l->device_id, CA_COMMON_NAME_MAX);
        return;
    }
    /* CN = the device id, as IoT Hub matches CA-signed devices; the URI SAN names the device
     * (never a module: the hub refuses a module's certificate for a device). */
    _cleanup_free_ char *uri =
        lstr_printf("azureiot://%s/devices/%s", d->cfg.device.iothub_hostname, l->device_id);
    struct ca_leaf_request req = {
        .kind = CA_LEAF_CLIENT,
        .common_name = l->device_id,
        .uri = uri,
        .lifetime_s = days * 86400,
    };
    struct ca_leaf leaf = {0};
    struct lerr err = {0};
    int rc = uri ? ca_issue(d->ca, &req, ltime_now_ms() / 1000, &leaf, &err) : -ENOMEM;
    if (rc < 0) {
        hs_reply_error(r, rc == -EINVAL ? 400 : 500, "%s", lerr_str(&err));
        return;
    }
    char sha1[41] = "", sha256[65] = "";
    STACK_OF(X509) *certs = NULL;
    if (ca_pem_read_certs(leaf.cert_pem, strlen(leaf.cert_pem), &certs, NULL) == 0) {
        identity_cert_thumbprints(sk_X509_value(certs, 0), sha1, sha256);
        ca_cert_stack_free(certs);
    }
    char exp[LTIME_RFC3339_MAX];
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "deviceId", l->device_id, "certificate",
                  leaf.cert_pem, "privateKey", leaf.key_pem, "thumbprint", sha1, "thumbprintSha256",
                  sha256, "expiration", ltime_format_rfc3339(leaf.not_after * 1000, exp));
    ca_leaf_done(&leaf);
    log_info(COMP, "issued a %lld-day client certificate for leaf device %s (%s)", days,
             l->device_id, sha1);
    reply_secret(r, 201, o);
}

void mgmt_trust_bundle(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    if (ca_trust_bundle(d->ca, &b) < 0) {
        hs_reply_error(r, 500, "cannot make the trust bundle");
        return;
    }
    hs_reply_json(r, 200, json_pack("{s:s}", "certificate", b.data));
}

/* ------------------------------------------------------------------ /device-cas */

void mgmt_device_cas_list(struct hs_request *r, void *ud)
{
    struct devices *ds = D(ud)->devices;
    json_t *a = json_array();
    for (size_t i = 0; a && i < ds->n_cas; i++)
        json_array_append_new(a, identity_device_ca_json(&ds->cas[i], false));
    hs_reply_json(r, 200, json_pack("{s:o}", "cas", a ? a : json_array()));
}

void mgmt_device_ca_add(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct devices *ds = d->devices;
    json_t *body = NULL;
    if (hs_request_body_json(r, false, &body) < 0)
        return;
    const char *pem = ljson_str(body, "pem");
    struct identity_device_ca ca;
    struct lerr err = {0};
    int rc = pem ? identity_device_ca_parse(pem, strlen(pem), ltime_now_ms() / 1000, &ca, &err)
                 : lerr_set(&err, -EINVAL, "pem: required (the CA certificate, PEM)");
    json_decref(body);
    if (rc < 0) {
        hs_reply_error(r, http_status(rc), "%s", lerr_str(&err));
        return;
    }
    for (size_t i = 0; i < ds->n_cas; i++)
        if (strcmp(ds->cas[i].thumbprint, ca.thumbprint) == 0) {
            hs_reply_error(r, 409, "CA %s is registered already", ca.thumbprint);
            identity_device_ca_clear(&ca);
            return;
        }
    if (ds->n_cas >= DEVICE_CAS_MAX) {
        hs_reply_error(r, 507, "at most %d device CAs", DEVICE_CAS_MAX);
        identity_device_ca_clear(&ca);
        return;
    }
    struct identity_device_ca *v = realloc(ds->cas, (ds->n_cas + 1) * sizeof(*v));
    if (v)
        ds->cas = v;
    if (!v || (rc = state_put(d->db, STATE_DEVICE_CAS, ca.thumbprint, ca.pem)) < 0) {
        hs_reply_error(r, 500, "cannot save the CA: %s", strerror(v ? -rc : ENOMEM));
        identity_device_ca_clear(&ca);
        return;
    }
    ds->cas = v;
    ds->cas[ds->n_cas++] = ca;
    log_info(COMP, "device CA %s registered (%s)", ca.thumbprint, ca.subject);
    hub_runtime_changed(d);
    hs_reply_json(r, 201, identity_device_ca_json(&ca, false));
}

void mgmt_device_ca_remove(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    struct devices *ds = d->devices;
    char want[IDENTITY_THUMBPRINT_SIZE];
    struct lerr err = {0};
    if (identity_thumbprint_parse(hs_request_param(r, 0), want, &err) < 0) {
        hs_reply_error(r, 400, "%s", lerr_str(&err));
        return;
    }
    for (size_t i = 0; i < ds->n_cas; i++) {
        if (strcmp(ds->cas[i].thumbprint, want) != 0)
            continue;
        int rc = state_remove(d->db, STATE_DEVICE_CAS, want);
        if (rc < 0 && rc != -ENOENT) {
            hs_reply_error(r, 500, "cannot remove the CA: %s", strerror(-rc));
            return;
        }
        log_info(COMP, "device CA %s removed", want);
        identity_device_ca_clear(&ds->cas[i]);
        ds->cas[i] = ds->cas[--ds->n_cas];
        hub_runtime_changed(d);
        hs_reply_json(r, 200, json_pack("{s:s, s:b}", "thumbprint", want, "removed", 1));
        return;
    }
    hs_reply_error(r, 404, "no registered device CA %s (ledge device ca list)", want);
}
