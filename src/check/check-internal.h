/* check-internal.h — what the check files share: the run context (inputs plus the engine's
 * answers, asked once), report helpers, and each file's check functions for the table in
 * check.c. Internal to src/check. */
#pragma once

#include <jansson.h>

#include "base/errors.h"
#include "check/check.h"
#include "engine/engine.h"
#include "engine/platform.h"

struct vm_def;

struct check_ctx {
    const struct check_inputs *in;
    const struct ledge_config *cfg;
    struct platform host;
    int host_r; /* platform_host() result */

    /* The engine, asked on first use. */
    bool engine_asked;
    int engine_r;           /* 0 reachable with a readable /version */
    struct lerr engine_err; /* why not */
    const char *engine_fix; /* how to fix it (static text) */
    struct engine_version version;
    struct event_base *engine_base; /* the engine's private loop */
    struct engine *engine;

    /* The VMs in question (vm.c), read on first use. */
    bool vms_loaded;
    const struct vm_def *vms;
    size_t n_vms;
    struct vm_def *owned_vms; /* what vms points at when read from the VMs' directory */
};

/* vm.c reads at most this many VM definitions. */
#define CHECK_VMS_MAX 64

/* Set the report (replacing what it held). fix may be NULL. */
void check_report_set(struct check_report *rep, enum check_result result, const char *fix,
                      const char *fmt, ...) _printf_(4, 5);
#define check_report_ok(rep, ...) check_report_set(rep, CHECK_OK, NULL, __VA_ARGS__)
#define check_report_skip(rep, ...) check_report_set(rep, CHECK_SKIPPED, NULL, __VA_ARGS__)

/* Read a whole small host file (at most 1 MiB). */
int check_read_host_file(const char *path, char **ret, size_t *ret_len);
/* MemAvailable of check.meminfo, in bytes. */
int check_mem_available(struct check_ctx *ctx, uint64_t *ret_bytes);

/* The engine: 0 when reachable (ctx->version filled), else < 0 with ctx->engine_err. */
int check_engine_ask(struct check_ctx *ctx);

/* An image platform as the engine reports it. */
struct check_platform {
    char os[32];
    char arch[32];
    char variant[32];
};
/* Once the engine is reachable: a present image's platform (-ENOENT when it is not pulled), or
 * the platforms the registry offers for a reference (at most max). err says why not. */
int check_engine_image_platform(struct check_ctx *ctx, const char *image,
                                struct check_platform *ret, struct lerr *err);
int check_engine_registry_platforms(struct check_ctx *ctx, const char *image,
                                    const struct engine_registry_auth *auth,
                                    struct check_platform *ret, size_t max, size_t *ret_n,
                                    struct lerr *err);

/* host.c */
void check_config_file(struct check_ctx *ctx, struct check_report *rep);
void check_state_dir(struct check_ctx *ctx, struct check_report *rep);
void check_hostname(struct check_ctx *ctx, struct check_report *rep);
void check_os(struct check_ctx *ctx, struct check_report *rep);
void check_architecture(struct check_ctx *ctx, struct check_report *rep);
void check_memory(struct check_ctx *ctx, struct check_report *rep);
void check_disk(struct check_ctx *ctx, struct check_report *rep);
void check_virtualization(struct check_ctx *ctx, struct check_report *rep);
void check_kvm(struct check_ctx *ctx, struct check_report *rep);
void check_cgroups(struct check_ctx *ctx, struct check_report *rep);
/* ntp.c */
void check_clock(struct check_ctx *ctx, struct check_report *rep);
/* engine_checks.c */
void check_engine(struct check_ctx *ctx, struct check_report *rep);
void check_engine_version(struct check_ctx *ctx, struct check_report *rep);
void check_engine_product(struct check_ctx *ctx, struct check_report *rep);
void check_log_rotation(struct check_ctx *ctx, struct check_report *rep);
void check_module_platforms(struct check_ctx *ctx, struct check_report *rep);
void check_upstream_registry(struct check_ctx *ctx, struct check_report *rep);
/* oci_checks.c: skipped unless engine.type is oci */
void check_oci_runtime(struct check_ctx *ctx, struct check_report *rep);
void check_oci_kernel(struct check_ctx *ctx, struct check_report *rep);
void check_oci_network(struct check_ctx *ctx, struct check_report *rep);
/* certs.c */
void check_edge_ca(struct check_ctx *ctx, struct check_report *rep);
void check_hub_cert(struct check_ctx *ctx, struct check_report *rep);
/* connectivity.c */
void check_hub_ports(struct check_ctx *ctx, struct check_report *rep);
void check_upstream(struct check_ctx *ctx, struct check_report *rep);
/* vm.c: check_vms_apply() is false (rep skipped) when the vm group has nothing to look at. */
bool check_vms_apply(struct check_ctx *ctx, struct check_report *rep);
void check_vms_free(struct check_ctx *ctx);
void check_vm_qemu(struct check_ctx *ctx, struct check_report *rep);
void check_vm_accel(struct check_ctx *ctx, struct check_report *rep);
void check_vm_memory(struct check_ctx *ctx, struct check_report *rep);
void check_vm_disk(struct check_ctx *ctx, struct check_report *rep);
void check_vm_build(struct check_ctx *ctx, struct check_report *rep);
void check_vm_build_foreign(struct check_ctx *ctx, struct check_report *rep);
void check_vm_cache(struct check_ctx *ctx, struct check_report *rep);
