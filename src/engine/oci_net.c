/* oci_net.c — containers' networks for the oci engine: a network namespace per container (a
 * bind mount under <run>/oci/netns, so it outlives the processes in it and ledged), joined to
 * the module network through Debian's CNI plugins run as the CNI spec says (ADD in order with
 * each plugin's result as the next one's prevResult; DEL in reverse with the result kept from
 * ADD). docs/dependencies.md says why CNI rather than netlink and nftables of our own. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "oci-internal.h"
#include "oci_cni.h"

#define CNI_TIMEOUT_MS 60000

struct oci_net {
    struct event_base *base;
    char *network, *cni_path, *state, *netns_dir;
    char bridge[16];
    struct oci_cni_subnet subnet;
    json_t *conflist;
    struct cni_run *runs; /* in flight, cancelled by oci_net_free */
};

/* One ADD or DEL through the chain. */
struct cni_run {
    struct oci_net *n;
    char id[80];
    bool add;
    enum oci_netmode mode;
    json_t *ports;
    size_t next; /* the plugin to run next (DEL: counting down) */
    bool loopback_done;
    json_t *result; /* prevResult */
    char ip[64];
    struct oci_exec *x;
    struct lerr err;
    int first_error;
    oci_net_done_fn cb;
    void *ud;
    struct cni_run *next_run;
};

int oci_net_new(struct event_base *base, const struct oci_net_config *c, struct oci_net **ret,
                struct lerr *e)
{
    struct oci_net *n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    n->base = base;
    int r = oci_cni_subnet(c->subnet ? c->subnet : "10.88.0.0/16", &n->subnet, e);
    if (r < 0) {
        free(n);
        return r;
    }
    oci_cni_bridge_name(c->network, n->bridge, sizeof(n->bridge));
    n->network = strdup(c->network);
    n->cni_path = strdup(c->cni_path ? c->cni_path : "/usr/lib/cni");
    n->state = strdup(c->state_dir);
    n->netns_dir = strdup(c->netns_dir);
    char ipam[PATH_MAX];
    snprintf(ipam, sizeof(ipam), "%s/ipam", c->state_dir);
    if (n->network && n->cni_path && n->state && n->netns_dir)
        n->conflist = oci_cni_conflist(n->network, n->bridge, &n->subnet, ipam);
    char results[PATH_MAX];
    snprintf(results, sizeof(results), "%s/results", c->state_dir);
    if (!n->conflist || lfs_mkdir_p(results, 0700) < 0 || lfs_mkdir_p(ipam, 0700) < 0 ||
        lfs_mkdir_p(c->netns_dir, 0755) < 0) {
        oci_net_free(n);
        return -ENOMEM;
    }
    *ret = n;
    return 0;
}

static void run_free(struct cni_run *run)
{
    struct oci_net *n = run->n;
    for (struct cni_run **pp = &n->runs; *pp; pp = &(*pp)->next_run)
        if (*pp == run) {
            *pp = run->next_run;
            break;
        }
    oci_exec_cancel(run->x);
    json_decref(run->result);
    json_decref(run->ports);
    free(run);
}

void oci_net_free(struct oci_net *n)
{
    if (!n)
        return;
    while (n->runs)
        run_free(n->runs);
    json_decref(n->conflist);
    free(n->network);
    free(n->cni_path);
    free(n->state);
    free(n->netns_dir);
    free(n);
}

const char *oci_net_gateway(const struct oci_net *n)
{
    return n->subnet.gateway;
}

const char *oci_net_bridge(const struct oci_net *n)
{
    return n->bridge;
}

void oci_net_netns_path(const struct oci_net *n, const char *id, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", n->netns_dir, id);
}

bool oci_net_netns_exists(const struct oci_net *n, const char *id)
{
    char p[PATH_MAX];
    oci_net_netns_path(n, id, p, sizeof(p));
    struct statfs s;
    return statfs(p, &s) == 0 && s.f_type == NSFS_MAGIC;
}

/* A new network namespace bound at its path: ledged enters it for one mount(2) and returns to
 * its own (ledged has one thread; libevent runs nothing in between). */
static int netns_create(struct oci_net *n, const char *id, struct lerr *e)
{
    char p[PATH_MAX];
    oci_net_netns_path(n, id, p, sizeof(p));
    if (oci_net_netns_exists(n, id))
        return 0;
    int fd = open(p, O_RDONLY | O_CREAT | O_CLOEXEC, 0444);
    if (fd < 0)
        return lerr_set(e, -errno, "%s: %m", p);
    close(fd);
    _cleanup_close_ int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        return lerr_set(e, -errno, "/proc/self/ns/net: %m");
    if (unshare(CLONE_NEWNET) < 0)
        return lerr_set(e, -errno, "a new network namespace: %m");
    int r = mount("/proc/self/ns/net", p, NULL, MS_BIND, NULL) < 0 ? -errno : 0;
    if (setns(self, CLONE_NEWNET) < 0)
        abort(); /* ledged in the wrong namespace would be worse than ledged gone */
    if (r < 0) {
        unlink(p);
        return lerr_set(e, r, "binding the network namespace at %s: %s", p, strerror(-r));
    }
    return 0;
}

static void netns_remove(struct oci_net *n, const char *id)
{
    char p[PATH_MAX];
    oci_net_netns_path(n, id, p, sizeof(p));
    umount2(p, MNT_DETACH);
    unlink(p);
}

static void result_path(struct oci_net *n, const char *id, char *buf, size_t size)
{
    snprintf(buf, size, "%s/results/%s.json", n->state, id);
}

static void run_step(struct cni_run *run);

static void run_finish(struct cni_run *run)
{
    oci_net_done_fn cb = run->cb;
    void *ud = run->ud;
    char ip[64];
    lstr_copy(ip, sizeof(ip), run->ip);
    int r = run->first_error;
    struct lerr err = run->err;
    struct oci_net *n = run->n;
    char id[80];
    lstr_copy(id, sizeof(id), run->id);
    if (run->add && r == 0 && run->result) {
        char path[PATH_MAX];
        result_path(n, id, path, sizeof(path));
        _cleanup_free_ char *text = ljson_dump(run->result);
        if (text)
            lfs_write_atomic(path, text, strlen(text), 0600);
    }
    if (!run->add) {
        char path[PATH_MAX];
        result_path(n, id, path, sizeof(path));
        unlink(path);
        netns_remove(n, id);
    }
    bool add = run->add;
    run_free(run);
    if (add && r < 0) {
        /* undo what got done: the plugins that ran tolerate a DEL, and the namespace goes */
        netns_remove(n, id);
    }
    cb(ud, r, r == 0 ? ip : NULL, r < 0 ? &err : NULL);
}

static const char *plugin_type(struct cni_run *run, size_t i)
{
    return ljson_str(json_array_get(json_object_get(run->n->conflist, "plugins"), i), "type");
}

static void plugin_done(void *ud, const struct oci_exec_result *res)
{
    struct cni_run *run = ud;
    run->x = NULL;
    const char *type = !run->loopback_done ? "loopback"
                       : run->add          ? plugin_type(run, run->next)
                                           : plugin_type(run, run->next - 1);
    if (res->status != 0) {
        if (!run->first_error) {
            oci_cni_error(type ? type : "?", res->status, res->out, res->out_len, res->err,
                          &run->err);
            run->first_error = -EIO;
        }
        if (run->add)
            return run_finish(run);
    } else if (run->add && run->loopback_done) {
        json_t *result = NULL;
        char ip[64];
        if (oci_cni_parse_result(res->out, res->out_len, &result, ip, sizeof(ip), &run->err) < 0) {
            run->first_error = run->err.code;
            return run_finish(run);
        }
        json_decref(run->result);
        run->result = result;
        if (ip[0])
            lstr_copy(run->ip, sizeof(run->ip), ip);
    }
    if (!run->loopback_done)
        run->loopback_done = true;
    else if (run->add)
        run->next++;
    else
        run->next--;
    run_step(run);
}

static void run_step(struct cni_run *run)
{
    struct oci_net *n = run->n;
    size_t n_plugins = json_array_size(json_object_get(n->conflist, "plugins"));
    bool bridge = run->mode == OCI_NET_BRIDGE;
    if (run->loopback_done && (!bridge || (run->add ? run->next >= n_plugins : run->next == 0)))
        return run_finish(run);
    json_t *input;
    const char *type;
    if (!run->loopback_done) {
        if (!run->add) {
            /* lo needs no DEL: it goes with its namespace */
            run->loopback_done = true;
            return run_step(run);
        }
        input = json_pack("{s:s, s:s, s:s}", "cniVersion", OCI_CNI_VERSION, "name", "lo", "type",
                          "loopback");
        type = "loopback";
    } else {
        size_t i = run->add ? run->next : run->next - 1;
        type = plugin_type(run, i);
        input = oci_cni_plugin_input(n->conflist, i, run->result, run->ports);
    }
    char netns[PATH_MAX], plugin[PATH_MAX], e_cmd[32], e_id[128], e_ns[PATH_MAX + 16],
        e_path[PATH_MAX + 16];
    oci_net_netns_path(n, run->id, netns, sizeof(netns));
    snprintf(plugin, sizeof(plugin), "%s/%s", n->cni_path, type ? type : "?");
    snprintf(e_cmd, sizeof(e_cmd), "CNI_COMMAND=%s", run->add ? "ADD" : "DEL");
    snprintf(e_id, sizeof(e_id), "CNI_CONTAINERID=%s", run->id);
    snprintf(e_ns, sizeof(e_ns), "CNI_NETNS=%s", netns);
    snprintf(e_path, sizeof(e_path), "CNI_PATH=%s", n->cni_path);
    const char *envp[] = {
        e_cmd,  e_id,
        e_ns,   !run->loopback_done || (!run->add && false) ? "CNI_IFNAME=lo" : "CNI_IFNAME=eth0",
        e_path, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        NULL};
    const char *argv[] = {plugin, NULL};
    _cleanup_free_ char *text = input ? ljson_dump(input) : NULL;
    json_decref(input);
    struct oci_exec_opts xo = {.argv = argv,
                               .envp = envp,
                               .input = text,
                               .input_len = text ? strlen(text) : 0,
                               .out_max = OCI_CNI_RESULT_MAX,
                               .timeout_ms = CNI_TIMEOUT_MS,
                               .done = plugin_done,
                               .ud = run};
    int r = text ? oci_exec_start(n->base, &xo, &run->x) : -ENOMEM;
    if (r < 0) {
        if (!run->first_error) {
            run->first_error = r;
            lerr_set(&run->err, r, "CNI plugin %s: %s", plugin, strerror(-r));
        }
        if (run->add)
            return run_finish(run);
        /* DEL goes on with the others */
        if (run->next > 0)
            run->next--;
        return run_step(run);
    }
}

struct net_later {
    oci_net_done_fn cb;
    void *ud;
    int r;
    struct lerr e;
};

static void net_later_cb(evutil_socket_t fd, short what, void *arg)
{
    struct net_later *l = arg;
    l->cb(l->ud, l->r, l->r == 0 ? "" : NULL, l->r < 0 ? &l->e : NULL);
    free(l);
}

static int net_defer(struct oci_net *n, oci_net_done_fn cb, void *ud, int r, const struct lerr *e)
{
    struct net_later *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    *l = (struct net_later){.cb = cb, .ud = ud, .r = r};
    if (e)
        l->e = *e;
    struct timeval tv = {0, 0};
    if (event_base_once(n->base, -1, EV_TIMEOUT, net_later_cb, l, &tv) < 0) {
        free(l);
        return -ENOMEM;
    }
    return 0;
}

static int run_start(struct oci_net *n, const char *id, bool add, enum oci_netmode mode,
                     const json_t *ports, oci_net_done_fn cb, void *ud)
{
    struct cni_run *run = calloc(1, sizeof(*run));
    if (!run)
        return -ENOMEM;
    run->n = n;
    lstr_copy(run->id, sizeof(run->id), id);
    run->add = add;
    run->mode = mode;
    run->ports = ports ? json_deep_copy(ports) : NULL;
    run->cb = cb;
    run->ud = ud;
    run->next = add ? 0 : json_array_size(json_object_get(n->conflist, "plugins"));
    if (!add) {
        /* DEL is given the result ADD gave */
        char path[PATH_MAX];
        result_path(n, id, path, sizeof(path));
        _cleanup_free_ char *text = NULL;
        size_t len;
        if (lfs_read_file(path, OCI_CNI_RESULT_MAX, &text, &len) == 0)
            oci_cni_parse_result(text, len, &run->result, NULL, 0, NULL);
        run->loopback_done = true;
    }
    run->next_run = n->runs;
    n->runs = run;
    run_step(run);
    return 0;
}

int oci_net_attach(struct oci_net *n, const char *id, enum oci_netmode mode,
                   const json_t *port_mappings, oci_net_done_fn cb, void *ud)
{
    struct lerr e = {0};
    if (mode == OCI_NET_HOST)
        return net_defer(n, cb, ud, 0, NULL);
    int r = netns_create(n, id, &e);
    if (r < 0)
        return net_defer(n, cb, ud, r, &e);
    return run_start(n, id, true, mode, port_mappings, cb, ud);
}

int oci_net_detach(struct oci_net *n, const char *id, const json_t *port_mappings,
                   oci_net_done_fn cb, void *ud)
{
    char p[PATH_MAX];
    oci_net_netns_path(n, id, p, sizeof(p));
    if (access(p, F_OK) < 0) {
        char rp[PATH_MAX];
        result_path(n, id, rp, sizeof(rp));
        if (access(rp, F_OK) < 0)
            return net_defer(n, cb, ud, 0, NULL); /* host network, or never attached */
    }
    return run_start(n, id, false, OCI_NET_BRIDGE, port_mappings, cb, ud);
}
