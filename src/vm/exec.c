/* exec.c — exec sessions in a guest over the supervisor's exec socket, and image loads over them
 * (exec.h). */
#include "vm/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/fs.h"
#include "base/json.h"
#include "frame.h"
#include "vm/paths.h"

/* The one connection an exec socket carries. */
#define EXEC_CONN 1

static int write_frame(int fd, uint8_t type, const void *p, size_t n)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    int r = vm_frame_encode(&b, type, EXEC_CONN, p, n);
    return r < 0 ? r : lfs_write_all(fd, b.data, b.len);
}

static void send_winsize(int sock, unsigned rows, unsigned cols)
{
    uint8_t p[4] = {(uint8_t)(rows >> 8), (uint8_t)rows, (uint8_t)(cols >> 8), (uint8_t)cols};
    write_frame(sock, VM_FRAME_RESIZE, p, sizeof(p));
}

static json_t *open_request(const struct vm_exec_request *req)
{
    json_t *av = json_array();
    for (size_t i = 0; av && i < req->argc; i++)
        json_array_append_new(av, json_string(req->argv[i]));
    json_t *o = json_pack("{s:s, s:o, s:b}", "kind", "exec", "argv", av, "tty", req->tty);
    if (o && req->tty) {
        if (req->rows && req->cols) {
            json_object_set_new(o, "rows", json_integer(req->rows));
            json_object_set_new(o, "cols", json_integer(req->cols));
        }
        if (req->term)
            json_object_set_new(o, "term", json_string(req->term));
    }
    return o;
}

/* What the session is doing: filled by the frames the supervisor sends. */
struct session {
    int sock;
    const struct vm_exec_io *io;
    int64_t credit;  /* how much stdin the guest still takes */
    size_t unacked;  /* output received but not yet credited back */
    int code;        /* the exit code, -1 until EXIT */
    bool closed;     /* CLOSE arrived */
    char error[256]; /* the CLOSE's error, if any */
};

static void on_frame(struct session *s, const struct vm_frame *f)
{
    uint32_t c;
    switch (f->type) {
    case VM_FRAME_DATA:
    case VM_FRAME_STDERR:
        lfs_write_all(f->type == VM_FRAME_DATA ? s->io->out_fd : s->io->err_fd, f->payload, f->len);
        s->unacked += f->len;
        if (s->unacked >= VM_FRAME_WINDOW_INITIAL / 4) {
            _cleanup_lbuf_ struct lbuf w = LBUF_INIT;
            if (vm_frame_encode_window(&w, EXEC_CONN, (uint32_t)s->unacked) == 0)
                lfs_write_all(s->sock, w.data, w.len);
            s->unacked = 0;
        }
        break;
    case VM_FRAME_WINDOW:
        if (vm_frame_window_credit(f, &c) == 0)
            s->credit += c;
        break;
    case VM_FRAME_EXIT: {
        _cleanup_json_ json_t *j = NULL;
        if (ljson_parse((const char *)f->payload, f->len, &j, NULL) == 0)
            s->code = json_object_get(j, "signal") ? 128 + (int)ljson_int(j, "signal", 0)
                                                   : (int)ljson_int(j, "code", 1);
        break;
    }
    case VM_FRAME_CLOSE: {
        _cleanup_json_ json_t *j = NULL;
        if (f->len && ljson_parse((const char *)f->payload, f->len, &j, NULL) == 0 &&
            ljson_str(j, "error"))
            snprintf(s->error, sizeof(s->error), "%s", ljson_str(j, "error"));
        s->closed = true;
        break;
    }
    default:
        break;
    }
}

/* Pump stdin to the guest (within its credit) and its frames to our fds until CLOSE. */
static int session_run(struct session *s, struct lerr *err)
{
    const struct vm_exec_io *io = s->io;
    bool in_eof = io->in_fd < 0;
    _cleanup_free_ uint8_t *chunk = malloc(VM_FRAME_MAX_PAYLOAD);
    _cleanup_lbuf_ struct lbuf in = LBUF_INIT;
    if (!chunk)
        return lerr_set(err, -ENOMEM, "out of memory");
    if (in_eof)
        write_frame(s->sock, VM_FRAME_EOF, NULL, 0);
    while (!s->closed) {
        unsigned rows, cols;
        if (io->resized && io->resized(io->ud, &rows, &cols))
            send_winsize(s->sock, rows, cols);
        struct pollfd pf[2] = {{.fd = s->sock, .events = POLLIN},
                               {.fd = io->in_fd, .events = POLLIN}};
        nfds_t nf = (!in_eof && s->credit > 0) ? 2 : 1;
        if (poll(pf, nf, -1) < 0) {
            if (errno == EINTR)
                continue;
            return lerr_set(err, neg_errno(), "poll: %s", strerror(errno));
        }
        if (nf == 2 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            size_t want = (size_t)MIN((int64_t)VM_FRAME_MAX_PAYLOAD, s->credit);
            ssize_t n = read(io->in_fd, chunk, want);
            if (n > 0) {
                s->credit -= n;
                if (write_frame(s->sock, VM_FRAME_DATA, chunk, (size_t)n) < 0)
                    return lerr_set(err, -ECONNRESET, "the VM's supervisor closed the session");
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                in_eof = true;
                write_frame(s->sock, VM_FRAME_EOF, NULL, 0);
            }
        }
        if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (lbuf_reserve(&in, 65536) < 0)
            return lerr_set(err, -ENOMEM, "out of memory");
        ssize_t n = read(s->sock, in.data + in.len, in.cap - in.len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return s->code >= 0
                       ? 0
                       : lerr_set(err, -ECONNRESET, "the VM's supervisor closed the session");
        in.len += (size_t)n;
        size_t off = 0;
        while (!s->closed) {
            struct vm_frame f;
            size_t used;
            int found =
                vm_frame_decode((const uint8_t *)in.data + off, in.len - off, &f, &used, NULL);
            off += used;
            if (!found)
                break;
            on_frame(s, &f);
        }
        lbuf_consume(&in, off);
    }
    return 0;
}

int vm_exec(const struct vm_host *h, const char *name, const struct vm_exec_request *req,
            const struct vm_exec_io *io, int *ret_code, struct lerr *err)
{
    char path[128];
    int r = vm_sock_path(path, sizeof(path), h->root, name, VM_SOCK_EXEC, err);
    if (r < 0)
        return r;
    _cleanup_close_ int sock = vm_unix_connect(path, 0);
    if (sock < 0)
        return lerr_set(err, -ENOTCONN, "VM %s is not running (%s: %s)", name, path,
                        strerror(-sock));
    _cleanup_json_ json_t *o = open_request(req);
    _cleanup_free_ char *text = o ? ljson_dump(o) : NULL;
    if (!text)
        return lerr_set(err, -ENOMEM, "out of memory");
    if (write_frame(sock, VM_FRAME_OPEN, text, strlen(text)) < 0)
        return lerr_set(err, -ECONNRESET, "cannot talk to the VM's supervisor");
    struct session s = {.sock = sock, .io = io, .credit = VM_FRAME_WINDOW_INITIAL, .code = -1};
    if ((r = session_run(&s, err)) < 0)
        return r;
    if (s.code < 0)
        return s.error[0] ? lerr_set(err, -EIO, "%s", s.error)
                          : lerr_set(err, -ECONNRESET,
                                     "the session in %s ended without an exit status", name);
    *ret_code = s.code;
    return 0;
}

/* `docker save what` from this host's engine into a pipe: its pid, and the read end. */
static int docker_save(const char *what, pid_t *ret_pid, int *ret_fd, struct lerr *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return lerr_set(err, neg_errno(), "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) {
        int r = lerr_set(err, neg_errno(), "fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return r;
    }
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        execlp("docker", "docker", "save", what, (char *)NULL);
        fprintf(stderr, "ledge: docker: %s\n", strerror(errno));
        _exit(127);
    }
    close(p[1]);
    *ret_pid = pid;
    *ret_fd = p[0];
    return 0;
}

int vm_image_load(const struct vm_host *h, const char *name, const char *what, int out_fd,
                  int err_fd, struct lerr *err)
{
    int in_fd = -1;
    pid_t saver = -1;
    struct stat st;
    int r;
    if (stat(what, &st) == 0 && S_ISREG(st.st_mode)) {
        in_fd = open(what, O_RDONLY | O_CLOEXEC);
        if (in_fd < 0)
            return lerr_set(err, neg_errno(), "%s: %s", what, strerror(errno));
    } else if ((r = docker_save(what, &saver, &in_fd, err)) < 0) {
        return r;
    }
    /* The VM's engine decides who loads it: Moby, or the guest's ledged (its oci store), which
     * reads a file: the stream is staged on the guest's data disk and removed after. */
    enum vm_engine engine = VM_ENGINE_DOCKER;
    struct vm_def d;
    if (vm_host_load(h, name, &d, NULL) == 0) {
        engine = d.engine;
        vm_def_free(&d);
    }
    char docker[] = "docker", load[] = "load", sh[] = "sh", c_opt[] = "-c";
    char stage[] = "set -e; f=$(mktemp /var/lib/ledge/image-load-XXXXXX.tar); "
                   "trap 'rm -f \"$f\"' EXIT; cat > \"$f\"; ledge image load \"$f\"";
    char *docker_argv[] = {docker, load}, *oci_argv[] = {sh, c_opt, stage};
    struct vm_exec_request req = {.argv = engine == VM_ENGINE_OCI ? oci_argv : docker_argv,
                                  .argc = engine == VM_ENGINE_OCI ? 3 : 2};
    struct vm_exec_io io = {.in_fd = in_fd, .out_fd = out_fd, .err_fd = err_fd};
    int code = -1;
    r = vm_exec(h, name, &req, &io, &code, err);
    close(in_fd);
    if (saver > 0) {
        int s;
        while (waitpid(saver, &s, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(s) || WEXITSTATUS(s) != 0)
            return lerr_set(err, -EIO, "`docker save %s` on this host failed", what);
    }
    if (r < 0)
        return r;
    if (code != 0)
        return lerr_set(err, -EIO, "`%s` in %s failed (exit %d)",
                        engine == VM_ENGINE_OCI ? "ledge image load" : "docker load", name, code);
    return 0;
}
