/*
 * A stream: its log (every record as one line of JSON), the subscription
 * that fills it, shared by every reader, and the requests parked on it:
 * reads at the end of the log and opens waiting for the subscription to
 * catch up with what the API already holds.  Parked requests cost no
 * thread; they are answered from the network thread, the watcher thread
 * (deadlines) or an interrupt.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "triggerfs.h"

static void sub_start(struct tfs_stream *s);
static void sub_stop(struct tfs_stream *s);

/* ---- the log -----------------------------------------------------------
 * Every record as one line of compact JSON, append-only.  Its bytes are
 * reached only through these functions, so where they live is this
 * section's business alone. */

static void log_append(struct tfs_stream *s, const char *json, size_t len)
{
	logstore_append_record(s->log, json, len);
	s->mtime = time(NULL);
}

static size_t log_size(const struct tfs_stream *s)
{
	return (size_t)logstore_size(s->log);
}

/* Answer with n bytes of the log at off: straight from memory when they
 * are contiguous there, else copied (from the cache directory, or across
 * chunks). */
static void log_reply(fuse_req_t req, struct tfs_stream *s, size_t off,
		      size_t n)
{
	const char *p;

	if (logstore_span(s->log, off, &p) >= n) {
		fuse_reply_buf(req, p, n);
		return;
	}
	char *buf = xmalloc(n);
	ssize_t got = logstore_read(s->log, off, buf, n);

	if (got == (ssize_t)n) {
		fuse_reply_buf(req, buf, n);
	} else {
		tfs_log(LOG_ERR, "run %s stream %s: cannot read the log back from the cache directory: %s",
			s->run->id, s->name, got < 0 ? strerror(errno) : "short read");
		fuse_reply_err(req, EIO);
	}
	free(buf);
}

/* Just past the '\n' of the record holding byte off; 0 when the cache
 * directory cannot be read (logged). */
static size_t log_record_end(struct tfs_stream *s, size_t off)
{
	int64_t end = logstore_record_end(s->log, off);

	if (end < 0) {
		tfs_log(LOG_ERR, "run %s stream %s: cannot read the log back from the cache directory: %s",
			s->run->id, s->name, strerror(errno));
		return 0;
	}
	return (size_t)end;
}

/* Called with tfs.lock held. */
size_t stream_size(const struct tfs_stream *s, enum node_kind kind)
{
	return kind == NODE_INPUT ? log_size(s) - s->consumed : log_size(s);
}

/* ---- parked requests --------------------------------------------------- */

static void waiter_unlink(struct tfs_waiter *w)
{
	parked_unlink(&w->p);
	if (w->p.kind == WAIT_READ)
		runs_del_waiter(w->stream->run);
}

/* A read that fills its request exactly up to the end of a record is
 * answered one byte short: the kernel splits large reads, and a full
 * answer makes it ask for the next piece, where it would take the next
 * record (or park) although this read() already has one. */
static size_t short_of_full(size_t n, size_t size, bool at_end)
{
	return n == size && at_end && n > 1 ? n - 1 : n;
}

static void reply_log(fuse_req_t req, struct tfs_handle *h, size_t size,
		      off_t off)
{
	size_t n = log_size(h->stream) - (size_t)off;

	if (n > size)
		n = size;
	/* output/S blocks at its end, as input/S does (log/S never does). */
	if (h->kind == NODE_OUTPUT)
		n = short_of_full(n, size, (size_t)off + n == log_size(h->stream));
	h->pos = off + n;
	log_reply(req, h->stream, (size_t)off, n);
}

/* input/S: the rest of this descriptor's record, else the mount's next
 * record (taken: no other reader gets it).  0 when none is left, -EIO
 * when the cache directory fails. */
static int take_record(struct tfs_handle *h)
{
	struct tfs_stream *s = h->stream;

	if (h->rec_off < h->rec_end)
		return 1;
	if (s->consumed >= log_size(s))
		return 0;
	size_t end = log_record_end(s, s->consumed);

	if (!end)
		return -EIO;
	h->rec_off = s->consumed;
	h->rec_end = end;
	s->consumed = end;
	return 1;
}

/* One read returns bytes of one record only. */
static void reply_record(fuse_req_t req, struct tfs_handle *h, size_t size)
{
	size_t off = h->rec_off, n = h->rec_end - off;

	if (n > size)
		n = size;
	n = short_of_full(n, size, off + n == h->rec_end);
	h->rec_off += n;
	log_reply(req, h->stream, off, n);
}

static bool has_data(const struct tfs_handle *h, off_t off)
{
	const struct tfs_stream *s = h->stream;

	if (h->kind == NODE_INPUT)
		return h->rec_off < h->rec_end || s->consumed < log_size(s);
	return (size_t)off < log_size(s);
}

/* Answer a read now if the contract allows; false when it must wait. */
static bool read_answer(fuse_req_t req, struct tfs_handle *h, size_t size,
			off_t off, int flags)
{
	struct tfs_stream *s = h->stream;

	int took = h->kind == NODE_INPUT ? take_record(h) : 0;

	if (took < 0) {
		fuse_reply_err(req, -took);
	} else if (took) {
		reply_record(req, h, size);
	} else if (h->kind != NODE_INPUT && (size_t)off < log_size(s)) {
		reply_log(req, h, size, off);
	} else if (h->kind == NODE_LOG || s->run->finished) {
		h->pos = off;
		fuse_reply_buf(req, NULL, 0);
	} else if (s->sub_error) {
		fuse_reply_err(req, tfs_errno(s->sub_error));
	} else {
		return parked_refused(req, flags);
	}
	return true;
}

/* Called with tfs.lock held. */
struct tfs_handle *stream_new_handle(enum node_kind kind, struct tfs_stream *s)
{
	struct tfs_handle *h = xcalloc(1, sizeof(*h));
	h->kind = kind;
	h->stream = s;
	h->sink = s ? &s->sink : NULL;
	jsonline_init(&h->ws.jl);
	list_init(&h->pnode);
	list_add_tail(&tfs.handles, &h->hnode);
	tfs.open_handles++;
	return h;
}

static void handle_free(struct tfs_handle *h)
{
	list_del(&h->hnode);
	free(h->ws.kept);
	free(h->text);
	free(h);
	tfs.open_handles--;
}

static void idle_check(struct tfs_stream *s);

/* A lookup or getattr that waited for the log: the size as it is now
 * (an API error leaves what is known; the subscription logged it). */
static void attr_finish(struct tfs_waiter *w, int err)
{
	struct tfs_stream *s = w->stream;
	struct fuse_entry_param e;

	s->attr_waiters--;
	memset(&e, 0, sizeof(e));
	tree_attr(tree_node(w->ino), &e.attr);
	/* Past the kernel's request timeout guard, the size known so far is
	 * better than an error (stat(2) callers do not retry EINTR). */
	if (err == EINTR && fuse_req_interrupted(w->p.req)) {
		fuse_reply_err(w->p.req, EINTR);
	} else if (w->answer == ANSWER_ENTRY) {
		e.ino = w->ino;
		e.entry_timeout = 1.0;
		fuse_reply_entry(w->p.req, &e);
	} else {
		fuse_reply_attr(w->p.req, &e.attr, 0);
	}
	idle_check(s);
}

/* An open that waited for the subscription: answer it, or undo it. */
static void open_finish(struct tfs_waiter *w, int err)
{
	if (w->answer != ANSWER_OPEN) {
		attr_finish(w, err);
		return;
	}
	if (!err) {
		fuse_reply_open(w->p.req, &w->fi);
		return;
	}
	struct tfs_handle *h = (struct tfs_handle *)(uintptr_t)w->fi.fh;

	stream_release(h);
	handle_free(h);
	fuse_reply_err(w->p.req, err);
}

/* The queues' finish: take a parked request off every list and answer it
 * with err (0: as the state now allows; for reads that means data or end
 * of file). */
static void waiter_finish(struct tfs_parked *p, int err)
{
	struct tfs_waiter *w = list_entry(p, struct tfs_waiter, p);

	waiter_unlink(w);
	if (p->expired && p->kind == WAIT_OPEN)
		tfs_log(LOG_ERR, "run %s stream %s: no answer from the API in time",
			w->stream->run->id, w->stream->name);
	/* A reader interrupted meanwhile (maybe killed) must not take a
	 * record with it: the next reader gets it. */
	if (!err && p->kind == WAIT_READ && fuse_req_interrupted(p->req))
		err = EINTR;
	if (p->kind == WAIT_OPEN)
		open_finish(w, err);
	else if (err)
		fuse_reply_err(p->req, err);
	else if (!read_answer(p->req, w->handle, w->size, w->off, 0))
		fuse_reply_err(p->req, EIO);  /* not reached: callers checked */
	free(w);
}

/* Called with tfs.lock held from tree.c when the stream is made. */
void stream_init_queues(struct tfs_stream *s)
{
	list_init(&s->reads.reqs);
	list_init(&s->opens.reqs);
	s->reads.finish = waiter_finish;
	s->opens.finish = waiter_finish;
}

/* Answer every parked read the current state allows. */
static void wake_readers(struct tfs_stream *s)
{
	struct list *n, *next;

	for (n = s->reads.reqs.next; n != &s->reads.reqs; n = next) {
		struct tfs_waiter *w = list_entry(n, struct tfs_waiter, p.node);

		next = n->next;
		if (has_data(w->handle, w->off) || s->run->finished)
			waiter_finish(&w->p, 0);
	}
}

/* A handle in poll() waits on its run like a parked read: the run's status
 * is polled so that the end of the run wakes it. */
static void poller_add(struct tfs_handle *h, struct fuse_pollhandle *ph)
{
	if (h->ph) {
		fuse_pollhandle_destroy(h->ph);
	} else {
		list_add_tail(&h->stream->pollers, &h->pnode);
		runs_add_waiter(h->stream->run);
	}
	h->ph = ph;
}

static void poller_del(struct tfs_handle *h)
{
	if (!h->ph)
		return;
	list_del(&h->pnode);
	fuse_pollhandle_destroy(h->ph);
	h->ph = NULL;
	runs_del_waiter(h->stream->run);
}

static void notify_pollers(struct tfs_stream *s)
{
	while (!list_empty(&s->pollers)) {
		struct tfs_handle *h =
			list_entry(s->pollers.next, struct tfs_handle, pnode);

		/* A poll handle is one-shot: the kernel polls again. */
		fuse_lowlevel_notify_poll(h->ph);
		poller_del(h);
	}
}

/* Park w unless it was interrupted or can be answered by now. */
static void park_or_answer(struct tfs_waiter *w, int flags)
{
	struct tfs_stream *s = w->stream;
	enum waiter_kind kind = w->p.kind;
	fuse_req_t req = w->p.req;

	if (parked_watch(req, kind == WAIT_READ ? &s->reads : &s->opens)) {
		if (kind == WAIT_OPEN)
			open_finish(w, EINTR);
		else
			fuse_reply_err(req, EINTR);
		free(w);
	} else if (kind == WAIT_READ &&
		   read_answer(req, w->handle, w->size, w->off, flags)) {
		free(w);
	} else if (kind == WAIT_OPEN && (s->caught_up || s->sub_error)) {
		open_finish(w, tfs_errno(s->sub_error));
		free(w);
	} else if (kind == WAIT_READ) {
		parked_add(&w->p, &s->reads, req, WAIT_READ);
		runs_add_waiter(s->run);
	} else {
		parked_add(&w->p, &s->opens, req, WAIT_OPEN);
	}
	pthread_mutex_unlock(&tfs.lock);
}

static struct tfs_waiter *waiter_new(fuse_req_t req, enum waiter_kind kind,
				     struct tfs_stream *s)
{
	struct tfs_waiter *w = xcalloc(1, sizeof(*w));
	w->p.req = req;
	w->p.kind = kind;
	w->stream = s;
	return w;
}

/* ---- open, read, poll, release ----------------------------------------- */

void stream_open(fuse_req_t req, struct tfs_stream *s, enum node_kind kind,
		 struct fuse_file_info *fi)
{
	int acc = fi->flags & O_ACCMODE;

	pthread_mutex_lock(&tfs.lock);
	struct tfs_handle *h = stream_new_handle(kind, s);

	h->can_read = acc != O_WRONLY;
	h->can_write = acc != O_RDONLY;
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;   /* every read reaches us: see design.md */
	fi->keep_cache = 0;
	s->listed = true;
	bool ready = true;

	if (!h->can_read)
		s->writers++;
	if (h->can_read) {
		s->readers++;
		list_del(&s->idle);
		if (!s->sub)
			sub_start(s);
		ready = s->caught_up;
		if (s->sub_error && !s->sub) {
			int err = tfs_errno(s->sub_error);

			stream_release(h);
			handle_free(h);
			pthread_mutex_unlock(&tfs.lock);
			fuse_reply_err(req, err);
			return;
		}
	}
	pthread_mutex_unlock(&tfs.lock);
	if (ready) {
		fuse_reply_open(req, fi);
		return;
	}
	struct tfs_waiter *w = waiter_new(req, WAIT_OPEN, s);

	w->fi = *fi;
	park_or_answer(w, 0);
}

void stream_read(fuse_req_t req, struct tfs_handle *h, size_t size, off_t off,
		 int flags)
{
	pthread_mutex_lock(&tfs.lock);
	bool done = read_answer(req, h, size, off, flags);

	pthread_mutex_unlock(&tfs.lock);
	if (done)
		return;

	struct tfs_waiter *w = waiter_new(req, WAIT_READ, h->stream);

	w->handle = h;
	w->off = off;
	w->size = size;
	park_or_answer(w, flags);
}

void stream_poll(fuse_req_t req, struct tfs_handle *h,
		 struct fuse_pollhandle *ph)
{
	struct tfs_stream *s = h->stream;
	unsigned revents = 0;

	pthread_mutex_lock(&tfs.lock);
	if (h->can_read && (has_data(h, h->pos) || s->run->finished ||
			    s->sub_error || h->kind == NODE_LOG))
		revents |= POLLIN | POLLRDNORM;
	if (h->can_write)
		revents |= POLLOUT | POLLWRNORM;
	if (ph)
		poller_add(h, ph);
	pthread_mutex_unlock(&tfs.lock);
	fuse_reply_poll(req, revents);
}

/* Called with tfs.lock held. */
void stream_release(struct tfs_handle *h)
{
	struct tfs_stream *s = h->stream;

	poller_del(h);
	if (!h->can_read)
		s->writers--;
	if (h->can_read && --s->readers == 0 && !s->attr_waiters)
		sub_stop(s);
}

/* ---- stat: the size as the API holds it -------------------------------- */

/* A subscription that only stat needed stays a little (stat in a loop,
 * ls -l then cat) and is stopped from the watcher, never from inside a
 * subscription callback. */
#define IDLE_LINGER 2.0

static void idle_check(struct tfs_stream *s)
{
	if (s->sub && !s->readers && !s->attr_waiters && list_empty(&s->idle)) {
		s->idle_since = tfs_now();
		list_add_tail(&tfs.idle_streams, &s->idle);
	}
}

static void idle_expire(double now)
{
	while (!list_empty(&tfs.idle_streams)) {
		struct tfs_stream *s = list_entry(tfs.idle_streams.next,
						  struct tfs_stream, idle);

		if (s->idle_since + IDLE_LINGER > now)
			break;
		list_del(&s->idle);
		sub_stop(s);
	}
}

/* lookup/getattr of input/S or log/S: st_size is true at the first stat,
 * so a getattr of a stream not followed now catches it up with the API
 * first.  But a send must pay no read it does not need, so these answer
 * with what is known: a lookup (its attributes are never cached, so the
 * kernel asks getattr before a stat uses them), and a getattr while the
 * stream is open only for writing (stdio's fstat before a first write:
 * fstat(2) does not say which descriptor asks). */
void stream_attr(fuse_req_t req, const struct tfs_node *node, bool entry)
{
	struct tfs_stream *s = node->stream;

	pthread_mutex_lock(&tfs.lock);
	bool ready = (s->sub && s->caught_up) || entry ||
		     (s->writers && !s->readers);

	if (!ready && !s->sub) {
		sub_start(s);
		ready = !s->sub;   /* refused at once: answer with what is known */
	}
	s->attr_waiters++;
	struct tfs_waiter *w = waiter_new(req, WAIT_OPEN, s);

	w->answer = entry ? ANSWER_ENTRY : ANSWER_ATTR;
	w->ino = node->ino;
	if (ready) {
		attr_finish(w, 0);
		free(w);
		pthread_mutex_unlock(&tfs.lock);
		return;
	}
	pthread_mutex_unlock(&tfs.lock);
	park_or_answer(w, 0);
}

void stream_free_handle(struct tfs_handle *h)
{
	handle_free(h);
}

/* After the session: no release will come for files still open. */
void stream_free_all_handles(void)
{
	pthread_mutex_lock(&tfs.lock);
	while (!list_empty(&tfs.handles)) {
		struct tfs_handle *h = list_entry(tfs.handles.next,
						  struct tfs_handle, hnode);

		if (h->stream)
			stream_release(h);
		else if (h->wp)
			waitpoint_release(h);
		handle_free(h);
	}
	pthread_mutex_unlock(&tfs.lock);
}

/* ---- the subscription -------------------------------------------------- */

static void on_record(void *arg, const struct trigger_record *rec)
{
	struct tfs_subctx *ctx = arg;

	pthread_mutex_lock(&tfs.lock);
	struct tfs_stream *s = ctx->stream;

	if (ctx->active && rec->seq > s->last_seq) {
		log_append(s, rec->json, rec->json_len);
		s->last_seq = rec->seq;
		wake_readers(s);
		notify_pollers(s);
	}
	pthread_mutex_unlock(&tfs.lock);
}

static void sub_failed(struct tfs_stream *s, const struct trigger_result *res)
{
	char why[320];

	tfs_log(LOG_ERR, "run %s stream %s: cannot receive: %s (%s)",
		s->run->id, s->name, trigger_strerror(res->code),
		trigger_result_text(res, why, sizeof(why)));
	s->sub_error = res->code ? res->code : TRIGGER_E_PROTOCOL;
	if (res->code == TRIGGER_E_NOT_FOUND)
		s->run->state = RUN_MISSING;
	parked_finish_all(&s->opens, tfs_errno(s->sub_error));
	parked_finish_all(&s->reads, tfs_errno(s->sub_error));
	notify_pollers(s);
}

/* One line when the connection is lost, not one per attempt: the next
 * says when it is back. */
static void sub_lost(struct tfs_subctx *ctx, const struct trigger_result *res)
{
	char why[320] = "";

	ctx->retries++;
	if (ctx->lost_at)
		return;
	ctx->lost_at = tfs_now();
	if (res)
		trigger_result_text(res, why, sizeof(why));
	tfs_log(LOG_WARNING, "run %s stream %s: connection lost (%s); reconnecting (one line when it is back)",
		ctx->stream->run->id, ctx->stream->name,
		why[0] ? why : "no reason given");
}

static void on_event(void *arg, enum trigger_sub_event ev,
		     const struct trigger_result *res)
{
	struct tfs_subctx *ctx = arg;

	pthread_mutex_lock(&tfs.lock);
	struct tfs_stream *s = ctx->stream;

	switch (ev) {
	case TRIGGER_SUB_CAUGHT_UP:
		if (ctx->active) {
			s->caught_up = true;
			parked_finish_all(&s->opens, 0);
		}
		break;
	case TRIGGER_SUB_RECONNECTING:
		if (ctx->active)
			sub_lost(ctx, res);
		break;
	case TRIGGER_SUB_CONNECTED:
		if (ctx->active && ctx->lost_at) {
			tfs_log(LOG_INFO, "run %s stream %s: connection back after %.1f s and %u retries",
				s->run->id, s->name, tfs_now() - ctx->lost_at,
				ctx->retries);
			ctx->lost_at = 0;
			ctx->retries = 0;
		}
		break;
	case TRIGGER_SUB_FAILED:
		if (ctx->active) {
			ctx->active = false;
			s->sub = NULL;
			list_del(&s->idle);
			tfs.subscriptions--;
			sub_failed(s, res);
		}
		break;
	case TRIGGER_SUB_CLOSED:
		if (ctx->active) {  /* closed by client shutdown */
			s->sub = NULL;
			list_del(&s->idle);
			tfs.subscriptions--;
		}
		free(ctx);
		break;
	}
	pthread_mutex_unlock(&tfs.lock);
}

static const struct trigger_sub_callbacks sub_callbacks = {
	.record = on_record,
	.event = on_event,
};

static void sub_start(struct tfs_stream *s)
{
	struct tfs_subctx *ctx = xcalloc(1, sizeof(*ctx));
	ctx->stream = s;
	ctx->active = true;
	s->caught_up = false;
	s->sub_error = TRIGGER_OK;
	ctx->sub = (s->output ? trigger_subscribe_output : trigger_subscribe)(
		tfs.client, s->run->id, s->name, s->last_seq, &sub_callbacks,
		ctx);
	if (!ctx->sub) {
		int64_t exp = trigger_cred_exp(tfs.cred);

		s->sub_error = exp && exp < (int64_t)time(NULL)
			       ? TRIGGER_E_EXPIRED : TRIGGER_E_NOMEM;
		tfs_log(LOG_ERR, "run %s stream %s: cannot receive: %s",
			s->run->id, s->name, trigger_strerror(s->sub_error));
		free(ctx);
		return;
	}
	s->sub = ctx;
	tfs.subscriptions++;
}

static void sub_stop(struct tfs_stream *s)
{
	struct tfs_subctx *ctx = s->sub;

	if (!ctx)
		return;
	ctx->active = false;
	s->sub = NULL;
	s->caught_up = false;
	list_del(&s->idle);
	tfs.subscriptions--;
	trigger_unsubscribe(ctx->sub);
}

/* ---- run state, idle subscriptions, shutdown ---------------------------- */

/* Called with tfs.lock held when the run is learned to be finished. */
void stream_run_finished(struct tfs_stream *s)
{
	wake_readers(s);
	notify_pollers(s);
}

void stream_expire(double now)
{
	idle_expire(now);
}

static void shutdown_run(struct tfs_run *run, void *arg)
{
	(void)arg;
	for (struct tfs_stream *s = run->streams; s; s = s->next) {
		parked_finish_all(&s->opens, tfs_errno(TRIGGER_E_CANCELLED));
		parked_finish_all(&s->reads, tfs_errno(TRIGGER_E_CANCELLED));
	}
}

/* Every parked request gets an error now: the daemon is going away. */
void stream_shutdown(void)
{
	pthread_mutex_lock(&tfs.lock);
	tfs.shutting_down = true;
	tree_for_each_run(shutdown_run, NULL);
	waitpoints_shutdown();
	pthread_mutex_unlock(&tfs.lock);
}
