/* log.c — the programs' logger (see log.h). Process-wide state is deliberate here: a program has
 * one log destination and one level. */
#include "log/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "base/timeutil.h"

static enum log_level current_level = LOG_LEVEL_INFO;
static const char *ident = "ledge";
static int to_journal = -1; /* -1 unknown, 0 no, 1 yes */

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};
static const int syslog_prio[] = {3, 4, 6, 7, 7};

void log_set_level(enum log_level level)
{
    current_level = level;
}
enum log_level log_get_level(void)
{
    return current_level;
}
void log_set_ident(const char *name)
{
    ident = name;
}

const char *log_level_name(enum log_level level)
{
    return level <= LOG_LEVEL_TRACE ? level_names[level] : "?";
}

int log_parse_level(const char *name, enum log_level *ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(level_names); i++)
        if (name && strcasecmp(name, level_names[i]) == 0) {
            *ret = (enum log_level)i;
            return 0;
        }
    if (name && strcasecmp(name, "warning") == 0) {
        *ret = LOG_LEVEL_WARN;
        return 0;
    }
    return -EINVAL;
}

/* systemd sets JOURNAL_STREAM=dev:ino for services whose stderr is the journal. */
static bool stderr_is_journal(void)
{
    if (to_journal >= 0)
        return to_journal;
    to_journal = 0;
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long dev, ino;
    if (js && sscanf(js, "%lu:%lu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
        st.st_dev == dev && st.st_ino == ino)
        to_journal = 1;
    return to_journal;
}

void log_write(enum log_level level, const char *component, const char *fmt, ...)
{
    if (level > current_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One line per event: newlines inside messages would let input forge log lines. */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (stderr_is_journal()) {
        fprintf(stderr, "<%d>%s: %s\n", syslog_prio[level], component, msg);
    } else {
        char ts[LTIME_RFC3339_MAX];
        fprintf(stderr, "%s %s %-5s %s: %s\n", ltime_format_rfc3339(ltime_now_ms(), ts), ident,
                level_names[level], component, msg);
    }
}
