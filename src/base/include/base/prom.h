/* prom.h — a writer of the Prometheus text exposition format (version 0.0.4): metric families
 * (# HELP, # TYPE) and their samples, with names checked and label values and help text escaped
 * as the format says (label values: backslash, double quote and newline; help: backslash and
 * newline). Writes into an lbuf; the first error sticks and later calls do nothing. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum prom_type { PROM_COUNTER, PROM_GAUGE, PROM_SUMMARY, PROM_HISTOGRAM, PROM_UNTYPED };

struct prom_label {
    const char *name;
    const char *value; /* NULL writes "" */
};

struct prom_writer {
    struct lbuf *out;
    /* Labels every sample carries first (IoT Edge's iothub, edge_device, instance_number). */
    const struct prom_label *common;
    size_t n_common;
    const char *family; /* the family being written: samples must belong to it */
    int err;            /* 0, or the first -errno (-EINVAL for a bad name) */
};

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
bool prom_metric_name_valid(const char *name);
/* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved) */
bool prom_label_name_valid(const char *name);

void prom_writer_init(struct prom_writer *w, struct lbuf *out, const struct prom_label *common,
                      size_t n_common);
/* Start a family: # HELP and # TYPE lines. Each name once per exposition (the caller's duty). */
void prom_family(struct prom_writer *w, const char *name, enum prom_type type, const char *help);
/* One sample of the current family; suffix ("", "_sum", "_count", "_bucket") is appended to the
 * family's name. value is written as Prometheus reads floats (NaN, +Inf, -Inf, integers exact). */
void prom_sample(struct prom_writer *w, const char *suffix, const struct prom_label *labels,
                 size_t n_labels, double value);
/* A summary's quantile samples: one per phis[i], with the labels and then quantile="<phis[i]>",
 * valued values[i] (NaN when its window is empty, as Prometheus' clients write). At most
 * PROM_MAX_LABELS labels. */
#define PROM_MAX_LABELS 16
void prom_quantiles(struct prom_writer *w, const struct prom_label *labels, size_t n_labels,
                    const double *phis, const double *values, size_t n);
/* 0, or the first error. */
int prom_writer_error(const struct prom_writer *w);

/* Escapes, appended to out; exposed for tests. */
int prom_escape_label_value(struct lbuf *out, const char *s);
int prom_escape_help(struct lbuf *out, const char *s);
/* A float as the format spells it, into buf (at least 32 bytes). */
const char *prom_format_value(double v, char *buf, size_t size);
