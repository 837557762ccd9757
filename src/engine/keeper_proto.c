/* keeper_proto.c — building and checking the keeper's messages (keeper_proto.h). */
#include "keeper_proto.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>

#include "base/json.h"
#include "base/str.h"

static const char *const op_names[] = {"hello", "run", "kill", "list", "forget"};

bool keeper_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    return n > 0 && n <= KEEPER_ID_MAX && strspn(id, "0123456789abcdef") == n;
}

int keeper_exit_code(int wstatus)
{
    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    if (WIFSIGNALED(wstatus))
        return 128 + WTERMSIG(wstatus);
    return -1;
}

static bool abs_path(const char *p)
{
    return p && p[0] == '/' && strlen(p) < 4096;
}

int keeper_request_parse(const json_t *j, struct keeper_request *r, struct lerr *e)
{
    memset(r, 0, sizeof(*r));
    if (!json_is_object(j))
        return lerr_set(e, -EINVAL, "request: not an object");
    const char *op = ljson_str(j, "op");
    size_t i;
    for (i = 0; op && i < ARRAY_SIZE(op_names); i++)
        if (strcmp(op, op_names[i]) == 0)
            break;
    if (!op || i == ARRAY_SIZE(op_names))
        return lerr_set(e, -EINVAL, "request: unknown op");
    r->op = (enum keeper_op)i;
    json_t *seq = json_object_get(j, "seq");
    if (!json_is_integer(seq))
        return lerr_set(e, -EINVAL, "request: seq must be an integer");
    r->seq = json_integer_value(seq);
    if (r->op == KEEPER_OP_HELLO || r->op == KEEPER_OP_LIST)
        return 0;
    r->id = ljson_str(j, "id");
    if (!keeper_id_valid(r->id))
        return lerr_set(e, -EINVAL, "request: id must be 1 to %d lower-case hex digits",
                        KEEPER_ID_MAX);
    if (r->op == KEEPER_OP_KILL) {
        json_t *sig = json_object_get(j, "signal");
        if (!json_is_integer(sig) || json_integer_value(sig) < 1 || json_integer_value(sig) > 64)
            return lerr_set(e, -EINVAL, "request: signal must be 1..64");
        r->signal = (int)json_integer_value(sig);
        return 0;
    }
    if (r->op != KEEPER_OP_RUN)
        return 0;
    json_t *argv = json_object_get(j, "argv");
    if (!json_is_array(argv) || json_array_size(argv) == 0 ||
        json_array_size(argv) > KEEPER_ARGV_MAX)
        return lerr_set(e, -EINVAL, "request: argv must be an array of 1 to %d strings",
                        KEEPER_ARGV_MAX);
    json_t *v;
    json_array_foreach (argv, i, v) {
        if (!json_is_string(v))
            return lerr_set(e, -EINVAL, "request: argv[%zu] must be a string", i);
        r->argv[i] = json_string_value(v);
    }
    r->argv[json_array_size(argv)] = NULL;
    if (!abs_path(r->argv[0]))
        return lerr_set(e, -EINVAL, "request: argv[0] must be an absolute path");
    r->pidfile = ljson_str(j, "pidfile");
    if (!abs_path(r->pidfile))
        return lerr_set(e, -EINVAL, "request: pidfile must be an absolute path");
    json_t *log = json_object_get(j, "log");
    r->log.path = ljson_str(log, "path");
    if (!abs_path(r->log.path))
        return lerr_set(e, -EINVAL, "request: log.path must be an absolute path");
    r->log.max_size = ljson_int(log, "maxSize", 0);
    r->log.max_files = (int)ljson_int(log, "maxFiles", 1);
    if (r->log.max_size < 0 || r->log.max_files < 1 || r->log.max_files > 100)
        return lerr_set(e, -EINVAL, "request: log.maxSize >= 0 and log.maxFiles 1..100");
    return 0;
}

json_t *keeper_request_json(const struct keeper_request *r)
{
    json_t *j = json_pack("{s:s, s:I}", "op", op_names[r->op], "seq", (json_int_t)r->seq);
    if (!j)
        return NULL;
    if (r->id && json_object_set_new(j, "id", json_string(r->id)) < 0)
        goto fail;
    if (r->op == KEEPER_OP_KILL && json_object_set_new(j, "signal", json_integer(r->signal)) < 0)
        goto fail;
    if (r->op == KEEPER_OP_RUN) {
        json_t *argv = json_array();
        if (!argv || json_object_set_new(j, "argv", argv) < 0)
            goto fail;
        for (size_t i = 0; r->argv[i]; i++)
            if (json_array_append_new(argv, json_string(r->argv[i])) < 0)
                goto fail;
        json_t *log = json_pack("{s:s, s:I, s:i}", "path", r->log.path, "maxSize",
                                (json_int_t)r->log.max_size, "maxFiles", r->log.max_files);
        if (!log || json_object_set_new(j, "log", log) < 0 ||
            json_object_set_new(j, "pidfile", json_string(r->pidfile)) < 0)
            goto fail;
    }
    return j;
fail:
    json_decref(j);
    return NULL;
}

int keeper_container_parse(const json_t *j, struct keeper_container *c, struct lerr *e)
{
    memset(c, 0, sizeof(*c));
    c->id = ljson_str(j, "id");
    if (!keeper_id_valid(c->id))
        return lerr_set(e, -EPROTO, "keeper: a container without a valid id");
    c->running = ljson_bool(j, "running", false);
    long long pid = ljson_int(j, "pid", 0);
    long long code = ljson_int(j, "exitCode", -1);
    if (pid < 0 || pid > 4194304 || (c->running && pid == 0) || code < -1 || code > 255)
        return lerr_set(e, -EPROTO, "keeper: container %s: pid or exitCode out of range", c->id);
    c->pid = (int)pid;
    c->exit_code = (int)code;
    c->started_ms = ljson_int(j, "startedMs", 0);
    c->finished_ms = ljson_int(j, "finishedMs", 0);
    return 0;
}

json_t *keeper_container_json(const struct keeper_container *c)
{
    return json_pack("{s:s, s:i, s:b, s:i, s:I, s:I}", "id", c->id, "pid", c->pid, "running",
                     c->running, "exitCode", c->exit_code, "startedMs", (json_int_t)c->started_ms,
                     "finishedMs", (json_int_t)c->finished_ms);
}

int keeper_msg_parse(const json_t *j, struct keeper_msg *m, struct lerr *e)
{
    memset(m, 0, sizeof(*m));
    if (!json_is_object(j))
        return lerr_set(e, -EPROTO, "keeper: a message that is not an object");
    const char *ev = ljson_str(j, "event");
    if (ev) {
        if (strcmp(ev, "exit") != 0)
            return lerr_set(e, -EPROTO, "keeper: unknown event");
        m->kind = KEEPER_MSG_EXIT;
        int r = keeper_container_parse(j, &m->exit, e);
        m->exit.running = false;
        return r;
    }
    m->kind = KEEPER_MSG_REPLY;
    json_t *seq = json_object_get(j, "seq");
    if (!json_is_integer(seq))
        return lerr_set(e, -EPROTO, "keeper: an answer without seq");
    m->seq = json_integer_value(seq);
    m->ok = ljson_bool(j, "ok", false);
    if (!m->ok) {
        m->error = ljson_str(j, "error");
        long long code = ljson_int(j, "errno", EIO);
        m->err_code = code > 0 && code < 4096 ? (int)code : EIO;
        return 0;
    }
    m->version = (int)ljson_int(j, "version", 0);
    m->pid = (int)ljson_int(j, "pid", 0);
    long long st = ljson_int(j, "status", 0), cpid = ljson_int(j, "containerPid", 0);
    if (st < -1 || st > 255 || cpid < 0 || cpid > 4194304)
        return lerr_set(e, -EPROTO, "keeper: status or containerPid out of range");
    m->status = (int)st;
    m->ctr_pid = (int)cpid;
    m->started_ms = ljson_int(j, "startedMs", 0);
    json_t *cs = json_object_get(j, "containers");
    if (cs && (!json_is_array(cs) || json_array_size(cs) > KEEPER_CONTAINERS_MAX))
        return lerr_set(e, -EPROTO, "keeper: containers must be an array of at most %d",
                        KEEPER_CONTAINERS_MAX);
    m->containers = cs;
    return 0;
}
