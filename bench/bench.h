/*
 * Shared by the scripts/bench helpers.  Times are CLOCK_MONOTONIC in
 * nanoseconds: the same clock as Python's time.monotonic_ns() and Node's
 * process.hrtime.bigint(), so the orchestrator can subtract a time taken
 * in one helper from a time taken in another.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

static inline int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_die(const char *fmt, ...)
	__attribute__((noreturn, format(printf, 1, 2)));

/* Thousands of readers or sockets need thousands of descriptors. */
void bench_raise_nofile(void);

/* CPU time this process has used, user + system, in seconds. */
double bench_cpu_s(void);

/* The non-empty lines of a file, without their newlines; exits on failure. */
char **bench_read_lines(const char *path, size_t *n);
void bench_free_lines(char **v, size_t n);

#endif
