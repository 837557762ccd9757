/* oci-internal.h — the parts of the oci engine (oci.c) that live in files of their own: helper
 * programs on the event loop (oci_exec.c), the OCI runtime config from createOptions and the
 * image (oci_spec.c, pure), CNI networking and name resolution (oci_net.c, oci_cni.c), the
 * container logs (oci_logs.c). docs/engine-oci.md describes the whole. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/errors.h"
#include "base/str.h"
#include "engine/engine.h"

struct event_base;

/* ------------------------------------------------------------------ helper programs */

struct oci_exec_result {
    int status;            /* exit code, or 128 + signal */
    const char *out, *err; /* NUL-terminated */
    size_t out_len, err_len;
    bool truncated; /* more was written than out_max / err_max */
};
typedef void (*oci_exec_done_fn)(void *ud, const struct oci_exec_result *r);
typedef void (*oci_exec_line_fn)(void *ud, const char *line);

struct oci_exec_opts {
    const char *const *argv; /* argv[0]: an absolute path */
    const char *const *envp; /* NULL: PATH only */
    const char *input;       /* written to stdin (wiped from memory afterwards) */
    size_t input_len;
    size_t out_max, err_max; /* bytes kept; 0: 1 MiB / 64 KiB */
    long timeout_ms;         /* killed after this; 0: never */
    bool setsid;
    oci_exec_line_fn on_line; /* stdout line by line instead of collected */
    oci_exec_done_fn done;    /* exactly once, unless cancelled */
    void *ud;
};

struct oci_exec;
int oci_exec_start(struct event_base *base, const struct oci_exec_opts *o, struct oci_exec **ret);
/* Kill and reap the program; done is not called. Accepts NULL. */
void oci_exec_cancel(struct oci_exec *x);

/* ------------------------------------------------------------------ the runtime config */

struct oci_user {
    uint32_t uid, gid;
    uint32_t groups[32]; /* additional gids */
    size_t n_groups;
};

struct oci_device {
    char type; /* 'c' or 'b' */
    int64_t major, minor;
    uint32_t mode;
};

/* What oci_spec_build() needs from outside: what the rootfs and the host say. */
struct oci_spec_env {
    /* "name", "uid", "name:group", "uid:gid" as docker reads User, resolved against the
     * container's /etc/passwd and /etc/group. */
    int (*resolve_user)(void *ud, const char *user, struct oci_user *ret, struct lerr *e);
    /* A host device node. */
    int (*stat_device)(void *ud, const char *path, struct oci_device *ret, struct lerr *e);
    void *ud;
};

enum oci_netmode {
    OCI_NET_BRIDGE, /* the deployment's network (engine.network) */
    OCI_NET_HOST,
    OCI_NET_NONE,
};

struct oci_spec_input {
    const char *name;
    const json_t *create_options; /* normalised ContainerCreate, or NULL */
    const json_t *image_config;   /* the image config document ({"config": {...}, ...}) */
    const json_t *env;            /* ledge's: wins over the image's and the user's */
    const json_t *binds;          /* ledge's "host:container[:opts]" */
    const char *hostname;         /* when createOptions has none */
    enum oci_netmode netmode;
    const char *netns; /* the network namespace to join (bridge, none) */
    const char *hosts_file, *resolv_file, *hostname_file; /* bind-mounted into /etc */
    const char *volumes_dir;                              /* named volumes: <volumes_dir>/<name> */
    const char *cgroups_path;
    const char *seccomp_arch; /* SCMP_ARCH_X86_64 ...; NULL: no seccomp profile */
    bool userns;
    uint32_t userns_base, userns_size; /* container 0 = host userns_base */
    const char *workload_dir;          /* not needed: comes in binds */
};

/* The config.json for a container: createOptions over the image config's defaults, Moby's
 * defaults for what neither says (capabilities, masked and read-only paths, seccomp, /dev/shm
 * of 64 MiB). Named volumes in Binds/Mounts get their directories created by the caller from
 * ret_volumes (names). Errors name the createOptions field. */
int oci_spec_build(const struct oci_spec_input *in, const struct oci_spec_env *env,
                   json_t **ret_config, struct lstrv *ret_volumes, struct lerr *e);

/* The deploy-time check: every createOptions field this engine cannot honour is an error at
 * "<prefix>.<field>" in errors (nothing is ignored silently). Returns the number of errors. */
int oci_spec_check(const json_t *create_options, const char *prefix, struct lstrv *errors);

/* The network mode createOptions ask for; -EINVAL with e naming HostConfig.NetworkMode for one
 * this engine does not have (network is engine.network). */
int oci_spec_netmode(const json_t *create_options, const char *network, enum oci_netmode *ret,
                     struct lerr *e);

/* PortBindings as CNI portmap's portMappings ([{hostPort, containerPort, protocol, hostIP}]). */
int oci_spec_port_mappings(const json_t *create_options, json_t **ret, struct lerr *e);

/* ExtraHosts ("name:addr", docker's spelling; "host-gateway" for addr) as "addr name" lines. */
int oci_spec_extra_hosts(const json_t *create_options, const char *gateway, struct lbuf *out,
                         struct lerr *e);

/* The StopSignal of createOptions or the image (a number, "SIGTERM", "TERM"); SIGTERM if none. */
int oci_spec_stop_signal(const json_t *create_options, const json_t *image_config);

struct oci_health {
    json_t *test; /* ["CMD", args...] or ["CMD-SHELL", command] */
    int64_t interval_ms, timeout_ms, start_period_ms;
    int retries;
};
/* The health check a container has (createOptions' Healthcheck over the image's): 1 with ret
 * filled (ret->test to be released), 0 for none (or NONE). */
int oci_spec_health(const json_t *create_options, const json_t *image_config,
                    struct oci_health *ret);

/* Docker's default capability set (Moby's oci/caps/defaults.go). */
extern const char *const oci_default_caps[];

/* Moby's default seccomp profile for an architecture (SCMP_ARCH_X86_64, SCMP_ARCH_AARCH64, ...)
 * with the syscalls the given capabilities ({"bounding": [...]}) open (oci_seccomp.c); NULL
 * on ENOMEM. */
json_t *oci_seccomp_profile(const char *arch, const json_t *capabilities);
/* This machine's architecture as a seccomp name, or NULL when the profile has none for it. */
const char *oci_seccomp_arch(void);

/* ------------------------------------------------------------------ networks */

struct oci_net_config {
    const char *network;   /* engine.network: the bridge network's name */
    const char *subnet;    /* engine.subnet */
    const char *cni_path;  /* engine.cni_path: the plugins */
    const char *state_dir; /* CNI results and host-local's leases live below */
    const char *netns_dir; /* network namespaces (bind mounts) */
};

struct oci_net;
int oci_net_new(struct event_base *base, const struct oci_net_config *c, struct oci_net **ret,
                struct lerr *e);
void oci_net_free(struct oci_net *n);
/* The host's address on the module network (the bridge's), which modules reach the host by. */
const char *oci_net_gateway(const struct oci_net *n);
const char *oci_net_bridge(const struct oci_net *n);
void oci_net_netns_path(const struct oci_net *n, const char *id, char *buf, size_t size);
bool oci_net_netns_exists(const struct oci_net *n, const char *id);

typedef void (*oci_net_done_fn)(void *ud, int result, const char *ip, const struct lerr *e);
/* A network namespace for the container (bridge and none), joined to the bridge through CNI
 * (bridge: veth pair, an address from host-local, NAT out, the published ports, the firewall's
 * accept rules). ip: the container's address (bridge), "" otherwise. */
int oci_net_attach(struct oci_net *n, const char *id, enum oci_netmode mode,
                   const json_t *port_mappings, oci_net_done_fn cb, void *ud);
/* CNI DEL (given the same port mappings as ADD: portmap finds its rules by them) and the
 * namespace removed; nothing there is success. */
int oci_net_detach(struct oci_net *n, const char *id, const json_t *port_mappings,
                   oci_net_done_fn cb, void *ud);

/* ------------------------------------------------------------------ logs */

/* One line of a container log file as the keeper writes it (CRI format):
 * "<RFC 3339 with nanoseconds> <stdout|stderr> <F|P> <text>". */
struct oci_log_rec {
    int64_t time_ns; /* since the epoch */
    int stream;      /* 1 stdout, 2 stderr */
    bool partial;    /* P: the line goes on in the next record */
    const char *ts;  /* the timestamp as written */
    size_t ts_len;
    const char *text;
    size_t len;
};
/* line without its newline; -EINVAL for anything else. */
int oci_log_parse(const char *line, size_t n, struct oci_log_rec *ret);

/* `ledge logs` over the files <path>, <path>.1, … (oldest last): tail, since, follow (also across
 * a rotation), timestamps. */
struct engine_logs *oci_logs_open(struct event_base *base, const char *path, int max_files,
                                  const struct engine_logs_options *o, engine_log_fn on_data,
                                  engine_done_fn cb, void *ud);
void oci_logs_cancel(struct engine_logs *l);
