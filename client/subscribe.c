/*
 * Subscriptions: one SSE connection each, resumed with Last-Event-ID after
 * every drop so each record is handed out once and in order; replays are
 * skipped by seq and by envelope id.  A connection is re-opened before the
 * server's hold ends, replaced when no byte came for STALL_MS, and retried
 * with backoff on network and server errors; a refusal (4xx) ends the
 * subscription, except a 404 the server marks x-should-retry (a replica
 * behind a run just triggered), retried for a while.
 *
 * Two framings: v2 (S2, X-Stream-Version: v2) sends "batch" events of
 * records with seq numbers; v1 (Redis-backed runs, no such header) sends
 * one event per record, id "<ms>-<n>", data the value, ": ping" comments.
 * The answer decides, per connection; record.c turns both into records.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "record.h"
#include "sse.h"

#define STALL_MS 40000          /* the server pings every 5-15 s (v2) or
				 * 10 s (v1): 30 s of silence is no death */
#define QUIET_MS 1000           /* silence that means "caught up" when the
				 * server says nothing more explicit */
#define REOPEN_EARLY_MS 10000   /* re-open this long before the hold ends */
#define MAX_EVENT ((size_t)16 << 20)    /* 1 MiB records, JSON in JSON */
#define ERRBODY_MAX 65536
#define RECENT_IDS 64

enum sub_state { S_IDLE, S_AUTH, S_OPEN, S_WAIT, S_DONE };

/* Why the data callback stopped the transfer. */
enum sub_stop { STOP_NONE, STOP_DONE, STOP_ERROR, STOP_BAD };

struct trigger_sub {
	struct tc_cmd start_cmd, unsub_cmd;
	int unsub_posted;               /* under the client's queue lock */
	atomic_int closing;             /* trigger_unsubscribe was called */
	struct tc_link link;            /* c->subs while live */
	trigger_client *c;
	struct trigger_sub_callbacks cb;
	void *arg;
	char *url;
	char *scope;            /* read:runs:<run>: all a reader needs */
	enum sub_state state;
	enum sub_stop stop;
	int reserved, caught_up, reconnecting;
	int headers_ok, got_event, got_records;         /* this connection */
	long long last_seq;
	int v1, conn_v1;        /* the stream is v1; this connection is */
	struct record_v1 v1cur;
	int64_t not_found_since;        /* first 404 with x-should-retry */
	struct tc_xfer xfer;
	struct tc_timer timer;
	struct tc_waiter wait;
	struct sse_parser *sse;
	int64_t backoff, opened_at, last_byte, reopen_at;
	char stop_msg[256];
	char *errbody;
	size_t errlen;
	uint64_t recent[RECENT_IDS];    /* hashes of the last envelope ids */
	unsigned nrecent;
};

static void sub_connect(struct trigger_sub *s);

static int closing(struct trigger_sub *s)
{
	return atomic_load_explicit(&s->closing, memory_order_relaxed);
}

static void emit(struct trigger_sub *s, enum trigger_sub_event ev,
		 const struct trigger_result *res)
{
	struct trigger_result ok = { .code = TRIGGER_OK };

	if (!closing(s))
		s->cb.event(s->arg, ev, res ? res : &ok);
}

static void caught_up(struct trigger_sub *s)
{
	if (s->caught_up)
		return;
	s->caught_up = 1;
	emit(s, TRIGGER_SUB_CAUGHT_UP, NULL);
}

long long tc_sub_next(trigger_client *c, const char *url)
{
	for (struct tc_link *l = c->subs.next; l != &c->subs; l = l->next) {
		struct trigger_sub *s = tc_container_of(l, struct trigger_sub, link);

		if (s->state == S_OPEN && s->headers_ok && s->caught_up &&
		    !s->reconnecting && !closing(s) && !strcmp(s->url, url))
			return s->last_seq + 1;
	}
	return -1;
}

/* ---- closing ----------------------------------------------------------- */

static void sub_free(struct trigger_sub *s)
{
	if (s->reserved)
		tc_timer_unreserve(s->c);
	tc_xfer_clear(&s->xfer);
	sse_parser_free(s->sse);
	free(s->scope);
	free(s->url);
	free(s->errbody);
	free(s);
}

/* CLOSED, then the memory goes: here, or by the unsubscribe command when
 * one is still queued (from_cmd: we are that command). */
static void sub_close(struct trigger_sub *s, const struct trigger_result *res,
		      int from_cmd)
{
	trigger_client *c = s->c;

	if (s->state != S_DONE) {
		tc_xfer_stop(c, &s->xfer);
		tc_timer_cancel(c, &s->timer);
		tc_auth_cancel(c, &s->wait);
		tc_link_del(&s->link);
		s->state = S_DONE;
		s->cb.event(s->arg, TRIGGER_SUB_CLOSED, res);
	}
	if (from_cmd || tc_claim_flag(c, &s->unsub_posted))
		sub_free(s);
}

static void sub_fail(struct trigger_sub *s, const struct trigger_result *res)
{
	emit(s, TRIGGER_SUB_FAILED, res);
	sub_close(s, res, 0);
}

void tc_sub_shutdown(trigger_client *c)
{
	struct trigger_result res = { .code = TRIGGER_E_CANCELLED };

	snprintf(res.error, sizeof(res.error), "the client shut down");
	while (c->subs.next != &c->subs)
		sub_close(tc_container_of(c->subs.next, struct trigger_sub, link),
			  &res, 0);
}

/* ---- reconnecting ------------------------------------------------------ */

static void sub_wait(struct trigger_sub *s, int64_t delay)
{
	s->state = S_WAIT;
	tc_timer_arm(s->c, &s->timer, tc_now_ms() + delay);
}

/* Network, server and protocol trouble is retried; a refusal is final. */
static void sub_trouble(struct trigger_sub *s, const struct trigger_result *res)
{
	switch (res->code) {
	case TRIGGER_E_SERVER:
	case TRIGGER_E_NETWORK:
	case TRIGGER_E_TIMEOUT:
	case TRIGGER_E_PROTOCOL:
	case TRIGGER_E_NOMEM:
		break;
	default:
		sub_fail(s, res);
		return;
	}
	emit(s, TRIGGER_SUB_RECONNECTING, res);
	s->reconnecting = 1;
	sub_wait(s, tc_backoff(s->c, &s->backoff));
}

/* The server ended the connection as planned ([DONE], clean close, our
 * re-open): resume at once, unless it ends them faster than they bring
 * anything, which would make a busy loop. */
static void sub_resume(struct trigger_sub *s)
{
	if (s->got_records || ((s->got_event || s->conn_v1) &&
			       tc_now_ms() - s->opened_at >= QUIET_MS))
		sub_connect(s);
	else
		sub_wait(s, tc_backoff(s->c, &s->backoff));
}

static void sub_arm(struct trigger_sub *s)
{
	int64_t at = s->last_byte + STALL_MS;

	if (s->reopen_at && s->reopen_at < at)
		at = s->reopen_at;
	if (s->headers_ok && !s->caught_up && s->last_byte + QUIET_MS < at)
		at = s->last_byte + QUIET_MS;
	tc_timer_arm(s->c, &s->timer, at);
}

/* Waiting over, or an open connection to check: stalled, due for
 * re-opening, or quiet long enough to call the replay done. */
static void sub_on_timer(struct tc_timer *t)
{
	struct trigger_sub *s = tc_container_of(t, struct trigger_sub, timer);
	struct trigger_result res = { .code = TRIGGER_E_TIMEOUT };
	int64_t now = tc_now_ms();

	if (s->state == S_WAIT) {
		sub_connect(s);
		return;
	}
	if (s->state != S_OPEN)
		return;
	if (now - s->last_byte >= STALL_MS || (s->reopen_at && now >= s->reopen_at)) {
		tc_xfer_stop(s->c, &s->xfer);
		s->state = S_IDLE;
		if (now - s->last_byte < STALL_MS) {
			sub_connect(s);
			return;
		}
		snprintf(res.error, sizeof(res.error), "no data for %d s",
			 STALL_MS / 1000);
		sub_trouble(s, &res);
		return;
	}
	if (s->headers_ok && now - s->last_byte >= QUIET_MS)
		caught_up(s);
	sub_arm(s);
}

/* ---- the connection ---------------------------------------------------- */

static uint64_t id_hash(const char *s)
{
	uint64_t h = 14695981039346656037ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

/* Seq order is checked by record_parse_batch; this catches an envelope
 * delivered again under another seq. */
static int seen_before(struct trigger_sub *s, const char *id)
{
	uint64_t h;
	unsigned n;

	if (!id || !*id)
		return 0;
	h = id_hash(id);
	n = s->nrecent < RECENT_IDS ? s->nrecent : RECENT_IDS;
	for (unsigned i = 0; i < n; i++)
		if (s->recent[i] == h)
			return 1;
	s->recent[s->nrecent++ % RECENT_IDS] = h;
	return 0;
}

static void on_record(void *arg, const struct trigger_record *rec)
{
	struct trigger_sub *s = arg;

	if (closing(s) || seen_before(s, rec->id))
		return;
	s->got_records = 1;
	s->cb.record(s->arg, rec);
}

static int stop_with(struct trigger_sub *s, enum sub_stop why, const char *msg,
		     size_t len)
{
	s->stop = why;
	snprintf(s->stop_msg, sizeof(s->stop_msg), "%.*s", (int)len, msg);
	return 1;
}

static int on_batch(struct trigger_sub *s, const struct sse_event *ev)
{
	long long tail = -1;

	if (record_parse_batch(ev->data, ev->data_len, &s->last_seq, &tail,
			       on_record, s))
		return stop_with(s, STOP_BAD, "malformed batch event", 21);
	if (tail >= 0 && tail <= s->last_seq + 1)
		caught_up(s);
	return 0;
}

static int on_v1_record(struct trigger_sub *s, const struct sse_event *ev)
{
	if (record_parse_v1(ev->id, ev->data, ev->data_len, &s->last_seq,
			    &s->v1cur, on_record, s))
		return stop_with(s, STOP_BAD, "v1 event without a Redis id", 27);
	return 0;
}

static int on_event(void *arg, const struct sse_event *ev)
{
	struct trigger_sub *s = arg;

	if (closing(s))
		return 1;
	if (!s->got_event) {
		s->got_event = 1;
		s->backoff = 0;         /* the connection works */
	}
	if (s->conn_v1 && !*ev->type && strcmp(ev->data, "[DONE]") != 0)
		return on_v1_record(s, ev);
	if (!strcmp(ev->type, "batch"))
		return on_batch(s, ev);
	if (!strcmp(ev->type, "ping")) {
		caught_up(s);
		return 0;
	}
	if (!strcmp(ev->type, "error"))
		return stop_with(s, STOP_ERROR, ev->data, ev->data_len);
	if (!*ev->type && !strcmp(ev->data, "[DONE]")) {
		caught_up(s);
		return stop_with(s, STOP_DONE, "", 0);
	}
	return 0;
}

static void sub_headers(struct tc_xfer *x, long status)
{
	struct trigger_sub *s = tc_container_of(x, struct trigger_sub, xfer);

	s->last_byte = tc_now_ms();
	if (status < 200 || status >= 300)
		return;
	s->headers_ok = 1;
	s->not_found_since = 0;
	s->conn_v1 = !x->ans.stream_v2;
	if (s->conn_v1) {
		s->v1 = 1;
		record_v1_connect(&s->v1cur, s->last_seq);
	}
	if (s->reconnecting) {
		s->reconnecting = 0;
		emit(s, TRIGGER_SUB_CONNECTED, NULL);
	}
	if (!s->caught_up)
		sub_arm(s);     /* the quiet fallback starts now */
}

static int keep_errbody(struct trigger_sub *s, const char *buf, size_t len)
{
	if (!s->errbody && !(s->errbody = malloc(ERRBODY_MAX)))
		return 0;
	if (len > ERRBODY_MAX - s->errlen)
		len = ERRBODY_MAX - s->errlen;
	memcpy(s->errbody + s->errlen, buf, len);
	s->errlen += len;
	return 0;
}

static int sub_data(struct tc_xfer *x, const char *buf, size_t len)
{
	struct trigger_sub *s = tc_container_of(x, struct trigger_sub, xfer);
	int rc;

	s->last_byte = tc_now_ms();
	if (closing(s))
		return 1;
	if (!s->headers_ok)
		return keep_errbody(s, buf, len);
	rc = sse_parser_feed(s->sse, buf, len);
	if (rc < 0)
		return stop_with(s, STOP_BAD, "event larger than 16 MiB", 24);
	return rc;
}

/* Whether a 404 marked x-should-retry is still worth another look. */
static int not_found_again(struct trigger_sub *s)
{
	int64_t now = tc_now_ms();

	if (!s->not_found_since)
		s->not_found_since = now;
	return now - s->not_found_since < TC_NOT_FOUND_RETRY_MS;
}

static void sub_xfer_done(struct tc_xfer *x, CURLcode rc)
{
	struct trigger_sub *s = tc_container_of(x, struct trigger_sub, xfer);
	struct trigger_result res = { .code = TRIGGER_E_SERVER };
	json_t *body;

	s->state = S_IDLE;
	if (closing(s))
		return;         /* the unsubscribe command is on its way */
	switch (s->stop) {
	case STOP_DONE:
		sub_resume(s);
		return;
	case STOP_BAD:
		res.code = TRIGGER_E_PROTOCOL;
		/* fall through */
	case STOP_ERROR:
		snprintf(res.error, sizeof(res.error), "%s", s->stop_msg);
		sub_trouble(s, &res);
		return;
	case STOP_NONE:
		break;
	}
	if (rc == CURLE_OK && s->headers_ok) {
		sub_resume(s);  /* a clean close */
		return;
	}
	tc_result_fill(&res, x, rc, s->errbody, s->errlen, &body);
	if (rc == CURLE_OK && x->status == 404 && x->ans.should_retry &&
	    not_found_again(s))
		res.code = TRIGGER_E_SERVER;    /* to be retried as such */
	sub_trouble(s, &res);
	json_decref(body);
}

static const struct tc_xfer_ops sub_ops = {
	.headers = sub_headers,
	.data = sub_data,
	.done = sub_xfer_done,
};

static struct curl_slist *sub_headers_list(struct trigger_sub *s,
					   const char *auth_line)
{
	struct curl_slist *h = tc_headers(s->c, auth_line, "text/event-stream", 0);

	if (h)
		h = tc_header_add(h, "Timeout-Seconds: %d", s->c->sse_timeout_s);
	if (h)
		h = tc_header_add(h, "Cache-Control: no-cache");
	if (h)
		h = tc_header_add(h, "x-trigger-realtime-streams-version: v2");
	/* v1: the id of our last record, or none (from the start, counting);
	 * while the framing is unknown, the seq (a Redis id far in the past
	 * to a v1 stream: it too reads from the start). */
	if (h && s->v1 && s->v1cur.id[0])
		h = tc_header_add(h, "Last-Event-ID: %s", s->v1cur.id);
	else if (h && !s->v1 && s->last_seq >= 0)
		h = tc_header_add(h, "Last-Event-ID: %lld", s->last_seq);
	return h;
}

static void sub_connect(struct trigger_sub *s)
{
	trigger_client *c = s->c;
	struct tc_xfer_spec spec = { .url = s->url };
	struct trigger_result res;
	const char *line;
	int64_t hold = (int64_t)c->sse_timeout_s * 1000;
	int rc = tc_auth_line(c, &s->scope, 1, &line, &s->wait, &res);

	if (rc == TC_AUTH_PENDING) {
		s->state = S_AUTH;
		return;
	}
	if (rc) {
		sub_trouble(s, &res);
		return;
	}
	spec.hdrs = sub_headers_list(s, line);
	sse_parser_reset(s->sse);
	s->stop = STOP_NONE;
	s->headers_ok = s->got_event = s->got_records = 0;
	s->errlen = 0;
	if (tc_xfer_start(c, &s->xfer, &spec)) {
		tc_result_set(&res, TRIGGER_E_NOMEM, "out of memory");
		sub_trouble(s, &res);
		return;
	}
	s->state = S_OPEN;
	s->opened_at = s->last_byte = tc_now_ms();
	s->reopen_at = hold > 2 * REOPEN_EARLY_MS ?
		       s->opened_at + hold - REOPEN_EARLY_MS : 0;
	sub_arm(s);
}

static void sub_on_auth(struct tc_waiter *w, const struct trigger_result *fail)
{
	struct trigger_sub *s = tc_container_of(w, struct trigger_sub, wait);

	s->state = S_IDLE;
	if (fail)
		sub_trouble(s, fail);
	else
		sub_connect(s);
}

/* ---- commands and the public functions -------------------------------- */

static void sub_start_cmd(trigger_client *c, struct tc_cmd *cmd)
{
	struct trigger_sub *s = tc_container_of(cmd, struct trigger_sub, start_cmd);
	struct trigger_result res = { .code = TRIGGER_E_CANCELLED };

	if (c->down) {
		snprintf(res.error, sizeof(res.error), "the client shut down");
		sub_close(s, &res, 0);
		return;
	}
	tc_link_add_tail(&c->subs, &s->link);
	if (tc_timer_reserve(c)) {
		tc_result_set(&res, TRIGGER_E_NOMEM, "out of memory");
		sub_fail(s, &res);
		return;
	}
	s->reserved = 1;
	if (!closing(s))
		sub_connect(s);
}

static void sub_unsub_cmd(trigger_client *c, struct tc_cmd *cmd)
{
	struct trigger_sub *s = tc_container_of(cmd, struct trigger_sub, unsub_cmd);
	struct trigger_result res = { .code = TRIGGER_OK };

	(void)c;
	snprintf(res.error, sizeof(res.error), "unsubscribed");
	sub_close(s, &res, 1);
}

static trigger_sub *subscribe(trigger_client *c, const char *run_id,
			      const char *stream_id, int output,
			      long long after_seq,
			      const struct trigger_sub_callbacks *cb, void *arg)
{
	trigger_sub *s;

	if (!c || !run_id || !*run_id || !stream_id || !*stream_id || !cb ||
	    !cb->record || !cb->event || tc_cred_check(c, NULL, NULL, NULL))
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->c = c;
	s->cb = *cb;
	s->arg = arg;
	s->last_seq = after_seq < 0 ? -1 : after_seq;
	s->start_cmd.fn = sub_start_cmd;
	s->unsub_cmd.fn = sub_unsub_cmd;
	s->xfer.ops = &sub_ops;
	s->timer.fn = sub_on_timer;
	s->wait.fn = sub_on_auth;
	tc_link_init(&s->link);
	s->url = output ? tc_url(c->stream_base, "/realtime/v1/streams/%s/%s",
				 run_id, stream_id)
			: tc_stream_url(c, run_id, stream_id);
	s->sse = sse_parser_new(MAX_EVENT, on_event, s);
	if (asprintf(&s->scope, "read:runs:%s", run_id) < 0)
		s->scope = NULL;
	if (!s->url || !s->sse || !s->scope) {
		sub_free(s);
		return NULL;
	}
	tc_post(c, &s->start_cmd);
	return s;
}

trigger_sub *trigger_subscribe(trigger_client *c, const char *run_id,
			       const char *stream_id, long long after_seq,
			       const struct trigger_sub_callbacks *cb,
			       void *arg)
{
	return subscribe(c, run_id, stream_id, 0, after_seq, cb, arg);
}

trigger_sub *trigger_subscribe_output(trigger_client *c, const char *run_id,
				      const char *stream_id, long long after_seq,
				      const struct trigger_sub_callbacks *cb,
				      void *arg)
{
	return subscribe(c, run_id, stream_id, 1, after_seq, cb, arg);
}

void trigger_unsubscribe(trigger_sub *s)
{
	if (!s)
		return;
	atomic_store(&s->closing, 1);
	tc_post_once(s->c, &s->unsub_cmd, &s->unsub_posted);
}
