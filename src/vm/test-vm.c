/* test-vm.c — unit tests for the vm layer: the frame codec and its resynchronisation, VM
 * definitions (names, sizes, ports, shares, JSON), QEMU command lines and QMP messages, the
 * ports a deployment publishes, images and VM directories, host checks, and the multiplexer
 * end to end (host and guest muxes joined by a socketpair in one event loop). */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/deb.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "net/http_server.h"
#include "vm/def.h"
#include "vm/exec.h"
#include "frame.h"
#include "vm/host.h"
#include "vm/image.h"
#include "spawn.h"
#include "mux.h"
#include "vm/paths.h"
#include "vm/qemu.h"
#include "vm/self.h"
#include "vm/update.h"

/* ------------------------------------------------------------------ frames */

static void test_frame_roundtrip(void **state)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(vm_frame_encode(&b, VM_FRAME_DATA, 7, "hello", 5), 0);
    assert_int_equal(vm_frame_encode(&b, VM_FRAME_EOF, 7, NULL, 0), 0);
    assert_int_equal(b.len, 2 * VM_FRAME_HEADER + 5);
    struct vm_frame f;
    size_t used, skipped;
    assert_int_equal(vm_frame_decode((uint8_t *)b.data, b.len, &f, &used, &skipped), 1);
    assert_int_equal(f.type, VM_FRAME_DATA);
    assert_int_equal(f.conn, 7);
    assert_int_equal(f.len, 5);
    assert_memory_equal(f.payload, "hello", 5);
    assert_int_equal(used, VM_FRAME_HEADER + 5);
    assert_int_equal(skipped, 0);
    assert_int_equal(vm_frame_decode((uint8_t *)b.data + used, b.len - used, &f, &used, NULL), 1);
    assert_int_equal(f.type, VM_FRAME_EOF);
    assert_int_equal(f.len, 0);
    assert_string_equal(vm_frame_type_name(VM_FRAME_WINDOW), "WINDOW");
    assert_string_equal(vm_frame_type_name(0), "?");
    assert_string_equal(vm_frame_type_name(99), "?");
    lbuf_free(&b);
}

static void test_frame_errors(void **state)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(vm_frame_encode(&b, 0, 1, NULL, 0), -EINVAL);
    assert_int_equal(vm_frame_encode(&b, VM_FRAME_TYPE_MAX + 1, 1, NULL, 0), -EINVAL);
    static char big[VM_FRAME_MAX_PAYLOAD + 1];
    assert_int_equal(vm_frame_encode(&b, VM_FRAME_DATA, 1, big, sizeof(big)), -E2BIG);
    assert_int_equal(vm_frame_encode(&b, VM_FRAME_DATA, 1, big, sizeof(big) - 1), 0);
    assert_int_equal(b.len, VM_FRAME_HEADER + VM_FRAME_MAX_PAYLOAD);
    lbuf_free(&b);
    /* WINDOW credit: 4 bytes, non-zero. */
    struct vm_frame f = {.type = VM_FRAME_WINDOW, .payload = (const uint8_t *)"\0\0\0\0", .len = 4};
    uint32_t credit;
    assert_int_equal(vm_frame_window_credit(&f, &credit), -EINVAL);
    f.payload = (const uint8_t *)"\0\1\0\0";
    assert_int_equal(vm_frame_window_credit(&f, &credit), 0);
    assert_int_equal(credit, 65536);
    f.len = 3;
    assert_int_equal(vm_frame_window_credit(&f, &credit), -EINVAL);
    f.type = VM_FRAME_DATA;
    f.len = 4;
    assert_int_equal(vm_frame_window_credit(&f, &credit), -EINVAL);
}

static void test_frame_partial(void **state)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(vm_frame_encode(&b, VM_FRAME_HELLO, 0, "{}", 2), 0);
    struct vm_frame f;
    size_t used, skipped;
    /* Every prefix needs more bytes and drops nothing. */
    for (size_t n = 0; n < b.len; n++) {
        assert_int_equal(vm_frame_decode((uint8_t *)b.data, n, &f, &used, &skipped), 0);
        assert_int_equal(used, 0);
        assert_int_equal(skipped, 0);
    }
    assert_int_equal(vm_frame_decode((uint8_t *)b.data, b.len, &f, &used, &skipped), 1);
    lbuf_free(&b);
}

static void test_frame_resync(void **state)
{
    struct lbuf b = LBUF_INIT;
    /* Garbage (including a fake magic), a frame cut short, then good frames. */
    lbuf_append(&b, "xxLVz", 5);
    struct lbuf first = LBUF_INIT;
    vm_frame_encode(&first, VM_FRAME_DATA, 3, "lost payload", 12);
    lbuf_append(&b, first.data, first.len - 4); /* the tail of this frame went missing */
    size_t good_at = b.len;
    vm_frame_encode(&b, VM_FRAME_DATA, 9, "kept", 4);
    vm_frame_encode(&b, VM_FRAME_CLOSE, 9, NULL, 0);
    struct vm_frame f;
    size_t used, skipped, off = 0, total_skipped = 0;
    int frames = 0;
    while (off < b.len) {
        int r = vm_frame_decode((uint8_t *)b.data + off, b.len - off, &f, &used, &skipped);
        total_skipped += skipped;
        off += used;
        if (!r)
            break;
        frames++;
        /* Only the truncated frame is lost: its payload CRC fails, and scanning on finds the
         * next intact frame right where it starts. */
        if (frames == 1) {
            assert_int_equal(f.type, VM_FRAME_DATA);
            assert_int_equal(f.conn, 9);
            assert_memory_equal(f.payload, "kept", 4);
        } else {
            assert_int_equal(f.type, VM_FRAME_CLOSE);
        }
    }
    assert_int_equal(frames, 2);
    assert_int_equal(total_skipped, good_at);
    assert_int_equal(off, b.len);
    lbuf_free(&b);
    lbuf_free(&first);

    /* A corrupted payload byte: that frame is skipped, the next one decodes. */
    struct lbuf c = LBUF_INIT;
    vm_frame_encode(&c, VM_FRAME_DATA, 1, "abcdef", 6);
    size_t second = c.len;
    vm_frame_encode(&c, VM_FRAME_DATA, 2, "ghij", 4);
    c.data[VM_FRAME_HEADER + 2] ^= 0x40;
    assert_int_equal(vm_frame_decode((uint8_t *)c.data, c.len, &f, &used, &skipped), 1);
    assert_int_equal(f.conn, 2);
    assert_int_equal(skipped, second);
    /* An oversized length with a valid header CRC is garbage, not a wait for 4 GiB. */
    struct lbuf d = LBUF_INIT;
    vm_frame_encode(&d, VM_FRAME_DATA, 1, "x", 1);
    d.data[8] = 0x7f; /* length high byte */
    assert_int_equal(vm_frame_decode((uint8_t *)d.data, d.len, &f, &used, &skipped), 0);
    assert_int_equal(used, d.len); /* everything dropped: no valid frame start remains */
    lbuf_free(&c);
    lbuf_free(&d);
}

/* ------------------------------------------------------------------ definitions */

static void test_names_sizes(void **state)
{
    struct lerr e = {0};
    assert_int_equal(vm_name_check("edge-1", &e), 0);
    assert_int_equal(vm_name_check("1abc", &e), 0);
    assert_int_equal(vm_name_check("", &e), -EINVAL);
    assert_non_null(strstr(e.msg, "1 to 32"));
    assert_int_equal(vm_name_check("-x", &e), -EINVAL);
    assert_non_null(strstr(e.msg, "must start"));
    assert_int_equal(vm_name_check("Big", &e), -EINVAL);
    assert_int_equal(vm_name_check("a/b", &e), -EINVAL);
    assert_non_null(strstr(e.msg, "only a-z"));
    assert_int_equal(vm_name_check("abcdefghijabcdefghijabcdefghijabc", &e), -EINVAL);
    assert_int_equal(vm_name_check(NULL, &e), -EINVAL);

    uint64_t v;
    assert_int_equal(vm_size_parse("1024M", &v), 0);
    assert_int_equal(v, 1024ull << 20);
    assert_int_equal(vm_size_parse("10G", &v), 0);
    assert_int_equal(v, 10ull << 30);
    assert_int_equal(vm_size_parse("2GiB", &v), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(vm_size_parse("512mb", &v), 0);
    assert_int_equal(v, 512ull << 20);
    assert_int_equal(vm_size_parse("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(vm_size_parse("1T", &v), 0);
    assert_int_equal(vm_size_parse("", &v), -EINVAL);
    assert_int_equal(vm_size_parse("G", &v), -EINVAL);
    assert_int_equal(vm_size_parse("-1G", &v), -EINVAL);
    assert_int_equal(vm_size_parse("1X", &v), -EINVAL);
    assert_int_equal(vm_size_parse("1Gx", &v), -EINVAL);
    assert_int_equal(vm_size_parse("12b", &v), -EINVAL);
    assert_int_equal(vm_size_parse("99999999999999999999", &v), -ERANGE);
    assert_int_equal(vm_size_parse("9999999999999T", &v), -ERANGE);
    char buf[32];
    assert_string_equal(vm_size_format(1024ull << 20, buf, sizeof(buf)), "1 GiB");
    assert_string_equal(vm_size_format(1536ull << 20, buf, sizeof(buf)), "1.5 GiB");
    assert_string_equal(vm_size_format(100, buf, sizeof(buf)), "100 B");

    enum vm_arch a;
    assert_int_equal(vm_arch_parse("aarch64", &a), 0);
    assert_int_equal(a, VM_ARCH_ARM64);
    assert_int_equal(vm_arch_parse("x86_64", &a), 0);
    assert_int_equal(a, VM_ARCH_AMD64);
    assert_int_equal(vm_arch_parse("riscv64", &a), -EINVAL);
    assert_string_equal(vm_arch_uname(VM_ARCH_ARM64), "aarch64");
    enum vm_accel ac;
    assert_int_equal(vm_accel_parse("emulation", &ac), 0);
    assert_int_equal(ac, VM_ACCEL_TCG);
    assert_int_equal(vm_accel_parse("hvf", &ac), -EINVAL);
    assert_string_equal(vm_accel_name(VM_ACCEL_KVM), "kvm");
}

static void test_def_defaults_validate(void **state)
{
    struct vm_def d;
    struct lerr e = {0};
    assert_int_equal(vm_def_init(&d, "BAD", &e), -EINVAL);
    assert_int_equal(vm_def_init(&d, "edge", &e), 0);
    assert_int_equal(d.memory, 1ull << 30);
    assert_int_equal(d.cpus, 1);
    assert_int_equal(d.disk, 10ull << 30);
    assert_int_equal(d.hub_port, 8883);
    assert_false(d.autostart);
    assert_int_equal(vm_def_validate(&d, &e), 0);
    d.memory = 100 << 20;
    assert_int_equal(vm_def_validate(&d, &e), -ERANGE);
    assert_non_null(strstr(e.msg, "memory: between 256 MiB"));
    d.memory = (1ull << 30) + 1;
    assert_int_equal(vm_def_validate(&d, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "whole number of MiB"));
    d.memory = 1ull << 30;
    d.cpus = 0;
    assert_int_equal(vm_def_validate(&d, &e), -ERANGE);
    assert_non_null(strstr(e.msg, "cpus"));
    d.cpus = 2;
    d.disk = 1ull << 30;
    assert_int_equal(vm_def_validate(&d, &e), -ERANGE);
    assert_non_null(strstr(e.msg, "disk: between 2 GiB"));
    d.disk = (4ull << 30) + 512;
    assert_int_equal(vm_def_validate(&d, &e), -EINVAL);
    d.disk = 4ull << 30;
    d.boot_timeout_s = 5;
    assert_int_equal(vm_def_validate(&d, &e), -ERANGE);
    assert_non_null(strstr(e.msg, "bootTimeout"));
    vm_def_free(&d);
    vm_def_free(NULL);
}

static void test_ports(void **state)
{
    struct vm_port p;
    struct lerr e = {0};
    char buf[96];
    assert_int_equal(vm_port_parse("8080:80", &p, &e), 0);
    assert_string_equal(vm_port_format(&p, buf, sizeof(buf)), "127.0.0.1:8080->80/tcp");
    assert_int_equal(vm_port_parse("0.0.0.0:5000:5001/udp", &p, &e), 0);
    assert_string_equal(vm_port_format(&p, buf, sizeof(buf)), "0.0.0.0:5000->5001/udp");
    assert_int_equal(vm_port_parse("9000", &p, &e), 0);
    assert_int_equal(p.host_port, 9000);
    assert_int_equal(p.guest_port, 9000);
    assert_int_equal(vm_port_parse("", &p, &e), -EINVAL);
    assert_int_equal(vm_port_parse(NULL, &p, &e), -EINVAL);
    assert_int_equal(vm_port_parse("80:0", &p, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "1 to 65535"));
    assert_int_equal(vm_port_parse("80:65536", &p, &e), -EINVAL);
    assert_int_equal(vm_port_parse("80:81/sctp", &p, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "tcp or udp"));
    assert_int_equal(vm_port_parse("host:80:81", &p, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "IPv4"));
    assert_int_equal(vm_port_parse("1:2:3:4", &p, &e), -EINVAL);
    assert_int_equal(vm_port_parse("a:b", &p, &e), -EINVAL);

    struct vm_def d;
    vm_def_init(&d, "p", &e);
    vm_port_parse("8080:80", &p, &e);
    assert_int_equal(vm_def_add_port(&d, &p, &e), 0);
    assert_int_equal(vm_def_add_port(&d, &p, &e), -EEXIST);
    assert_non_null(strstr(e.msg, "already forwarded"));
    struct vm_port all;
    vm_port_parse("0.0.0.0:8080:81", &all, &e);
    assert_int_equal(vm_def_add_port(&d, &all, &e), -EEXIST); /* 0.0.0.0 overlaps 127.0.0.1 */
    struct vm_port udp;
    vm_port_parse("8080:80/udp", &udp, &e);
    assert_int_equal(vm_def_add_port(&d, &udp, &e), 0);
    struct vm_port hub;
    vm_port_parse("8883:1883", &hub, &e);
    assert_int_equal(vm_def_add_port(&d, &hub, &e), -EEXIST);
    assert_non_null(strstr(e.msg, "hub"));
    assert_int_equal(vm_def_remove_port(&d, &p, &e), 0);
    assert_int_equal(vm_def_remove_port(&d, &p, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "no forward from 127.0.0.1:8080/tcp"));
    assert_int_equal(d.n_ports, 1);
    for (int i = d.n_ports; i < VM_MAX_PORTS; i++) {
        struct vm_port q = {.proto = "tcp",
                            .addr = "127.0.0.1",
                            .host_port = (uint16_t)(20000 + i),
                            .guest_port = 1};
        assert_int_equal(vm_def_add_port(&d, &q, &e), 0);
    }
    struct vm_port q = {.proto = "tcp", .addr = "127.0.0.1", .host_port = 30000, .guest_port = 1};
    assert_int_equal(vm_def_add_port(&d, &q, &e), -ENOSPC);
    vm_def_free(&d);
}

static void test_shares(void **state)
{
    struct vm_def d;
    struct lerr e = {0};
    vm_def_init(&d, "s", &e);
    char tmp[] = "/tmp/test-vm-share-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    assert_int_equal(vm_def_add_share(&d, tmp, "/mnt/data", true, &e), 0);
    assert_string_equal(d.shares[0].tag, "share0");
    assert_true(d.shares[0].read_only);
    assert_int_equal(vm_def_add_share(&d, tmp, "/mnt/data", false, &e), -EEXIST);
    assert_int_equal(vm_def_add_share(&d, tmp, "/mnt/other", false, &e), 0);
    assert_string_equal(d.shares[1].tag, "share1");
    assert_int_equal(vm_def_add_share(&d, "relative", "/x", false, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "absolute"));
    assert_int_equal(vm_def_add_share(&d, tmp, "/mnt/../etc", false, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "normalised"));
    assert_int_equal(vm_def_add_share(&d, tmp, "/mnt/a,b", false, &e), -EINVAL);
    assert_int_equal(vm_def_add_share(&d, tmp, "/mnt/x/", false, &e), -EINVAL);
    assert_int_equal(vm_def_add_share(&d, tmp, "/", false, &e), -EINVAL);
    assert_int_equal(vm_def_add_share(&d, "/nonexistent/dir", "/mnt/n", false, &e), -ENOENT);
    assert_int_equal(vm_def_add_share(&d, "/etc/hostname", "/mnt/n", false, &e), -ENOTDIR);
    /* Tags stay stable: removing share0 frees its tag for the next share. */
    assert_int_equal(vm_def_remove_share(&d, NULL, "/mnt/data", &e), 0);
    assert_int_equal(vm_def_add_share(&d, tmp, "/mnt/third", false, &e), 0);
    assert_string_equal(d.shares[1].tag, "share0");
    assert_int_equal(vm_def_remove_share(&d, tmp, NULL, &e), 0);
    assert_int_equal(vm_def_remove_share(&d, NULL, "/mnt/none", &e), -ENOENT);
    assert_non_null(strstr(e.msg, "no shared folder"));
    json_t *j = vm_def_shares_json(&d);
    assert_int_equal(json_array_size(j), 1);
    json_decref(j);
    vm_def_free(&d);
    rmdir(tmp);
}

static void test_def_json(void **state)
{
    struct vm_def d, back;
    struct lerr e = {0};
    vm_def_init(&d, "roundtrip", &e);
    d.arch = VM_ARCH_ARM64;
    d.accel = VM_ACCEL_TCG;
    d.memory = 2ull << 30;
    d.cpus = 2;
    d.autostart = true;
    d.engine = VM_ENGINE_OCI;
    d.image = strdup("arm64-0123456789abcdef");
    struct vm_port p;
    vm_port_parse("0.0.0.0:8080:80", &p, &e);
    vm_def_add_port(&d, &p, &e);
    vm_def_add_share(&d, "/tmp", "/mnt/tmp", true, &e);
    json_t *j = vm_def_to_json(&d);
    assert_int_equal(vm_def_from_json(j, &back, &e), 0);
    json_t *j2 = vm_def_to_json(&back);
    assert_true(json_equal(j, j2));
    assert_int_equal(back.arch, VM_ARCH_ARM64);
    assert_int_equal(back.engine, VM_ENGINE_OCI);
    assert_string_equal(ljson_str(j, "engine"), "oci");
    assert_true(back.autostart);
    assert_string_equal(back.image, "arm64-0123456789abcdef");
    assert_string_equal(back.shares[0].tag, "share0");
    json_decref(j2);
    vm_def_free(&back);
    /* A definition from before engine variants runs Moby. */
    json_t *old = json_pack("{s:s}", "name", "old");
    assert_int_equal(vm_def_from_json(old, &back, &e), 0);
    assert_int_equal(back.engine, VM_ENGINE_DOCKER);
    vm_def_free(&back);
    json_decref(old);

    /* Saved and loaded. */
    char tmp[] = "/tmp/test-vm-def-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char path[128];
    snprintf(path, sizeof(path), "%s/vm.json", tmp);
    assert_int_equal(vm_def_save(path, &d), 0);
    assert_int_equal(vm_def_load(path, &back, &e), 0);
    assert_int_equal(back.memory, 2ull << 30);
    vm_def_free(&back);
    snprintf(path, sizeof(path), "%s/none.json", tmp);
    assert_int_equal(vm_def_load(path, &back, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "none.json"));
    snprintf(path, sizeof(path), "%s/bad.json", tmp);
    lfs_write_atomic(path, "{nope", 5, 0644);
    assert_int_equal(vm_def_load(path, &back, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "bad.json"));
    unlink(path);
    snprintf(path, sizeof(path), "%s/vm.json", tmp);
    unlink(path);
    rmdir(tmp);
    vm_def_free(&d);
    json_decref(j);

    /* Every field's error names the field. */
    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"[]", "JSON object"},
        {"{\"name\": 1}", "name: must be a string"},
        {"{\"name\": \"x\", \"arch\": \"mips\"}", "arch: amd64 or arm64"},
        {"{\"name\": \"x\", \"accel\": \"hax\"}", "accel: auto, kvm or tcg"},
        {"{\"name\": \"x\", \"engine\": \"podman\"}", "engine: docker or oci"},
        {"{\"name\": \"x\", \"engine\": 1}", "engine: must be a string"},
        {"{\"name\": \"x\", \"memory\": \"1G\"}", "memory: must be an integer"},
        {"{\"name\": \"x\", \"memory\": -5}", "memory: must be an integer"},
        {"{\"name\": \"x\", \"cpus\": 1000}", "cpus: must be an integer from 0 to 64"},
        {"{\"name\": \"x\", \"cpus\": 0}", "cpus: between 1"},
        {"{\"name\": \"x\", \"autostart\": \"yes\"}", "autostart: must be true or false"},
        {"{\"name\": \"x\", \"image\": 5}", "image: must be a string"},
        {"{\"name\": \"x\", \"ports\": {}}", "ports: must be an array"},
        {"{\"name\": \"x\", \"ports\": [1]}", "ports[0]: must be an object"},
        {"{\"name\": \"x\", \"ports\": [{\"hostPort\": 1}]}", "ports[0]: hostPort and guestPort"},
        {"{\"name\": \"x\", \"ports\": [{\"hostPort\": 1, \"guestPort\": 2, \"proto\": \"x\"}]}",
         "ports[0].proto"},
        {"{\"name\": \"x\", \"ports\": [{\"hostPort\": 1, \"guestPort\": 2, \"hostAddr\": \"h\"}]}",
         "ports[0].hostAddr"},
        {"{\"name\": \"x\", \"ports\": [{\"hostPort\": 99999, \"guestPort\": 2}]}",
         "ports[0]: hostPort"},
        {"{\"name\": \"x\", \"shares\": 3}", "shares: must be an array"},
        {"{\"name\": \"x\", \"shares\": [{\"tag\": \"share0\", \"hostDir\": \"a\", \"guestDir\": "
         "\"/b\"}]}",
         "must be an absolute path"},
        {"{\"name\": \"x\", \"shares\": [{\"tag\": \"t\", \"hostDir\": \"/a\", \"guestDir\": "
         "\"/b\"}]}",
         "shares[0].tag"},
        {"{\"name\": \"x\", \"shares\": [{\"tag\": \"share0\", \"hostDir\": \"/a\", \"guestDir\": "
         "\"/b\"}, {\"tag\": \"share0\", \"hostDir\": \"/a\", \"guestDir\": \"/c\"}]}",
         "duplicate"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *b = json_loads(bad[i].json, 0, NULL);
        assert_non_null(b);
        lerr_clear(&e);
        assert_true(vm_def_from_json(b, &back, &e) < 0);
        if (!strstr(e.msg, bad[i].msg))
            fail_msg("%s: got \"%s\", want \"%s\"", bad[i].json, e.msg, bad[i].msg);
        json_decref(b);
    }
}

/* ------------------------------------------------------------------ QEMU */

static bool argv_has(const struct lstrv *v, const char *s)
{
    for (size_t i = 0; i < v->n; i++)
        if (strstr(v->v[i], s))
            return true;
    return false;
}

static void test_qemu_argv(void **state)
{
    struct vm_def d;
    struct lerr e = {0};
    vm_def_init(&d, "q1", &e);
    d.arch = VM_ARCH_AMD64;
    vm_def_add_share(&d, "/tmp", "/mnt/t", true, &e);
    struct vm_qemu_paths p = {.dir = "/vms/q1", .run_dir = "/vms/q1/run"};
    struct lstrv v = LSTRV_INIT;
    assert_int_equal(vm_qemu_argv(&d, &p, false, false, &v, &e), 0);
    assert_string_equal(v.v[0], "qemu-system-x86_64");
    assert_true(argv_has(&v, "tcg,tb-size=256"));
    assert_true(argv_has(&v, "ledge-vm-q1,process=ledge-vm-q1"));
    assert_true(argv_has(&v, "/vms/q1/kernel"));
    assert_true(argv_has(&v, "file=/vms/q1/disk.img,format=raw"));
    assert_true(argv_has(&v, "path=/vms/q1/run/chan.sock,server=on,wait=off"));
    assert_true(argv_has(&v, "name=org.ledge.channel.0"));
    assert_true(argv_has(&v, "path=/vms/q1/run/qmp.sock"));
    assert_true(
        argv_has(&v, "local,id=fs0,path=/tmp,security_model=none,multidevs=remap,readonly=on"));
    assert_true(argv_has(&v, "mount_tag=share0"));
    assert_true(argv_has(&v, "mitigations=off"));
    assert_true(argv_has(&v, "console=ttyS0"));
    assert_true(argv_has(&v, "1024M"));
    assert_false(argv_has(&v, "-no-reboot")); /* a guest reboot resets QEMU in place */
    lstrv_free(&v);
    assert_int_equal(vm_qemu_argv(&d, &p, true, false, &v, &e), 0);
    assert_true(argv_has(&v, "kvm"));
    assert_false(argv_has(&v, "tb-size"));
    assert_true(argv_has(&v, "host"));
    assert_false(argv_has(&v, "mitigations=off"));
    lstrv_free(&v);
    /* The probe boots the kernel alone and stops. */
    assert_int_equal(vm_qemu_argv(&d, &p, true, true, &v, &e), 0);
    assert_true(argv_has(&v, "ledge.probe"));
    assert_true(argv_has(&v, "-no-reboot"));
    assert_true(argv_has(&v, "stdio,id=console"));
    assert_false(argv_has(&v, "disk.img"));
    assert_false(argv_has(&v, "chan.sock"));
    lstrv_free(&v);
    d.arch = VM_ARCH_ARM64;
    assert_int_equal(vm_qemu_argv(&d, &p, false, false, &v, &e), 0);
    assert_string_equal(v.v[0], "qemu-system-aarch64");
    assert_true(argv_has(&v, "virt,gic-version=3"));
    assert_true(argv_has(&v, "cortex-a57"));
    assert_true(argv_has(&v, "console=ttyAMA0"));
    assert_false(argv_has(&v, "tsc=reliable"));
    lstrv_free(&v);
    vm_def_free(&d);

    struct vm_port fp;
    vm_port_parse("0.0.0.0:8080:80/udp", &fp, &e);
    char *s = vm_qemu_hostfwd_add(&fp);
    assert_string_equal(s, "hostfwd_add net0 udp:0.0.0.0:8080-:80");
    free(s);
    s = vm_qemu_hostfwd_remove(&fp);
    assert_string_equal(s, "hostfwd_remove net0 udp:0.0.0.0:8080");
    free(s);
}

static void test_qmp(void **state)
{
    char *s = vm_qmp_command("quit", NULL, 3);
    assert_string_equal(s, "{\"execute\":\"quit\",\"id\":3}\r\n");
    free(s);
    s = vm_qmp_hmp("info usernet", 4);
    assert_non_null(strstr(s, "\"command-line\":\"info usernet\""));
    assert_non_null(strstr(s, "human-monitor-command"));
    free(s);
    struct vm_qmp_msg m;
    json_t *j = json_loads("{\"QMP\": {\"version\": {}}}", 0, NULL);
    assert_int_equal(vm_qmp_parse(j, &m), 0);
    assert_int_equal(m.kind, VM_QMP_GREETING);
    json_decref(j);
    j = json_loads("{\"return\": \"\", \"id\": 7}", 0, NULL);
    assert_int_equal(vm_qmp_parse(j, &m), 0);
    assert_int_equal(m.kind, VM_QMP_RETURN);
    assert_int_equal(m.id, 7);
    json_decref(j);
    j = json_loads("{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}, \"id\": 8}", 0,
                   NULL);
    assert_int_equal(vm_qmp_parse(j, &m), 0);
    assert_int_equal(m.kind, VM_QMP_ERROR);
    assert_string_equal(m.error, "nope");
    json_decref(j);
    j = json_loads("{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true, \"reason\": "
                   "\"guest-shutdown\"}}",
                   0, NULL);
    assert_int_equal(vm_qmp_parse(j, &m), 0);
    assert_int_equal(m.kind, VM_QMP_EVENT);
    assert_string_equal(m.event, "SHUTDOWN");
    assert_string_equal(ljson_str(m.data, "reason"), "guest-shutdown");
    assert_int_equal(m.id, -1);
    json_decref(j);
    j = json_loads("{\"something\": 1}", 0, NULL);
    assert_int_equal(vm_qmp_parse(j, &m), -EINVAL);
    json_decref(j);
    j = json_loads("[1]", 0, NULL);
    assert_int_equal(vm_qmp_parse(j, &m), -EINVAL);
    json_decref(j);
}

/* ------------------------------------------------------------------ published ports */

static void test_deployment_ports(void **state)
{
    const char *manifest =
        "{\"modulesContent\": {\"$edgeAgent\": {\"properties.desired\": {"
        "\"systemModules\": {\"edgeHub\": {\"settings\": {\"createOptions\": "
        "\"{\\\"HostConfig\\\":{\\\"PortBindings\\\":{\\\"443/"
        "tcp\\\":[{\\\"HostPort\\\":\\\"443\\\"}]}}}\"}}},"
        "\"modules\": {"
        " \"web\": {\"settings\": {\"createOptions\": "
        "  "
        "\"{\\\"HostConfig\\\":{\\\"PortBindings\\\":{\\\"80/"
        "tcp\\\":[{\\\"HostPort\\\":\\\"8080\\\"}],\","
        "  \"createOptions01\": "
        "\"\\\"5000/"
        "udp\\\":[{\\\"HostPort\\\":\\\"5000\\\"},{\\\"HostPort\\\":\\\"5001\\\"}]}}}\"}},"
        " \"obj\": {\"settings\": {\"createOptions\": {\"HostConfig\": {\"PortBindings\": {"
        "   \"9000\": [{\"HostPort\": \"9000\", \"HostIp\": \"0.0.0.0\"}],"
        "   \"9001/tcp\": [{\"HostPort\": \"9001\", \"HostIp\": \"127.0.0.1\"}],"
        "   \"9002/tcp\": [{\"HostPort\": \"\"}],"
        "   \"9003/sctp\": [{\"HostPort\": \"9003\"}]}}}}},"
        " \"dup\": {\"settings\": {\"createOptions\": {\"HostConfig\": {\"PortBindings\": {"
        "   \"80/tcp\": [{\"HostPort\": \"8080\"}]}}}}},"
        " \"off\": {\"status\": \"stopped\", \"settings\": {\"createOptions\": {\"HostConfig\": {"
        "   \"PortBindings\": {\"1/tcp\": [{\"HostPort\": \"7777\"}]}}}}},"
        " \"broken\": {\"settings\": {\"createOptions\": \"{not json\"}},"
        " \"none\": {\"settings\": {\"image\": \"x\"}}"
        "}}}}}";
    json_error_t je;
    json_t *j = json_loads(manifest, 0, &je);
    if (!j)
        fail_msg("manifest: %s", je.text);
    struct vm_auto_port out[16];
    size_t n = vm_deployment_ports(j, out, 16);
    assert_int_equal(n, 5);
    bool seen443 = false, seen8080 = false, seen5000 = false, seen5001 = false, seen9000 = false;
    for (size_t i = 0; i < n; i++) {
        seen443 |= out[i].port.host_port == 443 && lstr_eq(out[i].module, "edgeHub");
        seen8080 |= out[i].port.host_port == 8080 && lstr_eq(out[i].module, "web") &&
                    out[i].port.guest_port == 8080;
        seen5000 |= out[i].port.host_port == 5000 && lstr_eq(out[i].port.proto, "udp");
        seen5001 |= out[i].port.host_port == 5001;
        seen9000 |= out[i].port.host_port == 9000 && lstr_eq(out[i].port.addr, "127.0.0.1");
    }
    assert_true(seen443 && seen8080 && seen5000 && seen5001 && seen9000);
    /* The bound is respected. */
    assert_int_equal(vm_deployment_ports(j, out, 2), 2);
    json_decref(j);
    /* The "content" wrapper (az CLI layout) and empty manifests. */
    j = json_loads("{\"content\": {\"modulesContent\": {\"$edgeAgent\": {\"properties.desired\": "
                   "{\"modules\": {\"m\": {\"settings\": {\"createOptions\": {\"HostConfig\": "
                   "{\"PortBindings\": {\"1234/tcp\": [{\"HostPort\": \"1234\"}]}}}}}}}}}}}",
                   0, NULL);
    assert_int_equal(vm_deployment_ports(j, out, 16), 1);
    json_decref(j);
    j = json_loads("{}", 0, NULL);
    assert_int_equal(vm_deployment_ports(j, out, 16), 0);
    json_decref(j);
}

/* ------------------------------------------------------------------ images and VM dirs */

static void write_file(const char *path, const char *text)
{
    assert_int_equal(lfs_write_atomic(path, text, strlen(text), 0644), 0);
}

static char *slurp(const char *path)
{
    char *t = NULL;
    size_t n;
    return lfs_read_file(path, 1 << 20, &t, &n) == 0 ? t : NULL;
}

/* A/B slots of VM "made" (update.h): next/ from the image, the switch and the restore, each
 * repeatable from the states a crash leaves; the journal's text form. */
static void check_slots(const char *root, const char *cache, const char *key)
{
    struct lerr e = {0};
    char dir[300], p[600], q[600];
    snprintf(dir, sizeof(dir), "%s/made", root);
    /* mark the current files so the test can tell the slots apart */
    snprintf(p, sizeof(p), "%s/kernel", dir);
    write_file(p, "old-kernel");
    assert_int_equal(vmu_slots_prepare(dir, cache, key, 1 << 20, &e), -EINVAL); /* too small */
    snprintf(p, sizeof(p), "%s/next", dir);
    assert_int_equal(access(p, F_OK), -1); /* nothing left behind */
    assert_int_equal(vmu_slots_prepare(dir, cache, key, 4ull << 30, &e), 0);
    snprintf(p, sizeof(p), "%s/next/disk.img", dir);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 4ll << 30);
    snprintf(p, sizeof(p), "%s/next/kernel", dir);
    _cleanup_free_ char *k = slurp(p);
    assert_string_equal(k, "kernel");
    /* a crash after the first move of the switch: the switch finishes it */
    snprintf(p, sizeof(p), "%s/prev", dir);
    assert_int_equal(mkdir(p, 0750), 0);
    snprintf(p, sizeof(p), "%s/disk.img", dir);
    snprintf(q, sizeof(q), "%s/prev/disk.img", dir);
    assert_int_equal(rename(p, q), 0);
    assert_int_equal(vmu_slots_switch(dir, &e), 0);
    assert_int_equal(vmu_slots_switch(dir, &e), 0); /* again: nothing to do */
    snprintf(p, sizeof(p), "%s/kernel", dir);
    free(k);
    k = slurp(p);
    assert_string_equal(k, "kernel");
    snprintf(p, sizeof(p), "%s/prev/kernel", dir);
    free(k);
    k = slurp(p);
    assert_string_equal(k, "old-kernel");
    snprintf(p, sizeof(p), "%s/next", dir);
    assert_int_equal(access(p, F_OK), -1);
    /* restore, cut short after one file, then again */
    snprintf(p, sizeof(p), "%s/prev/kernel", dir);
    snprintf(q, sizeof(q), "%s/kernel", dir);
    assert_int_equal(rename(p, q), 0);
    assert_int_equal(vmu_slots_restore(dir, &e), 0);
    assert_int_equal(vmu_slots_restore(dir, &e), 0);
    free(k);
    k = slurp(q);
    assert_string_equal(k, "old-kernel");
    snprintf(p, sizeof(p), "%s/prev", dir);
    assert_int_equal(access(p, F_OK), -1);
    snprintf(p, sizeof(p), "%s/disk.img", dir);
    assert_int_equal(access(p, F_OK), 0);
    /* a switch with nothing prepared is refused */
    assert_true(vmu_slots_switch(dir, &e) < 0);
    assert_non_null(strstr(e.msg, "incomplete"));
    snprintf(p, sizeof(p), "%s/prev", dir);
    rmdir(p);

    /* the journal */
    struct vmu_journal j = {.step = VMU_CHECKING,
                            .from_image = strdup(key),
                            .to_image = strdup("amd64-fedcba9876543210"),
                            .to_ledge = strdup("0.1.0-2"),
                            .started = strdup("2026-12-07T12:00:00Z"),
                            .baseline = json_pack("{s:{s:{s:s,s:b}}, s:b, s:[s]}", "modules", "web",
                                                  "containerId", "abc", "running", 1, "hub", 1,
                                                  "checkErrors", "x.y")};
    assert_int_equal(vmu_journal_save(dir, &j, &e), 0);
    struct vmu_journal r;
    assert_int_equal(vmu_journal_load(dir, &r, &e), 0);
    assert_int_equal(r.step, VMU_CHECKING);
    assert_string_equal(r.from_image, key);
    assert_string_equal(r.to_ledge, "0.1.0-2");
    assert_null(r.reason);
    assert_true(json_equal(r.baseline, j.baseline));
    assert_false(vmu_step_final(r.step));
    vmu_journal_clear(&r);
    vmu_journal_clear(&j);
    enum vmu_step sp;
    assert_int_equal(vmu_step_parse("rolled-back", &sp), 0);
    assert_int_equal(sp, VMU_ROLLED_BACK);
    assert_true(vmu_step_final(sp));
    assert_string_equal(vmu_step_name(VMU_ABANDONED), "abandoned");
    assert_int_equal(vmu_step_parse("later", &sp), -EINVAL);
    const char *bad[][2] = {
        {"[]", "not an object"},
        {"{\"version\": 2, \"step\": \"done\"}", "version 1"},
        {"{\"version\": 1, \"step\": \"sideways\"}", "unknown step"},
        {"{\"version\": 1, \"step\": \"done\", \"fromImage\": \"amd64-../../x\", \"toImage\": "
         "\"amd64-0123456789\"}",
         "malformed"},
        {"{\"version\": 1, \"step\": \"done\"}", "fromImage and toImage"},
        {"{\"version\": 1, \"step\": \"done\", \"fromImage\": \"amd64-0123456789\", \"toImage\": "
         "\"amd64-0123456789\", \"reason\": 3}",
         "reason must be a string"},
        {"{\"version\": 1, \"step\": \"done\", \"fromImage\": \"amd64-0123456789\", \"toImage\": "
         "\"amd64-0123456789\", \"baseline\": {\"modules\": {\"w\": {}}}}",
         "needs a containerId"},
        {"{\"version\": 1, \"step\": \"done\", \"fromImage\": \"amd64-0123456789\", \"toImage\": "
         "\"amd64-0123456789\", \"baseline\": {\"checkErrors\": [1]}}",
         "holds strings"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        assert_true(vmu_journal_parse(bad[i][0], strlen(bad[i][0]), &r, &e) < 0);
        if (!strstr(e.msg, bad[i][1]))
            fail_msg("%s: %s", bad[i][0], e.msg);
    }
    /* a host stop mid-check: recovery without a boot puts the previous files back */
    assert_int_equal(vmu_slots_prepare(dir, cache, key, 4ull << 30, &e), 0);
    snprintf(p, sizeof(p), "%s/kernel", dir);
    write_file(p, "old-kernel");
    assert_int_equal(vmu_slots_switch(dir, &e), 0);
    struct vmu_journal c = {.step = VMU_CHECKING,
                            .from_image = strdup("amd64-0011223344556677"),
                            .to_image = strdup(key)};
    assert_int_equal(vmu_journal_save(dir, &c, &e), 0);
    vmu_journal_clear(&c);
    struct vm_host h = {.root = root};
    const char *what = NULL;
    assert_int_equal(vm_update_recover_stopped(&h, "made", &what, &e), 0);
    assert_string_equal(what, "rolled-back");
    snprintf(p, sizeof(p), "%s/kernel", dir);
    free(k);
    k = slurp(p);
    assert_string_equal(k, "old-kernel");
    assert_int_equal(vmu_journal_load(dir, &c, &e), 0);
    assert_int_equal(c.step, VMU_ROLLED_BACK);
    assert_non_null(strstr(c.reason, "cut short"));
    vmu_journal_clear(&c);
    struct vm_def md;
    assert_int_equal(vm_host_load(&h, "made", &md, &e), 0);
    assert_string_equal(md.image, "amd64-0011223344556677");
    vm_def_free(&md);
    assert_int_equal(vm_update_recover_stopped(&h, "made", &what, &e), 0);
    assert_string_equal(what, "nothing");
    /* before the switch: abandoned, next/ removed */
    assert_int_equal(vmu_slots_prepare(dir, cache, key, 4ull << 30, &e), 0);
    c = (struct vmu_journal){.step = VMU_PREPARED,
                             .from_image = strdup("amd64-0011223344556677"),
                             .to_image = strdup(key)};
    assert_int_equal(vmu_journal_save(dir, &c, &e), 0);
    vmu_journal_clear(&c);
    assert_int_equal(vm_update_recover_stopped(&h, "made", &what, &e), 0);
    assert_string_equal(what, "abandoned");
    snprintf(p, sizeof(p), "%s/next", dir);
    assert_int_equal(access(p, F_OK), -1);
    snprintf(p, sizeof(p), "%s/update.json", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/update.lock", dir);
    unlink(p);
}

static void test_images(void **state)
{
    struct lerr e = {0};
    assert_int_equal(vm_image_key_check("amd64-0123456789abcdef", &e), 0);
    assert_int_equal(vm_image_key_check("arm64-0123abcd", &e), 0);
    assert_int_equal(vm_image_key_check("amd64-0123", &e), -EINVAL);
    assert_int_equal(vm_image_key_check("x86_64-0123456789abcdef", &e), -EINVAL);
    assert_int_equal(vm_image_key_check("amd64-../../etc", &e), -EINVAL);
    assert_int_equal(vm_image_key_check("amd64-0123456789ABCDEF", &e), -EINVAL);
    assert_int_equal(vm_image_key_check(NULL, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "ARCH-HASH"));

    char tmp[] = "/tmp/test-vm-img-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char cache[256], root[256], p[512];
    snprintf(cache, sizeof(cache), "%s/cache", tmp);
    snprintf(root, sizeof(root), "%s/vms", tmp);
    const char *key = "amd64-00112233445566778899";
    snprintf(p, sizeof(p), "%s/%s", cache, key);
    assert_int_equal(lfs_mkdir_p(p, 0755), 0);
    json_t *m;
    assert_int_equal(vm_image_manifest(cache, key, &m, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "not in the cache"));
    snprintf(p, sizeof(p), "%s/%s/manifest.json", cache, key);
    write_file(p, "{\"arch\": \"amd64\", \"built\": \"2026-01-01T00:00:00Z\"}");
    assert_int_equal(vm_image_manifest(cache, key, &m, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "rootfs.img is missing"));
    /* A sparse 3 MiB root with data at both ends. */
    snprintf(p, sizeof(p), "%s/%s/rootfs.img", cache, key);
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "head", 4, 0), 4);
    assert_int_equal(pwrite(fd, "tail", 4, (3 << 20) - 4), 4);
    close(fd);
    snprintf(p, sizeof(p), "%s/%s/kernel", cache, key);
    write_file(p, "kernel");
    snprintf(p, sizeof(p), "%s/%s/initrd.img", cache, key);
    write_file(p, "initrd");
    assert_int_equal(vm_image_manifest(cache, key, &m, &e), 0);
    json_decref(m);
    json_t *list = vm_image_list(cache);
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(ljson_str(json_array_get(list, 0), "key"), key);
    json_decref(list);

    struct vm_def d;
    vm_def_init(&d, "made", &e);
    d.arch = VM_ARCH_AMD64;
    d.disk = 4ull << 30;
    assert_int_equal(vm_create(root, cache, &d, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "no image"));
    d.image = strdup(key);
    assert_int_equal(vm_create(root, cache, &d, &e), 0);
    assert_int_equal(vm_create(root, cache, &d, &e), -EEXIST);
    snprintf(p, sizeof(p), "%s/made/disk.img", root);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 4ll << 30);
    assert_true(st.st_blocks * 512 < (16 << 20)); /* still sparse */
    char buf[4];
    fd = open(p, O_RDONLY);
    assert_int_equal(pread(fd, buf, 4, (3 << 20) - 4), 4);
    assert_memory_equal(buf, "tail", 4);
    close(fd);
    /* Grow, never shrink. */
    assert_int_equal(vm_resize_disk(root, "made", 5ull << 30, &e), 0);
    assert_int_equal(vm_resize_disk(root, "made", 3ull << 30, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "can only grow"));
    assert_int_equal(vm_resize_disk(root, "gone", 5ull << 30, &e), -ENOENT);
    /* The data disk: blank, sparse, grown with the root. */
    snprintf(p, sizeof(p), "%s/made/data.img", root);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 5ll << 30);
    assert_true(st.st_blocks == 0);
    check_slots(root, cache, key);
    /* Wrong architecture or a root larger than the disk: nothing is left behind. */
    struct vm_def d2;
    vm_def_init(&d2, "wrong", &e);
    d2.arch = VM_ARCH_ARM64;
    d2.image = strdup(key);
    assert_int_equal(vm_create(root, cache, &d2, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "is for amd64"));
    snprintf(p, sizeof(p), "%s/wrong", root);
    assert_int_equal(access(p, F_OK), -1);
    vm_def_free(&d2);
    assert_int_equal(vm_delete_dir(root, "made", &e), 0);
    snprintf(p, sizeof(p), "%s/made", root);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(vm_delete_dir(root, "made", &e), 0);
    assert_int_equal(vm_delete_dir(root, "../x", &e), -EINVAL);
    vm_def_free(&d);
    assert_int_equal(vm_copy_sparse("/nonexistent", "/tmp/x", &e), -ENOENT);
    assert_int_equal(vm_rm_rf(tmp), 0);
}

/* ------------------------------------------------------------------ managing VMs (host.h) */

/* A complete image in cache: a sparse 3 MiB root, kernel, initramfs, manifest. */
/* An image of engine ("oci", or NULL: a manifest without one, as before engine variants). */
static void make_image_engine(const char *cache, const char *key, const char *arch,
                              const char *engine)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", cache, key);
    assert_int_equal(lfs_mkdir_p(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/%s/manifest.json", cache, key);
    char m[256], e[64] = "";
    if (engine)
        snprintf(e, sizeof(e), ", \"engine\": \"%s\"", engine);
    snprintf(m, sizeof(m), "{\"arch\": \"%s\", \"built\": \"2026-01-01T00:00:00Z\"%s}", arch, e);
    write_file(p, m);
    snprintf(p, sizeof(p), "%s/%s/rootfs.img", cache, key);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 3 << 20), 0);
    close(fd);
    snprintf(p, sizeof(p), "%s/%s/kernel", cache, key);
    write_file(p, "kernel");
    snprintf(p, sizeof(p), "%s/%s/initrd.img", cache, key);
    write_file(p, "initrd");
}

static void make_image(const char *cache, const char *key, const char *arch)
{
    make_image_engine(cache, key, arch, NULL);
}

static struct vm_def new_def(const char *name)
{
    struct vm_def d;
    struct lerr e = {0};
    assert_int_equal(vm_def_init(&d, name, &e), 0);
    d.disk = 4ull << 30;
    return d;
}

/* Everything that works on a stopped VM: create, load, list, set, ports and shares in the
 * definition, logs, delete; and what needs a supervisor says the VM is not running. */
static void test_host_stopped(void **state)
{
    char tmp[] = "/tmp/test-vm-host-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char cache[256], root[256], p[512];
    snprintf(cache, sizeof(cache), "%s/cache", tmp);
    snprintf(root, sizeof(root), "%s/vms", tmp);
    struct vm_host h = {.root = root, .cache = cache};
    struct lerr e = {0};

    /* No image of that architecture yet. */
    struct vm_def d = new_def("b");
    d.arch = VM_ARCH_AMD64; /* not the host's: the cross tests run this on arm64 and armhf */
    assert_int_equal(vm_host_create(&h, &d, NULL, NULL, false, false, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "amd64 guest image with the docker engine in"));
    make_image(cache, "amd64-00112233445566778899", "amd64");
    make_image(cache, "arm64-00112233445566778899", "arm64");
    /* The newest image of the VM's architecture, and a key's prefix choosing it. */
    d.arch = VM_ARCH_AMD64;
    assert_int_equal(vm_host_create(&h, &d, NULL, NULL, false, false, &e), 0);
    assert_string_equal(d.image, "amd64-00112233445566778899");
    assert_int_equal(vm_host_create(&h, &d, NULL, NULL, false, false, &e), -EEXIST);
    assert_non_null(strstr(e.msg, "a VM named b exists"));
    vm_def_free(&d);
    d = new_def("a");
    assert_int_equal(vm_host_create(&h, &d, "arm64-00112233445566778899", NULL, false, false, &e),
                     0);
    assert_int_equal(d.arch, VM_ARCH_ARM64);
    vm_def_free(&d);
    d = new_def("c");
    assert_int_equal(vm_host_create(&h, &d, "../etc", NULL, false, false, &e), -EINVAL);
    d.memory = 1; /* invalid before any image is looked at */
    assert_int_equal(vm_host_create(&h, &d, "amd64-00112233445566778899", NULL, false, false, &e),
                     -ERANGE);
    snprintf(p, sizeof(p), "%s/c", root);
    assert_int_equal(access(p, F_OK), -1);
    vm_def_free(&d);

    /* Engine variants: no oci image yet; an image's manifest sets the engine unless one was
     * asked for, and an image of the other engine is refused. */
    d = new_def("o");
    d.arch = VM_ARCH_AMD64;
    d.engine = VM_ENGINE_OCI;
    assert_int_equal(vm_host_create(&h, &d, NULL, NULL, false, true, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "no amd64 guest image with the oci engine"));
    make_image_engine(cache, "amd64-aabbccddeeff00112233", "amd64", "oci");
    assert_int_equal(vm_host_create(&h, &d, "amd64-00112233445566778899", NULL, false, true, &e),
                     -EINVAL);
    assert_non_null(strstr(e.msg, "runs the docker engine, the VM is to run oci"));
    snprintf(p, sizeof(p), "%s/o", root);
    assert_int_equal(access(p, F_OK), -1);
    d.engine = VM_ENGINE_DOCKER;
    assert_int_equal(vm_host_create(&h, &d, "amd64-aabbccddeeff00112233", NULL, false, false, &e),
                     0);
    assert_int_equal(d.engine, VM_ENGINE_OCI);
    struct vm_def o;
    assert_int_equal(vm_host_load(&h, "o", &o, &e), 0);
    assert_int_equal(o.engine, VM_ENGINE_OCI);
    vm_def_free(&o);
    vm_def_free(&d);
    assert_int_equal(vm_delete_dir(root, "o", &e), 0);
    /* The newest image of the VM's engine; docker's is still the default's. */
    d = new_def("o2");
    d.arch = VM_ARCH_AMD64;
    d.engine = VM_ENGINE_OCI;
    assert_int_equal(vm_host_create(&h, &d, NULL, NULL, false, true, &e), 0);
    assert_string_equal(d.image, "amd64-aabbccddeeff00112233");
    vm_def_free(&d);
    assert_int_equal(vm_delete_dir(root, "o2", &e), 0);
    snprintf(p, sizeof(p), "%s/amd64-aabbccddeeff00112233", cache);
    assert_int_equal(vm_rm_rf(p), 0);

    assert_int_equal(vm_host_load(&h, "nope", &d, &e), -ENOENT);
    assert_non_null(strstr(e.msg, "no VM named nope"));
    assert_int_equal(vm_host_load(&h, "Bad/Name", &d, &e), -EINVAL);

    struct vm_info *v = NULL;
    size_t n = 0;
    assert_int_equal(vm_host_list(&h, &v, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].def.name, "a");
    assert_string_equal(v[1].def.name, "b");
    assert_string_equal(vm_info_state(&v[0]), "stopped");
    json_t *j = vm_info_json(&v[1]);
    assert_string_equal(ljson_str(j, "state"), "stopped");
    assert_null(json_object_get(j, "status"));
    json_decref(j);
    vm_infos_free(v, n);

    /* What needs the supervisor. */
    assert_false(vm_host_running(&h, "b"));
    assert_int_equal(vm_host_status(&h, "b", &j, &e), -ENOTCONN);
    assert_int_equal(vm_host_stop(&h, "b", 5, NULL, &e), -ENOTCONN);
    assert_int_equal(vm_host_reboot(&h, "b", &e), -ENOTCONN);
    assert_int_equal(vm_host_ports(&h, "b", &j, &e), -ENOTCONN);

    /* Set: the disk grows with the definition, never shrinks. */
    assert_int_equal(vm_host_load(&h, "b", &d, &e), 0);
    d.disk = 5ull << 30;
    d.cpus = 2;
    assert_int_equal(vm_host_set(&h, &d, &e), 0);
    snprintf(p, sizeof(p), "%s/b/disk.img", root);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 5ll << 30);
    d.disk = 4ull << 30;
    assert_int_equal(vm_host_set(&h, &d, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "can only grow"));
    d.disk = 5ull << 30;
    d.cpus = 0;
    assert_true(vm_host_set(&h, &d, &e) < 0);
    vm_def_free(&d);
    assert_int_equal(vm_host_load(&h, "b", &d, &e), 0);
    assert_int_equal(d.cpus, 2);
    vm_def_free(&d);

    /* Ports and shares of a stopped VM go into its definition. */
    struct vm_port port;
    bool live = true;
    assert_int_equal(vm_host_port_add(&h, "b", "8080:80", &port, &live, &e), 0);
    assert_false(live);
    assert_int_equal(port.host_port, 8080);
    assert_int_equal(vm_host_port_add(&h, "b", "8080:81", NULL, NULL, &e), -EEXIST);
    assert_int_equal(vm_host_port_add(&h, "b", "nonsense", NULL, NULL, &e), -EINVAL);
    char shared[300], real[PATH_MAX];
    snprintf(shared, sizeof(shared), "%s/shared", tmp);
    assert_int_equal(lfs_mkdir_p(shared, 0755), 0);
    bool running = true;
    snprintf(p, sizeof(p), "%s/../%s/shared", tmp, strrchr(tmp, '/') + 1);
    assert_int_equal(
        vm_host_share_add(&h, "b", p, "/mnt/s", true, real, sizeof(real), &running, &e), 0);
    assert_string_equal(real, shared);
    assert_false(running);
    assert_int_equal(vm_host_share_add(&h, "b", "/no/such/dir", "/mnt/t", false, NULL, 0, NULL, &e),
                     -ENOENT);
    assert_int_equal(vm_host_load(&h, "b", &d, &e), 0);
    assert_int_equal(d.n_ports, 1);
    assert_int_equal(d.n_shares, 1);
    assert_true(d.shares[0].read_only);
    vm_def_free(&d);
    assert_int_equal(vm_host_port_remove(&h, "b", "8080:80", NULL, &live, &e), 0);
    /* One directory: the guest's, else the host's. */
    assert_int_equal(vm_host_share_remove(&h, "b", shared, NULL, NULL, &e), 0);
    assert_int_equal(vm_host_share_remove(&h, "b", "/mnt/s", NULL, NULL, &e), -ENOENT);
    assert_int_equal(vm_host_load(&h, "b", &d, &e), 0);
    assert_int_equal(d.n_ports, 0);
    assert_int_equal(d.n_shares, 0);
    vm_def_free(&d);

    /* The last lines of a log. */
    char *text = NULL;
    size_t len;
    assert_int_equal(vm_host_log_tail(&h, "b", VM_FILE_CONSOLE, 2, &text, &len, &e), -ENOENT);
    snprintf(p, sizeof(p), "%s/b/%s", root, VM_FILE_CONSOLE);
    write_file(p, "one\ntwo\nthree\nfour\n");
    assert_int_equal(vm_host_log_tail(&h, "b", VM_FILE_CONSOLE, 2, &text, &len, &e), 0);
    assert_string_equal(text, "three\nfour\n");
    assert_int_equal(len, 11);
    free(text);
    assert_int_equal(vm_host_log_tail(&h, "b", VM_FILE_CONSOLE, 10, &text, &len, &e), 0);
    assert_string_equal(text, "one\ntwo\nthree\nfour\n");
    free(text);

    assert_int_equal(vm_host_delete(&h, "b", false, &e), 0);
    assert_int_equal(vm_host_load(&h, "b", &d, &e), -ENOENT);
    assert_int_equal(vm_host_delete(&h, "b", false, &e), -ENOENT);

    /* An image out of the cache and back. */
    char archive[300], key[128];
    snprintf(archive, sizeof(archive), "%s/img.tar", tmp);
    assert_int_equal(vm_image_export(cache, "amd64-00112233445566778899", archive, &e), 0);
    assert_int_equal(vm_image_remove(cache, "amd64-00112233445566778899", &e), 0);
    assert_int_equal(vm_image_remove(cache, "amd64-00112233445566778899", &e), -ENOENT);
    assert_int_equal(vm_image_import(cache, archive, key, sizeof(key), &e), 0);
    assert_string_equal(key, "amd64-00112233445566778899");
    assert_int_equal(vm_image_manifest(cache, key, &j, &e), 0);
    json_decref(j);
    /* An archive of anything else is refused before it is unpacked. */
    char *targv[] = {"tar", "-C", tmp, "-cf", archive, "shared", NULL};
    assert_int_equal(vm_run_tool(targv, "tar", &e), 0);
    assert_int_equal(vm_image_import(cache, archive, key, sizeof(key), &e), -EINVAL);
    assert_non_null(strstr(e.msg, "not an image exported"));
    char *fail_argv[] = {"false", NULL};
    assert_int_equal(vm_run_tool(fail_argv, "false", &e), -EIO);
    assert_non_null(strstr(e.msg, "false failed (exit 1)"));
    assert_int_equal(vm_rm_rf(tmp), 0);
}

/* A fake supervisor: the control API on <root>/<name>/run/ctl.sock, in a child process that
 * exits after answering a stop. */
static void fake_status(struct hs_request *r, void *ud)
{
    hs_reply_json(r, 200,
                  json_pack("{s:s, s:s, s:i, s:[]}", "name", "f", "state",
                            hs_request_query(r, "wait") ?: "running", "supervisorPid",
                            (int)getpid(), "ports"));
}
static void fake_stop(struct hs_request *r, void *ud)
{
    hs_reply_json(r, 200, json_pack("{s:s}", "state", "stopped"));
    event_base_loopexit(ud, &(struct timeval){0, 100000});
}
static void fake_reboot(struct hs_request *r, void *ud)
{
    hs_reply_json(r, 409, json_pack("{s:s}", "message", "the guest is not up (state booting)"));
}
static void fake_ports_get(struct hs_request *r, void *ud)
{
    hs_reply_json(r, 200, json_pack("[{s:s}]", "spec", "127.0.0.1:1->1/tcp"));
}
static void fake_ports_add(struct hs_request *r, void *ud)
{
    json_t *b = NULL;
    if (hs_request_body_json(r, false, &b) < 0 || lstr_eq(ljson_str(b, "spec"), "9999:1"))
        hs_reply_json(r, 409, json_pack("{s:s}", "message", "conflicts with the hub forward"));
    else
        hs_reply_json(r, 201, json_object());
    json_decref(b);
}
static void fake_ports_remove(struct hs_request *r, void *ud)
{
    hs_reply_empty(r, lstr_eq(hs_request_query(r, "spec"), "7000:70") ? 204 : 404);
}

static pid_t fake_supervisor(const char *root, const char *name)
{
    char sock[400], dir[256];
    snprintf(dir, sizeof(dir), "%s/%s/run", root, name);
    assert_int_equal(lfs_mkdir_p(dir, 0700), 0);
    snprintf(sock, sizeof(sock), "%s/ctl.sock", dir);
    int ready[2];
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct event_base *base = event_base_new();
        const struct hs_route routes[] = {
            {"GET", "/status", fake_status},    {"POST", "/stop", fake_stop},
            {"POST", "/reboot", fake_reboot},   {"GET", "/ports", fake_ports_get},
            {"POST", "/ports", fake_ports_add}, {"DELETE", "/ports", fake_ports_remove},
        };
        struct hs_server *s = NULL;
        struct hs_limits l = HS_LIMITS_DEFAULT;
        if (hs_server_new(base, routes, ARRAY_SIZE(routes), base, &s) < 0 ||
            hs_server_listen_unix(s, sock, 0600, (gid_t)-1, &l, NULL) < 0)
            _exit(1);
        if (write(ready[1], "k", 1) != 1)
            _exit(1);
        event_base_dispatch(base);
        hs_server_free(s);
        event_base_free(base);
        _exit(0);
    }
    close(ready[1]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    return pid;
}

/* The supervisor's control API as host.h speaks it: status, live ports, refusals with the
 * supervisor's message, stop waiting until the supervisor is gone. */
static void test_host_supervisor(void **state)
{
    char tmp[] = "/tmp/test-vm-ctl-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    struct vm_host h = {.root = tmp, .cache = tmp};
    struct lerr e = {0};
    struct vm_def d = new_def("f");
    char p[512];
    snprintf(p, sizeof(p), "%s/f", tmp);
    assert_int_equal(lfs_mkdir_p(p, 0755), 0);
    assert_int_equal(vm_host_save(&h, &d, &e), 0);
    vm_def_free(&d);
    pid_t pid = fake_supervisor(tmp, "f");

    assert_true(vm_host_running(&h, "f"));
    struct vm_info info;
    assert_int_equal(vm_host_info(&h, "f", &info, &e), 0);
    assert_string_equal(vm_info_state(&info), "running");
    vm_info_clear(&info);
    json_t *j = NULL;
    assert_int_equal(vm_host_wait(&h, "f", "booting", 5, &j, &e), 0);
    assert_string_equal(ljson_str(j, "state"), "booting");
    json_decref(j);
    assert_int_equal(vm_host_ports(&h, "f", &j, &e), 0);
    assert_int_equal(json_array_size(j), 1);
    json_decref(j);

    bool live = false;
    assert_int_equal(vm_host_port_add(&h, "f", "7000:70", NULL, &live, &e), 0);
    assert_true(live);
    assert_int_equal(vm_host_port_add(&h, "f", "9999:1", NULL, &live, &e), -EEXIST);
    assert_string_equal(e.msg, "conflicts with the hub forward");
    assert_int_equal(vm_host_port_remove(&h, "f", "7000:70", NULL, &live, &e), 0);
    assert_int_equal(vm_host_port_remove(&h, "f", "7001:70", NULL, &live, &e), -ENOENT);
    /* Live changes are the supervisor's to save: the definition is untouched. */
    assert_int_equal(vm_host_load(&h, "f", &d, &e), 0);
    assert_int_equal(d.n_ports, 0);
    /* And a running VM's definition is not changed under it. */
    assert_int_equal(vm_host_set(&h, &d, &e), -EBUSY);
    assert_non_null(strstr(e.msg, "stop it first"));
    vm_def_free(&d);
    assert_int_equal(vm_host_delete(&h, "f", false, &e), -EBUSY);
    assert_int_equal(vm_host_reboot(&h, "f", &e), -EEXIST);
    assert_string_equal(e.msg, "the guest is not up (state booting)");

    assert_int_equal(vm_host_stop(&h, "f", 5, &j, &e), 0);
    assert_string_equal(ljson_str(j, "state"), "stopped");
    json_decref(j);
    /* stop returned once the supervisor had exited */
    int st;
    assert_int_equal(waitpid(pid, &st, WNOHANG), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_false(vm_host_running(&h, "f"));
    assert_int_equal(vm_host_stop(&h, "f", 5, NULL, &e), -ENOTCONN);
    assert_int_equal(vm_rm_rf(tmp), 0);
}

/* A fake exec socket: one session at a time, scripted by the first argv string. */
static void send_frame(int fd, uint8_t type, const char *payload)
{
    struct lbuf b = LBUF_INIT;
    assert_int_equal(vm_frame_encode(&b, type, 1, payload, payload ? strlen(payload) : 0), 0);
    assert_int_equal(lfs_write_all(fd, b.data, b.len), 0);
    lbuf_free(&b);
}

static void fake_exec_session(int c)
{
    struct lbuf in = LBUF_INIT, stdin_data = LBUF_INIT;
    _cleanup_json_ json_t *open_req = NULL;
    bool eof = false;
    while (!eof) {
        lbuf_reserve(&in, 65536);
        ssize_t n = read(c, in.data + in.len, in.cap - in.len - 1);
        if (n <= 0)
            break;
        in.len += (size_t)n;
        size_t off = 0, used;
        struct vm_frame f;
        while (vm_frame_decode((const uint8_t *)in.data + off, in.len - off, &f, &used, NULL) ==
               1) {
            off += used;
            if (f.type == VM_FRAME_OPEN)
                ljson_parse((const char *)f.payload, f.len, &open_req, NULL);
            else if (f.type == VM_FRAME_DATA)
                lbuf_append(&stdin_data, f.payload, f.len);
            else if (f.type == VM_FRAME_EOF)
                eof = true;
        }
        lbuf_consume(&in, off);
    }
    const char *cmd = json_string_value(json_array_get(json_object_get(open_req, "argv"), 0));
    if (lstr_eq(cmd, "refuse")) {
        send_frame(c, VM_FRAME_CLOSE, "{\"error\": \"exec: refuse: not found\"}");
    } else if (lstr_eq(cmd, "killed")) {
        send_frame(c, VM_FRAME_EXIT, "{\"signal\": 9}");
        send_frame(c, VM_FRAME_CLOSE, NULL);
    } else {
        /* echo: stdin back on stdout, the argv count on stderr, exit 7 */
        char line[64];
        snprintf(line, sizeof(line), "argc=%zu tty=%d",
                 json_array_size(json_object_get(open_req, "argv")),
                 ljson_bool(open_req, "tty", false));
        send_frame(c, VM_FRAME_DATA, stdin_data.data ? stdin_data.data : "");
        send_frame(c, VM_FRAME_STDERR, line);
        send_frame(c, VM_FRAME_EXIT, "{\"code\": 7}");
        send_frame(c, VM_FRAME_CLOSE, NULL);
    }
    lbuf_free(&in);
    lbuf_free(&stdin_data);
}

static void test_exec_sessions(void **state)
{
    char tmp[] = "/tmp/test-vm-exec-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    struct vm_host h = {.root = tmp, .cache = tmp};
    struct lerr e = {0};
    char *argv[] = {"echo", "a", "b"};
    struct vm_exec_request req = {.argv = argv, .argc = 3};
    int out[2], errp[2], in[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    assert_int_equal(pipe2(errp, O_CLOEXEC), 0);
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    struct vm_exec_io io = {.in_fd = in[0], .out_fd = out[1], .err_fd = errp[1]};
    int code = -1;
    assert_int_equal(vm_exec(&h, "x", &req, &io, &code, &e), -ENOTCONN);
    assert_non_null(strstr(e.msg, "VM x is not running"));

    char dir[300], sock[400];
    snprintf(dir, sizeof(dir), "%s/x/run", tmp);
    assert_int_equal(lfs_mkdir_p(dir, 0700), 0);
    snprintf(sock, sizeof(sock), "%s/exec.sock", dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    lstr_copy(sa.sun_path, sizeof(sa.sun_path), sock);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 4), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(in[1]); /* the parent's stdin must see EOF */
        for (int i = 0; i < 3; i++) {
            int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0)
                _exit(1);
            fake_exec_session(c);
            close(c);
        }
        _exit(0);
    }
    close(l);
    /* stdin goes to the guest, its stdout and stderr to ours, the exit code back */
    assert_int_equal(write(in[1], "stdin-data", 10), 10);
    close(in[1]);
    assert_int_equal(vm_exec(&h, "x", &req, &io, &code, &e), 0);
    assert_int_equal(code, 7);
    char buf[128];
    ssize_t n = read(out[0], buf, sizeof(buf) - 1);
    assert_int_equal(n, 10);
    assert_memory_equal(buf, "stdin-data", 10);
    n = read(errp[0], buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = 0;
    assert_string_equal(buf, "argc=3 tty=0");
    /* Killed by a signal: 128 + N. */
    char *killed[] = {"killed"};
    struct vm_exec_request kreq = {.argv = killed, .argc = 1};
    io.in_fd = -1;
    assert_int_equal(vm_exec(&h, "x", &kreq, &io, &code, &e), 0);
    assert_int_equal(code, 128 + 9);
    /* Refused by the guest: its reason. */
    char *refuse[] = {"refuse"};
    struct vm_exec_request rreq = {.argv = refuse, .argc = 1};
    code = -1;
    assert_int_equal(vm_exec(&h, "x", &rreq, &io, &code, &e), -EIO);
    assert_string_equal(e.msg, "exec: refuse: not found");
    assert_int_equal(code, -1);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (int i = 0; i < 2; i++) {
        close(out[i]);
        close(errp[i]);
    }
    close(in[0]);
    assert_int_equal(vm_rm_rf(tmp), 0);
}

static void test_paths(void **state)
{
    char buf[256];
    struct lerr e = {0};
    assert_int_equal(vm_path(buf, sizeof(buf), "/var/lib/ledge/vm", "a", "vm.json"), 0);
    assert_string_equal(buf, "/var/lib/ledge/vm/a/vm.json");
    assert_int_equal(vm_path(buf, 8, "/var/lib/ledge/vm", "a", NULL), -ENAMETOOLONG);
    assert_int_equal(vm_sock_path(buf, sizeof(buf), "/v", "a", "api.sock", &e), 0);
    assert_string_equal(buf, "/v/a/run/api.sock");
    char longdir[200];
    memset(longdir, 'd', sizeof(longdir) - 1);
    longdir[0] = '/';
    longdir[sizeof(longdir) - 1] = 0;
    assert_int_equal(vm_sock_path(buf, sizeof(buf), longdir, "a", "api.sock", &e), -ENAMETOOLONG);
    assert_non_null(strstr(e.msg, "unix socket path"));
    setenv("LEDGE_VM_DIR", "/srv/vms", 1);
    assert_string_equal(vm_dir_default(), "/srv/vms");
    unsetenv("LEDGE_VM_DIR");
    assert_string_equal(vm_dir_default(), VM_DIR_DEFAULT);
    assert_string_equal(vm_cache_dir_default(), VM_CACHE_DEFAULT);
    assert_int_equal(vm_find_program("no-such-ledge-program", buf, sizeof(buf)), -ENOENT);
    setenv("LEDGE_VM_LIBDIR", "/bin", 1);
    assert_int_equal(vm_find_program("sh", buf, sizeof(buf)), 0);
    unsetenv("LEDGE_VM_LIBDIR");
}

/* ------------------------------------------------------------------ the multiplexer */

struct pair {
    struct event_base *base;
    struct vm_mux *host, *guest;
    int host_hellos, guest_hellos;
    int events;
    int pongs;
    int opened;
    int closed_ids;
    bool link_down;
    struct lbuf got; /* bytes the host-side test socket received */
    int client_fd;   /* the test's end of a host stream */
    bool refuse;
};

static int g_open(void *ud, struct vm_mux_conn *c, const json_t *req, struct lerr *err)
{
    struct pair *t = ud;
    t->opened++;
    if (t->refuse)
        return lerr_set(err, -EPERM, "refused by test");
    const char *kind = ljson_str(req, "kind");
    if (lstr_eq(kind, "echo")) {
        /* The guest side is a socketpair whose far end echoes via a child. */
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
        pid_t pid = fork();
        if (pid == 0) {
            close(sv[0]);
            char buf[65536];
            ssize_t n;
            while ((n = read(sv[1], buf, sizeof(buf))) > 0)
                if (write(sv[1], buf, (size_t)n) != n)
                    _exit(1);
            shutdown(sv[1], SHUT_WR);
            _exit(0);
        }
        close(sv[1]);
        return vm_mux_conn_attach_stream(c, sv[0]);
    }
    if (lstr_eq(kind, "exec")) {
        int in[2], out[2], errp[2];
        if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)
            return lerr_set(err, -errno, "pipe");
        pid_t pid = fork();
        if (pid == 0) {
            dup2(in[0], 0);
            dup2(out[1], 1);
            dup2(errp[1], 2);
            execl("/bin/sh", "sh", "-c", ljson_str(req, "script"), (char *)NULL);
            _exit(127);
        }
        close(in[0]);
        close(out[1]);
        close(errp[1]);
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        return vm_mux_conn_attach_exec(c, pid, pidfd, in[1], out[0], errp[0]);
    }
    return lerr_set(err, -EINVAL, "unknown kind");
}

static void h_hello(void *ud, const json_t *h)
{
    ((struct pair *)ud)->host_hellos++;
}
static void g_hello(void *ud, const json_t *h)
{
    struct pair *t = ud;
    t->guest_hellos++;
    if (json_is_true(json_object_get(h, "reset")))
        vm_mux_send_hello(t->guest, json_pack("{s:b, s:s}", "reset", false, "role", "guest"));
}
static void g_event(void *ud, const json_t *ev)
{
    ((struct pair *)ud)->events++;
}
static void h_pong(void *ud, const void *p, size_t n)
{
    ((struct pair *)ud)->pongs++;
}
static void h_closed(void *ud, uint32_t id)
{
    ((struct pair *)ud)->closed_ids++;
}
static void h_down(void *ud, int err)
{
    ((struct pair *)ud)->link_down = true;
}

static void pair_init(struct pair *t)
{
    memset(t, 0, sizeof(*t));
    signal(SIGPIPE, SIG_IGN);
    t->base = event_base_new();
    static const struct vm_mux_ops hops = {
        .on_hello = h_hello, .on_pong = h_pong, .on_conn_closed = h_closed, .on_link_down = h_down};
    static const struct vm_mux_ops gops = {
        .on_hello = g_hello, .on_open = g_open, .on_event = g_event};
    assert_int_equal(vm_mux_new(t->base, VM_MUX_HOST, NULL, &hops, t, &t->host), 0);
    assert_int_equal(vm_mux_new(t->base, VM_MUX_GUEST, NULL, &gops, t, &t->guest), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(vm_mux_set_link(t->host, sv[0]), 0);
    assert_int_equal(vm_mux_set_link(t->guest, sv[1]), 0);
    t->client_fd = -1;
}

static void pair_free(struct pair *t)
{
    vm_mux_free(t->host);
    vm_mux_free(t->guest);
    event_base_free(t->base);
    lbuf_free(&t->got);
    if (t->client_fd >= 0)
        close(t->client_fd);
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

/* Run the loop until cond holds (bounded). */
#define RUN_UNTIL(t, cond)                                                                         \
    do {                                                                                           \
        for (int _i = 0; _i < 4000 && !(cond); _i++)                                               \
            event_base_loop((t)->base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(500);                \
        assert_true(cond);                                                                         \
    } while (0)

static void test_mux_hello_ping_event(void **state)
{
    struct pair t;
    pair_init(&t);
    assert_true(vm_mux_has_link(t.host));
    assert_int_equal(
        vm_mux_send_hello(t.host, json_pack("{s:b, s:s}", "reset", true, "role", "host")), 0);
    RUN_UNTIL(&t, t.host_hellos == 1);
    assert_int_equal(t.guest_hellos, 1);
    assert_int_equal(vm_mux_ping(t.host, "abc", 3), 0);
    RUN_UNTIL(&t, t.pongs == 1);
    assert_int_equal(vm_mux_send_event(t.host, json_pack("{s:s}", "event", "poweroff")), 0);
    RUN_UNTIL(&t, t.events == 1);
    const struct vm_mux_stats *st = vm_mux_stats(t.guest);
    assert_true(st->frames_in >= 3);
    assert_int_equal(st->skipped, 0);
    pair_free(&t);
}

static int host_stream(struct pair *t, const char *kind, uint32_t *id)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int r = vm_mux_open_stream(t->host, sv[1], json_pack("{s:s}", "kind", kind), id);
    t->client_fd = sv[0];
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    return r;
}

static void pump_client(struct pair *t)
{
    char buf[65536];
    ssize_t n;
    while ((n = read(t->client_fd, buf, sizeof(buf))) > 0)
        lbuf_append(&t->got, buf, (size_t)n);
}

static void test_mux_stream_echo(void **state)
{
    struct pair t;
    pair_init(&t);
    uint32_t id;
    assert_int_equal(host_stream(&t, "echo", &id), 0);
    assert_true(id > 0);
    assert_int_equal(vm_mux_conn_count(t.host), 1);
    /* 1 MiB through windows of 256 KiB: credit must flow back for this to finish. */
    size_t total = 1 << 20;
    char *data = malloc(total);
    for (size_t i = 0; i < total; i++)
        data[i] = (char)(i * 7 + 3);
    size_t sent = 0;
    for (int i = 0; i < 20000 && t.got.len < total; i++) {
        if (sent < total) {
            ssize_t n = write(t.client_fd, data + sent, MIN(total - sent, (size_t)65536));
            if (n > 0)
                sent += (size_t)n;
        }
        event_base_loop(t.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        pump_client(&t);
        if (t.got.len < total)
            usleep(100);
    }
    assert_int_equal(t.got.len, total);
    assert_memory_equal(t.got.data, data, total);
    free(data);
    /* Half-close from the client: the EOF travels, the echo ends, the connection closes. */
    shutdown(t.client_fd, SHUT_WR);
    RUN_UNTIL(&t,
              (pump_client(&t), vm_mux_conn_count(t.host) == 0 && vm_mux_conn_count(t.guest) == 0));
    assert_int_equal(t.closed_ids, 1);
    char c;
    assert_int_equal(read(t.client_fd, &c, 1), 0); /* our side got EOF */
    pair_free(&t);
}

static void test_mux_refused_and_reset(void **state)
{
    struct pair t;
    pair_init(&t);
    t.refuse = true;
    uint32_t id;
    assert_int_equal(host_stream(&t, "echo", &id), 0);
    RUN_UNTIL(&t, t.opened == 1 && vm_mux_conn_count(t.host) == 0);
    assert_int_equal(vm_mux_stats(t.guest)->conns_refused, 1);
    close(t.client_fd);
    t.client_fd = -1;
    t.refuse = false;
    /* A HELLO with reset drops every connection on both sides. */
    assert_int_equal(host_stream(&t, "echo", &id), 0);
    RUN_UNTIL(&t, vm_mux_conn_count(t.guest) == 1);
    vm_mux_send_hello(t.host, json_pack("{s:b, s:s}", "reset", true, "role", "host"));
    assert_int_equal(vm_mux_conn_count(t.host), 0);
    RUN_UNTIL(&t, vm_mux_conn_count(t.guest) == 0);
    /* Without a link nothing opens. */
    vm_mux_drop_link(t.host);
    assert_false(vm_mux_has_link(t.host));
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    assert_int_equal(vm_mux_open_stream(t.host, sv[1], json_object(), NULL), -ENOTCONN);
    close(sv[0]);
    assert_int_equal(vm_mux_send_hello(t.host, json_object()), -ENOTCONN);
    /* The guest sees the link go away. */
    RUN_UNTIL(&t, !vm_mux_has_link(t.guest));
    pair_free(&t);
}

/* A relay client speaks frames: OPEN an exec, send stdin, read stdout/stderr/EXIT. */
static void test_mux_relay_exec(void **state)
{
    struct pair t;
    pair_init(&t);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(vm_mux_add_relay(t.host, sv[1]), 0);
    int cl = sv[0];
    fcntl(cl, F_SETFL, O_NONBLOCK);
    struct lbuf b = LBUF_INIT;
    const char *req = "{\"kind\": \"exec\", \"script\": \"tr a-z A-Z; echo oops >&2; exit 3\"}";
    vm_frame_encode(&b, VM_FRAME_OPEN, 42, req, strlen(req));
    vm_frame_encode(&b, VM_FRAME_DATA, 42, "hello\n", 6);
    vm_frame_encode(&b, VM_FRAME_EOF, 42, NULL, 0);
    assert_int_equal(write(cl, b.data, b.len), (ssize_t)b.len);
    lbuf_free(&b);
    struct lbuf in = LBUF_INIT, out = LBUF_INIT, err = LBUF_INIT;
    int code = -1;
    bool closed = false;
    for (int i = 0; i < 8000 && !closed; i++) {
        event_base_loop(t.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        char buf[4096];
        ssize_t n;
        while ((n = read(cl, buf, sizeof(buf))) > 0)
            lbuf_append(&in, buf, (size_t)n);
        size_t off = 0;
        for (;;) {
            struct vm_frame f;
            size_t used;
            int found = vm_frame_decode((uint8_t *)in.data + off, in.len - off, &f, &used, NULL);
            off += used;
            if (!found)
                break;
            assert_int_equal(f.conn, 42); /* the client's own id */
            if (f.type == VM_FRAME_DATA)
                lbuf_append(&out, f.payload, f.len);
            else if (f.type == VM_FRAME_STDERR)
                lbuf_append(&err, f.payload, f.len);
            else if (f.type == VM_FRAME_EXIT) {
                json_t *j = NULL;
                ljson_parse((const char *)f.payload, f.len, &j, NULL);
                code = (int)ljson_int(j, "code", -1);
                json_decref(j);
            } else if (f.type == VM_FRAME_CLOSE)
                closed = true;
        }
        lbuf_consume(&in, off);
        usleep(500);
    }
    assert_true(closed);
    assert_int_equal(code, 3);
    assert_string_equal(out.data, "HELLO\n");
    assert_string_equal(err.data, "oops\n");
    RUN_UNTIL(&t, vm_mux_conn_count(t.host) == 0 && vm_mux_conn_count(t.guest) == 0);
    close(cl);
    lbuf_free(&in);
    lbuf_free(&out);
    lbuf_free(&err);
    pair_free(&t);
}

/* A relay client that ignores its window is cut off; one whose first frame is not OPEN too. */
static void test_mux_relay_violations(void **state)
{
    struct pair t;
    pair_init(&t);
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    assert_int_equal(vm_mux_add_relay(t.host, sv[1]), 0);
    struct lbuf b = LBUF_INIT;
    vm_frame_encode(&b, VM_FRAME_DATA, 1, "x", 1);
    assert_int_equal(write(sv[0], b.data, b.len), (ssize_t)b.len);
    RUN_UNTIL(&t, vm_mux_conn_count(t.host) == 0);
    assert_int_equal(vm_mux_stats(t.host)->protocol_errors, 1);
    close(sv[0]);
    lbuf_free(&b);

    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    assert_int_equal(vm_mux_add_relay(t.host, sv[1]), 0);
    const char *req = "{\"kind\": \"exec\", \"script\": \"sleep 5\"}";
    vm_frame_encode(&b, VM_FRAME_OPEN, 1, req, strlen(req));
    static char chunk[VM_FRAME_MAX_PAYLOAD];
    for (int i = 0; i < 10; i++) /* 640 KiB: the window (256 KiB) plus a pipe (64 KiB) is less */
        vm_frame_encode(&b, VM_FRAME_DATA, 1, chunk, sizeof(chunk));
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    size_t off = 0;
    for (int i = 0; i < 4000 && vm_mux_stats(t.host)->protocol_errors < 2; i++) {
        if (off < b.len) {
            ssize_t n = write(sv[0], b.data + off, b.len - off);
            if (n > 0)
                off += (size_t)n;
        }
        event_base_loop(t.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        usleep(200);
    }
    assert_int_equal(vm_mux_stats(t.host)->protocol_errors, 2);
    RUN_UNTIL(&t, vm_mux_conn_count(t.guest) == 0);
    close(sv[0]);
    lbuf_free(&b);
    pair_free(&t);
}

/* The guest refuses an OPEN that is not JSON, and unknown kinds, with a CLOSE naming why. */
static void test_mux_guest_bad_open(void **state)
{
    struct pair t;
    pair_init(&t);
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    vm_mux_add_relay(t.host, sv[1]);
    struct lbuf b = LBUF_INIT;
    vm_frame_encode(&b, VM_FRAME_OPEN, 5, "{\"kind\": \"warp\"}", 16);
    assert_int_equal(write(sv[0], b.data, b.len), (ssize_t)b.len);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    struct lbuf in = LBUF_INIT;
    bool closed = false;
    for (int i = 0; i < 4000 && !closed; i++) {
        event_base_loop(t.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        char buf[1024];
        ssize_t n;
        while ((n = read(sv[0], buf, sizeof(buf))) > 0)
            lbuf_append(&in, buf, (size_t)n);
        struct vm_frame f;
        size_t used;
        if (in.len && vm_frame_decode((uint8_t *)in.data, in.len, &f, &used, NULL) == 1) {
            assert_int_equal(f.type, VM_FRAME_CLOSE);
            assert_non_null(memmem(f.payload, f.len, "unknown kind", 12));
            closed = true;
        }
        usleep(200);
    }
    assert_true(closed);
    close(sv[0]);
    lbuf_free(&in);
    lbuf_free(&b);
    pair_free(&t);
}

/* `ledge vm create NAME` alone: a build tree's ledge builds the tree's package (a fake
 * scripts/build-deb here); a program outside any build tree whose ledge is not installed gets an
 * error that says what to give instead. */
static void test_self_deb(void **state)
{
    char tmp[] = "/tmp/test-vm-self-XXXXXX";
    assert_non_null(mkdtemp(tmp));
    char p[600], src[300], exe[400], got[PATH_MAX];
    snprintf(src, sizeof(src), "%s/src", tmp);
    snprintf(p, sizeof(p), "%s/scripts", src);
    assert_int_equal(lfs_mkdir_p(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/build/src/cli", tmp);
    assert_int_equal(lfs_mkdir_p(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/build/meson-info", tmp);
    assert_int_equal(lfs_mkdir_p(p, 0755), 0);
    snprintf(exe, sizeof(exe), "%s/build/src/cli/ledge", tmp);
    struct lerr e = {0};
    assert_int_equal(vm_build_tree_source(exe, got, sizeof(got)), -ENOENT);

    /* meson-info names the source; without scripts/build-deb it is not ledge's */
    _cleanup_free_ char *info = lstr_printf("{\"directories\": {\"source\": \"%s\", \"build\": "
                                            "\"%s/build\"}}",
                                            src, tmp);
    snprintf(p, sizeof(p), "%s/build/meson-info/meson-info.json", tmp);
    assert_int_equal(lfs_write_atomic(p, info, strlen(info), 0644), 0);
    assert_int_equal(vm_build_tree_source(exe, got, sizeof(got)), -ENOENT);
    _cleanup_free_ char *script =
        lstr_printf("#!/bin/sh\necho building $1 >&2\n[ \"$1\" = amd64 ] || exit 3\n"
                    "echo progress\ntouch %s/ledge_0.1.0-1_$1.deb\necho %s/ledge_0.1.0-1_$1.deb\n",
                    tmp, tmp);
    snprintf(p, sizeof(p), "%s/scripts/build-deb", src);
    assert_int_equal(lfs_write_atomic(p, script, strlen(script), 0755), 0);
    assert_int_equal(vm_build_tree_source(exe, got, sizeof(got)), 0);
    assert_string_equal(got, src);
    snprintf(p, sizeof(p), "%s/build/src/vm/ledge-vmm", tmp); /* any depth up to the build dir */
    assert_int_equal(vm_build_tree_source(p, got, sizeof(got)), 0);

    struct vm_self s;
    assert_int_equal(vm_self_find(exe, VM_ARCH_AMD64, &s, &e), 0);
    assert_int_equal(s.kind, VM_SELF_BUILD_TREE);
    assert_non_null(strstr(s.what, src));
    assert_int_equal(vm_self_deb(&s, tmp, NULL, got, sizeof(got), &e), 0);
    snprintf(p, sizeof(p), "%s/ledge_0.1.0-1_amd64.deb", tmp);
    assert_string_equal(got, p);
    /* the script fails: the error names it */
    assert_int_equal(vm_self_find(exe, VM_ARCH_ARM64, &s, &e), 0);
    assert_int_equal(vm_self_deb(&s, tmp, NULL, got, sizeof(got), &e), -EIO);
    assert_non_null(strstr(e.msg, "scripts/build-deb arm64 failed"));

    /* outside a build tree, and no ledge package installed (the test machine's ledge is a build) */
    char *v = NULL, *a = NULL;
    if (ldeb_installed("ledge", &v, &a, NULL) < 0) {
        snprintf(exe, sizeof(exe), "%s/elsewhere/ledge", tmp);
        assert_int_equal(vm_self_find(exe, VM_ARCH_AMD64, &s, &e), -ENOENT);
        assert_non_null(strstr(e.msg, "neither in a build tree nor installed from its package"));
        assert_non_null(strstr(e.msg, "--deb FILE"));
        assert_non_null(strstr(e.msg, "--image KEY"));
    }
    free(v);
    free(a);
    snprintf(p, sizeof(p), "rm -rf %s", tmp);
    assert_int_equal(system(p), 0);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_roundtrip),
        cmocka_unit_test(test_frame_errors),
        cmocka_unit_test(test_frame_partial),
        cmocka_unit_test(test_frame_resync),
        cmocka_unit_test(test_names_sizes),
        cmocka_unit_test(test_def_defaults_validate),
        cmocka_unit_test(test_ports),
        cmocka_unit_test(test_shares),
        cmocka_unit_test(test_def_json),
        cmocka_unit_test(test_qemu_argv),
        cmocka_unit_test(test_qmp),
        cmocka_unit_test(test_deployment_ports),
        cmocka_unit_test(test_images),
        cmocka_unit_test(test_self_deb),
        cmocka_unit_test(test_host_stopped),
        cmocka_unit_test(test_host_supervisor),
        cmocka_unit_test(test_exec_sessions),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_mux_hello_ping_event),
        cmocka_unit_test(test_mux_stream_echo),
        cmocka_unit_test(test_mux_refused_and_reset),
        cmocka_unit_test(test_mux_relay_exec),
        cmocka_unit_test(test_mux_relay_violations),
        cmocka_unit_test(test_mux_guest_bad_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
