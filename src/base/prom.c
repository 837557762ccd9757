/* prom.c — the Prometheus text exposition writer (prom.h). */
#include "base/prom.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static bool name_char(char c, bool first, bool colon)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
        return true;
    if (colon && c == ':')
        return true;
    return !first && c >= '0' && c <= '9';
}

bool prom_metric_name_valid(const char *name)
{
    if (!name || !*name)
        return false;
    for (size_t i = 0; name[i]; i++)
        if (!name_char(name[i], i == 0, true))
            return false;
    return true;
}

bool prom_label_name_valid(const char *name)
{
    if (!name || !*name || (name[0] == '_' && name[1] == '_'))
        return false;
    for (size_t i = 0; name[i]; i++)
        if (!name_char(name[i], i == 0, false))
            return false;
    return true;
}

static int escape(struct lbuf *out, const char *s, bool quote)
{
    int r = 0;
    for (const char *p = s ? s : ""; *p && r >= 0; p++) {
        if (*p == '\\')
            r = lbuf_puts(out, "\\\\");
        else if (*p == '\n')
            r = lbuf_puts(out, "\\n");
        else if (quote && *p == '"')
            r = lbuf_puts(out, "\\\"");
        else
            r = lbuf_putc(out, *p);
    }
    return r < 0 ? r : 0;
}

int prom_escape_label_value(struct lbuf *out, const char *s)
{
    return escape(out, s, true);
}

int prom_escape_help(struct lbuf *out, const char *s)
{
    return escape(out, s, false);
}

const char *prom_format_value(double v, char *buf, size_t size)
{
    if (isnan(v))
        snprintf(buf, size, "NaN");
    else if (isinf(v))
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53: integers print exactly */
        snprintf(buf, size, "%.0f", v);
    else
        snprintf(buf, size, "%.17g", v);
    return buf;
}

void prom_writer_init(struct prom_writer *w, struct lbuf *out, const struct prom_label *common,
                      size_t n_common)
{
    *w = (struct prom_writer){.out = out, .common = common, .n_common = n_common};
    for (size_t i = 0; i < n_common; i++)
        if (!prom_label_name_valid(common[i].name))
            w->err = -EINVAL;
}

static const char *type_name(enum prom_type t)
{
    switch (t) {
    case PROM_COUNTER:
        return "counter";
    case PROM_GAUGE:
        return "gauge";
    case PROM_SUMMARY:
        return "summary";
    case PROM_HISTOGRAM:
        return "histogram";
    default:
        return "untyped";
    }
}

static void put(struct prom_writer *w, int r)
{
    if (r < 0 && !w->err)
        w->err = r;
}

void prom_family(struct prom_writer *w, const char *name, enum prom_type type, const char *help)
{
    if (w->err)
        return;
    if (!prom_metric_name_valid(name)) {
        w->err = -EINVAL;
        return;
    }
    w->family = name;
    if (help) {
        put(w, lbuf_printf(w->out, "# HELP %s ", name));
        put(w, prom_escape_help(w->out, help));
        put(w, lbuf_putc(w->out, '\n'));
    }
    put(w, lbuf_printf(w->out, "# TYPE %s %s\n", name, type_name(type)));
}

static void put_label(struct prom_writer *w, const struct prom_label *l, bool *first)
{
    if (!prom_label_name_valid(l->name)) {
        w->err = -EINVAL;
        return;
    }
    put(w, lbuf_printf(w->out, "%s%s=\"", *first ? "{" : ",", l->name));
    put(w, prom_escape_label_value(w->out, l->value));
    put(w, lbuf_putc(w->out, '"'));
    *first = false;
}

void prom_sample(struct prom_writer *w, const char *suffix, const struct prom_label *labels,
                 size_t n_labels, double value)
{
    if (w->err)
        return;
    if (!w->family) {
        w->err = -EINVAL;
        return;
    }
    put(w, lbuf_printf(w->out, "%s%s", w->family, suffix ? suffix : ""));
    bool first = true;
    for (size_t i = 0; i < w->n_common && !w->err; i++)
        put_label(w, &w->common[i], &first);
    for (size_t i = 0; i < n_labels && !w->err; i++)
        put_label(w, &labels[i], &first);
    if (!first)
        put(w, lbuf_putc(w->out, '}'));
    char num[40];
    put(w, lbuf_printf(w->out, " %s\n", prom_format_value(value, num, sizeof(num))));
}

void prom_quantiles(struct prom_writer *w, const struct prom_label *labels, size_t n_labels,
                    const double *phis, const double *values, size_t n)
{
    struct prom_label l[PROM_MAX_LABELS + 1];
    if (n_labels > PROM_MAX_LABELS) {
        w->err = w->err ? w->err : -EINVAL;
        return;
    }
    if (n_labels)
        memcpy(l, labels, n_labels * sizeof(*l));
    for (size_t i = 0; i < n && !w->err; i++) {
        char q[32];
        snprintf(q, sizeof(q), "%g", phis[i]);
        l[n_labels] = (struct prom_label){"quantile", q};
        prom_sample(w, NULL, l, n_labels + 1, values[i]);
    }
}

int prom_writer_error(const struct prom_writer *w)
{
    return w->err;
}
