/* ledged.h — the daemon's context: everything main.c wires together and the API handlers use. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "agent/agent.h"
#include "agent/state.h"
#include "config/config.h"
#include "engine/engine.h"
#include "net/http_server.h"

struct event_base;
struct workload_server;
struct hub_link;
struct deploy_stream;

struct ledged {
    struct event_base *base;
    struct ledge_config cfg;
    char *config_path;
    char *hub_program;     /* resolved path of ledge-hub */
    struct state_db *db;
    struct engine *docker;
    struct engine *process;
    struct agent *agent;
    struct hs_server *mgmt;
    struct workload_server *workload;
    struct hub_link *hub;
    struct engine_version docker_version;
    bool docker_version_known;
    struct deploy_stream *deploy_streams; /* clients following a deployment (mgmt.c) */
};

/* mgmt.c */
int mgmt_start(struct ledged *d);
void mgmt_stop(struct ledged *d);
/* Progress lines during deployments (image pulls) go to every client following a deploy. */
void mgmt_progress(struct ledged *d, const char *module, const char *line);

/* modules.c: the agent's hooks (module identity environment, workload sockets, hub config). */
void modules_hooks(struct ledged *d, struct agent_hooks *hooks);
