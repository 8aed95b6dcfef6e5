/*
 * logstore: the bytes of a log, in memory up to a shared budget and on disk
 * past it.  A log is a run of chunks; bytes [0, disk) are in its file and
 * [disk, size) in its chunks, in order.  Every chunk of every log is in one
 * queue in the order the chunks were made, so taking chunks from the head
 * of that queue spills the oldest bytes of all logs first and always leaves
 * each log's memory a suffix of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "logstore.h"

/* Chunks grow by doubling (most logs are a few small records) up to a size
 * that makes one write to disk worth its system call. */
#define CHUNK_MIN 512
#define CHUNK_MAX (64 * 1024)

struct chunk {
	struct chunk *prev, *next;   /* the spill queue: next is newer */
	struct logstore *ls;
	uint64_t off;                /* offset of data[0] in the log */
	size_t len, cap;
	char *data;
};

struct logstore {
	struct chunk **chunks;       /* in memory, in order: [first, first+n) */
	size_t first, n, slots;
	uint64_t disk;               /* bytes [0, disk) are in fd */
	uint64_t size, records;
	int fd;                      /* -1 until the first spill */
	bool pinned;                 /* the disk failed: stays in memory */
};

static struct {
	int dirfd;
	size_t budget, used;
	uint64_t disk_bytes;
	size_t files;
	unsigned long names;
	logstore_warn_fn warn;
	struct chunk queue;          /* sentinel: queue.next is the oldest */
} pool = {
	.dirfd = -1,
	.budget = SIZE_MAX,
	.queue = { &pool.queue, &pool.queue, NULL, 0, 0, 0, NULL },
};

static void *must(void *p)
{
	if (!p)
		abort();   /* as the daemon's x-allocators: no half-kept log */
	return p;
}

/* ---- the spill queue --------------------------------------------------- */

static void queue_add(struct chunk *c)
{
	c->next = &pool.queue;
	c->prev = pool.queue.prev;
	pool.queue.prev->next = c;
	pool.queue.prev = c;
}

static void queue_del(struct chunk *c)
{
	c->prev->next = c->next;
	c->next->prev = c->prev;
	c->prev = c->next = c;
}

/* ---- chunks ------------------------------------------------------------ */

static struct chunk *chunk_new(struct logstore *ls, size_t want)
{
	struct chunk *c = must(calloc(1, sizeof(*c)));
	size_t cap = CHUNK_MIN;

	while (cap < want && cap < CHUNK_MAX)
		cap *= 2;
	c->ls = ls;
	c->off = ls->size;
	c->cap = cap;
	c->data = must(malloc(cap));
	c->prev = c->next = c;
	if (!ls->pinned)
		queue_add(c);
	pool.used += cap;
	if (ls->first + ls->n == ls->slots) {
		if (ls->first > ls->slots / 2) {   /* reuse the spilled front */
			memmove(ls->chunks, ls->chunks + ls->first,
				ls->n * sizeof(*ls->chunks));
			ls->first = 0;
		} else {
			ls->slots = ls->slots ? ls->slots * 2 : 4;
			ls->chunks = must(realloc(ls->chunks,
					  ls->slots * sizeof(*ls->chunks)));
		}
	}
	ls->chunks[ls->first + ls->n++] = c;
	return c;
}

static void chunk_free(struct chunk *c)
{
	queue_del(c);
	pool.used -= c->cap;
	free(c->data);
	free(c);
}

static void chunk_grow(struct chunk *c, size_t need)
{
	size_t cap = c->cap;

	while (cap < need && cap < CHUNK_MAX)
		cap *= 2;
	c->data = must(realloc(c->data, cap));
	pool.used += cap - c->cap;
	c->cap = cap;
}

/* The chunk holding off, which must be in memory. */
static struct chunk *chunk_at(const struct logstore *ls, uint64_t off)
{
	size_t lo = ls->first, hi = ls->first + ls->n;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (ls->chunks[mid]->off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return ls->chunks[lo];
}

/* ---- the disk ---------------------------------------------------------- */

/* An unlinked file: nothing to clean after a crash.  Without O_TMPFILE
 * (some filesystems), a named file unlinked at once. */
static int file_open(void)
{
	int fd = openat(pool.dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR &&
			errno != EINVAL))
		return fd;
	for (;;) {
		char name[32];

		snprintf(name, sizeof(name), "log-%lu", pool.names++);
		fd = openat(pool.dirfd, name, O_CREAT | O_EXCL | O_RDWR |
			    O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd >= 0) {
			unlinkat(pool.dirfd, name, 0);
			return fd;
		}
		if (errno != EEXIST)
			return -1;
	}
}

/* All n bytes through pread or pwrite, across short counts and signals. */
static int io_all(bool write, int fd, char *p, size_t n, uint64_t off)
{
	while (n) {
		ssize_t k = write ? pwrite(fd, p, n, (off_t)off)
				  : pread(fd, p, n, (off_t)off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0)
			errno = EIO;   /* a file shorter than we wrote */
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
	return 0;
}

/* Keep the log's bytes in memory rather than lose them; say so once. */
static void pin(struct logstore *ls, const char *what)
{
	int err = errno;

	ls->pinned = true;
	for (size_t i = 0; i < ls->n; i++)
		queue_del(ls->chunks[ls->first + i]);
	if (pool.warn)
		pool.warn(err, what);
}

/* Write the oldest chunk of its log to the log's file and free it. */
static void spill_chunk(struct chunk *c)
{
	struct logstore *ls = c->ls;

	if (ls->fd < 0) {
		if ((ls->fd = file_open()) < 0) {
			pin(ls, "cannot create a file in the cache directory");
			return;
		}
		pool.files++;
	}
	if (io_all(true, ls->fd, c->data, c->len, c->off) != 0) {
		pin(ls, "cannot write to the cache directory");
		return;
	}
	ls->disk = c->off + c->len;
	pool.disk_bytes += c->len;
	ls->first++;
	ls->n--;
	chunk_free(c);
}

static void spill(void)
{
	while (pool.used > pool.budget && pool.dirfd >= 0 &&
	       pool.queue.next != &pool.queue)
		spill_chunk(pool.queue.next);
}

/* ---- the public API ---------------------------------------------------- */

void logstore_configure(int dirfd, size_t budget, logstore_warn_fn warn)
{
	pool.dirfd = dirfd;
	pool.budget = budget;
	pool.warn = warn;
	spill();
}

struct logstore *logstore_new(void)
{
	struct logstore *ls = must(calloc(1, sizeof(*ls)));

	ls->fd = -1;
	return ls;
}

void logstore_free(struct logstore *ls)
{
	if (!ls)
		return;
	for (size_t i = 0; i < ls->n; i++)
		chunk_free(ls->chunks[ls->first + i]);
	if (ls->fd >= 0) {
		close(ls->fd);
		pool.files--;
	}
	pool.disk_bytes -= ls->disk;
	free(ls->chunks);
	free(ls);
}

static void append(struct logstore *ls, const char *p, size_t n)
{
	while (n) {
		struct chunk *c = ls->n ? ls->chunks[ls->first + ls->n - 1] : NULL;

		if (!c || c->len == CHUNK_MAX)
			c = chunk_new(ls, n);
		else if (c->cap - c->len < n && c->cap < CHUNK_MAX)
			chunk_grow(c, c->len + n);
		size_t k = c->cap - c->len < n ? c->cap - c->len : n;

		memcpy(c->data + c->len, p, k);
		c->len += k;
		ls->size += k;
		p += k;
		n -= k;
	}
}

void logstore_append_record(struct logstore *ls, const char *rec, size_t len)
{
	append(ls, rec, len);
	append(ls, "\n", 1);
	ls->records++;
	spill();
}

uint64_t logstore_size(const struct logstore *ls)
{
	return ls->size;
}

uint64_t logstore_records(const struct logstore *ls)
{
	return ls->records;
}

size_t logstore_span(const struct logstore *ls, uint64_t off, const char **p)
{
	if (off < ls->disk || off >= ls->size)
		return 0;
	struct chunk *c = chunk_at(ls, off);

	*p = c->data + (off - c->off);
	return c->len - (size_t)(off - c->off);
}

ssize_t logstore_read(struct logstore *ls, uint64_t off, char *buf, size_t n)
{
	size_t done = 0;

	if (off >= ls->size)
		return 0;
	if (n > ls->size - off)
		n = (size_t)(ls->size - off);
	if (off < ls->disk) {
		done = ls->disk - off < n ? (size_t)(ls->disk - off) : n;
		if (io_all(false, ls->fd, buf, done, off) != 0)
			return -1;
	}
	while (done < n) {
		const char *p;
		size_t k = logstore_span(ls, off + done, &p);

		if (!k) {   /* not reached: memory starts where the disk ends */
			errno = EIO;
			return -1;
		}
		if (k > n - done)
			k = n - done;
		memcpy(buf + done, p, k);
		done += k;
	}
	return (ssize_t)done;
}

int64_t logstore_record_end(struct logstore *ls, uint64_t off)
{
	char buf[16384];

	while (off < ls->size) {
		const char *p;
		size_t k = logstore_span(ls, off, &p);

		if (!k) {   /* on disk */
			ssize_t r = logstore_read(ls, off, buf, sizeof(buf));

			if (r < 0)
				return -1;
			p = buf;
			k = (size_t)r;
		}
		const char *nl = memchr(p, '\n', k);

		if (nl)
			return (int64_t)(off + (uint64_t)(nl - p) + 1);
		off += k;
	}
	return (int64_t)ls->size;   /* not reached: every record ends in '\n' */
}

void logstore_stats(struct logstore_stats *st)
{
	st->mem_bytes = pool.used;
	st->budget = pool.budget;
	st->disk_bytes = pool.disk_bytes;
	st->files = pool.files;
}
