/*
 * bench-direct: the floor of scripts/bench.  The work triggerfs does for a
 * shell, done straight on libtriggerclient with no FUSE and no process in
 * between: each send is started from the completion callback of the one
 * before it, and records are taken in the subscription callback.
 *
 * Credentials and server come from the environment (TRIGGER_API_URL,
 * TRIGGER_SECRET_KEY), never argv.  Results are one JSON line on stdout;
 * times are CLOCK_MONOTONIC nanoseconds (see bench.h).
 *
 *   send FILE RUN STREAM...       each stream gets every line of FILE,
 *                                 sequentially; the streams in parallel
 *   output-send FILE RUN STREAM   every line of FILE appended to the
 *                                 run's output stream, all submitted at
 *                                 once (the client batches them)
 *   latency RUN STREAM N          N round trips: send one record, wait
 *                                 until the subscription has it
 *   output-latency RUN STREAM N   the same on the run's output stream
 *   runs N                        trigger N runs, print their ids
 *   waiters RUNS K R PREFIX       subscribe to streams PREFIX0..K-1 of
 *                                 every run in file RUNS, R waiters each;
 *                                 print "ready" once all caught up, then
 *                                 the time the last waiter was released
 *   release RUNS K PREFIX [R]     send R records (default 1) to each of
 *                                 those streams at once: input/S is a
 *                                 consumer's view, one record per reader,
 *                                 so R readers of a stream need R records
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "trigger.h"

#define EX_USAGE 64

static trigger_client *client_from_env(void)
{
	const char *key = getenv("TRIGGER_SECRET_KEY");
	struct trigger_client_opts o = { 0 };
	trigger_cred *cred;
	trigger_client *c;
	char err[256];

	if (!key || !*key)
		bench_die("bench-direct: set TRIGGER_SECRET_KEY");
	cred = trigger_cred_secret_key(key, err, sizeof(err));
	if (!cred)
		bench_die("bench-direct: %s", err);
	o.cred = cred;
	c = trigger_client_new(&o, err, sizeof(err));
	trigger_cred_free(cred);
	if (!c)
		bench_die("bench-direct: %s", err);
	return c;
}

/* ---- a countdown the event thread counts and main waits on ----------- */

struct latch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	long pending;
	trigger_code code;      /* first failure */
	char error[320];
};

static void latch_init(struct latch *l, long n)
{
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	l->pending = n;
	l->code = TRIGGER_OK;
	l->error[0] = '\0';
}

/* One unit done; res NULL or OK is success. */
static void latch_count(struct latch *l, const struct trigger_result *res)
{
	pthread_mutex_lock(&l->lock);
	if (res && res->code != TRIGGER_OK && l->code == TRIGGER_OK) {
		l->code = res->code;
		snprintf(l->error, sizeof(l->error), "%s (HTTP %ld)",
			 res->error[0] ? res->error : trigger_strerror(res->code),
			 res->status);
	}
	if (--l->pending == 0)
		pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

static void latch_wait(struct latch *l, const char *what)
{
	pthread_mutex_lock(&l->lock);
	while (l->pending > 0)
		pthread_cond_wait(&l->cond, &l->lock);
	pthread_mutex_unlock(&l->lock);
	if (l->code != TRIGGER_OK)
		bench_die("bench-direct: %s: %s", what, l->error);
}

static void count_done(void *arg, const struct trigger_result *res)
{
	latch_count(arg, res);
}

static void queued_or_die(int rc, const char *what)
{
	if (rc)
		bench_die("bench-direct: %s refused: %s", what,
			  trigger_strerror((trigger_code)rc));
}

/* ---- send: sequential per stream, streams in parallel ------------------ */

struct chain {
	trigger_client *c;
	const char *run, *stream;
	char **lines;
	size_t n, next;
	struct latch *latch;
};

static void chain_step(struct chain *ch);

static void chain_done(void *arg, const struct trigger_result *res)
{
	struct chain *ch = arg;

	if (res->code != TRIGGER_OK || ch->next == ch->n)
		latch_count(ch->latch, res);
	else
		chain_step(ch);
}

static void chain_step(struct chain *ch)
{
	const char *line = ch->lines[ch->next++];

	queued_or_die(trigger_send(ch->c, ch->run, ch->stream, line,
				   strlen(line), chain_done, ch), "send");
}

static int cmd_send(trigger_client *c, int argc, char **argv)
{
	size_t n, nstreams = (size_t)argc - 2;
	char **lines = bench_read_lines(argv[0], &n);
	struct chain *ch = calloc(nstreams, sizeof(*ch));
	struct latch latch;
	double cpu0 = bench_cpu_s();
	int64_t t0 = bench_now_ns();

	if (!ch)
		bench_die("out of memory");
	latch_init(&latch, (long)nstreams);
	for (size_t i = 0; i < nstreams; i++) {
		ch[i] = (struct chain){ c, argv[1], argv[2 + i], lines, n, 0, &latch };
		chain_step(&ch[i]);
	}
	latch_wait(&latch, "send");
	printf("{\"records\":%zu,\"seconds\":%.6f,\"cpu_s\":%.6f}\n", n * nstreams,
	       (double)(bench_now_ns() - t0) / 1e9, bench_cpu_s() - cpu0);
	free(ch);
	bench_free_lines(lines, n);
	return 0;
}

/* ---- output-send: every line appended at once ---------------------------- */

static int cmd_output_send(trigger_client *c, char **argv)
{
	size_t n;
	char **lines = bench_read_lines(argv[0], &n);
	struct latch latch;
	double cpu0 = bench_cpu_s();
	int64_t t0 = bench_now_ns();

	latch_init(&latch, (long)n);
	for (size_t i = 0; i < n; i++)
		queued_or_die(trigger_output_append(c, argv[1], argv[2], lines[i],
						    strlen(lines[i]), i == 0,
						    count_done, &latch), "append");
	latch_wait(&latch, "output-send");
	printf("{\"records\":%zu,\"seconds\":%.6f,\"cpu_s\":%.6f}\n", n,
	       (double)(bench_now_ns() - t0) / 1e9, bench_cpu_s() - cpu0);
	bench_free_lines(lines, n);
	return 0;
}

/* ---- latency: one record at a time, send to subscription callback ------ */

struct roundtrip {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	long long got;          /* records seen */
	int64_t got_ns;         /* when the last one arrived */
	int caught_up, sent, failed, closed;
	trigger_code code;
};

static void rt_signal(struct roundtrip *rt)
{
	pthread_cond_broadcast(&rt->cond);
	pthread_mutex_unlock(&rt->lock);
}

static void rt_record(void *arg, const struct trigger_record *rec)
{
	struct roundtrip *rt = arg;
	int64_t now = bench_now_ns();

	(void)rec;
	pthread_mutex_lock(&rt->lock);
	rt->got++;
	rt->got_ns = now;
	rt_signal(rt);
}

static void rt_event(void *arg, enum trigger_sub_event ev,
		     const struct trigger_result *res)
{
	struct roundtrip *rt = arg;

	pthread_mutex_lock(&rt->lock);
	if (ev == TRIGGER_SUB_CAUGHT_UP)
		rt->caught_up = 1;
	else if (ev == TRIGGER_SUB_CLOSED)
		rt->closed = 1;
	if (ev == TRIGGER_SUB_FAILED || (ev == TRIGGER_SUB_CLOSED && !rt->failed)) {
		rt->failed = 1;
		rt->code = res ? res->code : TRIGGER_E_CANCELLED;
	}
	rt_signal(rt);
}

static void rt_sent(void *arg, const struct trigger_result *res)
{
	struct roundtrip *rt = arg;

	pthread_mutex_lock(&rt->lock);
	rt->sent = 1;
	if (res->code != TRIGGER_OK) {
		rt->failed = 1;
		rt->code = res->code;
	}
	rt_signal(rt);
}

/* Waits until the subscription has seen `want` records and the send is
 * done (or caught up, when want < 0); returns the arrival time. */
static int64_t rt_wait(struct roundtrip *rt, long long want)
{
	int64_t at;

	pthread_mutex_lock(&rt->lock);
	while (!rt->failed && (want < 0 ? !rt->caught_up
					: rt->got < want || !rt->sent))
		pthread_cond_wait(&rt->cond, &rt->lock);
	at = rt->got_ns;
	rt->sent = 0;
	pthread_mutex_unlock(&rt->lock);
	if (rt->failed)
		bench_die("bench-direct: latency: %s", trigger_strerror(rt->code));
	return at;
}

/* On an input stream (send, subscribe) or an output stream (append,
 * subscribe to the output). */
static int cmd_latency(trigger_client *c, char **argv, int output)
{
	static const struct trigger_sub_callbacks cb = { rt_record, rt_event };
	struct roundtrip rt = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
				0, 0, 0, 0, 0, 0, TRIGGER_OK };
	long n = strtol(argv[2], NULL, 10);
	trigger_sub *sub = (output ? trigger_subscribe_output : trigger_subscribe)(
		c, argv[0], argv[1], -1, &cb, &rt);
	long long base;
	char rec[64];

	if (!sub)
		bench_die("bench-direct: subscription refused");
	rt_wait(&rt, -1);
	base = rt.got;
	printf("{\"samples_ns\":[");
	for (long i = 0; i < n; i++) {
		int len = snprintf(rec, sizeof(rec), "{\"i\":%ld,\"via\":\"direct\"}", i);
		int64_t t0 = bench_now_ns();

		queued_or_die(output ? trigger_output_append(c, argv[0], argv[1], rec,
							     (size_t)len, 0, rt_sent, &rt)
				     : trigger_send(c, argv[0], argv[1], rec, (size_t)len,
						    rt_sent, &rt), "send");
		printf("%s%lld", i ? "," : "",
		       (long long)(rt_wait(&rt, base + i + 1) - t0));
	}
	printf("]}\n");
	/* rt lives on this stack: wait for the subscription's last callback. */
	trigger_unsubscribe(sub);
	pthread_mutex_lock(&rt.lock);
	while (!rt.closed)
		pthread_cond_wait(&rt.cond, &rt.lock);
	pthread_mutex_unlock(&rt.lock);
	return 0;
}

/* ---- runs: trigger N runs at once ------------------------------------- */

struct trigger_req {
	struct latch *latch;
	char id[128];
};

static void run_done(void *arg, const struct trigger_result *res)
{
	struct trigger_req *r = arg;
	const char *id = json_string_value(json_object_get(res->body, "id"));

	if (res->code == TRIGGER_OK && id)
		snprintf(r->id, sizeof(r->id), "%s", id);
	latch_count(r->latch, res);
}

static int cmd_runs(trigger_client *c, char **argv)
{
	long n = strtol(argv[0], NULL, 10);
	struct trigger_req *r = calloc((size_t)n, sizeof(*r));
	struct latch latch;

	if (!r)
		bench_die("out of memory");
	latch_init(&latch, n);
	for (long i = 0; i < n; i++) {
		r[i].latch = &latch;
		queued_or_die(trigger_task_trigger(c, "bench", "{}", run_done, &r[i]),
			      "trigger");
	}
	latch_wait(&latch, "trigger");
	for (long i = 0; i < n; i++)
		puts(r[i].id);
	free(r);
	return 0;
}

/* ---- waiters / release: many streams at once -------------------------- */

/* The streams PREFIX0..K-1 of every run listed in a file. */
struct fleet {
	char **runs;
	size_t nruns, k;
	const char *prefix;
};

static void fleet_load(struct fleet *f, char **argv)
{
	f->runs = bench_read_lines(argv[0], &f->nruns);
	f->k = (size_t)strtoul(argv[1], NULL, 10);
	f->prefix = argv[2];
}

static void fleet_free(struct fleet *f)
{
	bench_free_lines(f->runs, f->nruns);
}

static void fleet_stream(const struct fleet *f, size_t i, char *buf, size_t len)
{
	snprintf(buf, len, "%s%zu", f->prefix, i % f->k);
}

/* One subscription stands for `want` readers of its stream, each released
 * by a record of its own, as triggerfs's input/S hands each record to one
 * reader: the stream's readers are all released at its want-th record. */
struct watch {
	struct latch *ready, *released, *closed;
	trigger_sub *sub;
	long want, got;
	int caught_up;
};

static void watch_record(void *arg, const struct trigger_record *rec)
{
	struct watch *w = arg;

	(void)rec;
	if (++w->got == w->want)
		latch_count(w->released, NULL);
}

static void watch_event(void *arg, enum trigger_sub_event ev,
			const struct trigger_result *res)
{
	struct watch *w = arg;

	if (ev == TRIGGER_SUB_CAUGHT_UP && !w->caught_up++)
		latch_count(w->ready, NULL);
	else if (ev == TRIGGER_SUB_FAILED)
		bench_die("bench-direct: subscription failed: %s", res->error);
	else if (ev == TRIGGER_SUB_CLOSED)
		latch_count(w->closed, NULL);
}

static int cmd_waiters(trigger_client *c, char **argv)
{
	static const struct trigger_sub_callbacks cb = { watch_record, watch_event };
	long per = strtol(argv[2], NULL, 10);
	struct fleet f;
	struct latch ready, released, closed;
	size_t n;
	struct watch *w;
	char name[256];

	fleet_load(&f, (char *[]){ argv[0], argv[1], argv[3] });
	n = f.nruns * f.k;
	w = calloc(n, sizeof(*w));
	if (!w)
		bench_die("out of memory");
	latch_init(&ready, (long)n);
	latch_init(&released, (long)n);
	latch_init(&closed, (long)n);
	for (size_t i = 0; i < n; i++) {
		w[i] = (struct watch){ &ready, &released, &closed, NULL, per, 0, 0 };
		fleet_stream(&f, i, name, sizeof(name));
		w[i].sub = trigger_subscribe(c, f.runs[i / f.k], name, -1, &cb, &w[i]);
		if (!w[i].sub)
			bench_die("bench-direct: subscription refused");
	}
	latch_wait(&ready, "subscribe");
	printf("ready\n");
	fflush(stdout);
	latch_wait(&released, "wait");
	printf("{\"released\":%ld,\"last_ns\":%lld,\"cpu_s\":%.6f}\n",
	       (long)n * per, (long long)bench_now_ns(), bench_cpu_s());
	fflush(stdout);
	/* The callbacks use w until each subscription's CLOSED. */
	for (size_t i = 0; i < n; i++)
		trigger_unsubscribe(w[i].sub);
	latch_wait(&closed, "unsubscribe");
	free(w);
	fleet_free(&f);
	return 0;
}

static int cmd_release(trigger_client *c, char **argv)
{
	struct fleet f;
	struct latch sent;
	size_t n, per = argv[3] ? strtoul(argv[3], NULL, 10) : 1;
	char name[256];
	int64_t t0;

	if (!per)
		bench_die("bench-direct: R must be positive");
	fleet_load(&f, argv);
	n = f.nruns * f.k * per;
	latch_init(&sent, (long)n);
	t0 = bench_now_ns();
	for (size_t i = 0; i < n; i++) {
		fleet_stream(&f, i / per, name, sizeof(name));
		queued_or_die(trigger_send(c, f.runs[i / per / f.k], name,
					   "{\"release\":true}", 16, count_done,
					   &sent), "send");
	}
	latch_wait(&sent, "release");
	printf("{\"sent\":%zu,\"start_ns\":%lld,\"end_ns\":%lld}\n", n,
	       (long long)t0, (long long)bench_now_ns());
	fleet_free(&f);
	return 0;
}

static int usage(void)
{
	fputs("usage: bench-direct send FILE RUN STREAM... | latency RUN STREAM N"
	      " | runs N\n"
	      "       | output-send FILE RUN STREAM | output-latency RUN STREAM N\n"
	      "       | waiters RUNSFILE K R PREFIX | release RUNSFILE K PREFIX [R]\n",
	      stderr);
	return EX_USAGE;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	int rc;

	argc -= 2;
	argv += 2;
	if (!((!strcmp(cmd, "send") && argc >= 3) ||
	      (!strcmp(cmd, "latency") && argc == 3) ||
	      (!strcmp(cmd, "output-latency") && argc == 3) ||
	      (!strcmp(cmd, "output-send") && argc == 3) ||
	      (!strcmp(cmd, "runs") && argc == 1) ||
	      (!strcmp(cmd, "waiters") && argc == 4) ||
	      (!strcmp(cmd, "release") && (argc == 3 || argc == 4))))
		return usage();
	bench_raise_nofile();
	trigger_client *c = client_from_env();

	if (!strcmp(cmd, "send"))
		rc = cmd_send(c, argc, argv);
	else if (!strcmp(cmd, "latency") || !strcmp(cmd, "output-latency"))
		rc = cmd_latency(c, argv, !strcmp(cmd, "output-latency"));
	else if (!strcmp(cmd, "output-send"))
		rc = cmd_output_send(c, argv);
	else if (!strcmp(cmd, "runs"))
		rc = cmd_runs(c, argv);
	else if (!strcmp(cmd, "waiters"))
		rc = cmd_waiters(c, argv);
	else
		rc = cmd_release(c, argv);
	fflush(stdout);
	trigger_client_free(c);
	return rc;
}
