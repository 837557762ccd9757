/* cmd_device.c — `ledge device ...`: the leaf devices behind this gateway (docs/gateway.md) —
 * add (printing the connection string to give the device), list, show, remove, keys and their
 * rotation, certificates from the edge CA, the trust bundle, and the CAs registered for
 * CA-signed devices. A thin client of the management API's /devices routes. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "commands.h"

#define PEM_FILE_MAX (1024 * 1024)

static const char device_usage[] =
    "usage: ledge device add NAME [--key BASE64 [--secondary-key BASE64] |\n"
    "                             --x509-thumbprint HEX[,HEX2] | --x509-ca]\n"
    "                             [--trust-bundle FILE] [--json]\n"
    "       ledge device list [--json]\n"
    "       ledge device show NAME [--json]\n"
    "       ledge device remove NAME\n"
    "       ledge device key NAME [--rotate [primary|secondary|both]] [--json]\n"
    "       ledge device cert NAME [--days N] [--cert FILE] [--key FILE] [--json]\n"
    "       ledge device trust-bundle [--out FILE]\n"
    "       ledge device ca add FILE | ca list [--json] | ca remove THUMBPRINT\n";

static int usage_error(const char *fmt, ...) _printf_(1, 2);
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ledge device: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fputs(device_usage, stderr);
    return 2;
}

static char *path_of(const char *prefix, const char *name, const char *suffix)
{
    struct lbuf p = LBUF_INIT;
    lbuf_puts(&p, prefix);
    lstr_url_encode(name, strlen(name), &p);
    lbuf_puts(&p, suffix);
    return lbuf_steal(&p);
}

/* A call whose reply is JSON; the reply on success (2xx), else the error printed and NULL. */
static json_t *call(struct cli *c, const char *method, const char *path, json_t *body, int *rc)
{
    char *text = body ? ljson_dump(body) : NULL;
    json_decref(body);
    long status;
    json_t *reply = NULL;
    int r = cli_call(c, method, path, text, text ? strlen(text) : 0, &status, &reply);
    if (text) {
        lcrypto_wipe(text, strlen(text)); /* it may carry a key */
        free(text);
    }
    if (r < 0) {
        *rc = 1;
        return NULL;
    }
    if (status >= 300) {
        *rc = cli_report_error(status, reply);
        json_decref(reply);
        return NULL;
    }
    *rc = 0;
    return reply ? reply : json_object();
}

static void print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY);
    printf("%s\n", s ? s : "null");
    if (s)
        lcrypto_wipe(s, strlen(s));
    free(s);
}

static int write_file(const char *path, const char *text, mode_t mode)
{
    int r = lfs_write_atomic(path, text, strlen(text), mode);
    if (r < 0)
        return cli_fail("cannot write %s: %s", path, strerror(-r));
    return 0;
}

static int write_trust_bundle(struct cli *c, const char *path)
{
    int rc;
    json_t *tb = call(c, "GET", "/trust-bundle", NULL, &rc);
    if (!tb)
        return rc;
    const char *pem = ljson_str(tb, "certificate");
    rc = pem ? write_file(path, pem, 0644) : cli_fail("the trust bundle reply has no certificate");
    json_decref(tb);
    return rc;
}

/* ------------------------------------------------------------------ add */

static int device_add(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},
        {"secondary-key", required_argument, NULL, 's'},
        {"x509-thumbprint", required_argument, NULL, 't'},
        {"x509-ca", no_argument, NULL, 'C'},
        {"trust-bundle", required_argument, NULL, 'b'},
        {"json", no_argument, NULL, 'j'},
        {0},
    };
    const char *key = NULL, *key2 = NULL, *thumbs = NULL, *bundle = NULL;
    bool ca = false;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'k':
            key = optarg;
            break;
        case 's':
            key2 = optarg;
            break;
        case 't':
            thumbs = optarg;
            break;
        case 'C':
            ca = true;
            break;
        case 'b':
            bundle = optarg;
            break;
        case 'j':
            c->json = true;
            break;
        default:
            return usage_error("add: unknown option");
        }
    }
    if (optind != argc - 1)
        return usage_error("add: expected NAME");
    if ((key || key2) + (thumbs != NULL) + ca > 1)
        return usage_error("add: --key, --x509-thumbprint and --x509-ca exclude each other");
    const char *auth = thumbs ? "x509-thumbprint" : ca ? "x509-ca" : "sas";
    json_t *body = json_pack("{s:s, s:s, s:s*, s:s*, s:s*}", "deviceId", argv[optind], "auth", auth,
                             "primaryKey", key, "secondaryKey", key2, "thumbprints", thumbs);
    int rc;
    json_t *reply = call(c, "POST", "/devices", body, &rc);
    if (!reply)
        return rc;
    if (c->json) {
        print_json(reply);
    } else {
        fprintf(stderr, "leaf device %s added (%s); give it this connection string%s:\n",
                argv[optind], auth, strcmp(auth, "sas") == 0 ? "" : " and its certificate and key");
        printf("%s\n", ljson_str(reply, "connectionString") ?: "?");
    }
    json_decref(reply);
    if (bundle && (rc = write_trust_bundle(c, bundle)) == 0 && !c->json)
        fprintf(stderr, "trust bundle written to %s\n", bundle);
    return rc;
}

/* ------------------------------------------------------------------ list, show, remove */

static int device_list(struct cli *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            c->json = true;
        else
            return usage_error("list: unexpected argument \"%s\"", argv[i]);
    }
    int rc;
    json_t *reply = call(c, "GET", "/devices", NULL, &rc);
    if (!reply)
        return rc;
    json_t *devs = json_object_get(reply, "devices");
    if (c->json) {
        print_json(devs);
    } else {
        printf("%-32s  %-16s  %s\n", "DEVICE", "AUTH", "DETAILS");
        size_t i;
        json_t *d;
        json_array_foreach (devs, i, d) {
            const char *err = ljson_str(d, "error");
            json_t *t = json_object_get(d, "thumbprints");
            _cleanup_lbuf_ struct lbuf details = LBUF_INIT;
            if (err)
                lbuf_printf(&details, "UNUSABLE: %s", err);
            else if (json_array_size(t))
                lbuf_printf(&details, "thumbprint %s%s", json_string_value(json_array_get(t, 0)),
                            json_array_size(t) > 1 ? " (+ secondary)" : "");
            else
                lbuf_printf(&details, "added %s", ljson_str(d, "createdAt") ?: "?");
            printf("%-32s  %-16s  %s\n", ljson_str(d, "deviceId"),
                   err ? "-" : ljson_str(d, "auth") ?: "?", details.data ? details.data : "");
        }
    }
    json_decref(reply);
    return 0;
}

/* NAME and an optional --json: 0 with *ret_name, else the usage error's exit code. */
static int one_name(int argc, char **argv, const char *verb, struct cli *c, const char **ret_name)
{
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            c->json = true;
        else if (!name && argv[i][0] != '-')
            name = argv[i];
        else
            return usage_error("%s: unexpected argument \"%s\"", verb, argv[i]);
    }
    if (!name)
        return usage_error("%s: expected NAME", verb);
    *ret_name = name;
    return 0;
}

static int device_show(struct cli *c, int argc, char **argv)
{
    const char *name;
    int n = one_name(argc, argv, "show", c, &name);
    if (n)
        return n;
    _cleanup_free_ char *p = path_of("/devices/", name, "");
    int rc;
    json_t *reply = call(c, "GET", p, NULL, &rc);
    if (reply)
        print_json(reply);
    json_decref(reply);
    return rc;
}

static int device_remove(struct cli *c, int argc, char **argv)
{
    const char *name;
    int n = one_name(argc, argv, "remove", c, &name);
    if (n)
        return n;
    _cleanup_free_ char *p = path_of("/devices/", name, "");
    int rc;
    json_t *reply = call(c, "DELETE", p, NULL, &rc);
    if (reply && !c->json)
        fprintf(stderr, "leaf device %s removed; its connections are closed\n",
                ljson_str(reply, "deviceId"));
    else if (reply)
        print_json(reply);
    json_decref(reply);
    return rc;
}

/* ------------------------------------------------------------------ keys, certificates */

static int device_key(struct cli *c, int argc, char **argv)
{
    const char *name = NULL, *rotate = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            c->json = true;
        else if (strcmp(argv[i], "--rotate") == 0)
            rotate = i + 1 < argc && (strcmp(argv[i + 1], "primary") == 0 ||
                                      strcmp(argv[i + 1], "secondary") == 0 ||
                                      strcmp(argv[i + 1], "both") == 0)
                         ? argv[++i]
                         : "both";
        else if (strncmp(argv[i], "--rotate=", 9) == 0)
            rotate = argv[i] + 9;
        else if (!name && argv[i][0] != '-')
            name = argv[i];
        else
            return usage_error("key: unexpected argument \"%s\"", argv[i]);
    }
    if (!name)
        return usage_error("key: expected NAME");
    _cleanup_free_ char *p = rotate ? path_of("/devices/", name, "/keys/rotate?slot=")
                                    : path_of("/devices/", name, "/keys");
    _cleanup_free_ char *path = rotate ? lstr_printf("%s%s", p, rotate) : strdup(p);
    int rc;
    json_t *reply = path ? call(c, rotate ? "POST" : "GET", path, NULL, &rc) : NULL;
    if (!path)
        return cli_fail("out of memory");
    if (!reply)
        return rc;
    if (c->json) {
        print_json(reply);
    } else {
        if (ljson_str(reply, "primaryKey"))
            printf("primary key:   %s\nsecondary key: %s\n", ljson_str(reply, "primaryKey"),
                   ljson_str(reply, "secondaryKey") ?: "");
        printf("connection string: %s\n", ljson_str(reply, "connectionString") ?: "?");
        if (ljson_str(reply, "secondaryConnectionString"))
            printf("secondary connection string: %s\n",
                   ljson_str(reply, "secondaryConnectionString"));
        if (rotate)
            fprintf(stderr, "rotated (%s): connections that used the old key are closed\n", rotate);
    }
    json_decref(reply);
    return 0;
}

static int device_cert(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"days", required_argument, NULL, 'd'},
        {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"json", no_argument, NULL, 'j'},
        {0},
    };
    const char *days = NULL, *cert_path = NULL, *key_path = NULL;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 'd')
            days = optarg;
        else if (o == 'c')
            cert_path = optarg;
        else if (o == 'k')
            key_path = optarg;
        else if (o == 'j')
            c->json = true;
        else
            return usage_error("cert: unknown option");
    }
    if (optind != argc - 1)
        return usage_error("cert: expected NAME");
    const char *name = argv[optind];
    long long n = 30;
    if (days && (lstr_to_i64(days, &n) < 0 || n < 1))
        return usage_error("cert: --days: expected a number of days, got \"%s\"", days);
    _cleanup_free_ char *def_cert = lstr_printf("%s.cert.pem", name);
    _cleanup_free_ char *def_key = lstr_printf("%s.key.pem", name);
    _cleanup_free_ char *p = path_of("/devices/", name, "/certificate");
    if (!def_cert || !def_key || !p)
        return cli_fail("out of memory");
    int rc;
    json_t *reply = call(c, "POST", p, json_pack("{s:I}", "days", (json_int_t)n), &rc);
    if (!reply)
        return rc;
    const char *cert = ljson_str(reply, "certificate"), *key = ljson_str(reply, "privateKey");
    if (c->json && !cert_path && !key_path) {
        print_json(reply);
    } else if (!cert || !key) {
        rc = cli_fail("the reply has no certificate");
    } else {
        cert_path = cert_path ? cert_path : def_cert;
        key_path = key_path ? key_path : def_key;
        rc = write_file(key_path, key, 0600);
        if (rc == 0)
            rc = write_file(cert_path, cert, 0644);
        if (rc == 0)
            fprintf(stderr,
                    "certificate for %s (CN=%s, until %s) in %s, its key in %s; thumbprint %s\n",
                    name, name, ljson_str(reply, "expiration") ?: "?", cert_path, key_path,
                    ljson_str(reply, "thumbprint") ?: "?");
    }
    if (key)
        lcrypto_wipe((char *)key, strlen(key));
    json_decref(reply);
    return rc;
}

static int device_trust_bundle(struct cli *c, int argc, char **argv)
{
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (strncmp(argv[i], "--out=", 6) == 0)
            out = argv[i] + 6;
        else
            return usage_error("trust-bundle: unexpected argument \"%s\"", argv[i]);
    }
    if (out)
        return write_trust_bundle(c, out);
    int rc;
    json_t *tb = call(c, "GET", "/trust-bundle", NULL, &rc);
    if (tb)
        fputs(ljson_str(tb, "certificate") ?: "", stdout);
    json_decref(tb);
    return rc;
}

/* ------------------------------------------------------------------ ca */

static int device_ca(struct cli *c, int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : "";
    bool json = argc > 2 && strcmp(argv[argc - 1], "--json") == 0;
    if (json) {
        c->json = true;
        argc--;
    }
    int rc;
    if (strcmp(verb, "list") == 0 && argc == 2) {
        json_t *reply = call(c, "GET", "/device-cas", NULL, &rc);
        if (!reply)
            return rc;
        json_t *cas = json_object_get(reply, "cas");
        if (c->json) {
            print_json(cas);
        } else {
            printf("%-64s  %-22s  %s\n", "THUMBPRINT (SHA-256)", "NOT AFTER", "SUBJECT");
            size_t i;
            json_t *ca;
            json_array_foreach (cas, i, ca)
                printf("%-64s  %-22s  %s\n", ljson_str(ca, "thumbprint"),
                       ljson_str(ca, "notAfter") ?: "?", ljson_str(ca, "subject") ?: "");
        }
        json_decref(reply);
        return 0;
    }
    if (strcmp(verb, "add") == 0 && argc == 3) {
        _cleanup_free_ char *pem = NULL;
        size_t len;
        int r = lfs_read_file(argv[2], PEM_FILE_MAX, &pem, &len);
        if (r < 0)
            return cli_fail("%s: %s", argv[2], strerror(-r));
        json_t *reply = call(c, "POST", "/device-cas", json_pack("{s:s}", "pem", pem), &rc);
        if (!reply)
            return rc;
        if (c->json)
            print_json(reply);
        else
            fprintf(stderr, "device CA %s registered (%s)\n", ljson_str(reply, "thumbprint"),
                    ljson_str(reply, "subject") ?: "");
        json_decref(reply);
        return 0;
    }
    if (strcmp(verb, "remove") == 0 && argc == 3) {
        _cleanup_free_ char *p = path_of("/device-cas/", argv[2], "");
        json_t *reply = call(c, "DELETE", p, NULL, &rc);
        if (reply && !c->json)
            fprintf(stderr, "device CA %s removed\n", ljson_str(reply, "thumbprint"));
        else if (reply)
            print_json(reply);
        json_decref(reply);
        return rc;
    }
    return usage_error("ca: expected add FILE, list or remove THUMBPRINT");
}

static int device_help(struct cli *c, int argc, char **argv)
{
    fputs(device_usage, stdout);
    return 0;
}

static const struct {
    const char *name;
    int (*run)(struct cli *c, int argc, char **argv);
} verbs[] = {
    {"add", device_add},
    {"list", device_list},
    {"show", device_show},
    {"remove", device_remove},
    {"key", device_key},
    {"cert", device_cert},
    {"trust-bundle", device_trust_bundle},
    {"ca", device_ca},
    {"help", device_help},
};

int cmd_device(struct cli *c, int argc, char **argv)
{
    if (argc < 2)
        return usage_error("expected a command");
    for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
        if (strcmp(verbs[i].name, argv[1]) == 0)
            return verbs[i].run(c, argc - 1, argv + 1);
    return usage_error("no command \"%s\"", argv[1]);
}
