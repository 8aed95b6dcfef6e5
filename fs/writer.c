/*
 * The write side of a stream file: write = send.  What an open file is
 * given is a stream of JSON texts, as jq reads them: values separated by
 * whitespace, each value one send, sent as soon as it is complete.  A value
 * not yet complete at the end of a write is kept in the open file (another
 * process may share it) and sent when a later write or the close completes
 * it.  At the first value that is not JSON (or is over 1 MiB), the values
 * before it are sent, the write is short, and nothing from it on is sent:
 * every later write and the close fail with the same errno.
 *
 * Writes go to a sink: an input stream (a send per value), an output
 * stream (an append per value) or a waitpoint token (a completion).  The
 * writes and flushes of one sink form a queue and run one at a time, in
 * order; an input stream's values are sent one after the other, each once
 * the previous one was accepted, an output stream's all at once (the client
 * batches and stores them in order, as the SDK's writer does): the order of
 * the log is the order of the writes.  Nothing here waits on the network
 * on a FUSE thread: the request is answered from the send's completion.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "triggerfs.h"

/* A record over 1 MiB as sent ({"data":<value>}) is refused: 413. */
#define MAX_BODY 1048576
#define BODY_OVERHEAD 9

static const unsigned char BOM[3] = { 0xef, 0xbb, 0xbf };

struct value {
	const char *text;    /* in buf, or in joined for the first value */
	size_t len;
	size_t start;        /* offset in the write where it begins (0 if
				in the kept bytes) */
	size_t lines;        /* newlines since the open, up to its start */
};

struct tfs_write {
	struct list node;    /* in sink->writes */
	fuse_req_t req;
	struct tfs_handle *h;
	bool flush;
	char *buf;           /* the write's bytes (writes only) */
	size_t size;
	char *joined;        /* the kept bytes and the first value's */
	struct value *values;
	size_t nvalues, values_cap, next;
	/* what the open file holds after the whole write was accepted */
	struct tfs_wstate after;
	size_t tail_off;     /* where bytes to keep begin in buf */
	/* a value refused: errno, and the bytes of the write before it */
	int refused;
	size_t refused_off, refused_line;
	const char *refused_why;
	double started;      /* when its first send went out */
	/* values submitted and answered so far; the first that failed */
	size_t from, submitted, answered, fail_at;
	struct trigger_result fail;
};

static void start_next(struct tfs_sink *sink);

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

static bool is_json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static size_t count_newlines(const char *p, size_t n)
{
	size_t k = 0;
	const char *end = p + n;

	while ((p = memchr(p, '\n', (size_t)(end - p)))) {
		k++;
		p++;
	}
	return k;
}

/* A value to send: b (in the write's bytes), after a (bytes kept from
 * earlier writes, which needs a copy joining the two), trimmed of the
 * whitespace around it. */
static void add_value(struct tfs_write *w, const char *a, size_t alen,
		      const char *b, size_t blen, size_t start, size_t lines)
{
	struct value *v;

	if (w->nvalues == w->values_cap) {
		w->values_cap = w->values_cap ? w->values_cap * 2 : 16;
		w->values = xrealloc(w->values, w->values_cap * sizeof(*v));
	}
	v = &w->values[w->nvalues++];
	v->text = b;
	v->len = blen;
	v->start = start;
	v->lines = lines;
	if (alen) {
		w->joined = xmalloc(alen + blen);
		memcpy(w->joined, a, alen);
		if (blen)
			memcpy(w->joined + alen, b, blen);
		v->text = w->joined;
		v->len = alen + blen;
	}
	while (v->len && is_json_space(v->text[v->len - 1]))
		v->len--;
	while (v->len && is_json_space(*v->text)) {
		v->text++;
		v->len--;
	}
}

static void drop_kept(struct tfs_wstate *ws)
{
	free(ws->kept);
	ws->kept = NULL;
	ws->kept_len = ws->kept_cap = 0;
	jsonline_init(&ws->jl);
}

static void keep(struct tfs_wstate *ws, const char *p, size_t n)
{
	if (ws->kept_len + n + 1 > ws->kept_cap) {
		size_t cap = ws->kept_cap ? ws->kept_cap : 256;

		while (cap < ws->kept_len + n + 1)
			cap *= 2;
		ws->kept = xrealloc(ws->kept, cap);
		ws->kept_cap = cap;
	}
	memcpy(ws->kept + ws->kept_len, p, n);
	ws->kept_len += n;
	ws->kept[ws->kept_len] = '\0';
}

static void log_refusal(const struct tfs_handle *h, int err, size_t line,
			const char *why, bool sent_before)
{
	tfs_log(LOG_ERR, "%s: the value at line %zu (counted from the open) %s: %s; %snothing from it on is sent",
		LABEL(h->sink), line,
		err == EFBIG ? "is over 1 MiB" : "is not JSON", why,
		sent_before ? "the values before it were sent, " : "");
}

/* Stop the scan of a write at a refused value. */
static void refuse_at(struct tfs_write *w, int err, size_t off, size_t line,
		      const char *why)
{
	w->refused = err;
	w->refused_off = off;
	w->refused_line = line;
	w->refused_why = why;
}

/* Skip a leading byte-order mark; false if the bytes only began like one. */
static bool skip_bom(struct tfs_wstate *a, const char *buf, size_t size,
		     size_t *pos)
{
	while (a->bom < 3 && *pos < size) {
		if ((unsigned char)buf[*pos] != BOM[a->bom])
			break;
		a->bom++;
		(*pos)++;
	}
	if (a->bom == 3 || *pos == size)
		return true;
	bool ok = a->bom == 0;

	a->bom = 3;
	return ok;
}

/* Cut the write into values on a copy of the open file's state (w->after),
 * from pos on, until the end or the first value refused. */
static void split_write(struct tfs_write *w)
{
	struct tfs_wstate *a = &w->after;
	const char *buf = w->buf;
	size_t pos = 0, vstart = 0;
	bool cont = a->kept_len > 0;   /* the first value began earlier */

	if (!skip_bom(a, buf, w->size, &pos)) {
		refuse_at(w, EINVAL, 0, 1, "invalid UTF-8 (a broken byte-order mark)");
		return;
	}
	w->tail_off = w->size;
	while (pos < w->size) {
		if (!cont && a->jl.status == JSONLINE_EMPTY) {
			while (pos < w->size && is_json_space(buf[pos]))
				a->lines += buf[pos++] == '\n';
			if (pos == w->size)
				break;
			vstart = pos;
			a->value_line = a->lines + 1;
		}
		size_t n = jsonline_scan(&a->jl, buf + pos, w->size - pos);
		size_t have = (cont ? a->kept_len : 0) + pos + n - vstart;

		a->lines += count_newlines(buf + pos, n);
		pos += n;
		if (a->jl.status == JSONLINE_INVALID) {
			refuse_at(w, EINVAL, cont ? 0 : vstart, a->value_line,
				  jsonline_why(&a->jl));
			return;
		}
		if (have + BODY_OVERHEAD > MAX_BODY) {
			refuse_at(w, EFBIG, cont ? 0 : vstart, a->value_line,
				  "the API takes at most 1 MiB per record");
			return;
		}
		if (a->jl.status != JSONLINE_COMPLETE) {
			w->tail_off = cont ? 0 : vstart;
			break;
		}
		add_value(w, cont ? a->kept : "", cont ? a->kept_len : 0,
			  buf + vstart, pos - vstart, vstart, a->value_line - 1);
		cont = false;
		jsonline_init(&a->jl);
		vstart = pos;
	}
}

static void write_free(struct tfs_write *w)
{
	free(w->joined);
	free(w->values);
	free(w->buf);
	free(w);
}

/* The op is over: leave the queue, start the next one. */
static void write_end(struct tfs_write *w)
{
	struct tfs_sink *sink = w->h->sink;

	list_del(&w->node);
	write_free(w);
	sink->sending = false;
	start_next(sink);
}

/* Every value of the write was sent (or there were none). */
static void write_succeeded(struct tfs_write *w)
{
	struct tfs_wstate *ws = &w->h->ws;

	if (w->flush) {
		drop_kept(ws);
		fuse_reply_err(w->req, 0);
		return;
	}
	if (w->refused) {
		/* The values before the refused one count; nothing after. */
		log_refusal(w->h, w->refused, w->refused_line, w->refused_why,
			    w->refused_off > 0);
		drop_kept(ws);
		ws->failed = w->refused;
		if (w->refused_off)
			fuse_reply_write(w->req, w->refused_off);
		else
			fuse_reply_err(w->req, w->refused);
		return;
	}
	/* The kept bytes are now those of the value left incomplete. */
	char *kept = ws->kept;
	size_t kept_len = ws->kept_len, kept_cap = ws->kept_cap;

	if (w->tail_off == w->size || w->nvalues)
		kept_len = 0;   /* completed (or nothing new to keep) */
	*ws = w->after;
	ws->kept = kept;
	ws->kept_len = kept_len;
	ws->kept_cap = kept_cap;
	if (w->tail_off < w->size)
		keep(ws, w->buf + w->tail_off, w->size - w->tail_off);
	fuse_reply_write(w->req, w->size);
}

/* A short write up to the value at w->next (not sent): the next write
 * starts with it. */
static void reply_short(struct tfs_write *w)
{
	struct tfs_wstate *ws = &w->h->ws;
	const struct value *v = &w->values[w->next];

	drop_kept(ws);
	ws->lines = v->lines;
	ws->bom = 3;
	fuse_reply_write(w->req, v->start);
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
		w->next ? "; the values before it were sent" : "");
	if (res->code == TRIGGER_E_RUN_FINISHED && sink->run)
		runs_finished(sink->run, "a send was refused");
	if (res->code == TRIGGER_E_EXPIRED)
		tfs_log_expiry(sink->run ? sink->run->id : sink->name);
	if (w->flush || w->next == 0) {
		fuse_reply_err(w->req, err);  /* nothing taken: kept stays */
		return;
	}
	/* The values sent count, the error comes with the next write. */
	h->ws.deferred_err = err;
	reply_short(w);
}

static void send_next(struct tfs_write *w);

/* The value at w->next is in: the next one, or the answer. */
static void value_sent(struct tfs_write *w)
{
	if (++w->next < w->nvalues && w->values[w->next].start > 0 &&
	    tfs.park_limit > 0 && tfs_now() - w->started > tfs.park_limit / 2) {
		/* Many values: answer before the kernel's request timeout
		 * would abort the mount; the caller writes the rest again. */
		reply_short(w);
		write_end(w);
		return;
	}
	if (w->next < w->nvalues) {
		send_next(w);
		return;
	}
	write_succeeded(w);
	write_end(w);
}

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
	else if (w->h->sink->kind == NODE_WAITPOINT)
		waitpoint_sent(w->h->sink);
	if (w->answered < w->submitted) {
		pthread_mutex_unlock(&tfs.lock);
		return;
	}
	if (w->fail_at != SIZE_MAX) {
		w->next = w->fail_at;
		write_failed(w, &w->fail);
		write_end(w);
	} else {
		w->next += w->submitted - 1;
		value_sent(w);
	}
	pthread_mutex_unlock(&tfs.lock);
}

/* One value to where the sink's values go. */
static int sink_send(struct tfs_write *w, const struct value *v)
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
					     sink->name, v->text, v->len, first,
					     send_done, w);
	case NODE_WAITPOINT:
		return trigger_waitpoint_complete(tfs.client, sink->name,
						  v->text, v->len, send_done, w);
	default:
		return trigger_send(tfs.client, sink->run->id, sink->name,
				    v->text, v->len, send_done, w);
	}
}

/* Called with tfs.lock held: the value at w->next, or for an output stream
 * all the values left. */
static void send_next(struct tfs_write *w)
{
	size_t n = w->h->sink->kind == NODE_OUTPUT ? w->nvalues - w->next : 1;

	w->from = w->next;
	w->submitted = w->answered = 0;
	w->fail_at = SIZE_MAX;
	for (size_t i = 0; i < n; i++) {
		int rc = sink_send(w, &w->values[w->next + i]);

		if (rc) {
			struct trigger_result res = { .code = rc };

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

/* At close: a value still incomplete is not sent, and the close fails;
 * the bytes stay for another process sharing the open file. */
static bool flush_value(struct tfs_write *w)
{
	struct tfs_wstate *ws = &w->h->ws;
	enum jsonline_status st = jsonline_end(&ws->jl);

	if (!ws->kept_len || st == JSONLINE_EMPTY)
		return true;
	if (st == JSONLINE_COMPLETE) {
		add_value(w, ws->kept, ws->kept_len, "", 0, 0, ws->value_line - 1);
		return true;
	}
	tfs_log(LOG_ERR, "%s: close with an incomplete value (line %zu counted from the open: %s): not sent",
		LABEL(w->h->sink), ws->value_line,
		jsonline_why(&ws->jl));
	fuse_reply_err(w->req, EINVAL);
	return false;
}

/* Start a write or flush at the head of the queue. */
static void start(struct tfs_write *w)
{
	struct tfs_wstate *ws = &w->h->ws;
	int err = ws->failed ? ws->failed : ws->deferred_err;

	if (err) {
		ws->deferred_err = 0;
		fuse_reply_err(w->req, err);
		write_end(w);
		return;
	}
	if (w->flush && !flush_value(w)) {
		write_end(w);
		return;
	}
	if (!w->flush) {
		w->after = *ws;
		split_write(w);
	}
	if (w->nvalues == 0) {
		write_succeeded(w);
		write_end(w);
		return;
	}
	w->started = tfs_now();
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
	if (h->ws.kept_len && jsonline_end(&h->ws.jl) != JSONLINE_EMPTY)
		tfs_log(LOG_WARNING, "%s: dropped an incomplete value of %zu bytes at the last close (not sent)",
			LABEL(h->sink), h->ws.kept_len);
	drop_kept(&h->ws);
}
