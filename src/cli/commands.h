/* commands.h — the CLI's verbs. Each takes the remaining argv (argv[0] is the verb) and returns
 * the process exit code: 0 success, 1 failure (message on stderr), 2 usage error. */
#pragma once

#include "client.h"

struct cli_command {
    const char *name;
    const char *args;    /* usage after the name */
    const char *summary; /* one line */
    int (*run)(struct cli *c, int argc, char **argv);
};

int cmd_list(struct cli *c, int argc, char **argv);
int cmd_deploy(struct cli *c, int argc, char **argv);
int cmd_deployments(struct cli *c, int argc, char **argv);
int cmd_logs(struct cli *c, int argc, char **argv);
int cmd_start(struct cli *c, int argc, char **argv);
int cmd_stop(struct cli *c, int argc, char **argv);
int cmd_restart(struct cli *c, int argc, char **argv);
int cmd_system(struct cli *c, int argc, char **argv);
int cmd_check(struct cli *c, int argc, char **argv);
int cmd_check_list(struct cli *c, int argc, char **argv);

/* cmd_check.c: a run of the check table (src/check) printed as text or JSON; `ledge check` and
 * `ledge vm check` (group "vm", which reads no deployment). Returns the exit code. */
struct vm_def;
struct cli_check_opts {
    const char *config_path; /* NULL: the default, which may be absent */
    const char *deployment_path;
    bool json;
    bool verbose;
    bool warnings_as_errors;
    const char *group;           /* NULL: every check */
    const char *vm_dir;          /* the vm group's VMs' directory; NULL: the config's */
    const struct vm_def *vm_def; /* the vm group looks at this VM only */
    bool vm_always;              /* the vm group runs without VMs too */
};
int cli_check_run(struct cli *c, const struct cli_check_opts *o);
int cmd_hub(struct cli *c, int argc, char **argv);
int cmd_twin(struct cli *c, int argc, char **argv);
int cmd_invoke(struct cli *c, int argc, char **argv);
int cmd_token(struct cli *c, int argc, char **argv);
/* cmd_device.c: `ledge device ...`, leaf devices behind this gateway. */
int cmd_device(struct cli *c, int argc, char **argv);

/* cmd_vm.c: `ledge vm ...`, `ledge --vm NAME image load ...`, and --vm itself. */
int cmd_vm(struct cli *c, int argc, char **argv);
int cmd_image(struct cli *c, int argc, char **argv);
/* cmd_image.c: `ledge image list|load|rm|prune` through ledged (without --vm). */
int cmd_image_local(struct cli *c, int argc, char **argv);
/* Point c at VM name's guest API socket (prints why not and returns < 0). */
int cli_vm_select(struct cli *c, const char *name);
/* Run `ledge ARGV...` inside the VM selected with --vm (for verbs that work on the local host,
 * such as check); returns its exit code. */
int cli_vm_run_inside(struct cli *c, int argc, char **argv);
/* The VMs' directory and image cache as `ledge vm` finds them. */
struct vm_host;
void cli_vm_host(struct vm_host *ret);

/* cmd_dashboard.c: `ledge dashboard token|tokens`, the web dashboard's login tokens. */
int cmd_dashboard(struct cli *c, int argc, char **argv);

/* cmd_support.c: `ledge support-bundle`. */
int cmd_support_bundle(struct cli *c, int argc, char **argv);

/* cmd_update.c: `ledge update FILE.deb | --resume | --status` (docs/update.md). */
int cmd_update(struct cli *c, int argc, char **argv);

/* cmd_child.c: `ledge --device CHILD deploy|list|twin|invoke ...` (docs/nested.md). */
int cli_child_run(struct cli *c, const char *verb, int argc, char **argv);

int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
