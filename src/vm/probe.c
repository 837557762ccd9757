/* probe.c — is KVM usable here? A bounded test boot (qemu.h vm_kvm_probe), cached per host boot.
 * On this kind of machine /dev/kvm opens fine and nested guests then hang, so only a boot that
 * reaches the initramfs's marker counts. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "vm/qemu.h"

static void boot_id(char *buf, size_t size)
{
    _cleanup_free_ char *t = NULL;
    buf[0] = 0;
    if (lfs_read_file("/proc/sys/kernel/random/boot_id", 128, &t, NULL) == 0) {
        t[strcspn(t, "\n")] = 0;
        lstr_copy(buf, size, t);
    }
}

static void run_probe(const struct vm_def *d, const struct vm_qemu_paths *p, int timeout_ms,
                      struct vm_kvm_probe *ret)
{
    _cleanup_lstrv_ struct lstrv argv = LSTRV_INIT;
    struct lerr err = {0};
    if (vm_qemu_argv(d, p, true, true, &argv, &err) < 0) {
        snprintf(ret->detail, sizeof(ret->detail), "%s", lerr_str(&err));
        return;
    }
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0) {
        snprintf(ret->detail, sizeof(ret->detail), "pipe: %s", strerror(errno));
        return;
    }
    int64_t start = ltime_mono_ms();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(ret->detail, sizeof(ret->detail), "fork: %s", strerror(errno));
        close(out[0]);
        close(out[1]);
        return;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(out[1], 1);
        dup2(out[1], 2);
        execvp(argv.v[0], argv.v);
        printf("cannot run %s: %s\n", argv.v[0], strerror(errno));
        _exit(127);
    }
    close(out[1]);
    char text[8192];
    size_t len = 0;
    bool found = false, eof = false;
    while (!found && !eof) {
        int left = (int)(timeout_ms - (ltime_mono_ms() - start));
        if (left <= 0)
            break;
        struct pollfd pf = {.fd = out[0], .events = POLLIN};
        int r = poll(&pf, 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        ssize_t n = read(out[0], text + len, sizeof(text) - 1 - len);
        if (n <= 0) {
            eof = true;
            break;
        }
        len += (size_t)n;
        text[len] = 0;
        found = strstr(text, VM_PROBE_MARKER) != NULL;
        if (len > sizeof(text) / 2) { /* keep the tail */
            memmove(text, text + len - 256, 256);
            len = 256;
        }
    }
    ret->ms = ltime_mono_ms() - start;
    close(out[0]);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    if (found) {
        ret->usable = true;
        snprintf(ret->detail, sizeof(ret->detail), "a test boot reached user space in %lld ms",
                 ret->ms);
    } else if (eof) {
        /* QEMU said why (no permission, no KVM support for this CPU...): keep its last line. */
        text[len] = 0;
        char *last = text;
        for (char *s = text; *s; s++)
            if (*s == '\n' && s[1])
                last = s + 1;
        last[strcspn(last, "\r\n")] = 0;
        snprintf(ret->detail, sizeof(ret->detail), "KVM failed: %.200s", *last ? last : "?");
    } else {
        snprintf(ret->detail, sizeof(ret->detail),
                 "a KVM test boot hung for %lld ms (nested virtualisation without support?)",
                 ret->ms);
    }
}

void vm_kvm_probe(const char *vmroot, const struct vm_def *d, const struct vm_qemu_paths *p,
                  int timeout_ms, struct vm_kvm_probe *ret)
{
    memset(ret, 0, sizeof(*ret));
    const char *dev = getenv("LEDGE_VM_KVM_DEVICE");
    if (!dev || !*dev)
        dev = "/dev/kvm";
    if (access(dev, F_OK) < 0) {
        snprintf(ret->detail, sizeof(ret->detail), "no %s", dev);
        return;
    }
    if (access(dev, R_OK | W_OK) < 0) {
        snprintf(ret->detail, sizeof(ret->detail), "no access to %s: %s", dev, strerror(errno));
        return;
    }
    char cache[4096], id[64];
    snprintf(cache, sizeof(cache), "%s/kvm-probe-%s.json", vmroot, vm_arch_name(d->arch));
    boot_id(id, sizeof(id));
    _cleanup_free_ char *text = NULL;
    _cleanup_json_ json_t *j = NULL;
    if (lfs_read_file(cache, 65536, &text, NULL) == 0 &&
        ljson_parse(text, strlen(text), &j, NULL) == 0 && *id &&
        lstr_eq(ljson_str(j, "bootId"), id) && ljson_str(j, "detail")) {
        ret->usable = ljson_bool(j, "usable", false);
        ret->cached = true;
        ret->ms = ljson_int(j, "ms", 0);
        snprintf(ret->detail, sizeof(ret->detail), "%s", ljson_str(j, "detail"));
        return;
    }
    run_probe(d, p, timeout_ms, ret);
    json_t *o = json_pack("{s:s, s:b, s:I, s:s}", "bootId", id, "usable", ret->usable, "ms",
                          (json_int_t)ret->ms, "detail", ret->detail);
    char *s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    if (s)
        lfs_write_atomic(cache, s, strlen(s), 0644);
    free(s);
    json_decref(o);
}
