/* ledge.c — the ledge CLI: global options, the verb table, help and version. Every verb is a thin
 * client of ledged's management API (commands.h). */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "commands.h"

static int cmd_version(struct cli *c, int argc, char **argv);
static int cmd_help(struct cli *c, int argc, char **argv);

static const struct cli_command commands[] = {
    {"list", "[--json]", "list the deployed modules and their status", cmd_list},
    {"deploy", "FILE|--rollback [N] [--dry-run] [--no-wait] [--no-rollback] [--timeout 60s]",
     "apply an IoT Edge deployment manifest (as a whole, or rolled back)", cmd_deploy},
    {"deployments", "[--json]", "the last deployments: when, and how they ended", cmd_deployments},
    {"logs", "MODULE [--tail N] [--since T] [-f] [-t]", "print a module's logs", cmd_logs},
    {"start", "MODULE", "start a module", cmd_start},
    {"stop", "MODULE", "stop a module (it stays stopped until started or redeployed)", cmd_stop},
    {"restart", "MODULE", "restart a module", cmd_restart},
    {"system", "status|info", "the daemon's status, or facts about this device", cmd_system},
    {"hub", "status [--json]", "connections, queues and counters of the hub", cmd_hub},
    {"twin", "get [--device] NAME | set [--device] NAME JSON",
     "print a module's (or with --device a leaf device's) twin, or patch its desired properties",
     cmd_twin},
    {"invoke", "MODULE METHOD | --device DEVICE METHOD [--payload JSON] [--timeout S]",
     "call a module's (or a leaf device's) direct method", cmd_invoke},
    {"token", "MODULE [--ttl S] [--json]", "a SAS token for a module (for MQTT tools)", cmd_token},
    {"device", "add|list|show|remove|key|cert|trust-bundle|ca ...",
     "leaf devices behind this gateway (see `ledge device help`)", cmd_device},
    {"check",
     "[--output text|json] [--verbose] [--warnings-as-errors] [--config FILE] "
     "[--deployment FILE]",
     "check this host, the engine and the deployment against what ledge supports", cmd_check},
    {"support-bundle", "[--since 2h] [-o FILE|-] [--max-log-size 16M] [--config FILE]",
     "one archive of logs, deployment (secrets redacted), checks and status for support",
     cmd_support_bundle},
    {"check-list", "[--output text|json]", "list the checks `ledge check` runs", cmd_check_list},
    {"vm", "COMMAND [NAME] ...", "VMs that run the runtime (see `ledge vm help`)", cmd_vm},
    {"image", "list | load FILE | rm IMAGE | prune",
     "the container engine's images (oci); with --vm NAME, load IMAGE|FILE copies one into the VM",
     cmd_image},
    {"update", "FILE.deb | --apt [--deadline 60s] | --resume | --status [--json]",
     "install another ledge package (a file, or apt's newer candidate); rolled back when the new "
     "runtime is not healthy",
     cmd_update},
    {"dashboard", "token [--expires D] [--revoke ID|--all] | tokens [--json]",
     "login tokens for the web dashboard (docs/dashboard.md)", cmd_dashboard},
    {"version", "", "print the version of the CLI and of ledged", cmd_version},
    {"help", "[COMMAND]", "this help", cmd_help},
};

static const struct cli_command *find(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: ledge [-H HOST] COMMAND [ARGS]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-9s %-40s %s\n", commands[i].name, commands[i].args, commands[i].summary);
    fprintf(out,
            "\nOptions:\n"
            "  -H, --host HOST   management socket: unix:///path or /path\n"
            "                    (default $LEDGE_HOST, else %s)\n"
            "      --vm NAME     talk to the runtime inside VM NAME (`ledge vm`)\n"
            "      --device CHILD  deploy, list, twin and invoke act on a child edge device\n"
            "                    of this one (nested edge, docs/nested.md)\n",
            LEDGE_DEFAULT_HOST);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ledge %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    const struct cli_command *c = find(cmd);
    if (c)
        fprintf(stderr, "usage: ledge %s %s\n", c->name, c->args);
    return 2;
}

static int cmd_help(struct cli *c, int argc, char **argv)
{
    if (argc > 1) {
        const struct cli_command *cmd = find(argv[1]);
        if (!cmd)
            return cli_usage_error("help", "no command \"%s\"", argv[1]);
        printf("usage: ledge %s %s\n  %s\n", cmd->name, cmd->args, cmd->summary);
        return 0;
    }
    usage(stdout);
    return 0;
}

static int cmd_version(struct cli *c, int argc, char **argv)
{
    printf("ledge %s\n", LEDGE_VERSION);
    long status;
    json_t *body = NULL;
    /* The daemon's version is a bonus: a missing daemon is not an error for `version`. */
    c->quiet = true;
    int r = cli_call(c, "GET", "/status", NULL, 0, &status, &body);
    c->quiet = false;
    if (r == 0 && status == 200)
        printf("ledged %s\n", ljson_str(body, "version") ?: "?");
    else
        printf("ledged (not reachable at %s)\n", c->socket);
    json_decref(body);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* a peer hanging up is an error to report, not a way to die */
    struct cli c = {0};
    const char *host = getenv("LEDGE_HOST");
    const char *vm = NULL;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-H") == 0 || strcmp(a, "--host") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "ledge: %s needs a value\n", a);
                return 2;
            }
            host = argv[i];
        } else if (strncmp(a, "--host=", 7) == 0) {
            host = a + 7;
        } else if (strcmp(a, "--vm") == 0) {
            if (++i >= argc) {
                fprintf(stderr, "ledge: %s needs a value\n", a);
                return 2;
            }
            vm = argv[i];
        } else if (strncmp(a, "--vm=", 5) == 0) {
            vm = a + 5;
        } else if (strcmp(a, "--device") == 0) {
            if (++i >= argc || !*argv[i]) {
                fprintf(stderr, "ledge: %s needs a device id\n", a);
                return 2;
            }
            c.device = argv[i];
        } else if (strncmp(a, "--device=", 9) == 0 && a[9]) {
            c.device = a + 9;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("ledge %s\n", LEDGE_VERSION);
            return 0;
        } else if (a[0] == '-') {
            fprintf(stderr, "ledge: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else {
            break;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (cli_set_host(&c, host && *host ? host : LEDGE_DEFAULT_HOST) < 0) {
        fprintf(stderr, "ledge: host \"%s\": use unix:///path/to/mgmt.sock or a path\n", host);
        return 2;
    }
    const struct cli_command *cmd = find(argv[i]);
    if (!cmd) {
        fprintf(stderr, "ledge: unknown command \"%s\" (see `ledge help`)\n", argv[i]);
        return 2;
    }
    if (vm) {
        if (cmd->run == cmd_vm) {
            fprintf(stderr,
                    "ledge: --vm selects a VM's runtime; `ledge vm` takes the name itself\n");
            return 2;
        }
        if (cli_vm_select(&c, vm) < 0)
            return 1;
        /* Verbs that look at the machine they run on run inside the guest. */
        if (cmd->run == cmd_check || cmd->run == cmd_check_list)
            return cli_vm_run_inside(&c, argc - i, argv + i);
    }
    if (c.device)
        return cli_child_run(&c, cmd->name, argc - i, argv + i);
    return cmd->run(&c, argc - i, argv + i);
}
