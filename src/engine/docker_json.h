/* docker_json.h — the pure half of the docker backend: building ContainerCreate bodies (user
 * createOptions merged with what ledge adds), and reading the engine's version, inspect, list and
 * event documents and its multiplexed log stream. No I/O: unit-tested directly. */
#pragma once

#include <jansson.h>

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
/* 0 for a container event we report, -ENOENT for one we ignore. Strings point into j. */
int docker_parse_event(const json_t *j, struct engine_event *ret);

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
