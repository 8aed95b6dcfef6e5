/*
 * The write side of a stream file: write = send.  Each complete line of a
 * write is one JSON value and one send; every line is checked before any is
 * sent; a line without its newline is kept in the open file for the next
 * write (another process may share it) and sent at close if complete.
 *
 * Writes and flushes of one stream form a queue and run one at a time, in
 * order, each line sent after the previous one was accepted: the order of
 * the log is the order of the writes.  Nothing here waits on the network
 * on a FUSE thread: the request is answered from the send's completion.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "triggerfs.h"

/* A record over 1 MiB as sent ({"data":<line>}) is refused: 413. */
#define MAX_BODY 1048576
#define BODY_OVERHEAD 9

struct line {
	const char *text;    /* in buf, or in joined for the first line */
	size_t len;
	size_t end;          /* offset in the write just past its '\n' */
};

struct tfs_write {
	struct list node;    /* in sink->writes */
	fuse_req_t req;
	struct tfs_handle *h;
	bool flush;
	char *buf;           /* the write's bytes (writes only) */
	size_t size;
	char *joined;        /* the kept line and the first line's bytes */
	struct line *lines;
	size_t nlines, lines_cap, next;
	/* values submitted and answered so far; the first that failed */
	size_t from, submitted, answered, fail_at;
	struct trigger_result fail;
	/* what the handle holds after a fully accepted write */
	struct jsonline jl_after;
	size_t tail_off;
};

static void start_next(struct tfs_sink *sink);

static bool is_json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A line to send: b (in the write's bytes), after a (the line kept from
 * earlier writes, which needs a copy joining the two), trimmed of the
 * whitespace around the value. */
static void add_line(struct tfs_write *w, const char *a, size_t alen,
		     const char *b, size_t blen, size_t end)
{
	struct line *l;

	if (w->nlines == w->lines_cap) {
		w->lines_cap = w->lines_cap ? w->lines_cap * 2 : 16;
		w->lines = xrealloc(w->lines, w->lines_cap * sizeof(*w->lines));
	}
	l = &w->lines[w->nlines++];
	l->text = b;
	l->len = blen;
	l->end = end;
	if (alen) {
		w->joined = xmalloc(alen + blen);
		memcpy(w->joined, a, alen);
		if (blen)
			memcpy(w->joined + alen, b, blen);
		l->text = w->joined;
		l->len = alen + blen;
	}
	while (l->len && is_json_space(l->text[l->len - 1]))
		l->len--;
	while (l->len && is_json_space(*l->text)) {
		l->text++;
		l->len--;
	}
}

static void drop_line(struct tfs_handle *h)
{
	free(h->line);
	h->line = NULL;
	h->line_len = h->line_cap = 0;
	jsonline_init(&h->jl);
}

const char *sink_label(const struct tfs_sink *sink, char *buf, size_t len)
{
	if (sink->kind == NODE_WAITPOINT)
		snprintf(buf, len, "waitpoint %s", sink->name);
	else
		snprintf(buf, len, "run %s %s %s", sink->run->id,
			 sink->kind == NODE_OUTPUT ? "output stream" : "stream",
			 sink->name);
	return buf;
}

#define LABEL(sink) sink_label((sink), (char[768]){ 0 }, 768)

static void refuse(struct tfs_write *w, int err, const char *what,
		   size_t lineno, const char *why)
{
	tfs_log(LOG_ERR, "%s: write refused, nothing sent: line %zu %s%s%s",
		LABEL(w->h->sink), lineno, what, why ? ": " : "", why ? why : "");
	fuse_reply_err(w->req, err);
}

/* Check the whole write against a copy of the handle's line state and
 * collect its lines.  Returns 0, or -1 when the write was refused (and
 * answered) with nothing changed, except that an oversize line is dropped:
 * it can never be sent. */
static int split_write(struct tfs_write *w)
{
	struct tfs_handle *h = w->h;
	struct jsonline jl = h->jl;
	size_t cur = h->line_len, pos = 0, lineno = 1;

	w->tail_off = 0;
	/* The rest of a line refused as too large is refused too, up to and
	 * including the write that carries its newline. */
	if (h->discarding) {
		const char *nl = memchr(w->buf, '\n', w->size);

		h->discarding = !nl;
		refuse(w, tfs_errno(TRIGGER_E_TOO_LARGE), "is over 1 MiB", 1,
		       nl ? "dropped up to its newline"
			  : "dropping it up to its newline");
		return -1;
	}
	while (pos < w->size) {
		const char *seg = w->buf + pos;
		const char *nl = memchr(seg, '\n', w->size - pos);
		size_t seg_len = nl ? (size_t)(nl - seg) : w->size - pos;
		size_t next = pos + seg_len + (nl ? 1 : 0);

		if (cur + seg_len + BODY_OVERHEAD > MAX_BODY) {
			drop_line(h);
			h->discarding = true;
			refuse(w, tfs_errno(TRIGGER_E_TOO_LARGE), "is over 1 MiB",
			       lineno, NULL);
			return -1;
		}
		if (jsonline_feed(&jl, seg, seg_len) == JSONLINE_INVALID) {
			refuse(w, tfs_errno(TRIGGER_E_INVALID), "is not JSON",
			       lineno, jsonline_why(&jl));
			return -1;
		}
		if (!nl)
			break;
		enum jsonline_status st = jsonline_end(&jl);

		if (st == JSONLINE_PARTIAL || st == JSONLINE_INVALID) {
			refuse(w, tfs_errno(TRIGGER_E_INVALID), "is not JSON",
			       lineno, jsonline_why(&jl));
			return -1;
		}
		/* The first line of a write continues the kept line; blank
		 * lines are skipped. */
		if (st == JSONLINE_COMPLETE)
			add_line(w, lineno == 1 ? h->line : "",
				 lineno == 1 ? h->line_len : 0, seg, seg_len, next);
		jsonline_init(&jl);
		cur = 0;
		lineno++;
		pos = w->tail_off = next;
	}
	w->jl_after = jl;
	return 0;
}

static void keep_tail(struct tfs_handle *h, const char *p, size_t n,
		      bool fresh)
{
	if (fresh)
		h->line_len = 0;
	if (h->line_len + n + 1 > h->line_cap) {
		size_t cap = h->line_cap ? h->line_cap : 256;

		while (cap < h->line_len + n + 1)
			cap *= 2;
		h->line = xrealloc(h->line, cap);
		h->line_cap = cap;
	}
	memcpy(h->line + h->line_len, p, n);
	h->line_len += n;
	h->line[h->line_len] = '\0';
}

static void write_free(struct tfs_write *w)
{
	free(w->joined);
	free(w->lines);
	free(w->buf);
	free(w);
}

/* The op is over: answer it, leave the queue, start the next one. */
static void write_end(struct tfs_write *w)
{
	struct tfs_sink *sink = w->h->sink;

	list_del(&w->node);
	write_free(w);
	sink->sending = false;
	start_next(sink);
}

static void write_succeeded(struct tfs_write *w)
{
	struct tfs_handle *h = w->h;

	if (w->flush) {
		if (w->nlines)
			drop_line(h);
		fuse_reply_err(w->req, 0);
		return;
	}
	/* A newline ended the kept line; the bytes after the last newline
	 * become the new kept line. */
	keep_tail(h, w->buf + w->tail_off, w->size - w->tail_off,
		  w->tail_off > 0);
	h->jl = w->jl_after;
	fuse_reply_write(w->req, w->size);
}

static void write_failed(struct tfs_write *w, const struct trigger_result *res)
{
	struct tfs_handle *h = w->h;
	struct tfs_sink *sink = h->sink;
	int err = tfs_errno(res->code);
	char why[320];

	tfs_log(LOG_ERR, "%s: send failed: %s (%s)%s", LABEL(sink),
		trigger_strerror(res->code),
		trigger_result_text(res, why, sizeof(why)),
		w->next ? "; the lines before it were sent" : "");
	if (res->code == TRIGGER_E_RUN_FINISHED && sink->run)
		runs_finished(sink->run, "a send was refused");
	if (res->code == TRIGGER_E_EXPIRED)
		tfs_log(LOG_ERR, "the access token expired at %lld (Unix time)",
			(long long)trigger_cred_exp(tfs.cred));
	if (w->flush) {
		drop_line(h);
		fuse_reply_err(w->req, err);
	} else if (w->next == 0) {
		fuse_reply_err(w->req, err);  /* nothing taken: kept line stays */
	} else {
		/* A short write: the accepted lines count, the error comes with
		 * the next write. */
		drop_line(h);
		h->deferred_err = err;
		fuse_reply_write(w->req, w->lines[w->next - 1].end);
	}
}

static void send_next(struct tfs_write *w);

static void note_failure(struct tfs_write *w, size_t i,
			 const struct trigger_result *res)
{
	if (i >= w->fail_at)
		return;
	w->fail_at = i;
	w->fail = *res;
	w->fail.body = NULL;
	w->fail.headers = NULL;
	w->fail.jwt = NULL;
}

/* Values are answered in the order submitted. */
static void send_done(void *arg, const struct trigger_result *res)
{
	struct tfs_write *w = arg;

	pthread_mutex_lock(&tfs.lock);
	size_t i = w->from + w->answered++;   /* index of this value */

	if (res->code != TRIGGER_OK)
		note_failure(w, i, res);
	else if (i < w->fail_at)
		w->next = i + 1;
	if (res->code == TRIGGER_OK && w->h->sink->kind == NODE_WAITPOINT)
		waitpoint_sent(w->h->sink);
	if (w->answered < w->submitted) {
		pthread_mutex_unlock(&tfs.lock);
		return;
	}
	if (w->fail_at != SIZE_MAX) {
		write_failed(w, &w->fail);
		write_end(w);
	} else if (w->next == w->nlines) {
		write_succeeded(w);
		write_end(w);
	} else {
		send_next(w);
	}
	pthread_mutex_unlock(&tfs.lock);
}

/* One value to where the sink's values go. */
static int sink_send(struct tfs_write *w, const struct line *l)
{
	struct tfs_handle *h = w->h;
	struct tfs_sink *sink = h->sink;
	bool first = !h->wrote;

	h->wrote = true;
	switch (sink->kind) {
	case NODE_OUTPUT:
		/* The first value of an open asks for the stream's credentials
		 * again, so that a finished run refuses it. */
		return trigger_output_append(tfs.client, sink->run->id,
					     sink->name, l->text, l->len, first,
					     send_done, w);
	case NODE_WAITPOINT:
		return trigger_waitpoint_complete(tfs.client, sink->name,
						  l->text, l->len, send_done, w);
	default:
		return trigger_send(tfs.client, sink->run->id, sink->name,
				    l->text, l->len, send_done, w);
	}
}

/* Called with tfs.lock held.  An input stream takes one value at a time
 * (its sends are checked one by one); an output stream every value of the
 * write at once: the client batches them, as the SDK's writer does. */
static void send_next(struct tfs_write *w)
{
	size_t n = w->h->sink->kind == NODE_OUTPUT ? w->nlines - w->next : 1;

	w->from = w->next;
	w->submitted = w->answered = 0;
	w->fail_at = SIZE_MAX;
	for (size_t i = 0; i < n; i++) {
		int rc = sink_send(w, &w->lines[w->next + i]);

		if (rc) {
			struct trigger_result res = { .code = rc };

			snprintf(res.error, sizeof(res.error), "%s",
				 rc == TRIGGER_E_FORBIDDEN && w->h->sink->kind == NODE_OUTPUT
				 ? "output streams take a secret key"
				 : "refused before sending");
			note_failure(w, w->next + i, &res);
			break;
		}
		w->submitted++;
	}
	if (w->submitted)
		return;
	write_failed(w, &w->fail);
	write_end(w);
}

/* Start a write or flush at the head of the queue. */
static void start(struct tfs_write *w)
{
	struct tfs_handle *h = w->h;

	if (h->deferred_err) {
		fuse_reply_err(w->req, h->deferred_err);
		h->deferred_err = 0;
		write_end(w);
		return;
	}
	if (w->flush) {
		if (h->line_len && jsonline_end(&h->jl) == JSONLINE_COMPLETE)
			add_line(w, h->line, h->line_len, "", 0, 0);
		else if (jsonline_end(&h->jl) == JSONLINE_EMPTY)
			drop_line(h);
	} else if (split_write(w)) {
		write_end(w);
		return;
	}
	if (w->nlines == 0) {
		write_succeeded(w);
		write_end(w);
		return;
	}
	send_next(w);
}

static void start_next(struct tfs_sink *sink)
{
	if (sink->sending || list_empty(&sink->writes))
		return;
	sink->sending = true;
	start(list_entry(sink->writes.next, struct tfs_write, node));
}

static void enqueue(struct tfs_write *w)
{
	struct tfs_sink *sink = w->h->sink;

	pthread_mutex_lock(&tfs.lock);
	list_add_tail(&sink->writes, &w->node);
	start_next(sink);
	pthread_mutex_unlock(&tfs.lock);
}

static struct tfs_write *write_new(fuse_req_t req, struct tfs_handle *h)
{
	struct tfs_write *w = xcalloc(1, sizeof(*w));
	w->req = req;
	w->h = h;
	list_init(&w->node);
	return w;
}

void writer_write(fuse_req_t req, struct tfs_handle *h, const char *buf,
		  size_t size)
{
	struct tfs_write *w = write_new(req, h);

	w->buf = xmalloc(size);
	memcpy(w->buf, buf, size);
	w->size = size;
	enqueue(w);
}

void writer_flush(fuse_req_t req, struct tfs_handle *h)
{
	struct tfs_write *w = write_new(req, h);

	w->flush = true;
	enqueue(w);
}

/* Called with tfs.lock held, when the last reference to the open file is
 * gone: there is nobody left to complete or to tell. */
void writer_release(struct tfs_handle *h)
{
	if (h->line_len && jsonline_end(&h->jl) != JSONLINE_EMPTY)
		tfs_log(LOG_WARNING, "%s: dropped an incomplete line of %zu bytes at close (not one JSON value)",
			LABEL(h->sink), h->line_len);
	drop_line(h);
}
