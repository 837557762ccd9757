/* oci_cni.c — the pure half of the oci engine's networking: the CNI network configuration list
 * (bridge with host-local IPAM, NAT out and hairpin; portmap for published ports; firewall for
 * the FORWARD chain, which dockerd sets to DROP), each plugin's stdin as the CNI spec (1.0.0)
 * asks for it, and the results and errors plugins print, checked before anything is used. */
#include "oci_cni.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"

int oci_cni_subnet(const char *cidr, struct oci_cni_subnet *ret, struct lerr *e)
{
    char addr[32];
    unsigned len;
    char extra;
    if (!cidr || sscanf(cidr, "%31[0-9.]/%u%c", addr, &len, &extra) != 2 || len < 8 || len > 30)
        return lerr_set(e, -EINVAL, "engine.subnet: \"%.40s\" is not an IPv4 CIDR (/8 to /30)",
                        cidr ? cidr : "");
    struct in_addr a;
    if (inet_pton(AF_INET, addr, &a) != 1)
        return lerr_set(e, -EINVAL, "engine.subnet: \"%.40s\" is not an IPv4 address", addr);
    uint32_t mask = len ? 0xffffffffu << (32 - len) : 0;
    uint32_t net = ntohl(a.s_addr) & mask;
    struct in_addr n = {htonl(net)}, g = {htonl(net + 1)};
    memset(ret, 0, sizeof(*ret));
    inet_ntop(AF_INET, &n, ret->network, sizeof(ret->network));
    inet_ntop(AF_INET, &g, ret->gateway, sizeof(ret->gateway));
    snprintf(ret->cidr, sizeof(ret->cidr), "%s/%u", ret->network, len);
    ret->prefix = len;
    return 0;
}

void oci_cni_bridge_name(const char *network, char *buf, size_t n)
{
    /* interface names are at most 15 bytes */
    if (strlen(network) <= 12 &&
        strspn(network, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(network)) {
        snprintf(buf, n, "lg-%s", network);
        return;
    }
    char hex[2 * LCRYPTO_SHA256_LEN + 1];
    lcrypto_sha256_hex(network, strlen(network), hex);
    snprintf(buf, n, "lg-%.12s", hex);
}

json_t *oci_cni_conflist(const char *network, const char *bridge, const struct oci_cni_subnet *s,
                         const char *ipam_dir)
{
    return json_pack(
        "{s:s, s:s, s:[{s:s, s:s, s:b, s:b, s:b, s:{s:s, s:[[{s:s, s:s}]], s:[{s:s}], s:s}}, "
        "{s:s, s:b, s:{s:b}}, {s:s, s:s}]}",
        "cniVersion", OCI_CNI_VERSION, "name", network, "plugins", "type", "bridge", "bridge",
        bridge, "isGateway", 1, "ipMasq", 1, "hairpinMode", 1, "ipam", "type", "host-local",
        "ranges", "subnet", s->cidr, "gateway", s->gateway, "routes", "dst", "0.0.0.0/0", "dataDir",
        ipam_dir, "type", "portmap", "snat", 1, "capabilities", "portMappings", 1, "type",
        "firewall", "backend", "iptables");
}

json_t *oci_cni_plugin_input(const json_t *conflist, size_t i, const json_t *prev_result,
                             const json_t *port_mappings)
{
    json_t *p = json_array_get(json_object_get(conflist, "plugins"), i);
    if (!p)
        return NULL;
    json_t *in = json_deep_copy(p);
    if (!in)
        return NULL;
    json_object_set(in, "name", json_object_get(conflist, "name"));
    json_object_set(in, "cniVersion", json_object_get(conflist, "cniVersion"));
    if (prev_result)
        json_object_set(in, "prevResult", (json_t *)prev_result);
    /* a capability the plugin declares gets its runtimeConfig entry */
    json_t *caps = json_object_get(in, "capabilities");
    if (json_is_true(json_object_get(caps, "portMappings")) && json_array_size(port_mappings))
        json_object_set_new(in, "runtimeConfig", json_pack("{s:O}", "portMappings", port_mappings));
    json_object_del(in, "capabilities");
    return in;
}

int oci_cni_parse_result(const char *text, size_t n, json_t **ret_result, char *ret_ip,
                         size_t ip_size, struct lerr *e)
{
    _cleanup_json_ json_t *j = NULL;
    struct lerr pe = {0};
    if (n > OCI_CNI_RESULT_MAX)
        return lerr_set(e, -E2BIG, "a CNI plugin printed more than %u bytes", OCI_CNI_RESULT_MAX);
    if (ljson_parse(text, n, &j, &pe) < 0 || !json_is_object(j))
        return lerr_set(e, -EPROTO, "a CNI plugin printed something that is not a result: %s",
                        pe.msg[0] ? pe.msg : "not an object");
    json_t *ips = json_object_get(j, "ips");
    if (ips && !json_is_array(ips))
        return lerr_set(e, -EPROTO, "CNI result: ips must be an array");
    if (ret_ip && ip_size)
        ret_ip[0] = 0;
    size_t i;
    json_t *ip;
    json_array_foreach (ips, i, ip) {
        const char *a = ljson_str(ip, "address");
        char addr[64];
        unsigned len;
        struct in_addr in;
        if (!a || sscanf(a, "%63[0-9.]/%u", addr, &len) != 2 || len > 32 ||
            inet_pton(AF_INET, addr, &in) != 1) {
            if (a && strchr(a, ':'))
                continue; /* IPv6: not configured by ledge, not used */
            return lerr_set(e, -EPROTO, "CNI result: ips[%zu].address is not an address/prefix", i);
        }
        if (ret_ip && ip_size && !ret_ip[0])
            snprintf(ret_ip, ip_size, "%s", addr);
    }
    if (ret_result)
        *ret_result = TAKE_PTR(j);
    return 0;
}

void oci_cni_error(const char *plugin, int status, const char *out, size_t out_len, const char *err,
                   struct lerr *e)
{
    _cleanup_json_ json_t *j = NULL;
    const char *msg = NULL, *details = NULL;
    if (out_len && out_len <= OCI_CNI_RESULT_MAX && ljson_parse(out, out_len, &j, NULL) == 0) {
        msg = ljson_str(j, "msg");
        details = ljson_str(j, "details");
    }
    if (!msg && err && *err)
        msg = err;
    lerr_set(e, -EIO, "CNI plugin %s failed (exit %d): %.200s%s%.200s", plugin, status,
             msg ? msg : "no message", details && *details ? ": " : "", details ? details : "");
}
