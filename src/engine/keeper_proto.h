/* keeper_proto.h — the messages between ledged's oci engine and ledge-keeper, the one long-lived
 * process that is the parent of every container (docs/engine-oci.md "Supervision"). One JSON
 * object per SOCK_SEQPACKET datagram, at most KEEPER_MSG_MAX bytes. Pure: both ends build and
 * check messages here, and fuzz-keeper-proto feeds the decoder whatever it likes. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/errors.h"

#define KEEPER_MSG_MAX (64u << 10)
#define KEEPER_ID_MAX 64          /* container ids: [0-9a-f]{1,64} */
#define KEEPER_ARGV_MAX 64        /* arguments of one command */
#define KEEPER_CONTAINERS_MAX 256 /* containers one keeper supervises */
#define KEEPER_PROTO_VERSION 1

/* Requests (ledged → keeper) carry "seq"; the answer to one carries the same seq. */
enum keeper_op {
    KEEPER_OP_HELLO, /* → {version, pid} */
    /* Run argv (the runtime's `run --detach --pid-file P`) with stdin /dev/null and stdout and
     * stderr into the container's log; answered when the command has exited: its status, and
     * the container's pid read from pidfile when it succeeded. */
    KEEPER_OP_RUN,
    KEEPER_OP_KILL,   /* signal a running container's init */
    KEEPER_OP_LIST,   /* → {containers: [...]} */
    KEEPER_OP_FORGET, /* drop an exited container's record (its log stays on disk) */
};

struct keeper_log {
    const char *path; /* the container's log file (CRI format lines, docs/engine-oci.md) */
    int64_t max_size; /* rotate at this size; 0: never */
    int max_files;    /* files kept, the current one included (>= 1) */
};

struct keeper_request {
    enum keeper_op op;
    int64_t seq;
    const char *id;
    const char *argv[KEEPER_ARGV_MAX + 1]; /* NULL-terminated */
    const char *pidfile;
    struct keeper_log log;
    int signal;
};

/* Strings point into j (keep j while using the request). Errors name the field. */
int keeper_request_parse(const json_t *j, struct keeper_request *ret, struct lerr *e);
json_t *keeper_request_json(const struct keeper_request *r);

/* A container as the keeper knows it. */
struct keeper_container {
    const char *id;
    int pid; /* while running; 0 after */
    bool running;
    int exit_code; /* exited: the status as docker reports it (code, or 128 + signal); -1 unknown */
    int64_t started_ms, finished_ms;
};

/* Answers and events (keeper → ledged). */
enum keeper_msg_kind {
    KEEPER_MSG_REPLY, /* {seq, ok, error?, ...} */
    KEEPER_MSG_EXIT,  /* {event: "exit", id, exitCode, time} : a container's init has exited */
};

struct keeper_msg {
    enum keeper_msg_kind kind;
    int64_t seq;
    bool ok;
    const char *error; /* !ok */
    int err_code;      /* !ok: a positive errno */
    /* hello */
    int version, pid;
    /* run: the command's status (as exit_code), the container's pid when it started */
    int status;
    int ctr_pid;
    int64_t started_ms;
    /* list: containers[i] */
    const json_t *containers;
    /* exit */
    struct keeper_container exit;
};

int keeper_msg_parse(const json_t *j, struct keeper_msg *ret, struct lerr *e);
/* containers[i] of a list answer. */
int keeper_container_parse(const json_t *j, struct keeper_container *ret, struct lerr *e);
json_t *keeper_container_json(const struct keeper_container *c);

bool keeper_id_valid(const char *id);
/* The exit status of a waitpid() status as docker reports it: the code, or 128 + the signal. */
int keeper_exit_code(int wstatus);
