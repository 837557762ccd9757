/* spawn.h — the programs ledge's VM code runs: a VM's supervisor (ledge-vmm, which detaches once
 * it listens) and tools run to completion (ledge-vm-build, tar, docker). Blocking, for the CLI
 * and for ledged's start-up; the child's stderr is the caller's. */
#pragma once

#include <stdbool.h>

#include "base/buf.h"
#include "base/errors.h"

/* Run argv (argv[0] searched in PATH) to completion; with out, its stdout is collected there (up
 * to out->max bytes, the rest read and dropped), else it is ours. 0 with *ret_status its wait
 * status (waitpid(2)), or < 0 with err when it could not be started. */
int vm_run(char *const argv[], struct lbuf *out, int *ret_status, struct lerr *err);
/* vm_run() for a tool whose exit status is the result: 0 when it exited 0, else -EIO with err
 * saying what failed (what: "tar", "`docker save x`"). */
int vm_run_tool(char *const argv[], const char *what, struct lerr *err);

/* ledge-vmm's exit status when another supervisor holds the VM (its lock). */
#define VM_SUPERVISOR_EXIT_BUSY 3

/* Start ledge-vmm for <vmroot>/<name> and wait until it listens: 0 started, 1 it was supervised
 * already, < 0 with err (which names the supervisor's log, VM_FILE_VMM_LOG, when it failed). */
int vm_supervisor_spawn(const char *vmroot, const char *name, struct lerr *err);
/* Is the VM's supervisor running (its lock, VM_FILE_LOCK, is held)? */
bool vm_supervised(const char *vmroot, const char *name);
