/* def.c — VM definitions: names, sizes, ports and shares, validated; vm.json in and out. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "vm/def.h"

#define DEF_MAX_BYTES (256 * 1024)

int vm_name_check(const char *name, struct lerr *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > VM_NAME_MAX)
        return lerr_set(err, -EINVAL, "VM name \"%s\": 1 to %d characters", name ? name : "",
                        VM_NAME_MAX);
    if (!islower((unsigned char)name[0]) && !isdigit((unsigned char)name[0]))
        return lerr_set(err, -EINVAL, "VM name \"%s\": must start with a-z or 0-9", name);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!islower(c) && !isdigit(c) && c != '-')
            return lerr_set(err, -EINVAL, "VM name \"%s\": only a-z, 0-9 and '-' are allowed",
                            name);
    }
    return 0;
}

const char *vm_arch_name(enum vm_arch a)
{
    return a == VM_ARCH_ARM64 ? "arm64" : "amd64";
}
const char *vm_arch_uname(enum vm_arch a)
{
    return a == VM_ARCH_ARM64 ? "aarch64" : "x86_64";
}

int vm_arch_parse(const char *s, enum vm_arch *ret)
{
    if (lstr_eq(s, "amd64") || lstr_eq(s, "x86_64"))
        *ret = VM_ARCH_AMD64;
    else if (lstr_eq(s, "arm64") || lstr_eq(s, "aarch64"))
        *ret = VM_ARCH_ARM64;
    else
        return -EINVAL;
    return 0;
}

int vm_arch_host(enum vm_arch *ret)
{
    struct utsname u;
    if (uname(&u) < 0)
        return neg_errno();
    enum vm_arch a;
    if (vm_arch_parse(u.machine, &a) < 0)
        return -ENOTSUP;
    *ret = a;
    return 0;
}

const char *vm_accel_name(enum vm_accel a)
{
    switch (a) {
    case VM_ACCEL_KVM:
        return "kvm";
    case VM_ACCEL_TCG:
        return "tcg";
    default:
        return "auto";
    }
}

int vm_accel_parse(const char *s, enum vm_accel *ret)
{
    if (lstr_eq(s, "auto"))
        *ret = VM_ACCEL_AUTO;
    else if (lstr_eq(s, "kvm"))
        *ret = VM_ACCEL_KVM;
    else if (lstr_eq(s, "tcg") || lstr_eq(s, "emulation"))
        *ret = VM_ACCEL_TCG;
    else
        return -EINVAL;
    return 0;
}

const char *vm_engine_name(enum vm_engine e)
{
    return e == VM_ENGINE_OCI ? "oci" : "docker";
}

int vm_engine_parse(const char *s, enum vm_engine *ret)
{
    if (lstr_eq(s, "docker"))
        *ret = VM_ENGINE_DOCKER;
    else if (lstr_eq(s, "oci"))
        *ret = VM_ENGINE_OCI;
    else
        return -EINVAL;
    return 0;
}

int vm_size_parse(const char *s, uint64_t *ret)
{
    if (lstr_empty(s) || !isdigit((unsigned char)s[0]))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    unsigned shift = 0;
    const char *u = end;
    switch (tolower((unsigned char)*u)) {
    case 0:
        break;
    case 'k':
        shift = 10;
        u++;
        break;
    case 'm':
        shift = 20;
        u++;
        break;
    case 'g':
        shift = 30;
        u++;
        break;
    case 't':
        shift = 40;
        u++;
        break;
    default:
        return -EINVAL;
    }
    /* Accept "M", "MB", "MiB" (all binary: memory and disks are sized in powers of two). */
    if (shift && *u) {
        if (lstr_eq_ci(u, "b") || lstr_eq_ci(u, "ib"))
            u += strlen(u);
        else
            return -EINVAL;
    } else if (!shift && *u) {
        return -EINVAL;
    }
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *ret = (uint64_t)v << shift;
    return 0;
}

const char *vm_size_format(uint64_t bytes, char *buf, size_t size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%" PRIu64 " B", bytes);
    else if (v == (double)(uint64_t)v)
        snprintf(buf, size, "%" PRIu64 " %s", (uint64_t)v, units[u]);
    else
        snprintf(buf, size, "%.1f %s", v, units[u]);
    return buf;
}

int vm_def_init(struct vm_def *d, const char *name, struct lerr *err)
{
    int r = vm_name_check(name, err);
    if (r < 0)
        return r;
    memset(d, 0, sizeof(*d));
    lstr_copy(d->name, sizeof(d->name), name);
    if (vm_arch_host(&d->arch) < 0)
        d->arch = VM_ARCH_AMD64;
    d->accel = VM_ACCEL_AUTO;
    d->memory = VM_DEFAULT_MEMORY;
    d->cpus = VM_DEFAULT_CPUS;
    d->disk = VM_DEFAULT_DISK;
    d->boot_timeout_s = VM_DEFAULT_BOOT_TIMEOUT_S;
    d->hub_port = VM_DEFAULT_HUB_PORT;
    d->data_disk = true;
    return 0;
}

void vm_def_free(struct vm_def *d)
{
    if (!d)
        return;
    free(d->image);
    d->image = NULL;
    for (size_t i = 0; i < d->n_shares; i++) {
        free(d->shares[i].host_dir);
        free(d->shares[i].guest_dir);
    }
    d->n_shares = 0;
    d->n_ports = 0;
}

int vm_def_validate(const struct vm_def *d, struct lerr *err)
{
    char a[32], b[32];
    int r = vm_name_check(d->name, err);
    if (r < 0)
        return r;
    if (d->memory < VM_MIN_MEMORY || d->memory > VM_MAX_MEMORY)
        return lerr_set(err, -ERANGE, "memory: between %s and %s",
                        vm_size_format(VM_MIN_MEMORY, a, sizeof(a)),
                        vm_size_format(VM_MAX_MEMORY, b, sizeof(b)));
    if (d->memory % (1u << 20))
        return lerr_set(err, -EINVAL, "memory: a whole number of MiB");
    if (d->cpus < 1 || d->cpus > VM_MAX_CPUS)
        return lerr_set(err, -ERANGE, "cpus: between 1 and %d", VM_MAX_CPUS);
    if (d->disk < VM_MIN_DISK || d->disk > VM_MAX_DISK)
        return lerr_set(err, -ERANGE, "disk: between %s and %s",
                        vm_size_format(VM_MIN_DISK, a, sizeof(a)),
                        vm_size_format(VM_MAX_DISK, b, sizeof(b)));
    if (d->disk % (1u << 20))
        return lerr_set(err, -EINVAL, "disk: a whole number of MiB");
    if (d->boot_timeout_s < 10 || d->boot_timeout_s > 3600)
        return lerr_set(err, -ERANGE, "bootTimeout: between 10 and 3600 seconds");
    return 0;
}

/* ------------------------------------------------------------------ ports */

static int port_number(const char *s, uint16_t *ret)
{
    unsigned long long v;
    if (lstr_to_u64(s, &v) < 0 || v == 0 || v > 65535)
        return -EINVAL;
    *ret = (uint16_t)v;
    return 0;
}

static bool addr_valid(const char *a)
{
    struct in_addr in;
    return inet_pton(AF_INET, a, &in) == 1;
}

int vm_port_parse(const char *spec, struct vm_port *ret, struct lerr *err)
{
    char buf[128];
    if (lstr_copy(buf, sizeof(buf), spec ? spec : "") < 0 || lstr_empty(spec))
        return lerr_set(err, -EINVAL, "port \"%s\": use [ADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]",
                        spec ? spec : "");
    struct vm_port p = {.proto = "tcp", .addr = "127.0.0.1"};
    char *slash = strchr(buf, '/');
    if (slash) {
        *slash++ = 0;
        if (!lstr_eq(slash, "tcp") && !lstr_eq(slash, "udp"))
            return lerr_set(err, -EINVAL, "port \"%s\": protocol must be tcp or udp", spec);
        lstr_copy(p.proto, sizeof(p.proto), slash);
    }
    char *parts[4];
    size_t n = 0;
    for (char *s = buf, *tok; n < ARRAY_SIZE(parts) && (tok = strsep(&s, ":"));)
        parts[n++] = tok;
    if (n > 3 || (n == 3 && strchr(parts[2], ':')))
        return lerr_set(err, -EINVAL, "port \"%s\": use [ADDR:]HOSTPORT:GUESTPORT[/tcp|/udp]",
                        spec);
    const char *hp = parts[0], *gp = parts[0];
    if (n == 2) {
        gp = parts[1];
    } else if (n == 3) {
        if (!addr_valid(parts[0]))
            return lerr_set(err, -EINVAL, "port \"%s\": \"%s\" is not an IPv4 address", spec,
                            parts[0]);
        lstr_copy(p.addr, sizeof(p.addr), parts[0]);
        hp = parts[1];
        gp = parts[2];
    }
    if (port_number(hp, &p.host_port) < 0 || port_number(gp, &p.guest_port) < 0)
        return lerr_set(err, -EINVAL, "port \"%s\": ports are numbers from 1 to 65535", spec);
    *ret = p;
    return 0;
}

const char *vm_port_format(const struct vm_port *p, char *buf, size_t size)
{
    snprintf(buf, size, "%s:%u->%u/%s", p->addr, p->host_port, p->guest_port, p->proto);
    return buf;
}

bool vm_port_same_host_side(const struct vm_port *a, const struct vm_port *b)
{
    /* 0.0.0.0 overlaps every address on the same port. */
    bool addr_overlap =
        lstr_eq(a->addr, b->addr) || lstr_eq(a->addr, "0.0.0.0") || lstr_eq(b->addr, "0.0.0.0");
    return a->host_port == b->host_port && lstr_eq(a->proto, b->proto) && addr_overlap;
}

int vm_def_add_port(struct vm_def *d, const struct vm_port *p, struct lerr *err)
{
    char buf[96];
    for (size_t i = 0; i < d->n_ports; i++)
        if (vm_port_same_host_side(&d->ports[i], p))
            return lerr_set(err, -EEXIST, "host port %s is already forwarded (%s)",
                            vm_port_format(p, buf, sizeof(buf)),
                            vm_port_format(&d->ports[i], buf, sizeof(buf)));
    if (d->hub_port && d->hub_port == p->host_port && lstr_eq(p->proto, "tcp"))
        return lerr_set(err, -EEXIST, "host port %u is the hub's forward", p->host_port);
    if (d->n_ports >= VM_MAX_PORTS)
        return lerr_set(err, -ENOSPC, "at most %d port forwards", VM_MAX_PORTS);
    d->ports[d->n_ports++] = *p;
    return 0;
}

int vm_def_remove_port(struct vm_def *d, const struct vm_port *p, struct lerr *err)
{
    for (size_t i = 0; i < d->n_ports; i++) {
        struct vm_port *q = &d->ports[i];
        if (q->host_port == p->host_port && lstr_eq(q->proto, p->proto) &&
            lstr_eq(q->addr, p->addr)) {
            memmove(q, q + 1, (d->n_ports - i - 1) * sizeof(*q));
            d->n_ports--;
            return 0;
        }
    }
    char buf[96];
    snprintf(buf, sizeof(buf), "%s:%u/%s", p->addr, p->host_port, p->proto);
    return lerr_set(err, -ENOENT, "no forward from %s", buf);
}

/* ------------------------------------------------------------------ shares */

/* Absolute, no "." or ".." segments, no doubled or trailing slashes (except "/"), no ',' (it would
 * break QEMU's option syntax) and printable. */
static int path_check(const char *what, const char *p, struct lerr *err)
{
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || p[0] != '/')
        return lerr_set(err, -EINVAL, "%s \"%s\": must be an absolute path", what, p ? p : "");
    if (n >= PATH_MAX)
        return lerr_set(err, -ENAMETOOLONG, "%s: too long", what);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f || c == ',' || c == ':')
            return lerr_set(err, -EINVAL, "%s \"%s\": no control characters, ',' or ':'", what, p);
    }
    if (n > 1 && p[n - 1] == '/')
        return lerr_set(err, -EINVAL, "%s \"%s\": no trailing '/'", what, p);
    if (strstr(p, "//") || strstr(p, "/./") || strstr(p, "/../") || lstr_endswith(p, "/.") ||
        lstr_endswith(p, "/.."))
        return lerr_set(err, -EINVAL, "%s \"%s\": must be normalised (no //, . or ..)", what, p);
    return 0;
}

int vm_def_add_share(struct vm_def *d, const char *host_dir, const char *guest_dir, bool read_only,
                     struct lerr *err)
{
    int r;
    if ((r = path_check("host directory", host_dir, err)) < 0 ||
        (r = path_check("guest directory", guest_dir, err)) < 0)
        return r;
    if (lstr_eq(guest_dir, "/"))
        return lerr_set(err, -EINVAL, "guest directory: not /");
    struct stat st;
    if (stat(host_dir, &st) < 0)
        return lerr_set(err, neg_errno(), "host directory %s: %s", host_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return lerr_set(err, -ENOTDIR, "host directory %s: not a directory", host_dir);
    for (size_t i = 0; i < d->n_shares; i++)
        if (lstr_eq(d->shares[i].guest_dir, guest_dir))
            return lerr_set(err, -EEXIST, "guest directory %s is already shared from %s", guest_dir,
                            d->shares[i].host_dir);
    if (d->n_shares >= VM_MAX_SHARES)
        return lerr_set(err, -ENOSPC, "at most %d shared folders", VM_MAX_SHARES);
    /* The lowest free tag, so tags stay stable while other shares come and go. */
    char tag[16];
    for (int k = 0;; k++) {
        snprintf(tag, sizeof(tag), "share%d", k);
        bool used = false;
        for (size_t i = 0; i < d->n_shares; i++)
            used |= lstr_eq(d->shares[i].tag, tag);
        if (!used)
            break;
    }
    struct vm_share *s = &d->shares[d->n_shares];
    s->host_dir = strdup(host_dir);
    s->guest_dir = strdup(guest_dir);
    if (!s->host_dir || !s->guest_dir) {
        free(s->host_dir);
        free(s->guest_dir);
        return -ENOMEM;
    }
    lstr_copy(s->tag, sizeof(s->tag), tag);
    s->read_only = read_only;
    d->n_shares++;
    return 0;
}

int vm_def_remove_share(struct vm_def *d, const char *host_dir, const char *guest_dir,
                        struct lerr *err)
{
    for (size_t i = 0; i < d->n_shares; i++) {
        struct vm_share *s = &d->shares[i];
        bool match = guest_dir ? lstr_eq(s->guest_dir, guest_dir) &&
                                     (!host_dir || lstr_eq(s->host_dir, host_dir))
                               : lstr_eq(s->host_dir, host_dir);
        if (!match)
            continue;
        free(s->host_dir);
        free(s->guest_dir);
        memmove(s, s + 1, (d->n_shares - i - 1) * sizeof(*s));
        d->n_shares--;
        return 0;
    }
    return lerr_set(err, -ENOENT, "no shared folder %s%s%s", host_dir ? host_dir : "",
                    host_dir && guest_dir ? " -> " : "", guest_dir ? guest_dir : "");
}

json_t *vm_def_shares_json(const struct vm_def *d)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < d->n_shares; i++) {
        const struct vm_share *s = &d->shares[i];
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:b}", "tag", s->tag, "hostDir",
                                           s->host_dir, "guestDir", s->guest_dir, "readOnly",
                                           s->read_only));
    }
    return a;
}

/* ------------------------------------------------------------------ JSON */

json_t *vm_def_to_json(const struct vm_def *d)
{
    json_t *ports = json_array();
    for (size_t i = 0; ports && i < d->n_ports; i++) {
        const struct vm_port *p = &d->ports[i];
        json_array_append_new(ports, json_pack("{s:s, s:s, s:i, s:i}", "proto", p->proto,
                                               "hostAddr", p->addr, "hostPort", p->host_port,
                                               "guestPort", p->guest_port));
    }
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:I, s:i, s:I, s:b, s:i, s:i, s:o, s:o}", "version",
                          1, "name", d->name, "arch", vm_arch_name(d->arch), "accel",
                          vm_accel_name(d->accel), "memory", (json_int_t)d->memory, "cpus", d->cpus,
                          "disk", (json_int_t)d->disk, "autostart", d->autostart, "bootTimeout",
                          d->boot_timeout_s, "hubPort", d->hub_port, "ports",
                          ports ? ports : json_array(), "shares", vm_def_shares_json(d));
    if (o && d->image)
        json_object_set_new(o, "image", json_string(d->image));
    if (o)
        json_object_set_new(o, "engine", json_string(vm_engine_name(d->engine)));
    if (o && d->data_disk)
        json_object_set_new(o, "dataDisk", json_true());
    return o;
}

static int get_uint(const json_t *j, const char *key, uint64_t max, uint64_t *ret, struct lerr *err)
{
    const json_t *v = json_object_get(j, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return lerr_set(err, -EINVAL, "%s: must be an integer from 0 to %" PRIu64, key, max);
    *ret = (uint64_t)json_integer_value(v);
    return 1;
}

static int get_str(const json_t *j, const char *key, const char **ret, struct lerr *err)
{
    const json_t *v = json_object_get(j, key);
    if (!v)
        return 0;
    if (!json_is_string(v))
        return lerr_set(err, -EINVAL, "%s: must be a string", key);
    *ret = json_string_value(v);
    return 1;
}

static int ports_from_json(const json_t *a, struct vm_def *d, struct lerr *err)
{
    if (!a)
        return 0;
    if (!json_is_array(a))
        return lerr_set(err, -EINVAL, "ports: must be an array");
    size_t i;
    const json_t *e;
    json_array_foreach (a, i, e) {
        struct vm_port p = {.proto = "tcp", .addr = "127.0.0.1"};
        const char *proto = NULL, *addr = NULL;
        uint64_t hp = 0, gp = 0;
        int r;
        if (!json_is_object(e))
            return lerr_set(err, -EINVAL, "ports[%zu]: must be an object", i);
        if ((r = get_str(e, "proto", &proto, err)) < 0 ||
            (r = get_str(e, "hostAddr", &addr, err)) < 0 ||
            (r = get_uint(e, "hostPort", 65535, &hp, err)) < 0 ||
            (r = get_uint(e, "guestPort", 65535, &gp, err)) < 0)
            return lerr_prefix(err, "ports[%zu]", i);
        if (proto && !lstr_eq(proto, "tcp") && !lstr_eq(proto, "udp"))
            return lerr_set(err, -EINVAL, "ports[%zu].proto: tcp or udp", i);
        if (addr && !addr_valid(addr))
            return lerr_set(err, -EINVAL, "ports[%zu].hostAddr: an IPv4 address", i);
        if (hp == 0 || gp == 0)
            return lerr_set(err, -EINVAL, "ports[%zu]: hostPort and guestPort from 1 to 65535", i);
        if (proto)
            lstr_copy(p.proto, sizeof(p.proto), proto);
        if (addr)
            lstr_copy(p.addr, sizeof(p.addr), addr);
        p.host_port = (uint16_t)hp;
        p.guest_port = (uint16_t)gp;
        if ((r = vm_def_add_port(d, &p, err)) < 0)
            return lerr_prefix(err, "ports[%zu]", i);
    }
    return 0;
}

static int shares_from_json(const json_t *a, struct vm_def *d, struct lerr *err)
{
    if (!a)
        return 0;
    if (!json_is_array(a))
        return lerr_set(err, -EINVAL, "shares: must be an array");
    size_t i;
    const json_t *e;
    json_array_foreach (a, i, e) {
        const char *tag = NULL, *hd = NULL, *gd = NULL;
        int r;
        if (!json_is_object(e))
            return lerr_set(err, -EINVAL, "shares[%zu]: must be an object", i);
        if ((r = get_str(e, "tag", &tag, err)) < 0 || (r = get_str(e, "hostDir", &hd, err)) < 0 ||
            (r = get_str(e, "guestDir", &gd, err)) < 0)
            return lerr_prefix(err, "shares[%zu]", i);
        if (d->n_shares >= VM_MAX_SHARES)
            return lerr_set(err, -ENOSPC, "shares: at most %d", VM_MAX_SHARES);
        /* A stored share's host directory may have gone away: keep it (start reports it). */
        if ((r = path_check("hostDir", hd, err)) < 0 || (r = path_check("guestDir", gd, err)) < 0)
            return lerr_prefix(err, "shares[%zu]", i);
        if (!tag || strlen(tag) >= sizeof(d->shares[0].tag) || !lstr_startswith(tag, "share"))
            return lerr_set(err, -EINVAL, "shares[%zu].tag: \"shareN\"", i);
        for (size_t k = 0; k < d->n_shares; k++)
            if (lstr_eq(d->shares[k].tag, tag) || lstr_eq(d->shares[k].guest_dir, gd))
                return lerr_set(err, -EEXIST, "shares[%zu]: duplicate tag or guestDir", i);
        struct vm_share *s = &d->shares[d->n_shares];
        s->host_dir = strdup(hd);
        s->guest_dir = strdup(gd);
        if (!s->host_dir || !s->guest_dir) {
            free(s->host_dir);
            free(s->guest_dir);
            return -ENOMEM;
        }
        lstr_copy(s->tag, sizeof(s->tag), tag);
        s->read_only = ljson_bool(e, "readOnly", false);
        d->n_shares++;
    }
    return 0;
}

int vm_def_from_json(const json_t *j, struct vm_def *ret, struct lerr *err)
{
    if (!json_is_object(j))
        return lerr_set(err, -EINVAL, "a VM definition is a JSON object");
    const char *name = NULL, *arch = NULL, *accel = NULL, *image = NULL, *engine = NULL;
    int r;
    if ((r = get_str(j, "name", &name, err)) < 0)
        return r;
    struct vm_def d;
    if ((r = vm_def_init(&d, name, err)) < 0)
        return r;
    uint64_t v;
    if ((r = get_str(j, "arch", &arch, err)) < 0)
        goto fail;
    if (arch && vm_arch_parse(arch, &d.arch) < 0) {
        r = lerr_set(err, -EINVAL, "arch: amd64 or arm64");
        goto fail;
    }
    if ((r = get_str(j, "accel", &accel, err)) < 0)
        goto fail;
    if (accel && vm_accel_parse(accel, &d.accel) < 0) {
        r = lerr_set(err, -EINVAL, "accel: auto, kvm or tcg");
        goto fail;
    }
    if ((r = get_str(j, "engine", &engine, err)) < 0)
        goto fail;
    if (engine && vm_engine_parse(engine, &d.engine) < 0) {
        r = lerr_set(err, -EINVAL, "engine: docker or oci");
        goto fail;
    }
    if ((r = get_uint(j, "memory", VM_MAX_MEMORY, &v, err)) < 0)
        goto fail;
    if (r)
        d.memory = v;
    if ((r = get_uint(j, "cpus", VM_MAX_CPUS, &v, err)) < 0)
        goto fail;
    if (r)
        d.cpus = (int)v;
    if ((r = get_uint(j, "disk", VM_MAX_DISK, &v, err)) < 0)
        goto fail;
    if (r)
        d.disk = v;
    if ((r = get_uint(j, "bootTimeout", 3600, &v, err)) < 0)
        goto fail;
    if (r)
        d.boot_timeout_s = (int)v;
    if ((r = get_uint(j, "hubPort", 65535, &v, err)) < 0)
        goto fail;
    if (r)
        d.hub_port = (uint16_t)v;
    const json_t *as = json_object_get(j, "autostart");
    if (as && !json_is_boolean(as)) {
        r = lerr_set(err, -EINVAL, "autostart: must be true or false");
        goto fail;
    }
    d.autostart = json_is_true(as);
    const json_t *dd = json_object_get(j, "dataDisk");
    if (dd && !json_is_boolean(dd)) {
        r = lerr_set(err, -EINVAL, "dataDisk: must be true or false");
        goto fail;
    }
    d.data_disk = json_is_true(dd); /* absent: a VM from before data disks */
    if ((r = get_str(j, "image", &image, err)) < 0)
        goto fail;
    if (image && !(d.image = strdup(image))) {
        r = -ENOMEM;
        goto fail;
    }
    if ((r = ports_from_json(json_object_get(j, "ports"), &d, err)) < 0 ||
        (r = shares_from_json(json_object_get(j, "shares"), &d, err)) < 0 ||
        (r = vm_def_validate(&d, err)) < 0)
        goto fail;
    *ret = d;
    return 0;
fail:
    vm_def_free(&d);
    return r;
}

int vm_def_load(const char *path, struct vm_def *ret, struct lerr *err)
{
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = lfs_read_file(path, DEF_MAX_BYTES, &text, &len);
    if (r < 0)
        return lerr_set(err, r, "%s: %s", path, strerror(-r));
    _cleanup_json_ json_t *j = NULL;
    if ((r = ljson_parse(text, len, &j, err)) < 0)
        return lerr_prefix(err, "%s", path);
    if ((r = vm_def_from_json(j, ret, err)) < 0)
        return lerr_prefix(err, "%s", path);
    return 0;
}

int vm_def_save(const char *path, const struct vm_def *d)
{
    _cleanup_json_ json_t *j = vm_def_to_json(d);
    if (!j)
        return -ENOMEM;
    _cleanup_free_ char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return -ENOMEM;
    _cleanup_free_ char *withnl = lstr_printf("%s\n", text);
    if (!withnl)
        return -ENOMEM;
    return lfs_write_atomic(path, withnl, strlen(withnl), 0644);
}

/* ------------------------------------------------------------------ published ports */

/* settings.createOptions as an object: a JSON string, its createOptions01.. continuations, or
 * (as ledge also accepts) an object. NULL when absent or malformed. */
static json_t *create_options(const json_t *settings)
{
    const json_t *co = json_object_get(settings, "createOptions");
    if (json_is_object(co))
        return json_incref((json_t *)co);
    if (!json_is_string(co))
        return NULL;
    struct lbuf text = LBUF_INIT;
    text.max = 64 * 1024;
    int r = lbuf_puts(&text, json_string_value(co));
    for (int i = 1; r >= 0 && i < 100; i++) {
        char key[32];
        snprintf(key, sizeof(key), "createOptions%02d", i);
        const json_t *more = json_object_get(settings, key);
        if (!json_is_string(more))
            break;
        r = lbuf_puts(&text, json_string_value(more));
    }
    json_t *j = NULL;
    if (r < 0 || ljson_parse(text.data ? text.data : "", text.len, &j, NULL) < 0 ||
        !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    lbuf_free(&text);
    return j;
}

static size_t module_ports(const char *module, const json_t *mod, struct vm_auto_port *out,
                           size_t n, size_t max)
{
    _cleanup_json_ json_t *co = create_options(json_object_get(mod, "settings"));
    const json_t *pb = json_object_get(json_object_get(co, "HostConfig"), "PortBindings");
    const char *key;
    const json_t *bindings;
    json_object_foreach ((json_t *)pb, key, bindings) {
        /* "80/tcp", "5000/udp", "8080" */
        char proto[8] = "tcp";
        const char *slash = strchr(key, '/');
        if (slash) {
            if (lstr_copy(proto, sizeof(proto), slash + 1) < 0 ||
                (!lstr_eq(proto, "tcp") && !lstr_eq(proto, "udp")))
                continue;
        }
        size_t i;
        const json_t *b;
        json_array_foreach (bindings, i, b) {
            const char *hp = ljson_str(b, "HostPort"), *ip = ljson_str(b, "HostIp");
            uint16_t port;
            /* A binding to one guest address (127.0.0.1) is not reachable through the
             * user-mode network; a random host port has no fixed number to forward. */
            if (!hp || port_number(hp, &port) < 0 || (ip && *ip && !lstr_eq(ip, "0.0.0.0")))
                continue;
            bool dup = false;
            for (size_t k = 0; k < n; k++)
                dup |= out[k].port.host_port == port && lstr_eq(out[k].port.proto, proto);
            if (dup || n >= max)
                continue;
            struct vm_auto_port *a = &out[n++];
            memset(a, 0, sizeof(*a));
            lstr_copy(a->port.proto, sizeof(a->port.proto), proto);
            lstr_copy(a->port.addr, sizeof(a->port.addr), "127.0.0.1");
            a->port.host_port = port;
            a->port.guest_port = port;
            lstr_copy(a->module, sizeof(a->module), module);
        }
    }
    return n;
}

size_t vm_deployment_ports(const json_t *manifest, struct vm_auto_port *out, size_t max)
{
    const json_t *mc = json_object_get(manifest, "modulesContent");
    if (!mc)
        mc = json_object_get(json_object_get(manifest, "content"), "modulesContent");
    const json_t *desired =
        json_object_get(json_object_get(mc, "$edgeAgent"), "properties.desired");
    size_t n = 0;
    const char *groups[] = {"systemModules", "modules"};
    for (size_t g = 0; g < ARRAY_SIZE(groups); g++) {
        const char *name;
        const json_t *mod;
        json_object_foreach (json_object_get(desired, groups[g]), name, mod) {
            if (json_is_object(mod) && !lstr_eq(ljson_str(mod, "status"), "stopped"))
                n = module_ports(name, mod, out, n, max);
        }
    }
    return n;
}
