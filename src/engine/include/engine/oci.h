/* oci.h — what the oci engine needs of the host, for ledged and `ledge check` alike: the OCI
 * runtime engine.runtime resolves to, and the host's cgroup mode as the runtimes see it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/errors.h"

enum oci_cgroups {
    OCI_CGROUPS_NONE,    /* nothing cgroup-like at /sys/fs/cgroup */
    OCI_CGROUPS_V1,      /* v1 hierarchies only */
    OCI_CGROUPS_HYBRID,  /* v1 hierarchies and the v2 one at /sys/fs/cgroup/unified */
    OCI_CGROUPS_UNIFIED, /* one cgroup v2 hierarchy */
};

/* The host's mode; the v2 hierarchy's controllers (its cgroup.controllers, "" for none or no v2
 * hierarchy) in v2_controllers. */
enum oci_cgroups oci_cgroups_mode(char *v2_controllers, size_t size);
const char *oci_cgroups_name(enum oci_cgroups m); /* "v2", "hybrid", "v1", "none" */

/* crun 1.8 (Debian 12) runs on unified and v1 hosts, and on hybrid ones only while the v2
 * hierarchy holds no controller ("cgroups in hybrid mode not supported, drop all controllers
 * from cgroupv2"); runc runs on all three. */
bool oci_crun_fits(enum oci_cgroups m, const char *v2_controllers);

/* engine.runtime → the runtime's path: an absolute path as it is; "crun" or "runc" from the
 * usual directories; "auto" (or NULL, "") crun where it fits the host's cgroups, else runc, else
 * an error saying what to install. Errors name the setting and the package. */
int oci_runtime_resolve(const char *want, char **ret_path, struct lerr *e);
