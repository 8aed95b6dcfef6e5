/*
 * Requests on the event thread: the credential for each attempt (a secret
 * key is sent only to the routes that take nothing else, the claims and
 * public-token routes; everything else carries a JWT for exactly its
 * scopes, cached: minted on the server's clock with a root key, asked of
 * the API with an additional key, whose signatures the server does not
 * accept), attempts retried with backoff until the request's deadline
 * (a 429 waits for its reset, a 404 the server marks x-should-retry is
 * retried for a while, and a public token's requests under /api/ are
 * paced to its rate limit), one send at a time per (run, stream) so
 * they are stored in the order submitted, a send whose outcome is unknown
 * looked up in its stream before it is repeated (the API stores a repeated
 * send twice), and the public request functions, which build everything
 * on the caller's thread.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cred.h"
#include "http.h"
#include "url.h"
#include "valuehash.h"

#define JWT_LIFETIME_S 300
#define JWT_RENEW_S 60          /* re-mint when less than this remains */
#define JWT_STILL_OK_S 5        /* an old token is used while renewing */
#define API_TOKEN_LIFETIME "15m"        /* asked of public-tokens */
#define RATE_MARGIN_MS 250      /* after a 429's reset, to be past it */
#define MIN_ATTEMPT_MS 5000     /* an attempt after a long wait gets this */
#define LAST_TRY_MS 50          /* the time a last attempt gets */
#define SINCE_MAX 256           /* own sends remembered between two reads:
				 * past it, the next send reads the tail */
#define CLOCK_MARGIN_MS 3000    /* how far our idea of the server's clock
				 * may be ahead of it (Date has seconds) */
#define STREAM_IDLE_MS 600000   /* forget a stream unused this long */

/* A (run, stream) this client sends to: the sends waiting their turn, and
 * what it knows of the stream (see "was it stored?" below). */
struct stream {
	struct tc_map_node node;        /* key: url */
	char *url, *run, *name;
	struct tc_req *head, *tail;
	/* The stream's tail (next seq) when it was last read: since records
	 * are never removed, a lower bound of the tail ever after. */
	long long base;
	/* Or, before any read (timed), where our sends begin by the records'
	 * timestamps: none of ours is stored before from_ms (our clock, taken
	 * to the server's when records are compared, by the latest Date). */
	int timed;
	int64_t from_ms;
	int known;              /* since[] has all our sends stored from base */
	int ever_known;         /* base was learned once (see send_begin) */
	int unreadable;         /* the credential may not read it: no checks */
	uint64_t *since;        /* value hashes of those sends */
	unsigned nsince, capsince;
	int64_t idle_at;
};

struct stream_read;

/* What a timer of a request means. */
enum req_phase {
	PH_ATTEMPT,             /* backoff over: try again */
	PH_TURN,                /* a send's turn in its stream has come */
	PH_READ,                /* read the stream: was it stored? */
	PH_READING,             /* the deadline, while the stream is read */
	PH_READ_DONE,           /* the read is over: act on it */
};

struct tc_req {
	struct tc_cmd cmd;
	struct tc_link link;            /* c->reqs while live */
	trigger_client *c;
	struct tc_xfer xfer;
	struct tc_timer timer;          /* see enum req_phase */
	enum req_phase phase;
	struct tc_waiter wait;          /* for the claims */
	int post, is_send, is_claims, reserved, overflow;
	int key_only;                   /* claims, public tokens: the key */
	int api;                        /* under /api/: rate limited */
	int is_trigger;
	int64_t not_found_since;        /* first 404 with x-should-retry */
	int64_t wait_cap;               /* waits stretch the deadline to this */
	const char *method;             /* "PUT", or NULL */
	const char *hdr_prefix;         /* response headers to pass on */
	json_t *hdrs;                   /* those headers, lowercased names */
	char *url, *body;
	size_t body_len;
	char *scopes[2];
	size_t nscopes;
	long timeout_ms;
	int64_t deadline, backoff;      /* deadline counts from our turn */
	char idem[33];                  /* x-trigger-request-idempotency-key */
	char *resp;
	size_t resp_len, resp_cap;
	trigger_done_fn done;
	void *arg;

	/* sends only */
	char *run, *name;
	uint64_t vhash;                 /* json_value_hash of what is sent */
	struct stream *st;
	struct tc_req *qnext;
	struct stream_read *read;       /* the read under way, or NULL */
	int unverified;                 /* sent blindly (stream unreadable) */
	int maybe_stored;               /* an attempt may have been stored and
					 * no read has said whether */
	int verifying;                  /* the read looks for our value */
	struct trigger_result trouble;  /* the latest failure, body-less */
	struct trigger_result rd_res;   /* how the read ended */
	long long rd_from, rd_last;     /* where the read began; the last seq
					 * it saw, or -1 */
	unsigned rd_matches;            /* records holding our value */
};

struct jwt_entry {
	struct tc_map_node node;
	char *key;                      /* the scopes, '\n'-joined */
	char *line;                     /* "Authorization: Bearer <jwt>" */
	int64_t exp;                    /* on the server's clock */
	trigger_client *c;
	int fetching;                   /* asked of the public-token route */
};

static void req_attempt(struct tc_req *r);
static void req_finish(struct tc_req *r, const struct trigger_result *res);

static void req_fail(struct tc_req *r, trigger_code code, const char *msg)
{
	struct trigger_result res = { .code = code };

	snprintf(res.error, sizeof(res.error), "%s", msg);
	req_finish(r, &res);
}

/* ---- credentials ------------------------------------------------------- */

static void jwt_entry_free(struct tc_map_node *n)
{
	struct jwt_entry *e = tc_container_of(n, struct jwt_entry, node);

	free(e->key);
	free(e->line);
	free(e);
}

static int jwt_stale(struct tc_map_node *n, void *now)
{
	struct jwt_entry *e = tc_container_of(n, struct jwt_entry, node);

	if (e->fetching || e->exp - *(int64_t *)now > JWT_RENEW_S)
		return 0;
	jwt_entry_free(n);
	return 1;
}

/* Tokens of runs no longer used expire; drop them as the cache doubles. */
static void jwt_sweep(struct tc_auth *a, int64_t now)
{
	if (a->jwts.n < a->sweep_at)
		return;
	tc_map_sweep(&a->jwts, jwt_stale, &now);
	a->sweep_at = a->jwts.n * 2 > 64 ? a->jwts.n * 2 : 64;
}

static char *scopes_key(char *const *scopes, size_t n)
{
	size_t len = 1;
	char *key, *p;

	for (size_t i = 0; i < n; i++)
		len += strlen(scopes[i]) + 1;
	key = p = malloc(len);
	if (!key)
		return NULL;
	for (size_t i = 0; i < n; i++)
		p = stpcpy(stpcpy(p, scopes[i]), "\n");
	*p = '\0';
	return key;
}

static struct jwt_entry *jwt_entry_new(struct tc_auth *a, char *key)
{
	struct jwt_entry *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->key = key;
	e->node.key = key;
	if (tc_map_add(&a->jwts, &e->node)) {
		free(e);
		return NULL;
	}
	return e;
}

static char *mint_line(trigger_client *c, char *const *scopes, size_t n,
		       int64_t now)
{
	char *jwt = trigger_jwt_mint(trigger_cred_text(c->cred), c->auth.sub,
				     (const char *const *)scopes, n, now,
				     now + JWT_LIFETIME_S);
	char *line = NULL;

	if (jwt && asprintf(&line, "Authorization: Bearer %s", jwt) < 0)
		line = NULL;
	free(jwt);
	return line;
}

/* A token for these scopes with at least JWT_RENEW_S to live. */
static const char *jwt_line(trigger_client *c, char *const *scopes, size_t n)
{
	struct tc_auth *a = &c->auth;
	int64_t now = tc_server_s(c);
	char *key = scopes_key(scopes, n), *line;
	struct tc_map_node *node = key ? tc_map_find(&a->jwts, key) : NULL;
	struct jwt_entry *e = node ? tc_container_of(node, struct jwt_entry, node) : NULL;

	if (e) {
		free(key);
		key = NULL;
		if (e->exp - now > JWT_RENEW_S)
			return e->line;
	}
	line = key || e ? mint_line(c, scopes, n, now) : NULL;
	if (line && !e) {
		jwt_sweep(a, now);
		e = jwt_entry_new(a, key);
	}
	if (!e) {
		free(key);
		free(line);
		return NULL;
	}
	if (!line)
		return NULL;
	free(e->line);
	e->line = line;
	e->exp = now + JWT_LIFETIME_S;
	return line;
}

int tc_cred_check(const trigger_client *c, const char *action,
		  const char *type, const char *id)
{
	int64_t exp;

	if (trigger_cred_is_secret(c->cred))
		return 0;
	exp = trigger_cred_exp(c->cred);
	if (exp && exp <= tc_server_s(c))
		return TRIGGER_E_EXPIRED;
	if (action && !trigger_cred_allows(c->cred, action, type, id))
		return TRIGGER_E_FORBIDDEN;
	return 0;
}

static struct tc_req *req_alloc(trigger_client *c, int post,
				trigger_done_fn done, void *arg,
				long timeout_ms);
static void req_activate(trigger_client *c, struct tc_req *r);

/* Everyone waiting for a credential tries again (or fails). */
static void wake_waiters(trigger_client *c, const struct trigger_result *fail)
{
	struct tc_waiter *w = c->auth.waiters, *next;

	c->auth.waiters = NULL;
	for (; w; w = next) {
		next = w->next;
		w->fn(w, fail);
	}
}

/* The claims answer (or its failure) releases everyone waiting for it. */
static void claims_done(void *arg, const struct trigger_result *res)
{
	trigger_client *c = arg;
	const char *sub = json_string_value(json_object_get(res->body, "sub"));
	struct trigger_result bad;

	c->auth.fetching = 0;
	if (res->code == TRIGGER_OK) {
		bad = *res;
		c->auth.sub = sub ? strdup(sub) : NULL;
		if (!c->auth.sub)
			tc_result_set(&bad, sub ? TRIGGER_E_NOMEM :
				      TRIGGER_E_PROTOCOL, "%s", sub ?
				      "out of memory" : "claims without \"sub\"");
		res = &bad;
	}
	wake_waiters(c, c->auth.sub ? NULL : res);
}

/* Returns -1 when the request failed at once (claims_done has run). */
static int claims_start(trigger_client *c)
{
	struct tc_req *r = req_alloc(c, 1, claims_done, c, c->request_timeout_ms);
	struct trigger_result res = { .code = TRIGGER_E_NOMEM };

	if (r && asprintf(&r->url, "%s/api/v1/auth/jwt/claims", c->url) < 0)
		r->url = NULL;
	if (!r || !r->url) {
		free(r);
		snprintf(res.error, sizeof(res.error), "out of memory");
		claims_done(c, &res);
		return -1;
	}
	r->is_claims = r->key_only = 1;
	c->auth.fetching = 1;
	req_activate(c, r);
	return c->auth.fetching ? 0 : -1;
}

/* ---- tokens asked of the API (additional keys) ------------------------ */

static void keep_trouble(struct trigger_result *to,
			 const struct trigger_result *res);
static void req_free(trigger_client *c, struct tc_req *r);
static char *json_body(json_t *obj);

/* The waiters for e's token go on (or fail); the others keep waiting. */
static void wake_token_waiters(trigger_client *c, struct jwt_entry *e,
			       const struct trigger_result *fail)
{
	struct tc_waiter *w = c->auth.waiters, *next, **keep = &c->auth.waiters;

	c->auth.waiters = NULL;
	for (; w; w = next) {
		next = w->next;
		if (w->on == e) {
			w->fn(w, fail);
		} else {        /* w->fn above may have queued others: append */
			while (*keep)
				keep = &(*keep)->next;
			w->next = NULL;
			*keep = w;
		}
	}
}

static void token_done(void *arg, const struct trigger_result *res)
{
	struct jwt_entry *e = arg;
	trigger_client *c = e->c;
	const char *tok = json_string_value(json_object_get(res->body, "token"));
	trigger_cred *t = res->code == TRIGGER_OK && tok ?
			  trigger_cred_token(tok, NULL, 0) : NULL;
	int64_t exp = t ? trigger_cred_exp(t) : 0;
	struct trigger_result bad;
	char *line = NULL;

	e->fetching = 0;
	if (t && asprintf(&line, "Authorization: Bearer %s", tok) < 0)
		line = NULL;
	trigger_cred_free(t);
	if (line) {
		free(e->line);
		e->line = line;
		e->exp = exp ? exp : tc_server_s(c) + JWT_LIFETIME_S;
		wake_token_waiters(c, e, NULL);
		return;
	}
	keep_trouble(&bad, res);
	if (res->code == TRIGGER_OK)
		tc_result_set(&bad, TRIGGER_E_PROTOCOL, "the public-token route "
			      "answered without a token");
	wake_token_waiters(c, e, &bad);
}

/* POST /api/v1/auth/public-tokens for e's scopes.  -1 without memory. */
static int token_fetch(trigger_client *c, struct jwt_entry *e,
		       char *const *scopes, size_t n)
{
	struct tc_req *r = req_alloc(c, 1, token_done, e, c->request_timeout_ms);
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < n; i++)
		json_array_append_new(arr, json_string(scopes[i]));
	if (r && asprintf(&r->url, "%s/api/v1/auth/public-tokens", c->url) < 0)
		r->url = NULL;
	if (r && arr)
		r->body = json_body(json_pack("{s:O,s:s}", "scopes", arr,
					      "expirationTime",
					      API_TOKEN_LIFETIME));
	json_decref(arr);
	if (!r || !r->url || !r->body) {
		if (r)
			req_free(c, r);
		return -1;
	}
	r->body_len = strlen(r->body);
	r->key_only = 1;
	e->c = c;
	e->fetching = 1;
	req_activate(c, r);
	return 0;
}

/* Like jwt_line, but the token comes from the API: may have to wait. */
static int token_line(trigger_client *c, char *const *scopes, size_t n,
		      const char **line, struct tc_waiter *w,
		      struct trigger_result *res)
{
	struct tc_auth *a = &c->auth;
	int64_t now = tc_server_s(c);
	char *key = scopes_key(scopes, n);
	struct tc_map_node *node = key ? tc_map_find(&a->jwts, key) : NULL;
	struct jwt_entry *e = node ? tc_container_of(node, struct jwt_entry, node) : NULL;

	if (e) {
		free(key);
	} else if (key) {
		jwt_sweep(a, now);
		if (!(e = jwt_entry_new(a, key)))
			free(key);
	}
	if (e && e->line && e->exp - now > JWT_RENEW_S) {
		*line = e->line;
		return 0;
	}
	if (e && !e->fetching)
		token_fetch(c, e, scopes, n);
	if (!e || !e->fetching) {       /* it could not even start */
		tc_result_set(res, TRIGGER_E_NOMEM, "cannot ask for a token");
		return TRIGGER_E_NOMEM;
	}
	if (e->line && e->exp - now > JWT_STILL_OK_S) {
		*line = e->line;        /* still good while the next comes */
		return 0;
	}
	w->on = e;
	w->next = a->waiters;
	a->waiters = w;
	return TC_AUTH_PENDING;
}

int tc_auth_line(trigger_client *c, char *const *scopes, size_t n,
		 const char **line, struct tc_waiter *w,
		 struct trigger_result *res)
{
	memset(res, 0, sizeof(*res));
	if (!trigger_cred_is_secret(c->cred)) {
		if (tc_cred_check(c, NULL, NULL, NULL)) {
			tc_result_set(res, TRIGGER_E_EXPIRED, "access token "
				      "expired at %lld (Unix time)",
				      (long long)trigger_cred_exp(c->cred));
			return TRIGGER_E_EXPIRED;
		}
		*line = c->auth.key_line;
		return 0;
	}
	if (c->down) {
		tc_result_set(res, TRIGGER_E_CANCELLED, "the client shut down");
		return TRIGGER_E_CANCELLED;
	}
	if (c->extra_key)
		return token_line(c, scopes, n, line, w, res);
	if (!c->auth.sub) {
		/* The waiter joins only once the claims are on their way, so
		 * that it is never completed inside this call. */
		if (!c->auth.fetching && claims_start(c)) {
			tc_result_set(res, TRIGGER_E_NOMEM, "cannot ask for the "
				      "environment's claims");
			return TRIGGER_E_NOMEM;
		}
		w->on = NULL;
		w->next = c->auth.waiters;
		c->auth.waiters = w;
		return TC_AUTH_PENDING;
	}
	*line = jwt_line(c, scopes, n);
	if (*line)
		return 0;
	tc_result_set(res, TRIGGER_E_NOMEM, "cannot mint an access token");
	return TRIGGER_E_NOMEM;
}

int tc_auth_prefetch(trigger_client *c)
{
	/* An additional key's tokens come one by one, for their scopes. */
	if (!trigger_cred_is_secret(c->cred) || c->extra_key || c->auth.sub)
		return 0;
	if (!c->auth.fetching)
		claims_start(c);
	return 1;
}

void tc_auth_cancel(trigger_client *c, struct tc_waiter *w)
{
	for (struct tc_waiter **p = &c->auth.waiters; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			return;
		}
}

/* ---- send order -------------------------------------------------------- */

static void stream_free(struct stream *st)
{
	free(st->url);
	free(st->run);
	free(st->name);
	free(st->since);
	free(st);
}

static void stream_free_node(struct tc_map_node *n)
{
	stream_free(tc_container_of(n, struct stream, node));
}

static int stream_idle(struct tc_map_node *n, void *now)
{
	struct stream *st = tc_container_of(n, struct stream, node);

	if (st->head || *(int64_t *)now - st->idle_at < STREAM_IDLE_MS)
		return 0;
	stream_free(st);
	return 1;
}

/* The state of r's stream, made on its first send; NULL without memory. */
static struct stream *stream_get(trigger_client *c, struct tc_req *r)
{
	struct tc_map_node *n = tc_map_find(&c->streams, r->url);
	struct stream *st;
	int64_t now = tc_now_ms();

	if (n)
		return tc_container_of(n, struct stream, node);
	if (c->streams.n >= c->streams_sweep_at) {
		tc_map_sweep(&c->streams, stream_idle, &now);
		c->streams_sweep_at = c->streams.n > 32 ? c->streams.n * 2 : 64;
	}
	st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->url = strdup(r->url);
	st->run = strdup(r->run);
	st->name = strdup(r->name);
	st->node.key = st->url;
	if (!st->url || !st->run || !st->name ||
	    tc_map_add(&c->streams, &st->node)) {
		stream_free(st);
		return NULL;
	}
	return st;
}

/* Returns whether r is at the head (may start), or -1 without memory. */
static int stream_push(trigger_client *c, struct tc_req *r)
{
	struct stream *st = stream_get(c, r);

	if (!st)
		return -1;
	r->st = st;
	if (st->head) {
		st->tail->qnext = r;
		st->tail = r;
		return 0;
	}
	st->head = st->tail = r;
	return 1;
}

static void stream_remove(trigger_client *c, struct tc_req *r)
{
	struct stream *st = r->st;
	struct tc_req **p = &st->head, *prev = NULL;
	int was_head = st->head == r;

	while (*p != r) {
		prev = *p;
		p = &prev->qnext;
	}
	*p = r->qnext;
	if (st->tail == r)
		st->tail = prev;
	r->st = NULL;
	st->idle_at = tc_now_ms();
	if (st->head && was_head && !c->down) {  /* its turn, from the timer */
		st->head->deadline = tc_now_ms() + st->head->timeout_ms;
		st->head->phase = PH_TURN;
		tc_timer_arm(c, &st->head->timer, tc_now_ms());
	}
}

/* ---- was it stored? -----------------------------------------------------
 *
 * The send endpoint has no idempotency key, so a send repeated after an
 * answer that never came (the connection failed once the request was out,
 * a 5xx, a timeout) may be stored twice.  Before repeating such a send the
 * client reads the stream to see whether it is already there.
 *
 * Nothing of ours can mark a send (the envelope id is the server's, the
 * value the user's), so a send is recognised by its value, counting: from
 * a place in the stream before our first send to it (base), the client
 * remembers a hash of each value of its own stored since.  A send whose
 * outcome is unknown was stored iff the records from base hold more copies
 * of its value than our earlier sends account for.  Each read moves base
 * to the tail it saw.
 *
 * The first send to a stream goes at once, without a read to learn its
 * tail (which would cost it a round trip): base is then a time (timed),
 * our idea of the server's clock when it began less CLOCK_MARGIN_MS, and
 * a check counts only records stamped from then on.  If the client
 * already follows the stream (a reader of the mount), its subscription
 * gives a seq instead.
 *
 * With this client the only writer that is exact.  What it cannot tell
 * apart: another writer storing the very same value to the same stream
 * after base (or in the margin before a timed base: the send is then taken
 * as stored, and lost if it was not), and a request held up inside the
 * server until after the read (it is repeated and stored twice).  A
 * credential that may not read the stream gets the old blind retries.
 */

struct stream_read {            /* lives until its subscription's CLOSED */
	trigger_sub *sub;
	struct tc_req *r;       /* NULL once the send stopped waiting */
	uint64_t want;          /* verifying: the value looked for */
	int64_t from_ms;        /* verifying: only records stamped from then
				 * (our clock, see struct stream) */
	long long last;
	unsigned matches;
};

static void keep_trouble(struct trigger_result *to,
			 const struct trigger_result *res)
{
	*to = *res;
	to->body = NULL;
	to->jwt = NULL;
}

/* r stops waiting for its read (the read frees itself at CLOSED). */
static void read_detach(struct tc_req *r, int unsubscribe)
{
	struct stream_read *v = r->read;

	v->r = NULL;
	r->read = NULL;
	if (unsubscribe)
		trigger_unsubscribe(v->sub);    /* may free v */
}

/* The read ended (res): act on it from the timer, outside its callbacks. */
static void read_over(struct tc_req *r, const struct trigger_result *res,
		      int unsubscribe)
{
	struct stream_read *v = r->read;

	keep_trouble(&r->rd_res, res);
	r->rd_last = v->last;
	r->rd_matches = v->matches;
	if (!r->c->down) {      /* at shutdown the request is cancelled */
		r->phase = PH_READ_DONE;
		tc_timer_arm(r->c, &r->timer, tc_now_ms());
	}
	read_detach(r, unsubscribe);
}

static void read_record(void *arg, const struct trigger_record *rec)
{
	struct stream_read *v = arg;

	if (!v->r)
		return;
	v->last = rec->seq;
	if (v->r->verifying &&
	    rec->timestamp >= tc_server_ms(v->r->c, v->from_ms) &&
	    json_value_hash(rec->json, rec->json_len) == v->want)
		v->matches++;
}

static void read_event(void *arg, enum trigger_sub_event ev,
		       const struct trigger_result *res)
{
	struct stream_read *v = arg;
	struct tc_req *r = v->r;

	if (ev == TRIGGER_SUB_CLOSED) {
		if (r)
			read_over(r, res, 0);
		free(v);
	} else if (r && ev == TRIGGER_SUB_CAUGHT_UP) {
		read_over(r, res, 1);
	} else if (r && ev == TRIGGER_SUB_FAILED) {
		read_over(r, res, 0);           /* CLOSED follows */
	} else if (r && ev == TRIGGER_SUB_RECONNECTING) {
		keep_trouble(&r->trouble, res);
	}
}

static const struct trigger_sub_callbacks read_cb = {
	.record = read_record,
	.event = read_event,
};

/* Reads r's stream until caught up: when verifying, from base, to see
 * whether r's value is there; else only to learn the tail, from past our
 * own sends since base (each is stored once, so the tail is at least
 * there: with no other writer, nothing is read).  Ends by r's deadline. */
static void read_start(struct tc_req *r, int verifying)
{
	trigger_client *c = r->c;
	struct stream *st = r->st;
	struct stream_read *v = calloc(1, sizeof(*v));

	r->verifying = verifying;
	r->rd_from = st->base + (verifying ? 0 : st->nsince);
	if (v) {
		v->r = r;
		v->want = r->vhash;
		v->from_ms = st->timed ? st->from_ms : INT64_MIN / 2;
		v->last = -1;
		r->read = v;
		v->sub = trigger_subscribe(c, st->run, st->name, r->rd_from - 1,
					   &read_cb, v);
	}
	if (!v || !v->sub) {
		int code = tc_cred_check(c, NULL, NULL, NULL);

		r->read = NULL;
		free(v);
		req_fail(r, code ? code : TRIGGER_E_NOMEM, code ?
			 trigger_strerror(code) : "out of memory");
		return;
	}
	r->phase = PH_READING;
	tc_timer_arm(c, &r->timer, r->deadline);
}

static unsigned own_copies(const struct stream *st, uint64_t h)
{
	unsigned n = 0;

	for (unsigned i = 0; i < st->nsince; i++)
		n += st->since[i] == h;
	return n;
}

/* The deadline came while reading. */
static void read_timeout(struct tc_req *r)
{
	struct trigger_result res = { .code = TRIGGER_E_TIMEOUT };

	read_detach(r, 1);
	if (r->trouble.code) {
		req_finish(r, &r->trouble);
		return;
	}
	snprintf(res.error, sizeof(res.error), "no answer within the send "
		 "timeout");
	req_finish(r, &res);
}

static int fatal_for_send(trigger_code code)
{
	return code == TRIGGER_E_UNAUTHORIZED || code == TRIGGER_E_EXPIRED ||
	       code == TRIGGER_E_NOMEM || code == TRIGGER_E_CANCELLED;
}

/* Not stored after all: try again after the backoff a retry waits. */
static void send_again(struct tc_req *r)
{
	int64_t now = tc_now_ms(), at = now + tc_backoff(r->c, &r->backoff);

	if (at > r->deadline - LAST_TRY_MS)
		at = r->deadline - LAST_TRY_MS;
	r->phase = PH_ATTEMPT;
	tc_timer_arm(r->c, &r->timer, at > now ? at : now);
}

static void read_done(struct tc_req *r)
{
	struct stream *st = r->st;
	const struct trigger_result *res = &r->rd_res;
	struct trigger_result ok = { .code = TRIGGER_OK };

	if (res->code == TRIGGER_OK) {
		int stored = r->verifying &&
			     r->rd_matches > own_copies(st, r->vhash);

		st->base = r->rd_last + 1 > r->rd_from ? r->rd_last + 1 :
			   r->rd_from;
		st->timed = 0;
		st->known = st->ever_known = 1;
		st->nsince = 0;
		r->maybe_stored = 0;
		if (stored)
			req_finish(r, &ok);
		else if (r->verifying)
			send_again(r);
		else
			req_attempt(r);
		return;
	}
	if (!r->verifying && !fatal_for_send(res->code)) {
		/* Not ours to read, or the send will tell better why not. */
		st->unreadable = res->code == TRIGGER_E_FORBIDDEN;
		r->unverified = 1;
		req_attempt(r);
		return;
	}
	if (res->code == TRIGGER_E_FORBIDDEN) {
		/* The first read of a stream we may write but not read. */
		st->unreadable = 1;
		r->unverified = 1;
		send_again(r);
		return;
	}
	req_finish(r, r->verifying && r->trouble.code ? &r->trouble : res);
}

/* A send's turn: first learn where its stream stands, if need be.  A
 * stream never known starts from a timed base, or, when this client
 * already follows it (a reader of the mount), from its subscription, as
 * a tail read would: behind the server's tail only by what is on its way,
 * as a tail read is by the time between the read and the send.  Only for
 * a stream never known: after a send whose outcome stayed unknown, that
 * send may be what is on its way, and a read has to place it. */
static void send_begin(struct tc_req *r)
{
	struct stream *st = r->st;

	if (!st->known && !st->ever_known && !st->unreadable) {
		st->base = tc_sub_next(r->c, st->url);
		st->timed = st->base < 0;
		if (st->timed) {
			st->base = 0;
			st->from_ms = tc_wall_ms() - CLOCK_MARGIN_MS;
		}
		st->known = st->ever_known = 1;
		st->nsince = 0;
	}
	if (st->known || st->unreadable) {
		r->unverified = st->unreadable;
		req_attempt(r);
	} else {
		read_start(r, 0);
	}
}

/* An attempt that may have been stored: look before trying again, at
 * once (the answer failed, so the server is most likely done with it; the
 * backoff comes before a repeat).  Returns 0 when there is no time left. */
static int send_unsure(struct tc_req *r, const struct trigger_result *res)
{
	trigger_client *c = r->c;
	int64_t now = tc_now_ms();

	keep_trouble(&r->trouble, res);
	r->maybe_stored = 1;
	if (c->down || r->deadline - now <= LAST_TRY_MS)
		return 0;
	r->phase = PH_READ;
	tc_timer_arm(c, &r->timer, now);
	return 1;
}

/* The server said the send is stored. */
static void send_stored(struct tc_req *r)
{
	struct stream *st = r->st;

	if (r->unverified || !st->known)
		return;
	if (st->nsince == st->capsince) {
		unsigned cap = st->capsince ? st->capsince * 2 : 16;
		uint64_t *p = cap <= SINCE_MAX ?
			      realloc(st->since, cap * sizeof(*p)) : NULL;

		if (!p) {
			st->known = 0;  /* the next send reads the tail again */
			return;
		}
		st->since = p;
		st->capsince = cap;
	}
	st->since[st->nsince++] = r->vhash;
}

/* ---- one request ------------------------------------------------------- */

static void req_free(trigger_client *c, struct tc_req *r)
{
	tc_xfer_clear(&r->xfer);
	if (r->reserved)
		tc_timer_unreserve(c);
	for (size_t i = 0; i < r->nscopes; i++)
		free(r->scopes[i]);
	free(r->url);
	free(r->body);
	free(r->resp);
	free(r->run);
	free(r->name);
	json_decref(r->hdrs);
	free(r);
}

static void req_finish(struct tc_req *r, const struct trigger_result *res)
{
	trigger_client *c = r->c;

	tc_link_del(&r->link);
	if (r->read)
		read_detach(r, 1);
	if (r->st) {
		if (r->maybe_stored)    /* our sends since base: unknown */
			r->st->known = 0;
		stream_remove(c, r);
	}
	r->done(r->arg, res);
	req_free(c, r);
}

static int req_data(struct tc_xfer *x, const char *buf, size_t len)
{
	struct tc_req *r = tc_container_of(x, struct tc_req, xfer);
	size_t need = r->resp_len + len + 1;

	if (need > TC_BODY_MAX) {
		r->overflow = 1;
		return 1;
	}
	if (need > r->resp_cap) {
		size_t cap = r->resp_cap ? r->resp_cap : 1024;
		char *p;

		while (cap < need)
			cap *= 2;
		p = realloc(r->resp, cap);
		if (!p) {
			r->overflow = 1;
			return 1;
		}
		r->resp = p;
		r->resp_cap = cap;
	}
	memcpy(r->resp + r->resp_len, buf, len);
	r->resp_len += len;
	return 0;
}

/* Keeps the response headers that start with the request's prefix. */
static void req_header(struct tc_xfer *x, const char *line, size_t len)
{
	struct tc_req *r = tc_container_of(x, struct tc_req, xfer);
	const char *colon = memchr(line, ':', len);
	size_t plen = r->hdr_prefix ? strlen(r->hdr_prefix) : 0;
	char name[128];

	if (!plen || !colon || (size_t)(colon - line) >= sizeof(name) ||
	    (size_t)(colon - line) < plen ||
	    strncasecmp(line, r->hdr_prefix, plen) != 0)
		return;
	for (size_t i = 0; i < (size_t)(colon - line); i++)
		name[i] = (char)tolower((unsigned char)line[i]);
	name[colon - line] = '\0';
	const char *v = colon + 1, *end = line + len;

	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	if (!r->hdrs)
		r->hdrs = json_object();
	json_object_set_new(r->hdrs, name, json_stringn(v, (size_t)(end - v)));
}

/* Try again at now + delay; waiting is the server's word (a rate limit,
 * our pace) and the attempt after it still gets a fair time. */
static void attempt_later(struct tc_req *r, int64_t delay)
{
	int64_t at = tc_now_ms() + delay;

	if (r->deadline < at + MIN_ATTEMPT_MS && at + MIN_ATTEMPT_MS < r->wait_cap)
		r->deadline = at + MIN_ATTEMPT_MS;
	r->phase = PH_ATTEMPT;
	tc_timer_arm(r->c, &r->timer, at);
}

/* A public token's requests under /api/ keep within its rate limit; any
 * request there waits out a 429 the credential got.  Returns the wait. */
static int64_t api_pace(trigger_client *c, const struct tc_req *r)
{
	int64_t now = tc_now_ms();

	if (!r->api)
		return 0;
	if (!trigger_cred_is_secret(c->cred))
		return tc_budget_take(&c->budget, now);
	return c->budget.blocked_until > now ? c->budget.blocked_until - now : 0;
}

/* 429: come back when the limit resets (x-ratelimit-reset). */
static void rate_limited(struct tc_req *r, const struct tc_xfer *x)
{
	trigger_client *c = r->c;
	int64_t d = tc_reset_delay(x->ans.reset_ms, tc_wall_ms() +
				   (tc_server_s(c) - tc_wall_s()) * 1000);

	d = d ? d + RATE_MARGIN_MS : tc_backoff(c, &r->backoff);
	if (r->api && r->key_only == trigger_cred_is_secret(c->cred))
		c->budget.blocked_until = tc_now_ms() + d;  /* the same bucket */
	attempt_later(r, d);
}

/* 404 with x-should-retry: true: the server looked in a replica that may
 * lag (a run just triggered).  Retried for a while, not believed at once.
 * Returns whether it will be tried again. */
static int not_found_again(struct tc_req *r)
{
	trigger_client *c = r->c;
	int64_t now = tc_now_ms(), at;

	if (!r->not_found_since)
		r->not_found_since = now;
	at = now + tc_backoff(c, &r->backoff);
	if (at - r->not_found_since > TC_NOT_FOUND_RETRY_MS)
		at = r->not_found_since + TC_NOT_FOUND_RETRY_MS;  /* a last look */
	if (at <= now || at > r->deadline - LAST_TRY_MS)
		return 0;
	r->phase = PH_ATTEMPT;
	tc_timer_arm(c, &r->timer, at);
	return 1;
}

static void req_xfer_done(struct tc_xfer *x, CURLcode rc)
{
	struct tc_req *r = tc_container_of(x, struct tc_req, xfer);
	trigger_client *c = r->c;
	struct trigger_result res;
	json_t *body;

	tc_result_fill(&res, x, rc, r->resp, r->resp_len, &body);
	res.headers = r->hdrs;
	if (r->overflow) {
		res.status = x->status;
		tc_result_set(&res, TRIGGER_E_PROTOCOL, "answer over %zu bytes "
			      "or out of memory", TC_BODY_MAX);
	} else if (rc == CURLE_OK && x->status == 429 && !c->down) {
		json_decref(body);
		rate_limited(r, x);
		return;
	} else if (rc == CURLE_OK && x->status == 404 && x->ans.should_retry &&
		   !c->down && not_found_again(r)) {
		json_decref(body);
		return;
	} else if (r->is_send && !r->unverified && tc_may_have_acted(x, rc)) {
		if (send_unsure(r, &res)) {
			json_decref(body);
			return;
		}
	} else if (tc_retryable(rc, res.status) && !c->down) {
		int64_t now = tc_now_ms(), at = now + tc_backoff(c, &r->backoff);

		/* A backoff past the deadline still leaves a last attempt. */
		if (at > r->deadline - LAST_TRY_MS)
			at = r->deadline - LAST_TRY_MS;
		if (at > now) {
			json_decref(body);
			r->phase = PH_ATTEMPT;
			tc_timer_arm(c, &r->timer, at);
			return;
		}
	}
	if (r->is_send && x->status >= 200 && x->status < 300)
		send_stored(r);         /* even if the answer made no sense */
	req_finish(r, &res);
	json_decref(body);
}

static const struct tc_xfer_ops req_ops = {
	.header_line = req_header,
	.data = req_data,
	.done = req_xfer_done,
};

static void req_attempt(struct tc_req *r)
{
	trigger_client *c = r->c;
	struct tc_xfer_spec s = {
		.url = r->url, .post = r->post, .once = r->is_send,
		.body = r->body, .body_len = r->body_len, .method = r->method,
	};
	struct trigger_result res;
	const char *line = c->auth.key_line;
	int64_t left, pace = api_pace(c, r);
	int rc = 0;

	if (pace > 0) {
		attempt_later(r, pace);
		return;
	}
	if (!r->key_only)
		rc = tc_auth_line(c, r->scopes, r->nscopes, &line, &r->wait, &res);
	if (rc == TC_AUTH_PENDING)
		return;
	if (rc) {
		req_finish(r, &res);
		return;
	}
	s.hdrs = tc_headers(c, line, "application/json", r->post);
	if (s.hdrs && r->idem[0])
		s.hdrs = tc_header_add(s.hdrs, "x-trigger-request-idempotency-key:"
				       " %s", r->idem);
	/* A run's streams version is fixed at trigger: v2, as the SDK asks. */
	if (s.hdrs && r->is_trigger)
		s.hdrs = tc_header_add(s.hdrs, "x-trigger-realtime-streams-version:"
				       " v2");
	left = r->deadline - tc_now_ms();
	s.timeout_ms = left > 1 ? left : 1;     /* an attempt ends by the deadline */
	r->resp_len = 0;
	r->overflow = 0;
	json_decref(r->hdrs);
	r->hdrs = NULL;
	if (tc_xfer_start(c, &r->xfer, &s))
		req_fail(r, TRIGGER_E_NOMEM, "out of memory");
}

static void req_on_timer(struct tc_timer *t)
{
	struct tc_req *r = tc_container_of(t, struct tc_req, timer);

	switch (r->phase) {
	case PH_ATTEMPT:
		req_attempt(r);
		break;
	case PH_TURN:
		send_begin(r);
		break;
	case PH_READ:
		read_start(r, 1);
		break;
	case PH_READING:
		read_timeout(r);
		break;
	case PH_READ_DONE:
		read_done(r);
		break;
	}
}

static void req_on_auth(struct tc_waiter *w, const struct trigger_result *fail)
{
	struct tc_req *r = tc_container_of(w, struct tc_req, wait);

	if (fail)
		req_finish(r, fail);
	else
		req_attempt(r);
}

static void req_activate(trigger_client *c, struct tc_req *r)
{
	int head = 1;

	tc_link_add_tail(&c->reqs, &r->link);
	if (tc_timer_reserve(c)) {
		req_fail(r, TRIGGER_E_NOMEM, "out of memory");
		return;
	}
	r->reserved = 1;
	if (r->post && !r->is_claims)
		tc_random_hex(c, r->idem, 32);
	r->deadline = tc_now_ms() + r->timeout_ms;
	r->wait_cap = r->deadline + 2 * TC_API_WINDOW_MS;
	r->api = tc_api_path(c, r->url) && !r->is_claims;
	if (r->is_send)
		head = stream_push(c, r);
	if (head < 0)
		req_fail(r, TRIGGER_E_NOMEM, "out of memory");
	else if (head && r->is_send)
		send_begin(r);
	else if (head)
		req_attempt(r);
}

static void req_cmd(trigger_client *c, struct tc_cmd *cmd)
{
	struct tc_req *r = tc_container_of(cmd, struct tc_req, cmd);

	if (c->down)
		req_fail(r, TRIGGER_E_CANCELLED, "the client shut down");
	else
		req_activate(c, r);
}

static struct tc_req *req_alloc(trigger_client *c, int post,
				trigger_done_fn done, void *arg,
				long timeout_ms)
{
	struct tc_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->c = c;
	r->post = post;
	r->done = done;
	r->arg = arg;
	r->timeout_ms = timeout_ms;
	r->cmd.fn = req_cmd;
	r->xfer.ops = &req_ops;
	r->timer.fn = req_on_timer;
	r->wait.fn = req_on_auth;
	tc_link_init(&r->link);
	return r;
}

void tc_api_shutdown(trigger_client *c)
{
	while (c->reqs.next != &c->reqs) {
		struct tc_req *r = tc_container_of(c->reqs.next, struct tc_req, link);

		tc_xfer_stop(c, &r->xfer);
		tc_timer_cancel(c, &r->timer);
		tc_auth_cancel(c, &r->wait);
		req_fail(r, TRIGGER_E_CANCELLED, "the client shut down");
	}
}

void tc_api_destroy(trigger_client *c)
{
	tc_map_destroy(&c->auth.jwts, jwt_entry_free);
	tc_map_destroy(&c->streams, stream_free_node);
	free(c->auth.sub);
	free(c->auth.key_line);
}

/* ---- building requests (caller's thread) ------------------------------- */

static int valid_id(const char *s)
{
	return s && *s;
}

/* "<base><fmt with %s for each escaped segment>" */
static char *url_with(const char *base, const char *fmt, const char *a,
		      const char *b)
{
	char *ea = url_escape_segment(a), *eb = b ? url_escape_segment(b) : NULL;
	char *path = NULL, *url = NULL;

	if (ea && (!b || eb) && asprintf(&path, fmt, ea, eb) >= 0 &&
	    asprintf(&url, "%s%s", base, path) < 0)
		url = NULL;
	free(ea);
	free(eb);
	free(path);
	return url;
}

char *tc_stream_url(trigger_client *c, const char *run, const char *stream)
{
	return url_with(c->stream_base, "/realtime/v1/streams/%s/input/%s", run,
			stream);
}

static void set_scope(struct tc_req *r, const char *prefix, const char *id)
{
	if (asprintf(&r->scopes[r->nscopes], "%s%s", prefix, id ? id : "") < 0)
		r->scopes[r->nscopes] = NULL;
	r->nscopes++;
}

/* What a per-run request's JWT may do. */
/* Hands r to the event thread, or frees it when building failed. */
static int req_submit(struct tc_req *r)
{
	int ok = r->url && (!r->post || r->body || r->is_claims) &&
		 (!r->is_send || (r->run && r->name));

	for (size_t i = 0; i < r->nscopes; i++)
		ok = ok && r->scopes[i];
	if (!ok) {
		req_free(r->c, r);
		return TRIGGER_E_NOMEM;
	}
	tc_post(r->c, &r->cmd);
	return 0;
}

/* The id of a request about no one resource (the run list). */
#define NAMES_NOTHING "-"

/* What every request starts with: its arguments checked, the credential's
 * local checks (expiry; scopes for action/type/id when action is given),
 * the request allocated.  0, or the code it is refused with at once. */
static int req_begin(trigger_client *c, int post, int send, const char *id,
		     const char *action, const char *type,
		     trigger_done_fn done, void *arg, struct tc_req **out)
{
	int rc;

	*out = NULL;
	if (!c || !done || !valid_id(id))
		return TRIGGER_E_INVALID;
	rc = tc_cred_check(c, action, type, action ? id : NULL);
	if (rc)
		return rc;
	*out = req_alloc(c, post, done, arg,
			 send ? c->send_timeout_ms : c->request_timeout_ms);
	return *out ? 0 : TRIGGER_E_NOMEM;
}

static char *json_body(json_t *obj)
{
	char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;

	json_decref(obj);
	return s;
}

int trigger_send(trigger_client *c, const char *run_id, const char *stream_id,
		 const char *json, size_t len, trigger_done_fn done, void *arg)
{
	static const char pre[] = "{\"data\":";
	struct tc_req *r;
	int rc;

	if (!valid_id(stream_id) || !json || !len)
		return TRIGGER_E_INVALID;
	if (len > TC_SEND_MAX - sizeof(pre))    /* pre + json + '}' */
		return TRIGGER_E_TOO_LARGE;
	rc = req_begin(c, 1, 1, run_id, "write", "inputStreams", done, arg, &r);
	if (rc)
		return rc;
	r->is_send = 1;
	r->url = tc_stream_url(c, run_id, stream_id);
	r->run = strdup(run_id);
	r->name = strdup(stream_id);
	r->vhash = json_value_hash(json, len);
	r->body = malloc(sizeof(pre) + len + 1);
	if (r->body) {
		memcpy(r->body, pre, sizeof(pre) - 1);
		memcpy(r->body + sizeof(pre) - 1, json, len);
		r->body[sizeof(pre) - 1 + len] = '}';
		r->body_len = sizeof(pre) + len;
	}
	set_scope(r, "write:inputStreams:", run_id);
	return req_submit(r);
}

/* GET of one resource: path_fmt with id escaped, a token for scope+id. */
static int get_one(trigger_client *c, const char *path_fmt, const char *id,
		   const char *scope, trigger_done_fn done, void *arg)
{
	struct tc_req *r;
	int rc = req_begin(c, 0, 0, id, NULL, NULL, done, arg, &r);

	if (rc)
		return rc;
	r->url = url_with(c->url, path_fmt, id, NULL);
	set_scope(r, scope, id);
	return req_submit(r);
}

int trigger_run_get(trigger_client *c, const char *run_id,
		    trigger_done_fn done, void *arg)
{
	return get_one(c, "/api/v3/runs/%s", run_id, "read:runs:", done, arg);
}

static char *list_url(trigger_client *c, const char *status, int size,
		      const char *after)
{
	char *es = status ? url_escape_segment(status) : NULL;
	char *ea = after ? url_escape_segment(after) : NULL;
	char *url = NULL;

	if ((!status || es) && (!after || ea) &&
	    asprintf(&url, "%s/api/v1/runs?page%%5Bsize%%5D=%d%s%s%s%s", c->url,
		     size > 0 ? size : 25,
		     es ? "&filter%5Bstatus%5D=" : "", es ? es : "",
		     ea ? "&page%5Bafter%5D=" : "", ea ? ea : "") < 0)
		url = NULL;
	free(es);
	free(ea);
	return url;
}

int trigger_runs_list(trigger_client *c, const char *status_filter,
		      int page_size, const char *after,
		      trigger_done_fn done, void *arg)
{
	struct tc_req *r;
	int rc = req_begin(c, 0, 0, NAMES_NOTHING, NULL, NULL, done, arg, &r);

	if (rc)
		return rc;
	r->url = list_url(c, status_filter, page_size, after);
	set_scope(r, "read:runs", NULL);
	return req_submit(r);
}

int trigger_task_trigger(trigger_client *c, const char *task_id,
			 const char *payload_json, trigger_done_fn done,
			 void *arg)
{
	json_t *payload = json_loads(payload_json ? payload_json : "null",
				     JSON_DECODE_ANY, NULL);
	struct tc_req *r;
	int rc = payload ? req_begin(c, 1, 0, task_id, "trigger", "tasks", done,
				     arg, &r)
			 : TRIGGER_E_INVALID;

	if (rc) {
		json_decref(payload);
		return rc;
	}
	r->url = url_with(c->url, "/api/v1/tasks/%s/trigger", task_id, NULL);
	r->is_trigger = 1;
	r->body = json_body(json_pack("{s:o}", "payload", payload));
	r->body_len = r->body ? strlen(r->body) : 0;
	set_scope(r, "write:tasks:", task_id);
	return req_submit(r);
}

int trigger_run_cancel(trigger_client *c, const char *run_id,
		       trigger_done_fn done, void *arg)
{
	struct tc_req *r;
	int rc = req_begin(c, 1, 0, run_id, NULL, NULL, done, arg, &r);

	if (rc)
		return rc;
	r->url = url_with(c->url, "/api/v2/runs/%s/cancel", run_id, NULL);
	r->body = strdup("{}");
	r->body_len = 2;
	set_scope(r, "write:runs:", run_id);
	return req_submit(r);
}

int tc_call(trigger_client *c, const struct tc_call *call, trigger_done_fn done,
	    void *arg)
{
	struct tc_req *r = NULL;
	int rc = c && done && call->url ? 0 : TRIGGER_E_INVALID;

	if (!rc && call->action)
		rc = tc_cred_check(c, call->action, call->type, call->id);
	if (!rc && !(r = req_alloc(c, call->body != NULL, done, arg,
				     call->timeout_ms ? call->timeout_ms
						      : c->request_timeout_ms)))
		rc = TRIGGER_E_NOMEM;
	if (rc) {
		free(call->url);
		free(call->body);
		return rc;
	}
	r->url = call->url;
	r->body = call->body;
	r->body_len = call->body ? strlen(call->body) : 0;
	r->method = call->method;
	r->hdr_prefix = call->header_prefix;
	r->key_only = call->scope == NULL;
	if (call->scope)
		set_scope(r, call->scope, NULL);
	return req_submit(r);
}

char *tc_url(const char *base, const char *fmt, const char *a, const char *b)
{
	return url_with(base, fmt, a, b);
}
