/* engine.h — the one interface every module backend implements, an ops table registered by name
 * and chosen at run time: `docker` (the Docker Engine API: Moby, Docker CE, Podman's compatible
 * socket) and `process` (supervised native programs); the embedded `oci` engine joins the table
 * the same way. All operations are asynchronous on the caller's event loop and report through a
 * callback exactly once, unless the engine is freed first (a blocking caller runs the loop with
 * engine_wait()). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/macro.h"
#include "base/str.h"

struct event_base;
struct engine;

/* The oldest Docker Engine API ledge speaks. */
#define ENGINE_DOCKER_MIN_API "1.41"

/* Labels ledge puts on everything it creates; containers without the owner label are never
 * touched. */
#define ENGINE_LABEL_OWNER "dev.ledge.owner"
#define ENGINE_LABEL_OWNER_VALUE "ledge"
#define ENGINE_LABEL_MODULE "dev.ledge.module"
#define ENGINE_LABEL_HASH "dev.ledge.config-hash"
#define ENGINE_LABEL_IMAGE "dev.ledge.image"
#define ENGINE_LABEL_GENERATION "dev.ledge.generation-id"
#define ENGINE_LABEL_VERSION "dev.ledge.version"
/* Which ledge instance (its device id) owns the container: two instances sharing one engine
 * never touch each other's containers. */
#define ENGINE_LABEL_DEVICE "dev.ledge.device"

enum ctr_state {
    CTR_UNKNOWN = 0,
    CTR_CREATED,
    CTR_RUNNING,
    CTR_PAUSED,
    CTR_RESTARTING,
    CTR_EXITED,
    CTR_DEAD,
    CTR_REMOVING,
};

enum ctr_health {
    HEALTH_NONE = 0, /* no HEALTHCHECK */
    HEALTH_STARTING,
    HEALTH_HEALTHY,
    HEALTH_UNHEALTHY,
};

struct engine_container {
    char *id;
    char *name;
    char *image;
    json_t *labels; /* object, never NULL after a successful list/inspect */
    enum ctr_state state;
    enum ctr_health health;
    int exit_code;      /* -1 when unknown (e.g. an adopted process) */
    int64_t started_ms; /* 0 when never */
    int64_t finished_ms;
    int pid;
    bool tty;
    char *error; /* the engine's own error text for the last start, or NULL */
};

void engine_container_clear(struct engine_container *c);
void engine_containers_free(struct engine_container *v, size_t n);
const char *ctr_state_name(enum ctr_state s);
const char *ctr_health_name(enum ctr_health h);
const char *engine_label(const struct engine_container *c, const char *key);

struct engine_version {
    char product[64];     /* "Moby", "Docker CE", "Podman", "ledge process supervisor" */
    char version[64];     /* engine version */
    char api_version[16]; /* "1.41" */
    char min_api_version[16];
    char os[32];   /* "linux" */
    char arch[32]; /* engine's GOARCH: amd64, arm64, arm */
    char kernel[128];
    bool log_rotation_default;   /* the engine's default log config rotates */
    char default_log_driver[32]; /* "json-file", "journald", ...; "" when unknown */
    char data_root[256];         /* where the engine keeps images and containers; "" unknown */
    bool builtin; /* ledge's own engine (oci): no daemon and no Engine API (api_version "") */
};

/* API versions "MAJOR.MINOR" ("1.41" < "1.43" < "1.100"): < 0, 0, > 0. */
int engine_api_compare(const char *a, const char *b);

/* What to create. Borrowed pointers: the engine copies what it keeps. Engines that run images
 * read image and create_options; engines that run programs read path and args. */
struct engine_create_spec {
    const char *name;
    const char *image;            /* images: the normalised reference */
    const json_t *create_options; /* images: the user's ContainerCreate object, or NULL */
    const json_t *labels;         /* ledge's labels: win over the user's on conflict */
    const json_t *env;   /* object NAME -> string: manifest env merged under identity env */
    const json_t *binds; /* array of "host:container[:opts]" added to HostConfig.Binds */
    /* A host name that leads to the host from inside the module (its entry is the host's address
     * as the module's network sees it), or NULL. Engines whose modules share the host's network
     * ignore it. */
    const char *gateway_hostname;
    const char *network;              /* join this network unless the user set NetworkMode */
    const json_t *default_log_config; /* LogConfig used when the user set none */
    const char *path;                 /* programs: absolute path */
    const json_t *args;               /* programs: array of strings */
};

struct engine_registry_auth {
    const char *username;
    const char *password;
    const char *server;
};

enum engine_event_kind {
    ENGINE_EVENT_START,
    ENGINE_EVENT_DIE,    /* exit_code set */
    ENGINE_EVENT_HEALTH, /* health set */
    ENGINE_EVENT_DESTROY,
    ENGINE_EVENT_OOM,
    ENGINE_EVENT_CONNECTED,    /* the event stream is (re)established: resynchronise */
    ENGINE_EVENT_DISCONNECTED, /* the engine went away: state is unknown until CONNECTED */
};

struct engine_event {
    enum engine_event_kind kind;
    const char *id;
    const char *name;
    int exit_code;
    enum ctr_health health;
    int64_t time_ms;
    int pid; /* START of a process module: its pid (0 when unknown) */
};

struct engine_logs_options {
    bool follow;
    bool timestamps;
    long tail;        /* -1 = all */
    int64_t since_ms; /* 0 = from the start */
};

typedef void (*engine_done_fn)(void *ud, int result, const struct lerr *err);
typedef void (*engine_create_fn)(void *ud, int result, const char *id, const struct lerr *err);
typedef void (*engine_inspect_fn)(void *ud, int result, const struct engine_container *c,
                                  const struct lerr *err);
typedef void (*engine_list_fn)(void *ud, int result, const struct engine_container *v, size_t n,
                               const struct lerr *err);
typedef void (*engine_version_fn)(void *ud, int result, const struct engine_version *v,
                                  const struct lerr *err);
typedef void (*engine_event_fn)(void *ud, const struct engine_event *ev);
typedef void (*engine_progress_fn)(void *ud, const char *line);
/* A JSON answer (borrowed: copy what you keep); NULL with result < 0. */
typedef void (*engine_json_fn)(void *ud, int result, const json_t *doc, const struct lerr *err);
/* stream: 1 stdout, 2 stderr; return < 0 to stop. */
typedef int (*engine_log_fn)(void *ud, int stream, const char *data, size_t n);

/* Module logs rotate by default (engine.log_max_size, engine.log_max_files). */
#define ENGINE_LOG_MAX_SIZE_DEFAULT (10ull << 20)
#define ENGINE_LOG_MAX_FILES_DEFAULT 3

struct engine_config {
    const char *uri;       /* docker: unix:///var/run/docker.sock or http://host:port */
    const char *state_dir; /* process, oci: where records, images and logs live */
    /* process: its logs rotate at this size, keeping this many files in all (0: the defaults);
     * container engines get the same through the default LogConfig */
    uint64_t log_max_size;
    int log_max_files;
    long log_check_ms;    /* process: how often the logs' sizes are looked at; 0: every 5 s */
    const char *run_dir;  /* oci: runtime state and the keeper's socket (gone at reboot) */
    const char *runtime;  /* oci: engine.runtime: "auto", "crun", "runc" or a path */
    const char *network;  /* oci: engine.network, the module network's name */
    const char *subnet;   /* oci: engine.subnet, its IPv4 range */
    const char *cni_path; /* oci: engine.cni_path, the CNI plugins' directory */
    bool userns;          /* oci: engine.userns */
    /* oci: engine.image_gc_after: unused images go after this; 0 never */
    int64_t image_gc_after_ms;
    const char *instance;    /* docker: only containers labelled dev.ledge.device=<instance> */
    long request_timeout_ms; /* ordinary API calls */
    long pull_timeout_ms;
    /* docker, oci: upstream.parent, the host "$upstream" in image references names (NULL: none,
     * such images are refused), and the CA file the oci engine trusts it with (NULL: certs.d,
     * then the system's CAs) */
    const char *upstream_parent;
    const char *upstream_ca_file;
    engine_event_fn on_event;
    void *event_ud;
    struct lerr *init_error; /* optional: why init failed, when the engine can say */
};

struct engine_logs; /* a running logs request, cancellable */

/* What an engine's modules are made from: which manifest settings it reads (docs/manifest.md). */
enum engine_runs {
    ENGINE_RUNS_IMAGES,   /* settings.image + createOptions (docker, oci) */
    ENGINE_RUNS_PROGRAMS, /* settings.path + args (process) */
};

typedef void (*engine_platform_fn)(void *ud, int result, const char *os, const char *arch,
                                   const char *variant, const struct lerr *err);

/* A platform an image reference offers (strings borrowed for the callback). */
struct engine_platform {
    const char *os;
    const char *arch;
    const char *variant; /* NULL or "" when none */
};
typedef void (*engine_platforms_fn)(void *ud, int result, const struct engine_platform *v, size_t n,
                                    const struct lerr *err);

/* Every op is required unless marked optional; an optional op is NULL when the engine does not
 * have that capability, and callers ask the table, never the engine's name. */
struct engine_ops {
    const char *name; /* the registry key: engine.type in the config */
    enum engine_runs runs;
    size_t priv_size;
    int (*init)(struct engine *e, const struct engine_config *cfg);
    int (*start)(struct engine *e); /* begin watching events */
    void (*stop)(struct engine *e);
    void (*fini)(struct engine *e);

    int (*version)(struct engine *e, engine_version_fn cb, void *ud);
    /* Optional: modules join a network the engine manages; create it when missing. */
    int (*ensure_network)(struct engine *e, const char *name, engine_done_fn cb, void *ud);
    /* Optional (both or neither): the engine keeps images and pulls them from registries. */
    int (*image_present)(struct engine *e, const char *image, engine_done_fn cb, void *ud);
    int (*pull)(struct engine *e, const char *image, const struct engine_registry_auth *auth,
                engine_progress_fn progress, engine_done_fn cb, void *ud);
    int (*create)(struct engine *e, const struct engine_create_spec *spec, engine_create_fn cb,
                  void *ud);
    int (*start_container)(struct engine *e, const char *id, engine_done_fn cb, void *ud);
    int (*stop_container)(struct engine *e, const char *id, int timeout_s, engine_done_fn cb,
                          void *ud);
    int (*remove)(struct engine *e, const char *id, engine_done_fn cb, void *ud);
    int (*inspect)(struct engine *e, const char *id_or_name, engine_inspect_fn cb, void *ud);
    /* Everything carrying the owner label (and this instance's device label). */
    int (*list)(struct engine *e, engine_list_fn cb, void *ud);
    struct engine_logs *(*logs)(struct engine *e, const char *id,
                                const struct engine_logs_options *o, engine_log_fn on_data,
                                engine_done_fn cb, void *ud);
    void (*logs_cancel)(struct engine_logs *l);
    /* Optional: a present image's platform (os, architecture, variant) for the host/guest
     * rule (engine/platform.h). */
    int (*image_platform)(struct engine *e, const char *image, engine_platform_fn cb, void *ud);
    /* Optional: the platforms a reference offers in its registry, asked without pulling it (for
     * checks before a pull); at least one, else an error. */
    int (*registry_platforms)(struct engine *e, const char *image,
                              const struct engine_registry_auth *auth, engine_platforms_fn cb,
                              void *ud);
    /* Optional, synchronous: the deploy-time check of a module's (normalised) createOptions:
     * each field this engine cannot honour is an error "<prefix>.<field>: why" appended to
     * errors, so that nothing a deployment asks for is ignored without a word. */
    void (*check_create_options)(struct engine *e, const json_t *create_options, const char *prefix,
                                 struct lstrv *errors);
    /* Optional (`ledge image`): the engine's images — list ({"images": [{name, config,
     * platform, layers, usedBy: [module]}]}), load an archive (`docker save`, OCI layout) from a
     * path on this host ({"images": [names]}), remove one no container uses, prune every one no
     * container uses ({"removed": [names]}). */
    int (*image_list)(struct engine *e, engine_json_fn cb, void *ud);
    int (*image_load)(struct engine *e, const char *path, const char *name, engine_json_fn cb,
                      void *ud);
    int (*image_remove)(struct engine *e, const char *image, engine_json_fn cb, void *ud);
    int (*image_prune)(struct engine *e, engine_json_fn cb, void *ud);
};

struct engine {
    const struct engine_ops *ops;
    struct event_base *base;
    engine_event_fn on_event;
    void *event_ud;
    void *priv;
    char *upstream_parent;  /* engine_config's, owned; NULL when not configured */
    char *upstream_ca_file; /* engine_config's, owned; NULL when not configured */
};

/* IoT Edge's nested-edge registry: "$upstream:PORT/repo:tag" is an image on the parent device's
 * registry proxy (docs/registry-proxy.md). Image engines resolve it before anything else. */
#define ENGINE_UPSTREAM_REGISTRY "$upstream"
/* Room for a resolved reference (a 253-byte parent host instead of "$upstream"). */
#define ENGINE_IMAGE_MAX 512
/* True when image (or a registry address) names "$upstream". */
bool engine_names_upstream(const char *image);
/* "$upstream:PORT[/rest]" → "<parent>:PORT[/rest]" into dst (an IPv6 parent in brackets); any
 * other reference is copied as it is. 1 when rewritten, 0 when copied; -EINVAL with a message
 * for a $upstream without a valid port or without a parent (NULL or ""), -ENAMETOOLONG when the
 * result does not fit. Pure. */
int engine_upstream_resolve(const char *parent, const char *image, char *dst, size_t size,
                            struct lerr *err);
/* The same with the engine's upstream.parent. */
int engine_image_resolve(const struct engine *e, const char *image, char *dst, size_t size,
                         struct lerr *err);

/* The backends, for tests that wrap one; everything else finds them by name. */
extern const struct engine_ops engine_docker_ops;
extern const struct engine_ops engine_process_ops;
extern const struct engine_ops engine_oci_ops;

/* The registry: the engines this build has, by name; NULL when there is none of that name. */
const struct engine_ops *engine_ops_find(const char *name);
/* The registered engines in order, i < engine_ops_count(). */
size_t engine_ops_count(void);
const struct engine_ops *engine_ops_at(size_t i);

/* Allocate and init an engine of the given ops. */
int engine_new(const struct engine_ops *ops, struct event_base *base,
               const struct engine_config *cfg, struct engine **ret);
void engine_free(struct engine *e);
/* Where the engine's events go from now on (replacing cfg->on_event); fn NULL drops them. */
void engine_set_event_handler(struct engine *e, engine_event_fn fn, void *ud);
/* For blocking callers (the CLI): run the engine's event loop until *done is true (set it in the
 * op's callback). -EIO when nothing is left that could set it. */
int engine_wait(struct engine *e, const bool *done);
