/* connectivity.c — checks of the hub's ports and of the upstream link. They land with the hub:
 * until then each says what there is to check and skips. A real check replaces the body of its
 * function; the table row in check.c stays. */
#include "check/check-internal.h"

/* Is ledge's hub part of the deployment? */
static bool deployment_has_hub(const struct check_deployment *d)
{
    for (size_t i = 0; d && i < d->n_modules; i++)
        if (d->modules[i].system)
            return true;
    return false;
}

void check_hub_ports(struct check_ctx *ctx, struct check_report *rep)
{
    if (!deployment_has_hub(ctx->in->deployment)) {
        report_skip(rep, "the hub is not part of this deployment%s%s",
                    ctx->in->deployment ? "" : ": ",
                    ctx->in->deployment ? "" : ctx->in->no_deployment ?: "no deployment");
        return;
    }
    report_skip(rep, "the hub's port check (%d%s) is not implemented yet", ctx->cfg->hub.tls_port,
                ctx->cfg->hub.plain_port ? " and the plain port" : "");
}

void check_upstream(struct check_ctx *ctx, struct check_report *rep)
{
    const struct config_upstream *u = &ctx->cfg->upstream;
    if (!u->enabled) {
        report_skip(rep, "upstream is not enabled (upstream.enabled)");
        return;
    }
    report_skip(rep, "the upstream check (%s:%d, TCP then TLS) is not implemented yet",
                u->host ? u->host : "?", u->port);
}
