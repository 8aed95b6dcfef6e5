/*
 * bench-waiters: many readers blocked at once on triggerfs.
 *
 *   bench-waiters MNT RUNSFILE K R PREFIX
 *
 * For every run in RUNSFILE and each of its streams PREFIX0..PREFIX<K-1>,
 * R threads each open MNT/runs/<run>/input/<stream> and read(2) it: on a
 * fresh stream the read blocks until a record comes.  A blocked read(2)
 * holds its thread, so each reader is one thread with a small stack.
 *
 * In two stages, so the orchestrator can tell what a stream costs from
 * what a parked reader costs: first one reader per stream ("stage1" on
 * stdout), then, after a line on stdin, the other R-1 ("stage2").  When
 * every reader has returned, one JSON line: how many got data, how many
 * failed, and when the last one returned (CLOCK_MONOTONIC ns).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define READER_STACK (64 * 1024)

/* Counts returned readers; they close their files once all have. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t returned, total;
} gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };

struct reader {
	pthread_t tid;
	const char *path;
	int64_t done_ns;
	int err;                /* errno, or EIO for an unexpected EOF */
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	char buf[512];
	ssize_t n = -1;
	int fd = open(r->path, O_RDONLY);

	/* A read parked past the kernel's FUSE request timeout is answered
	 * EINTR, to be retried as libc and shells do. */
	if (fd >= 0)
		while ((n = read(fd, buf, sizeof(buf))) < 0 && errno == EINTR)
			;
	r->done_ns = bench_now_ns();
	r->err = n > 0 ? 0 : n == 0 ? EIO : errno;
	pthread_mutex_lock(&gate.lock);
	if (++gate.returned == gate.total)
		pthread_cond_broadcast(&gate.cond);
	while (gate.returned < gate.total)
		pthread_cond_wait(&gate.cond, &gate.lock);
	pthread_mutex_unlock(&gate.lock);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static void start_readers(struct reader *r, size_t n, char **paths,
			  size_t npaths, const pthread_attr_t *attr)
{
	for (size_t i = 0; i < n; i++) {
		int rc;

		r[i].path = paths[i % npaths];
		rc = pthread_create(&r[i].tid, attr, reader_main, &r[i]);
		if (rc)
			bench_die("bench-waiters: thread %zu: %s", i, strerror(rc));
	}
}

static char **stream_paths(const char *mnt, const char *runsfile, size_t k,
			   const char *prefix, size_t *n)
{
	size_t nruns;
	char **runs = bench_read_lines(runsfile, &nruns);
	char **paths = calloc(nruns * k, sizeof(*paths));

	if (!paths)
		bench_die("out of memory");
	for (size_t i = 0; i < nruns * k; i++)
		if (asprintf(&paths[i], "%s/runs/%s/input/%s%zu", mnt,
			     runs[i / k], prefix, i % k) < 0)
			bench_die("out of memory");
	bench_free_lines(runs, nruns);
	*n = nruns * k;
	return paths;
}

static void report(const struct reader *r, size_t n)
{
	size_t ok = 0, failed = 0;
	int64_t last = 0;
	int first_err = 0;

	for (size_t i = 0; i < n; i++) {
		if (r[i].err) {
			failed++;
			first_err = first_err ? first_err : r[i].err;
		} else
			ok++;
		last = r[i].done_ns > last ? r[i].done_ns : last;
	}
	printf("{\"readers\":%zu,\"ok\":%zu,\"failed\":%zu,\"first_error\":\"%s\","
	       "\"last_ns\":%lld}\n", n, ok, failed,
	       first_err ? strerror(first_err) : "", (long long)last);
}

int main(int argc, char **argv)
{
	size_t k, per, nstreams, n;
	char **paths, line[64];
	struct reader *r;
	pthread_attr_t attr;

	if (argc != 6) {
		fputs("usage: bench-waiters MNT RUNSFILE K R PREFIX\n", stderr);
		return 64;
	}
	k = strtoul(argv[3], NULL, 10);
	per = strtoul(argv[4], NULL, 10);
	if (!k || !per)
		bench_die("bench-waiters: K and R must be positive");
	bench_raise_nofile();
	paths = stream_paths(argv[1], argv[2], k, argv[5], &nstreams);
	n = nstreams * per;
	gate.total = n;
	r = calloc(n, sizeof(*r));
	if (!r)
		bench_die("out of memory");
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, READER_STACK);

	start_readers(r, nstreams, paths, nstreams, &attr);
	printf("stage1 %zu\n", nstreams);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		line[0] = '\0';         /* EOF: go on all the same */
	start_readers(r + nstreams, n - nstreams, paths, nstreams, &attr);
	printf("stage2 %zu\n", n);
	fflush(stdout);

	for (size_t i = 0; i < n; i++)
		pthread_join(r[i].tid, NULL);
	report(r, n);
	pthread_attr_destroy(&attr);
	bench_free_lines(paths, nstreams);
	free(r);
	return 0;
}
