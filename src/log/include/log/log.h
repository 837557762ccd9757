/* log.h — the programs' logger: one line per event with a level and a component tag, written to
 * stderr with a syslog priority prefix ("<6>") when stderr is the journal, so journald keeps
 * levels. Only programs and service layers (agent, hub core) log; libraries return errors instead.
 */
#pragma once

#include <stdbool.h>

#include "base/macro.h"

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_TRACE,
};

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int log_parse_level(const char *name, enum log_level *ret);
const char *log_level_name(enum log_level level);
/* Program name shown in each line (default "ledge"). */
void log_set_ident(const char *ident);

void log_write(enum log_level level, const char *component, const char *fmt, ...) _printf_(3, 4);

#define log_enabled(lvl) ((lvl) <= log_get_level())
#define log_error(comp, ...) log_write(LOG_LEVEL_ERROR, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_write(LOG_LEVEL_WARN, comp, __VA_ARGS__)
#define log_info(comp, ...)                                                                        \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_INFO))                                                           \
            log_write(LOG_LEVEL_INFO, comp, __VA_ARGS__);                                          \
    } while (0)
#define log_debug(comp, ...)                                                                       \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_write(LOG_LEVEL_DEBUG, comp, __VA_ARGS__);                                         \
    } while (0)
#define log_trace(comp, ...)                                                                       \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_TRACE))                                                          \
            log_write(LOG_LEVEL_TRACE, comp, __VA_ARGS__);                                         \
    } while (0)
