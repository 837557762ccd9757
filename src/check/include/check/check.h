/* check.h — `ledge check`: a table of checks of the host, the container engine, the deployment
 * and ledge's own state against what ledge supports (docs/support.md). Each check has an id and
 * a one-line description and produces a result, a message and, when something is wrong, how to
 * fix it. One table for every caller (`ledge check`, `ledge vm check`, ledged's GET /check).
 * Every input is injectable: host files come from the config's `check` section, the engine's
 * answers from engine.uri, the rest from struct check_inputs. No logging, no globals. */
#pragma once

#include "engine/engine.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/str.h"
#include "config/config.h"

enum check_result {
    CHECK_OK,
    CHECK_WARNING,
    CHECK_ERROR,
    CHECK_SKIPPED, /* nothing to check (or a check it depends on failed) */
};

/* Below this the engine is refused (the docker backend speaks API 1.41 and newer). */
#define CHECK_ENGINE_MIN_API ENGINE_DOCKER_MIN_API
/* A certificate this close to expiry is a warning (ledged renews well before). */
#define CHECK_CERT_WARN_S (7LL * 86400)
/* Clock offsets: above the first a warning, above the second (the certificate notBefore
 * back-dating and SAS token tolerance) an error. */
#define CHECK_CLOCK_WARN_MS 10000
#define CHECK_CLOCK_ERROR_MS 300000
/* Host names: RFC 1123 labels, at most this long in all (it goes into certificate names). */
#define CHECK_HOSTNAME_MAX 64

/* A module of the deployment as the checks see it. The caller fills these from its parsed
 * manifest; every pointer is borrowed. */
struct check_module {
    const char *name;
    const char *image;            /* NULL for a module that is not a container */
    const json_t *create_options; /* ContainerCreate object, or NULL */
    bool system;                  /* ledge's own hub */
    /* Registry credentials for image (or NULL), for asking the registry about images that are
     * not pulled yet. */
    const char *registry_server;
    const char *registry_username;
    const char *registry_password;
};

struct check_deployment {
    const char *source;             /* for messages: "ledged", "file deploy.json" */
    const char *min_docker_version; /* runtime.settings.minDockerVersion ("v1.25") or NULL */
    const char *logging_options;    /* runtime.settings.loggingOptions (JSON text) or NULL */
    const struct check_module *modules;
    size_t n_modules;
};

/* The view of a parsed deployment manifest (agent/manifest.h): borrows from dep and source. */
struct deployment;
struct check_deployment_view {
    struct check_deployment d;
    struct check_module *modules; /* owned */
};
int check_deployment_view(const struct deployment *dep, const char *source,
                          struct check_deployment_view *ret);
void check_deployment_view_clear(struct check_deployment_view *v);

struct vm_def;

struct check_inputs {
    /* The configuration: the loaded file, or the defaults when the file is absent or invalid
     * (config_status tells which). Never NULL. */
    const struct ledge_config *config;
    const char *config_path;
    int config_status;                 /* 0 loaded; 1 absent, defaults used; < 0 failed */
    const struct lstrv *config_errors; /* messages when config_status < 0 */
    /* The deployment, or NULL with the reason in no_deployment ("no deployment has been
     * applied", "ledged is not reachable ..."). */
    const struct check_deployment *deployment;
    const char *no_deployment;
    /* Test overrides; NULL or 0 means the real host. */
    const char *hostname;         /* gethostname() */
    const char *machine;          /* uname(2) machine, e.g. "aarch64" */
    const char *container_marker; /* file whose presence means "in a container" */
    uint16_t ntp_port;            /* 123 */
    int64_t now_ms;               /* wall clock for certificate expiry */
    long engine_timeout_ms;       /* each engine request; 0 = 10 s */
    /* The vm group: the VMs defined under vm_dir (NULL: the config's vm.dir, else the
     * default), or only vm_def (`ledge vm check NAME`: borrowed). It is skipped when there is
     * no VM, unless vm_always (`ledge vm check` on a host without VMs yet: the host's
     * architecture and the default sizes). */
    const char *vm_dir;
    const char *vm_cache; /* the image cache; NULL: the default */
    const struct vm_def *vm_def;
    bool vm_always;
    const char *path;       /* where programs are looked for; NULL: $PATH */
    const char *binfmt_dir; /* /proc/sys/fs/binfmt_misc */
};

struct check_ctx;

struct check_report {
    enum check_result result;
    char *message; /* what was found; may span lines */
    char *fix;     /* how to fix it; NULL when there is nothing to fix */
};

struct check_def {
    const char *id;          /* "engine-version" */
    const char *group;       /* "configuration", "host", "engine", "deployment", ... */
    const char *description; /* one line */
    void (*run)(struct check_ctx *ctx, struct check_report *rep);
    unsigned flags;
};

enum {
    CHECK_NEEDS_CONFIG = 1 << 0, /* skipped when the configuration file is invalid */
    CHECK_NEEDS_VMS = 1 << 1,    /* the vm group: skipped without VMs (see check_inputs) */
};

/* The table, in the order the checks run and print. */
const struct check_def *check_table(size_t *ret_n);
const struct check_def *check_find(const char *id);
const char *check_result_name(enum check_result r); /* "ok", "warning", "error", "skipped" */

/* A run: inputs plus what is learned once and shared between checks (the engine's answers). */
int check_ctx_new(const struct check_inputs *in, struct check_ctx **ret);
void check_ctx_free(struct check_ctx *ctx);
DEFINE_CLEANUP(struct check_ctx *, check_ctx_free)

/* Run one check into rep (clear it with check_report_clear()). Never fails: a check that cannot
 * do its work reports that as its result. */
void check_run(struct check_ctx *ctx, const struct check_def *def, struct check_report *rep);
void check_report_clear(struct check_report *rep);

/* {"id", "group", "description", "result", "message", "fix"} */
json_t *check_report_json(const struct check_def *def, const struct check_report *rep);

/* A whole run: every check of the table (or of one group) in table order, one report each. What
 * `ledge check`, `ledge vm check` and ledged's GET /check show. */
struct check_results {
    const struct check_def **defs;
    struct check_report *reports;
    size_t n;
    size_t count[CHECK_SKIPPED + 1]; /* how many of each result */
};
/* group NULL: every check. -ENOMEM only. */
int check_run_all(const struct check_inputs *in, const char *group, struct check_results *ret);
void check_results_clear(struct check_results *r);
/* The exit code of `ledge check`: 1 when a check is an error (or, with warnings_as_errors, a
 * warning), else 0. */
int check_results_exit_code(const struct check_results *r, bool warnings_as_errors);
/* {"version", "config", "deployment", "checks": [check_report_json...], "summary": {"ok",
 * "warning", "error", "skipped"}, "exitCode"}: the document of `ledge check --output json`.
 * deployment: where the deployment came from (NULL when there was none). */
json_t *check_results_json(const struct check_results *r, const char *config_path,
                           const char *deployment, bool warnings_as_errors);

/* ---- pure parsers behind the checks (exposed for tests and the fuzz target) ---- */

struct check_os {
    char id[64];         /* "debian" */
    char id_like[128];   /* "debian" for raspbian, ... */
    char version_id[32]; /* "12" */
    char pretty[128];    /* "Debian GNU/Linux 12 (bookworm)" */
};
/* os-release(5): KEY=value lines, values optionally quoted with shell escapes. -EINVAL when
 * neither ID nor PRETTY_NAME is present. */
int check_parse_os_release(const char *text, size_t n, struct check_os *ret);
/* MemAvailable from /proc/meminfo, in bytes; -ENOENT when absent. */
int check_parse_meminfo(const char *text, size_t n, uint64_t *ret_bytes);
/* Does the first "flags"/"Features" line of /proc/cpuinfo contain flag? */
bool check_cpuinfo_has_flag(const char *text, size_t n, const char *flag);
/* RFC 1123 host name of at most CHECK_HOSTNAME_MAX characters; on failure why says why. */
int check_hostname_valid(const char *name, struct lerr *why);
/* An SNTP server reply (48+ bytes) to a request sent at t1_ms (our clock) received at t4_ms:
 * the offset of our clock from the server's (server - ours), in ms. -EPROTO for a reply that
 * is not a valid server answer to that request; -EAGAIN for a kiss-o'-death. */
int check_ntp_parse_reply(const uint8_t *buf, size_t n, uint64_t sent_ts, int64_t t1_ms,
                          int64_t t4_ms, int64_t *ret_offset_ms);
/* The NTP timestamp (seconds since 1900 << 32 | fraction) for unix ms. */
uint64_t check_ntp_timestamp(int64_t unix_ms);
