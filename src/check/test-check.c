/* test-check.c — unit tests for `ledge check`: every check driven to each result it can give,
 * with injected inputs only — host files written to a temporary tree and named in the config's
 * check section, a small fake Docker Engine API on a unix socket, a fake NTP server on
 * loopback, certificates made here with OpenSSL — plus the pure parsers behind the checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "engine/oci.h"
#include "base/timeutil.h"
#include "agent/manifest.h"
#include "check/check.h"
#include "vm/def.h"
#include "vm/qemu.h"

/* ------------------------------------------------------------------ fixtures */

struct fake_route {
    const char *path; /* decoded request path, without the query */
    int status;
    const char *body;
};

#define MAX_ROUTES 16

struct fake_engine {
    char sock[200];
    int lfd;
    pthread_t thread;
    volatile int stop;
    struct fake_route routes[MAX_ROUTES];
    size_t n_routes;
    pthread_mutex_t lock;
    char last_auth[1024]; /* X-Registry-Auth of the last request that had one */
    int requests;
};

struct fake_ntp {
    int fd;
    uint16_t port;
    pthread_t thread;
    volatile int stop;
    int64_t offset_ms; /* the server's clock minus ours */
    uint8_t stratum;
    bool wrong_origin; /* echo a different originate timestamp */
};

struct T {
    char dir[64];
    struct ledge_config cfg;
    struct check_inputs in;
    struct check_deployment dep;
    struct check_module mods[4];
    struct fake_engine *eng;
    struct fake_ntp *ntp;
    struct check_report rep;
    struct lstrv errors;
};

static char *path_in(struct T *t, const char *name)
{
    char *p = lstr_printf("%s/%s", t->dir, name);
    assert_non_null(p);
    return p;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void write_in(struct T *t, const char *name, const char *text)
{
    char *p = path_in(t, name);
    write_file(p, text);
    free(p);
}

static void set_str(char **field, const char *value)
{
    free(*field);
    *field = value ? strdup(value) : NULL;
}

static void set_path(struct T *t, char **field, const char *name)
{
    free(*field);
    *field = path_in(t, name);
}

static int setup(void **state)
{
    struct T *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    strcpy(t->dir, "/tmp/ledge-check-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    assert_int_equal(config_defaults(&t->cfg), 0);
    char *p;
    assert_int_equal(mkdir((p = path_in(t, "state")), 0700), 0);
    free(p);
    assert_int_equal(mkdir((p = path_in(t, "dmi")), 0755), 0);
    free(p);
    assert_int_equal(mkdir((p = path_in(t, "cgroup")), 0755), 0);
    free(p);
    set_path(t, &t->cfg.state_dir, "state");
    set_path(t, &t->cfg.check.os_release, "os-release");
    set_path(t, &t->cfg.check.meminfo, "meminfo");
    set_path(t, &t->cfg.check.cpuinfo, "cpuinfo");
    set_path(t, &t->cfg.check.dmi_dir, "dmi");
    set_path(t, &t->cfg.check.kvm_device, "kvm");
    set_path(t, &t->cfg.check.cgroup_dir, "cgroup");
    set_path(t, &t->cfg.check.engine_config, "daemon.json");
    char *uri = lstr_printf("unix://%s/docker.sock", t->dir);
    set_str(&t->cfg.engine.uri, uri);
    free(uri);
    set_str(&t->cfg.check.ntp_server, "127.0.0.1");
    t->cfg.check.ntp_timeout_ms = 300;
    set_str(&t->cfg.device.gateway_hostname, "edge-gw.local");
    t->in = (struct check_inputs){
        .config = &t->cfg,
        .config_path = "/etc/ledge/config.yaml",
        .config_status = 0,
        .config_errors = &t->errors,
        .no_deployment = "no deployment has been applied",
        .hostname = "edge-1",
        .machine = "x86_64",
        .engine_timeout_ms = 3000,
    };
    p = path_in(t, "marker");
    t->in.container_marker = p; /* absent until a test creates it; freed in teardown */
    t->dep = (struct check_deployment){.source = "file test.json", .modules = t->mods};
    *state = t;
    return 0;
}

static void fake_engine_stop(struct fake_engine *e);
static void fake_ntp_stop(struct fake_ntp *n);

static int teardown(void **state)
{
    struct T *t = *state;
    if (t->eng)
        fake_engine_stop(t->eng);
    if (t->ntp)
        fake_ntp_stop(t->ntp);
    check_report_clear(&t->rep);
    config_free(&t->cfg);
    lstrv_free(&t->errors);
    free((char *)t->in.container_marker);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s; rm -rf %s", t->dir, t->dir);
    assert_int_equal(system(cmd), 0);
    free(t);
    return 0;
}

/* Run one check by id into t->rep; returns the result. */
static enum check_result run(struct T *t, const char *id)
{
    const struct check_def *def = check_find(id);
    assert_non_null(def);
    struct check_ctx *ctx = NULL;
    assert_int_equal(check_ctx_new(&t->in, &ctx), 0);
    check_report_clear(&t->rep);
    check_run(ctx, def, &t->rep);
    check_ctx_free(ctx);
    assert_non_null(t->rep.message);
    return t->rep.result;
}

static void assert_msg(struct T *t, const char *needle)
{
    if (!strstr(t->rep.message, needle)) {
        print_error("message \"%s\" lacks \"%s\"\n", t->rep.message, needle);
        fail();
    }
}

static void assert_fix(struct T *t, const char *needle)
{
    assert_non_null(t->rep.fix);
    if (!strstr(t->rep.fix, needle)) {
        print_error("fix \"%s\" lacks \"%s\"\n", t->rep.fix, needle);
        fail();
    }
}

/* ------------------------------------------------------------------ fake engine */

static void url_decode_path(const char *in, size_t n, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < size; i++) {
        if (in[i] == '%' && i + 2 < n) {
            char hex[3] = {in[i + 1], in[i + 2], 0};
            out[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = 0;
}

static void serve_one(struct fake_engine *e, int fd)
{
    char req[8192];
    size_t len = 0;
    while (len < sizeof(req) - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2000) <= 0)
            return;
        ssize_t r = read(fd, req + len, sizeof(req) - 1 - len);
        if (r <= 0)
            return;
        len += (size_t)r;
        req[len] = 0;
        if (strstr(req, "\r\n\r\n"))
            break;
    }
    char *sp = strchr(req, ' ');
    if (!sp)
        return;
    char *target = sp + 1, *end = strpbrk(target, " ?");
    if (!end)
        return;
    char path[1024];
    url_decode_path(target, (size_t)(end - target), path, sizeof(path));
    /* The engine layer speaks the negotiated version: /v1.41/images/... is /images/... here. */
    unsigned maj, min;
    int skip = 0;
    if (sscanf(path, "/v%u.%u%n", &maj, &min, &skip) == 2 && skip > 0 && path[skip] == '/')
        memmove(path, path + skip, strlen(path + skip) + 1);
    pthread_mutex_lock(&e->lock);
    e->requests++;
    char *auth = strcasestr(req, "\r\nX-Registry-Auth: ");
    if (auth) {
        auth += strlen("\r\nX-Registry-Auth: ");
        size_t n = strcspn(auth, "\r");
        snprintf(e->last_auth, sizeof(e->last_auth), "%.*s", (int)n, auth);
    }
    int status = 404;
    const char *body = "{\"message\":\"no such route\"}";
    for (size_t i = 0; i < e->n_routes; i++)
        if (strcmp(e->routes[i].path, path) == 0) {
            status = e->routes[i].status;
            body = e->routes[i].body;
        }
    pthread_mutex_unlock(&e->lock);
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: "
                      "%zu\r\nConnection: close\r\n\r\n",
                      status, strlen(body));
    if (write(fd, head, (size_t)hn) < 0 || write(fd, body, strlen(body)) < 0)
        return;
}

static void *fake_engine_main(void *ud)
{
    struct fake_engine *e = ud;
    while (!e->stop) {
        struct pollfd p = {.fd = e->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept4(e->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        serve_one(e, fd);
        close(fd);
    }
    return NULL;
}

static struct fake_engine *fake_engine_start(struct T *t)
{
    struct fake_engine *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    snprintf(e->sock, sizeof(e->sock), "%s/docker.sock", t->dir);
    pthread_mutex_init(&e->lock, NULL);
    e->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(e->lfd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, e->sock);
    assert_int_equal(bind(e->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(e->lfd, 16), 0);
    assert_int_equal(pthread_create(&e->thread, NULL, fake_engine_main, e), 0);
    t->eng = e;
    return e;
}

static void fake_engine_route(struct fake_engine *e, const char *path, int status, const char *body)
{
    pthread_mutex_lock(&e->lock);
    for (size_t i = 0; i < e->n_routes; i++)
        if (strcmp(e->routes[i].path, path) == 0) {
            e->routes[i].status = status;
            e->routes[i].body = body;
            pthread_mutex_unlock(&e->lock);
            return;
        }
    assert_true(e->n_routes < MAX_ROUTES);
    e->routes[e->n_routes++] = (struct fake_route){path, status, body};
    pthread_mutex_unlock(&e->lock);
}

static void fake_engine_stop(struct fake_engine *e)
{
    e->stop = 1;
    pthread_join(e->thread, NULL);
    close(e->lfd);
    unlink(e->sock);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

#define VERSION_MOBY                                                                               \
    "{\"Platform\":{\"Name\":\"\"},\"Components\":[{\"Name\":\"Engine\"}],\"Version\":"            \
    "\"20.10.24+dfsg1\",\"ApiVersion\":\"1.41\",\"MinAPIVersion\":\"1.12\",\"Os\":\"linux\","      \
    "\"Arch\":\"amd64\",\"KernelVersion\":\"6.1.0\"}"

/* A Moby engine answering /version and /info. */
static struct fake_engine *moby(struct T *t)
{
    struct fake_engine *e = fake_engine_start(t);
    fake_engine_route(e, "/version", 200, VERSION_MOBY);
    fake_engine_route(e, "/info", 200, "{\"LoggingDriver\":\"json-file\",\"CgroupVersion\":\"2\"}");
    return e;
}

/* ------------------------------------------------------------------ fake NTP server */

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void *fake_ntp_main(void *ud)
{
    struct fake_ntp *n = ud;
    while (!n->stop) {
        struct pollfd p = {.fd = n->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        uint8_t req[64];
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t got = recvfrom(n->fd, req, sizeof(req), 0, (struct sockaddr *)&from, &fl);
        if (got < 48)
            continue;
        uint8_t resp[48] = {0};
        resp[0] = (0 << 6) | (4 << 3) | 4;
        resp[1] = n->stratum;
        memcpy(resp + 24, req + 40, 8); /* originate = the client's transmit */
        if (n->wrong_origin)
            resp[31] ^= 0xff;
        uint64_t ts = check_ntp_timestamp(ltime_now_ms() + n->offset_ms);
        put64(resp + 32, ts);
        put64(resp + 40, ts);
        sendto(n->fd, resp, sizeof(resp), 0, (struct sockaddr *)&from, fl);
    }
    return NULL;
}

static struct fake_ntp *fake_ntp_start(struct T *t, int64_t offset_ms, uint8_t stratum)
{
    struct fake_ntp *n = calloc(1, sizeof(*n));
    assert_non_null(n);
    n->offset_ms = offset_ms;
    n->stratum = stratum;
    n->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(n->fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(n->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(n->fd, (struct sockaddr *)&sa, &sl), 0);
    n->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&n->thread, NULL, fake_ntp_main, n), 0);
    t->ntp = n;
    t->in.ntp_port = n->port;
    return n;
}

static void fake_ntp_stop(struct fake_ntp *n)
{
    n->stop = 1;
    pthread_join(n->thread, NULL);
    close(n->fd);
    free(n);
}

/* ------------------------------------------------------------------ certificates */

/* A self-signed EC (P-256) certificate for cn, valid from now+from_s to now+to_s, written with
 * its key as PEM; san ("DNS:x,IP:1.2.3.4") or NULL for none. */
static void write_cert_san(const char *path, const char *cn, long from_s, long to_s,
                           const char *san)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    if (san) {
        X509V3_CTX v3;
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        assert_non_null(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    PEM_write_X509(f, x);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void write_cert(const char *path, const char *cn, long from_s, long to_s)
{
    write_cert_san(path, cn, from_s, to_s, NULL);
}

static char *certs_dir(struct T *t)
{
    char *d = path_in(t, "state/certs");
    mkdir(d, 0700);
    return d;
}

/* ------------------------------------------------------------------ table and runner */

static void test_table(void **state)
{
    size_t n;
    const struct check_def *defs = check_table(&n);
    assert_true(n >= 20);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(defs[i].id);
        assert_non_null(defs[i].description);
        assert_non_null(defs[i].run);
        assert_ptr_equal(check_find(defs[i].id), &defs[i]);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(defs[i].id, defs[j].id);
    }
    assert_null(check_find("nope"));
    assert_string_equal(check_result_name(CHECK_OK), "ok");
    assert_string_equal(check_result_name(CHECK_WARNING), "warning");
    assert_string_equal(check_result_name(CHECK_ERROR), "error");
    assert_string_equal(check_result_name(CHECK_SKIPPED), "skipped");
    assert_string_equal(check_result_name((enum check_result)9), "?");

    struct check_report rep = {.result = CHECK_WARNING, .message = strdup("m"), .fix = NULL};
    json_t *j = check_report_json(check_find("memory"), &rep);
    assert_string_equal(ljson_str(j, "id"), "memory");
    assert_string_equal(ljson_str(j, "result"), "warning");
    assert_string_equal(ljson_str(j, "message"), "m");
    assert_true(json_is_null(json_object_get(j, "fix"))); /* every object has the same keys */
    json_decref(j);
    check_report_clear(&rep);
    assert_null(rep.message);
}

static void test_config_file(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "config-file"), CHECK_OK);
    assert_msg(t, "/etc/ledge/config.yaml is valid");

    t->in.config_status = 1;
    assert_int_equal(run(t, "config-file"), CHECK_WARNING);
    assert_msg(t, "does not exist: ledged runs with the defaults");
    assert_fix(t, "template");

    t->in.config_status = -EINVAL;
    lstrv_push(&t->errors,
               "/etc/ledge/config.yaml:3: devce: unknown key (did you mean \"device\"?)");
    lstrv_push(&t->errors, "/etc/ledge/config.yaml:9: agent.backoff_max: bad");
    assert_int_equal(run(t, "config-file"), CHECK_ERROR);
    assert_msg(t, "config.yaml:3: devce: unknown key");
    assert_msg(t, "\n/etc/ledge/config.yaml:9: agent.backoff_max");
    assert_fix(t, "docs/configuration.md");

    /* checks that need a valid configuration are skipped; host checks still run */
    assert_int_equal(run(t, "state-dir"), CHECK_SKIPPED);
    assert_msg(t, "the configuration file is not valid (see config-file)");
    assert_int_equal(run(t, "engine"), CHECK_SKIPPED);
    write_in(t, "meminfo", "MemAvailable: 4194304 kB\n");
    assert_int_equal(run(t, "memory"), CHECK_OK);

    t->in.config_status = -ENOENT;
    lstrv_free(&t->errors);
    assert_int_equal(run(t, "config-file"), CHECK_ERROR);
    assert_msg(t, "No such file");
}

static void test_state_dir(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "state-dir"), CHECK_OK);
    assert_msg(t, "is writable (");
    assert_msg(t, "free)");

    char *p = path_in(t, "state");
    chmod(p, 0755);
    assert_int_equal(run(t, "state-dir"), CHECK_WARNING);
    assert_msg(t, "its mode is 0755");
    assert_fix(t, "chmod 0700");
    free(p);

    set_path(t, &t->cfg.state_dir, "state/not/yet");
    assert_int_equal(run(t, "state-dir"), CHECK_WARNING);
    assert_msg(t, "does not exist yet; ledged creates it");

    write_in(t, "afile", "x");
    set_path(t, &t->cfg.state_dir, "afile");
    assert_int_equal(run(t, "state-dir"), CHECK_ERROR);
    assert_msg(t, "afile is not a directory");

    set_path(t, &t->cfg.state_dir, "afile/below");
    assert_int_equal(run(t, "state-dir"), CHECK_ERROR);
    assert_msg(t, "Not a directory");

    if (geteuid() != 0) { /* root writes anywhere */
        char *ro = path_in(t, "ro");
        mkdir(ro, 0500);
        set_str(&t->cfg.state_dir, ro);
        assert_int_equal(run(t, "state-dir"), CHECK_ERROR);
        assert_msg(t, "is not writable by uid");
        free(ro);
    }
}

static void test_hostname(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "hostname"), CHECK_OK);
    assert_msg(t, "host name \"edge-1\" and device.gateway_hostname \"edge-gw.local\" are valid");

    t->in.hostname = "edge_1";
    assert_int_equal(run(t, "hostname"), CHECK_ERROR);
    assert_msg(t, "the host name \"edge_1\" contains '_'");
    assert_fix(t, "hostnamectl");

    t->in.hostname = "edge-1";
    set_str(&t->cfg.device.gateway_hostname,
            "a-very-long-gateway-host-name-that-goes-on.and-on-and-on.example.com");
    assert_int_equal(run(t, "hostname"), CHECK_ERROR);
    assert_msg(t, "device.gateway_hostname");
    assert_msg(t, "characters long (at most 64)");

    set_str(&t->cfg.device.gateway_hostname, "edge-1");
    assert_int_equal(run(t, "hostname"), CHECK_OK);
    assert_msg(t, "host name \"edge-1\" is valid");

    /* the real host name: ok exactly when it is a valid one */
    t->in.hostname = NULL;
    set_str(&t->cfg.device.gateway_hostname, NULL);
    char host[256] = "", want[300];
    assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
    struct lerr why = {0};
    if (check_hostname_valid(host, &why) == 0) {
        assert_int_equal(run(t, "hostname"), CHECK_OK);
        snprintf(want, sizeof(want), "host name \"%s\" is valid", host);
        assert_msg(t, want);
    } else {
        assert_int_equal(run(t, "hostname"), CHECK_ERROR);
        assert_msg(t, why.msg);
    }
}

static void test_hostname_rules(void **state)
{
    struct lerr why = {0};
    assert_int_equal(check_hostname_valid("a", &why), 0);
    assert_int_equal(check_hostname_valid("edge-1.example.com", &why), 0);
    assert_int_equal(check_hostname_valid("9up", &why), 0);
    assert_int_equal(check_hostname_valid("", &why), -EINVAL);
    assert_string_equal(why.msg, "is empty");
    assert_int_equal(check_hostname_valid("-a", &why), -EINVAL);
    assert_string_equal(why.msg, "has a label starting with '-'");
    assert_int_equal(check_hostname_valid("a-.b", &why), -EINVAL);
    assert_string_equal(why.msg, "has a label ending with '-'");
    assert_int_equal(check_hostname_valid("a..b", &why), -EINVAL);
    assert_string_equal(why.msg, "has an empty label");
    assert_int_equal(check_hostname_valid("a.", &why), -EINVAL);
    assert_int_equal(check_hostname_valid("a b", &why), -EINVAL);
    char label[70];
    memset(label, 'a', 64);
    label[64] = 0;
    assert_int_equal(check_hostname_valid(label, &why), -EINVAL);
    assert_string_equal(why.msg, "has a label longer than 63 characters");
    label[63] = 0;
    assert_int_equal(check_hostname_valid(label, &why), 0);
}

static void test_os(void **state)
{
    struct T *t = *state;
    write_in(t, "os-release",
             "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n"
             "VERSION_ID=\"12\"\nID=debian\n");
    assert_int_equal(run(t, "os"), CHECK_OK);
    assert_msg(t, "Debian GNU/Linux 12 (bookworm) on linux/amd64: tier 1");

    t->in.machine = "aarch64";
    assert_int_equal(run(t, "os"), CHECK_OK);
    assert_msg(t, "on linux/arm64: tier 2");
    t->in.machine = "armv7l";
    assert_int_equal(run(t, "os"), CHECK_OK);
    assert_msg(t, "on linux/arm/v7: tier 2");

    write_in(t, "os-release",
             "ID=raspbian\nID_LIKE=debian\nVERSION_ID=\"12\"\n"
             "PRETTY_NAME=\"Raspbian GNU/Linux 12 (bookworm)\"\n");
    assert_int_equal(run(t, "os"), CHECK_OK);
    assert_msg(t, "tier 2");
    t->in.machine = "armv6l"; /* Raspbian runs on ARMv6; Debian's armhf does not */
    assert_int_equal(run(t, "os"), CHECK_WARNING);
    assert_msg(t, "is not a supported system (Debian-based");

    t->in.machine = "x86_64";
    write_in(t, "os-release",
             "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n"
             "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\n");
    assert_int_equal(run(t, "os"), CHECK_WARNING);
    assert_msg(t, "Ubuntu 22.04.4 LTS on linux/amd64 is not a supported system");
    assert_msg(t, "tier 1 is Debian 12 on amd64");
    assert_fix(t, "docs/support.md");

    write_in(t, "os-release", "ID=fedora\nVERSION_ID=40\n");
    assert_int_equal(run(t, "os"), CHECK_WARNING);
    assert_msg(t, "fedora on linux/amd64 is not a supported system;");

    write_in(t, "os-release", "# nothing\n");
    assert_int_equal(run(t, "os"), CHECK_WARNING);
    assert_msg(t, "cannot identify the operating system");
    set_path(t, &t->cfg.check.os_release, "missing");
    assert_int_equal(run(t, "os"), CHECK_WARNING);
    assert_msg(t, "No such file");
}

static void test_os_release_parser(void **state)
{
    struct check_os os;
    const char *text = "# comment\n  ID=\"debian\"  \nID_LIKE='ubuntu debian'\n"
                       "PRETTY_NAME=\"A \\\"quoted\\\" name\"\nVERSION_ID=12\nBROKEN\n=x\n";
    assert_int_equal(check_parse_os_release(text, strlen(text), &os), 0);
    assert_string_equal(os.id, "debian");
    assert_string_equal(os.id_like, "ubuntu debian");
    assert_string_equal(os.pretty, "A \"quoted\" name");
    assert_string_equal(os.version_id, "12");
    /* only PRETTY_NAME: ID defaults to "linux" */
    assert_int_equal(check_parse_os_release("PRETTY_NAME=x", 13, &os), 0);
    assert_string_equal(os.id, "linux");
    assert_int_equal(check_parse_os_release("", 0, &os), -EINVAL);
    /* long values are cut, not overflowed */
    char big[600] = "ID=";
    memset(big + 3, 'x', 500);
    big[503] = 0;
    assert_int_equal(check_parse_os_release(big, strlen(big), &os), 0);
    assert_int_equal(strlen(os.id), sizeof(os.id) - 1);
    /* not NUL-terminated within n */
    assert_int_equal(check_parse_os_release("ID=abcdef", 5, &os), 0);
    assert_string_equal(os.id, "ab");
}

static void test_architecture(void **state)
{
    struct T *t = *state;
    t->in.machine = "x86_64";
    assert_int_equal(run(t, "architecture"), CHECK_OK);
    assert_msg(t, "linux/amd64: ledge is built and packaged for it");
    t->in.machine = "aarch64";
    assert_int_equal(run(t, "architecture"), CHECK_OK);
    t->in.machine = "armv7l";
    assert_int_equal(run(t, "architecture"), CHECK_OK);
    assert_msg(t, "(armhf)");
    t->in.machine = "armv6l";
    assert_int_equal(run(t, "architecture"), CHECK_WARNING);
    assert_msg(t, "need ARMv7");
    t->in.machine = "riscv64";
    assert_int_equal(run(t, "architecture"), CHECK_WARNING);
    assert_msg(t, "linux/riscv64: ledge is not built or tested");
    t->in.machine = "";
    assert_int_equal(run(t, "architecture"), CHECK_WARNING);
    assert_msg(t, "cannot tell");
}

static void test_memory(void **state)
{
    struct T *t = *state;
    write_in(t, "meminfo", "MemTotal:  8000000 kB\nMemFree: 10 kB\nMemAvailable:    2097152 kB\n");
    assert_int_equal(run(t, "memory"), CHECK_OK);
    assert_msg(t, "2.0 GiB of memory available (minimum 1.0 GiB)");

    write_in(t, "meminfo", "MemTotal:  8000000 kB\nMemAvailable:  524288 kB\n");
    assert_int_equal(run(t, "memory"), CHECK_WARNING);
    assert_msg(t, "512.0 MiB of memory available, less than the 1.0 GiB minimum");
    assert_fix(t, "check.min_free_memory");

    t->cfg.check.min_free_memory = 0;
    assert_int_equal(run(t, "memory"), CHECK_OK);

    write_in(t, "meminfo", "MemTotal:  8000000 kB\n");
    assert_int_equal(run(t, "memory"), CHECK_WARNING);
    assert_msg(t, "cannot read MemAvailable");
}

static void test_meminfo_parser(void **state)
{
    uint64_t v;
    assert_int_equal(check_parse_meminfo("MemAvailable: 1 kB\n", 19, &v), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(check_parse_meminfo("MemAvailable:\n", 14, &v), -EINVAL);
    assert_int_equal(check_parse_meminfo("MemAvailable: 99999999999999999999 kB", 37, &v), -ERANGE);
    assert_int_equal(check_parse_meminfo("MemAvail", 8, &v), -ENOENT);
}

static void test_disk(void **state)
{
    struct T *t = *state;
    t->cfg.check.min_free_disk = 0;
    assert_int_equal(run(t, "disk"), CHECK_OK);
    assert_msg(t, "state (");
    assert_msg(t, "engine data: unknown (the engine is not reachable)");

    t->cfg.check.min_free_disk = 64ULL << 40;
    assert_int_equal(run(t, "disk"), CHECK_WARNING);
    assert_msg(t, "less than the minimum 64.0 TiB");
    assert_fix(t, "check.min_free_disk");

    /* the engine's data root: on the same file system it is counted once */
    t->cfg.check.min_free_disk = 0;
    struct fake_engine *e = moby(t);
    char *root = path_in(t, "docker-root");
    mkdir(root, 0700);
    char info[512];
    snprintf(info, sizeof(info), "{\"LoggingDriver\":\"json-file\",\"DockerRootDir\":\"%s\"}",
             root);
    fake_engine_route(e, "/info", 200, info);
    assert_int_equal(run(t, "disk"), CHECK_OK);
    assert_msg(t, "engine data (");
    assert_msg(t, "same file system as the state");
    free(root);

    fake_engine_route(e, "/info", 200, "{\"DockerRootDir\":\"/nonexistent/docker\"}");
    assert_int_equal(run(t, "disk"), CHECK_OK);
    assert_msg(t, "not visible from here");
    fake_engine_route(e, "/info", 200, "{}");
    assert_int_equal(run(t, "disk"), CHECK_OK);
    assert_msg(t, "the engine did not say");
}

static void test_virtualization(void **state)
{
    struct T *t = *state;
    write_in(t, "cpuinfo", "processor\t: 0\nflags\t\t: fpu vme sse2 vmx\n");
    assert_int_equal(run(t, "virtualization"), CHECK_OK);
    assert_msg(t, "no hypervisor detected (bare metal)");

    write_in(t, "cpuinfo", "processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor\n");
    assert_int_equal(run(t, "virtualization"), CHECK_OK);
    assert_msg(t, "a virtual machine: supported like bare metal");
    assert_msg(t, "this VM's OS family (linux)");

    write_in(t, "dmi/sys_vendor", "Microsoft Corporation\n");
    write_in(t, "dmi/product_name", "Virtual Machine\n");
    assert_int_equal(run(t, "virtualization"), CHECK_OK);
    assert_msg(t, "a virtual machine on Hyper-V");

    write_in(t, "dmi/sys_vendor", "QEMU\n");
    write_in(t, "dmi/product_name", "Standard PC (Q35 + ICH9, 2009)\n");
    write_in(t, "cpuinfo", "flags : fpu\n");
    assert_int_equal(run(t, "virtualization"), CHECK_OK);
    assert_msg(t, "on QEMU/KVM");

    write_file(t->in.container_marker, "");
    assert_int_equal(run(t, "virtualization"), CHECK_WARNING);
    assert_msg(t, "running inside a container in a virtual machine on QEMU/KVM");
    assert_fix(t, "run ledge on the host");
}

static void test_cpuinfo_flags(void **state)
{
    const char *x86 = "processor : 0\nflags : fpu hypervisor vmx\nprocessor : 1\nflags : svm\n";
    assert_true(check_cpuinfo_has_flag(x86, strlen(x86), "hypervisor"));
    assert_true(check_cpuinfo_has_flag(x86, strlen(x86), "vmx"));
    assert_false(check_cpuinfo_has_flag(x86, strlen(x86), "svm")); /* first CPU only */
    assert_false(check_cpuinfo_has_flag(x86, strlen(x86), "hyper"));
    const char *arm = "processor : 0\nFeatures : fp asimd evtstrm\n";
    assert_true(check_cpuinfo_has_flag(arm, strlen(arm), "asimd"));
    assert_false(check_cpuinfo_has_flag("", 0, "fp"));
    assert_false(check_cpuinfo_has_flag("flags", 5, "fp"));
}

static bool real_kvm_usable(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

static void test_kvm(void **state)
{
    struct T *t = *state;
    write_in(t, "cpuinfo", "flags : fpu\n");
    assert_int_equal(run(t, "kvm"), CHECK_SKIPPED);
    assert_msg(t, "only `ledge vm` needs KVM");
    assert_fix(t, "VT-x/AMD-V");

    write_in(t, "cpuinfo", "flags : fpu hypervisor\n");
    assert_int_equal(run(t, "kvm"), CHECK_SKIPPED);
    assert_msg(t, "nested virtualisation is off");
    assert_fix(t, "ExposeVirtualizationExtensions");

    write_in(t, "kvm", "not a device");
    assert_int_equal(run(t, "kvm"), CHECK_WARNING);
    assert_msg(t, "does not speak the KVM API");

    set_str(&t->cfg.check.kvm_device, "/dev/null");
    assert_int_equal(run(t, "kvm"), CHECK_WARNING);
    assert_msg(t, "/dev/null exists but KVM is not usable");

    if (!real_kvm_usable())
        skip(); /* the ok result needs a real /dev/kvm */
    set_str(&t->cfg.check.kvm_device, "/dev/kvm");
    enum check_result r = run(t, "kvm");
    if (r != CHECK_OK)
        skip(); /* e.g. qemu-user does not pass KVM ioctls through */
    assert_msg(t, "KVM is usable inside this virtual machine: nested virtualisation works");
    write_in(t, "cpuinfo", "flags : fpu\n");
    assert_int_equal(run(t, "kvm"), CHECK_OK);
    assert_msg(t, "KVM is usable (/dev/kvm)");
}

static void test_cgroups(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "cgroups"), CHECK_ERROR);
    assert_msg(t, "no cgroup hierarchy at");

    char *p;
    mkdir((p = path_in(t, "cgroup/systemd")), 0755);
    free(p);
    mkdir((p = path_in(t, "cgroup/unified")), 0755);
    free(p);
    assert_int_equal(run(t, "cgroups"), CHECK_WARNING);
    assert_msg(t, "cgroup v1 (hybrid) without the memory controller");
    assert_fix(t, "cgroup_enable=memory");

    mkdir((p = path_in(t, "cgroup/memory")), 0755);
    free(p);
    assert_int_equal(run(t, "cgroups"), CHECK_WARNING);
    assert_msg(t, "cgroup v1 (hybrid): works");
    assert_fix(t, "systemd.unified_cgroup_hierarchy=0");

    write_in(t, "cgroup/cgroup.controllers", "cpuset cpu io pids\n");
    assert_int_equal(run(t, "cgroups"), CHECK_WARNING);
    assert_msg(t, "cgroup v2, but the memory controller is not available");

    write_in(t, "cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids\n");
    assert_int_equal(run(t, "cgroups"), CHECK_OK);
    assert_msg(t, "cgroup v2 (unified hierarchy) with the memory controller");
}

static void test_clock(void **state)
{
    struct T *t = *state;
    struct fake_ntp *n = fake_ntp_start(t, 0, 2);
    assert_int_equal(run(t, "clock"), CHECK_OK);
    assert_msg(t, "ms of 127.0.0.1");

    n->offset_ms = 60000; /* the server is a minute ahead: our clock is behind */
    assert_int_equal(run(t, "clock"), CHECK_WARNING);
    assert_msg(t, "s behind 127.0.0.1");
    assert_fix(t, "timedatectl set-ntp true");

    n->offset_ms = -3600000;
    assert_int_equal(run(t, "clock"), CHECK_ERROR);
    assert_msg(t, "s ahead of 127.0.0.1: certificates and tokens will be refused");

    n->offset_ms = 0;
    n->stratum = 0;
    assert_int_equal(run(t, "clock"), CHECK_WARNING);
    assert_msg(t, "kiss-o'-death");

    n->stratum = 2;
    n->wrong_origin = true; /* replies that do not answer us are ignored until the timeout */
    assert_int_equal(run(t, "clock"), CHECK_WARNING);
    assert_msg(t, "did not answer in time");
    assert_fix(t, "UDP port 123");

    fake_ntp_stop(n);
    t->ntp = NULL;
    assert_int_equal(run(t, "clock"), CHECK_WARNING); /* nothing listens: refused or timeout */
    assert_msg(t, "cannot compare the clock: NTP server 127.0.0.1:");

    set_str(&t->cfg.check.ntp_server, "ntp.invalid");
    assert_int_equal(run(t, "clock"), CHECK_WARNING);
    assert_msg(t, "NTP server ntp.invalid:");
}

static void test_ntp_parser(void **state)
{
    int64_t t1 = 1700000000000, off;
    uint64_t sent = check_ntp_timestamp(t1);
    uint8_t b[48] = {0};
    b[0] = (4 << 3) | 4;
    b[1] = 1;
    put64(b + 24, sent);
    put64(b + 32, check_ntp_timestamp(t1 + 5000));
    put64(b + 40, check_ntp_timestamp(t1 + 5000));
    assert_int_equal(check_ntp_parse_reply(b, 48, sent, t1, t1 + 20, &off), 0);
    assert_true(off >= 4985 && off <= 4995);
    assert_int_equal(check_ntp_parse_reply(b, 47, sent, t1, t1, &off), -EPROTO);
    assert_int_equal(check_ntp_parse_reply(b, 48, sent + 1, t1, t1, &off), -EPROTO);
    b[0] = (4 << 3) | 3; /* a client packet */
    assert_int_equal(check_ntp_parse_reply(b, 48, sent, t1, t1, &off), -EPROTO);
    b[0] = (3 << 6) | (4 << 3) | 4; /* alarm: unsynchronised */
    assert_int_equal(check_ntp_parse_reply(b, 48, sent, t1, t1, &off), -EPROTO);
    b[0] = (4 << 3) | 4;
    b[1] = 16;
    assert_int_equal(check_ntp_parse_reply(b, 48, sent, t1, t1, &off), -EPROTO);
    b[1] = 0;
    assert_int_equal(check_ntp_parse_reply(b, 48, sent, t1, t1, &off), -EAGAIN);
    b[1] = 1;
    memset(b + 40, 0, 8);
    assert_int_equal(check_ntp_parse_reply(b, 48, sent, t1, t1, &off), -EPROTO);
    /* after the 2036 era rollover */
    int64_t late = 2200000000000;
    uint64_t ls = check_ntp_timestamp(late);
    put64(b + 24, ls);
    put64(b + 32, check_ntp_timestamp(late));
    put64(b + 40, check_ntp_timestamp(late));
    assert_int_equal(check_ntp_parse_reply(b, 48, ls, late, late, &off), 0);
    assert_true(off >= -1 && off <= 1);
}

/* ------------------------------------------------------------------ engine */

static void test_engine(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "engine"), CHECK_ERROR);
    assert_msg(t, "no container engine socket at");
    assert_fix(t, "systemctl enable --now docker");
    assert_int_equal(run(t, "engine-version"), CHECK_SKIPPED);
    assert_int_equal(run(t, "engine-product"), CHECK_SKIPPED);
    assert_int_equal(run(t, "log-rotation"), CHECK_SKIPPED);
    assert_msg(t, "the container engine is not reachable (see engine)");

    /* a socket nobody listens on */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/docker.sock", t->dir);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    assert_int_equal(run(t, "engine"), CHECK_ERROR);
    assert_msg(t, "Connection refused");
    unlink(sa.sun_path);

    struct fake_engine *e = fake_engine_start(t);
    fake_engine_route(e, "/version", 200, "{\"hello\":1}");
    assert_int_equal(run(t, "engine"), CHECK_ERROR);
    assert_msg(t, "answered GET /version, but not as a Docker Engine API");
    fake_engine_route(e, "/version", 500, "oops");
    assert_int_equal(run(t, "engine"), CHECK_ERROR);
    assert_msg(t, "failed: engine version: engine answered 500");

    fake_engine_route(e, "/version", 200, VERSION_MOBY);
    assert_int_equal(run(t, "engine"), CHECK_OK);
    assert_msg(t, "Moby 20.10.24+dfsg1 (API 1.41, linux/amd64) at unix://");

    /* http:// engines are reached over TCP: nothing listens on this port */
    set_str(&t->cfg.engine.uri, "http://127.0.0.1:1");
    assert_int_equal(run(t, "engine"), CHECK_ERROR);
    assert_msg(t, "cannot reach the container engine at http://127.0.0.1:1");
}

static void test_engine_version(void **state)
{
    struct T *t = *state;
    struct fake_engine *e = moby(t);
    assert_int_equal(run(t, "engine-version"), CHECK_OK);
    assert_msg(t, "API 1.41 (ledge needs 1.41; no deployment to compare)");

    t->in.deployment = &t->dep;
    assert_int_equal(run(t, "engine-version"), CHECK_OK);
    assert_msg(t, "the deployment sets no minDockerVersion");
    t->dep.min_docker_version = "v1.25";
    assert_int_equal(run(t, "engine-version"), CHECK_OK);
    assert_msg(t, "meets ledge's minimum 1.41 and the deployment's minDockerVersion v1.25");

    t->dep.min_docker_version = "v1.43";
    assert_int_equal(run(t, "engine-version"), CHECK_ERROR);
    assert_msg(t, "the engine speaks API 1.41, older than the deployment's minDockerVersion v1.43 "
                  "(file test.json)");
    t->dep.min_docker_version = "latest";
    assert_int_equal(run(t, "engine-version"), CHECK_WARNING);
    assert_msg(t, "minDockerVersion \"latest\" is not an API version");

    fake_engine_route(e, "/version", 200,
                      "{\"Version\":\"19.03.1\",\"ApiVersion\":\"1.40\",\"Os\":\"linux\"}");
    assert_int_equal(run(t, "engine-version"), CHECK_ERROR);
    assert_msg(t, "the engine speaks API 1.40; ledge needs 1.41 or newer");
}

static void test_engine_product(void **state)
{
    struct T *t = *state;
    struct fake_engine *e = moby(t);
    assert_int_equal(run(t, "engine-product"), CHECK_OK);
    assert_msg(t, "Moby 20.10.24+dfsg1: the recommended engine");

    fake_engine_route(e, "/version", 200,
                      "{\"Platform\":{\"Name\":\"Docker Engine - Community\"},\"Version\":"
                      "\"24.0.7\",\"ApiVersion\":\"1.43\"}");
    assert_int_equal(run(t, "engine-product"), CHECK_WARNING);
    assert_msg(t, "Docker CE 24.0.7: compatible");
    assert_fix(t, "Moby");

    fake_engine_route(
        e, "/version", 200,
        "{\"Platform\":{\"Name\":\"linux/amd64/debian-12\"},\"Components\":[{"
        "\"Name\":\"Podman Engine\"}],\"Version\":\"4.3.1\",\"ApiVersion\":\"1.41\"}");
    assert_int_equal(run(t, "engine-product"), CHECK_WARNING);
    assert_msg(t, "Podman 4.3.1 through its Docker-compatible API");

    fake_engine_route(e, "/version", 200,
                      "{\"Platform\":{\"Name\":\"Docker Desktop 4.25\"},\"Version\":\"24\","
                      "\"ApiVersion\":\"1.43\"}");
    assert_int_equal(run(t, "engine-product"), CHECK_WARNING);
    assert_msg(t, "Docker Desktop 24");
}

/* The oci engine's requirements: skipped for the docker engine; the runtime engine.runtime names
 * (here a script answering --version as runc does, or as crun, whose verdict depends on this
 * host's cgroups), a missing or unknown one with the fix; the CNI plugins in engine.cni_path;
 * the kernel's part as this machine has it; the engine checks for ledge's own engine. */
static void test_oci_checks(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "oci-runtime"), CHECK_SKIPPED);
    assert_msg(t, "engine.type is docker: these are the oci engine's requirements");
    assert_int_equal(run(t, "oci-kernel"), CHECK_SKIPPED);
    assert_int_equal(run(t, "oci-network"), CHECK_SKIPPED);

    set_str(&t->cfg.engine.type, "oci");
    char *rt = path_in(t, "runc");
    write_file(rt, "#!/bin/sh\necho 'runc version 1.1.5+ds1'\necho 'commit: 1.1.5+ds1-1'\n");
    assert_int_equal(chmod(rt, 0755), 0);
    set_str(&t->cfg.engine.runtime, rt);
    assert_int_equal(run(t, "oci-runtime"), CHECK_OK);
    assert_msg(t, "runc version 1.1.5+ds1 (");
    assert_msg(t, "/runc; engine.runtime /tmp/");
    write_file(rt, "#!/bin/sh\nexit 3\n");
    assert_int_equal(run(t, "oci-runtime"), CHECK_ERROR);
    assert_msg(t, "does not answer --version");
    assert_fix(t, "reinstall");

    char *crun = path_in(t, "crun");
    write_file(crun, "#!/bin/sh\necho 'crun version 1.8.1'\n");
    assert_int_equal(chmod(crun, 0755), 0);
    set_str(&t->cfg.engine.runtime, crun);
    char v2[256];
    bool fits = oci_crun_fits(oci_cgroups_mode(v2, sizeof(v2)), v2);
    assert_int_equal(run(t, "oci-runtime"), fits ? CHECK_OK : CHECK_ERROR);
    if (fits) {
        assert_msg(t, "crun version 1.8.1 (");
    } else {
        assert_msg(t, "cannot run containers on this host: its cgroups are hybrid");
        assert_fix(t, "set engine.runtime: runc");
    }

    char *none = path_in(t, "no-such-runtime");
    set_str(&t->cfg.engine.runtime, none);
    assert_int_equal(run(t, "oci-runtime"), CHECK_ERROR);
    assert_msg(t, "is not an executable");
    assert_fix(t, "sudo apt install crun");
    set_str(&t->cfg.engine.runtime, "kata");
    assert_int_equal(run(t, "oci-runtime"), CHECK_ERROR);
    assert_msg(t, "engine.runtime: \"kata\" is not crun, runc, auto or a path");
    /* The engine checks: ledge's own engine cannot start without its runtime, and says so. */
    set_str(&t->cfg.engine.runtime, none);
    assert_int_equal(run(t, "engine"), CHECK_ERROR);
    assert_msg(t, "the oci engine cannot start: engine.runtime: ");
    assert_fix(t, "oci-runtime");
    set_str(&t->cfg.engine.runtime, rt);
    char *run_dir = path_in(t, "run");
    set_str(&t->cfg.run_dir, run_dir);
    set_str(&t->cfg.engine.cni_path, t->dir);
    assert_int_equal(run(t, "engine"), CHECK_OK);
    assert_msg(t, "ledge oci engine (runc, cgroup ");
    assert_msg(t, "engine.type oci: no daemon");
    assert_int_equal(run(t, "engine-version"), CHECK_OK);
    assert_msg(t, "speaks no Engine API");
    assert_int_equal(run(t, "engine-product"), CHECK_OK);
    assert_msg(t, "ledge's own engine, no dockerd, containerd or shims");

    char *cni = path_in(t, "cni");
    assert_int_equal(mkdir(cni, 0755), 0);
    set_str(&t->cfg.engine.cni_path, cni);
    assert_int_equal(run(t, "oci-network"), CHECK_ERROR);
    assert_msg(t, "CNI plugins are missing from");
    assert_msg(t, ": loopback, bridge, host-local, portmap, firewall");
    assert_fix(t, "containernetworking-plugins");
    static const char *const plugins[] = {"loopback", "bridge", "host-local", "portmap"};
    for (size_t i = 0; i < ARRAY_SIZE(plugins); i++) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", cni, plugins[i]);
        write_file(p, "#!/bin/sh\n");
        assert_int_equal(chmod(p, 0755), 0);
    }
    assert_int_equal(run(t, "oci-network"), CHECK_ERROR);
    assert_msg(t, "missing from");
    assert_msg(t, ": firewall");
    char p[512];
    snprintf(p, sizeof(p), "%s/firewall", cni);
    write_file(p, "#!/bin/sh\n");
    assert_int_equal(chmod(p, 0755), 0);
    bool iptables = access("/usr/sbin/iptables", X_OK) == 0 || access("/sbin/iptables", X_OK) == 0;
    assert_int_equal(run(t, "oci-network"), iptables ? CHECK_OK : CHECK_ERROR);
    assert_msg(t, iptables ? "CNI plugins in" : "no iptables");

    /* This machine's kernel: overlayfs, namespaces and cgroups are there (the system tests run
     * the oci engine on it); user namespaces are named only when asked for. */
    assert_int_equal(run(t, "oci-kernel"), CHECK_OK);
    assert_msg(t, "overlayfs, network and mount namespaces, cgroup ");
    assert_msg(t, "user namespaces not used (engine.userns false)");
    t->cfg.engine.userns = true;
    assert_int_equal(run(t, "oci-kernel"), CHECK_OK);
    assert_msg(t, "user namespaces available (engine.userns true)");
    free(cni);
    free(run_dir);
    free(none);
    free(crun);
    free(rt);
}

static void test_log_rotation(void **state)
{
    struct T *t = *state;
    struct fake_engine *e = moby(t);
    assert_int_equal(run(t, "log-rotation"), CHECK_OK);
    assert_msg(t, "no deployment; 0 container modules rotate their logs");
    assert_msg(t, "json-file with max-size 10485760 bytes and max-file 3");
    assert_msg(t, "json-file, does not rotate");

    json_t *own = json_loads("{\"HostConfig\":{\"LogConfig\":{\"Type\":\"json-file\",\"Config\":"
                             "{\"max-size\":\"5m\"}}}}",
                             0, NULL);
    json_t *none = json_loads("{\"HostConfig\":{\"LogConfig\":{\"Type\":\"json-file\"}}}", 0, NULL);
    json_t *local = json_loads("{\"HostConfig\":{\"LogConfig\":{\"Type\":\"local\"}}}", 0, NULL);
    t->mods[0] = (struct check_module){.name = "a", .image = "a:1", .create_options = own};
    t->mods[1] = (struct check_module){.name = "b", .image = "b:1"}; /* ledge's default */
    t->mods[2] = (struct check_module){.name = "c", .image = "c:1", .create_options = local};
    t->mods[3] = (struct check_module){.name = "p", .image = NULL}; /* a process module */
    t->dep.n_modules = 4;
    t->in.deployment = &t->dep;
    assert_int_equal(run(t, "log-rotation"), CHECK_OK);
    assert_msg(t, "3 container modules rotate their logs");

    t->mods[1].create_options = none;
    assert_int_equal(run(t, "log-rotation"), CHECK_WARNING);
    assert_msg(t, "1 of 3 container modules write logs that grow without bound:\n  b: json-file "
                  "without max-size (from its createOptions)");
    assert_fix(t, "max-size");

    /* the engine's default options fill what the module left out (same driver) */
    write_in(t, "daemon.json",
             "{\"log-driver\":\"json-file\",\"log-opts\":{\"max-size\":\"10m\"}}");
    assert_int_equal(run(t, "log-rotation"), CHECK_OK);
    assert_msg(t, "(the engine's own default, json-file, rotates too)");
    /* ... but not when they were written for another driver than the running one */
    write_in(t, "daemon.json", "{\"log-driver\":\"local\",\"log-opts\":{\"max-size\":\"10m\"}}");
    assert_int_equal(run(t, "log-rotation"), CHECK_WARNING);

    /* the deployment's loggingOptions apply to modules without their own */
    unlink(t->cfg.check.engine_config);
    t->mods[1].create_options = NULL;
    t->dep.logging_options = "{\"Type\":\"json-file\",\"Config\":{}}";
    assert_int_equal(run(t, "log-rotation"), CHECK_WARNING);
    assert_msg(t, "b: json-file without max-size (from the deployment's loggingOptions)");
    t->dep.logging_options = "{\"Type\":\"journald\"}";
    assert_int_equal(run(t, "log-rotation"), CHECK_OK);
    t->dep.logging_options = "not json";
    assert_int_equal(run(t, "log-rotation"), CHECK_OK);

    /* an engine whose default driver is journald */
    fake_engine_route(e, "/info", 200, "{\"LoggingDriver\":\"journald\"}");
    t->mods[1].create_options = NULL;
    assert_int_equal(run(t, "log-rotation"), CHECK_OK);
    assert_msg(t, "journald, rotates too");
    json_decref(own);
    json_decref(none);
    json_decref(local);
}

/* $upstream images: upstream.parent, and dockerd's certs.d CA for the parent (an operator step) */
static void test_upstream_registry(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "upstream-registry"), CHECK_SKIPPED);
    t->mods[0] = (struct check_module){.name = "sensor", .image = "docker.io/library/a:1"};
    t->dep.n_modules = 1;
    t->in.deployment = &t->dep;
    assert_int_equal(run(t, "upstream-registry"), CHECK_OK);
    assert_msg(t, "no module of the deployment (file test.json) names $upstream");
    t->mods[1] = (struct check_module){.name = "child", .image = "$upstream:443/app:1"};
    t->mods[2] = (struct check_module){.name = "other", .image = "$upstream:443/b:2"};
    t->dep.n_modules = 3;
    assert_int_equal(run(t, "upstream-registry"), CHECK_ERROR);
    assert_msg(t, "modules child, other name the parent's registry ($upstream) and "
                  "upstream.parent is not set");
    set_str(&t->cfg.upstream.parent, "parent.local");
    set_path(t, &t->cfg.upstream.ca_file, "parent-ca.pem");
    assert_int_equal(run(t, "upstream-registry"), CHECK_WARNING);
    char *ca = path_in(t, "certs.d/parent.local:443/ca.crt");
    assert_msg(t, ca);
    assert_fix(t, "sudo mkdir -p ");
    assert_fix(t, "parent-ca.pem");
    char *dir = path_in(t, "certs.d"), *sub = path_in(t, "certs.d/parent.local:443");
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(mkdir(sub, 0755), 0);
    write_file(ca, "-----BEGIN CERTIFICATE-----\n");
    assert_int_equal(run(t, "upstream-registry"), CHECK_OK);
    assert_msg(t, "whose CA dockerd finds in certs.d");
    /* a loopback parent: dockerd checks no certificate there, nothing to install */
    unlink(ca);
    set_str(&t->cfg.upstream.parent, "127.0.0.1");
    assert_int_equal(run(t, "upstream-registry"), CHECK_OK);
    set_str(&t->cfg.upstream.parent, "parent.local");
    set_str(&t->cfg.engine.type, "oci");
    assert_int_equal(run(t, "upstream-registry"), CHECK_OK);
    assert_msg(t, "verified with upstream.ca_file (the oci engine)");
    rmdir(sub);
    rmdir(dir);
    free(ca);
    free(dir);
    free(sub);
}

#define IMAGE_ROUTE "/images/sensor:1.0/json"

static void test_module_platforms(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "module-platforms"), CHECK_SKIPPED);
    assert_msg(t, "no deployment has been applied");

    t->mods[0] = (struct check_module){.name = "proc", .image = NULL};
    t->dep.n_modules = 1;
    t->in.deployment = &t->dep;
    assert_int_equal(run(t, "module-platforms"), CHECK_SKIPPED);
    assert_msg(t, "the deployment (file test.json) has no container modules");

    t->mods[1] = (struct check_module){.name = "sensor", .image = "sensor:1.0"};
    t->dep.n_modules = 2;
    assert_int_equal(run(t, "module-platforms"), CHECK_SKIPPED);
    assert_msg(t, "the container engine is not reachable");

    struct fake_engine *e = moby(t);
    fake_engine_route(e, IMAGE_ROUTE, 200,
                      "{\"Id\":\"sha256:1\",\"Os\":\"linux\",\"Architecture\":\"amd64\"}");
    assert_int_equal(run(t, "module-platforms"), CHECK_OK);
    assert_msg(t, "this host: linux/amd64; every image matches:\n  sensor (sensor:1.0): "
                  "linux/amd64");

    fake_engine_route(e, IMAGE_ROUTE, 200,
                      "{\"Os\":\"linux\",\"Architecture\":\"arm64\",\"Variant\":\"v8\"}");
    assert_int_equal(run(t, "module-platforms"), CHECK_ERROR);
    assert_msg(t, "module sensor (sensor:1.0): image is built for linux/arm64, this host is "
                  "linux/amd64: a module's image must match the host's OS family (linux)");
    assert_fix(t, "`ledge deploy` refuses these modules");

    fake_engine_route(e, IMAGE_ROUTE, 200, "{\"Os\":\"windows\",\"Architecture\":\"amd64\"}");
    assert_int_equal(run(t, "module-platforms"), CHECK_ERROR);
    assert_msg(t, "module sensor (sensor:1.0): image is built for windows/amd64, this host is "
                  "linux/amd64: a container shares the host's kernel");

    fake_engine_route(e, IMAGE_ROUTE, 200, "{\"Os\":\"linux\",\"Architecture\":\"386\"}");
    assert_int_equal(run(t, "module-platforms"), CHECK_WARNING);
    assert_msg(t, "a 32-bit image");
    fake_engine_route(e, IMAGE_ROUTE, 200, "{\"Id\":\"x\"}");
    assert_int_equal(run(t, "module-platforms"), CHECK_WARNING);
    assert_msg(t, "declares no platform");
    fake_engine_route(e, IMAGE_ROUTE, 500, "{\"message\":\"disk on fire\"}");
    assert_int_equal(run(t, "module-platforms"), CHECK_WARNING);
    assert_msg(t, "cannot inspect the image (inspect image: engine answered 500: disk on fire)");

    /* not pulled: the registry (through the engine) says what the reference offers */
    fake_engine_route(e, IMAGE_ROUTE, 404, "{\"message\":\"No such image: sensor:1.0\"}");
    assert_int_equal(run(t, "module-platforms"), CHECK_WARNING);
    assert_msg(t, "not pulled, and the registry could not be asked (registry platforms of "
                  "sensor:1.0: engine answered 404: no such route)");
    fake_engine_route(e, "/distribution/sensor:1.0/json", 200,
                      "{\"Platforms\":[{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":"
                      "\"v7\"},{\"architecture\":\"amd64\",\"os\":\"linux\"}]}");
    t->mods[1].registry_username = "user";
    t->mods[1].registry_password = "pw";
    t->mods[1].registry_server = "reg.example.com";
    assert_int_equal(run(t, "module-platforms"), CHECK_OK);
    assert_msg(t, "not pulled; the registry offers linux/arm/v7, linux/amd64: one matches");
    /* the credentials went to the engine as X-Registry-Auth (base64url JSON) */
    struct lbuf dec = LBUF_INIT;
    for (char *p = e->last_auth; *p; p++)
        *p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
    assert_int_equal(lcrypto_b64_decode(e->last_auth, strlen(e->last_auth), &dec), 0);
    json_t *auth = json_loadb(dec.data, dec.len, 0, NULL);
    assert_string_equal(ljson_str(auth, "username"), "user");
    assert_string_equal(ljson_str(auth, "password"), "pw");
    assert_string_equal(ljson_str(auth, "serveraddress"), "reg.example.com");
    json_decref(auth);
    lbuf_free(&dec);

    fake_engine_route(e, "/distribution/sensor:1.0/json", 200,
                      "{\"Platforms\":[{\"architecture\":\"arm64\",\"os\":\"linux\"}]}");
    assert_int_equal(run(t, "module-platforms"), CHECK_ERROR);
    assert_msg(t, "not pulled; the registry offers only linux/arm64");
    assert_msg(t, "module sensor (sensor:1.0): image is built for linux/arm64");
    fake_engine_route(e, "/distribution/sensor:1.0/json", 200,
                      "{\"Platforms\":[{\"architecture\":\"386\",\"os\":\"linux\"}]}");
    assert_int_equal(run(t, "module-platforms"), CHECK_WARNING);
    assert_msg(t, "only a 32-bit one runs");

    /* the host's own platform is what images are compared with */
    t->in.machine = "aarch64";
    fake_engine_route(e, "/distribution/sensor:1.0/json", 200,
                      "{\"Platforms\":[{\"architecture\":\"arm64\",\"os\":\"linux\"}]}");
    assert_int_equal(run(t, "module-platforms"), CHECK_OK);
    assert_msg(t, "this host: linux/arm64");
    t->in.machine = "";
    assert_int_equal(run(t, "module-platforms"), CHECK_SKIPPED);
    assert_msg(t, "this host's platform is unknown");
}

/* ------------------------------------------------------------------ certificates */

static void test_certs(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "edge-ca"), CHECK_SKIPPED);
    assert_msg(t, "does not exist yet: ledged creates the edge CA when it starts");
    assert_int_equal(run(t, "hub-server-cert"), CHECK_SKIPPED);

    char *dir = certs_dir(t);
    char ca[512], hub[512];
    snprintf(ca, sizeof(ca), "%s/edge-ca.pem", dir);
    snprintf(hub, sizeof(hub), "%s/hub-server.pem", dir);
    write_cert(ca, "ledge edge CA edge-1", -300, 90L * 86400);
    write_cert(hub, "edge-gw.local", -300, 30L * 86400);
    assert_int_equal(run(t, "edge-ca"), CHECK_OK);
    assert_msg(t, "the edge CA (\"ledge edge CA edge-1\") is valid until");
    assert_msg(t, "(90 days)");
    assert_int_equal(run(t, "hub-server-cert"), CHECK_OK);
    assert_msg(t, "(30 days)");

    write_cert(ca, "ledge edge CA edge-1", -300, 2 * 86400);
    assert_int_equal(run(t, "edge-ca"), CHECK_WARNING);
    assert_msg(t, "expires in 2.0 days");
    assert_fix(t, "ledged renews its generated CA while it runs");

    write_cert(hub, "edge-gw.local", -86400, -60);
    assert_int_equal(run(t, "hub-server-cert"), CHECK_ERROR);
    assert_msg(t, "the hub server certificate (");
    assert_msg(t, "\"edge-gw.local\") expired at");

    write_cert(hub, "edge-gw.local", 3600, 86400 * 30);
    assert_int_equal(run(t, "hub-server-cert"), CHECK_ERROR);
    assert_msg(t, "is not valid until");
    assert_fix(t, "correct the clock");

    /* the wall clock is an input: the same certificate a month later */
    write_cert(hub, "edge-gw.local", -300, 30L * 86400);
    t->in.now_ms = ltime_now_ms() + 31LL * 86400 * 1000;
    assert_int_equal(run(t, "hub-server-cert"), CHECK_ERROR);
    t->in.now_ms = 0;

    write_file(hub, "-----BEGIN NOTHING-----\n");
    assert_int_equal(run(t, "hub-server-cert"), CHECK_ERROR);
    assert_msg(t, "holds no PEM certificate");

    /* a user-provided CA: a missing file is an error, not "not yet" */
    char *user = path_in(t, "my-ca.pem");
    set_str(&t->cfg.certificates.ca_cert, user);
    assert_int_equal(run(t, "edge-ca"), CHECK_ERROR);
    assert_msg(t, "cannot read the edge CA");
    assert_fix(t, "certificates.ca_cert");
    write_cert(user, "My CA", -300, 400L * 86400);
    assert_int_equal(run(t, "edge-ca"), CHECK_OK);
    assert_msg(t, "provided by certificates.ca_cert");
    write_cert(user, "My CA", -300, 86400);
    assert_int_equal(run(t, "edge-ca"), CHECK_WARNING);
    assert_fix(t, "replace certificates.ca_cert");

    if (geteuid() != 0) {
        chmod(user, 0);
        assert_int_equal(run(t, "edge-ca"), CHECK_WARNING);
        assert_msg(t, "Permission denied");
    }
    free(user);
    free(dir);
}

/* ------------------------------------------------------------------ connectivity */

/* A TLS (or plain TCP) server on 127.0.0.1 that accepts connections and handshakes with the
 * certificate+key in pem until stopped. */
struct tls_server {
    int fd;
    int port;
    char *pem;
    bool tls;
    pthread_t thread;
    volatile bool stop;
};

static void *tls_server_main(void *ud)
{
    struct tls_server *s = ud;
    SSL_CTX *ctx = NULL;
    if (s->tls) {
        ctx = SSL_CTX_new(TLS_server_method());
        SSL_CTX_use_certificate_file(ctx, s->pem, SSL_FILETYPE_PEM);
        SSL_CTX_use_PrivateKey_file(ctx, s->pem, SSL_FILETYPE_PEM);
    }
    while (!s->stop) {
        struct pollfd pf = {s->fd, POLLIN, 0};
        if (poll(&pf, 1, 50) != 1)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        if (ctx) {
            SSL *ssl = SSL_new(ctx);
            SSL_set_fd(ssl, c);
            struct timeval tv = {2, 0};
            setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            SSL_accept(ssl);
            SSL_free(ssl);
        }
        close(c);
    }
    SSL_CTX_free(ctx);
    return NULL;
}

/* A TCP socket bound to 127.0.0.1 on a port the kernel picks, into *ret_port. */
static int bind_loopback(int *ret_port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *ret_port = ntohs(a.sin_port);
    return fd;
}

/* A port nothing listens on. */
static int free_port(void)
{
    int port;
    close(bind_loopback(&port));
    return port;
}

static struct tls_server *tls_server_start(const char *pem, bool tls)
{
    struct tls_server *s = calloc(1, sizeof(*s));
    s->pem = pem ? strdup(pem) : NULL;
    s->tls = tls;
    s->fd = bind_loopback(&s->port);
    assert_int_equal(listen(s->fd, 8), 0);
    pthread_create(&s->thread, NULL, tls_server_main, s);
    return s;
}

static void tls_server_stop(struct tls_server *s)
{
    s->stop = true;
    pthread_join(s->thread, NULL);
    close(s->fd);
    free(s->pem);
    free(s);
}

static void test_connectivity(void **state)
{
    struct T *t = *state;
    assert_int_equal(run(t, "hub-ports"), CHECK_SKIPPED);
    assert_msg(t, "the hub is not part of this deployment: no deployment has been applied");
    t->mods[0] = (struct check_module){.name = "edgeHub", .system = true};
    t->dep.n_modules = 1;
    t->in.deployment = &t->dep;

    /* nothing listens */
    set_str(&t->cfg.hub.bind, "127.0.0.1");
    t->cfg.hub.tls_port = free_port();
    assert_int_equal(run(t, "hub-ports"), CHECK_ERROR);
    assert_msg(t, "nothing answers on the hub's port");

    /* ledge's hub: a certificate for the gateway name, trusted by the trust bundle */
    char *dir = certs_dir(t);
    char *hub = lstr_printf("%s/hub-test.pem", dir);
    char *bundle = lstr_printf("%s/trust-bundle.pem", dir);
    write_cert_san(hub, "localhost", -60, 3600, "DNS:localhost,IP:127.0.0.1");
    /* the bundle: that certificate (the key beside it is ignored by the verifier) */
    char *pem = NULL;
    size_t len = 0;
    assert_int_equal(lfs_read_file(hub, 65536, &pem, &len), 0);
    write_file(bundle, pem);
    free(pem);
    set_str(&t->cfg.device.gateway_hostname, "localhost");
    struct tls_server *srv = tls_server_start(hub, true);
    t->cfg.hub.tls_port = srv->port;
    assert_int_equal(run(t, "hub-ports"), CHECK_OK);
    assert_msg(t, "the hub answers TLS");
    /* something else on the port: a certificate the modules would not trust for the name */
    set_str(&t->cfg.device.gateway_hostname, "edge.example");
    assert_int_equal(run(t, "hub-ports"), CHECK_ERROR);
    assert_msg(t, "not as ledge's hub for edge.example");
    char sport[32];
    snprintf(sport, sizeof(sport), "sport = :%d`", srv->port);
    assert_fix(t, sport);

    /* upstream */
    assert_int_equal(run(t, "upstream"), CHECK_SKIPPED);
    assert_msg(t, "upstream is not enabled");
    t->cfg.upstream.enabled = true;
    set_str(&t->cfg.upstream.host, "no-such-host.invalid");
    t->cfg.upstream.port = 8883;
    assert_int_equal(run(t, "upstream"), CHECK_WARNING);
    assert_msg(t, "does not resolve");
    set_str(&t->cfg.upstream.host, "127.0.0.1");
    t->cfg.upstream.port = free_port();
    assert_int_equal(run(t, "upstream"), CHECK_WARNING);
    assert_msg(t, "is not reachable");
    /* TLS trusted through upstream.ca_file, and not. The host is an IP literal, checked against
     * the certificate's IP addresses (no name resolution: CI machines differ in what "localhost"
     * resolves to). */
    t->cfg.upstream.port = srv->port;
    t->cfg.upstream.tls = true;
    set_str(&t->cfg.upstream.ca_file, bundle);
    assert_int_equal(run(t, "upstream"), CHECK_OK);
    assert_msg(t, "reachable and its TLS certificate is trusted");
    char *other = lstr_printf("%s/other.pem", dir);
    write_cert_san(other, "localhost", -60, 3600, "DNS:localhost,IP:127.0.0.1");
    set_str(&t->cfg.upstream.ca_file, other);
    assert_int_equal(run(t, "upstream"), CHECK_ERROR);
    assert_msg(t, "not trusted");
    tls_server_stop(srv);
    /* a trusted certificate without the address the link dials */
    char *noip = lstr_printf("%s/noip.pem", dir);
    write_cert(noip, "localhost", -60, 3600);
    srv = tls_server_start(noip, true);
    t->cfg.upstream.port = srv->port;
    set_str(&t->cfg.upstream.ca_file, noip);
    assert_int_equal(run(t, "upstream"), CHECK_ERROR);
    assert_msg(t, "not trusted for \"127.0.0.1\"");
    tls_server_stop(srv);
    free(noip);
    /* plain TCP */
    struct tls_server *plain = tls_server_start(NULL, false);
    t->cfg.upstream.tls = false;
    t->cfg.upstream.port = plain->port;
    assert_int_equal(run(t, "upstream"), CHECK_OK);
    assert_msg(t, "TLS is off");
    tls_server_stop(plain);
    free(other);
    free(hub);
    free(bundle);
    free(dir);
}

/* Every check runs against a whole context without crashing, engine or not. */
/* The vm group: skipped without VMs, every check for `ledge vm check` or a named VM, QEMU and
 * memory against what the VMs need. */
static void test_vm_checks(void **state)
{
    struct T *t = *state;
    char *vms = path_in(t, "vms"), *bin = path_in(t, "bin");
    assert_int_equal(mkdir(vms, 0755), 0);
    assert_int_equal(mkdir(bin, 0755), 0);
    t->in.vm_dir = vms;
    t->in.vm_cache = t->dir;
    t->in.path = bin;
    write_in(t, "meminfo", "MemTotal: 4000000 kB\nMemAvailable: 524288 kB\n");
    assert_int_equal(run(t, "vm-qemu"), CHECK_SKIPPED);
    assert_msg(t, "no VMs are defined in");

    /* `ledge vm check`: the host's architecture, the default sizes. */
    t->in.vm_always = true;
    assert_int_equal(run(t, "vm-qemu"), CHECK_ERROR);
    assert_msg(t, "is not installed");
    assert_fix(t, "apt-get install qemu-system-");
    assert_int_equal(run(t, "vm-memory"), CHECK_ERROR); /* 512 MiB for a 1 GiB guest */
    assert_msg(t, "512 MiB available; the VMs need 1 GiB");
    assert_int_equal(run(t, "vm-accel"), CHECK_WARNING); /* no kvm device in the tree */
    assert_msg(t, "software emulation");
    assert_int_equal(run(t, "vm-build"), CHECK_WARNING);
    assert_int_equal(run(t, "vm-build-foreign"), CHECK_SKIPPED);
    t->in.vm_always = false;

    /* A VM defined in the directory: its architecture and size count. */
    struct vm_def d;
    struct lerr e = {0};
    assert_int_equal(vm_def_init(&d, "v1", &e), 0);
    d.memory = 256ull << 20;
    enum vm_arch host = VM_ARCH_AMD64;
    vm_arch_host(&host);
    d.arch = host;
    char *dir = path_in(t, "vms/v1"), *def = path_in(t, "vms/v1/vm.json");
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(vm_def_save(def, &d), 0);
    char *qemu = lstr_printf("%s/%s", bin, vm_qemu_binary(host));
    write_file(qemu, "#!/bin/sh\n");
    assert_int_equal(chmod(qemu, 0755), 0);
    assert_int_equal(run(t, "vm-qemu"), CHECK_OK);
    assert_int_equal(run(t, "vm-memory"), CHECK_OK);
    assert_msg(t, "for VMs needing 256 MiB");
    assert_int_equal(run(t, "vm-disk"), CHECK_OK);

    /* Only the VM named (`ledge vm check NAME`): a foreign one needs its QEMU and qemu-user. */
    struct vm_def other;
    assert_int_equal(vm_def_init(&other, "v2", &e), 0);
    other.arch = host == VM_ARCH_AMD64 ? VM_ARCH_ARM64 : VM_ARCH_AMD64;
    t->in.vm_def = &other;
    t->in.binfmt_dir = t->dir;
    assert_int_equal(run(t, "vm-qemu"), CHECK_ERROR);
    assert_msg(t, vm_qemu_binary(other.arch));
    if (host == VM_ARCH_AMD64 && access("/usr/lib/binfmt.d/qemu-aarch64.conf", F_OK) < 0) {
        assert_int_equal(run(t, "vm-build-foreign"), CHECK_WARNING);
        write_in(t, "qemu-aarch64", "enabled\n");
        assert_int_equal(run(t, "vm-build-foreign"), CHECK_OK);
    }
    vm_def_free(&other);
    vm_def_free(&d);
    free(qemu);
    free(dir);
    free(def);
    free(vms);
    free(bin);
}

/* A whole run: the table (or one group) in order, counts, the exit code and the document. */
static void test_run_all(void **state)
{
    struct T *t = *state;
    t->cfg.check.ntp_timeout_ms = 100;
    size_t n;
    check_table(&n);
    struct check_results r;
    assert_int_equal(check_run_all(&t->in, NULL, &r), 0);
    assert_int_equal(r.n, n);
    size_t sum = 0;
    for (int i = 0; i <= CHECK_SKIPPED; i++)
        sum += r.count[i];
    assert_int_equal(sum, n);
    assert_int_equal(check_results_exit_code(&r, false), r.count[CHECK_ERROR] ? 1 : 0);
    json_t *j = check_results_json(&r, "/etc/ledge/config.yaml", NULL, true);
    assert_int_equal(json_array_size(json_object_get(j, "checks")), n);
    assert_string_equal(ljson_str(json_array_get(json_object_get(j, "checks"), 0), "id"),
                        check_table(&n)[0].id);
    assert_int_equal(ljson_int(json_object_get(j, "summary"), "error", -1), r.count[CHECK_ERROR]);
    assert_int_equal(ljson_int(j, "exitCode", -1),
                     r.count[CHECK_ERROR] || r.count[CHECK_WARNING] ? 1 : 0);
    assert_true(json_is_null(json_object_get(j, "deployment")));
    json_decref(j);
    check_results_clear(&r);
    check_results_clear(&r);

    assert_int_equal(check_run_all(&t->in, "vm", &r), 0);
    assert_true(r.n >= 5);
    for (size_t i = 0; i < r.n; i++)
        assert_string_equal(r.defs[i]->group, "vm");
    assert_int_equal(r.count[CHECK_SKIPPED], r.n); /* no VMs here */
    check_results_clear(&r);
}

/* The checks' view of a parsed manifest: container modules with their image, options and
 * registry credentials; the hub marked; process modules without an image. */
static void test_deployment_view(void **state)
{
    const char *text =
        "{\"modulesContent\": {\"$edgeAgent\": {\"properties.desired\": {\"schemaVersion\": "
        "\"1.1\", \"runtime\": {\"type\": \"docker\", \"settings\": {\"minDockerVersion\": "
        "\"v1.25\", \"registryCredentials\": {\"r\": {\"address\": \"reg.example\", "
        "\"username\": \"u\", \"password\": \"p\"}}}}, \"systemModules\": {\"edgeAgent\": "
        "{\"type\": \"docker\", \"settings\": {\"image\": "
        "\"mcr.microsoft.com/azureiotedge-agent:1.4\"}}, "
        "\"edgeHub\": {\"type\": \"docker\", \"status\": \"running\", \"restartPolicy\": "
        "\"always\", \"settings\": {\"image\": \"mcr.microsoft.com/azureiotedge-hub:1.4\"}}}, "
        "\"modules\": {\"mod\": {\"type\": \"docker\", \"status\": \"running\", \"restartPolicy\": "
        "\"always\", \"settings\": {\"image\": \"reg.example/m:1\", \"createOptions\": "
        "\"{\\\"Env\\\": [\\\"A=1\\\"]}\"}}}}}, \"$edgeHub\": {\"properties.desired\": "
        "{\"schemaVersion\": \"1.1\", \"routes\": {}, \"storeAndForwardConfiguration\": "
        "{\"timeToLiveSecs\": 7200}}}}}";
    struct deployment *dep = NULL;
    struct lstrv errors = LSTRV_INIT;
    int r = manifest_parse(text, strlen(text), "/usr/lib/ledge/ledge-hub", &dep, &errors);
    for (size_t i = 0; r < 0 && i < errors.n; i++)
        print_error("%s\n", errors.v[i]);
    assert_int_equal(r, 0);
    struct check_deployment_view v;
    assert_int_equal(check_deployment_view(dep, "file x.json", &v), 0);
    assert_string_equal(v.d.source, "file x.json");
    assert_string_equal(v.d.min_docker_version, "v1.25");
    assert_int_equal(v.d.n_modules, dep->n_modules);
    size_t mi = v.d.n_modules, hi = v.d.n_modules;
    for (size_t i = 0; i < v.d.n_modules; i++) {
        if (lstr_eq(v.d.modules[i].name, "mod"))
            mi = i;
        if (v.d.modules[i].system)
            hi = i;
    }
    assert_true(mi < v.d.n_modules && hi < v.d.n_modules);
    const struct check_module *m = &v.d.modules[mi], *hub = &v.d.modules[hi];
    assert_string_equal(m->image, "reg.example/m:1");
    assert_non_null(m->create_options);
    assert_string_equal(m->registry_username, "u");
    assert_null(hub->image); /* ledge's hub runs as a process */
    check_deployment_view_clear(&v);
    check_deployment_view_clear(&v);
    deployment_free(dep);
    lstrv_free(&errors);
}

static void test_all(void **state)
{
    struct T *t = *state;
    size_t n;
    const struct check_def *defs = check_table(&n);
    struct check_ctx *ctx = NULL;
    t->cfg.check.ntp_timeout_ms = 100;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            moby(t);
        assert_int_equal(check_ctx_new(&t->in, &ctx), 0);
        for (size_t i = 0; i < n; i++) {
            struct check_report rep;
            check_run(ctx, &defs[i], &rep);
            assert_non_null(rep.message);
            assert_true(rep.result <= CHECK_SKIPPED);
            check_report_clear(&rep);
        }
        check_ctx_free(ctx);
    }
    check_ctx_free(NULL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* the TLS test server writes to clients that hang up */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test_setup_teardown(test_config_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostname, setup, teardown),
        cmocka_unit_test(test_hostname_rules),
        cmocka_unit_test_setup_teardown(test_os, setup, teardown),
        cmocka_unit_test(test_os_release_parser),
        cmocka_unit_test_setup_teardown(test_architecture, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory, setup, teardown),
        cmocka_unit_test(test_meminfo_parser),
        cmocka_unit_test_setup_teardown(test_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_virtualization, setup, teardown),
        cmocka_unit_test(test_cpuinfo_flags),
        cmocka_unit_test_setup_teardown(test_kvm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cgroups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock, setup, teardown),
        cmocka_unit_test(test_ntp_parser),
        cmocka_unit_test_setup_teardown(test_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_product, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oci_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_platforms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_certs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connectivity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vm_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_all, setup, teardown),
        cmocka_unit_test(test_deployment_view),
        cmocka_unit_test_setup_teardown(test_all, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
