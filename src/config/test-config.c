/* test-config.c — unit tests for the configuration loader: defaults, every value type good and
 * bad (exact messages with line numbers), unknown keys, identities and connection strings,
 * secrets, rejected YAML features, syntax errors, derived paths, files and the example. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/json.h"
#include "base/str.h"
#include "config/config.h"
#include "schema.h"

/* A valid 32-byte key; tests check it never leaks. */
#define KEY "c2VjcmV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5YWJjZGU="
#define KEY_B64_PART "c2VjcmV0LWtleS1ieXRl"

static int load(const char *yaml, struct ledge_config *c, struct lstrv *errors)
{
    return config_load_string(yaml, strlen(yaml), "t.yaml", c, errors);
}

/* Load yaml expecting success; returns the config (caller frees). */
static struct ledge_config load_ok(const char *yaml)
{
    struct ledge_config c;
    _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
    int r = load(yaml, &c, &e);
    for (size_t i = 0; i < e.n; i++)
        print_message("unexpected: %s\n", e.v[i]);
    assert_int_equal(r, 0);
    assert_int_equal(e.n, 0);
    return c;
}

/* Load yaml expecting failure with exactly the given messages, in order (NULL-terminated). */
static void expect_errors(const char *yaml, ...)
{
    struct ledge_config c;
    memset(&c, 0xa5, sizeof(c)); /* must be left untouched */
    struct ledge_config before = c;
    _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
    int r = load(yaml, &c, &e);
    va_list ap;
    va_start(ap, yaml);
    size_t i = 0;
    for (const char *want; (want = va_arg(ap, const char *)); i++) {
        if (i >= e.n || strcmp(e.v[i], want) != 0) {
            print_message("message %zu:\n  want: %s\n  got:  %s\n", i, want,
                          i < e.n ? e.v[i] : "(none)");
            for (size_t j = 0; j < e.n; j++)
                print_message("  all[%zu]: %s\n", j, e.v[j]);
            fail();
        }
    }
    va_end(ap);
    if (e.n != i) {
        for (size_t j = 0; j < e.n; j++)
            print_message("  all[%zu]: %s\n", j, e.v[j]);
        fail_msg("want %zu messages, got %zu", i, e.n);
    }
    assert_int_equal(r, -EINVAL);
    assert_memory_equal(&c, &before, sizeof(c));
}

static char *machine_hostname(void)
{
    char host[256] = "";
    assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
    lstr_lower(host);
    return strdup(host);
}

/* ---- defaults ---- */

static void check_defaults(const struct ledge_config *c)
{
    assert_string_equal(c->state_dir, "/var/lib/ledge");
    assert_string_equal(c->run_dir, "/run/ledge");
    assert_int_equal(c->log_level, CONFIG_LOG_INFO);

    _cleanup_free_ char *host = machine_hostname();
    assert_string_equal(c->device.gateway_hostname, host);
    assert_string_equal(c->device.id, host);
    assert_non_null(strchr(c->device.iothub_hostname, '.'));
    assert_int_equal(c->device.identity, CONFIG_IDENTITY_GENERATED);
    assert_null(c->device.key);
    assert_null(c->device.x509.cert_file);
    assert_null(c->device.x509.key_file);

    assert_string_equal(c->engine.uri, "unix:///var/run/docker.sock");
    assert_string_equal(c->engine.network, "ledge");
    assert_int_equal(c->engine.log_max_size, 10 * 1024 * 1024);
    assert_int_equal(c->engine.log_max_files, 3);
    assert_int_equal(c->engine.stop_timeout_ms, 10000);
    assert_int_equal(c->engine.pull_timeout_ms, 600000);

    assert_int_equal(c->agent.backoff_base_ms, 10000);
    assert_int_equal(c->agent.backoff_max_ms, 300000);
    assert_int_equal(c->agent.max_restarts, 20);
    assert_int_equal(c->agent.reset_after_ms, 600000);
    assert_string_equal(c->agent.hub_program, "/usr/lib/ledge/ledge-hub");
    assert_int_equal(c->agent.hung_start_timeout_ms, 60000);

    assert_string_equal(c->management.socket, "/run/ledge/mgmt.sock");
    assert_string_equal(c->management.group, "ledge");
    assert_int_equal(c->management.max_connections, 64);
    assert_int_equal(c->management.request_timeout_ms, 30000);
    assert_int_equal(c->management.max_body, 4 * 1024 * 1024);

    assert_string_equal(c->workload.dir, "/run/ledge/workload");
    assert_int_equal(c->workload.max_concurrent, 10);
    assert_int_equal(c->workload.max_body, 64 * 1024);

    assert_null(c->certificates.ca_cert);
    assert_null(c->certificates.ca_key);
    assert_null(c->certificates.ca_chain);
    assert_int_equal(c->certificates.ca_lifetime_ms, 90LL * 86400000);
    assert_int_equal(c->certificates.cert_lifetime_ms, 30LL * 86400000);
    assert_int_equal(c->certificates.renew_before.percent, 20);
    assert_int_equal(c->certificates.renew_before.ms, 0);
    assert_int_equal(c->certificates.extra_names.n, 0);
    assert_int_equal(c->certificates.trusted_ca_files.n, 0);

    assert_string_equal(c->hub.bind, "0.0.0.0");
    assert_int_equal(c->hub.tls_port, 8883);
    assert_int_equal(c->hub.plain_port, 0);
    assert_int_equal(c->hub.websocket_port, 443);
    assert_int_equal(c->hub.amqp_port, 5671);
    assert_string_equal(c->hub.control_socket, "/run/ledge/hub.sock");
    assert_int_equal(c->hub.max_connections, 1000);
    assert_int_equal(c->hub.max_packet_size, 262144);
    assert_int_equal(c->hub.max_inflight, 100);
    assert_int_equal(c->hub.max_subscriptions, 32);
    assert_int_equal(c->hub.max_queued_bytes, 1024 * 1024 * 1024);
    assert_string_equal(c->hub.store_dir, "/var/lib/ledge/hub");
    assert_int_equal(c->hub.fsync, CONFIG_FSYNC_ALWAYS);
    assert_int_equal(c->hub.fsync_interval_ms, 50);

    assert_false(c->upstream.enabled);
    assert_null(c->upstream.host);
    assert_int_equal(c->upstream.port, 8883);
    assert_true(c->upstream.tls);
    assert_null(c->upstream.ca_file);
    assert_string_equal(c->upstream.topic, "devices/{device}/messages/events/{properties}");
    assert_int_equal(c->upstream.protocol, CONFIG_PROTOCOL_MQTT);
    assert_int_equal(c->upstream.keepalive_ms, 60000);
    assert_int_equal(c->upstream.token_lifetime_ms, 3600000);
    assert_int_equal(c->hub.max_token_lifetime_ms, 86400000);

    assert_int_equal(c->check.min_free_memory, 1024ULL * 1024 * 1024);
    assert_int_equal(c->check.min_free_disk, 10ULL * 1024 * 1024 * 1024);
    assert_string_equal(c->check.ntp_server, "pool.ntp.org");
    assert_string_equal(c->check.os_release, "/etc/os-release");
    assert_string_equal(c->check.meminfo, "/proc/meminfo");
    assert_int_equal(c->check.ntp_timeout_ms, 3000);
    assert_string_equal(c->check.cpuinfo, "/proc/cpuinfo");
    assert_string_equal(c->check.dmi_dir, "/sys/class/dmi/id");
    assert_string_equal(c->check.kvm_device, "/dev/kvm");
    assert_string_equal(c->check.cgroup_dir, "/sys/fs/cgroup");
    assert_string_equal(c->check.engine_config, "/etc/docker/daemon.json");

    assert_string_equal(c->vm.dir, "/var/lib/ledge/vm");
    assert_int_equal(c->vm.default_memory, 1024ULL * 1024 * 1024);
    assert_int_equal(c->vm.default_cpus, 1);
    assert_int_equal(c->vm.default_disk, 10ULL * 1024 * 1024 * 1024);
}

static void test_defaults(void **state)
{
    struct ledge_config c;
    assert_int_equal(config_defaults(&c), 0);
    check_defaults(&c);
    config_free(&c);
    /* config_free leaves a zeroed struct, and accepts one */
    struct ledge_config zero;
    memset(&zero, 0, sizeof(zero));
    assert_memory_equal(&c, &zero, sizeof(c));
    config_free(&c);
    config_free(NULL);
}

/* Every default in the table is valid text for its own key, and the docs' example of each
 * type round-trips through the canonical formatter. */
static void test_table_defaults_parse(void **state)
{
    for (size_t i = 0; i < cfg_n_keys; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (!k->dflt)
            continue;
        struct ledge_config c;
        memset(&c, 0, sizeof(c));
        _cleanup_lbuf_ struct lbuf why = LBUF_INIT;
        if (cfg_set_scalar(k, k->dflt, &c, &why) != 0)
            fail_msg("%s: default %s: %s", k->path, k->dflt, why.data);
        config_free(&c);
    }
    /* and every key is findable and is not also a section */
    for (size_t i = 0; i < cfg_n_keys; i++) {
        assert_ptr_equal(cfg_find(cfg_keys[i].path), &cfg_keys[i]);
        assert_false(cfg_is_section(cfg_keys[i].path));
    }
}

static void test_empty_means_defaults(void **state)
{
    static const char *const texts[] = {"", "# only a comment\n", "~\n", "---\n",
                                        "device:\nagent:\n  # commented\nhub: ~\n"};
    for (size_t i = 0; i < ARRAY_SIZE(texts); i++) {
        struct ledge_config c = load_ok(texts[i]);
        check_defaults(&c);
        config_free(&c);
    }
    /* NULL text is the empty text */
    struct ledge_config c;
    _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
    assert_int_equal(config_load_string(NULL, 0, NULL, &c, &e), 0);
    check_defaults(&c);
    config_free(&c);
}

static void test_example_file(void **state)
{
    struct ledge_config c;
    _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
    int r = config_load_file(LEDGE_SOURCE_ROOT "/examples/config.yaml", &c, &e);
    for (size_t i = 0; i < e.n; i++)
        print_message("%s\n", e.v[i]);
    assert_int_equal(r, 0);
    /* the example shows the defaults */
    check_defaults(&c);
    config_free(&c);
}

/* ---- value types ---- */

static void test_good_values(void **state)
{
    struct ledge_config c = load_ok("state_dir: /srv/ledge\n"
                                    "log_level: trace\n"
                                    "engine:\n"
                                    "  uri: http://127.0.0.1:2375\n"
                                    "  log_max_size: 256k\n"
                                    "  log_max_files: 100\n"
                                    "  stop_timeout: 0\n"
                                    "  pull_timeout: 2h\n"
                                    "agent:\n"
                                    "  backoff_base: 500ms\n"
                                    "  backoff_max: 1.5s\n"
                                    "  max_restarts: 0\n"
                                    "  reset_after: 1d\n"
                                    "management:\n"
                                    "  max_body: 1GiB\n"
                                    "  group: _ledge-admins\n");
    assert_string_equal(c.state_dir, "/srv/ledge");
    assert_string_equal(c.hub.store_dir, "/srv/ledge/hub");
    assert_int_equal(c.log_level, CONFIG_LOG_TRACE);
    assert_string_equal(c.engine.uri, "http://127.0.0.1:2375");
    assert_int_equal(c.engine.log_max_size, 262144);
    assert_int_equal(c.engine.log_max_files, 100);
    assert_int_equal(c.engine.stop_timeout_ms, 0);
    assert_int_equal(c.engine.pull_timeout_ms, 7200000);
    assert_int_equal(c.agent.backoff_base_ms, 500);
    assert_int_equal(c.agent.backoff_max_ms, 1500);
    assert_int_equal(c.agent.max_restarts, 0);
    assert_int_equal(c.agent.reset_after_ms, 86400000);
    assert_int_equal(c.management.max_body, 1ULL << 30);
    assert_string_equal(c.management.group, "_ledge-admins");
    config_free(&c);
}

static void test_durations(void **state)
{
    static const struct {
        const char *text;
        int64_t ms;
    } good[] = {
        {"500ms", 500}, {"30s", 30000}, {"10m", 600000}, {"2h", 7200000},   {"90d", 7776000000LL},
        {"1.5s", 1500}, {"0", 0},       {"0s", 0},       {"0.25h", 900000},
    };
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        int64_t ms = -1;
        assert_int_equal(cfg_parse_duration(good[i].text, &ms), 0);
        assert_int_equal(ms, good[i].ms);
    }
    static const char *const bad[] = {"5 minutes", "5",   "1e3s", "0x10s", " 5s", "5s ",
                                      "inf",       "nan", "-5s",  "+5s",   "5.s", ".5s",
                                      "5ss",       "5 s", "1w",   "",      "s",   "5S"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        int64_t ms;
        if (cfg_parse_duration(bad[i], &ms) != -EINVAL)
            fail_msg("\"%s\" accepted", bad[i]);
    }
    int64_t ms;
    assert_int_equal(cfg_parse_duration("999999999999999d", &ms), -ERANGE);

    char buf[32];
    cfg_format_duration(0, buf);
    assert_string_equal(buf, "0s");
    cfg_format_duration(1500, buf);
    assert_string_equal(buf, "1500ms");
    cfg_format_duration(300000, buf);
    assert_string_equal(buf, "5m");
    cfg_format_duration(90LL * 86400000, buf);
    assert_string_equal(buf, "90d");
    cfg_format_duration(7200000, buf);
    assert_string_equal(buf, "2h");

    struct ledge_config c = load_ok("agent:\n  backoff_base: 500ms\n  backoff_max: 1.5s\n"
                                    "  reset_after: 7d\n");
    assert_int_equal(c.agent.backoff_base_ms, 500);
    assert_int_equal(c.agent.backoff_max_ms, 1500);
    assert_int_equal(c.agent.reset_after_ms, 7 * 86400000LL);
    config_free(&c);
}

static void test_sizes(void **state)
{
    static const struct {
        const char *text;
        uint64_t n;
    } good[] = {
        {"0", 0},
        {"512", 512},
        {"512B", 512},
        {"256k", 262144},
        {"256K", 262144},
        {"256Ki", 262144},
        {"256KiB", 262144},
        {"256KB", 262144},
        {"10M", 10485760},
        {"10m", 10485760},
        {"10MiB", 10485760},
        {"10GiB", 10737418240ULL},
        {"1g", 1073741824ULL},
        {"2T", 2199023255552ULL},
        {"16777215TiB", 16777215ULL << 40},
    };
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        uint64_t n = 1;
        if (cfg_parse_size(good[i].text, &n) != 0 || n != good[i].n)
            fail_msg("\"%s\" -> %llu", good[i].text, (unsigned long long)n);
    }
    static const char *const bad[] = {"10 MB", "10Mb",   "1.5G", "-1",  "+1", "k",  "",
                                      "10iB",  "10KiBB", "1P",   "1e3", " 1", "1 ", "0x10"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        uint64_t n;
        if (cfg_parse_size(bad[i], &n) != -EINVAL)
            fail_msg("\"%s\" accepted", bad[i]);
    }
    uint64_t n;
    assert_int_equal(cfg_parse_size("16777216TiB", &n), -ERANGE);
    assert_int_equal(cfg_parse_size("99999999999999999999", &n), -EINVAL); /* 20 digits */
    assert_int_equal(cfg_parse_size("18446744073709551616", &n), -EINVAL);

    char buf[32];
    cfg_format_size(0, buf);
    assert_string_equal(buf, "0");
    cfg_format_size(1000, buf);
    assert_string_equal(buf, "1000");
    cfg_format_size(262144, buf);
    assert_string_equal(buf, "256KiB");
    cfg_format_size(10ULL << 30, buf);
    assert_string_equal(buf, "10GiB");
    cfg_format_size(1536ULL << 20, buf);
    assert_string_equal(buf, "1536MiB");
}

static void test_bad_values_messages(void **state)
{
    expect_errors("agent:\n"
                  "  backoff_base: 1s\n"
                  "  backoff_max: \"5 minutes\"\n",
                  "t.yaml:3: agent.backoff_max: \"5 minutes\" is not a duration (use e.g. 300s, "
                  "5m)",
                  NULL);
    /* durations: range, whole seconds */
    expect_errors("engine:\n  stop_timeout: 2h\n  pull_timeout: 10ms\nupstream:\n"
                  "  keepalive: 1500ms\n",
                  "t.yaml:2: engine.stop_timeout: \"2h\" is out of range (0s..1h)",
                  "t.yaml:3: engine.pull_timeout: \"10ms\" is out of range (1s..1d)",
                  "t.yaml:5: upstream.keepalive: \"1500ms\" is not a whole number of seconds",
                  NULL);
    expect_errors("agent:\n  reset_after: 999999999999999d\n",
                  "t.yaml:2: agent.reset_after: \"999999999999999d\" is out of range (1s..7d)",
                  NULL);
    /* integers */
    expect_errors("hub:\n  tls_port: abc\n  plain_port: 70000\n  max_inflight: 0\n"
                  "  max_connections: 010\n  max_subscriptions: 1.5\n  tls_port: -1\n",
                  "t.yaml:2: hub.tls_port: \"abc\" is not an integer",
                  "t.yaml:3: hub.plain_port: 70000 is out of range (0..65535)",
                  "t.yaml:4: hub.max_inflight: 0 is out of range (1..65535)",
                  "t.yaml:5: hub.max_connections: \"010\" is not an integer",
                  "t.yaml:6: hub.max_subscriptions: \"1.5\" is not an integer",
                  "t.yaml:7: hub.tls_port: duplicate key (first on line 2)", NULL);
    expect_errors("engine:\n  log_max_files: 99999999999999999999999\n",
                  "t.yaml:2: engine.log_max_files: \"99999999999999999999999\" is not an "
                  "integer",
                  NULL);
    /* sizes */
    expect_errors("hub:\n  max_packet_size: 10 MB\n  max_queued_bytes: 1k\n"
                  "management:\n  max_body: 2G\n",
                  "t.yaml:2: hub.max_packet_size: \"10 MB\" is not a size (use e.g. 512k, 10M, "
                  "1GiB)",
                  "t.yaml:3: hub.max_queued_bytes: \"1k\" is out of range (1MiB..64TiB)",
                  "t.yaml:5: management.max_body: \"2G\" is out of range (1KiB..1GiB)", NULL);
    expect_errors("hub:\n  max_packet_size: 268435456\n",
                  "t.yaml:2: hub.max_packet_size: \"268435456\" is out of range "
                  "(1KiB..268435455)",
                  NULL);
    /* booleans */
    expect_errors("upstream:\n  enabled: yes\n  tls: 1\n",
                  "t.yaml:2: upstream.enabled: \"yes\" is not a boolean (use true or false)",
                  "t.yaml:3: upstream.tls: \"1\" is not a boolean (use true or false)", NULL);
    /* paths */
    expect_errors("state_dir: var/lib\ncheck:\n  meminfo: \"\"\nmanagement:\n  socket: /"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
                  "t.yaml:1: state_dir: \"var/lib\" is not an absolute path",
                  "t.yaml:3: check.meminfo: must not be empty",
                  "t.yaml:5: management.socket: \"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaa...\" is too long (max 107 bytes for a unix socket)",
                  NULL);
    /* enums */
    expect_errors("log_level: verbose\nhub:\n  fsync: [always]\n",
                  "t.yaml:1: log_level: \"verbose\" is not one of: error, warn, info, debug, "
                  "trace",
                  "t.yaml:3: hub.fsync: must be one of always, interval, not a list", NULL);
    /* lists */
    expect_errors("certificates:\n"
                  "  extra_names: [edge.example.com, 10.0.0.1, \"bad name\", {x: 1}, ~]\n"
                  "  trusted_ca_files: /etc/ca.pem\n",
                  "t.yaml:2: certificates.extra_names[2]: \"bad name\" is not a valid host name "
                  "or IP address",
                  "t.yaml:2: certificates.extra_names[3]: must be a string, not a mapping",
                  "t.yaml:2: certificates.extra_names[4]: must be a string, not empty",
                  "t.yaml:3: certificates.trusted_ca_files: must be a list, not a single value "
                  "(write [a, b] or one \"- item\" per line)",
                  NULL);
    expect_errors("certificates:\n  trusted_ca_files:\n    - /etc/a.pem\n    - b.pem\n",
                  "t.yaml:4: certificates.trusted_ca_files[1]: \"b.pem\" is not an absolute path",
                  NULL);
    /* URIs */
    expect_errors("engine:\n  uri: tcp://1.2.3.4:2375\n",
                  "t.yaml:2: engine.uri: \"tcp://1.2.3.4:2375\" is not a supported engine URI "
                  "(use unix:///path or http://host:port)",
                  NULL);
    static const char *const bad_uris[] = {
        "unix://relative",  "http://host",      "http://host:0",  "http://host:65536",
        "http://:80",       "http://a b:80",    "http://[::1:80", "http://[zz]:80",
        "https://host:443", "http://host:80/x", "unix://",        "http://host:+80",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad_uris); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "engine:\n  uri: \"%s\"\n", bad_uris[i]);
        struct ledge_config c;
        _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
        if (load(yaml, &c, &e) != -EINVAL)
            fail_msg("%s accepted", bad_uris[i]);
    }
    static const char *const good_uris[] = {"unix:///var/run/docker.sock", "http://localhost:2375",
                                            "http://10.1.2.3:1", "http://[::1]:2375"};
    for (size_t i = 0; i < ARRAY_SIZE(good_uris); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "engine:\n  uri: \"%s\"\n", good_uris[i]);
        struct ledge_config c = load_ok(yaml);
        assert_string_equal(c.engine.uri, good_uris[i]);
        config_free(&c);
    }
    /* renew_before */
    expect_errors("certificates:\n  renew_before: 120%\n",
                  "t.yaml:2: certificates.renew_before: \"120%\" is out of range (1%..99%)", NULL);
    expect_errors("certificates:\n  renew_before: soon\n",
                  "t.yaml:2: certificates.renew_before: \"soon\" is not a percentage or a "
                  "duration (use e.g. 20% or 7d)",
                  NULL);
    expect_errors("certificates:\n  renew_before: x%\n",
                  "t.yaml:2: certificates.renew_before: \"x%\" is not a percentage or a duration "
                  "(use e.g. 20% or 7d)",
                  NULL);
    /* strings with validators */
    expect_errors("device:\n  id: \"a/b\"\n  iothub_hostname: myhub\n  gateway_hostname: a_b\n"
                  "engine:\n  network: \"-x\"\nmanagement:\n  group: \"1x\"\nhub:\n"
                  "  bind: localhost\nupstream:\n  topic: \"devices/+/x\"\n",
                  "t.yaml:2: device.id: \"a/b\" is not a valid device id (up to 128 letters, "
                  "digits and - : . + % _ # * ? ! ( ) , = @ ; $ ')",
                  "t.yaml:3: device.iothub_hostname: \"myhub\" is not a fully qualified host "
                  "name (it needs a dot, e.g. myhub.azure-devices.net)",
                  "t.yaml:4: device.gateway_hostname: \"a_b\" is not a valid host name or IP "
                  "address",
                  "t.yaml:6: engine.network: \"-x\" is not a valid network name (up to 64 "
                  "letters, digits, _ . -)",
                  "t.yaml:8: management.group: \"1x\" is not a valid group name (up to 32 "
                  "letters, digits, _ . -)",
                  "t.yaml:10: hub.bind: \"localhost\" is not an IP address",
                  "t.yaml:12: upstream.topic: \"devices/+/x\" is not a valid topic (up to 256 "
                  "bytes, no + or # wildcards)",
                  NULL);
    expect_errors("upstream:\n  topic: \"devices/{devcie}/messages\"\n",
                  "t.yaml:2: upstream.topic: \"devices/{devcie}/messages\" has an unknown "
                  "placeholder (use {device}, {module}, {properties})",
                  NULL);
    /* wrong shapes */
    expect_errors("agent:\n  backoff_max: {a: 1}\nupstream: 5\nhub:\n  - tls_port\n",
                  "t.yaml:2: agent.backoff_max: must be a duration, not a mapping",
                  "t.yaml:3: upstream: must be a section (a mapping of keys), not a single value",
                  "t.yaml:5: hub: must be a section (a mapping of keys), not a list", NULL);
    expect_errors("- a\n- b\n",
                  "t.yaml:1: the file must be a mapping of settings (key: value), not a list",
                  NULL);
    expect_errors("just text\n",
                  "t.yaml:1: the file must be a mapping of settings (key: value), not a single "
                  "value",
                  NULL);
    expect_errors("? [a]\n: 1\n", "t.yaml:1: keys must be names, not a list", NULL);
    /* a NUL inside a value, and inside a key */
    expect_errors("engine:\n  network: \"le\\0dge\"\n",
                  "t.yaml:2: engine.network: must not contain NUL characters", NULL);
    expect_errors("\"state_dir\\0x\": /x\n", "t.yaml:1: \"state_dir\\x00x\": unknown key", NULL);
    /* control characters are escaped when a value is quoted back */
    expect_errors("engine:\n  network: \"a\\x1b[31mb\\\"c\"\n",
                  "t.yaml:2: engine.network: \"a\\x1b[31mb\\\"c\" is not a valid network name "
                  "(up to 64 letters, digits, _ . -)",
                  NULL);
}

static void test_type_values_stored(void **state)
{
    struct ledge_config c = load_ok("log_level: debug\n"
                                    "engine:\n  uri: \"http://[::1]:2375\"\n  log_max_size: 1G\n"
                                    "hub:\n  fsync: interval\n  fsync_interval: 5ms\n"
                                    "  plain_port: 1883\n  bind: \"::\"\n"
                                    "upstream:\n  enabled: TRUE\n  tls: False\n"
                                    "  host: 10.0.0.1\n"
                                    "certificates:\n  renew_before: 7d\n"
                                    "  extra_names:\n    - edge.example.com\n    - 10.0.0.2\n"
                                    "  trusted_ca_files: [/etc/a.pem]\n");
    assert_int_equal(c.log_level, CONFIG_LOG_DEBUG);
    assert_string_equal(c.engine.uri, "http://[::1]:2375");
    assert_int_equal(c.engine.log_max_size, 1ULL << 30);
    assert_int_equal(c.hub.fsync, CONFIG_FSYNC_INTERVAL);
    assert_int_equal(c.hub.fsync_interval_ms, 5);
    assert_int_equal(c.hub.plain_port, 1883);
    assert_string_equal(c.hub.bind, "::");
    assert_true(c.upstream.enabled);
    assert_false(c.upstream.tls);
    assert_string_equal(c.upstream.host, "10.0.0.1");
    assert_int_equal(c.certificates.renew_before.percent, 0);
    assert_int_equal(c.certificates.renew_before.ms, 7 * 86400000LL);
    assert_int_equal(c.certificates.extra_names.n, 2);
    assert_string_equal(c.certificates.extra_names.v[0], "edge.example.com");
    assert_string_equal(c.certificates.extra_names.v[1], "10.0.0.2");
    assert_int_equal(c.certificates.trusted_ca_files.n, 1);
    assert_string_equal(c.certificates.trusted_ca_files.v[0], "/etc/a.pem");
    config_free(&c);

    /* an empty flow list is an empty list */
    c = load_ok("certificates:\n  extra_names: []\n");
    assert_int_equal(c.certificates.extra_names.n, 0);
    config_free(&c);
}

/* ---- unknown keys ---- */

static void test_unknown_keys(void **state)
{
    expect_errors("state_dir: /x\n"
                  "log_level: info\n"
                  "devce:\n"
                  "  id: x\n",
                  "t.yaml:3: devce: unknown key (did you mean \"device\"?)", NULL);
    expect_errors("agent:\n  backof_max: 5m\n  backoffMax: 5m\n  BACKOFF-BASE: 5s\n"
                  "hub:\n  zzzzzz: 1\n",
                  "t.yaml:2: agent.backof_max: unknown key (did you mean \"backoff_max\"?)",
                  "t.yaml:3: agent.backoffMax: unknown key (did you mean \"backoff_max\"?)",
                  "t.yaml:4: agent.BACKOFF-BASE: unknown key (did you mean \"backoff_base\"?)",
                  "t.yaml:6: hub.zzzzzz: unknown key", NULL);
    /* a key in the wrong section */
    expect_errors("backoff_base: 1s\nmax_body: 1k\nhub:\n  cert_lifetime: 1d\n",
                  "t.yaml:1: backoff_base: unknown key (did you mean \"agent.backoff_base\"?)",
                  "t.yaml:2: max_body: unknown key (did you mean \"management.max_body\" or "
                  "\"workload.max_body\"?)",
                  "t.yaml:4: hub.cert_lifetime: unknown key (did you mean "
                  "\"certificates.cert_lifetime\"?)",
                  NULL);
    /* nested sections, and names that are not identifiers */
    expect_errors("device:\n  x509:\n    cert: /a\n\"a b\": 1\n",
                  "t.yaml:3: device.x509.cert: unknown key (did you mean \"cert_file\"?)",
                  "t.yaml:4: \"a b\": unknown key", NULL);
    /* a section key given as a leaf and the reverse */
    expect_errors("device:\n  id:\n    x: 1\n",
                  "t.yaml:3: device.id: must be a string, not a mapping", NULL);
    /* duplicate sections */
    expect_errors("hub:\n  tls_port: 1\nhub:\n  plain_port: 2\n",
                  "t.yaml:3: hub: duplicate key (first on line 1)", NULL);
}

static void test_all_problems_reported(void **state)
{
    expect_errors("log_level: loud\n"
                  "agent:\n"
                  "  backoff_max: forever\n"
                  "  max_restarts: many\n"
                  "hub:\n"
                  "  tls_port: 0\n"
                  "colour: blue\n",
                  "t.yaml:1: log_level: \"loud\" is not one of: error, warn, info, debug, trace",
                  "t.yaml:3: agent.backoff_max: \"forever\" is not a duration (use e.g. 300s, 5m)",
                  "t.yaml:4: agent.max_restarts: \"many\" is not an integer",
                  "t.yaml:6: hub.tls_port: 0 is out of range (1..65535)",
                  "t.yaml:7: colour: unknown key", NULL);

    /* more than CONFIG_MAX_ERRORS problems: the list is capped with a last line saying so */
    struct lbuf y = LBUF_INIT;
    for (int i = 0; i < CONFIG_MAX_ERRORS + 20; i++)
        lbuf_printf(&y, "bad%d: 1\n", i);
    struct ledge_config c;
    _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
    assert_int_equal(config_load_string(y.data, y.len, "t.yaml", &c, &e), -EINVAL);
    assert_int_equal(e.n, CONFIG_MAX_ERRORS + 1);
    assert_string_equal(e.v[0], "t.yaml:1: bad0: unknown key");
    assert_string_equal(e.v[CONFIG_MAX_ERRORS], "t.yaml: too many errors, stopping after 100");
    lbuf_free(&y);

    /* no list: only the verdict */
    assert_int_equal(config_load_string("x: 1\n", 5, "t.yaml", &c, NULL), -EINVAL);

    /* errors are appended to what the list already holds */
    _cleanup_lstrv_ struct lstrv e2 = LSTRV_INIT;
    lstrv_push(&e2, "earlier");
    assert_int_equal(load("x: 1\n", &c, &e2), -EINVAL);
    assert_int_equal(e2.n, 2);
    assert_string_equal(e2.v[0], "earlier");
}

/* ---- device identity ---- */

static void test_identity_key(void **state)
{
    struct ledge_config c = load_ok("device:\n  id: dev-1\n  iothub_hostname: hub.example.net\n"
                                    "  key: " KEY "\n");
    assert_int_equal(c.device.identity, CONFIG_IDENTITY_KEY);
    assert_string_equal(c.device.key, KEY);
    assert_string_equal(c.device.id, "dev-1");
    assert_string_equal(c.device.iothub_hostname, "hub.example.net");
    config_free(&c);

    expect_errors("device:\n  key: " KEY "\n",
                  "t.yaml:2: device.id: is required when device.key is set",
                  "t.yaml:2: device.iothub_hostname: is required when device.key is set", NULL);
    /* bad keys: no part of the value in the message */
    expect_errors("device:\n  id: d\n  iothub_hostname: h.net\n  key: " KEY_B64_PART "!\n",
                  "t.yaml:4: device.key: is not a valid key: it must be base64 of 16 to 64 bytes "
                  "(value not shown)",
                  NULL);
    expect_errors("device:\n  id: d\n  iothub_hostname: h.net\n  key: c2hvcnQ=\n",
                  "t.yaml:4: device.key: is not a valid key: it must be base64 of 16 to 64 bytes "
                  "(value not shown)",
                  NULL);
    expect_errors("device:\n  key: [" KEY "]\n",
                  "t.yaml:2: device.key: must be a string, not a list", NULL);
}

static void test_identity_x509(void **state)
{
    struct ledge_config c =
        load_ok("device:\n  id: d\n  iothub_hostname: h.example.net\n"
                "  x509:\n    cert_file: /etc/c.pem\n    key_file: /etc/k.pem\n");
    assert_int_equal(c.device.identity, CONFIG_IDENTITY_X509);
    assert_string_equal(c.device.x509.cert_file, "/etc/c.pem");
    assert_string_equal(c.device.x509.key_file, "/etc/k.pem");
    assert_null(c.device.key);
    config_free(&c);

    expect_errors("device:\n  id: d\n  iothub_hostname: h.example.net\n"
                  "  x509:\n    cert_file: /etc/c.pem\n",
                  "t.yaml:5: device.x509.key_file: is required with device.x509.cert_file", NULL);
    expect_errors("device:\n  x509:\n    key_file: /etc/k.pem\n",
                  "t.yaml:3: device.x509.cert_file: is required with device.x509.key_file",
                  "t.yaml:3: device.id: is required when device.x509 is set",
                  "t.yaml:3: device.iothub_hostname: is required when device.x509 is set", NULL);
    expect_errors("device:\n  id: d\n  iothub_hostname: h.example.net\n"
                  "  x509:\n    cert_file: c.pem\n    key_file: /etc/k.pem\n",
                  "t.yaml:5: device.x509.cert_file: \"c.pem\" is not an absolute path", NULL);
    expect_errors("device:\n  x509: /etc/c.pem\n",
                  "t.yaml:2: device.x509: must be a section (a mapping of keys), not a single "
                  "value",
                  NULL);
    /* only one identity */
    expect_errors("device:\n  id: d\n  iothub_hostname: h.net\n  key: " KEY "\n"
                  "  x509:\n    cert_file: /c\n    key_file: /k\n",
                  "t.yaml:6: device.x509.cert_file: only one of device.key, "
                  "device.connection_string and device.x509 may be set (another is on line 4)",
                  NULL);
}

static void test_connection_string(void **state)
{
    struct ledge_config c =
        load_ok("device:\n  connection_string: \"HostName=myhub.azure-devices.net;DeviceId=dev-1;"
                "SharedAccessKey=" KEY "\"\n");
    assert_int_equal(c.device.identity, CONFIG_IDENTITY_CONNECTION_STRING);
    assert_string_equal(c.device.id, "dev-1");
    assert_string_equal(c.device.iothub_hostname, "myhub.azure-devices.net");
    assert_string_equal(c.device.key, KEY);
    _cleanup_free_ char *host = machine_hostname();
    assert_string_equal(c.device.gateway_hostname, host);
    config_free(&c);

    /* part names are case-insensitive; order free; trailing ';' allowed; GatewayHostName;
     * explicit values that agree are fine; the upstream host follows the hub's */
    c = load_ok("device:\n  id: dev-1\n  connection_string: \"sharedaccesskey=" KEY
                ";DEVICEID=dev-1;HostName=myhub.azure-devices.net;GatewayHostName=gw.local;\"\n"
                "upstream:\n  enabled: true\n");
    assert_string_equal(c.device.id, "dev-1");
    assert_string_equal(c.device.gateway_hostname, "gw.local");
    assert_string_equal(c.upstream.host, "myhub.azure-devices.net");
    config_free(&c);

    /* conflicts with explicit values; the values are not shown */
    expect_errors("device:\n  id: other\n  iothub_hostname: other.example.net\n"
                  "  gateway_hostname: gw2\n"
                  "  connection_string: \"HostName=myhub.azure-devices.net;DeviceId=dev-1;"
                  "SharedAccessKey=" KEY ";GatewayHostName=gw\"\n",
                  "t.yaml:2: device.id: conflicts with the DeviceId of device.connection_string "
                  "(line 5)",
                  "t.yaml:3: device.iothub_hostname: conflicts with the HostName of "
                  "device.connection_string (line 5)",
                  "t.yaml:4: device.gateway_hostname: conflicts with the GatewayHostName of "
                  "device.connection_string (line 5)",
                  NULL);
    expect_errors("device:\n  key: " KEY "\n  connection_string: \"HostName=h.net;DeviceId=d;"
                  "SharedAccessKey=" KEY "\"\n",
                  "t.yaml:3: device.connection_string: only one of device.key, "
                  "device.connection_string and device.x509 may be set (another is on line 2)",
                  NULL);
    /* malformed strings */
    expect_errors("device:\n  connection_string: \"HostName=h.net;DeviceId=d\"\n",
                  "t.yaml:2: device.connection_string: SharedAccessKey is missing", NULL);
    expect_errors("device:\n  connection_string: \"HostName=h.net;" KEY "\"\n",
                  "t.yaml:2: device.connection_string: part 2 has an unknown name (expected "
                  "HostName, DeviceId, SharedAccessKey, GatewayHostName; value not shown)",
                  "t.yaml:2: device.connection_string: DeviceId is missing",
                  "t.yaml:2: device.connection_string: SharedAccessKey is missing", NULL);
    expect_errors("device:\n  connection_string: \"HostName=h.net;DeviceId\"\n",
                  "t.yaml:2: device.connection_string: part 2 is not Name=value (value not "
                  "shown)",
                  "t.yaml:2: device.connection_string: DeviceId is missing",
                  "t.yaml:2: device.connection_string: SharedAccessKey is missing", NULL);
    expect_errors("device:\n  connection_string: \"HostName=h.net;DeviceId=d;ModuleId=m;"
                  "SharedAccessKey=" KEY "\"\n",
                  "t.yaml:2: device.connection_string: is a module connection string; use the "
                  "device's",
                  NULL);
    expect_errors("device:\n  connection_string: \"HostName=h.net;SharedAccessKeyName=owner;"
                  "SharedAccessKey=" KEY "\"\n",
                  "t.yaml:2: device.connection_string: is an IoT hub policy connection string; "
                  "use the device's own",
                  "t.yaml:2: device.connection_string: DeviceId is missing", NULL);
    expect_errors("device:\n  connection_string: \"HostName=h.net;DeviceId=d;x509=true\"\n",
                  "t.yaml:2: device.connection_string: x509 connection strings are not "
                  "supported; set device.x509 instead",
                  "t.yaml:2: device.connection_string: SharedAccessKey is missing", NULL);
    expect_errors("device:\n  connection_string: \"HostName=h.net;DeviceId=d;DeviceId=e;"
                  "Foo=bar;SharedAccessKey=\"\n",
                  "t.yaml:2: device.connection_string: DeviceId appears twice",
                  "t.yaml:2: device.connection_string: part 4 has an unknown name (expected "
                  "HostName, DeviceId, SharedAccessKey, GatewayHostName; value not shown)",
                  "t.yaml:2: device.connection_string: SharedAccessKey is empty", NULL);
    expect_errors("device:\n  connection_string: \"HostName=nodot;DeviceId=a/b;SharedAccessKey="
                  "c2hvcnQ=;GatewayHostName=a_b\"\n",
                  "t.yaml:2: device.connection_string: HostName is not a fully qualified host "
                  "name (value not shown)",
                  "t.yaml:2: device.connection_string: DeviceId is not a valid device id (value "
                  "not shown)",
                  "t.yaml:2: device.connection_string: GatewayHostName is not a valid host name "
                  "(value not shown)",
                  "t.yaml:2: device.connection_string: SharedAccessKey is not base64 of 16 to 64 "
                  "bytes (value not shown)",
                  NULL);
    expect_errors("device:\n  connection_string: \"\"\n",
                  "t.yaml:2: device.connection_string: must not be empty", NULL);
    expect_errors("device:\n  connection_string: \";\"\n",
                  "t.yaml:2: device.connection_string: HostName is missing",
                  "t.yaml:2: device.connection_string: DeviceId is missing",
                  "t.yaml:2: device.connection_string: SharedAccessKey is missing", NULL);
}

/* ---- secrets ---- */

static void assert_no_secret(const char *s)
{
    if (strstr(s, KEY_B64_PART) || strstr(s, "s3cr3t"))
        fail_msg("secret leaked: %s", s);
}

static void test_secrets_never_shown(void **state)
{
    /* every way a secret value can be wrong, alongside other errors */
    static const char *const files[] = {
        "device:\n  key: \"" KEY_B64_PART "!\"\n",
        "device:\n  key: \"" KEY_B64_PART " s3cr3t\"\n",
        "device:\n  key: " KEY "\n  key: " KEY "\n",
        "device:\n  connection_string: \"" KEY_B64_PART "\"\n",
        "device:\n  connection_string: \"s3cr3t=" KEY_B64_PART "\"\n",
        "device:\n  connection_string: \"HostName=s3cr3t;DeviceId=s3cr3t/;SharedAccessKey="
        "s3cr3t" KEY_B64_PART ";GatewayHostName=s3cr3t_\"\n",
        "device:\n  connection_string: \"HostName=h.net;DeviceId=d;SharedAccessKey=" KEY
        "\"\n  id: s3cr3t-other\n",
        "device:\n  connection_string: \"HostName=h.net;DeviceId=d;SharedAccessKey=" KEY
        "\"\n  key: " KEY "\n",
        "device:\n  key: " KEY "\n  iothub_hostname: h.net\n",
        "device:\n  key: \"" KEY "\"\n  id: d\n  iothub_hostname: h.net\nbad: 1\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        struct ledge_config c;
        _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
        assert_int_equal(load(files[i], &c, &e), -EINVAL);
        assert_true(e.n > 0);
        for (size_t j = 0; j < e.n; j++)
            assert_no_secret(e.v[j]);
    }

    struct ledge_config c = load_ok("device:\n  id: d\n  iothub_hostname: h.net\n  key: " KEY "\n");
    _cleanup_json_ json_t *red = config_to_json(&c, true);
    _cleanup_free_ char *red_text = json_dumps(red, 0);
    assert_no_secret(red_text);
    assert_string_equal(json_string_value(json_object_get(json_object_get(red, "device"), "key")),
                        "<redacted>");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(red, "device"), "identity")), "key");
    _cleanup_json_ json_t *full = config_to_json(&c, false);
    assert_string_equal(json_string_value(json_object_get(json_object_get(full, "device"), "key")),
                        KEY);
    config_free(&c);

    c = load_ok("device:\n  connection_string: \"HostName=h.net;DeviceId=d;SharedAccessKey=" KEY
                "\"\n");
    _cleanup_json_ json_t *red2 = config_to_json(&c, true);
    _cleanup_free_ char *red2_text = json_dumps(red2, 0);
    assert_no_secret(red2_text);
    assert_null(strstr(red2_text, "connection_string\":")); /* not kept as such */
    assert_non_null(strstr(red2_text, "\"identity\": \"connection_string\""));
    config_free(&c);

    /* no key: null, not "<redacted>" */
    assert_int_equal(config_defaults(&c), 0);
    _cleanup_json_ json_t *none = config_to_json(&c, true);
    assert_true(json_is_null(json_object_get(json_object_get(none, "device"), "key")));
    config_free(&c);
}

/* ---- YAML features and syntax ---- */

static void test_yaml_features_rejected(void **state)
{
    expect_errors("agent:\n  backoff_base: &b 10s\n  backoff_max: *b\n",
                  "t.yaml:2:17: YAML anchors (&name) are not supported",
                  "t.yaml:3:16: YAML aliases (*name) are not supported", NULL);
    /* the billion laughs: refused at the first anchor, before any tree is built */
    expect_errors("a: &a [x, x, x, x, x, x, x, x, x]\n"
                  "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                  "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
                  "t.yaml:1:4: YAML anchors (&name) are not supported",
                  "t.yaml:2:4: YAML anchors (&name) are not supported",
                  "t.yaml:2:8: YAML aliases (*name) are not supported",
                  "t.yaml:2:12: YAML aliases (*name) are not supported",
                  "t.yaml:2:16: YAML aliases (*name) are not supported",
                  "t.yaml:2:20: YAML aliases (*name) are not supported",
                  "t.yaml:2:24: YAML aliases (*name) are not supported",
                  "t.yaml:2:28: YAML aliases (*name) are not supported",
                  "t.yaml:2:32: YAML aliases (*name) are not supported",
                  "t.yaml:2:36: YAML aliases (*name) are not supported",
                  "t.yaml:2:40: YAML aliases (*name) are not supported",
                  "t.yaml:3:4: YAML anchors (&name) are not supported",
                  "t.yaml:3:8: YAML aliases (*name) are not supported",
                  "t.yaml:3:12: YAML aliases (*name) are not supported",
                  "t.yaml:3:16: YAML aliases (*name) are not supported",
                  "t.yaml:3:20: YAML aliases (*name) are not supported",
                  "t.yaml:3:24: YAML aliases (*name) are not supported",
                  "t.yaml:3:28: YAML aliases (*name) are not supported",
                  "t.yaml:3:32: YAML aliases (*name) are not supported",
                  "t.yaml:3:36: YAML aliases (*name) are not supported",
                  "t.yaml:3:40: YAML aliases (*name) are not supported", NULL);
    expect_errors("hub:\n  tls_port: !!int 8883\n",
                  "t.yaml:2:13: YAML tags (!name) are not supported", NULL);
    expect_errors("--- !!map\nhub: ~\n", "t.yaml:1:5: YAML tags (!name) are not supported", NULL);
    expect_errors("hub: ~\n---\nagent: ~\n", "t.yaml:2:1: only one YAML document is allowed", NULL);

    /* nesting beyond CONFIG_MAX_DEPTH */
    char deep[64] = "";
    for (int i = 0; i < CONFIG_MAX_DEPTH + 1; i++)
        strcat(deep, "[");
    expect_errors(deep, "t.yaml:1:17: nesting is deeper than 16 levels", NULL);
    /* too many nodes */
    struct lbuf many = LBUF_INIT;
    lbuf_puts(&many, "x: [");
    for (int i = 0; i < CONFIG_MAX_NODES; i++)
        lbuf_puts(&many, "1,");
    lbuf_puts(&many, "1]\n");
    struct ledge_config c;
    _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
    assert_int_equal(config_load_string(many.data, many.len, "t.yaml", &c, &e), -EINVAL);
    assert_int_equal(e.n, 1);
    assert_non_null(strstr(e.v[0], "too many YAML nodes (more than 20000)"));
    lbuf_free(&many);
    /* too large */
    size_t big = CONFIG_MAX_FILE_SIZE + 1;
    char *text = malloc(big);
    memset(text, '#', big);
    _cleanup_lstrv_ struct lstrv e2 = LSTRV_INIT;
    assert_int_equal(config_load_string(text, big, "t.yaml", &c, &e2), -EINVAL);
    assert_int_equal(e2.n, 1);
    assert_string_equal(e2.v[0], "t.yaml: is larger than 1 MiB");
    free(text);
}

static void test_yaml_syntax_errors(void **state)
{
    expect_errors("device:\n  id: x\n   key: y\n",
                  "t.yaml:3:7: YAML syntax error: mapping values are not allowed in this context",
                  NULL);
    expect_errors("hub:\n  tls_port: 1\n  bind: [1.2.3.4\n",
                  "t.yaml:4:1: YAML syntax error: did not find expected ',' or ']' (while "
                  "parsing a flow sequence at line 3)",
                  NULL);
    expect_errors("a: \"unterminated\n",
                  "t.yaml:2:1: YAML syntax error: found unexpected end of stream (while "
                  "scanning a quoted scalar at line 1)",
                  NULL);
    expect_errors("hub:\n\ttls_port: 1\n",
                  "t.yaml:2:1: YAML syntax error: found character that cannot start any token "
                  "(while scanning for the next token at line 2)",
                  NULL);
    /* not text */
    expect_errors("a: \x01\n",
                  "t.yaml:1:4: not valid YAML text: control characters are not "
                  "allowed",
                  NULL);
    expect_errors("a: b\nc: \xff\n", "t.yaml:2:4: not valid YAML text: invalid leading UTF-8 octet",
                  NULL);
    const char nul[] = "a: b\0c";
    struct ledge_config c;
    _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
    assert_int_equal(config_load_string(nul, sizeof(nul) - 1, "t.yaml", &c, &e), -EINVAL);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.v[0], "t.yaml:1:5: not valid YAML text: control characters are not "
                                "allowed");
}

/* ---- derived values and cross-key checks ---- */

static void test_derived_paths(void **state)
{
    struct ledge_config c = load_ok("state_dir: /srv/ledge/\nrun_dir: /tmp/r\n");
    assert_string_equal(c.state_dir, "/srv/ledge/");
    assert_string_equal(c.hub.store_dir, "/srv/ledge/hub");
    assert_string_equal(c.vm.dir, "/srv/ledge/vm");
    assert_string_equal(c.management.socket, "/tmp/r/mgmt.sock");
    assert_string_equal(c.workload.dir, "/tmp/r/workload");
    assert_string_equal(c.hub.control_socket, "/tmp/r/hub.sock");
    config_free(&c);

    /* explicit values win, whatever the order in the file */
    c = load_ok("hub:\n  store_dir: /data/q\nstate_dir: /srv\nmanagement:\n  socket: /m.sock\n"
                "run_dir: /\n");
    assert_string_equal(c.hub.store_dir, "/data/q");
    assert_string_equal(c.vm.dir, "/srv/vm");
    assert_string_equal(c.management.socket, "/m.sock");
    assert_string_equal(c.hub.control_socket, "/hub.sock");
    config_free(&c);

    /* a run_dir too long for the sockets under it is blamed on run_dir */
    char yaml[256];
    snprintf(yaml, sizeof(yaml), "run_dir: /%0100d\nmanagement:\n  socket: /m.sock\n", 0);
    expect_errors(yaml,
                  "t.yaml:1: run_dir: is too long: hub.control_socket under it would exceed 107 "
                  "bytes (the unix socket limit)",
                  NULL);

    /* device names */
    c = load_ok("device:\n  id: Edge_01\n");
    assert_string_equal(c.device.iothub_hostname, "local.ledge"); /* '_' is no host name */
    config_free(&c);
    c = load_ok("device:\n  id: edge-01\n  gateway_hostname: gw.example.com\n");
    assert_string_equal(c.device.iothub_hostname, "edge-01.local.ledge");
    assert_string_equal(c.device.gateway_hostname, "gw.example.com");
    config_free(&c);
}

/* the registry proxy (docs/registry-proxy.md) */
static void test_registry_proxy(void **state)
{
    (void)state;
    struct ledge_config c = load_ok("");
    assert_null(c.registry_proxy.listen);
    assert_null(c.registry_proxy.target);
    assert_int_equal(c.registry_proxy.max_connections, 32);
    assert_int_equal(c.registry_proxy.idle_timeout_ms, 60000);
    config_free(&c);
    c = load_ok("registry_proxy:\n  listen: 0.0.0.0:5443\n  target: https://r.example.com:5000\n"
                "  max_connections: 4\n");
    assert_string_equal(c.registry_proxy.listen, "0.0.0.0:5443");
    assert_string_equal(c.registry_proxy.target, "https://r.example.com:5000");
    assert_int_equal(c.registry_proxy.max_connections, 4);
    config_free(&c);
    c = load_ok("registry_proxy:\n  listen: 127.0.0.1:5443\n  target: http://127.0.0.1:5000/\n");
    config_free(&c);
    expect_errors("registry_proxy:\n  listen: 0.0.0.0:5443\n",
                  "t.yaml:2: registry_proxy.target: is required with registry_proxy.listen", NULL);
    expect_errors("registry_proxy:\n  target: https://r.example.com\n",
                  "t.yaml:2: registry_proxy.listen: is required with registry_proxy.target", NULL);
    expect_errors("registry_proxy:\n  listen: 0.0.0.0:5443\n  target: https://$upstream:443\n",
                  "t.yaml:3: registry_proxy.target: names $upstream: upstream.parent (the parent "
                  "ledge's host name) is required",
                  NULL);
    expect_errors("registry_proxy:\n  listen: 0.0.0.0:5443\n  target: ftp://r/v2\n",
                  "t.yaml:3: registry_proxy.target: \"ftp://r/v2\" is not a registry URL "
                  "(https://HOST[:PORT], no path)",
                  NULL);
    expect_errors("registry_proxy:\n  listen: 0.0.0.0:5443\n  target: https://r/v2\n",
                  "t.yaml:3: registry_proxy.target: \"https://r/v2\" is not a registry URL "
                  "(https://HOST[:PORT], no path)",
                  NULL);
}

static void test_cross_checks(void **state)
{
    expect_errors("agent:\n  backoff_base: 10m\n  backoff_max: 1m\n",
                  "t.yaml:2: agent.backoff_base: agent.backoff_base (10m) is longer than "
                  "agent.backoff_max (1m)",
                  NULL);
    expect_errors("agent:\n  backoff_max: 1s\n",
                  "t.yaml:2: agent.backoff_max: agent.backoff_base (10s) is longer than "
                  "agent.backoff_max (1s)",
                  NULL);
    expect_errors("certificates:\n  ca_cert: /ca.pem\n",
                  "t.yaml:2: certificates.ca_key: is required with certificates.ca_cert", NULL);
    expect_errors("certificates:\n  ca_key: /ca.key\n  ca_chain: /chain.pem\n",
                  "t.yaml:2: certificates.ca_cert: is required with certificates.ca_key",
                  "t.yaml:3: certificates.ca_chain: needs certificates.ca_cert and "
                  "certificates.ca_key",
                  NULL);
    struct ledge_config c =
        load_ok("certificates:\n  ca_cert: /ca.pem\n  ca_key: /ca.key\n  ca_chain: /c.pem\n"
                "  cert_lifetime: 365d\n");
    assert_string_equal(c.certificates.ca_chain, "/c.pem");
    config_free(&c);
    expect_errors("certificates:\n  cert_lifetime: 365d\n",
                  "t.yaml:2: certificates.cert_lifetime: certificates.cert_lifetime (365d) is "
                  "longer than certificates.ca_lifetime (90d)",
                  NULL);
    expect_errors("certificates:\n  renew_before: 30d\n",
                  "t.yaml:2: certificates.renew_before: 30d is not shorter than "
                  "certificates.cert_lifetime (30d)",
                  NULL);
    expect_errors("hub:\n  plain_port: 8883\n",
                  "t.yaml:2: hub.plain_port: must differ from hub.tls_port (8883)", NULL);
    expect_errors("hub:\n  websocket_port: 8883\n",
                  "t.yaml:2: hub.websocket_port: must differ from hub.tls_port (8883) and "
                  "hub.plain_port (0)",
                  NULL);
    expect_errors("hub:\n  amqp_port: 443\n",
                  "t.yaml:2: hub.amqp_port: must differ from hub.tls_port (8883), hub.plain_port "
                  "(0) and hub.websocket_port (443)",
                  NULL);
    expect_errors("upstream:\n  enabled: true\n",
                  "t.yaml:2: upstream.host: is required when upstream.enabled is true and the "
                  "device has no IoT hub identity (device.key, device.connection_string or "
                  "device.x509)",
                  NULL);
    c = load_ok("upstream:\n  enabled: true\n  host: broker.example.com\n");
    assert_string_equal(c.upstream.host, "broker.example.com");
    config_free(&c);
    c = load_ok("device:\n  id: d\n  iothub_hostname: h.example.net\n  key: " KEY "\n"
                "upstream:\n  enabled: true\n");
    assert_string_equal(c.upstream.host, "h.example.net");
    config_free(&c);
    /* upstream.parent: the parent ledge is the upstream, IoT Hub's protocol on */
    c = load_ok("device:\n  id: child\n  iothub_hostname: h.example.net\n  key: " KEY "\n"
                "upstream:\n  parent: 10.0.0.1\n  ca_file: /p.pem\n");
    assert_true(c.upstream.enabled);
    assert_true(c.upstream.iothub);
    assert_string_equal(c.upstream.parent, "10.0.0.1");
    assert_string_equal(c.upstream.host, "10.0.0.1");
    config_free(&c);
    c = load_ok("device:\n  id: child\n  iothub_hostname: h.example.net\n  key: " KEY "\n"
                "upstream:\n  parent: parent.local\n  host: PARENT.local\n  tls: false\n");
    assert_true(c.upstream.iothub);
    config_free(&c);
    expect_errors("upstream:\n  parent: p.local\n  host: other.local\n  enabled: false\n"
                  "  iothub: false\n",
                  "t.yaml:3: upstream.host: \"other.local\" differs from upstream.parent "
                  "(\"p.local\"): leave it out, the parent is the upstream",
                  "t.yaml:4: upstream.enabled: cannot be false with upstream.parent (the parent "
                  "is the upstream)",
                  "t.yaml:5: upstream.iothub: cannot be false with upstream.parent: a parent "
                  "ledge speaks IoT Hub's protocol",
                  "t.yaml:2: upstream.parent: needs a SAS device identity (device.key or "
                  "device.connection_string) that the parent knows: `ledge device add <this "
                  "device>` on the parent prints it",
                  "t.yaml:2: upstream.ca_file: is required with upstream.parent: the parent's "
                  "trust bundle (`ledge device trust-bundle` on the parent), which signs its "
                  "hub's certificate",
                  NULL);
    /* per-key errors and cross-key errors in one report */
    expect_errors("agent:\n  backoff_base: 10m\n  backoff_max: 1m\n  max_restarts: x\n",
                  "t.yaml:4: agent.max_restarts: \"x\" is not an integer",
                  "t.yaml:2: agent.backoff_base: agent.backoff_base (10m) is longer than "
                  "agent.backoff_max (1m)",
                  NULL);
}

/* ---- files ---- */

static void test_files(void **state)
{
    char dir[] = "/tmp/test-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/config.yaml", dir);
    struct ledge_config c;

    /* absent */
    _cleanup_lstrv_ struct lstrv e = LSTRV_INIT;
    assert_int_equal(config_load_file(path, &c, &e), -ENOENT);
    assert_int_equal(e.n, 1);
    char want[256];
    snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", path);
    assert_string_equal(e.v[0], want);
    _cleanup_lstrv_ struct lstrv e2 = LSTRV_INIT;
    assert_int_equal(config_load_file_or_defaults(path, &c, &e2), 1);
    assert_int_equal(e2.n, 0);
    check_defaults(&c);
    config_free(&c);

    /* present: errors name the file */
    FILE *f = fopen(path, "w");
    fputs("hub:\n  tls_port: 0\n", f);
    fclose(f);
    _cleanup_lstrv_ struct lstrv e3 = LSTRV_INIT;
    assert_int_equal(config_load_file_or_defaults(path, &c, &e3), -EINVAL);
    snprintf(want, sizeof(want), "%s:2: hub.tls_port: 0 is out of range (1..65535)", path);
    assert_int_equal(e3.n, 1);
    assert_string_equal(e3.v[0], want);

    f = fopen(path, "w");
    fputs("hub:\n  tls_port: 1\n", f);
    fclose(f);
    _cleanup_lstrv_ struct lstrv e4 = LSTRV_INIT;
    assert_int_equal(config_load_file_or_defaults(path, &c, &e4), 0);
    assert_int_equal(c.hub.tls_port, 1);
    config_free(&c);

    /* too large */
    f = fopen(path, "w");
    for (int i = 0; i < CONFIG_MAX_FILE_SIZE / 8 + 1; i++)
        fputs("#######\n", f);
    fclose(f);
    _cleanup_lstrv_ struct lstrv e5 = LSTRV_INIT;
    assert_int_equal(config_load_file(path, &c, &e5), -EFBIG);
    snprintf(want, sizeof(want), "%s: is larger than 1 MiB", path);
    assert_string_equal(e5.v[0], want);

    /* a directory, and a FIFO */
    _cleanup_lstrv_ struct lstrv e6 = LSTRV_INIT;
    assert_int_equal(config_load_file(dir, &c, &e6), -EISDIR);
    snprintf(want, sizeof(want), "%s: cannot read: Is a directory", dir);
    assert_string_equal(e6.v[0], want);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkfifo(path, 0600), 0);
    /* with no writer: must not block */
    _cleanup_lstrv_ struct lstrv e7 = LSTRV_INIT;
    assert_int_equal(config_load_file(path, &c, &e7), -EINVAL);
    snprintf(want, sizeof(want), "%s: is not a regular file", path);
    assert_string_equal(e7.v[0], want);
    unlink(path);
    rmdir(dir);
}

/* ---- JSON ---- */

static void test_json_roundtrip(void **state)
{
    /* to_json(c, false) is itself valid config (JSON is YAML) that loads to the same settings,
     * identity aside (a connection string comes back as a key). */
    static const char *const files[] = {
        "",
        "state_dir: /s\nagent:\n  backoff_base: 1.5s\nhub:\n  fsync: interval\n"
        "certificates:\n  renew_before: 36h\n  extra_names: [a.example, \"::1\"]\n",
        "device:\n  connection_string: \"HostName=h.net;DeviceId=d;SharedAccessKey=" KEY "\"\n"
        "upstream:\n  enabled: true\n",
    };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        struct ledge_config c = load_ok(files[i]);
        _cleanup_json_ json_t *j = config_to_json(&c, false);
        assert_non_null(j);
        json_object_del(json_object_get(j, "device"), "identity");
        _cleanup_free_ char *text = json_dumps(j, JSON_INDENT(2));
        struct ledge_config c2 = load_ok(text);
        _cleanup_json_ json_t *j2 = config_to_json(&c2, false);
        json_object_del(json_object_get(j2, "device"), "identity");
        assert_true(json_equal(j, j2));
        config_free(&c);
        config_free(&c2);
    }

    struct ledge_config c = load_ok("agent:\n  backoff_base: 1.5s\n");
    _cleanup_json_ json_t *j = config_to_json(&c, true);
    json_t *agent = json_object_get(j, "agent");
    assert_string_equal(json_string_value(json_object_get(agent, "backoff_base")), "1500ms");
    assert_int_equal(json_integer_value(json_object_get(agent, "max_restarts")), 20);
    json_t *hub = json_object_get(j, "hub");
    assert_string_equal(json_string_value(json_object_get(hub, "max_packet_size")), "256KiB");
    assert_true(json_is_true(json_object_get(json_object_get(j, "upstream"), "tls")));
    assert_string_equal(json_string_value(json_object_get(j, "log_level")), "info");
    config_free(&c);

    assert_string_equal(config_log_level_name(CONFIG_LOG_TRACE), "trace");
    assert_string_equal(config_identity_name(CONFIG_IDENTITY_X509), "x509");
    assert_string_equal(config_identity_name((enum config_identity)42), "?");
}

static void test_quote(void **state)
{
    struct lbuf b = LBUF_INIT;
    cfg_quote(&b, "a\"b\\c\n\x7f\xc3\xa9");
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\x0a\\x7f\\xc3\\xa9\"");
    lbuf_reset(&b);
    char longs[100];
    memset(longs, 'x', sizeof(longs) - 1);
    longs[99] = 0;
    cfg_quote(&b, longs);
    assert_int_equal(b.len, 60 + 2 + 3);
    assert_true(lstr_endswith(b.data, "xxx...\""));
    lbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_table_defaults_parse),
        cmocka_unit_test(test_empty_means_defaults),
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_good_values),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_bad_values_messages),
        cmocka_unit_test(test_type_values_stored),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_all_problems_reported),
        cmocka_unit_test(test_identity_key),
        cmocka_unit_test(test_identity_x509),
        cmocka_unit_test(test_connection_string),
        cmocka_unit_test(test_secrets_never_shown),
        cmocka_unit_test(test_yaml_features_rejected),
        cmocka_unit_test(test_yaml_syntax_errors),
        cmocka_unit_test(test_derived_paths),
        cmocka_unit_test(test_cross_checks),
        cmocka_unit_test(test_registry_proxy),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_json_roundtrip),
        cmocka_unit_test(test_quote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
