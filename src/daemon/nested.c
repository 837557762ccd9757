/* nested.c — deployments for a child edge device (nested edge, docs/nested.md): `ledge --device D
 * deploy FILE` on its parent. The manifest is validated as ledged validates its own (the child
 * validates it again against its engines), then each module twin's desired properties in it
 * ($edgeAgent's, $edgeHub's, every module's) replace that twin's on this device's hub, one after
 * the other through the hub's control socket, as IoT Hub's deployment writes them; the child's
 * $edgeAgent session gets them as desired-property changes and applies them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/manifest.h"
#include "base/json.h"
#include "base/str.h"
#include "identity/leaf.h"
#include "ledged.h"
#include "log/log.h"
#include "net/http_client.h"

#define COMP "nested"
#define NESTED_MAX_TWINS 100 /* module twins one deployment may name (the hub's bound too) */

struct child_deploy {
    struct ledged *d;
    struct hs_request *req;
    struct hc_transfer *t;
    char *device;
    json_t *twins; /* [[name, desired], ...] in the order they are written */
    size_t next;
    json_t *versions; /* {name: $version} written so far */
};

static void child_deploy_free(struct child_deploy *c)
{
    if (!c)
        return;
    json_decref(c->twins);
    json_decref(c->versions);
    free(c->device);
    free(c);
}

static void child_deploy_abort(struct hs_request *r, void *ud)
{
    struct child_deploy *c = ud;
    hc_cancel(c->t);
    child_deploy_free(c);
}

static char *enc(const char *s)
{
    struct lbuf b = LBUF_INIT;
    lstr_url_encode(s, strlen(s), &b);
    return lbuf_steal(&b);
}

static void write_next(struct child_deploy *c);

static void written(void *ud, int result, long status, struct lbuf *body)
{
    struct child_deploy *c = ud;
    c->t = NULL;
    const char *name = json_string_value(json_array_get(json_array_get(c->twins, c->next), 0));
    if (result < 0 || status == 0) {
        hs_request_on_abort(c->req, NULL, NULL);
        hs_reply_error(c->req, 503, "the hub is not running or not answering (%s)",
                       strerror(result < 0 ? -result : EIO));
        child_deploy_free(c);
        return;
    }
    json_t *reply = NULL;
    ljson_parse(body->data ? body->data : "", body->len, &reply, NULL);
    if (status != 200) {
        hs_request_on_abort(c->req, NULL, NULL);
        hs_reply_error(c->req, (int)status, "%s: %s", name,
                       ljson_str(reply, "message") ? ljson_str(reply, "message")
                                                   : "the hub refused the desired properties");
        json_decref(reply);
        child_deploy_free(c);
        return;
    }
    json_t *v = json_object_get(json_object_get(reply, "desired"), "$version");
    json_object_set(c->versions, name, v ? v : json_null());
    json_decref(reply);
    c->next++;
    write_next(c);
}

static void write_next(struct child_deploy *c)
{
    struct ledged *d = c->d;
    if (c->next >= json_array_size(c->twins)) {
        hs_request_on_abort(c->req, NULL, NULL);
        log_info(COMP, "deployment for child edge device %s written (%zu module twins)", c->device,
                 json_array_size(c->twins));
        hs_reply_json(
            c->req, 200,
            json_pack("{s:s, s:O}", "deviceId", c->device, "desiredVersions", c->versions));
        child_deploy_free(c);
        return;
    }
    json_t *e = json_array_get(c->twins, c->next);
    _cleanup_free_ char *ed = enc(c->device), *em = enc(json_string_value(json_array_get(e, 0)));
    _cleanup_free_ char *body = ljson_dump(json_array_get(e, 1));
    char url[1400];
    snprintf(url, sizeof(url), "http://localhost/devices/%s/modules/%s/twin/desired", ed, em);
    bool client = d->hub_client || hc_client_new(d->base, &d->hub_client) == 0;
    struct hc_request req = {
        .method = "PUT",
        .unix_socket = d->cfg.hub.control_socket,
        .url = url,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .timeout_ms = 5000,
        .connect_timeout_ms = 2000,
        .on_done = written,
        .ud = c,
    };
    c->t = body && client ? hc_request(d->hub_client, &req) : NULL;
    if (!c->t) {
        hs_request_on_abort(c->req, NULL, NULL);
        hs_reply_error(c->req, 500, "cannot reach the hub");
        child_deploy_free(c);
    }
}

/* The module twins a manifest sets, $edgeHub first and $edgeAgent after it (the child applies
 * when either changes, and reads both), then the modules': [[name, desired], ...]. -EINVAL with
 * the reason in err. */
static int manifest_twins(const json_t *doc, json_t **ret, struct lerr *err)
{
    const json_t *mc = json_object_get(doc, "modulesContent");
    if (!mc)
        mc = doc;
    if (!json_is_object(mc))
        return lerr_set(err, -EINVAL, "modulesContent: must be an object");
    if (json_object_size(mc) > NESTED_MAX_TWINS)
        return lerr_set(err, -EINVAL, "modulesContent: more than %d module twins",
                        NESTED_MAX_TWINS);
    json_t *a = json_array();
    static const char *const first[] = {"$edgeHub", "$edgeAgent"};
    for (size_t i = 0; i < ARRAY_SIZE(first); i++) {
        json_t *des = json_object_get(json_object_get(mc, first[i]), "properties.desired");
        if (!json_is_object(des)) {
            json_decref(a);
            return lerr_set(err, -EINVAL, "modulesContent.%s.properties.desired: required",
                            first[i]);
        }
        json_array_append_new(a, json_pack("[s, O]", first[i], des));
    }
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)mc, k, v) {
        if (strcmp(k, "$edgeHub") == 0 || strcmp(k, "$edgeAgent") == 0)
            continue;
        json_t *des = json_object_get(v, "properties.desired");
        if (!json_is_object(des)) {
            json_decref(a);
            return lerr_set(err, -EINVAL,
                            "modulesContent.%.128s.properties.desired: must be an object", k);
        }
        json_array_append_new(a, json_pack("[s, O]", k, des));
    }
    *ret = a;
    return 0;
}

void mgmt_child_deploy(struct hs_request *r, void *ud)
{
    struct ledged *d = ud;
    const char *id = hs_request_param(r, 0);
    const struct identity_leaf *l = devices_find(d, id);
    if (!l) {
        hs_reply_error(r, 404, "no leaf device \"%s\" (ledge device list)", id);
        return;
    }
    if (l->auth != IDENTITY_LEAF_SAS) {
        hs_reply_error(r, 409,
                       "device %s is an X.509 device: a child edge device needs a SAS identity "
                       "(its modules' keys derive from its key)",
                       l->device_id);
        return;
    }
    const char *canonical = l->device_id;
    size_t n = 0;
    const char *text = hs_request_body(r, &n);
    if (!n) {
        hs_reply_error(r, 400, "expected a deployment manifest (JSON) in the request body");
        return;
    }
    /* The same validation as a local deployment's, without this device's engines: the child
     * checks it against its own and reports what it thinks in $edgeAgent's reported
     * properties. */
    _cleanup_deployment_ struct deployment *dep = NULL;
    _cleanup_lstrv_ struct lstrv errors = LSTRV_INIT;
    if (manifest_parse(text, n, NULL, &dep, &errors) < 0) {
        _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
        lbuf_puts(&b, "invalid deployment: ");
        for (size_t i = 0; i < errors.n; i++)
            lbuf_printf(&b, "%s%s", i ? "; " : "", errors.v[i]);
        hs_reply_error(r, 400, "%s", b.data ? b.data : "invalid deployment");
        return;
    }
    json_t *doc = NULL;
    struct lerr err = {0};
    if (ljson_parse(text, n, &doc, NULL) < 0) {
        hs_reply_error(r, 400, "the deployment is not JSON");
        return;
    }
    json_t *twins = NULL;
    int rc = manifest_twins(doc, &twins, &err);
    json_decref(doc);
    if (rc < 0) {
        hs_reply_error(r, 400, "%s", err.msg);
        return;
    }
    struct child_deploy *c = calloc(1, sizeof(*c));
    if (!c || !(c->device = strdup(canonical)) || !(c->versions = json_object())) {
        json_decref(twins);
        child_deploy_free(c);
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    c->d = d;
    c->req = r;
    c->twins = twins;
    hs_request_on_abort(r, child_deploy_abort, c);
    write_next(c);
}
