/* tempfilter.c — sample module: a temperature filter. Reads readings on input input1 and forwards
 * those whose machine.temperature is above the threshold to output output1, with their
 * properties, MessageType=Alert (as IoT Edge's filter sample does) and threshold=<the threshold
 * applied>. The threshold comes from
 * the environment (TemperatureThreshold), then from the twin's desired TemperatureThreshold, and
 * the direct method SetThreshold ({"threshold": N}) changes it at once; the threshold in force is
 * reported in the reported properties. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "common/sample.h"
#include "log/log.h"

#define NAME "tempfilter"
#define INPUT "input1"
#define OUTPUT "output1"
#define THRESHOLD_MIN -273.15
#define THRESHOLD_MAX 1e6

struct filter {
    struct sample s;
    double threshold;
    int64_t desired_version; /* of the desired properties applied last */
    unsigned long long received, forwarded, dropped, invalid;
    bool invalid_logged;
    bool reported_once;
};

static void report(struct filter *f, const char *source)
{
    f->reported_once = true;
    json_t *p =
        json_pack("{s:f, s:s}", "TemperatureThreshold", f->threshold, "thresholdSource", source);
    if (p && modclient_twin_report(f->s.client, p, NULL, NULL) < 0)
        log_debug(NAME, "reported properties not sent (too many requests pending)");
    json_decref(p);
}

static void set_threshold(struct filter *f, double v, const char *source)
{
    if (v != f->threshold)
        log_info(NAME, "threshold %g (from %s)", v, source);
    f->threshold = v;
    report(f, source);
}

static void on_reading(void *ud, const struct modclient_message *m)
{
    struct filter *f = ud;
    f->received++;
    json_t *j = NULL;
    double t;
    if (ljson_parse((const char *)m->body, m->len, &j, NULL) < 0 ||
        !sample_json_number(json_object_get(json_object_get(j, "machine"), "temperature"), &t)) {
        f->invalid++;
        if (!f->invalid_logged)
            log_warn(NAME,
                     "dropping messages on %s without a numeric machine.temperature "
                     "(logged once)",
                     m->input);
        f->invalid_logged = true;
        json_decref(j);
        return;
    }
    json_decref(j);
    if (t <= f->threshold) {
        f->dropped++;
        return;
    }
    struct iothub_props props = *m->props;
    char th[32];
    snprintf(th, sizeof(th), "%g", f->threshold);
    if (modclient_props_add(&props, "MessageType", "Alert") < 0 ||
        modclient_props_add(&props, "threshold", th) < 0) {
        f->dropped++;
        return;
    }
    int r = modclient_send_output(f->s.client, OUTPUT, &props, m->body, m->len, NULL, NULL);
    if (r < 0) {
        log_warn(NAME, "reading not forwarded: %s", strerror(-r));
        f->dropped++;
        return;
    }
    f->forwarded++;
    log_debug(NAME, "forwarded a reading of %.3f (> %g)", t, f->threshold);
}

static void on_desired(void *ud, const json_t *desired, int64_t version, bool complete)
{
    struct filter *f = ud;
    json_t *j = json_object_get(desired, "TemperatureThreshold");
    double v;
    /* After a reconnect the whole document comes again: a method's threshold stays in force
     * unless the desired properties changed meanwhile. */
    bool seen = complete && version == f->desired_version;
    f->desired_version = version;
    if (seen)
        return;
    if (!j) {
        if (complete && !f->reported_once)
            report(f, "env"); /* say once which threshold is in force */
        return;
    }
    if (!sample_json_number(j, &v) || v < THRESHOLD_MIN || v > THRESHOLD_MAX) {
        log_warn(NAME, "desired TemperatureThreshold is not a temperature; keeping %g",
                 f->threshold);
        return;
    }
    set_threshold(f, v, "twin");
}

static int on_set_threshold(void *ud, const char *method, const json_t *payload, json_t **ret)
{
    struct filter *f = ud;
    double v;
    if (!sample_json_number(json_object_get(payload, "threshold"), &v) || v < THRESHOLD_MIN ||
        v > THRESHOLD_MAX) {
        *ret = json_pack("{s:s}", "message", "expected {\"threshold\": <number of degrees>}");
        return 400;
    }
    set_threshold(f, v, "method");
    *ret = json_pack("{s:f, s:I, s:I}", "threshold", f->threshold, "forwarded",
                     (json_int_t)f->forwarded, "dropped", (json_int_t)f->dropped);
    return 200;
}

static int on_stats(void *ud, const char *method, const json_t *payload, json_t **ret)
{
    struct filter *f = ud;
    *ret = json_pack("{s:f, s:I, s:I, s:I, s:I}", "threshold", f->threshold, "received",
                     (json_int_t)f->received, "forwarded", (json_int_t)f->forwarded, "dropped",
                     (json_int_t)f->dropped, "invalid", (json_int_t)f->invalid);
    return 200;
}

int main(void)
{
    struct filter f = {0};
    if (!sample_env_number("TemperatureThreshold", 25, THRESHOLD_MIN, THRESHOLD_MAX, &f.threshold))
        return 2;
    if (sample_init(&f.s, NAME) < 0)
        return 1;
    if (modclient_on_input(f.s.client, INPUT, on_reading, &f) < 0 ||
        modclient_on_method(f.s.client, "SetThreshold", on_set_threshold, &f) < 0 ||
        modclient_on_method(f.s.client, "GetStats", on_stats, &f) < 0)
        return 1;
    modclient_on_desired(f.s.client, on_desired, &f);
    log_info(NAME, "forwarding readings above %g from %s to %s", f.threshold, INPUT, OUTPUT);
    int rc = sample_run(&f.s);
    sample_done(&f.s);
    log_info(NAME, "stopped: %llu received, %llu forwarded, %llu below the threshold", f.received,
             f.forwarded, f.dropped);
    return rc;
}
