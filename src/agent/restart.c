/* restart.c — restart policy decisions and back-off arithmetic (see restart.h). */
#include "agent/restart.h"

bool restart_policy_applies(enum restart_policy p, int exit_code, bool unhealthy)
{
    switch (p) {
    case RESTART_NEVER:
        return false;
    case RESTART_ON_FAILURE:
        return exit_code != 0;
    case RESTART_ON_UNHEALTHY:
        /* IoT Edge never implemented health here; ledge uses the container's HEALTHCHECK. */
        return exit_code != 0 || unhealthy;
    case RESTART_ALWAYS:
        return true;
    }
    return false;
}

int64_t restart_backoff_ms(const struct restart_tunables *t, unsigned restart_count)
{
    int64_t wait = t->backoff_base_ms;
    for (unsigned i = 0; i < restart_count && wait < t->backoff_max_ms; i++)
        wait *= 2;
    return wait < t->backoff_max_ms ? wait : t->backoff_max_ms;
}

unsigned restart_effective_count(const struct restart_tunables *t, unsigned restart_count,
                                 int64_t started_ms, int64_t exited_ms)
{
    if (started_ms > 0 && exited_ms >= started_ms && exited_ms - started_ms >= t->reset_after_ms)
        return 0;
    return restart_count;
}

enum restart_verdict restart_decide(const struct restart_tunables *t, enum restart_policy p,
                                    int exit_code, bool unhealthy, unsigned restart_count,
                                    int64_t exited_ms, int64_t now_ms, int64_t *ret_at_ms)
{
    if (!restart_policy_applies(p, exit_code, unhealthy))
        return RESTART_NO;
    if (restart_count >= t->max_restarts)
        return RESTART_GIVE_UP;
    int64_t at = exited_ms + restart_backoff_ms(t, restart_count);
    if (at <= now_ms)
        return RESTART_NOW;
    *ret_at_ms = at;
    return RESTART_LATER;
}

const char *restart_verdict_name(enum restart_verdict v)
{
    switch (v) {
    case RESTART_NO:
        return "no";
    case RESTART_NOW:
        return "now";
    case RESTART_LATER:
        return "later";
    case RESTART_GIVE_UP:
        return "give-up";
    }
    return "?";
}
