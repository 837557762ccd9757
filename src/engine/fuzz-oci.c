/* fuzz-oci.c — libFuzzer target for what the oci engine reads from others: the keeper's
 * messages (both directions), CNI plugins' results and errors, container log records, and the
 * runtime config built from createOptions and an image config (the first input byte picks). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "keeper_proto.h"
#include "oci-internal.h"
#include "oci_cni.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fake_user(void *ud, const char *user, struct oci_user *ret, struct lerr *e)
{
    memset(ret, 0, sizeof(*ret));
    if (strcmp(user, "nobody") == 0)
        return lerr_set(e, -2, "no such user");
    ret->uid = (uint32_t)strtoul(user, NULL, 10);
    return 0;
}

static int fake_device(void *ud, const char *path, struct oci_device *ret, struct lerr *e)
{
    *ret = (struct oci_device){.type = 'c', .major = 1, .minor = 3, .mode = 0666};
    return strstr(path, "missing") ? lerr_set(e, -2, "missing") : 0;
}

static void keeper(const char *text, size_t n)
{
    _cleanup_json_ json_t *j = NULL;
    if (ljson_parse(text, n, &j, NULL) < 0)
        return;
    struct keeper_request r;
    if (keeper_request_parse(j, &r, NULL) == 0) {
        /* what parses, encodes to what parses the same */
        _cleanup_json_ json_t *again = keeper_request_json(&r);
        struct keeper_request r2;
        if (!again || keeper_request_parse(again, &r2, NULL) < 0 || r2.op != r.op ||
            r2.seq != r.seq)
            abort();
    }
    struct keeper_msg m;
    if (keeper_msg_parse(j, &m, NULL) == 0 && m.containers) {
        size_t i;
        json_t *v;
        json_array_foreach (m.containers, i, v) {
            struct keeper_container c;
            (void)keeper_container_parse(v, &c, NULL);
        }
    }
}

static void cni(const char *text, size_t n)
{
    json_t *res = NULL;
    char ip[64];
    if (oci_cni_parse_result(text, n, &res, ip, sizeof(ip), NULL) == 0)
        json_decref(res);
    struct lerr e;
    oci_cni_error("bridge", 1, text, n, "stderr", &e);
    char s[64];
    snprintf(s, sizeof(s), "%.*s", (int)(n < 63 ? n : 63), text);
    struct oci_cni_subnet sub;
    if (oci_cni_subnet(s, &sub, NULL) == 0) {
        struct oci_cni_subnet again;
        if (oci_cni_subnet(sub.cidr, &again, NULL) < 0 || strcmp(again.cidr, sub.cidr) != 0)
            abort();
    }
}

static void logrec(const char *text, size_t n)
{
    struct oci_log_rec r;
    if (oci_log_parse(text, n, &r) == 0 &&
        (r.text < text || r.text + r.len > text + n || (r.stream != 1 && r.stream != 2)))
        abort();
}

static void spec(const char *text, size_t n)
{
    _cleanup_json_ json_t *j = NULL;
    if (ljson_parse(text, n, &j, NULL) < 0 || !json_is_object(j))
        return;
    const json_t *co = json_object_get(j, "co"), *img = json_object_get(j, "img");
    if (co && !json_is_object(co))
        return;
    struct lstrv errors = LSTRV_INIT;
    oci_spec_check(co, "createOptions", &errors);
    lstrv_free(&errors);
    enum oci_netmode nm;
    (void)oci_spec_netmode(co, "ledge", &nm, NULL);
    json_t *ports = NULL;
    if (oci_spec_port_mappings(co, &ports, NULL) == 0)
        json_decref(ports);
    struct lbuf hosts = LBUF_INIT;
    (void)oci_spec_extra_hosts(co, "10.88.0.1", &hosts, NULL);
    lbuf_free(&hosts);
    (void)oci_spec_stop_signal(co, img);
    struct oci_health h;
    if (oci_spec_health(co, img, &h) > 0)
        json_decref(h.test);
    struct oci_spec_input in = {.name = "m",
                                .create_options = co,
                                .image_config = img,
                                .hostname = "h",
                                .netmode = OCI_NET_BRIDGE,
                                .netns = "/run/ns",
                                .hosts_file = "/x/hosts",
                                .resolv_file = "/x/resolv.conf",
                                .hostname_file = "/x/hostname",
                                .volumes_dir = "/x/volumes",
                                .cgroups_path = "/ledge/m",
                                .seccomp_arch = "SCMP_ARCH_X86_64"};
    struct oci_spec_env env = {.resolve_user = fake_user, .stat_device = fake_device};
    json_t *cfg = NULL;
    struct lstrv dirs = LSTRV_INIT;
    if (oci_spec_build(&in, &env, &cfg, &dirs, NULL) == 0) {
        if (!json_is_array(json_object_get(json_object_get(cfg, "process"), "args")))
            abort();
        json_decref(cfg);
    }
    lstrv_free(&dirs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
        keeper(text, n);
        break;
    case 1:
        cni(text, n);
        break;
    case 2:
        logrec(text, n);
        break;
    default:
        spec(text, n);
        break;
    }
    return 0;
}
