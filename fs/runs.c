/*
 * Runs: whether a run id exists (asked of the API, answers cached), whether
 * it has finished (learned from sends and by polling the run while someone
 * waits on it), and the listing of runs/.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "triggerfs.h"

#define MISSING_TTL 2.0      /* seconds an unknown run stays unknown */
#define POLL_INTERVAL 2.0    /* seconds between status polls of a waited run */
/* Polls a minute, all runs together: a public token may make 60 requests a
 * minute under /api/ (lookups need some too); a key's tokens are per run,
 * its environment allows 1,500. */
#define POLLS_TOKEN 30.0
#define POLLS_KEY 1000.0
#define NOT_FOUND_POLLS 3    /* a waited run unknown this often: gone */
#define LIST_PAGE 100
#define LIST_MAX 1000        /* runs listed at most */

static const char *const finished_states[] = {
	"COMPLETED", "CANCELED", "FAILED", "CRASHED", "SYSTEM_FAILURE",
	"TIMED_OUT", "EXPIRED", "INTERRUPTED", NULL
};

struct tfs_lookup {
	struct list node;
	fuse_req_t req;
};

static bool status_finished(const json_t *run)
{
	json_t *done = json_object_get(run, "isCompleted");
	const char *st = json_string_value(json_object_get(run, "status"));

	if (json_is_true(done))
		return true;
	for (size_t i = 0; st && finished_states[i]; i++)
		if (!strcmp(st, finished_states[i]))
			return true;
	return false;
}

/* Called with tfs.lock held. */
void runs_finished(struct tfs_run *run, const char *why)
{
	if (run->finished)
		return;
	run->finished = true;
	tfs_log(LOG_INFO, "run %s has finished (%s): readers get end of file",
		run->id, why);
	for (struct tfs_stream *s = run->streams; s; s = s->next)
		stream_run_finished(s);
}

/* Called with tfs.lock held with a run object from the API: whether the
 * run has finished, and then its final status. */
void runs_learned(struct tfs_run *run, const json_t *body)
{
	const char *st = json_string_value(json_object_get(body, "status"));

	if (!status_finished(body))
		return;
	if (st && !run->final_status)
		run->final_status = xstrdup(st);
	runs_finished(run, st ? st : "isCompleted");
}

/* The API's answer decides; a credential that may write to the run but not
 * read it cannot ask, so it is taken at its word. */
static int check_result(struct tfs_run *run, const struct trigger_result *res)
{
	char why[320];

	switch (res->code) {
	case TRIGGER_OK:
		run->state = RUN_EXISTS;
		runs_learned(run, res->body);
		return 0;
	case TRIGGER_E_NOT_FOUND:
		run->state = RUN_MISSING;
		tfs_log(LOG_ERR, "run %s: not found (%s)", run->id,
			trigger_result_text(res, why, sizeof(why)));
		return tfs_errno(res->code);
	case TRIGGER_E_FORBIDDEN:
	case TRIGGER_E_UNAUTHORIZED:
		if (trigger_cred_allows(tfs.cred, "write", "inputStreams", run->id)) {
			run->state = RUN_EXISTS;
			return 0;
		}
		/* fall through */
	default:
		run->state = RUN_UNKNOWN;
		tfs_log(LOG_ERR, "run %s: cannot look it up: %s (%s)",
			run->id, trigger_strerror(res->code),
			trigger_result_text(res, why, sizeof(why)));
		return tfs_errno(res->code);
	}
}

static void check_done(void *arg, const struct trigger_result *res)
{
	struct tfs_run *run = arg;

	pthread_mutex_lock(&tfs.lock);
	run->checked_at = tfs_now();
	int err = check_result(run, res);

	while (!list_empty(&run->lookups)) {
		struct tfs_lookup *l = list_entry(run->lookups.next,
						  struct tfs_lookup, node);

		list_del(&l->node);
		if (err)
			fuse_reply_err(l->req, err);
		else
			tree_reply_entry(l->req, run->ino_dir, 1.0);
		free(l);
	}
	pthread_mutex_unlock(&tfs.lock);
}

void runs_lookup(fuse_req_t req, const char *id)
{
	int err = 0;

	pthread_mutex_lock(&tfs.lock);
	struct tfs_run *run = tree_run(id, true);

	if (run->state == RUN_EXISTS) {
		tree_reply_entry(req, run->ino_dir, 1.0);
		goto out;
	}
	if (run->state == RUN_MISSING && tfs_now() - run->checked_at < MISSING_TTL) {
		fuse_reply_err(req, ENOENT);
		goto out;
	}
	struct tfs_lookup *l = xcalloc(1, sizeof(*l));
	l->req = req;
	list_add_tail(&run->lookups, &l->node);
	if (run->state != RUN_CHECKING) {
		run->state = RUN_CHECKING;
		err = trigger_run_get(tfs.client, id, check_done, run);
	}
	if (err) {
		struct trigger_result res = { .code = err };

		snprintf(res.error, sizeof(res.error), "%s", trigger_strerror(err));
		pthread_mutex_unlock(&tfs.lock);
		check_done(run, &res);
		return;
	}
out:
	pthread_mutex_unlock(&tfs.lock);
}

/* ---- polling runs that someone waits on -------------------------------- */

static size_t nwaited;        /* runs in tfs.waited_runs */

/* A 404 may be a replica behind (the client retried it a while already):
 * only one repeated over several polls means the run is gone. */
static void poll_done(void *arg, const struct trigger_result *res)
{
	struct tfs_run *run = arg;

	pthread_mutex_lock(&tfs.lock);
	run->polling = false;
	run->not_found_polls = res->code == TRIGGER_E_NOT_FOUND ?
			       run->not_found_polls + 1 : 0;
	if (res->code == TRIGGER_OK)
		runs_learned(run, res->body);
	else if (run->not_found_polls >= NOT_FOUND_POLLS)
		runs_finished(run, "no longer known to the API");
	pthread_mutex_unlock(&tfs.lock);
}

/* Seconds between polls of one run, so that all of them stay within the
 * credential's rate limit however many runs are waited on. */
static double poll_interval(void)
{
	double per_min = trigger_cred_is_secret(tfs.cred) ? POLLS_KEY : POLLS_TOKEN;
	double spread = (double)nwaited * 60.0 / per_min;

	return spread > POLL_INTERVAL ? spread : POLL_INTERVAL;
}

static void poll_run(struct tfs_run *run, double now)
{
	if (run->polling || run->finished || now - run->polled_at < poll_interval())
		return;
	run->polled_at = now;
	run->polling = !trigger_run_get(tfs.client, run->id, poll_done, run);
}

/* Called with tfs.lock held. */
void runs_add_waiter(struct tfs_run *run)
{
	if (run->nwaiters++ == 0) {
		nwaited++;
		list_add_tail(&tfs.waited_runs, &run->waiting);
		poll_run(run, tfs_now());
	}
}

void runs_del_waiter(struct tfs_run *run)
{
	if (--run->nwaiters == 0) {
		nwaited--;
		list_del(&run->waiting);
	}
}

/* From the watcher, with tfs.lock held. */
void runs_poll_waited(void)
{
	double now = tfs_now();

	for (struct list *p = tfs.waited_runs.next; p != &tfs.waited_runs;
	     p = p->next)
		poll_run(list_entry(p, struct tfs_run, waiting), now);
}

/* ---- listing runs/ ----------------------------------------------------- */

static const char live_states[] =
	"QUEUED,EXECUTING,WAITING,DELAYED,PENDING_VERSION,DEQUEUED";

struct run_list {
	fuse_req_t req;             /* the opendir, answered when complete */
	struct fuse_file_info fi;
	struct tfs_dirlist *dl;
};

static void list_add(struct tfs_dirlist *dl, const char *id)
{
	if (tree_valid_name(id) && !dirlist_has(dl, id))
		dirlist_add(dl, id);
}

static void add_known_run(struct tfs_run *run, void *arg)
{
	if (run->state == RUN_EXISTS)
		list_add(arg, run->id);
}

/* Runs the scopes name: read:runs:<id>, write:inputStreams:<id>. */
static void add_scoped_runs(struct tfs_dirlist *dl)
{
	static const char *const prefixes[] = {
		"read:runs:", "write:inputStreams:", NULL
	};

	for (size_t i = 0; i < trigger_cred_nscopes(tfs.cred); i++) {
		const char *sc = trigger_cred_scope(tfs.cred, i);

		for (size_t k = 0; prefixes[k]; k++) {
			size_t n = strlen(prefixes[k]);

			if (!strncmp(sc, prefixes[k], n))
				list_add(dl, sc + n);
		}
	}
}

static void list_complete(struct run_list *l)
{
	pthread_mutex_lock(&tfs.lock);
	tree_for_each_run(add_known_run, l->dl);
	pthread_mutex_unlock(&tfs.lock);
	add_scoped_runs(l->dl);
	l->fi.fh = (uintptr_t)l->dl;
	fuse_reply_open(l->req, &l->fi);
	free(l);
}

static void list_page_done(void *arg, const struct trigger_result *res)
{
	struct run_list *l = arg;
	json_t *data = json_object_get(res->body, "data");
	json_t *next = json_object_get(json_object_get(res->body, "pagination"),
				       "next");
	size_t i;
	json_t *run;
	char why[320];

	if (res->code != TRIGGER_OK)
		tfs_log(LOG_WARNING, "listing runs: %s (%s); showing the runs used here",
			trigger_strerror(res->code),
			trigger_result_text(res, why, sizeof(why)));
	json_array_foreach(data, i, run) {
		const char *id = json_string_value(json_object_get(run, "id"));

		if (id)
			list_add(l->dl, id);
	}
	if (res->code == TRIGGER_OK && json_is_string(next) &&
	    l->dl->n < LIST_MAX &&
	    !trigger_runs_list(tfs.client, live_states, LIST_PAGE,
			       json_string_value(next), list_page_done, l))
		return;
	list_complete(l);
}

/* With a secret key, runs/ shows the environment's live runs; always the
 * runs the scopes name and the runs used through this mount. */
void runs_opendir(fuse_req_t req, struct fuse_file_info *fi)
{
	struct run_list *l = xcalloc(1, sizeof(*l));

	l->dl = dirlist_new();
	l->req = req;
	l->fi = *fi;
	if (!trigger_cred_is_secret(tfs.cred) ||
	    trigger_runs_list(tfs.client, live_states, LIST_PAGE, NULL,
			      list_page_done, l))
		list_complete(l);
}
