/* dashboard_internal.h — what dashboard.c and dashboard_remote.c share. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "dashboard/session.h"
#include "ledged.h"

struct hc_client;
struct remote_call;
struct fleet;

struct dashboard {
    struct ledged *d;
    struct hs_server *srv;
    struct dash_tokens *tokens;
    struct dash_sessions sessions;
    struct hs_route *routes;
    size_t n_routes;
    size_t n_api; /* the management API's routes among them, after own_routes */
    char *assets;
    bool tls;
    struct ssl_ctx_st *ctx;
    /* remote devices (dashboard_remote.c): [{name, address, token, pin, deviceId, addedAt}] */
    json_t *remotes;
    struct hc_client *hc;
    struct remote_call *calls; /* in flight */
    struct fleet *fleets;      /* GET /api/fleet in flight (dashboard_fleet.c) */
    size_t n_fleets;
};

/* dashboard_remote.c */
int dash_remotes_load(struct ledged *d, struct dashboard *b);
void dash_remotes_free(struct dashboard *b);
void dash_h_remotes(struct hs_request *r, void *ud);
void dash_h_remote_add(struct hs_request *r, void *ud);
void dash_h_remote_remove(struct hs_request *r, void *ud);
void dash_h_remote_proxy(struct hs_request *r, void *ud);
/* Answers a request under /api/remotes/{name}/api/...; false (nothing answered) otherwise. */
bool dash_remote_proxy(struct hs_request *r, struct ledged *d);

/* dashboard_fleet.c */
void dash_h_fleet(struct hs_request *r, void *ud);
void dash_fleet_free(struct dashboard *b);
