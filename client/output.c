/*
 * Appending to a run's output stream (streams v2) as the SDK's
 * streams.writer does: PUT /realtime/v1/streams/<run>/self/<stream> for the
 * stream's S2 credentials (secret key only), then POST the records to S2
 * directly, each value one record whose body is {"data":<value>,"id":<7
 * chars>}.
 *
 * Batching: the SDK lingers X-S2-Flush-Interval-Ms before every batch, as
 * its writes return before anything is stored.  Here a value's callback
 * means "stored", and a writer waits for it, so lingering on an idle
 * stream would only add its length to every write.  So an idle stream
 * sends at once (the values submitted together, a write's, go together),
 * and values submitted while a batch is on its way (one at a time per
 * stream, so S2 stores them in order) collect and go together in the next
 * one: they linger for as long as the append before them takes.
 *
 * Order: values of one stream are stored in the order submitted; when a
 * batch fails, every value queued behind it fails too, so nothing is
 * stored after a value that was not.  A value submitted with `fresh` asks
 * for the credentials again first, so that a finished run refuses it.
 *
 * No batch is stored twice, though an append whose answer was lost is
 * sent again: see "was it stored?" below.
 *
 * Everything below runs on the event thread except trigger_output_append.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "url.h"

#define BATCH_RECORDS 1000              /* S2's limits per append */
#define BATCH_BYTES ((size_t)1 << 20)   /* metered: body + 8 per record */
#define RECORD_OVERHEAD 8
#define OUT_IDLE_MS 600000              /* forget credentials unused this long */

struct out_item {
	struct tc_cmd cmd;
	struct out_item *next;
	trigger_client *c;
	char *run, *name, *key;
	char *json;                     /* the record's body */
	size_t len;
	char id[8];                     /* its envelope id, random */
	int fresh;
	int64_t deadline;
	trigger_done_fn done;
	void *arg;
};

struct out_stream {
	struct tc_map_node node;        /* key: "<run>\n<stream>" */
	struct tc_link link;            /* in the module's list */
	trigger_client *c;
	char *key, *run, *name;
	/* credentials from the PUT */
	char *auth_line, *basin, *url;
	int putting, have_creds, reput;
	/* values waiting, and the batch on its way */
	struct out_item *head, *tail, *batch;
	size_t nbatch;
	char *body;
	struct tc_xfer xfer;
	char *resp;
	size_t resp_len;
	struct tc_timer timer;          /* send the next batch (now, or a retry),
					   or act on a check */
	int64_t backoff, idle_at;
	struct trigger_result trouble;
	/* was it stored? */
	long long next_seq;             /* S2's tail as last learned: the
					   match_seq_num of every append */
	int unsure;                     /* an attempt of the batch may have
					   been stored (its answer was lost) */
	enum { CK_NONE, CK_READING, CK_STORED, CK_NOT_STORED, CK_FAILED } ck;
	long long ck_tail;              /* the tail the 412 gave */
	struct out_check *check;        /* CK_READING */
};

struct tc_output {
	struct tc_map streams;
	struct tc_link live;
};

static void out_pump(struct out_stream *os);

/* ---- completion ---------------------------------------------------------- */

static void item_free(struct out_item *it)
{
	free(it->run);
	free(it->name);
	free(it->key);
	free(it->json);
	free(it);
}

static void items_finish(struct out_item *it, size_t n,
			 const struct trigger_result *res)
{
	while (it && n--) {
		struct out_item *next = it->next;

		it->done(it->arg, res);
		item_free(it);
		it = next;
	}
}

/* The batch is over (stored or failed): answer its values. */
static void batch_finish(struct out_stream *os, const struct trigger_result *res)
{
	struct out_item *it = os->batch;

	os->batch = NULL;
	os->unsure = 0;
	free(os->body);
	os->body = NULL;
	os->backoff = 0;
	os->idle_at = tc_now_ms();
	items_finish(it, os->nbatch, res);
	os->nbatch = 0;
}

/* Everything waiting fails with res (the credentials cannot be had). */
static void pending_fail(struct out_stream *os, const struct trigger_result *res)
{
	struct out_item *it = os->head;

	os->head = os->tail = NULL;
	items_finish(it, (size_t)-1, res);
}

/* ---- the PUT: the stream's S2 credentials --------------------------------- */

static const char *hdr(const struct trigger_result *res, const char *name)
{
	return json_string_value(json_object_get(res->headers, name));
}

static int take_creds(struct out_stream *os, const struct trigger_result *res)
{
	const char *token = hdr(res, "x-s2-access-token");
	const char *basin = hdr(res, "x-s2-basin");
	const char *endpoint = hdr(res, "x-s2-endpoint");
	const char *name = hdr(res, "x-s2-stream-name");
	char *ename = NULL;

	if (!token || !basin)
		return -1;      /* a v1 run: its appends would store strings */
	free(os->auth_line);
	free(os->basin);
	free(os->url);
	os->url = NULL;
	ename = url_escape_segment(name ? name : os->name);
	if (asprintf(&os->auth_line, "Authorization: Bearer %s", token) < 0)
		os->auth_line = NULL;
	os->basin = strdup(basin);
	/* The cloud's per-basin endpoint when none is given. */
	if (ename && (endpoint ? asprintf(&os->url, "%s/streams/%s/records",
					  endpoint, ename)
			       : asprintf(&os->url, "https://%s.b.s2.dev/v1/streams/%s/records",
					  basin, ename)) < 0)
		os->url = NULL;
	free(ename);
	os->have_creds = os->auth_line && os->basin && os->url;
	return os->have_creds ? 0 : -1;
}

static void put_done(void *arg, const struct trigger_result *res)
{
	struct out_stream *os = arg;
	struct trigger_result bad;

	os->putting = 0;
	if (res->code == TRIGGER_OK && take_creds(os, res)) {
		bad = *res;
		bad.body = NULL;
		tc_result_set(&bad, TRIGGER_E_PROTOCOL, "the run's streams are v1 "
			      "(no S2 credentials); output streams need v2");
		res = &bad;
	}
	if (res->code != TRIGGER_OK) {
		os->have_creds = 0;
		if (os->batch)
			batch_finish(os, res);
		pending_fail(os, res);
		return;
	}
	out_pump(os);
}

static void put_start(struct out_stream *os)
{
	trigger_client *c = os->c;
	struct tc_call call = { .method = "PUT", .header_prefix = "x-s2-" };
	struct trigger_result res = { 0 };
	int rc;

	call.url = tc_url(c->url, "/realtime/v1/streams/%s/self/%s", os->run, os->name);
	os->putting = 1;
	os->reput = 0;
	rc = call.url ? tc_call(c, &call, put_done, os) : TRIGGER_E_NOMEM;
	if (rc) {
		tc_result_set(&res, rc, "%s", trigger_strerror(rc));
		put_done(os, &res);
	}
}

/* ---- the S2 append ------------------------------------------------------- */

static int out_data(struct tc_xfer *x, const char *buf, size_t len)
{
	struct out_stream *os = tc_container_of(x, struct out_stream, xfer);
	char *p;

	if (os->resp_len + len > 65536)
		return 1;
	p = realloc(os->resp, os->resp_len + len + 1);
	if (!p)
		return 1;
	os->resp = p;
	memcpy(os->resp + os->resp_len, buf, len);
	os->resp_len += len;
	return 0;
}

static void keep_trouble(struct out_stream *os, const struct trigger_result *res)
{
	os->trouble = *res;
	os->trouble.body = NULL;
	os->trouble.headers = NULL;
}

static void retry_later(struct out_stream *os, const struct trigger_result *res)
{
	int64_t now = tc_now_ms(), at = now + tc_backoff(os->c, &os->backoff);

	keep_trouble(os, res);
	if (at > os->batch->deadline)
		at = os->batch->deadline;
	tc_timer_arm(os->c, &os->timer, at);
}

/* ---- was it stored? --------------------------------------------------------
 *
 * Every append carries match_seq_num = os->next_seq, where S2's tail is
 * believed to be: S2 stores a batch only if its first record gets that
 * number, else it stores nothing and answers 412 {"seq_num_mismatch":
 * <the tail>}.  The tail starts as a guess (0) and is learned from every
 * ack and every 412; a 412 to an append whose fate is known just corrects
 * it, and the batch goes again at once.  So a batch sent with match E is
 * stored at E or not at all, and never once the tail has passed E.
 *
 * An append whose answer was lost (unsure) goes again with the same E:
 *   - 200: this attempt stored it; the lost one no longer can.
 *   - 412 with tail T: the lost attempt was stored iff the record at E is
 *     the batch's first.  T == E + n alone cannot tell: another writer
 *     (the task itself) may have stored n records instead.  So the record
 *     at E is read, through the API's read route (S2 tokens from the API
 *     may only append), and its envelope id, random per record, compared
 *     with ours: ours -> stored, done; another -> not stored, and with
 *     the tail past E never will be: sent again with match T.
 *   - the record cannot be read (refused, not there, the send timeout):
 *     the batch fails, maybe stored, rather than being sent blind.
 */

struct out_check {              /* lives until its subscription's CLOSED */
	trigger_sub *sub;
	struct out_stream *os;  /* NULL once the batch stopped waiting */
};

/* The batch stops waiting for the read (which frees itself at CLOSED). */
static void check_detach(struct out_stream *os, int unsubscribe)
{
	struct out_check *v = os->check;

	os->check = NULL;
	v->os = NULL;
	if (unsubscribe)
		trigger_unsubscribe(v->sub);
}

/* The read is over: act on ck from the timer, outside its callbacks. */
static void check_over(struct out_stream *os, int ck,
		       const struct trigger_result *res, int unsubscribe)
{
	if (res)
		keep_trouble(os, res);
	os->ck = ck;
	tc_timer_arm(os->c, &os->timer, tc_now_ms());
	check_detach(os, unsubscribe);
}

static void check_record(void *arg, const struct trigger_record *rec)
{
	struct out_check *v = arg;
	struct out_stream *os = v->os;

	if (os && rec->seq >= os->next_seq)
		check_over(os, rec->seq == os->next_seq &&
			       !strcmp(rec->id, os->batch->id)
			       ? CK_STORED : CK_NOT_STORED, NULL, 1);
}

static void check_event(void *arg, enum trigger_sub_event ev,
			const struct trigger_result *res)
{
	struct out_check *v = arg;
	struct out_stream *os = v->os;
	struct trigger_result none = { .code = TRIGGER_E_PROTOCOL };

	if (os && ev == TRIGGER_SUB_CAUGHT_UP) {
		snprintf(none.error, sizeof(none.error), "S2's tail is past "
			 "record %lld, the stream does not hold it", os->next_seq);
		check_over(os, CK_FAILED, &none, 1);
	} else if (os && (ev == TRIGGER_SUB_FAILED || ev == TRIGGER_SUB_CLOSED)) {
		check_over(os, CK_FAILED, res, 0);
	} else if (os && ev == TRIGGER_SUB_RECONNECTING && res) {
		keep_trouble(os, res);
	}
	if (ev == TRIGGER_SUB_CLOSED)
		free(v);
}

static const struct trigger_sub_callbacks check_cb = {
	.record = check_record,
	.event = check_event,
};

/* A 412 to an unsure batch: read the record at os->next_seq. */
static void check_start(struct out_stream *os)
{
	struct out_check *v = calloc(1, sizeof(*v));
	struct trigger_result res = { .code = TRIGGER_E_NOMEM };

	if (v) {
		v->os = os;
		os->check = v;
		os->ck = CK_READING;
		v->sub = trigger_subscribe_output(os->c, os->run, os->name,
						  os->next_seq - 1, &check_cb, v);
	}
	if (!v || !v->sub) {
		os->check = NULL;
		free(v);
		tc_result_set(&res, TRIGGER_E_NOMEM, "cannot read the stream to "
			      "see whether a batch was stored");
		keep_trouble(os, &res);
		os->ck = CK_FAILED;
		tc_timer_arm(os->c, &os->timer, tc_now_ms());
		return;
	}
	tc_timer_arm(os->c, &os->timer, os->batch->deadline);
}

/* From the timer: the check's verdict, or the deadline while reading. */
static void check_done(struct out_stream *os)
{
	int ck = os->ck;
	struct trigger_result res = os->trouble;

	os->ck = CK_NONE;
	if (ck == CK_READING) {         /* the send timeout came first */
		check_detach(os, 1);
		if (!res.code)
			tc_result_set(&res, TRIGGER_E_TIMEOUT, "no answer within "
				      "the send timeout");
		ck = CK_FAILED;
	}
	os->next_seq = os->ck_tail;
	if (ck == CK_STORED) {
		struct trigger_result ok = { .code = TRIGGER_OK };

		batch_finish(os, &ok);
	} else if (ck == CK_NOT_STORED) {
		os->unsure = 0;
		free(os->body);         /* it goes again with the new match */
		os->body = NULL;
	} else {
		batch_finish(os, &res);
		pending_fail(os, &res);
	}
	out_pump(os);
}

/* An ack: the next append goes where the stream's tail is now. */
static void learn_tail(struct out_stream *os, json_t *ack)
{
	json_t *t = json_object_get(json_object_get(ack, "tail"), "seq_num");

	if (!json_is_integer(t))
		t = json_object_get(json_object_get(ack, "end"), "seq_num");
	/* Without it, a guess that the next 412 corrects. */
	os->next_seq = json_is_integer(t) ? json_integer_value(t)
					  : os->next_seq + (long long)os->nbatch;
}

/* A 412: the tail is T; was the batch stored by an earlier attempt? */
static void mismatch(struct out_stream *os, json_t *body)
{
	json_t *t = json_object_get(body, "seq_num_mismatch");
	struct trigger_result res = { .code = TRIGGER_E_PROTOCOL, .status = 412 };

	/* A tail equal to the match sent would make a loop, not progress. */
	if (!json_is_integer(t) || json_integer_value(t) < 0 ||
	    json_integer_value(t) == os->next_seq) {
		tc_result_set(&res, TRIGGER_E_PROTOCOL, "S2 answered 412 "
			      "without another tail");
		batch_finish(os, &res);
		pending_fail(os, &res);
		out_pump(os);
		return;
	}
	os->ck_tail = json_integer_value(t);
	if (os->unsure && os->ck_tail > os->next_seq) {
		check_start(os);
		return;
	}
	os->ck = CK_NOT_STORED;         /* not ours: nothing was stored */
	check_done(os);
}

static void out_xfer_done(struct tc_xfer *x, CURLcode rc)
{
	struct out_stream *os = tc_container_of(x, struct out_stream, xfer);
	struct trigger_result res;
	json_t *body;

	tc_result_fill(&res, x, rc, os->resp, os->resp_len, &body);
	os->resp_len = 0;
	if ((res.status == 401 || res.status == 403) && !os->reput) {
		os->have_creds = 0;     /* expired S2 token: ask again, once */
		os->reput = 1;
		json_decref(body);
		out_pump(os);
		return;
	}
	if (res.status == 412) {
		mismatch(os, body);
		json_decref(body);
		return;
	}
	if (res.code != TRIGGER_OK && tc_retryable(rc, res.status) &&
	    !os->c->down && tc_now_ms() < os->batch->deadline) {
		os->unsure = 1;         /* it may have reached S2 */
		retry_later(os, &res);
		json_decref(body);
		return;
	}
	if (res.code == TRIGGER_OK)
		learn_tail(os, body);
	if (res.code == TRIGGER_E_TIMEOUT && os->trouble.code)
		res = os->trouble;
	batch_finish(os, &res);
	if (res.code != TRIGGER_OK)
		pending_fail(os, &res);
	json_decref(body);
	out_pump(os);
}

static const struct tc_xfer_ops out_ops = {
	.data = out_data,
	.done = out_xfer_done,
};

/* The records of the batch as S2's JSON append input, stored only at
 * seq match. */
static char *batch_body(struct out_item *it, size_t n, long long match)
{
	json_t *recs = json_array();
	json_t *o = json_pack("{s:o,s:I}", "records", recs, "match_seq_num",
			      (json_int_t)match);
	char *text;
	size_t done = 0;

	for (; o && it && done < n; it = it->next, done++)
		if (json_array_append_new(recs, json_pack("{s:s%}", "body",
							  it->json, it->len)))
			break;  /* not UTF-8, or no memory: no batch */
	text = o && done == n ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return text;
}

/* Take the values at the head that fit one append. */
static void batch_take(struct out_stream *os)
{
	size_t bytes = 0;
	struct out_item *it = os->head, *last = NULL;

	os->batch = it;
	os->nbatch = 0;
	while (it && os->nbatch < BATCH_RECORDS &&
	       (os->nbatch == 0 || !it->fresh) &&
	       (os->nbatch == 0 || bytes + it->len + RECORD_OVERHEAD <= BATCH_BYTES)) {
		bytes += it->len + RECORD_OVERHEAD;
		os->nbatch++;
		last = it;
		it = it->next;
	}
	os->head = it;
	if (!it)
		os->tail = NULL;
	last->next = NULL;
}

static void batch_send(struct out_stream *os)
{
	struct tc_xfer_spec s = { .url = os->url, .post = 1 };
	struct trigger_result res = { 0 };

	if (!os->body)
		os->body = batch_body(os->batch, os->nbatch, os->next_seq);
	s.body = os->body;
	s.body_len = os->body ? strlen(os->body) : 0;
	s.once = 1;
	s.hdrs = os->body ? tc_headers(os->c, os->auth_line, "application/json", 1) : NULL;
	if (s.hdrs)
		s.hdrs = tc_header_add(s.hdrs, "S2-Format: raw");
	if (s.hdrs)
		s.hdrs = tc_header_add(s.hdrs, "S2-Basin: %s", os->basin);
	s.timeout_ms = os->batch->deadline - tc_now_ms();
	if (s.timeout_ms < 1)
		s.timeout_ms = 1;
	if (tc_xfer_start(os->c, &os->xfer, &s)) {
		tc_result_set(&res, TRIGGER_E_NOMEM, "out of memory");
		batch_finish(os, &res);
		out_pump(os);
	}
}

/* Move on: credentials first, then the next batch. */
static void out_pump(struct out_stream *os)
{
	if (os->putting || os->xfer.easy || os->check || os->c->down)
		return;
	if (!os->batch && !os->head)
		return;
	if (!os->have_creds || (!os->batch && os->head->fresh)) {
		if (!os->batch && os->head)
			os->head->fresh = 0;
		put_start(os);
		return;
	}
	if (!os->batch)
		batch_take(os);
	batch_send(os);
}

static void out_on_timer(struct tc_timer *t)
{
	struct out_stream *os = tc_container_of(t, struct out_stream, timer);

	if (os->ck != CK_NONE)
		check_done(os);
	else
		out_pump(os);
}

/* ---- streams and submission -------------------------------------------- */

static void stream_free(struct out_stream *os)
{
	free(os->key);
	free(os->run);
	free(os->name);
	free(os->auth_line);
	free(os->basin);
	free(os->url);
	free(os->resp);
	free(os->body);
	free(os);
}

static int out_idle(struct tc_map_node *n, void *now)
{
	struct out_stream *os = tc_container_of(n, struct out_stream, node);

	if (os->head || os->batch || os->putting ||
	    *(int64_t *)now - os->idle_at < OUT_IDLE_MS)
		return 0;
	tc_link_del(&os->link);
	tc_timer_cancel(os->c, &os->timer);
	tc_timer_unreserve(os->c);
	stream_free(os);
	return 1;
}

static struct tc_output *module(trigger_client *c)
{
	if (!c->output) {
		c->output = calloc(1, sizeof(struct tc_output));
		if (c->output)
			tc_link_init(&c->output->live);
	}
	return c->output;
}

static struct out_stream *stream_get(trigger_client *c, struct out_item *it)
{
	struct tc_output *m = module(c);
	struct tc_map_node *n = m ? tc_map_find(&m->streams, it->key) : NULL;
	struct out_stream *os;
	int64_t now = tc_now_ms();

	if (n || !m)
		return n ? tc_container_of(n, struct out_stream, node) : NULL;
	if (m->streams.n >= 64)
		tc_map_sweep(&m->streams, out_idle, &now);
	os = calloc(1, sizeof(*os));
	if (!os || tc_timer_reserve(c)) {
		free(os);
		return NULL;
	}
	os->c = c;
	os->key = it->key;
	os->run = it->run;
	os->name = it->name;
	it->key = it->run = it->name = NULL;
	os->node.key = os->key;
	os->xfer.ops = &out_ops;
	os->timer.fn = out_on_timer;
	tc_map_add(&m->streams, &os->node);
	tc_link_add_tail(&m->live, &os->link);
	return os;
}

static void append_cmd(trigger_client *c, struct tc_cmd *cmd)
{
	struct out_item *it = tc_container_of(cmd, struct out_item, cmd);
	struct out_stream *os = c->down ? NULL : stream_get(c, it);
	struct trigger_result res = { 0 };

	if (!os) {
		tc_result_set(&res, c->down ? TRIGGER_E_CANCELLED : TRIGGER_E_NOMEM,
			      c->down ? "the client shut down" : "out of memory");
		items_finish(it, 1, &res);
		return;
	}
	if (os->tail)
		os->tail->next = it;
	else
		os->head = it;
	os->tail = it;
	/* After the commands queued with it: the other values of the same
	 * write go in the same batch. */
	if (!os->timer.slot)
		tc_timer_arm(c, &os->timer, tc_now_ms());
}

/* A record body as the SDK's encodeChunk writes it; id gets its id. */
static char *record_text(trigger_client *c, const char *json, size_t len,
			 char id[8])
{
	static const char alphabet[] =
		"useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict";
	char hex[15], *text = malloc(len + sizeof("{\"data\":,\"id\":\"1234567\"}"));

	tc_random_hex(c, hex, 14);
	for (int i = 0; i < 7; i++)
		id[i] = alphabet[strtoul((char[]){ hex[2 * i], hex[2 * i + 1], 0 },
					 NULL, 16) & 63];
	id[7] = '\0';
	if (text)
		sprintf(text, "{\"data\":%.*s,\"id\":\"%s\"}", (int)len, json, id);
	return text;
}

static void append_cmd_first(trigger_client *c, struct tc_cmd *cmd)
{
	struct out_item *it = tc_container_of(cmd, struct out_item, cmd);
	char *text = c->down ? NULL : record_text(c, it->json, it->len, it->id);

	if (text) {
		free(it->json);
		it->json = text;
		it->len = strlen(text);
	}
	append_cmd(c, cmd);
}

int trigger_output_append(trigger_client *c, const char *run_id,
			  const char *stream_id, const char *json, size_t len,
			  int fresh, trigger_done_fn done, void *arg)
{
	struct out_item *it;
	int rc;

	if (!c || !done || !run_id || !*run_id || !stream_id || !*stream_id ||
	    !json || !len)
		return TRIGGER_E_INVALID;
	if (len + 32 > BATCH_BYTES - 1024)
		return TRIGGER_E_TOO_LARGE;
	/* The PUT takes a secret key only. */
	if (!trigger_cred_is_secret(c->cred))
		return TRIGGER_E_FORBIDDEN;
	rc = tc_cred_check(c, NULL, NULL, NULL);
	if (rc)
		return rc;
	it = calloc(1, sizeof(*it));
	if (!it)
		return TRIGGER_E_NOMEM;
	it->c = c;
	it->run = strdup(run_id);
	it->name = strdup(stream_id);
	it->json = strndup(json, len);
	it->len = len;
	it->fresh = fresh;
	it->done = done;
	it->arg = arg;
	it->deadline = tc_now_ms() + c->send_timeout_ms;
	if (asprintf(&it->key, "%s\n%s", run_id, stream_id) < 0)
		it->key = NULL;
	if (!it->run || !it->name || !it->json || !it->key) {
		item_free(it);
		return TRIGGER_E_NOMEM;
	}
	it->cmd.fn = append_cmd_first;
	tc_post(c, &it->cmd);
	return 0;
}

/* At shutdown: every value waiting or on its way is cancelled. */
void tc_output_shutdown(trigger_client *c)
{
	struct tc_output *m = c->output;
	struct trigger_result res = { .code = TRIGGER_E_CANCELLED };

	snprintf(res.error, sizeof(res.error), "the client shut down");
	while (m && m->live.next != &m->live) {
		struct out_stream *os = tc_container_of(m->live.next,
							struct out_stream, link);

		tc_xfer_stop(c, &os->xfer);
		if (os->check)
			check_detach(os, 1);
		tc_timer_cancel(c, &os->timer);
		tc_timer_unreserve(c);
		tc_link_del(&os->link);
		tc_map_del(&m->streams, &os->node);
		if (os->batch)
			batch_finish(os, &res);
		pending_fail(os, &res);
		stream_free(os);
	}
}

static void out_node_free(struct tc_map_node *n)
{
	stream_free(tc_container_of(n, struct out_stream, node));
}

void tc_output_destroy(trigger_client *c)
{
	if (c->output)
		tc_map_destroy(&c->output->streams, out_node_free);
	free(c->output);
	c->output = NULL;
}
