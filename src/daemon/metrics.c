/* metrics.c — ledged's Prometheus endpoint (docs/metrics.md): GET /metrics on metrics.listen
 * (127.0.0.1:9600 by default), plain HTTP. One scrape is ledged's own families (IoT Edge's
 * edgeAgent_* from the agent, ledge_*) followed by the hub's (edgehub_*, ledge_hub_*), which
 * ledged asks the hub for on its control socket (GET /metrics) at each scrape, so nothing is
 * cached and a hub that is down or slow costs one ledge_hub_up 0, never the scrape. */
#include <errno.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/prom.h"
#include "base/timeutil.h"
#include "hoststats.h"
#include "ledged.h"
#include "log/log.h"
#include "net/http_client.h"
#include "net/tcp.h"

#define COMP "metrics"
#define HUB_TIMEOUT_MS 3000
#define HUB_MAX_RESPONSE (64u << 20)

struct metrics {
    struct ledged *d;
    struct hs_server *srv;
    struct hc_client *hub;
    int64_t started_ms;
    char instance[37]; /* IoT Edge's instance_number: a UUID per start of ledged */
    uint64_t scrapes, hub_failures;
    bool hub_was_up;
    /* each module's CPU time at the previous scrape, for edgeAgent_used_cpu_percent: name ->
     * [cpu_us, at_us]; replaced at each scrape, so it holds only the modules of the last one */
    json_t *cpu_prev;
    struct cgroup_mounts cgroups; /* found at the start (hoststats_cgroup_mounts) */
};

struct scrape {
    struct metrics *m;
    struct hs_request *req;
    struct hc_transfer *t;
    struct lbuf out;
    int64_t started_us;
};

static void make_uuid(char out[37])
{
    uint8_t b[16] = {0};
    lcrypto_random(b, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

static void common_labels(struct metrics *m, struct prom_label out[3])
{
    out[0] = (struct prom_label){"iothub", m->d->cfg.device.iothub_hostname};
    out[1] = (struct prom_label){"edge_device", m->d->cfg.device.id};
    out[2] = (struct prom_label){"instance_number", m->instance};
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const struct prom_label ms_telemetry = {"ms_telemetry", "True"};

/* edgeAgent_metadata's host_information, as IoT Edge writes it (a JSON object in a label). */
static char *host_information(struct metrics *m)
{
    struct utsname u;
    if (uname(&u) < 0)
        memset(&u, 0, sizeof(u));
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "OperatingSystemType", "linux",
                          "Architecture", u.machine, "Version", LEDGE_VERSION, "KernelVersion",
                          u.release, "NumCpus", (json_int_t)(cpus > 0 ? cpus : 1));
    (void)m;
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return s;
}

/* IoT Edge's edgeAgent_* families: the agent's modules, their resources, the host. */
/* A per-module seconds gauge from the agent's module list: modules in the deployment, at most max.
 */
static void module_seconds(struct prom_writer *w, json_t *mods, size_t max, const char *name,
                           const char *help, const char *key)
{
    size_t i, n = 0;
    json_t *mod;
    prom_family(w, name, PROM_GAUGE, help);
    json_array_foreach (mods, i, mod) {
        if (!json_is_true(json_object_get(mod, "inDeployment")) || n++ >= max)
            continue;
        prom_sample(
            w, NULL,
            (const struct prom_label[]){{"module_name", ljson_str(mod, "name")}, ms_telemetry}, 2,
            json_real_value(json_object_get(mod, key)));
    }
}

static void write_agent(struct metrics *m, struct prom_writer *w)
{
    struct ledged *d = m->d;
    json_t *am = d->agent ? agent_metrics_json(d->agent) : NULL;
    json_t *mods = am ? json_object_get(am, "modules") : NULL;
    size_t max = (size_t)d->cfg.metrics.max_series;
    size_t i, n;
    json_t *mod;

    module_seconds(w, mods, max, "edgeAgent_total_time_running_correctly_seconds",
                   "Time the module was in the deployment with desired status running and was "
                   "running, since ledged started",
                   "runningCorrectlySeconds");
    module_seconds(w, mods, max, "edgeAgent_total_time_expected_running_seconds",
                   "Time the module was in the deployment with desired status running, since "
                   "ledged started",
                   "expectedRunningSeconds");
    static const struct {
        const char *name, *key, *help;
    } counts[] = {
        {"edgeAgent_module_start_total", "starts",
         "Times ledged asked the engine to start the module"},
        {"edgeAgent_module_stop_total", "stops",
         "Times ledged asked the engine to stop the module"},
    };
    for (size_t k = 0; k < ARRAY_SIZE(counts); k++) {
        prom_family(w, counts[k].name, PROM_COUNTER, counts[k].help);
        n = 0;
        json_array_foreach (mods, i, mod) {
            if (n++ >= max)
                break;
            prom_sample(w, NULL,
                        (const struct prom_label[]){{"module_name", ljson_str(mod, "name")},
                                                    {"module_version", ljson_str(mod, "version")},
                                                    ms_telemetry},
                        3, (double)json_integer_value(json_object_get(mod, counts[k].key)));
        }
    }
    prom_family(w, "edgeAgent_command_latency_seconds", PROM_SUMMARY,
                "Time the engine took to answer a command (create, remove, start, stop)");
    json_t *cmd;
    json_array_foreach (json_object_get(am, "commands"), i, cmd) {
        const struct prom_label l[] = {{"command", ljson_str(cmd, "command")}, ms_telemetry};
        json_t *qs = json_object_get(cmd, "quantiles"), *qv;
        double phis[AGENT_LATENCY_OBJECTIVES], vals[AGENT_LATENCY_OBJECTIVES];
        size_t nq = 0, k;
        json_array_foreach (qs, k, qv) {
            if (nq >= AGENT_LATENCY_OBJECTIVES)
                break;
            json_t *v = json_object_get(qv, "value");
            phis[nq] = json_real_value(json_object_get(qv, "quantile"));
            vals[nq++] = json_is_number(v) ? json_number_value(v) : NAN;
        }
        prom_quantiles(w, l, 2, phis, vals, nq);
        prom_sample(w, "_sum", l, 2, json_real_value(json_object_get(cmd, "sumSeconds")));
        prom_sample(w, "_count", l, 2, (double)json_integer_value(json_object_get(cmd, "count")));
    }

    /* Deployments from IoT Hub: the $edgeAgent twin's syncs and the time deployments took. */
    struct cloud_metrics cm_cloud;
    cloud_get_metrics(d, &cm_cloud);
    prom_family(w, "edgeAgent_iothub_syncs_total", PROM_COUNTER,
                "Times ledged got or tried to get $edgeAgent's desired properties from IoT Hub "
                "(whole twins, patches, failed attempts)");
    prom_sample(w, NULL, &ms_telemetry, 1, (double)cm_cloud.syncs);
    prom_family(w, "edgeAgent_unsuccessful_iothub_syncs_total", PROM_COUNTER,
                "Attempts to get $edgeAgent's twin from IoT Hub that failed");
    prom_sample(w, NULL, &ms_telemetry, 1, (double)cm_cloud.failed_syncs);
    prom_family(w, "edgeAgent_deployment_time_seconds", PROM_COUNTER,
                "Time from a change of the cloud's desired properties to its deployment applied "
                "or refused, summed over deployments");
    prom_sample(w, NULL, &ms_telemetry, 1, cm_cloud.deployment_seconds);

    /* The modules' resources: read from the host for each running module with a known pid. */
    uint64_t host_mem = 0;
    hoststats_memory_total(&host_mem);
    const struct cgroup_mounts *cm = &m->cgroups;
    if (!cm->v2[0] && !cm->memory[0]) /* mounted after ledged started */
        hoststats_cgroup_mounts("/proc/self/mountinfo", &m->cgroups);
    json_t *cpu_now = json_object();
    int64_t now_us = mono_us();
    struct usage_row {
        const char *name;
        struct module_usage u;
        double cpu_percent; /* < 0: no earlier sample */
    } *rows = calloc(json_array_size(mods) ? json_array_size(mods) : 1, sizeof(*rows));
    size_t n_rows = 0;
    json_array_foreach (mods, i, mod) {
        if (!rows || n_rows >= max)
            break;
        struct usage_row *row = &rows[n_rows];
        if (hoststats_module(cm, "/proc", (int)json_integer_value(json_object_get(mod, "pid")),
                             ljson_str(mod, "containerId"), host_mem, &row->u) < 0)
            continue;
        row->name = ljson_str(mod, "name");
        row->cpu_percent = -1;
        json_t *prev = json_object_get(m->cpu_prev, row->name);
        if (prev) {
            double dcpu = (double)json_integer_value(json_array_get(prev, 0));
            double dt = (double)(now_us - json_integer_value(json_array_get(prev, 1)));
            dcpu = (double)row->u.cpu_us - dcpu;
            if (dt > 0 && dcpu >= 0)
                row->cpu_percent = dcpu / dt * 100.0;
        }
        json_object_set_new(cpu_now, row->name,
                            json_pack("[I, I]", (json_int_t)row->u.cpu_us, (json_int_t)now_us));
        n_rows++;
    }
    json_decref(m->cpu_prev);
    m->cpu_prev = cpu_now;
    prom_family(w, "edgeAgent_used_memory_bytes", PROM_GAUGE,
                "Memory the module uses (its cgroup's, less inactive page cache; a process "
                "module's resident set)");
    for (size_t k = 0; k < n_rows; k++)
        prom_sample(w, NULL,
                    (const struct prom_label[]){{"module_name", rows[k].name}, ms_telemetry}, 2,
                    (double)rows[k].u.memory_bytes);
    prom_family(w, "edgeAgent_total_memory_bytes", PROM_GAUGE,
                "Memory the module may use (its cgroup's memory.max, else the host's)");
    for (size_t k = 0; k < n_rows; k++)
        prom_sample(w, NULL,
                    (const struct prom_label[]){{"module_name", rows[k].name}, ms_telemetry}, 2,
                    (double)(rows[k].u.memory_limit ? rows[k].u.memory_limit : host_mem));
    prom_family(w, "edgeAgent_used_cpu_percent", PROM_GAUGE,
                "CPU the module used between the last two scrapes, in percent of one CPU");
    for (size_t k = 0; k < n_rows; k++)
        if (rows[k].cpu_percent >= 0)
            prom_sample(w, NULL,
                        (const struct prom_label[]){{"module_name", rows[k].name}, ms_telemetry}, 2,
                        rows[k].cpu_percent);
    prom_family(w, "edgeAgent_created_pids_total", PROM_GAUGE,
                "Processes and threads the module has (its cgroup's pids.current; a process "
                "module's threads)");
    for (size_t k = 0; k < n_rows; k++)
        prom_sample(w, NULL,
                    (const struct prom_label[]){{"module_name", rows[k].name}, ms_telemetry}, 2,
                    (double)rows[k].u.pids);
    static const struct {
        const char *name, *help;
        size_t off;
        bool net;
    } bytes[] = {
        {"edgeAgent_total_network_in_bytes",
         "Bytes the module received over its network namespace's interfaces (lo excepted)",
         offsetof(struct module_usage, net_in_bytes), true},
        {"edgeAgent_total_network_out_bytes",
         "Bytes the module sent over its network namespace's interfaces (lo excepted)",
         offsetof(struct module_usage, net_out_bytes), true},
        {"edgeAgent_total_disk_read_bytes",
         "Bytes the module read from block devices (its cgroup's; a process module's own)",
         offsetof(struct module_usage, disk_read_bytes), false},
        {"edgeAgent_total_disk_write_bytes",
         "Bytes the module wrote to block devices (its cgroup's; a process module's own)",
         offsetof(struct module_usage, disk_write_bytes), false},
    };
    for (size_t b = 0; b < ARRAY_SIZE(bytes); b++) {
        prom_family(w, bytes[b].name, PROM_GAUGE, bytes[b].help);
        for (size_t k = 0; k < n_rows; k++) {
            if (bytes[b].net ? !rows[k].u.has_net : !rows[k].u.has_disk)
                continue;
            uint64_t v;
            memcpy(&v, (const char *)&rows[k].u + bytes[b].off, sizeof(v));
            prom_sample(w, NULL,
                        (const struct prom_label[]){{"module_name", rows[k].name}, ms_telemetry}, 2,
                        (double)v);
        }
    }
    prom_family(w, "ledge_module_resources_source", PROM_GAUGE,
                "Where the module's edgeAgent_* resource numbers come from (cgroup_v2, "
                "cgroup_v1, process); the value is always 1");
    for (size_t k = 0; k < n_rows; k++)
        prom_sample(
            w, NULL,
            (const struct prom_label[]){{"module_name", rows[k].name},
                                        {"source", hoststats_usage_source(rows[k].u.source)}},
            2, 1);
    free(rows);
    json_decref(am);

    /* The host. */
    double up = 0;
    prom_family(w, "edgeAgent_host_uptime_seconds", PROM_GAUGE, "How long the host has been on");
    if (hoststats_uptime(&up) == 0)
        prom_sample(w, NULL, &ms_telemetry, 1, up);
    prom_family(w, "edgeAgent_iotedged_uptime_seconds", PROM_GAUGE,
                "How long ledged (IoT Edge's iotedged) has been running");
    prom_sample(w, NULL, &ms_telemetry, 1, (double)(ltime_now_ms() - m->started_ms) / 1000.0);
    struct host_disk disks[16];
    size_t n_disks = hoststats_disks(d->cfg.state_dir, disks, ARRAY_SIZE(disks));
    prom_family(w, "edgeAgent_available_disk_space_bytes", PROM_GAUGE,
                "Space left on the disk for unprivileged users");
    for (size_t k = 0; k < n_disks; k++)
        prom_sample(w, NULL,
                    (const struct prom_label[]){{"disk_name", disks[k].name},
                                                {"disk_filesystem", disks[k].fs_type},
                                                {"disk_filetype", disks[k].kind},
                                                ms_telemetry},
                    4, (double)disks[k].available_bytes);
    prom_family(w, "edgeAgent_total_disk_space_bytes", PROM_GAUGE, "Size of the disk");
    for (size_t k = 0; k < n_disks; k++)
        prom_sample(w, NULL,
                    (const struct prom_label[]){{"disk_name", disks[k].name},
                                                {"disk_filesystem", disks[k].fs_type},
                                                {"disk_filetype", disks[k].kind},
                                                ms_telemetry},
                    4, (double)disks[k].total_bytes);
    _cleanup_free_ char *hi = host_information(m);
    prom_family(w, "edgeAgent_metadata", PROM_GAUGE,
                "The runtime and host (the value is always 0, as IoT Edge's)");
    prom_sample(w, NULL,
                (const struct prom_label[]){{"edge_agent_version", LEDGE_VERSION},
                                            {"experimental_features", "{}"},
                                            {"host_information", hi ? hi : "{}"},
                                            ms_telemetry},
                4, 0);
}

/* ledged's own families, before the hub's. */
static int write_own(struct metrics *m, struct lbuf *out)
{
    struct ledged *d = m->d;
    struct prom_label common[3];
    common_labels(m, common);
    struct prom_writer w;
    prom_writer_init(&w, out, common, 3);

    write_agent(m, &w);
    prom_family(&w, "ledge_build_info", PROM_GAUGE, "ledge's version (the value is always 1)");
    prom_sample(&w, NULL, (const struct prom_label[]){{"version", LEDGE_VERSION}}, 1, 1);
    prom_family(&w, "ledge_uptime_seconds", PROM_GAUGE, "Seconds since ledged started");
    prom_sample(&w, NULL, NULL, 0, (double)(ltime_now_ms() - m->started_ms) / 1000.0);

    /* The modules by IoT Edge's runtime status, and their restart counts. */
    json_t *mods = d->agent ? agent_modules_json(d->agent) : json_array();
    static const char *const statuses[] = {"running",   "stopped", "failed", "backoff",
                                           "unhealthy", "dead",    "unknown"};
    size_t counts[ARRAY_SIZE(statuses)] = {0};
    size_t i;
    json_t *mod;
    json_array_foreach (mods, i, mod) {
        const char *st = ljson_str(mod, "runtimeStatus");
        for (size_t k = 0; st && k < ARRAY_SIZE(statuses); k++)
            if (strcmp(st, statuses[k]) == 0)
                counts[k]++;
    }
    prom_family(&w, "ledge_modules", PROM_GAUGE, "Modules by IoT Edge's runtime status");
    for (size_t k = 0; k < ARRAY_SIZE(statuses); k++)
        prom_sample(&w, NULL, (const struct prom_label[]){{"runtime_status", statuses[k]}}, 1,
                    (double)counts[k]);
    prom_family(&w, "ledge_module_restarts", PROM_GAUGE,
                "Restarts of a module by its restart policy (the count IoT Edge reports)");
    size_t n = 0;
    json_array_foreach (mods, i, mod) {
        if (n++ >= (size_t)d->cfg.metrics.max_series)
            break;
        prom_sample(&w, NULL, (const struct prom_label[]){{"module_name", ljson_str(mod, "name")}},
                    1, (double)json_integer_value(json_object_get(mod, "restartCount")));
    }
    json_decref(mods);

    prom_family(&w, "ledge_metrics_scrapes_total", PROM_COUNTER, "Scrapes of this endpoint");
    prom_sample(&w, NULL, NULL, 0, (double)m->scrapes);
    prom_family(&w, "ledge_metrics_hub_failures_total", PROM_COUNTER,
                "Scrapes that could not get the hub's metrics");
    prom_sample(&w, NULL, NULL, 0, (double)m->hub_failures);
    return prom_writer_error(&w);
}

static void write_hub_up(struct metrics *m, struct lbuf *out, bool up)
{
    struct prom_label common[3];
    common_labels(m, common);
    struct prom_writer w;
    prom_writer_init(&w, out, common, 3);
    prom_family(&w, "ledge_hub_up", PROM_GAUGE,
                "1 when the hub answered this scrape with its metrics (the edgehub_* families)");
    prom_sample(&w, NULL, NULL, 0, up ? 1 : 0);
}

static void scrape_free(struct scrape *s)
{
    lbuf_free(&s->out);
    free(s);
}

static void scrape_abort(struct hs_request *r, void *ud)
{
    struct scrape *s = ud;
    hc_cancel(s->t);
    scrape_free(s);
}

static void scrape_finish(struct scrape *s, bool hub_up, const struct lbuf *hub)
{
    struct metrics *m = s->m;
    if (!hub_up)
        m->hub_failures++;
    write_hub_up(m, &s->out, hub_up);
    if (hub_up && hub->len)
        lbuf_append(&s->out, hub->data, hub->len);
    hs_reply(s->req, 200, PROM_CONTENT_TYPE, s->out.data ? s->out.data : "", s->out.len);
    scrape_free(s);
}

static void hub_done(void *ud, int result, long status, struct lbuf *body)
{
    struct scrape *s = ud;
    hs_request_on_abort(s->req, NULL, NULL);
    bool up = result == 0 && status == 200;
    if (up != s->m->hub_was_up)
        log_debug(COMP, "the hub's metrics: %s",
                  up           ? "answered"
                  : result < 0 ? strerror(-result)
                               : "an error status");
    s->m->hub_was_up = up;
    scrape_finish(s, up, body);
}

static void h_metrics(struct hs_request *r, void *ud)
{
    struct metrics *m = ud;
    m->scrapes++;
    struct scrape *s = calloc(1, sizeof(*s));
    if (!s) {
        hs_reply_error(r, 500, "out of memory");
        return;
    }
    s->m = m;
    s->req = r;
    s->out = (struct lbuf)LBUF_INIT;
    if (write_own(m, &s->out) < 0) {
        scrape_free(s);
        hs_reply_error(r, 500, "cannot write the metrics");
        return;
    }
    struct hc_request req = {
        .method = "GET",
        .unix_socket = m->d->cfg.hub.control_socket,
        .url = "http://localhost/metrics",
        .timeout_ms = HUB_TIMEOUT_MS,
        .connect_timeout_ms = 1000,
        .max_response = HUB_MAX_RESPONSE,
        .on_done = hub_done,
        .ud = s,
    };
    s->t = hc_request(m->hub, &req);
    if (!s->t) {
        scrape_finish(s, false, NULL);
        return;
    }
    hs_request_on_abort(r, scrape_abort, s);
}

static const struct hs_route routes[] = {
    {"GET", "/metrics", h_metrics},
};

int metrics_start(struct ledged *d)
{
    if (!d->cfg.metrics.enabled)
        return 0;
    char host[64];
    int port;
    int r = net_hostport_parse(d->cfg.metrics.listen, host, sizeof(host), &port);
    if (r < 0) {
        log_error(COMP, "metrics.listen: \"%s\" is not IPv4:port or [IPv6]:port",
                  d->cfg.metrics.listen);
        return r;
    }
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->d = d;
    m->started_ms = ltime_now_ms();
    make_uuid(m->instance);
    hoststats_cgroup_mounts("/proc/self/mountinfo", &m->cgroups);
    if ((r = hs_server_new(d->base, routes, ARRAY_SIZE(routes), m, &m->srv)) < 0 ||
        (r = hc_client_new(d->base, &m->hub)) < 0) {
        hs_server_free(m->srv);
        free(m);
        return r;
    }
    d->metrics = m;
    int fd = net_tcp_listen(d->cfg.metrics.listen, 64);
    if (fd < 0) {
        /* Not fatal: ledged keeps its modules running without a metrics endpoint. */
        log_error(COMP, "cannot listen on %s: %s (no metrics endpoint)", d->cfg.metrics.listen,
                  strerror(-fd));
        return 0;
    }
    struct hs_limits l = HS_LIMITS_DEFAULT;
    l.max_connections = 16;
    l.max_inflight = 8;
    l.max_body = 1024;
    l.max_output = 64u << 20;
    l.request_timeout_ms = 10000;
    if ((r = hs_server_listen_fd(m->srv, fd, &l, NULL)) < 0) {
        log_error(COMP, "cannot serve %s: %s", d->cfg.metrics.listen, strerror(-r));
        return 0;
    }
    log_info(COMP, "Prometheus metrics on http://%s/metrics", d->cfg.metrics.listen);
    return 0;
}

void metrics_stop(struct ledged *d)
{
    struct metrics *m = d->metrics;
    if (!m)
        return;
    hs_server_free(m->srv); /* aborts the scrapes in progress, which cancel their transfers */
    hc_client_free(m->hub);
    json_decref(m->cpu_prev);
    free(m);
    d->metrics = NULL;
}
