/* test-hoststats.c — unit tests for the module resource numbers of the metrics endpoint: where
 * the cgroup hierarchies are mounted (v2, v1, systemd's hybrid), and a module's numbers read from
 * a fake /proc and cgroup tree for each layout, for a process module, and for a cgroup that is
 * not the container's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "hoststats.h"

#define ID "c0ffee1234"
static char root[256];

/* root/rel (its directories made), holding text */
static void put(const char *rel, const char *text)
{
    char path[PATH_MAX], dir[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%s", root, rel);
    assert_true(n > 0 && (size_t)n < sizeof(path));
    assert_int_equal(lfs_dirname(path, dir, sizeof(dir)), 0);
    assert_int_equal(lfs_mkdir_p(dir, 0755), 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void link_to(const char *rel, const char *target)
{
    char path[PATH_MAX], dir[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%s", root, rel);
    assert_true(n > 0 && (size_t)n < sizeof(path));
    assert_int_equal(lfs_dirname(path, dir, sizeof(dir)), 0);
    assert_int_equal(lfs_mkdir_p(dir, 0755), 0);
    unlink(path);
    assert_int_equal(symlink(target, path), 0);
}

static const char *at(const char *rel)
{
    static char buf[4][PATH_MAX];
    static int i;
    i = (i + 1) % 4;
    int n = snprintf(buf[i], sizeof(buf[i]), "%s/%s", root, rel);
    assert_true(n > 0 && (size_t)n < sizeof(buf[i]));
    return buf[i];
}

static int setup(void **state)
{
    snprintf(root, sizeof(root), "/tmp/test-hoststats-XXXXXX");
    assert_non_null(mkdtemp(root));
    /* pid 100: a container in its own network namespace */
    link_to("proc/self/ns/net", "net:[4026531840]");
    link_to("proc/100/ns/net", "net:[4026532999]");
    put("proc/100/net/dev",
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs "
        "drop fifo colls carrier compressed\n"
        "    lo:  5000      50    0    0    0     0          0         0     5000      50    0 "
        "   0    0     0       0          0\n"
        "  eth0:  1234      10    0    0    0     0          0         0      987       9    0 "
        "   0    0     0       0          0\n"
        "  eth1:    16       1    0    0    0     0          0         0       13       1    0 "
        "   0    0     0       0          0\n");
    put("proc/100/statm", "1000 50 10 1 0 40 0\n");
    put("proc/100/stat", "100 (prog) S 1 100 100 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 4 0 1 1 1\n");
    put("proc/100/io", "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\n"
                       "write_bytes: 8192\ncancelled_write_bytes: 0\n");
    /* pid 200: a process module, in ledged's namespace and cgroup */
    link_to("proc/200/ns/net", "net:[4026531840]");
    put("proc/200/cgroup", "0::/system.slice/ledged.service\n");
    put("proc/200/statm", "2000 300 10 1 0 40 0\n");
    put("proc/200/stat",
        "200 (a (b) c) R 1 200 200 0 -1 4194560 1 0 0 0 150 50 0 0 20 0 2 0 1 1 1\n");
    put("proc/200/io", "read_bytes: 11\nwrite_bytes: 22\n");
    return 0;
}

static int teardown(void **state)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static void test_mounts(void **state)
{
    /* systemd's hybrid layout, as /proc/self/mountinfo has it: v1 controllers (cpu and cpuacct
     * together), the unified hierarchy beside them */
    put("mountinfo-hybrid",
        "25 1 0:22 / /sys rw,nosuid - sysfs sysfs rw\n"
        "30 25 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"
        "31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n"
        "32 30 0:28 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd\n"
        "35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct\n"
        "36 30 0:32 / /sys/fs/cgroup/memory rw shared:16 - cgroup cgroup rw,memory\n"
        "37 30 0:33 / /sys/fs/cgroup/pids rw shared:17 - cgroup cgroup rw,pids\n"
        "38 30 0:34 / /sys/fs/cgroup/blkio rw shared:18 - cgroup cgroup rw,blkio\n"
        "39 30 0:35 / /sys/fs/cgroup/odd\\040dir rw - cgroup cgroup rw,hugetlb\n");
    struct cgroup_mounts cm;
    assert_int_equal(hoststats_cgroup_mounts(at("mountinfo-hybrid"), &cm), 0);
    assert_string_equal(cm.v2, "/sys/fs/cgroup/unified");
    assert_string_equal(cm.memory, "/sys/fs/cgroup/memory");
    assert_string_equal(cm.cpuacct, "/sys/fs/cgroup/cpu,cpuacct");
    assert_string_equal(cm.pids, "/sys/fs/cgroup/pids");

    put("mountinfo-v2", "25 1 0:22 / /sys rw - sysfs sysfs rw\n"
                        "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 "
                        "rw,nsdelegate,memory_recursiveprot\n");
    assert_int_equal(hoststats_cgroup_mounts(at("mountinfo-v2"), &cm), 0);
    assert_string_equal(cm.v2, "/sys/fs/cgroup");
    assert_string_equal(cm.memory, "");

    /* optional fields before the separator; a line cut short */
    put("mountinfo-v1", "36 30 0:32 / /cg/mem rw shared:16 master:3 - cgroup cgroup rw,memory\n"
                        "37 30 0:33 / /cg/short rw\n");
    assert_int_equal(hoststats_cgroup_mounts(at("mountinfo-v1"), &cm), 0);
    assert_string_equal(cm.memory, "/cg/mem");
    assert_string_equal(cm.v2, "");
    assert_true(hoststats_cgroup_mounts(at("none"), &cm) < 0);
}

static void test_v2(void **state)
{
    put("proc/100/cgroup", "0::/system.slice/docker-" ID ".scope\n");
    const char *cg = "cg2/system.slice/docker-" ID ".scope";
    char rel[512];
#define CG2(file, text) (snprintf(rel, sizeof(rel), "%s/%s", cg, file), put(rel, text))
    CG2("memory.current", "10485760\n");
    CG2("memory.stat", "anon 8000000\nfile 2000000\ninactive_anon 0\ninactive_file 485760\n");
    CG2("memory.max", "67108864\n");
    CG2("cpu.stat", "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n");
    CG2("pids.current", "7\n");
    CG2("io.stat", "254:0 rbytes=1000 wbytes=2000 rios=1 wios=2 dbytes=0 dios=0\n"
                   "8:0 rbytes=24 wbytes=48 rios=1 wios=1 dbytes=0 dios=0\n");
    struct cgroup_mounts cm = {0};
    snprintf(cm.v2, sizeof(cm.v2), "%s", at("cg2"));
    struct module_usage u;
    assert_int_equal(hoststats_module(&cm, at("proc"), 100, ID, 1ull << 33, &u), 0);
    assert_int_equal(u.source, MODULE_USAGE_CGROUP_V2);
    assert_int_equal(u.memory_bytes, 10000000);
    assert_int_equal(u.memory_limit, 67108864);
    assert_int_equal(u.cpu_us, 1500000);
    assert_int_equal(u.pids, 7);
    assert_true(u.has_disk);
    assert_int_equal(u.disk_read_bytes, 1024);
    assert_int_equal(u.disk_write_bytes, 2048);
    assert_true(u.has_net);
    assert_int_equal(u.net_in_bytes, 1250); /* eth0 + eth1, not lo */
    assert_int_equal(u.net_out_bytes, 1000);

    /* no limit; no io controller: the processes' own I/O */
    CG2("memory.max", "max\n");
    snprintf(rel, sizeof(rel), "%s/io.stat", cg);
    unlink(at(rel));
    CG2("cgroup.procs", "100\n");
    assert_int_equal(hoststats_module(&cm, at("proc"), 100, ID, 1ull << 33, &u), 0);
    assert_int_equal(u.memory_limit, 0);
    assert_true(u.has_disk);
    assert_int_equal(u.disk_read_bytes, 4096);
    assert_int_equal(u.disk_write_bytes, 8192);
    assert_string_equal(hoststats_usage_source(u.source), "cgroup_v2");
#undef CG2
}

/* v1 alone, or systemd's hybrid: the unified hierarchy holds the container's cgroup with only
 * the core files (cpu.stat), the memory numbers are the v1 controller's. */
static void test_v1_and_hybrid(void **state)
{
    put("proc/100/cgroup", "12:pids:/docker/" ID "\n"
                           "9:blkio:/docker/" ID "\n"
                           "5:memory:/docker/" ID "\n"
                           "3:cpu,cpuacct:/docker/" ID "\n"
                           "1:name=systemd:/docker/" ID "\n"
                           "0::/docker/" ID "\n");
    put("cg1/memory/docker/" ID "/memory.usage_in_bytes", "20971520\n");
    put("cg1/memory/docker/" ID "/memory.stat",
        "cache 4000000\nrss 100\ninactive_file 1\ntotal_cache 4000000\ntotal_rss 100\n"
        "total_inactive_file 971520\n");
    put("cg1/memory/docker/" ID "/memory.limit_in_bytes", "9223372036854771712\n");
    put("cg1/cpu,cpuacct/docker/" ID "/cpuacct.usage", "2500000000\n");
    put("cg1/pids/docker/" ID "/pids.current", "3\n");
    /* its two processes' own I/O: v1's blkio counters are not read */
    put("cg1/memory/docker/" ID "/cgroup.procs", "100\n101\n");
    put("proc/101/io", "read_bytes: 4\nwrite_bytes: 4096\n");
    struct cgroup_mounts cm = {0};
    snprintf(cm.memory, sizeof(cm.memory), "%s", at("cg1/memory"));
    snprintf(cm.cpuacct, sizeof(cm.cpuacct), "%s", at("cg1/cpu,cpuacct"));
    snprintf(cm.pids, sizeof(cm.pids), "%s", at("cg1/pids"));
    struct module_usage u;
    assert_int_equal(hoststats_module(&cm, at("proc"), 100, ID, 1ull << 33, &u), 0);
    assert_int_equal(u.source, MODULE_USAGE_CGROUP_V1);
    assert_int_equal(u.memory_bytes, 20000000);
    assert_int_equal(u.memory_limit, 0); /* v1's "unlimited" */
    assert_int_equal(u.cpu_us, 2500000);
    assert_int_equal(u.pids, 3);
    assert_true(u.has_disk);
    assert_int_equal(u.disk_read_bytes, 4100);
    assert_int_equal(u.disk_write_bytes, 12288);
    assert_true(u.has_net);

    put("cg1/memory/docker/" ID "/memory.limit_in_bytes", "104857600\n");
    assert_int_equal(hoststats_module(&cm, at("proc"), 100, ID, 1ull << 33, &u), 0);
    assert_int_equal(u.memory_limit, 104857600);

    /* hybrid: the unified hierarchy has the cgroup, without memory.current */
    snprintf(cm.v2, sizeof(cm.v2), "%s", at("cg1/unified"));
    put("cg1/unified/docker/" ID "/cpu.stat", "usage_usec 2600000\nuser_usec 1\nsystem_usec 2\n");
    put("cg1/unified/docker/" ID "/cgroup.procs", "100\n");
    assert_int_equal(hoststats_module(&cm, at("proc"), 100, ID, 1ull << 33, &u), 0);
    assert_int_equal(u.source, MODULE_USAGE_CGROUP_V1);
    assert_int_equal(u.memory_bytes, 20000000);
    assert_int_equal(u.cpu_us, 2600000); /* the unified hierarchy's cpu.stat */
    assert_int_equal(u.pids, 3);
    assert_int_equal(u.disk_write_bytes, 12288);
    assert_string_equal(hoststats_usage_source(u.source), "cgroup_v1");

    /* no cgroup.procs to read: no disk numbers rather than zeros */
    unlink(at("cg1/memory/docker/" ID "/cgroup.procs"));
    assert_int_equal(hoststats_module(&cm, at("proc"), 100, ID, 1ull << 33, &u), 0);
    assert_false(u.has_disk);
}

/* A process module: the program's numbers, no network (the host's namespace). */
static void test_process(void **state)
{
    struct cgroup_mounts cm = {0};
    snprintf(cm.v2, sizeof(cm.v2), "%s", at("cg2"));
    struct module_usage u;
    assert_int_equal(hoststats_module(&cm, at("proc"), 200, NULL, 1ull << 33, &u), 0);
    assert_int_equal(u.source, MODULE_USAGE_PROCESS);
    long page = sysconf(_SC_PAGESIZE), hz = sysconf(_SC_CLK_TCK);
    assert_int_equal(u.memory_bytes, 300 * (uint64_t)page);
    assert_int_equal(u.cpu_us, 200 * 1000000ull / (uint64_t)hz); /* "a (b) c" parsed past */
    assert_int_equal(u.pids, 2);
    assert_true(u.has_disk);
    assert_int_equal(u.disk_read_bytes, 11);
    assert_int_equal(u.disk_write_bytes, 22);
    assert_false(u.has_net);
    assert_string_equal(hoststats_usage_source(u.source), "process");

    /* a container id its cgroup does not name (ledged's own cgroup): still the program's */
    assert_int_equal(hoststats_module(&cm, at("proc"), 200, ID, 1ull << 33, &u), 0);
    assert_int_equal(u.source, MODULE_USAGE_PROCESS);

    /* a path climbing out is not read */
    put("proc/100/cgroup", "0::/../../docker-" ID ".scope\n");
    assert_int_equal(hoststats_module(&cm, at("proc"), 100, ID, 1ull << 33, &u), 0);
    assert_int_equal(u.source, MODULE_USAGE_PROCESS);

    assert_int_equal(hoststats_module(&cm, at("proc"), 300, ID, 1ull << 33, &u), -ENOENT);
    assert_int_equal(hoststats_module(&cm, at("proc"), 0, ID, 1ull << 33, &u), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mounts),
        cmocka_unit_test(test_v2),
        cmocka_unit_test(test_v1_and_hybrid),
        cmocka_unit_test(test_process),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
