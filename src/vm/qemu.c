/* qemu.c — QEMU command lines, monitor commands and QMP message classification (qemu.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/str.h"
#include "vm/qemu.h"

const char *vm_qemu_binary(enum vm_arch arch)
{
    return arch == VM_ARCH_ARM64 ? "qemu-system-aarch64" : "qemu-system-x86_64";
}

char *vm_qemu_cmdline(const struct vm_def *d, bool kvm)
{
    /* Boot-time choices (docs/vm.md "Boot"): the initramfs loads the few modules the root needs;
     * crypto self-tests are skipped (they cost ~1 s under emulation); under TCG, which does not
     * speculate, the speculation mitigations only cost time. */
    return lstr_printf("console=%s root=/dev/vda rw quiet loglevel=4 panic=-1 net.ifnames=0 "
                       "cryptomgr.notests no_timer_check%s%s systemd.hostname=%s "
                       "systemd.show_status=0 ledge.vm=%s",
                       d->arch == VM_ARCH_ARM64 ? "ttyAMA0" : "ttyS0",
                       kvm ? "" : " mitigations=off",
                       !kvm && d->arch == VM_ARCH_AMD64 ? " tsc=reliable" : "", d->name, d->name);
}

static int push(struct lstrv *v, const char *s)
{
    return lstrv_push(v, s);
}

int vm_qemu_tcg_cache_mb(void)
{
    const char *e = getenv("LEDGE_VM_TCG_CACHE_MB");
    long long v;
    if (e && lstr_to_i64(e, &v) == 0 && v >= 16 && v <= 4096)
        return (int)v;
    return VM_TCG_CACHE_MB_DEFAULT;
}

int vm_qemu_argv(const struct vm_def *d, const struct vm_qemu_paths *p, bool kvm, bool probe,
                 struct lstrv *ret, struct lerr *err)
{
    _cleanup_lstrv_ struct lstrv v = LSTRV_INIT;
    const char *rd = p->run_dir ? p->run_dir : p->dir;
    bool arm = d->arch == VM_ARCH_ARM64;
    int r = 0;
    /* -name carries the VM's directory so an adopting supervisor can recognise its QEMU. */
    r |= push(&v, vm_qemu_binary(d->arch));
    r |= lstrv_printf(&v, "-name");
    r |= lstrv_printf(&v, "ledge-vm-%s,process=ledge-vm-%s", d->name, d->name);
    r |= push(&v, "-machine");
    r |= push(&v, arm ? (kvm ? "virt,gic-version=host" : "virt,gic-version=3") : "pc");
    r |= push(&v, "-accel");
    if (kvm)
        r |= push(&v, "kvm");
    else
        /* QEMU's default translation cache is 1 GiB and fills up: a VM then costs ~750 MiB on
         * the host. 256 MiB keeps boot times within a few percent (docs/benchmarks.md). */
        r |= lstrv_printf(&v, "tcg,tb-size=%d", vm_qemu_tcg_cache_mb());
    r |= push(&v, "-cpu");
    /* Under emulation an ARMv8.0 core is much cheaper than "max" (no pointer authentication or
     * SVE to emulate) and runs any arm64 image. */
    r |= push(&v, kvm ? "host" : arm ? "cortex-a57" : "max");
    r |= push(&v, "-m");
    r |= lstrv_printf(&v, "%lluM", (unsigned long long)(d->memory >> 20));
    r |= push(&v, "-smp");
    r |= lstrv_printf(&v, "%d", d->cpus);
    r |= push(&v, "-nodefaults");
    r |= push(&v, "-no-user-config");
    r |= push(&v, "-display");
    r |= push(&v, "none");
    r |= push(&v, "-kernel");
    r |= lstrv_printf(&v, "%s/%s", p->dir, VM_FILE_KERNEL);
    r |= push(&v, "-initrd");
    r |= lstrv_printf(&v, "%s/%s", p->dir, VM_FILE_INITRD);
    r |= push(&v, "-append");
    if (probe) {
        r |= lstrv_printf(&v, "console=%s quiet panic=-1 cryptomgr.notests ledge.probe",
                          arm ? "ttyAMA0" : "ttyS0");
    } else {
        char *cl = vm_qemu_cmdline(d, kvm);
        r |= cl ? lstrv_push_take(&v, cl) : -ENOMEM;
    }
    r |= push(&v, "-serial");
    r |= push(&v, "chardev:console");
    r |= push(&v, "-chardev");
    if (probe)
        r |= push(&v, "stdio,id=console");
    else
        r |= lstrv_printf(&v, "file,id=console,path=%s/%s", p->dir, VM_FILE_CONSOLE);
    if (probe) {
        r |= push(&v, "-no-reboot");
    } else {
        r |= push(&v, "-drive");
        r |= lstrv_printf(&v,
                          "file=%s/%s,format=raw,if=none,id=disk0,cache=writeback,"
                          "discard=unmap,aio=threads",
                          p->dir, VM_FILE_DISK);
        r |= push(&v, "-device");
        r |= push(&v, "virtio-blk-pci,drive=disk0");
        if (d->data_disk) {
            /* the second virtio disk (vdb): the guest's state, kept when the root is replaced */
            r |= push(&v, "-drive");
            r |= lstrv_printf(&v,
                              "file=%s/%s,format=raw,if=none,id=data0,cache=writeback,"
                              "discard=unmap,aio=threads",
                              p->dir, VM_FILE_DATA);
            r |= push(&v, "-device");
            r |= push(&v, "virtio-blk-pci,drive=data0,serial=" VM_DATA_SERIAL);
        }
        r |= push(&v, "-netdev");
        r |= lstrv_printf(&v, "user,id=%s,net=10.0.2.0/24,host=%s,dns=10.0.2.3,hostname=%s",
                          VM_NETDEV_ID, VM_HOST_ADDR, d->name);
        r |= push(&v, "-device");
        r |= lstrv_printf(&v, "virtio-net-pci,netdev=%s", VM_NETDEV_ID);
        r |= push(&v, "-device");
        r |= push(&v, "virtio-rng-pci");
        r |= push(&v, "-device");
        r |= push(&v, "virtio-serial-pci,id=vser0");
        r |= push(&v, "-chardev");
        r |= lstrv_printf(&v, "socket,id=chan0,path=%s/%s,server=on,wait=off", rd, VM_SOCK_CHAN);
        r |= push(&v, "-device");
        r |= lstrv_printf(&v, "virtserialport,bus=vser0.0,chardev=chan0,name=%s", VM_CHANNEL_NAME);
        r |= push(&v, "-chardev");
        r |= lstrv_printf(&v, "socket,id=qmp0,path=%s/%s,server=on,wait=off", rd, VM_SOCK_QMP);
        r |= push(&v, "-mon");
        r |= push(&v, "chardev=qmp0,mode=control");
        for (size_t i = 0; i < d->n_shares; i++) {
            const struct vm_share *s = &d->shares[i];
            /* security_model=none: files keep the host's owners, the guest sees them as-is;
             * multidevs=remap keeps inode numbers unique across host file systems. */
            r |= push(&v, "-fsdev");
            r |= lstrv_printf(&v, "local,id=fs%zu,path=%s,security_model=none,multidevs=remap%s", i,
                              s->host_dir, s->read_only ? ",readonly=on" : "");
            r |= push(&v, "-device");
            r |= lstrv_printf(&v, "virtio-9p-pci,fsdev=fs%zu,mount_tag=%s", i, s->tag);
        }
        r |= push(&v, "-pidfile");
        r |= lstrv_printf(&v, "%s/qemu.pid", rd);
    }
    if (r < 0)
        return lerr_set(err, -ENOMEM, "out of memory");
    *ret = v;
    v = (struct lstrv)LSTRV_INIT;
    return 0;
}

static char *hostfwd(const char *verb, const struct vm_port *p, bool with_guest)
{
    if (with_guest)
        return lstr_printf("%s %s %s:%s:%u-:%u", verb, VM_NETDEV_ID, p->proto, p->addr,
                           p->host_port, p->guest_port);
    return lstr_printf("%s %s %s:%s:%u", verb, VM_NETDEV_ID, p->proto, p->addr, p->host_port);
}

char *vm_qemu_hostfwd_add(const struct vm_port *p)
{
    return hostfwd("hostfwd_add", p, true);
}
char *vm_qemu_hostfwd_remove(const struct vm_port *p)
{
    return hostfwd("hostfwd_remove", p, false);
}

char *vm_qmp_command(const char *cmd, json_t *args, long id)
{
    json_t *o = json_pack("{s:s, s:I}", "execute", cmd, "id", (json_int_t)id);
    if (!o) {
        json_decref(args);
        return NULL;
    }
    if (args)
        json_object_set_new(o, "arguments", args);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return NULL;
    char *line = lstr_printf("%s\r\n", s);
    free(s);
    return line;
}

char *vm_qmp_hmp(const char *line, long id)
{
    return vm_qmp_command("human-monitor-command", json_pack("{s:s}", "command-line", line), id);
}

int vm_qmp_parse(const json_t *j, struct vm_qmp_msg *ret)
{
    if (!json_is_object(j))
        return -EINVAL;
    struct vm_qmp_msg m = {.id = -1};
    const json_t *id = json_object_get(j, "id");
    if (json_is_integer(id))
        m.id = (long)json_integer_value(id);
    if (json_object_get(j, "QMP")) {
        m.kind = VM_QMP_GREETING;
    } else if (json_object_get(j, "return")) {
        m.kind = VM_QMP_RETURN;
        m.data = json_object_get(j, "return");
    } else if (json_object_get(j, "error")) {
        m.kind = VM_QMP_ERROR;
        m.error = ljson_str(json_object_get(j, "error"), "desc");
        if (!m.error)
            m.error = "unknown error";
    } else if (ljson_str(j, "event")) {
        m.kind = VM_QMP_EVENT;
        m.event = ljson_str(j, "event");
        m.data = json_object_get(j, "data");
    } else {
        return -EINVAL;
    }
    *ret = m;
    return 0;
}
