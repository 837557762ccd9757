/* sample.h — what both sample modules share: logging set up from RuntimeLogLevel, numeric
 * settings from the environment, the module client from the injected environment, and an
 * orderly stop on SIGTERM/SIGINT (the container's PID 1 gets them). */
#pragma once

#include <stdbool.h>

#include "modclient/modclient.h"

struct event_base;

struct sample {
    const char *name;
    struct event_base *base;
    struct modclient *client;
    struct event *sigterm, *sigint;
};

/* Logger named name, level from RuntimeLogLevel; the client from the environment, connection
 * changes logged. Returns 0 or logs why not and returns < 0. */
int sample_init(struct sample *s, const char *name);
/* Connect and run until SIGTERM/SIGINT. Returns the process exit code. */
int sample_run(struct sample *s);
/* Free the client (pending operations are cancelled) and the loop: the module's own events
 * must be freed before. */
void sample_done(struct sample *s);
/* A number from the environment: dflt when unset; false (logged) when not a number within
 * [min, max]. */
bool sample_env_number(const char *name, double dflt, double min, double max, double *ret);
/* A JSON number (integer or real) as a double. */
bool sample_json_number(const json_t *j, double *ret);
