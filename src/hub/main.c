/* main.c — ledge-hub: the MQTT hub ledged runs as its system module "edgeHub" (process engine).
 * Reads the same config file as ledged (LEDGE_CONFIG or --config) and the runtime file ledged
 * writes; runs until SIGTERM, acknowledging what it accepted before it exits. */
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "log/log.h"

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *config = getenv("LEDGE_CONFIG") ? getenv("LEDGE_CONFIG") : CONFIG_DEFAULT_PATH;
    int c;
    while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'V':
            printf("ledge-hub %s\n", LEDGE_VERSION);
            return 0;
        case 'h':
            printf(
                "Usage: ledge-hub [--config FILE]\n\nThe ledge MQTT hub; ledged starts it as the "
                "system module edgeHub.\n");
            return 0;
        default:
            return 2;
        }
    }
    log_set_ident("ledge-hub");
    /* twins.db is small: no bulk page-cache allocation per connection and statement (SQLite's
     * default of 20 pages each; the integrity check at open made one that stayed resident). */
    sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    /* ledged sends SIGHUP whenever the runtime file changes, possibly before the hub's handlers
     * exist: hold reload and stop signals pending until hub_start() installed them. */
    sigset_t held, prev;
    sigemptyset(&held);
    sigaddset(&held, SIGHUP);
    sigaddset(&held, SIGTERM);
    sigaddset(&held, SIGINT);
    sigprocmask(SIG_BLOCK, &held, &prev);
    struct hub h = {0};
    struct lstrv errors = LSTRV_INIT;
    if (config_load_file_or_defaults(config, &h.cfg, &errors) < 0) {
        for (size_t i = 0; i < errors.n; i++)
            fprintf(stderr, "ledge-hub: %s\n", errors.v[i]);
        lstrv_free(&errors);
        return 1;
    }
    lstrv_free(&errors);
    log_set_level((enum log_level)h.cfg.log_level);
    h.base = event_base_new();
    if (h.base)
        event_base_priority_init(h.base, HUB_EVENT_PRIORITIES);
    struct lerr err = {0};
    int rc = 0;
    if (!h.base || hub_start(&h, &err) < 0) {
        log_error("hub", "cannot start: %s", lerr_str(&err));
        rc = 1;
    } else {
        sigprocmask(SIG_SETMASK, &prev, NULL);
        event_base_dispatch(h.base);
    }
    hub_stop(&h);
    config_free(&h.cfg);
    if (h.base)
        event_base_free(h.base);
    return rc;
}
