/* oci_cni.h — building CNI plugin inputs and reading their answers (oci_cni.c). Pure; fuzzed by
 * fuzz-oci-cni. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "base/errors.h"

#define OCI_CNI_VERSION "1.0.0"
#define OCI_CNI_RESULT_MAX (256u << 10) /* what a plugin may print */

struct oci_cni_subnet {
    char cidr[40];
    char network[20];
    char gateway[20]; /* the first address: the bridge's */
    unsigned prefix;
};

/* "10.88.0.0/16" (the address is masked: 10.88.3.4/16 is 10.88.0.0/16). */
int oci_cni_subnet(const char *cidr, struct oci_cni_subnet *ret, struct lerr *e);
/* "lg-<network>", or lg- and a hash for names that do not fit 15 bytes. */
void oci_cni_bridge_name(const char *network, char *buf, size_t n);
json_t *oci_cni_conflist(const char *network, const char *bridge, const struct oci_cni_subnet *s,
                         const char *ipam_dir);
/* Plugin i's stdin: its config with name, cniVersion, prevResult and runtimeConfig. */
json_t *oci_cni_plugin_input(const json_t *conflist, size_t i, const json_t *prev_result,
                             const json_t *port_mappings);
/* A plugin's result (a JSON object whose ips are address/prefix); ret_ip: the first IPv4. */
int oci_cni_parse_result(const char *text, size_t n, json_t **ret_result, char *ret_ip,
                         size_t ip_size, struct lerr *e);
/* A failed plugin's error ({"code", "msg", "details"} on stdout, or its stderr) into e. */
void oci_cni_error(const char *plugin, int status, const char *out, size_t out_len, const char *err,
                   struct lerr *e);
