/*
 * bench-fslatency: delivery latency through triggerfs with plain
 * read(2) and write(2).
 *
 *   bench-fslatency FILE STATSFILE N
 *
 * A reader thread sits in read(2) at the end of FILE (a stream's input
 * file).  N times: wait until the daemon reports the read parked (the
 * hidden STATSFILE, parked_reads), write one record to FILE through a
 * second descriptor, and time from the start of write(2) until the
 * reader's read(2) has returned the record.  One round trip first, not
 * timed, to open the stream's subscription.  Prints {"samples_ns":[...]}.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define PARK_WAIT_NS (10LL * 1000000000)

struct reader {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int fd;
	long got;               /* reads that returned data */
	int64_t got_ns;
	int err;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	char buf[4096];

	for (;;) {
		ssize_t n = read(r->fd, buf, sizeof(buf));
		int64_t now = bench_now_ns();
		int err = errno;

		/* The daemon answers a long park with EINTR: read again. */
		if (n < 0 && err == EINTR)
			continue;
		pthread_mutex_lock(&r->lock);
		if (n > 0) {
			r->got++;
			r->got_ns = now;
		} else
			r->err = n == 0 ? EIO : err;
		pthread_cond_broadcast(&r->cond);
		pthread_mutex_unlock(&r->lock);
		if (n <= 0)
			return NULL;
	}
}

/* The daemon's count of parked reads, from its hidden stats file. */
static long parked_reads(const char *stats)
{
	char buf[1024];
	int fd = open(stats, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	const char *p;

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		bench_die("bench-fslatency: %s: cannot read", stats);
	buf[n] = '\0';
	p = strstr(buf, "\"parked_reads\":");
	return p ? strtol(p + strlen("\"parked_reads\":"), NULL, 10) : -1;
}

static void wait_parked(const char *stats)
{
	int64_t deadline = bench_now_ns() + PARK_WAIT_NS;

	while (parked_reads(stats) < 1)
		if (bench_now_ns() > deadline)
			bench_die("bench-fslatency: the reader never parked");
}

/* One round trip; returns its latency. */
static int64_t round_trip(struct reader *r, int wfd, long i)
{
	char rec[64];
	int len = snprintf(rec, sizeof(rec), "{\"i\":%ld,\"via\":\"triggerfs\"}\n", i);
	int64_t t0 = bench_now_ns(), at;

	if (write(wfd, rec, (size_t)len) != len)
		bench_die("bench-fslatency: write: %s", strerror(errno));
	pthread_mutex_lock(&r->lock);
	while (!r->err && r->got < i + 1)
		pthread_cond_wait(&r->cond, &r->lock);
	at = r->got_ns;
	pthread_mutex_unlock(&r->lock);
	if (r->err)
		bench_die("bench-fslatency: read: %s", strerror(r->err));
	return at - t0;
}

int main(int argc, char **argv)
{
	struct reader r = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
			    -1, 0, 0, 0 };
	pthread_t tid;
	long n;
	int wfd;

	if (argc != 4) {
		fputs("usage: bench-fslatency FILE STATSFILE N\n", stderr);
		return 64;
	}
	n = strtol(argv[3], NULL, 10);
	r.fd = open(argv[1], O_RDONLY);
	wfd = open(argv[1], O_WRONLY);
	if (r.fd < 0 || wfd < 0)
		bench_die("bench-fslatency: %s: %s", argv[1], strerror(errno));
	if (pthread_create(&tid, NULL, reader_main, &r))
		bench_die("bench-fslatency: cannot start the reader");
	printf("{\"samples_ns\":[");
	for (long i = 0; i <= n; i++) {
		int64_t ns;

		wait_parked(argv[2]);
		ns = round_trip(&r, wfd, i);
		if (i)
			printf("%s%lld", i > 1 ? "," : "", (long long)ns);
	}
	printf("]}\n");
	fflush(stdout);
	/* The reader is parked again; the exit ends it. */
	close(wfd);
	_exit(0);
}
