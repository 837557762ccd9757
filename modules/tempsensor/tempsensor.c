/* tempsensor.c — sample module: a simulated temperature sensor. Sends a JSON reading on output
 * temperatureOutput every SendInterval seconds (env, or the twin's desired SendInterval), in the
 * shape of IoT Edge's SimulatedTemperatureSensor plus a sequence number, and reports the interval
 * and progress in its reported properties. MessageCount (env; 0 = forever) bounds the readings.
 * The machine temperature is a deterministic saw-tooth from 20.25 °C rising 1 °C per reading
 * over 20 readings, with a small deterministic wobble: reading n is above threshold T (20-40)
 * exactly when n % 20 >= T - 20, which the system tests rely on. */
#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/timeutil.h"
#include "common/sample.h"
#include "log/log.h"

#define NAME "tempsensor"
#define OUTPUT "temperatureOutput"
#define INTERVAL_MIN 0.001
#define INTERVAL_MAX 86400.0

struct sensor {
    struct sample s;
    struct event *tick;
    double interval_s;
    unsigned long long count; /* 0 = forever */
    unsigned long long seq;   /* readings produced */
    unsigned long long acked;
    bool waiting_logged;
};

static void arm(struct sensor *x)
{
    long long us = llround(x->interval_s * 1e6);
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    evtimer_add(x->tick, &tv);
}

static void on_acked(void *ud, int result)
{
    struct sensor *x = ud;
    if (result == 0)
        x->acked++;
    if (x->count && x->acked == x->count)
        log_info(NAME, "all %llu readings acknowledged by the hub", x->count);
}

static void report(struct sensor *x)
{
    json_t *p =
        json_pack("{s:f, s:I}", "SendInterval", x->interval_s, "readingsSent", (json_int_t)x->seq);
    if (p && modclient_twin_report(x->s.client, p, NULL, NULL) < 0)
        log_debug(NAME, "reported properties not sent (too many requests pending)");
    json_decref(p);
}

static double wobble(unsigned long long n)
{
    /* a fixed pseudo-random sequence in [0, 0.5) */
    unsigned long long v = n * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(v >> 40) / (double)(1ULL << 24) * 0.5;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sensor *x = arg;
    if (x->count && x->seq >= x->count)
        return;
    /* Never drop a reading: while the client holds its maximum of unacknowledged messages
     * (the hub is away), wait instead of producing more. */
    if (modclient_pending(x->s.client) >= MODCLIENT_MAX_PENDING_DEFAULT) {
        if (!x->waiting_logged)
            log_warn(NAME, "%zu readings wait for the hub; pausing",
                     modclient_pending(x->s.client));
        x->waiting_logged = true;
        arm(x);
        return;
    }
    x->waiting_logged = false;
    unsigned long long n = x->seq;
    double machine = 20.25 + (double)(n % 20) + wobble(n);
    double pressure = 1.0 + (machine - 20.0) * 0.04;
    double ambient = 21.0 + wobble(n + 7);
    int humidity = 24 + (int)(n % 3);
    char when[LTIME_RFC3339_MAX];
    ltime_format_rfc3339(ltime_now_ms(), when);
    json_t *body =
        json_pack("{s:{s:f, s:f}, s:{s:f, s:i}, s:s, s:I}", "machine", "temperature",
                  round(machine * 1000) / 1000, "pressure", round(pressure * 1000) / 1000,
                  "ambient", "temperature", round(ambient * 1000) / 1000, "humidity", humidity,
                  "timeCreated", when, "seq", (json_int_t)n);
    /* 10 significant digits: the readings are rounded to 3 decimals */
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(body);
    char mid[40], seq[24];
    snprintf(mid, sizeof(mid), "%s-%llu", NAME, n);
    snprintf(seq, sizeof(seq), "%llu", n);
    struct iothub_props props = {0};
    props.sys[IOTHUB_PROP_MESSAGE_ID] = mqtt_str_c(mid);
    props.sys[IOTHUB_PROP_CONTENT_TYPE] = mqtt_str_c("application/json");
    props.sys[IOTHUB_PROP_CONTENT_ENCODING] = mqtt_str_c("utf-8");
    modclient_props_add(&props, "seq", seq);
    int r =
        text ? modclient_send_output(x->s.client, OUTPUT, &props, text, strlen(text), on_acked, x)
             : -ENOMEM;
    free(text);
    if (r < 0) {
        log_error(NAME, "reading %llu not sent: %s", n, strerror(-r));
    } else {
        x->seq++;
        log_debug(NAME, "reading %llu: machine %.3f", n, machine);
        if (x->seq % 100 == 0 || (x->count && x->seq == x->count))
            report(x);
        if (x->count && x->seq == x->count)
            log_info(NAME, "sent the %llu readings of MessageCount", x->count);
    }
    arm(x);
}

static void on_desired(void *ud, const json_t *desired, int64_t version, bool complete)
{
    struct sensor *x = ud;
    double v;
    json_t *j = json_object_get(desired, "SendInterval");
    if (!j)
        return;
    if (!sample_json_number(j, &v) || v < INTERVAL_MIN || v > INTERVAL_MAX) {
        log_warn(NAME, "desired SendInterval: expected seconds from %g to %g; keeping %g",
                 INTERVAL_MIN, INTERVAL_MAX, x->interval_s);
        return;
    }
    if (v != x->interval_s) {
        log_info(NAME, "SendInterval %g s (twin, version %lld)", v, (long long)version);
        x->interval_s = v;
        evtimer_del(x->tick);
        arm(x);
    }
    report(x);
}

int main(void)
{
    struct sensor x = {0};
    double count;
    if (!sample_env_number("SendInterval", 5, INTERVAL_MIN, INTERVAL_MAX, &x.interval_s) ||
        !sample_env_number("MessageCount", 0, 0, 1e15, &count))
        return 2;
    x.count = (unsigned long long)count;
    if (sample_init(&x.s, NAME) < 0)
        return 1;
    x.tick = evtimer_new(x.s.base, tick_cb, &x);
    if (!x.tick)
        return 1;
    modclient_on_desired(x.s.client, on_desired, &x);
    log_info(NAME, "a reading every %g s on output %s%s", x.interval_s, OUTPUT,
             x.count ? "" : ", forever");
    arm(&x);
    int rc = sample_run(&x.s);
    event_free(x.tick);
    sample_done(&x.s);
    log_info(NAME, "stopped: %llu readings sent, %llu acknowledged", x.seq, x.acked);
    return rc;
}
