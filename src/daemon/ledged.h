/* ledged.h — the daemon's context: everything main.c wires together and the API handlers use. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "agent/agent.h"
#include "agent/state.h"
#include "config/config.h"
#include "engine/engine.h"
#include "identity/ca.h"
#include "identity/keys.h"
#include "net/http_server.h"

struct event_base;
struct workload_server;
struct hub_link;
struct deploy_stream;
struct hc_client;
struct check_job;
struct devices;
struct support_job;
struct cloud;
struct dashboard;
struct metrics;
struct charts;
struct registry_proxy;
struct vm_job;

#define LEDGED_MAX_ENGINES 4

struct ledged {
    struct event_base *base;
    struct ledge_config cfg;
    char *config_path;
    char *hub_program; /* resolved path of ledge-hub */
    struct state_db *db;
    /* The engines in use (engine_ops_find: engine.type for container modules, process): the
     * daemon makes, starts and frees them; the agent drives them. */
    struct engine *engines[LEDGED_MAX_ENGINES];
    size_t n_engines;
    struct agent *agent;
    struct hs_server *mgmt;
    struct workload_server *workload;
    struct hub_link *hub;
    /* identity.c */
    struct identity_keys *keys;
    struct identity_device *device;
    struct ca *ca;
    struct event *renew_timer;
    char *hub_cert_path, *hub_key_path, *trust_bundle_path;
    struct engine_version container_version; /* of the engine running container modules */
    bool container_version_known;
    struct deploy_stream *deploy_streams;  /* clients following a deployment (mgmt.c) */
    struct hc_client *hub_client;          /* to the hub's control socket (hub_proxy.c) */
    struct check_job *check_job;           /* the GET /check run in progress (checks.c) */
    struct devices *devices;               /* leaf devices behind this gateway (devices.c) */
    struct support_job *support_jobs;      /* support bundles being made (support.c) */
    struct cloud *cloud;                   /* deployments from IoT Hub (cloud.c) */
    struct dashboard *dashboard;           /* the web dashboard (dashboard.c) */
    struct metrics *metrics;               /* the Prometheus endpoint (metrics.c) */
    struct charts *charts;                 /* the dashboard's chart samples (charts.c) */
    struct registry_proxy *registry_proxy; /* images for child devices (registry_proxy.c) */
    struct vm_job *vm_jobs;                /* VM calls running in child processes (vms.c) */
    size_t n_vm_jobs;
};

/* mgmt.c */
int mgmt_start(struct ledged *d);
void mgmt_stop(struct ledged *d);
/* The management API's route table: the dashboard serves the same handlers under /api. */
const struct hs_route *mgmt_route_table(size_t *ret_n);
/* Progress lines during deployments (image pulls) go to every client following a deploy. */
void mgmt_progress(struct ledged *d, const char *module, const char *line);

/* registry_proxy.c: the registry API v2 for child devices (docs/registry-proxy.md), on when
 * registry_proxy.listen and .target are set. */
int registry_proxy_start(struct ledged *d);
void registry_proxy_stop(struct ledged *d);
void registry_proxy_certificates_changed(struct ledged *d);

/* A TLS server context with the device's server certificate (the hub's), for ledged's own TCP
 * listeners (dashboard, registry proxy); NULL after logging why under comp. */
struct ssl_ctx_st *ledged_tls_server_context(struct ledged *d, const char *comp);

/* dashboard.c: the web dashboard (docs/dashboard.md); its token store even when it is off. */
int dashboard_start(struct ledged *d);
void dashboard_stop(struct ledged *d);
void dashboard_certificates_changed(struct ledged *d);
void mgmt_dashboard_token_new(struct hs_request *r, void *ud);
void mgmt_dashboard_tokens(struct hs_request *r, void *ud);
void mgmt_dashboard_token_revoke(struct hs_request *r, void *ud);

/* cloud.c: deployments from IoT Hub ($edgeAgent/$edgeHub twins); nothing unless
 * upstream.iothub. After agent_start; cloud_stop before the agent is freed. */
int cloud_start(struct ledged *d);
void cloud_stop(struct ledged *d);
json_t *cloud_status_json(struct ledged *d);
/* IoT Edge's edgeAgent_iothub_syncs_total, _unsuccessful_iothub_syncs_total and
 * _deployment_time_seconds: all 0 without deployments from the cloud. */
struct cloud_metrics {
    uint64_t syncs, failed_syncs;
    double deployment_seconds;
};
void cloud_get_metrics(struct ledged *d, struct cloud_metrics *ret);

/* metrics.c: GET /metrics on metrics.listen (ledged's families and the hub's); nothing unless
 * metrics.enabled. A port it cannot listen on is logged, not fatal. */
int metrics_start(struct ledged *d);
void metrics_stop(struct ledged *d);

/* charts.c: a sample every dashboard.chart_interval for the dashboard's charts, the last hour
 * kept; nothing when the dashboard is off. GET /metrics/history serves them. */
int charts_start(struct ledged *d);
void charts_stop(struct ledged *d);
void mgmt_metrics_history(struct hs_request *r, void *ud);

/* vms.c: the VM routes (docs/vm.md), each call in a child process; vms_stop ends them. */
void vms_stop(struct ledged *d);
void mgmt_vms_list(struct hs_request *r, void *ud);
void mgmt_vm_create(struct hs_request *r, void *ud);
void mgmt_vm_get(struct hs_request *r, void *ud);
void mgmt_vm_start(struct hs_request *r, void *ud);
void mgmt_vm_stop(struct hs_request *r, void *ud);
void mgmt_vm_restart(struct hs_request *r, void *ud);
void mgmt_vm_reboot(struct hs_request *r, void *ud);
void mgmt_vm_delete(struct hs_request *r, void *ud);
void mgmt_vm_ports(struct hs_request *r, void *ud);
void mgmt_vm_port_add(struct hs_request *r, void *ud);
void mgmt_vm_port_remove(struct hs_request *r, void *ud);
void mgmt_vm_share_add(struct hs_request *r, void *ud);
void mgmt_vm_share_remove(struct hs_request *r, void *ud);
void mgmt_vm_resources(struct hs_request *r, void *ud);
void mgmt_vm_console(struct hs_request *r, void *ud);

/* modules.c: the agent's hooks (module identity environment, workload sockets, hub config). */
void modules_hooks(struct ledged *d, struct agent_hooks *hooks);

/* identity.c: master secret, device identity, edge CA, the hub's certificate and renewal. */
int identity_start(struct ledged *d);
void identity_stop(struct ledged *d);

/* workload_server.c: one workload API socket per module. */
int workload_server_start(struct ledged *d);
void workload_server_stop(struct ledged *d);
/* Listen for module (idempotent); *ret_dir is the directory holding its socket. */
int workload_server_add(struct ledged *d, const char *module, const char **ret_dir);
void workload_server_remove(struct ledged *d, const char *module);

/* hub_proxy.c: management calls the hub answers. */
void mgmt_hub_status(struct hs_request *r, void *ud);
void mgmt_twin_get(struct hs_request *r, void *ud);
void mgmt_twin_patch(struct hs_request *r, void *ud);
void mgmt_invoke(struct hs_request *r, void *ud);
/* The same for a leaf device: /devices/{d}/twin (GET, PATCH), /devices/{d}/methods/{m}. */
void mgmt_device_twin_get(struct hs_request *r, void *ud);
void mgmt_device_twin_patch(struct hs_request *r, void *ud);
void mgmt_device_invoke(struct hs_request *r, void *ud);
/* A child edge device's modules (nested edge, docs/nested.md): /devices/{d}/modules/{m}/twin
 * (GET, PATCH), /devices/{d}/modules/{m}/methods/{x}. */
void mgmt_child_twin_get(struct hs_request *r, void *ud);
void mgmt_child_twin_patch(struct hs_request *r, void *ud);
void mgmt_child_invoke(struct hs_request *r, void *ud);
void mgmt_token(struct hs_request *r, void *ud);
/* nested.c: POST /devices/{d}/deployment — a deployment for a child edge device, written into
 * its module twins' desired properties on this hub (`ledge --device D deploy`). */
void mgmt_child_deploy(struct hs_request *r, void *ud);

/* images.c: /images (`ledge image`), through the container engine's image ops. */
void mgmt_images(struct hs_request *r, void *ud);
void mgmt_image_load(struct hs_request *r, void *ud);
void mgmt_image_remove(struct hs_request *r, void *ud);
void mgmt_image_prune(struct hs_request *r, void *ud);

/* checks.c: GET /check, the check table run for this daemon (in a child process). */
void mgmt_check(struct hs_request *r, void *ud);
void checks_stop(struct ledged *d);

/* devices.c: leaf devices (docs/gateway.md): the registry in ledged.db, the /devices,
 * /device-cas and /trust-bundle routes, what the hub is told about them. */
int devices_start(struct ledged *d);
void devices_stop(struct ledged *d);
/* The runtime file's "leafDevices": {"<id>": {generationId, auth, keys | thumbprints}}. */
json_t *devices_runtime_json(struct ledged *d);
/* Write the CA bundle the hub verifies leaf devices' certificates with (the edge CA, the
 * registered CAs, hub.x509_device_ca); its path, or NULL when it could not be written (logged). */
const char *devices_ca_bundle_write(struct ledged *d);
/* Is id a leaf device (case-insensitively)? *ret_canonical: its registered spelling. */
bool devices_known(struct ledged *d, const char *id, const char **ret_canonical);
/* The leaf device of that id (compared as the hub compares ids), or NULL. */
const struct identity_leaf *devices_find(struct ledged *d, const char *id);
void mgmt_devices_list(struct hs_request *r, void *ud);
void mgmt_device_add(struct hs_request *r, void *ud);
void mgmt_device_get(struct hs_request *r, void *ud);
void mgmt_device_remove(struct hs_request *r, void *ud);
void mgmt_device_keys(struct hs_request *r, void *ud);
void mgmt_device_rotate(struct hs_request *r, void *ud);
void mgmt_device_cert(struct hs_request *r, void *ud);
void mgmt_trust_bundle(struct hs_request *r, void *ud);
void mgmt_device_cas_list(struct hs_request *r, void *ud);
void mgmt_device_ca_add(struct hs_request *r, void *ud);
void mgmt_device_ca_remove(struct hs_request *r, void *ud);

/* support.c: GET /systeminfo/supportbundle, a support bundle made in a child process. */
void mgmt_support_bundle(struct hs_request *r, void *ud);
void support_stop(struct ledged *d);

/* hub_link.c: the hub's runtime file and reload signal. */
char *hub_runtime_path(struct ledged *d);
int hub_runtime_write(struct ledged *d);
void hub_runtime_changed(struct ledged *d);
void hub_certificates_changed(struct ledged *d);
