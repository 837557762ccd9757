/* docker_json.h — the pure half of the docker backend: building ContainerCreate bodies (user
 * createOptions merged with what ledge adds), and reading the engine's version, inspect, list and
 * event documents, its pull progress and errors, and its multiplexed log stream. No I/O:
 * unit-tested directly. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"
#include "engine/engine.h"

/* Merge, on the typed form (engine/createopts.h; the user's createOptions are normalised first,
 * -EINVAL naming the first value that is not what the API wants): the user's createOptions are
 * the base; ledge sets Image, adds its labels (ledge's win), puts spec->env over the user's Env
 * (ledge's win), appends binds and the gateway host name's ExtraHosts entry (network_gateway: the
 * module network's gateway address, NULL when unknown), exposes every published port, joins the
 * network unless the user chose a NetworkMode, applies the default log config when the user set
 * none, and sets RestartPolicy "no" because ledge itself owns restarts. */
int docker_build_create_body(const struct engine_create_spec *spec, const char *network_gateway,
                             json_t **ret, struct lerr *err);

int docker_parse_version(const json_t *j, struct engine_version *ret);
int docker_parse_inspect(const json_t *j, struct engine_container *ret);
int docker_parse_list(const json_t *j, struct engine_container **ret, size_t *ret_n);
/* 0 for a container event we report, -ENOENT for one we ignore. Strings point into j. Podman's
 * health_status events carry no status: HEALTH_NONE. */
int docker_parse_event(const json_t *j, struct engine_event *ret);
/* "healthy", "unhealthy", "starting"; HEALTH_NONE for anything else and NULL. */
enum ctr_health docker_health_from_string(const char *s);

/* What a failed pull means, read from the engine's message (Moby answers with an HTTP status and
 * {"message"}, Podman with an {"error"} line in a 200 stream; both carry the registry client's
 * words): -EACCES the registry refused or wanted credentials, -ENOENT it has no such repository
 * or tag, -EHOSTUNREACH it cannot be reached (refused, no such host, timeouts), -EPROTO TLS with
 * it failed (an unknown authority, a bad certificate); fallback otherwise. */
int docker_pull_error_code(const char *msg, int fallback);

/* A pull's progress stream (one JSON document per line) summarised for people: lines about the
 * image and the end of each layer pass as "ID: status"; byte progress of the layers being
 * downloaded and extracted is added up into one line ("downloading 12.5 of 40.0 MB, 2 of 5
 * layers done") at most once per DOCKER_PULL_PROGRESS_MS. Bounded: layers beyond
 * DOCKER_PULL_LAYERS_MAX still pass their own lines but are left out of the sums. */
#define DOCKER_PULL_PROGRESS_MS 1000
#define DOCKER_PULL_LAYERS_MAX 128
struct docker_pull_layer {
    char id[72];
    long long current, total; /* bytes downloaded and announced */
    bool done;                /* downloaded, present already, or complete */
};
struct docker_pull_progress {
    struct docker_pull_layer layers[DOCKER_PULL_LAYERS_MAX];
    size_t n;
    int64_t last_ms; /* when the last summary line was made; 0 never */
    bool changed;    /* byte progress since that line */
};
/* Feed one line of the stream: 1 and a line to show in out, 0 when there is nothing to show now.
 * Errors ({"error": ...}) are not progress: the caller reads them. */
int docker_pull_progress_feed(struct docker_pull_progress *p, const json_t *line, int64_t now_ms,
                              char *out, size_t size);

/* "reg:5000/a/b:tag" → repo "reg:5000/a/b", tag "tag"; digests: tag = NULL, repo = whole. */
int docker_split_reference(const char *image, char **ret_repo, char **ret_tag);

/* Demultiplexer for non-TTY log streams: 8-byte frame headers {stream, 0, 0, 0, size (BE32)}. */
struct docker_demux {
    unsigned char hdr[8];
    size_t hdr_len;
    size_t remaining;
    int stream;
};
int docker_demux_feed(struct docker_demux *m, const char *data, size_t n, engine_log_fn out,
                      void *ud);
void docker_demux_free(struct docker_demux *m);
