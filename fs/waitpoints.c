/*
 * waitpoints/<waitpointId>: a waitpoint token (wait.createToken,
 * wait.forToken, wait.completeToken).  A read returns the token's output
 * as one JSON line once it is completed, and blocks (a parked request, no
 * thread) while it waits; a timed-out token gives its error output and
 * then ETIMEDOUT.  A write of one JSON value completes it (writer.c).
 *
 * The API has no push channel for tokens, so a token someone waits on is
 * polled: one retrieve at a time per token however many readers wait,
 * spaced so that all the tokens waited on together stay within the secret
 * key's rate limit (POLL_BUDGET a second), and at once after a write
 * through this mount.  Retrieving takes a secret key; with a public token
 * the files can be written (scope write:waitpoints:<id>), not read.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "triggerfs.h"

#define POLL_INTERVAL 1.0    /* seconds between retrieves of one token */
#define POLL_BUDGET 10.0     /* retrieves a second for all tokens together */
#define MISSING_TTL 2.0
#define LIST_MAX 1000

enum wp_state { WP_UNKNOWN, WP_WAITING, WP_DONE, WP_MISSING };

struct tfs_waitpoint {
	char *id;
	struct tfs_waitpoint *next;
	fuse_ino_t ino;
	struct tfs_sink sink;
	enum wp_state state;
	bool timed_out;
	char *output;                /* DONE: the output line, '\n'-ended */
	size_t output_len;
	double checked_at;
	bool asking;                 /* a retrieve is on its way */
	bool ask_again;              /* ... and another is wanted after it */
	double polled_at;
	struct list asks;            /* struct wp_ask: lookups and opens */
	struct tfs_parkq readers;    /* struct wp_reader: parked reads */
	struct list pollers;         /* struct tfs_handle with a poll handle */
	struct list waited;          /* in `waited` while read or polled */
};

/* A lookup or an open waiting for the token's state. */
struct wp_ask {
	struct list node;
	fuse_req_t req;
	bool open;
	struct fuse_file_info fi;
};

struct wp_reader {
	struct tfs_parked p;         /* in wp->readers */
	struct tfs_handle *h;
	size_t size;
	off_t off;
};

static struct tfs_waitpoint *all;
static size_t nall;
static struct list waited = LIST_INIT(waited);
static size_t nwaited;

static void ask(struct tfs_waitpoint *wp);
static void reader_finish(struct tfs_parked *p, int err);

/* ---- the table ---------------------------------------------------------- */

static struct tfs_waitpoint *wp_get(const char *id)
{
	struct tfs_waitpoint *wp;

	for (wp = all; wp; wp = wp->next)
		if (!strcmp(wp->id, id))
			return wp;
	wp = xcalloc(1, sizeof(*wp));
	wp->id = xstrdup(id);
	list_init(&wp->asks);
	list_init(&wp->readers.reqs);
	wp->readers.finish = reader_finish;
	list_init(&wp->pollers);
	list_init(&wp->waited);
	list_init(&wp->sink.writes);
	wp->sink.kind = NODE_WAITPOINT;
	wp->sink.name = wp->id;
	wp->ino = tree_new_node(NODE_WAITPOINT, NULL, NULL);
	tree_node(wp->ino)->wp = wp;
	wp->next = all;
	all = wp;
	nall++;
	return wp;
}

static bool can_read(void)
{
	return trigger_cred_is_secret(tfs.cred);
}

static bool can_write(const struct tfs_waitpoint *wp)
{
	return trigger_cred_allows(tfs.cred, "write", "waitpoints", wp->id);
}

void waitpoint_attr(const struct tfs_waitpoint *wp, struct stat *st)
{
	st->st_mode = S_IFREG | (can_read() ? 0444 : 0) |
		      (can_write(wp) ? 0200 : 0);
	st->st_nlink = 1;
	st->st_size = wp->state == WP_DONE ? wp->output_len : 0;
}

/* Is someone waiting for it to change?  Then it is polled. */
static void update_waited(struct tfs_waitpoint *wp)
{
	bool want = wp->state == WP_WAITING &&
		    (!list_empty(&wp->readers.reqs) || !list_empty(&wp->pollers));
	bool in = !list_empty(&wp->waited);

	if (want && !in) {
		list_add_tail(&waited, &wp->waited);
		nwaited++;
	} else if (!want && in) {
		list_del(&wp->waited);
		nwaited--;
	}
}

/* ---- answering what waits ----------------------------------------------- */

/* A read now, if the token's state allows; false when it must wait. */
static bool read_answer(fuse_req_t req, struct tfs_handle *h, size_t size,
			off_t off, int flags)
{
	struct tfs_waitpoint *wp = h->wp;

	if (wp->state == WP_DONE && (size_t)off < wp->output_len) {
		size_t n = wp->output_len - off;

		fuse_reply_buf(req, wp->output + off, n < size ? n : size);
	} else if (wp->state == WP_DONE) {
		/* The error output has been read: now say what it was. */
		if (wp->timed_out)
			fuse_reply_err(req, ETIMEDOUT);
		else
			fuse_reply_buf(req, NULL, 0);
	} else if (wp->state == WP_MISSING) {
		fuse_reply_err(req, ENOENT);
	} else {
		return parked_refused(req, flags);
	}
	return true;
}

/* The readers' finish. */
static void reader_finish(struct tfs_parked *p, int err)
{
	struct wp_reader *r = list_entry(p, struct wp_reader, p);
	struct tfs_waitpoint *wp = r->h->wp;

	parked_unlink(p);
	if (err || !read_answer(p->req, r->h, r->size, r->off, 0))
		fuse_reply_err(p->req, err ? err : EIO);
	free(r);
	update_waited(wp);
}

static void notify_pollers(struct tfs_waitpoint *wp)
{
	while (!list_empty(&wp->pollers)) {
		struct tfs_handle *h = list_entry(wp->pollers.next,
						  struct tfs_handle, pnode);

		fuse_lowlevel_notify_poll(h->ph);
		list_del(&h->pnode);
		fuse_pollhandle_destroy(h->ph);
		h->ph = NULL;
	}
	update_waited(wp);
}

/* The state changed: every parked read it allows is answered. */
static void wake(struct tfs_waitpoint *wp)
{
	if (wp->state == WP_WAITING)
		return;
	parked_finish_all(&wp->readers, 0);
	notify_pollers(wp);
}

static void reply_open(struct tfs_waitpoint *wp, fuse_req_t req,
		       struct fuse_file_info *fi)
{
	struct tfs_handle *h = stream_new_handle(NODE_WAITPOINT, NULL);

	h->wp = wp;
	h->sink = &wp->sink;
	h->can_read = (fi->flags & O_ACCMODE) != O_WRONLY;
	h->can_write = (fi->flags & O_ACCMODE) != O_RDONLY;
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	fuse_reply_open(req, fi);
}

static void ask_finish(struct tfs_waitpoint *wp, struct wp_ask *a, int err)
{
	list_del(&a->node);
	if (err) {
		fuse_reply_err(a->req, err);
	} else if (a->open) {
		reply_open(wp, a->req, &a->fi);
	} else {
		tree_reply_entry(a->req, wp->ino, 0);
	}
	free(a);
}

/* ---- asking the API ----------------------------------------------------- */

static void take_output(struct tfs_waitpoint *wp, const json_t *body)
{
	const char *out = json_string_value(json_object_get(body, "output"));
	json_t *v = out ? json_loads(out, JSON_DECODE_ANY, NULL) : NULL;
	char *line = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

	/* One line of compact JSON, whatever spacing the API kept; a token
	 * completed without data has none: null. */
	free(wp->output);
	wp->output_len = (size_t)asprintf(&wp->output, "%s\n",
					  line ? line : out ? out : "null");
	free(line);
	json_decref(v);
	wp->timed_out = json_is_true(json_object_get(body, "outputIsError"));
}

/* What an answer means for the token; returns the errno for lookups. */
static int learn(struct tfs_waitpoint *wp, const struct trigger_result *res)
{
	const char *st = json_string_value(json_object_get(res->body, "status"));

	wp->checked_at = tfs_now();
	switch (res->code) {
	case TRIGGER_OK:
		if (st && (!strcmp(st, "COMPLETED") || !strcmp(st, "TIMED_OUT"))) {
			if (wp->state != WP_DONE) {
				take_output(wp, res->body);
				tfs_log(LOG_INFO, "waitpoint %s: %s", wp->id,
					wp->timed_out ? "timed out" : "completed");
			}
			wp->state = WP_DONE;
		} else {
			wp->state = WP_WAITING;
		}
		return 0;
	case TRIGGER_E_NOT_FOUND:
	case TRIGGER_E_SERVER:
		/* The API answers 500 for an id it does not know. */
		if (res->code == TRIGGER_E_SERVER && res->status != 500)
			break;
		wp->state = WP_MISSING;
		tfs_log(LOG_ERR, "waitpoint %s: not found (HTTP %ld: %s)", wp->id,
			res->status, res->error);
		return ENOENT;
	default:
		break;
	}
	tfs_log(LOG_ERR, "waitpoint %s: cannot read it: %s (HTTP %ld: %s)",
		wp->id, trigger_strerror(res->code), res->status, res->error);
	return tfs_errno(res->code);
}

/* Called with tfs.lock held with a retrieve's answer. */
static void asked(struct tfs_waitpoint *wp, const struct trigger_result *res)
{
	wp->asking = false;
	int err = learn(wp, res);

	/* A failed poll leaves the readers parked: the next poll may work. */
	while (!list_empty(&wp->asks))
		ask_finish(wp, list_entry(wp->asks.next, struct wp_ask, node),
			   err);
	if (!err)
		wake(wp);
	else if (wp->state == WP_MISSING)
		parked_finish_all(&wp->readers, ENOENT);
	if (wp->ask_again) {
		wp->ask_again = false;
		ask(wp);
	}
}

static void ask_done(void *arg, const struct trigger_result *res)
{
	pthread_mutex_lock(&tfs.lock);
	asked(arg, res);
	pthread_mutex_unlock(&tfs.lock);
}

/* Called with tfs.lock held: one retrieve on its way per token. */
static void ask(struct tfs_waitpoint *wp)
{
	if (wp->asking) {
		wp->ask_again = true;
		return;
	}
	wp->asking = true;
	wp->polled_at = tfs_now();
	int rc = trigger_waitpoint_get(tfs.client, wp->id, ask_done, wp);

	if (rc) {
		struct trigger_result res = { .code = rc };

		snprintf(res.error, sizeof(res.error), "%s", trigger_strerror(rc));
		asked(wp, &res);
	}
}

/* Park a lookup or an open until the token's state is known. */
static void ask_park(struct tfs_waitpoint *wp, fuse_req_t req,
		     struct fuse_file_info *fi)
{
	struct wp_ask *a = xcalloc(1, sizeof(*a));

	a->req = req;
	if (fi) {
		a->open = true;
		a->fi = *fi;
	}
	list_add_tail(&wp->asks, &a->node);
	ask(wp);
}

/* ---- lookup, listing ----------------------------------------------------- */

void waitpoints_lookup(fuse_req_t req, const char *id)
{
	pthread_mutex_lock(&tfs.lock);
	struct tfs_waitpoint *wp = wp_get(id);

	if (wp->state == WP_MISSING && tfs_now() - wp->checked_at < MISSING_TTL)
		fuse_reply_err(req, ENOENT);
	else if (wp->state != WP_UNKNOWN && wp->state != WP_MISSING)
		tree_reply_entry(req, wp->ino, 0);
	else if (!can_read())
		/* Cannot ask: taken at its word, as a write will tell. */
		tree_reply_entry(req, wp->ino, 0);
	else
		ask_park(wp, req, NULL);
	pthread_mutex_unlock(&tfs.lock);
}

struct wp_list {
	fuse_req_t req;
	struct fuse_file_info fi;
	struct tfs_dirlist *dl;
};

static void list_complete(struct wp_list *l)
{
	l->fi.fh = (uintptr_t)l->dl;
	fuse_reply_open(l->req, &l->fi);
	free(l);
}

static void list_page_done(void *arg, const struct trigger_result *res)
{
	struct wp_list *l = arg;
	json_t *next = json_object_get(json_object_get(res->body, "pagination"),
				       "next");
	json_t *wpj;
	size_t i;

	if (res->code != TRIGGER_OK)
		tfs_log(LOG_WARNING, "listing waitpoint tokens: %s (HTTP %ld: %s)",
			trigger_strerror(res->code), res->status, res->error);
	json_array_foreach(json_object_get(res->body, "data"), i, wpj) {
		const char *id = json_string_value(json_object_get(wpj, "id"));

		if (id && tree_valid_name(id) && !dirlist_has(l->dl, id))
			dirlist_add(l->dl, id);
	}
	if (res->code == TRIGGER_OK && json_is_string(next) &&
	    l->dl->n < LIST_MAX &&
	    !trigger_waitpoints_list(tfs.client, "WAITING",
				     json_string_value(next), list_page_done, l))
		return;
	list_complete(l);
}

/* With a secret key, the environment's waiting tokens; else the tokens
 * the scopes name. */
void waitpoints_opendir(fuse_req_t req, struct fuse_file_info *fi)
{
	struct wp_list *l = xcalloc(1, sizeof(*l));
	static const char prefix[] = "write:waitpoints:";

	l->dl = dirlist_new();
	l->req = req;
	l->fi = *fi;
	for (size_t i = 0; i < trigger_cred_nscopes(tfs.cred); i++) {
		const char *sc = trigger_cred_scope(tfs.cred, i);

		if (!strncmp(sc, prefix, sizeof(prefix) - 1) &&
		    tree_valid_name(sc + sizeof(prefix) - 1))
			dirlist_add(l->dl, sc + sizeof(prefix) - 1);
	}
	if (!can_read() ||
	    trigger_waitpoints_list(tfs.client, "WAITING", NULL, list_page_done, l))
		list_complete(l);
}

/* ---- open, read, poll, write, release ------------------------------------ */

int waitpoint_write_allowed(const struct tfs_waitpoint *wp)
{
	if (can_write(wp))
		return 0;
	tfs_log(LOG_ERR, "waitpoint %s: the access token has no scope to complete it (needs write:waitpoints:%s)",
		wp->id, wp->id);
	return tfs_errno(TRIGGER_E_FORBIDDEN);
}

/* Every open for reading asks for the token's state first, so that a
 * token completed elsewhere reads at once. */
void waitpoint_open(fuse_req_t req, struct tfs_waitpoint *wp,
		    struct fuse_file_info *fi)
{
	bool reading = (fi->flags & O_ACCMODE) != O_WRONLY;

	pthread_mutex_lock(&tfs.lock);
	if (reading && !can_read()) {
		tfs_log(LOG_ERR, "waitpoint %s: reading a token takes a secret key (the API retrieves tokens for nothing else)",
			wp->id);
		fuse_reply_err(req, tfs_errno(TRIGGER_E_FORBIDDEN));
	} else if (!reading || wp->state == WP_DONE) {
		reply_open(wp, req, fi);
	} else {
		ask_park(wp, req, fi);
	}
	pthread_mutex_unlock(&tfs.lock);
}

void waitpoint_read(fuse_req_t req, struct tfs_handle *h, size_t size,
		    off_t off, int flags)
{
	struct tfs_waitpoint *wp = h->wp;

	pthread_mutex_lock(&tfs.lock);
	bool done = read_answer(req, h, size, off, flags);

	pthread_mutex_unlock(&tfs.lock);
	if (done)
		return;
	if (parked_watch(req, &wp->readers)) {
		fuse_reply_err(req, EINTR);
	} else if (!read_answer(req, h, size, off, flags)) {
		struct wp_reader *r = xcalloc(1, sizeof(*r));

		r->h = h;
		r->size = size;
		r->off = off;
		/* As a stream's read: -o timeout=, or EINTR before the
		 * kernel's FUSE request timeout. */
		parked_add(&r->p, &wp->readers, req, WAIT_READ);
		update_waited(wp);
	}
	pthread_mutex_unlock(&tfs.lock);
}

void waitpoint_poll(fuse_req_t req, struct tfs_handle *h,
		    struct fuse_pollhandle *ph)
{
	struct tfs_waitpoint *wp = h->wp;
	unsigned revents = 0;

	pthread_mutex_lock(&tfs.lock);
	if (h->can_read && wp->state != WP_WAITING)
		revents |= POLLIN | POLLRDNORM;
	if (h->can_write)
		revents |= POLLOUT | POLLWRNORM;
	if (ph && h->ph)
		fuse_pollhandle_destroy(h->ph);
	else if (ph)
		list_add_tail(&wp->pollers, &h->pnode);
	if (ph)
		h->ph = ph;
	update_waited(wp);
	pthread_mutex_unlock(&tfs.lock);
	fuse_reply_poll(req, revents);
}

/* Called with tfs.lock held. */
void waitpoint_release(struct tfs_handle *h)
{
	if (!h->ph)
		return;
	list_del(&h->pnode);
	fuse_pollhandle_destroy(h->ph);
	h->ph = NULL;
	update_waited(h->wp);
}

/* Called with tfs.lock held after a write through the mount completed
 * the token: its readers here need not wait for the next poll. */
void waitpoint_sent(struct tfs_sink *sink)
{
	struct tfs_waitpoint *wp = list_entry(sink, struct tfs_waitpoint, sink);

	if (wp->state == WP_DONE)
		tfs_log(LOG_WARNING, "waitpoint %s: was already completed; the API keeps its first output",
			wp->id);
	else if (can_read())
		ask(wp);
}

/* ---- polling, shutdown ---------------------------------------------------- */

/* From the watcher, with tfs.lock held. */
void waitpoints_tick(double now)
{
	double interval = nwaited / POLL_BUDGET > POLL_INTERVAL
			  ? nwaited / POLL_BUDGET : POLL_INTERVAL;
	struct list *p, *next;

	for (p = waited.next; p != &waited; p = next) {
		struct tfs_waitpoint *wp = list_entry(p, struct tfs_waitpoint,
						      waited);

		next = p->next;
		if (!wp->asking && now - wp->polled_at >= interval)
			ask(wp);
	}
}

void waitpoints_shutdown(void)
{
	for (struct tfs_waitpoint *wp = all; wp; wp = wp->next) {
		parked_finish_all(&wp->readers, tfs_errno(TRIGGER_E_CANCELLED));
		while (!list_empty(&wp->asks))
			ask_finish(wp, list_entry(wp->asks.next, struct wp_ask,
						  node),
				   tfs_errno(TRIGGER_E_CANCELLED));
	}
}
