/*
 * trigger-cli: libtriggerclient from the shell, for tests and benchmarks.
 * Credentials come from the environment only, never argv (which anyone
 * can read): TRIGGER_ACCESS_TOKEN, else TRIGGER_SECRET_KEY.  The server is
 * TRIGGER_API_URL.  A failed request prints "trigger-cli: NAME: text" and
 * exits with the trigger_code as status.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trigger.h"

#define EX_USAGE 64

static const char usage_text[] =
	"usage: trigger-cli [--timeout MS] COMMAND ...\n"
	"  send RUN STREAM          each stdin line (JSON) is one send, in order\n"
	"  subscribe RUN STREAM [--after SEQ] [--count N] [--events]\n"
	"                           print SEQ<TAB>JSON per record\n"
	"  get-run RUN | list-runs [STATUS] | cancel RUN\n"
	"  trigger TASK [PAYLOAD]   print the new run's id\n"
	"  wait-create RUN STREAM [TIMEOUT]   print the waitpoint id\n"
	"  waitpoint-get ID\n";

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

/* ---- send ---------------------------------------------------------------- */

static int valid_json(const char *s, size_t len)
{
	json_t *j = json_loadb(s, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL |
			       JSON_ALLOW_NUL, NULL);

	json_decref(j);
	return j != NULL;
}

static int cmd_send(trigger_client *c, char **argv)
{
	size_t cap = 0, lineno = 0;
	char *line = NULL;
	ssize_t len;
	int rc = 0;

	while (!rc && (len = getline(&line, &cap, stdin)) >= 0) {
		struct trigger_sync s;

		lineno++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (!len)
			continue;
		if (!valid_json(line, (size_t)len)) {
			fprintf(stderr, "trigger-cli: line %zu is not one JSON "
				"value\n", lineno);
			rc = TRIGGER_E_INVALID;
			break;
		}
		trigger_sync_init(&s);
		rc = sync_finish(&s, trigger_send(c, argv[0], argv[1], line,
						  (size_t)len, trigger_sync_done, &s));
		trigger_sync_clear(&s);
	}
	free(line);
	return rc;
}

/* ---- subscribe ------------------------------------------------------------ */

struct sub_state {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	long long count, max;   /* max 0: forever */
	int events, closed, failed;
	trigger_code code;
};

static void sub_signal(struct sub_state *st)
{
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static void on_record(void *arg, const struct trigger_record *rec)
{
	struct sub_state *st = arg;

	pthread_mutex_lock(&st->lock);
	if (!st->max || st->count < st->max) {
		printf("%lld\t%.*s\n", rec->seq, (int)rec->json_len, rec->json);
		fflush(stdout);
		st->count++;
	}
	sub_signal(st);
}

static void on_event(void *arg, enum trigger_sub_event ev,
		     const struct trigger_result *res)
{
	static const char *const names[] = {
		"caught-up", "reconnecting", "connected", "failed", "closed",
	};
	struct sub_state *st = arg;

	pthread_mutex_lock(&st->lock);
	if (st->events && ev != TRIGGER_SUB_CLOSED) {
		printf("#%s", names[ev]);
		if (res && res->code)
			printf(" %s %s", code_name(res->code), res->error);
		putchar('\n');
		fflush(stdout);
	}
	if (ev == TRIGGER_SUB_FAILED) {
		st->failed = 1;
		st->code = res->code;
		report(res->code, res->status, res->error);
	}
	if (ev == TRIGGER_SUB_CLOSED)
		st->closed = 1;
	sub_signal(st);
}

static int parse_ll(const char *s, long long *v)
{
	char *end;

	*v = strtoll(s, &end, 10);
	return *s && !*end;
}

static int cmd_subscribe(trigger_client *c, int argc, char **argv)
{
	static const struct trigger_sub_callbacks cb = { on_record, on_event };
	struct sub_state st = {
		PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0,
	};
	long long after = -1;
	trigger_sub *sub;

	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--events"))
			st.events = 1;
		else if (!strcmp(argv[i], "--after") && i + 1 < argc)
			i += !parse_ll(argv[i + 1], &after) ? argc : 1;
		else if (!strcmp(argv[i], "--count") && i + 1 < argc)
			i += !parse_ll(argv[i + 1], &st.max) ? argc : 1;
		else
			return usage();
	}
	sub = trigger_subscribe(c, argv[0], argv[1], after, &cb, &st);
	if (!sub)
		return report(TRIGGER_E_INVALID, 0, "subscription refused "
			      "(arguments, or an expired token)");
	pthread_mutex_lock(&st.lock);
	while (!st.failed && !st.closed && (!st.max || st.count < st.max))
		pthread_cond_wait(&st.cond, &st.lock);
	pthread_mutex_unlock(&st.lock);
	if (!st.closed)
		trigger_unsubscribe(sub);
	pthread_mutex_lock(&st.lock);
	while (!st.closed)
		pthread_cond_wait(&st.cond, &st.lock);
	pthread_mutex_unlock(&st.lock);
	return st.failed ? (int)st.code : 0;
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
	else if (!strcmp(cmd, "wait-create") && (argc == 2 || argc == 3))
		queued = trigger_wait_create(c, argv[0], argv[1],
					     argc == 3 ? argv[2] : NULL, -1,
					     trigger_sync_done, &s);
	else if (!strcmp(cmd, "waitpoint-get") && argc == 1)
		queued = trigger_waitpoint_get(c, argv[0], trigger_sync_done, &s);
	else {
		trigger_sync_clear(&s);
		return usage();
	}
	rc = sync_finish(&s, queued);
	if (!rc && !strcmp(cmd, "trigger"))
		print_field(s.body, "id");
	else if (!rc && !strcmp(cmd, "wait-create"))
		print_field(s.body, "waitpointId");
	else if (!rc && strcmp(cmd, "cancel"))
		print_json(s.body);
	trigger_sync_clear(&s);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	long timeout_ms = 0;
	trigger_client *c;
	const char *cmd;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "+t:h", opts, NULL)) != -1) {
		if (opt != 't')
			return usage();
		timeout_ms = strtol(optarg, NULL, 10);
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
	c = open_client(timeout_ms);
	if (!c)
		return TRIGGER_E_INVALID;
	if (!strcmp(cmd, "send"))
		rc = cmd_send(c, argv);
	else if (!strcmp(cmd, "subscribe"))
		rc = cmd_subscribe(c, argc, argv);
	else
		rc = cmd_oneshot(c, cmd, argc, argv);
	trigger_client_free(c);
	return rc;
}
