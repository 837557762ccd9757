/* restart.h — restart policy and back-off, IoT Edge's rules made configurable: after an exit the
 * wait is min(base * 2^restartCount, max); after max_restarts the module is failed and no longer
 * restarted; a module that ran reset_after without exiting starts counting from zero. Pure. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "agent/manifest.h"

struct restart_tunables {
    int64_t backoff_base_ms; /* 10 s */
    int64_t backoff_max_ms;  /* 300 s */
    unsigned max_restarts;   /* 20 */
    int64_t reset_after_ms;  /* 10 min */
};
#define RESTART_TUNABLES_DEFAULT                                                                   \
    {                                                                                              \
        10000, 300000, 20, 600000                                                                  \
    }

enum restart_verdict {
    RESTART_NO, /* the policy does not restart this exit */
    RESTART_NOW,
    RESTART_LATER,   /* at *ret_at_ms */
    RESTART_GIVE_UP, /* max_restarts reached: the module is failed */
};

/* Does the policy restart an exit with this code (or an unhealthy container)? */
bool restart_policy_applies(enum restart_policy p, int exit_code, bool unhealthy);
int64_t restart_backoff_ms(const struct restart_tunables *t, unsigned restart_count);
/* Count after an exit: reset to 0 when the run lasted reset_after or more. */
unsigned restart_effective_count(const struct restart_tunables *t, unsigned restart_count,
                                 int64_t started_ms, int64_t exited_ms);
enum restart_verdict restart_decide(const struct restart_tunables *t, enum restart_policy p,
                                    int exit_code, bool unhealthy, unsigned restart_count,
                                    int64_t exited_ms, int64_t now_ms, int64_t *ret_at_ms);
const char *restart_verdict_name(enum restart_verdict v);
