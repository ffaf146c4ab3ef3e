/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Files that a crash never leaves torn: written whole to PATH.tmp,
 * fsync(2)ed, renamed over PATH, and the directory fsync(2)ed, so that
 * after a crash PATH holds the old text or the new one.  kcopy's map and
 * kcopydfs's job records both go through here.  No global state: any
 * thread (two writers of one PATH at once are the caller's to avoid).
 */
#ifndef KCOPYD_COMMON_REPLACE_H
#define KCOPYD_COMMON_REPLACE_H

#include <stddef.h>

/*
 * fsync(2) the directory that holds path (a file name in it), so that a
 * rename or unlink there is on disk.  Returns 0 or -errno.
 */
int sync_dir(const char *path);

/*
 * Replace path's contents with len bytes of text as above.  Returns 0 or
 * -errno (PATH is then as it was, and PATH.tmp removed; only a crash
 * leaves it).
 */
int replace_file(const char *path, const char *text, size_t len);

/* Unlink path and make that durable: 0, or -errno (-ENOENT included). */
int remove_file(const char *path);

#endif /* KCOPYD_COMMON_REPLACE_H */
