/*
 * trigger-cli: libtriggerclient from the shell, for tests and benchmarks.
 * Credentials come from the environment only, never argv (which anyone
 * can read): TRIGGER_ACCESS_TOKEN, else TRIGGER_SECRET_KEY.  The server is
 * TRIGGER_API_URL.  A failed request prints "trigger-cli: NAME: text" and
 * exits with the trigger_code as status.  SIGINT/SIGTERM free the client:
 * unconfirmed sends end CANCELLED, a subscription CLOSED.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "trigger.h"

#define EX_USAGE 64

static const char usage_text[] =
	"usage: trigger-cli [--timeout MS] [--window N] COMMAND ...\n"
	"  send RUN STREAM          each stdin line (JSON) is one send, in order;\n"
	"                           at most N unconfirmed (default 1)\n"
	"  subscribe RUN STREAM [--after SEQ] [--count N] [--events]\n"
	"                           print SEQ<TAB>JSON per record\n"
	"  get-run RUN | list-runs [STATUS] | cancel RUN\n"
	"  trigger TASK [PAYLOAD]   print the new run's id\n"
	"  waitpoint-get ID | waitpoint-create [TIMEOUT] (print its id)\n"
	"  waitpoint-complete ID JSON | waitpoints-list [STATUS]\n"
	"  output-append RUN STREAM JSON   one record to a run's output stream\n"
	"environment: TRIGGER_ACCESS_TOKEN (a public JWT) or TRIGGER_SECRET_KEY,\n"
	"  TRIGGER_API_URL, TRIGGER_STREAM_URL, TRIGGER_PREVIEW_BRANCH,\n"
	"  TRIGGER_SSE_TIMEOUT_SECONDS (how long the server holds a\n"
	"  subscription, 1..600, default 600)\n";

static const char *const code_names[TRIGGER_E_LAST] = {
	"OK", "INVALID", "NOT_FOUND", "RUN_FINISHED", "UNAUTHORIZED",
	"FORBIDDEN", "EXPIRED", "TOO_LARGE", "CONFLICT", "SERVER", "NETWORK",
	"TIMEOUT", "PROTOCOL", "NOMEM", "CANCELLED",
};

static const char *code_name(trigger_code code)
{
	return (unsigned)code < TRIGGER_E_LAST ? code_names[code] : "UNKNOWN";
}

static int usage(void)
{
	fputs(usage_text, stderr);
	return EX_USAGE;
}

static int report(trigger_code code, long status, const char *error)
{
	fprintf(stderr, "trigger-cli: %s: %s", code_name(code),
		error && *error ? error : trigger_strerror(code));
	if (status)
		fprintf(stderr, " (HTTP %ld)", status);
	fputc('\n', stderr);
	return (int)code;
}

static int64_t token_exp;      /* of a public token, 0: none or a key */

static trigger_client *open_client(long timeout_ms)
{
	const char *tok = getenv("TRIGGER_ACCESS_TOKEN");
	const char *key = getenv("TRIGGER_SECRET_KEY");
	struct trigger_client_opts o = {
		.send_timeout_ms = timeout_ms, .request_timeout_ms = timeout_ms,
	};
	trigger_cred *cred;
	trigger_client *c;
	char err[256];

	if (tok && *tok)
		cred = trigger_cred_token(tok, err, sizeof(err));
	else if (key && *key)
		cred = trigger_cred_secret_key(key, err, sizeof(err));
	else
		snprintf(err, sizeof(err), "set TRIGGER_ACCESS_TOKEN or "
			 "TRIGGER_SECRET_KEY"), cred = NULL;
	if (!cred) {
		fprintf(stderr, "trigger-cli: credentials: %s\n", err);
		return NULL;
	}
	o.cred = cred;
	token_exp = trigger_cred_is_secret(cred) ? 0 : trigger_cred_exp(cred);
	c = trigger_client_new(&o, err, sizeof(err));
	trigger_cred_free(cred);
	if (!c)
		fprintf(stderr, "trigger-cli: %s\n", err);
	return c;
}

/* Waits for a request started with trigger_sync_done; prints the failure.
 * On success *body is the answer (the caller clears s). */
static int sync_finish(struct trigger_sync *s, int queued)
{
	if (trigger_sync_wait(s, queued) == TRIGGER_OK)
		return 0;
	return report(s->code, s->status, s->error);
}

static void print_json(const json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

	puts(text ? text : "null");
	free(text);
}

static void print_field(const json_t *j, const char *field)
{
	const char *v = json_string_value(json_object_get(j, field));

	puts(v ? v : "");
}

/* ---- waiting, signals ----------------------------------------------------- */

/* One lock and condition for everything the main thread waits on; a
 * signal (SIGINT, SIGTERM) sets interrupted, and the main thread then
 * frees the client, which completes everything pending. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int interrupted;
} cli = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };

static void *signal_thread(void *arg)
{
	int sig;

	if (sigwait(arg, &sig) == 0) {
		pthread_mutex_lock(&cli.lock);
		cli.interrupted = 1;
		pthread_cond_broadcast(&cli.cond);
		pthread_mutex_unlock(&cli.lock);
	}
	return NULL;
}

static pthread_t sig_thread;
static int sig_thread_ok;

static void catch_signals(void)
{
	static sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	sig_thread_ok = !pthread_create(&sig_thread, NULL, signal_thread, &set);
}

static void release_signals(void)
{
	if (!sig_thread_ok)
		return;
	/* Blocked everywhere: only the thread's sigwait sees it, and returns. */
	pthread_kill(sig_thread, SIGTERM);  // NOLINT(bugprone-bad-signal-to-kill-thread)
	pthread_join(sig_thread, NULL);
}

static void cli_wake(void)
{
	pthread_cond_broadcast(&cli.cond);
	pthread_mutex_unlock(&cli.lock);
}

/* ---- send ---------------------------------------------------------------- */

static struct {
	long inflight, ok, failed;
	trigger_code code;              /* of the first failure */
	long status;
	char error[256];
} sends;

static int valid_json(const char *s, size_t len)
{
	json_t *j = json_loadb(s, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL |
			       JSON_ALLOW_NUL, NULL);

	json_decref(j);
	return j != NULL;
}

/* Under cli.lock. */
static void send_failed(trigger_code code, long status, const char *error)
{
	if (sends.failed++)
		return;
	sends.code = code;
	sends.status = status;
	snprintf(sends.error, sizeof(sends.error), "%s", error);
}

static void on_sent(void *arg, const struct trigger_result *res)
{
	(void)arg;
	pthread_mutex_lock(&cli.lock);
	sends.inflight--;
	if (res->code)
		send_failed(res->code, res->status, res->error);
	else
		sends.ok++;
	cli_wake();
}

/* Waits for a free slot in the window; returns 0 when sending must stop. */
static int send_slot(long window)
{
	int go;

	pthread_mutex_lock(&cli.lock);
	while (!cli.interrupted && !sends.failed && sends.inflight >= window)
		pthread_cond_wait(&cli.cond, &cli.lock);
	go = !cli.interrupted && !sends.failed;
	sends.inflight += go;
	pthread_mutex_unlock(&cli.lock);
	return go;
}

static int send_one(trigger_client *c, char **argv, const char *line,
		    size_t len, size_t lineno)
{
	char msg[64];
	int q;

	if (!valid_json(line, len)) {
		snprintf(msg, sizeof(msg), "line %zu is not one JSON value", lineno);
		q = TRIGGER_E_INVALID;
	} else {
		q = trigger_send(c, argv[0], argv[1], line, len, on_sent, NULL);
		snprintf(msg, sizeof(msg), "%s", trigger_strerror(q));
	}
	if (q) {
		pthread_mutex_lock(&cli.lock);
		sends.inflight--;
		send_failed(q, 0, msg);
		pthread_mutex_unlock(&cli.lock);
	}
	return q;
}

/* Each stdin line is one send; at most `window` unconfirmed at a time
 * (1: each waits for the previous).  The client keeps them in order. */
static void cmd_send(trigger_client *c, char **argv, long window)
{
	size_t cap = 0, lineno = 0;
	char *line = NULL;
	ssize_t len;

	while ((len = getline(&line, &cap, stdin)) >= 0) {
		lineno++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (len && (!send_slot(window) ||
			    send_one(c, argv, line, (size_t)len, lineno)))
			break;
	}
	free(line);
	pthread_mutex_lock(&cli.lock);
	while (!cli.interrupted && sends.inflight > 0)
		pthread_cond_wait(&cli.cond, &cli.lock);
	pthread_mutex_unlock(&cli.lock);
}

/* After the client is freed: everything has completed. */
static int send_result(void)
{
	char msg[300];

	if (sends.failed && sends.code != TRIGGER_E_CANCELLED)
		return report(sends.code, sends.status, sends.error);
	if (sends.failed || cli.interrupted) {
		snprintf(msg, sizeof(msg), "%ld sends not confirmed, %ld confirmed",
			 sends.failed, sends.ok);
		return report(TRIGGER_E_CANCELLED, 0, msg);
	}
	return 0;
}

/* ---- subscribe ------------------------------------------------------------ */

static struct {
	long long count, max;   /* max 0: forever */
	int events, closed, failed;
	trigger_code code;
} sub_st;

static void on_record(void *arg, const struct trigger_record *rec)
{
	(void)arg;
	pthread_mutex_lock(&cli.lock);
	if (!sub_st.max || sub_st.count < sub_st.max) {
		printf("%lld\t%.*s\n", rec->seq, (int)rec->json_len, rec->json);
		fflush(stdout);
		sub_st.count++;
	}
	cli_wake();
}

static void on_event(void *arg, enum trigger_sub_event ev,
		     const struct trigger_result *res)
{
	static const char *const names[] = {
		"caught-up", "reconnecting", "connected", "failed", "closed",
	};

	(void)arg;
	pthread_mutex_lock(&cli.lock);
	if (sub_st.events) {
		printf("#%s", names[ev]);
		if (res && res->code)
			printf(" %s %s", code_name(res->code), res->error);
		putchar('\n');
		fflush(stdout);
	}
	if (ev == TRIGGER_SUB_FAILED && res) {
		sub_st.failed = 1;
		sub_st.code = res->code;
		report(res->code, res->status, res->error);
	}
	if (ev == TRIGGER_SUB_CLOSED)
		sub_st.closed = 1;
	cli_wake();
}

static int parse_ll(const char *s, long long *v)
{
	char *end;

	*v = strtoll(s, &end, 10);
	return *s && !*end;
}

/* Until N records, a failure or a signal. */
static int cmd_subscribe(trigger_client *c, int argc, char **argv)
{
	static const struct trigger_sub_callbacks cb = { on_record, on_event };
	long long after = -1;
	trigger_sub *sub;

	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--events"))
			sub_st.events = 1;
		else if (!strcmp(argv[i], "--after") && i + 1 < argc)
			i += !parse_ll(argv[i + 1], &after) ? argc : 1;
		else if (!strcmp(argv[i], "--count") && i + 1 < argc)
			i += !parse_ll(argv[i + 1], &sub_st.max) ? argc : 1;
		else
			return usage();
	}
	sub = trigger_subscribe(c, argv[0], argv[1], after, &cb, NULL);
	if (!sub && token_exp && token_exp <= (int64_t)time(NULL))
		return report(TRIGGER_E_EXPIRED, 0, "access token has expired");
	if (!sub)
		return report(TRIGGER_E_INVALID, 0, "subscription refused");
	pthread_mutex_lock(&cli.lock);
	while (!cli.interrupted && !sub_st.closed &&
	       (!sub_st.max || sub_st.count < sub_st.max))
		pthread_cond_wait(&cli.cond, &cli.lock);
	if (!cli.interrupted && !sub_st.closed) {
		pthread_mutex_unlock(&cli.lock);
		trigger_unsubscribe(sub);
		pthread_mutex_lock(&cli.lock);
		while (!cli.interrupted && !sub_st.closed)
			pthread_cond_wait(&cli.cond, &cli.lock);
	}
	pthread_mutex_unlock(&cli.lock);
	return sub_st.failed ? (int)sub_st.code : 0;
}

/* ---- one-shot requests ---------------------------------------------------- */

static int cmd_oneshot(trigger_client *c, const char *cmd, int argc, char **argv)
{
	struct trigger_sync s;
	int queued, rc;

	trigger_sync_init(&s);
	if (!strcmp(cmd, "get-run") && argc == 1)
		queued = trigger_run_get(c, argv[0], trigger_sync_done, &s);
	else if (!strcmp(cmd, "list-runs") && argc <= 1)
		queued = trigger_runs_list(c, argc ? argv[0] : NULL, 25, NULL,
					   trigger_sync_done, &s);
	else if (!strcmp(cmd, "trigger") && (argc == 1 || argc == 2))
		queued = trigger_task_trigger(c, argv[0], argc == 2 ? argv[1] : "{}",
					      trigger_sync_done, &s);
	else if (!strcmp(cmd, "cancel") && argc == 1)
		queued = trigger_run_cancel(c, argv[0], trigger_sync_done, &s);
	else if (!strcmp(cmd, "waitpoint-get") && argc == 1)
		queued = trigger_waitpoint_get(c, argv[0], trigger_sync_done, &s);
	else if (!strcmp(cmd, "waitpoint-create") && argc <= 1)
		queued = trigger_waitpoint_create(c, argc ? argv[0] : NULL,
						  trigger_sync_done, &s);
	else if (!strcmp(cmd, "waitpoint-complete") && argc == 2)
		queued = trigger_waitpoint_complete(c, argv[0], argv[1],
						    strlen(argv[1]),
						    trigger_sync_done, &s);
	else if (!strcmp(cmd, "waitpoints-list") && argc <= 1)
		queued = trigger_waitpoints_list(c, argc ? argv[0] : NULL, NULL,
						 trigger_sync_done, &s);
	else if (!strcmp(cmd, "output-append") && argc == 3)
		queued = trigger_output_append(c, argv[0], argv[1], argv[2],
					       strlen(argv[2]), 0,
					       trigger_sync_done, &s);
	else {
		trigger_sync_clear(&s);
		return usage();
	}
	rc = sync_finish(&s, queued);
	if (!rc && !strcmp(cmd, "trigger"))
		print_field(s.body, "id");
	else if (!rc && !strcmp(cmd, "waitpoint-create"))
		print_field(s.body, "id");
	else if (!rc && strcmp(cmd, "cancel") != 0)
		print_json(s.body);
	trigger_sync_clear(&s);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "window", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	long timeout_ms = 0, window = 1;
	trigger_client *c;
	const char *cmd;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "+t:w:h", opts, NULL)) != -1) {
		if (opt == 't')
			timeout_ms = strtol(optarg, NULL, 10);
		else if (opt == 'w' && (window = strtol(optarg, NULL, 10)) > 0)
			continue;
		else
			return usage();
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		return usage();
	cmd = argv[0];
	argc--;
	argv++;
	if ((!strcmp(cmd, "send") && argc != 2) ||
	    (!strcmp(cmd, "subscribe") && argc < 2))
		return usage();
	if (!strcmp(cmd, "send") || !strcmp(cmd, "subscribe"))
		catch_signals();        /* one-shots simply die: nothing to lose */
	c = open_client(timeout_ms);
	if (!c)
		return TRIGGER_E_INVALID;
	rc = 0;
	if (!strcmp(cmd, "send"))
		cmd_send(c, argv, window);
	else if (!strcmp(cmd, "subscribe"))
		rc = cmd_subscribe(c, argc, argv);
	else
		rc = cmd_oneshot(c, cmd, argc, argv);
	trigger_client_free(c);         /* what is pending completes CANCELLED */
	if (!strcmp(cmd, "send"))
		rc = send_result();
	release_signals();
	return rc;
}
