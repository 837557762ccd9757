/* cmd_update.c — `ledge update FILE.deb | --apt | --resume | --status`: the CLI's side of
 * src/update (docs/update.md): options, the config's paths, progress lines and the exit code. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "commands.h"
#include "config/config.h"
#include "update/journal.h"
#include "update/update.h"

static void say(void *ud, const char *line)
{
    printf("ledge update: %s\n", line);
    fflush(stdout);
}

static int print_status(const char *state_dir, bool json)
{
    char path[4200];
    upd_journal_path(state_dir, path, sizeof(path));
    struct upd_journal j = {0};
    struct lerr e = {0};
    int r = upd_journal_load(path, &j, &e);
    if (r == -ENOENT) {
        printf(json ? "{}\n" : "no update has run here (%s)\n", path);
        return 0;
    }
    if (r < 0)
        return cli_fail("update: %s", lerr_str(&e));
    if (json) {
        char *text = upd_journal_format(&j);
        printf("%s\n", text ? text : "{}");
        free(text);
    } else {
        char when[LTIME_RFC3339_MAX];
        printf("update %s: ledge %s -> %s, %s (at %s)%s%s\n", j.id, j.from_version, j.to_version,
               upd_step_name(j.step), ltime_format_rfc3339(j.updated_ms, when),
               j.reason ? ": " : "", j.reason ? j.reason : "");
        if (upd_step_unfinished(j.step))
            printf("  unfinished: `ledge update --resume` finishes it (ledged does at start)\n");
    }
    upd_journal_clear(&j);
    return 0;
}

int cmd_update(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"resume", no_argument, NULL, 'r'},
                                         {"status", no_argument, NULL, 's'},
                                         {"apt", no_argument, NULL, 'a'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"deadline", required_argument, NULL, 'd'},
                                         {0}};
    bool resume = false, status = false, apt = false;
    const char *config_path = NULL;
    int64_t deadline_ms = 60000;
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "c:", opts, NULL)) != -1) {
        switch (o) {
        case 'r':
            resume = true;
            break;
        case 's':
            status = true;
            break;
        case 'a':
            apt = true;
            break;
        case 'j':
            c->json = true;
            break;
        case 'c':
            config_path = optarg;
            break;
        case 'd':
            if (ltime_parse_duration_ms(optarg, &deadline_ms) < 0 || deadline_ms <= 0)
                return cli_usage_error("update", "--deadline: a duration such as 60s");
            break;
        default:
            return cli_usage_error("update", "unknown option");
        }
    }
    const char *deb = optind < argc ? argv[optind] : NULL;
    if (optind + 1 < argc)
        return cli_usage_error("update", "unexpected argument \"%s\"", argv[optind + 1]);
    if ((int)resume + (int)status + (int)apt + (int)(deb != NULL) != 1)
        return cli_usage_error("update", "give one of FILE.deb, --apt, --resume or --status");

    struct ledge_config cfg = {0};
    _cleanup_lstrv_ struct lstrv errors = LSTRV_INIT;
    const char *cfg_path = config_path ? config_path : CONFIG_DEFAULT_PATH;
    if (config_load_file_or_defaults(cfg_path, &cfg, &errors) < 0) {
        for (size_t i = 0; i < errors.n; i++)
            fprintf(stderr, "ledge update: %s\n", errors.v[i]);
        return cli_fail("update: the config %s is not valid", cfg_path);
    }
    if (status) {
        int rc = print_status(cfg.state_dir, c->json);
        config_free(&cfg);
        return rc;
    }

    /* The test hook stops only this process: the ledged it starts must not inherit it. */
    const char *stop = getenv("LEDGE_UPDATE_STOP_AT");
    int stop_at = stop ? atoi(stop) : 0;
    unsetenv("LEDGE_UPDATE_STOP_AT");
    /* Closing the terminal must not stop an update half-way. */
    signal(SIGHUP, SIG_IGN);
    char self[4096] = "/usr/bin/ledge";
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = 0;
        if (lstr_endswith(self, " (deleted)"))
            self[strlen(self) - strlen(" (deleted)")] = 0;
    }
    struct upd_options uo = {
        .state_dir = cfg.state_dir,
        .mgmt_socket = lstr_eq(c->socket, LEDGE_DEFAULT_HOST) ? cfg.management.socket : c->socket,
        .config_path = cfg_path,
        .ledge_program = self,
        .deadline_ms = deadline_ms,
        .stop_at = stop_at,
        .say = say,
    };
    struct lerr e = {0};
    int rc = 0;
    if (resume) {
        const char *what = "nothing";
        if (upd_resume(&uo, &what, &e) < 0)
            rc = cli_fail("update: %s", lerr_str(&e));
        else if (lstr_eq(what, "nothing"))
            printf("ledge update: nothing to resume\n");
    } else {
        int r = apt ? upd_update_apt(&uo, &e) : upd_update(&uo, deb, &e);
        if (r == -ECANCELED)
            rc = cli_fail("update failed and was rolled back: %s", lerr_str(&e));
        else if (r < 0)
            rc = cli_fail("update: %s", lerr_str(&e));
    }
    config_free(&cfg);
    return rc;
}
