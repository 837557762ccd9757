/* bundle.h — support bundles: one tar.gz with what a support engineer asks for first (ledged's
 * and the hub's logs, every module's logs, the deployment, the configuration, `ledge check`, the
 * hub's status, the engine, the VMs' console logs, the host), secrets redacted by one rule
 * (support/redact.h). Collected through ledged's management API when it answers and from the
 * engine, the journal and the files when it does not. One function for `ledge support-bundle`
 * and ledged's GET /systeminfo/supportbundle (run there in a child process). Blocking, with a
 * bound on every wait; never logs; what could not be collected is said in the bundle's
 * index.json and in the returned index. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/errors.h"

/* Each log keeps its last this many bytes (from a line start); --max-log-size changes it. */
#define SUPPORT_LOG_MAX_DEFAULT (16u << 20)
#define SUPPORT_LOG_MAX_LIMIT (1u << 30)
/* Each management API call; logs and the check run get longer (a check run bounds itself at 2
 * minutes in ledged). */
#define SUPPORT_CALL_TIMEOUT_MS 15000
#define SUPPORT_LOGS_TIMEOUT_MS 60000
#define SUPPORT_CHECK_TIMEOUT_MS 150000
/* At most this many modules' and VMs' logs. */
#define SUPPORT_MAX_MODULES 256

struct support_options {
    const char *config_path; /* NULL: CONFIG_DEFAULT_PATH (absent: the defaults) */
    const char *mgmt_socket; /* NULL: the configuration's management.socket */
    int64_t since_ms;        /* logs from then on; 0: everything that is kept */
    int64_t now_ms;          /* 0: the clock (names the bundle, the entries' times) */
    size_t max_log_bytes;    /* 0: SUPPORT_LOG_MAX_DEFAULT */
    const char *vm_dir;      /* NULL: the configuration's vm.dir, else the default */
    const char *vm_cache;    /* NULL: the default */
    /* ledged itself makes the bundle (its child): ledged's stderr is this fd's file or the
     * journal. -1: find ledged through GET /status. */
    int ledged_stderr_fd;
};

/* Write the bundle to fd (a file or a pipe), the directory inside named
 * "ledge-support-<device>-<UTC time>". *ret_index (may be NULL) gets the index: {"created",
 * "since", "device", "version", "ledged": "answered"|"not answering: ...", "entries": [{"name",
 * "source", "bytes"}], "missing": [{"name", "reason"}], "redactions"}. Fails only when the
 * archive cannot be written (-EIO, -ENOMEM); everything else becomes a "missing" entry. */
int support_bundle_write(const struct support_options *o, int fd, json_t **ret_index,
                         struct lerr *err);
