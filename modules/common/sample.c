/* sample.c — the sample modules' shared start-up and shutdown (see sample.h). */
#include "common/sample.h"

#include <errno.h>
#include <event2/event.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "log/log.h"

static void on_connection(void *ud, bool connected, const char *why)
{
    struct sample *s = ud;
    if (connected)
        log_info(s->name, "connected to the hub");
    else
        log_warn(s->name, "not connected: %s (retrying)", why ? why : "unknown reason");
}

/* libevent's own messages (its resolver's, say) go through the module's logger. */
static void on_libevent_log(int severity, const char *msg)
{
    if (severity >= EVENT_LOG_ERR)
        log_error("libevent", "%s", msg);
    else if (severity == EVENT_LOG_WARN)
        log_warn("libevent", "%s", msg);
    else if (severity == EVENT_LOG_MSG)
        log_info("libevent", "%s", msg);
    else
        log_debug("libevent", "%s", msg);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct sample *s = arg;
    log_info(s->name, "stopping (signal %d)", (int)sig);
    event_base_loopbreak(s->base);
}

int sample_init(struct sample *s, const char *name)
{
    memset(s, 0, sizeof(*s));
    s->name = name;
    log_set_ident(name);
    /* IoT Edge's names for the levels ledged passes in RuntimeLogLevel. */
    const char *lvl = getenv("RuntimeLogLevel");
    enum log_level l = LOG_LEVEL_INFO;
    if (lstr_eq_ci(lvl, "verbose") || lstr_eq_ci(lvl, "trace"))
        l = LOG_LEVEL_TRACE;
    else if (lstr_eq_ci(lvl, "debug"))
        l = LOG_LEVEL_DEBUG;
    else if (lstr_eq_ci(lvl, "warning") || lstr_eq_ci(lvl, "warn"))
        l = LOG_LEVEL_WARN;
    else if (lstr_eq_ci(lvl, "error") || lstr_eq_ci(lvl, "fatal"))
        l = LOG_LEVEL_ERROR;
    log_set_level(l);
    signal(SIGPIPE, SIG_IGN);
    event_set_log_callback(on_libevent_log);
    struct modclient_config cfg;
    struct lerr e = {0};
    int r = modclient_config_from_env(NULL, NULL, &cfg, &e);
    if (r < 0) {
        log_error(name, "%s", lerr_str(&e));
        return r;
    }
    s->base = event_base_new();
    if (!s->base) {
        modclient_config_clear(&cfg);
        return -ENOMEM;
    }
    r = modclient_new(s->base, &cfg, &s->client, &e);
    log_info(name, "module %s of device %s, hub %s:%d%s", cfg.module_id, cfg.device_id,
             cfg.connect_host ? cfg.connect_host : cfg.gateway_hostname, cfg.port,
             cfg.tls ? "" : " (plain MQTT)");
    modclient_config_clear(&cfg);
    if (r < 0) {
        log_error(name, "%s", lerr_str(&e));
        return r;
    }
    modclient_on_connection(s->client, on_connection, s);
    s->sigterm = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sigint = evsignal_new(s->base, SIGINT, on_signal, s);
    if (!s->sigterm || !s->sigint)
        return -ENOMEM;
    event_add(s->sigterm, NULL);
    event_add(s->sigint, NULL);
    return 0;
}

int sample_run(struct sample *s)
{
    if (modclient_start(s->client) < 0 || event_base_dispatch(s->base) < 0)
        return 1;
    return 0;
}

void sample_done(struct sample *s)
{
    modclient_free(s->client);
    s->client = NULL;
    if (s->sigterm)
        event_free(s->sigterm);
    if (s->sigint)
        event_free(s->sigint);
    if (s->base)
        event_base_free(s->base);
    s->base = NULL;
}

bool sample_env_number(const char *name, double dflt, double min, double max, double *ret)
{
    const char *v = getenv(name);
    if (lstr_empty(v)) {
        *ret = dflt;
        return true;
    }
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(d) || d < min || d > max) {
        log_error("config", "%s: \"%s\" is not a number from %g to %g", name, v, min, max);
        return false;
    }
    *ret = d;
    return true;
}

bool sample_json_number(const json_t *j, double *ret)
{
    if (!json_is_number(j))
        return false;
    *ret = json_number_value(j);
    return isfinite(*ret);
}
