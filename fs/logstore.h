/*
 * logstore: an append-only log of records (each one line ending in '\n')
 * whose bytes live in memory up to one budget shared by every log, and past
 * it in one unlinked file per log in the cache directory.  The oldest bytes
 * (across all logs) go to disk first, so what followers read, the end of a
 * log, is in memory; what was spilled is read back with pread (the kernel's
 * page cache, not the daemon, holds it then).
 *
 * Not thread-safe: the caller serialises every call (triggerfs holds
 * tfs.lock).  Knows nothing of FUSE or the API.
 */
#ifndef LOGSTORE_H
#define LOGSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct logstore;

/* Called once per log whose bytes cannot go to disk (they stay in memory,
 * over the budget, rather than be lost): errno and what failed. */
typedef void (*logstore_warn_fn)(int err, const char *what);

/* The shared budget, in bytes of record data held in memory, and the
 * directory (an open descriptor; -1: none, everything stays in memory)
 * where spilled logs go.  Lowering the budget spills at once. */
void logstore_configure(int dirfd, size_t budget, logstore_warn_fn warn);

struct logstore *logstore_new(void);
void logstore_free(struct logstore *ls);

/* Append one record: its bytes and a '\n'. */
void logstore_append_record(struct logstore *ls, const char *rec, size_t len);

uint64_t logstore_size(const struct logstore *ls);
uint64_t logstore_records(const struct logstore *ls);

/* Copy up to n bytes at off into buf; returns the count (0 at or past the
 * end), or -1 with errno when the disk read failed. */
ssize_t logstore_read(struct logstore *ls, uint64_t off, char *buf, size_t n);

/* The bytes at off that sit contiguous in memory, for answering a read
 * without a copy: *p points at them; 0 when off is on disk or at the end. */
size_t logstore_span(const struct logstore *ls, uint64_t off, const char **p);

/* The end of the record that holds byte off: the offset just past its
 * '\n'.  off must be below logstore_size; -1 with errno on a disk error. */
int64_t logstore_record_end(struct logstore *ls, uint64_t off);

/* Totals over every log, for the stats file and tests. */
struct logstore_stats {
	size_t mem_bytes;      /* record data held in memory (chunk capacity) */
	size_t budget;
	uint64_t disk_bytes;   /* spilled to the cache directory */
	size_t files;          /* logs with a file */
};
void logstore_stats(struct logstore_stats *st);

#endif
