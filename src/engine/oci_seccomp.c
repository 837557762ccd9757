/* oci_seccomp.c — Moby's default seccomp profile as OCI config: everything not named fails with
 * EPERM; the list below is what dockerd 20.10 (Debian 12's docker.io) puts into a container's
 * config.json for this kernel, and the syscalls Moby's profile opens per capability are added
 * when the container has that capability (CapAdd, Privileged has no profile at all). Neither
 * runc nor crun filter anything when config.json has no linux.seccomp, so without this a
 * container could call mount(2), reboot(2), kexec_load(2) with the capabilities it has. */
#include <string.h>
#include <sys/utsname.h>

#include "base/macro.h"
#include "oci-internal.h"

static const char *const allowed[] = {
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    NULL,
};

/* Syscalls a capability opens (Moby's profile: "includes": {"caps": [...]}). */
static const struct {
    const char *cap;
    const char *names[26];
} by_cap[] = {
    {"CAP_SYS_ADMIN",
     {"bpf",
      "clone",
      "clone3",
      "fanotify_init",
      "fsconfig",
      "fsmount",
      "fsopen",
      "fspick",
      "lookup_dcookie",
      "mount",
      "mount_setattr",
      "move_mount",
      "name_to_handle_at",
      "open_tree",
      "perf_event_open",
      "quotactl",
      "quotactl_fd",
      "setdomainname",
      "sethostname",
      "setns",
      "syslog",
      "umount",
      "umount2",
      "unshare",
      NULL}},
    {"CAP_SYS_BOOT", {"reboot", NULL}},
    {"CAP_SYS_CHROOT", {"chroot", NULL}},
    {"CAP_SYS_MODULE", {"delete_module", "init_module", "finit_module", NULL}},
    {"CAP_SYS_PACCT", {"acct", NULL}},
    {"CAP_SYS_PTRACE",
     {"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace",
      NULL}},
    {"CAP_SYS_RAWIO", {"iopl", "ioperm", NULL}},
    {"CAP_SYS_TIME", {"settimeofday", "stime", "clock_settime", "clock_settime64", NULL}},
    {"CAP_SYS_TTY_CONFIG", {"vhangup", NULL}},
    {"CAP_SYS_NICE", {"get_mempolicy", "mbind", "set_mempolicy", NULL}},
    {"CAP_SYSLOG", {"syslog", NULL}},
    {"CAP_BPF", {"bpf", NULL}},
    {"CAP_PERFMON", {"perf_event_open", NULL}},
};

/* personality(2) values Moby allows: PER_LINUX, UNAME26, PER_LINUX32, UNAME26|PER_LINUX32, and
 * the query 0xffffffff. */
static const json_int_t personalities[] = {0, 8, 131072, 131080, 4294967295LL};

/* clone(2) without any namespace flag (CLONE_NEWNS | NEWUTS | NEWIPC | NEWUSER | NEWPID |
 * NEWNET | NEWCGROUP): the mask Moby uses. */
#define CLONE_NS_MASK 2114060288LL

const char *oci_seccomp_arch(void)
{
    struct utsname u;
    if (uname(&u) < 0)
        return NULL;
    if (strcmp(u.machine, "x86_64") == 0)
        return "SCMP_ARCH_X86_64";
    if (strcmp(u.machine, "aarch64") == 0)
        return "SCMP_ARCH_AARCH64";
    if (strncmp(u.machine, "armv", 4) == 0)
        return "SCMP_ARCH_ARM";
    return NULL;
}

static bool has_cap(const json_t *caps, const char *cap)
{
    size_t i;
    json_t *v;
    json_array_foreach (json_object_get(caps, "bounding"), i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), cap) == 0)
            return true;
    }
    return false;
}

static int add_names(json_t *names, const char *const *list)
{
    for (; *list; list++)
        if (json_array_append_new(names, json_string(*list)) < 0)
            return -1;
    return 0;
}

json_t *oci_seccomp_profile(const char *arch, const json_t *caps)
{
    json_t *arches = json_array();
    if (!arches)
        return NULL;
    if (strcmp(arch, "SCMP_ARCH_X86_64") == 0) {
        json_array_append_new(arches, json_string("SCMP_ARCH_X86_64"));
        json_array_append_new(arches, json_string("SCMP_ARCH_X86"));
        json_array_append_new(arches, json_string("SCMP_ARCH_X32"));
    } else if (strcmp(arch, "SCMP_ARCH_AARCH64") == 0) {
        json_array_append_new(arches, json_string("SCMP_ARCH_AARCH64"));
        json_array_append_new(arches, json_string("SCMP_ARCH_ARM"));
    } else {
        json_array_append_new(arches, json_string(arch));
    }
    json_t *rules = json_array();
    json_t *doc = json_pack("{s:s, s:o, s:o}", "defaultAction", "SCMP_ACT_ERRNO", "architectures",
                            arches, "syscalls", rules);
    json_t *names = json_array();
    if (!doc || !names || add_names(names, allowed) < 0)
        goto fail;
    bool sys_admin = has_cap(caps, "CAP_SYS_ADMIN");
    for (size_t i = 0; i < ARRAY_SIZE(by_cap); i++)
        if (has_cap(caps, by_cap[i].cap) && add_names(names, by_cap[i].names) < 0)
            goto fail;
    if (strcmp(arch, "SCMP_ARCH_X86_64") == 0) {
        json_array_append_new(names, json_string("arch_prctl"));
        json_array_append_new(names, json_string("modify_ldt"));
    } else if (strcmp(arch, "SCMP_ARCH_AARCH64") == 0 || strcmp(arch, "SCMP_ARCH_ARM") == 0) {
        static const char *const arm[] = {"arm_fadvise64_64",
                                          "arm_sync_file_range",
                                          "sync_file_range2",
                                          "breakpoint",
                                          "cacheflush",
                                          "set_tls",
                                          NULL};
        add_names(names, arm);
    }
    /* ptrace is Moby's default on kernels >= 4.8 (every kernel ledge supports) */
    json_array_append_new(names, json_string("ptrace"));
    if (json_array_append_new(
            rules, json_pack("{s:o, s:s}", "names", names, "action", "SCMP_ACT_ALLOW")) < 0) {
        names = NULL;
        goto fail;
    }
    for (size_t i = 0; i < ARRAY_SIZE(personalities); i++)
        json_array_append_new(rules,
                              json_pack("{s:[s], s:s, s:[{s:i, s:I, s:s}]}", "names", "personality",
                                        "action", "SCMP_ACT_ALLOW", "args", "index", 0, "value",
                                        personalities[i], "op", "SCMP_CMP_EQ"));
    if (!sys_admin) {
        json_array_append_new(rules, json_pack("{s:[s], s:s, s:[{s:i, s:I, s:I, s:s}]}", "names",
                                               "clone", "action", "SCMP_ACT_ALLOW", "args", "index",
                                               0, "value", CLONE_NS_MASK, "valueTwo", (json_int_t)0,
                                               "op", "SCMP_CMP_MASKED_EQ"));
        /* clone3's flags are in memory a filter cannot read: ENOSYS makes libc fall back to
         * clone, which the rule above checks */
        json_array_append_new(rules, json_pack("{s:[s], s:s, s:i}", "names", "clone3", "action",
                                               "SCMP_ACT_ERRNO", "errnoRet", 38));
    }
    return doc;
fail:
    json_decref(names);
    json_decref(doc);
    return NULL;
}
