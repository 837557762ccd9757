/* fs.h — durable file operations: atomic replace (temp, fsync, rename, fsync the directory),
 * bounded whole-file reads, recursive mkdir. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Replace path with data durably: write path.tmp, fsync, rename over path, fsync the directory.
 * A crash at any point leaves either the old or the new content, never a mix. */
int lfs_write_atomic(const char *path, const void *data, size_t n, mode_t mode);
/* Read a whole file of at most max bytes (-EFBIG beyond); result NUL-terminated. */
int lfs_read_file(const char *path, size_t max, char **ret, size_t *ret_len);
int lfs_mkdir_p(const char *path, mode_t mode);
int lfs_fsync_dir(const char *dir);
/* Directory part of path into dst ("." when none). */
int lfs_dirname(const char *path, char *dst, size_t size);
/* Write all n bytes, retrying on EINTR and short writes. */
int lfs_write_all(int fd, const void *data, size_t n);
