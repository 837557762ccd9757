/* test-oci.c — unit tests of the oci engine's pure parts: config.json from createOptions and the
 * image, the deploy-time refusals, port mappings and extra hosts, health checks, the seccomp
 * profile, CNI inputs and results, log records, the keeper's protocol. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/buf.h"
#include "base/json.h"
#include "engine/oci.h"
#include "keeper_proto.h"
#include "oci-internal.h"
#include "oci_cni.h"

static int fake_user(void *ud, const char *user, struct oci_user *ret, struct lerr *e)
{
    memset(ret, 0, sizeof(*ret));
    if (strcmp(user, "app") == 0) {
        ret->uid = 1000;
        ret->gid = 1000;
        ret->groups[ret->n_groups++] = 20;
        return 0;
    }
    if (strcmp(user, "0:dialout") == 0) {
        ret->gid = 20;
        return 0;
    }
    if (strchr("0123456789", user[0])) {
        ret->uid = (uint32_t)strtoul(user, NULL, 10);
        const char *c = strchr(user, ':');
        ret->gid = c ? (uint32_t)strtoul(c + 1, NULL, 10) : 0;
        return 0;
    }
    return lerr_set(e, -ENOENT, "User: no user \"%s\"", user);
}

static int fake_device(void *ud, const char *path, struct oci_device *ret, struct lerr *e)
{
    if (strcmp(path, "/dev/ttyUSB0") != 0)
        return lerr_set(e, -ENOENT, "%s: missing", path);
    *ret = (struct oci_device){.type = 'c', .major = 188, .minor = 0, .mode = 020660};
    return 0;
}

static json_t *parse(const char *text)
{
    json_t *j = NULL;
    assert_int_equal(ljson_parse(text, strlen(text), &j, NULL), 0);
    return j;
}

static json_t *build(const char *co_text, const char *img_text, struct lerr *e, int *ret)
{
    json_t *co = co_text ? parse(co_text) : NULL;
    json_t *img = parse(img_text ? img_text : "{\"config\": {\"Cmd\": [\"/bin/app\"]}}");
    json_t *env = parse("{\"IOTEDGE_MODULEID\": \"m\", \"A\": \"ledge\"}");
    json_t *binds = parse("[\"/run/ledge/workload/m:/var/run/iotedge\"]");
    struct oci_spec_input in = {.name = "m",
                                .create_options = co,
                                .image_config = img,
                                .env = env,
                                .binds = binds,
                                .hostname = "0123456789ab",
                                .netmode = OCI_NET_BRIDGE,
                                .netns = "/run/ledge/oci/netns/x",
                                .hosts_file = "/b/hosts",
                                .resolv_file = "/b/resolv.conf",
                                .hostname_file = "/b/hostname",
                                .volumes_dir = "/s/volumes",
                                .cgroups_path = "/ledge/x",
                                .seccomp_arch = "SCMP_ARCH_X86_64"};
    struct oci_spec_env senv = {.resolve_user = fake_user, .stat_device = fake_device};
    json_t *cfg = NULL;
    struct lstrv dirs = LSTRV_INIT;
    *ret = oci_spec_build(&in, &senv, &cfg, &dirs, e);
    lstrv_free(&dirs);
    json_decref(co);
    json_decref(img);
    json_decref(env);
    json_decref(binds);
    return cfg;
}

static bool has_str(const json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach (arr, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    return false;
}

static const json_t *mount_at(const json_t *cfg, const char *dst)
{
    size_t i;
    json_t *m;
    json_array_foreach (json_object_get(cfg, "mounts"), i, m)
        if (strcmp(ljson_str(m, "destination"), dst) == 0)
            return m;
    return NULL;
}

static void test_defaults(void **state)
{
    struct lerr e = {0};
    int r;
    json_t *cfg = build(NULL,
                        "{\"config\": {\"Entrypoint\": [\"/ep\"], \"Cmd\": [\"a\"], "
                        "\"Env\": [\"A=image\", \"B=image\"], \"User\": \"app\"}}",
                        &e, &r);
    assert_int_equal(r, 0);
    const json_t *p = json_object_get(cfg, "process");
    assert_string_equal(json_string_value(json_array_get(json_object_get(p, "args"), 0)), "/ep");
    assert_string_equal(json_string_value(json_array_get(json_object_get(p, "args"), 1)), "a");
    const json_t *env = json_object_get(p, "env");
    assert_true(has_str(env, "A=ledge")); /* ledge's env wins */
    assert_true(has_str(env, "B=image"));
    assert_true(has_str(env, "HOSTNAME=0123456789ab"));
    assert_true(has_str(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    assert_true(has_str(env, "HOME=/"));
    assert_int_equal(ljson_int(json_object_get(p, "user"), "uid", -1), 1000);
    assert_int_equal(json_integer_value(json_array_get(
                         json_object_get(json_object_get(p, "user"), "additionalGids"), 0)),
                     20);
    assert_string_equal(ljson_str(p, "cwd"), "/");
    const json_t *caps = json_object_get(json_object_get(p, "capabilities"), "bounding");
    assert_int_equal(json_array_size(caps), 14);
    assert_true(has_str(caps, "CAP_NET_BIND_SERVICE"));
    assert_false(has_str(caps, "CAP_SYS_ADMIN"));
    const json_t *lx = json_object_get(cfg, "linux");
    assert_true(has_str(json_object_get(lx, "maskedPaths"), "/proc/kcore"));
    assert_true(has_str(json_object_get(lx, "readonlyPaths"), "/proc/sysrq-trigger"));
    assert_string_equal(ljson_str(lx, "cgroupsPath"), "/ledge/x");
    assert_non_null(json_object_get(lx, "seccomp"));
    assert_non_null(mount_at(cfg, "/etc/hosts"));
    assert_non_null(mount_at(cfg, "/var/run/iotedge"));
    const json_t *shm = mount_at(cfg, "/dev/shm");
    assert_true(has_str(json_object_get(shm, "options"), "size=67108864"));
    /* the network namespace to join */
    size_t i;
    json_t *ns;
    bool net = false;
    json_array_foreach (json_object_get(lx, "namespaces"), i, ns)
        if (lstr_eq(ljson_str(ns, "type"), "network"))
            net = lstr_eq(ljson_str(ns, "path"), "/run/ledge/oci/netns/x");
    assert_true(net);
    json_decref(cfg);
}

static void test_entrypoint_rule(void **state)
{
    struct lerr e = {0};
    int r;
    /* an Entrypoint given drops the image's Cmd */
    json_t *cfg = build("{\"Entrypoint\": [\"/x\"]}",
                        "{\"config\": {\"Entrypoint\": [\"/ep\"], \"Cmd\": [\"a\"]}}", &e, &r);
    assert_int_equal(r, 0);
    assert_int_equal(json_array_size(json_object_get(json_object_get(cfg, "process"), "args")), 1);
    json_decref(cfg);
    /* Cmd alone replaces the image's Cmd and keeps its Entrypoint */
    cfg = build("{\"Cmd\": [\"b\", \"c\"]}",
                "{\"config\": {\"Entrypoint\": [\"/ep\"], \"Cmd\": [\"a\"]}}", &e, &r);
    assert_int_equal(r, 0);
    const json_t *args = json_object_get(json_object_get(cfg, "process"), "args");
    assert_int_equal(json_array_size(args), 3);
    assert_string_equal(json_string_value(json_array_get(args, 2)), "c");
    json_decref(cfg);
    cfg = build(NULL, "{\"config\": {}}", &e, &r);
    assert_int_equal(r, -EINVAL);
    assert_non_null(strstr(e.msg, "no command"));
    assert_null(cfg);
}

static void test_host_config(void **state)
{
    struct lerr e = {0};
    int r;
    json_t *cfg = build(
        "{\"User\": \"1000:1000\", \"WorkingDir\": \"/w\", \"HostConfig\": {"
        "\"Binds\": [\"/data:/data:ro,rslave\", \"vol:/v\"], \"Memory\": 67108864, "
        "\"NanoCpus\": 1500000000, \"PidsLimit\": 100, \"CapAdd\": [\"NET_ADMIN\"], "
        "\"CapDrop\": [\"mknod\"], \"Devices\": [{\"PathOnHost\": \"/dev/ttyUSB0\", "
        "\"PathInContainer\": \"/dev/ttyS9\", \"CgroupPermissions\": \"rw\"}], \"ReadonlyRootfs\": "
        "true, \"Tmpfs\": {\"/run\": \"size=64k,exec\"}, \"ShmSize\": 1048576, \"Sysctls\": "
        "{\"net.ipv4.ping_group_range\": \"0 1\"}, \"GroupAdd\": [\"dialout\"], \"Ulimits\": "
        "[{\"Name\": \"nofile\", \"Soft\": 1024, \"Hard\": 2048}], \"SecurityOpt\": "
        "[\"no-new-privileges\"], \"PidMode\": \"host\"}}",
        NULL, &e, &r);
    assert_int_equal(r, 0);
    const json_t *p = json_object_get(cfg, "process"), *lx = json_object_get(cfg, "linux");
    assert_string_equal(ljson_str(p, "cwd"), "/w");
    assert_int_equal(ljson_int(json_object_get(p, "user"), "gid", -1), 1000);
    assert_true(ljson_bool(p, "noNewPrivileges", false));
    const json_t *caps = json_object_get(json_object_get(p, "capabilities"), "effective");
    assert_true(has_str(caps, "CAP_NET_ADMIN"));
    assert_false(has_str(caps, "CAP_MKNOD"));
    const json_t *res = json_object_get(lx, "resources");
    assert_int_equal(ljson_int(json_object_get(res, "memory"), "limit", 0), 67108864);
    assert_int_equal(ljson_int(json_object_get(res, "memory"), "swap", 0), 2 * 67108864);
    assert_int_equal(ljson_int(json_object_get(res, "cpu"), "quota", 0), 150000);
    assert_int_equal(ljson_int(json_object_get(res, "cpu"), "period", 0), 100000);
    assert_int_equal(ljson_int(json_object_get(res, "pids"), "limit", 0), 100);
    const json_t *dev = json_array_get(json_object_get(lx, "devices"), 0);
    assert_string_equal(ljson_str(dev, "path"), "/dev/ttyS9");
    assert_int_equal(ljson_int(dev, "major", 0), 188);
    assert_true(ljson_bool(json_object_get(cfg, "root"), "readonly", false));
    const json_t *data = mount_at(cfg, "/data"), *vol = mount_at(cfg, "/v"),
                 *run = mount_at(cfg, "/run");
    assert_true(has_str(json_object_get(data, "options"), "ro"));
    assert_true(has_str(json_object_get(data, "options"), "rslave"));
    assert_string_equal(ljson_str(vol, "source"), "/s/volumes/vol/_data");
    assert_true(has_str(json_object_get(run, "options"), "exec"));
    assert_false(has_str(json_object_get(run, "options"), "noexec"));
    assert_true(has_str(json_object_get(mount_at(cfg, "/dev/shm"), "options"), "size=1048576"));
    assert_string_equal(ljson_str(json_object_get(lx, "sysctl"), "net.ipv4.ping_group_range"),
                        "0 1");
    assert_int_equal(json_integer_value(json_array_get(
                         json_object_get(json_object_get(p, "user"), "additionalGids"), 0)),
                     20);
    assert_string_equal(ljson_str(json_array_get(json_object_get(p, "rlimits"), 0), "type"),
                        "RLIMIT_NOFILE");
    size_t i;
    json_t *ns;
    json_array_foreach (json_object_get(lx, "namespaces"), i, ns)
        assert_false(lstr_eq(ljson_str(ns, "type"), "pid"));
    json_decref(cfg);
    /* privileged: everything, no profile, no masks */
    cfg = build("{\"HostConfig\": {\"Privileged\": true}}", NULL, &e, &r);
    assert_int_equal(r, 0);
    lx = json_object_get(cfg, "linux");
    assert_null(json_object_get(lx, "seccomp"));
    assert_null(json_object_get(lx, "maskedPaths"));
    assert_true(
        has_str(json_object_get(json_object_get(json_object_get(cfg, "process"), "capabilities"),
                                "bounding"),
                "CAP_SYS_ADMIN"));
    json_decref(cfg);
    /* errors name the field */
    const char *bad[][2] = {
        {"{\"HostConfig\": {\"Binds\": [\"rel/path:/x\"]}}", "HostConfig.Binds[0]"},
        {"{\"HostConfig\": {\"Binds\": [\"/a:relative\"]}}", "HostConfig.Binds[0]"},
        {"{\"HostConfig\": {\"CapAdd\": [\"NOPE\"]}}", "HostConfig.CapAdd[0]"},
        {"{\"HostConfig\": {\"Devices\": [{\"PathOnHost\": \"/dev/missing\"}]}}",
         "HostConfig.Devices[0]"},
        {"{\"HostConfig\": {\"Memory\": 1000}}", "HostConfig.Memory"},
        {"{\"User\": \"ghost\"}", "User"},
        {"{\"WorkingDir\": \"rel\"}", "WorkingDir"},
    };
    for (size_t k = 0; k < ARRAY_SIZE(bad); k++) {
        lerr_clear(&e);
        cfg = build(bad[k][0], NULL, &e, &r);
        assert_int_equal(r < 0, 1);
        assert_null(cfg);
        if (!strstr(e.msg, bad[k][1]))
            fail_msg("%s: %s", bad[k][0], e.msg);
    }
}

static void test_check(void **state)
{
    json_t *co = parse("{\"Tty\": true, \"AttachStdout\": true, \"ExposedPorts\": {\"80/tcp\": {}},"
                       " \"HostConfig\": {\"Links\": [\"x\"], \"Privileged\": false, "
                       "\"LogConfig\": {\"Type\": \"syslog\"}, \"IpcMode\": \"container:x\", "
                       "\"SecurityOpt\": [\"apparmor=p\"], \"Memory\": 0}, "
                       "\"Healthcheck\": {\"Test\": [\"CMD\", \"/h\"]}}");
    struct lstrv errors = LSTRV_INIT;
    assert_int_equal(oci_spec_check(co, "modules.m.settings.createOptions", &errors), 5);
    _cleanup_free_ char *all = lstrv_join(&errors, "\n");
    assert_non_null(strstr(all, "modules.m.settings.createOptions.Tty:"));
    assert_non_null(strstr(all, "createOptions.HostConfig.Links:"));
    assert_non_null(strstr(all, "HostConfig.LogConfig.Type"));
    assert_non_null(strstr(all, "HostConfig.IpcMode"));
    assert_non_null(strstr(all, "HostConfig.SecurityOpt[0]"));
    assert_null(strstr(all, "AttachStdout"));
    assert_null(strstr(all, "Privileged"));
    assert_null(strstr(all, "Healthcheck"));
    lstrv_free(&errors);
    json_decref(co);
    enum oci_netmode nm;
    struct lerr e = {0};
    co = parse("{\"HostConfig\": {\"NetworkMode\": \"other\"}}");
    assert_int_equal(oci_spec_netmode(co, "ledge", &nm, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "HostConfig.NetworkMode"));
    json_decref(co);
    co = parse("{\"HostConfig\": {\"NetworkMode\": \"host\"}}");
    assert_int_equal(oci_spec_netmode(co, "ledge", &nm, &e), 0);
    assert_int_equal(nm, OCI_NET_HOST);
    json_decref(co);
    assert_int_equal(oci_spec_netmode(NULL, "ledge", &nm, &e), 0);
    assert_int_equal(nm, OCI_NET_BRIDGE);
}

static void test_ports_hosts_signal_health(void **state)
{
    struct lerr e = {0};
    json_t *co = parse("{\"StopSignal\": \"SIGINT\", \"HostConfig\": {\"PortBindings\": "
                       "{\"80/tcp\": [{\"HostPort\": \"8080\"}], \"53/udp\": [{\"HostIp\": "
                       "\"127.0.0.1\", \"HostPort\": \"5353\"}]}, \"ExtraHosts\": "
                       "[\"db:10.0.0.5\", \"gw:host-gateway\"]}, \"Healthcheck\": "
                       "{\"Interval\": 2000000000}}");
    json_t *ports = NULL;
    assert_int_equal(oci_spec_port_mappings(co, &ports, &e), 0);
    assert_int_equal(json_array_size(ports), 2);
    json_t *p0 = json_array_get(ports, 0);
    assert_true(ljson_int(p0, "hostPort", 0) == 8080 || ljson_int(p0, "hostPort", 0) == 5353);
    json_decref(ports);
    struct lbuf b = LBUF_INIT;
    assert_int_equal(oci_spec_extra_hosts(co, "10.88.0.1", &b, &e), 0);
    lbuf_putc(&b, 0);
    assert_string_equal(b.data, "10.0.0.5\tdb\n10.88.0.1\tgw\n");
    lbuf_free(&b);
    assert_int_equal(oci_spec_stop_signal(co, NULL), SIGINT);
    json_t *img = parse("{\"config\": {\"Healthcheck\": {\"Test\": [\"CMD\", \"/testmod\", "
                        "\"health\"], \"Interval\": 1000000000, \"Retries\": 2}}}");
    struct oci_health h;
    assert_int_equal(oci_spec_health(co, img, &h), 1);
    assert_int_equal(h.interval_ms, 2000); /* the user's field over the image's */
    assert_int_equal(h.retries, 2);
    assert_int_equal(h.timeout_ms, 30000);
    json_decref(h.test);
    json_decref(co);
    co = parse("{\"Healthcheck\": {\"Test\": [\"NONE\"]}}");
    assert_int_equal(oci_spec_health(co, img, &h), 0);
    json_decref(co);
    json_decref(img);
    co = parse("{\"HostConfig\": {\"PortBindings\": {\"80/tcp\": [{\"HostPort\": \"\"}]}}}");
    assert_int_equal(oci_spec_port_mappings(co, &ports, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "HostPort"));
    json_decref(co);
}

static void test_seccomp(void **state)
{
    json_t *caps = parse("{\"bounding\": [\"CAP_CHOWN\"]}");
    json_t *p = oci_seccomp_profile("SCMP_ARCH_X86_64", caps);
    assert_string_equal(ljson_str(p, "defaultAction"), "SCMP_ACT_ERRNO");
    const json_t *allow =
        json_object_get(json_array_get(json_object_get(p, "syscalls"), 0), "names");
    assert_true(has_str(allow, "read"));
    assert_true(has_str(allow, "arch_prctl"));
    assert_false(has_str(allow, "mount"));
    assert_false(has_str(allow, "reboot"));
    json_decref(p);
    json_decref(caps);
    caps = parse("{\"bounding\": [\"CAP_SYS_ADMIN\"]}");
    p = oci_seccomp_profile("SCMP_ARCH_X86_64", caps);
    allow = json_object_get(json_array_get(json_object_get(p, "syscalls"), 0), "names");
    assert_true(has_str(allow, "mount"));
    assert_true(has_str(allow, "clone3"));
    json_decref(p);
    json_decref(caps);
}

static void test_cni(void **state)
{
    struct oci_cni_subnet s;
    struct lerr e = {0};
    assert_int_equal(oci_cni_subnet("10.88.3.4/16", &s, &e), 0);
    assert_string_equal(s.cidr, "10.88.0.0/16");
    assert_string_equal(s.gateway, "10.88.0.1");
    assert_int_equal(oci_cni_subnet("10.88.0.0/33", &s, &e), -EINVAL);
    assert_int_equal(oci_cni_subnet("nope", &s, &e), -EINVAL);
    char br[16];
    oci_cni_bridge_name("ledge", br, sizeof(br));
    assert_string_equal(br, "lg-ledge");
    oci_cni_bridge_name("A.very_long.network-name", br, sizeof(br));
    assert_int_equal(strlen(br), 15);
    json_t *list = oci_cni_conflist("ledge", "lg-ledge", &s, "/run/ipam");
    json_t *ports = parse("[{\"hostPort\": 8080, \"containerPort\": 80, \"protocol\": \"tcp\"}]");
    json_t *prev = parse("{\"cniVersion\": \"1.0.0\", \"ips\": []}");
    json_t *in = oci_cni_plugin_input(list, 1, prev, ports);
    assert_string_equal(ljson_str(in, "type"), "portmap");
    assert_string_equal(ljson_str(in, "name"), "ledge");
    assert_non_null(json_object_get(in, "prevResult"));
    assert_non_null(json_object_get(json_object_get(in, "runtimeConfig"), "portMappings"));
    assert_null(json_object_get(in, "capabilities"));
    json_decref(in);
    in = oci_cni_plugin_input(list, 0, NULL, ports);
    assert_null(json_object_get(in, "runtimeConfig"));
    assert_string_equal(ljson_str(json_object_get(in, "ipam"), "dataDir"), "/run/ipam");
    json_decref(in);
    json_decref(list);
    json_decref(ports);
    json_decref(prev);
    const char *res = "{\"cniVersion\": \"1.0.0\", \"ips\": [{\"address\": \"fd00::2/64\"}, "
                      "{\"address\": \"10.88.0.7/16\", \"gateway\": \"10.88.0.1\"}]}";
    json_t *r = NULL;
    char ip[64];
    assert_int_equal(oci_cni_parse_result(res, strlen(res), &r, ip, sizeof(ip), &e), 0);
    assert_string_equal(ip, "10.88.0.7");
    json_decref(r);
    const char *bad = "{\"ips\": [{\"address\": \"10.88.0.7\"}]}";
    assert_int_equal(oci_cni_parse_result(bad, strlen(bad), &r, ip, sizeof(ip), &e), -EPROTO);
    const char *err = "{\"code\": 11, \"msg\": \"failed to allocate\", \"details\": \"none left\"}";
    oci_cni_error("bridge", 1, err, strlen(err), "", &e);
    assert_non_null(strstr(e.msg, "failed to allocate: none left"));
}

static void test_log_records(void **state)
{
    struct oci_log_rec r;
    const char *l = "2024-01-02T03:04:05.5Z stderr P half a line";
    assert_int_equal(oci_log_parse(l, strlen(l), &r), 0);
    assert_int_equal(r.stream, 2);
    assert_true(r.partial);
    assert_int_equal(r.len, strlen("half a line"));
    assert_true(r.time_ns == 1704164645500000000LL);
    l = "2024-01-02T03:04:05Z stdout F";
    assert_int_equal(oci_log_parse(l, strlen(l), &r), 0);
    assert_int_equal(r.len, 0);
    const char *bad[] = {"nonsense", "2024-01-02T03:04:05Z stdin F x",
                         "2024-13-02T03:04:05Z stdout F x", "2024-01-02T03:04:05Z stdout X x"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        assert_int_equal(oci_log_parse(bad[i], strlen(bad[i]), &r), -EINVAL);
}

static void test_keeper_proto(void **state)
{
    struct keeper_request r = {.op = KEEPER_OP_RUN,
                               .seq = 7,
                               .id = "abc123",
                               .argv = {"/usr/sbin/runc", "run", NULL},
                               .pidfile = "/r/pid",
                               .log = {.path = "/l/x.log", .max_size = 10, .max_files = 3}};
    json_t *j = keeper_request_json(&r);
    struct keeper_request back;
    assert_int_equal(keeper_request_parse(j, &back, NULL), 0);
    assert_int_equal(back.op, KEEPER_OP_RUN);
    assert_string_equal(back.argv[1], "run");
    assert_null(back.argv[2]);
    assert_int_equal(back.log.max_files, 3);
    json_decref(j);
    const char *bad[] = {"{\"op\": \"run\", \"seq\": 1, \"id\": \"XYZ\"}",
                         "{\"op\": \"kill\", \"seq\": 1, \"id\": \"ab\", \"signal\": 99}",
                         "{\"op\": \"run\", \"seq\": 1, \"id\": \"ab\", \"argv\": [\"rel\"]}",
                         "{\"op\": \"nope\", \"seq\": 1}", "{\"op\": \"list\"}"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        j = parse(bad[i]);
        assert_int_equal(keeper_request_parse(j, &back, NULL), -EINVAL);
        json_decref(j);
    }
    j = parse("{\"event\": \"exit\", \"id\": \"ab\", \"pid\": 5, \"exitCode\": 137}");
    struct keeper_msg m;
    assert_int_equal(keeper_msg_parse(j, &m, NULL), 0);
    assert_int_equal(m.kind, KEEPER_MSG_EXIT);
    assert_int_equal(m.exit.exit_code, 137);
    json_decref(j);
    j = parse("{\"seq\": 3, \"ok\": false, \"error\": \"busy\", \"errno\": 16}");
    assert_int_equal(keeper_msg_parse(j, &m, NULL), 0);
    assert_false(m.ok);
    assert_int_equal(m.err_code, 16);
    json_decref(j);
    assert_int_equal(keeper_exit_code(9), 128 + 9); /* killed by SIGKILL */
    assert_int_equal(keeper_exit_code(3 << 8), 3);  /* exit(3) */
}

/* crun 1.8's cgroup rule (oci_crun_fits): unified and v1 hosts, hybrid ones only with an empty
 * v2 hierarchy; the mode names ledge check prints. */
static void test_crun_fits(void **state)
{
    (void)state;
    assert_true(oci_crun_fits(OCI_CGROUPS_UNIFIED, "cpuset cpu io memory pids"));
    assert_true(oci_crun_fits(OCI_CGROUPS_V1, ""));
    assert_true(oci_crun_fits(OCI_CGROUPS_HYBRID, ""));
    assert_true(oci_crun_fits(OCI_CGROUPS_HYBRID, NULL));
    assert_false(oci_crun_fits(OCI_CGROUPS_HYBRID, "hugetlb"));
    assert_false(oci_crun_fits(OCI_CGROUPS_NONE, ""));
    assert_string_equal(oci_cgroups_name(OCI_CGROUPS_UNIFIED), "v2");
    assert_string_equal(oci_cgroups_name(OCI_CGROUPS_HYBRID), "hybrid");
    assert_string_equal(oci_cgroups_name(OCI_CGROUPS_V1), "v1");
    assert_string_equal(oci_cgroups_name(OCI_CGROUPS_NONE), "none");
    char v2[256];
    enum oci_cgroups m = oci_cgroups_mode(v2, sizeof(v2)); /* this host: some mode, a word list */
    assert_true(m <= OCI_CGROUPS_UNIFIED);
    assert_null(strchr(v2, '\n'));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_entrypoint_rule),
        cmocka_unit_test(test_host_config),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_ports_hosts_signal_health),
        cmocka_unit_test(test_seccomp),
        cmocka_unit_test(test_cni),
        cmocka_unit_test(test_log_records),
        cmocka_unit_test(test_keeper_proto),
        cmocka_unit_test(test_crun_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
