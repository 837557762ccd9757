/* platform.h — the host/guest platform rule: the host's platform from uname(2) in the names
 * container images use (os "linux", arch amd64/arm64/arm, variant v7 ...), and whether an image
 * built for one platform runs on a host. Pure apart from platform_host(). */
#pragma once

#include "base/errors.h"

struct platform {
    char os[16];      /* "linux" */
    char arch[16];    /* GOARCH names: amd64, arm64, arm, 386, ppc64le, riscv64, s390x, ... */
    char variant[16]; /* arm: v5, v6, v7, v8; empty elsewhere (or unknown) */
};

/* "linux/arm/v7", "linux/amd64" */
#define PLATFORM_STR_MAX 64

/* Normalise any spelling docker, containerd, Debian or uname use into the image names:
 * x86_64 → amd64, aarch64 → arm64, armv7l/armhf → arm v7, armel → arm v6, armv8l → arm v8
 * (a 64-bit ARM CPU running 32-bit userland), i686 → 386. Unknown architectures are kept,
 * lower-cased. os and variant may be NULL. -EINVAL when os or arch is empty or too long. */
int platform_normalize(const char *os, const char *arch, const char *variant, struct platform *ret);

/* The platform of the machine this runs on: uname(2)'s sysname and machine, normalised. */
int platform_host(struct platform *ret);

/* "os/arch" or "os/arch/variant" into buf (PLATFORM_STR_MAX bytes); returns buf. */
const char *platform_format(const struct platform *p, char *buf);

/* platform_compatible() results that accept the image. */
enum {
    PLATFORM_MATCH = 0,      /* same OS family, an architecture (and variant) the host runs */
    PLATFORM_COMPAT_32 = 1,  /* a 32-bit image on its 64-bit host (386 on amd64, arm on arm64):
                              * runs only if the CPU and kernel have 32-bit support */
    PLATFORM_UNDECLARED = 2, /* the image names no OS or architecture: nothing to compare */
};

/* Can an image built for image_os/image_arch/image_variant (as the image config or a manifest
 * list states them; any may be NULL) run on host? Returns one of the values above, or
 * -ENOEXEC with err saying why not and stating the rule: a container shares its host's kernel,
 * so the image's OS family must be the host's (Linux images on Linux hosts; a virtual machine
 * counts as the host it is) and its architecture one the host's CPU executes. The message starts
 * with "image is built for ..."; callers prefix the module and image. */
int platform_compatible(const struct platform *host, const char *image_os, const char *image_arch,
                        const char *image_variant, struct lerr *err);

/* platform_compatible() for a module: the same result, with the message prefixed by
 * "module NAME (IMAGE): " — what `ledge check` and `ledge deploy` both print. */
int platform_check_module(const struct platform *host, const char *module, const char *image,
                          const char *image_os, const char *image_arch, const char *image_variant,
                          struct lerr *err);
