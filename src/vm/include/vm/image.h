/* image.h — guest images in the cache (built by ledge-vm-build: a raw ext4 root, the kernel, the
 * initramfs and a manifest) and the VM directories made from them: create, resize, delete. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"
#include "vm/def.h"

#define VM_IMAGE_ROOTFS "rootfs.img"
#define VM_IMAGE_KERNEL "kernel"
#define VM_IMAGE_INITRD "initrd.img"
#define VM_IMAGE_MANIFEST "manifest.json"

/* Keys are "<arch>-<hex>" (what ledge-vm-build prints); anything else is refused so a key can
 * never name a path outside the cache. */
int vm_image_key_check(const char *key, struct lerr *err);

/* The manifest of <cache>/<key> (the image must be complete), or -ENOENT. */
int vm_image_manifest(const char *cache, const char *key, json_t **ret, struct lerr *err);
/* The container engine an image's guest runs: its manifest's "engine" (images made before the
 * oci variant have none: docker); -EINVAL for an engine this ledge does not know. */
int vm_image_engine(const json_t *manifest, enum vm_engine *ret);
/* Every complete image in the cache: [{"key", "arch", ...manifest}], newest first. */
json_t *vm_image_list(const char *cache);

/* Build (or find cached) an image with ledge-vm-build --cache cache args... (--arch A --deb FILE,
 * ...; its progress goes to stderr, minutes for a first build): the key it printed last in
 * ret_key, and everything it printed to stdout in *ret_out when non-NULL. */
int vm_image_build(const char *cache, char *const *args, size_t n, char *ret_key, size_t size,
                   struct lbuf *ret_out, struct lerr *err);
/* Write image key as a tar archive (holes kept) to file ("-": stdout). */
int vm_image_export(const char *cache, const char *key, const char *file, struct lerr *err);
/* Unpack an archive vm_image_export() made into the cache: it must hold one image directory and
 * nothing else; its key in ret_key. */
int vm_image_import(const char *cache, const char *file, char *ret_key, size_t size,
                    struct lerr *err);
/* Remove image key from the cache. */
int vm_image_remove(const char *cache, const char *key, struct lerr *err);

/* Copy a file keeping its holes (a clone where the file system can). */
int vm_copy_sparse(const char *src, const char *dst, struct lerr *err);

/* Make <vmroot>/<d->name> from image <cache>/<d->image> (of d's architecture and engine):
 * vm.json, a sparse copy of the root grown to d->disk (the guest grows its file system at boot),
 * the kernel and initramfs.
 * -EEXIST when the VM exists. On failure nothing is left behind. */
int vm_create(const char *vmroot, const char *cache, const struct vm_def *d, struct lerr *err);
/* Grow disk.img to bytes (never shrinks: -EINVAL). */
int vm_resize_disk(const char *vmroot, const char *name, uint64_t bytes, struct lerr *err);
/* Remove the VM's directory and everything in it. */
int vm_delete_dir(const char *vmroot, const char *name, struct lerr *err);
/* Remove a directory tree (no symlinks followed); -ENOENT is success. */
int vm_rm_rf(const char *path);
