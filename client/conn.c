/*
 * The connections to the API, beyond single transfers: how many there may
 * be, a check at startup that says clearly when the server cannot be
 * trusted, and keeping a connection alive while nothing runs (servers and
 * load balancers close idle connections after a minute or so, and a new
 * one costs two round trips more: TCP and TLS).
 */
#include <stdlib.h>
#include <string.h>

#include "http.h"

/* HTTP/2 carries every transfer on one connection, up to the server's
 * stream limit (nginx 128).  A few more connections absorb bursts; without
 * a cap curl opened one per transfer that found the others full (a
 * thousand subscriptions at once: 70 connections), most of them left
 * without a request by the time they were up.  Over TLS the cap holds from
 * the start, since the first burst comes before any answer says which
 * protocol the server speaks; it is lifted if the server turns out to
 * speak HTTP/1.1 only, where each subscription holds a connection. */
#define MAX_CONNECTIONS 16L
#define WARM_EVERY_MS 45000             /* under the usual 60 s idle limit */
#define WARM_FOR_MS (10 * 60000)        /* then let an idle client go */

static void conn_cap(trigger_client *c, long n)
{
	curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, n);
	curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, n);
}

void tc_conn_init(trigger_client *c)
{
	if (c->tls)
		conn_cap(c, MAX_CONNECTIONS);
}

void tc_conn_learn(trigger_client *c, CURL *e)
{
	long v = 0;

	if (curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &v) != CURLE_OK || !v)
		return;
	c->proto = v == CURL_HTTP_VERSION_2_0 ? 2 : 1;
}

/* Outside curl's callbacks, where curl_multi_setopt is allowed. */
void tc_conn_apply(trigger_client *c)
{
	if (c->proto && !c->proto_applied) {
		c->proto_applied = 1;
		c->bounded = c->proto == 2;
		if (c->tls && !c->bounded)
			conn_cap(c, 0);
	}
}

/* ---- one HEAD of the base URL ------------------------------------------ */

struct head {
	struct tc_xfer xfer;
	int64_t timeout_ms;
};

static int head_data(struct tc_xfer *x, const char *buf, size_t len)
{
	(void)x;
	(void)buf;
	(void)len;
	return 0;
}

static int head_start(trigger_client *c, struct head *h,
		      const struct tc_xfer_ops *ops)
{
	struct tc_xfer_spec spec = {
		.url = c->url,
		.head = 1,
		.timeout_ms = h->timeout_ms,
		.hdrs = tc_headers(c, NULL, "*/*", 0),
	};

	h->xfer.ops = ops;
	return tc_xfer_start(c, &h->xfer, &spec);
}

/* ---- trigger_client_check ---------------------------------------------- */

struct check {
	struct head head;
	struct tc_cmd cmd;
	struct tc_link link;
	trigger_done_fn done;
	void *arg;
};

static void check_finish(struct check *k, const struct trigger_result *res)
{
	tc_link_del(&k->link);
	k->done(k->arg, res);
	tc_xfer_clear(&k->head.xfer);
	free(k);
}

static void check_done(struct tc_xfer *x, CURLcode rc)
{
	struct check *k = tc_container_of(x, struct check, head.xfer);
	struct trigger_result res;
	json_t *body;

	tc_result_fill(&res, x, rc, NULL, 0, &body);
	if (rc == CURLE_OK)     /* any answer: reached and trusted */
		memset(&res, 0, sizeof(res));
	res.status = x->status;
	check_finish(k, &res);
}

static const struct tc_xfer_ops check_ops = {
	.data = head_data,
	.done = check_done,
};

static void check_cmd(trigger_client *c, struct tc_cmd *cmd)
{
	struct check *k = tc_container_of(cmd, struct check, cmd);
	struct trigger_result res;

	tc_link_add_tail(&c->checks, &k->link);
	if (c->down) {
		tc_result_set(&res, TRIGGER_E_CANCELLED, "the client shut down");
		check_finish(k, &res);
	} else if (head_start(c, &k->head, &check_ops)) {
		tc_result_set(&res, TRIGGER_E_NOMEM, "out of memory");
		check_finish(k, &res);
	}
}

int trigger_client_check(trigger_client *c, trigger_done_fn done, void *arg)
{
	struct check *k;

	if (!c || !done)
		return TRIGGER_E_INVALID;
	k = calloc(1, sizeof(*k));
	if (!k)
		return TRIGGER_E_NOMEM;
	k->done = done;
	k->arg = arg;
	k->head.timeout_ms = c->request_timeout_ms;
	tc_link_init(&k->link);
	k->cmd.fn = check_cmd;
	tc_post(c, &k->cmd);
	return 0;
}

/* ---- keeping warm ------------------------------------------------------ */

#define KICK_WAIT_MS 50           /* for another transfer to send a reset */

struct tc_warm {
	struct head head;
	struct tc_timer timer;
	trigger_client *c;
	int64_t idle_since;     /* 0: something runs */
	int kick;               /* the timer is for a reset, see tc_warm_soon */
	unsigned long started;  /* c->started when that was asked */
	int64_t every_ms;
};

static void warm_done(struct tc_xfer *x, CURLcode rc)
{
	(void)rc;               /* a failure only means the next request connects */
	tc_xfer_clear(x);
}

static const struct tc_xfer_ops warm_ops = {
	.data = head_data,
	.done = warm_done,
};

/* The first time, a secret key's claims are what to ask: the first send
 * needs them anyway. */
static void warm_on_timer(struct tc_timer *t)
{
	struct tc_warm *w = tc_container_of(t, struct tc_warm, timer);
	trigger_client *c = w->c;

	if (w->kick && w->started != c->started) {
		w->kick = 0;
		return;
	}
	w->kick = 0;
	if (!c->down && !w->head.xfer.easy && !tc_auth_prefetch(c))
		head_start(c, &w->head, &warm_ops);
}

/* $TRIGGER_KEEP_WARM_SECONDS (1..600) replaces WARM_EVERY_MS: for tests
 * against a server that closes idle connections sooner. */
static int64_t warm_every_ms(void)
{
	const char *s = getenv("TRIGGER_KEEP_WARM_SECONDS");
	long v = s ? strtol(s, NULL, 10) : 0;

	return v >= 1 && v <= 600 ? v * 1000 : WARM_EVERY_MS;
}

void tc_warm_soon(trigger_client *c)
{
	struct tc_warm *w = c->warm;

	if (w->timer.slot && w->timer.at <= tc_now_ms() + KICK_WAIT_MS)
		return;
	w->kick = 1;
	w->started = c->started;
	tc_timer_arm(c, &w->timer, tc_now_ms() + KICK_WAIT_MS);
}

int tc_warm_start(trigger_client *c)
{
	struct tc_warm *w = calloc(1, sizeof(*w));

	if (!w || tc_timer_reserve(c)) {
		free(w);
		return -1;
	}
	w->c = c;
	w->head.timeout_ms = TC_CONNECT_TIMEOUT_MS;
	w->every_ms = warm_every_ms();
	w->timer.fn = warm_on_timer;
	c->warm = w;
	tc_timer_arm(c, &w->timer, tc_now_ms());        /* connect now */
	return 0;
}

/* Armed while the client is idle (only our own HEAD running, or nothing),
 * for WARM_FOR_MS of idleness; any other transfer resets the count. */
void tc_warm_update(trigger_client *c)
{
	struct tc_warm *w = c->warm;
	int64_t now = tc_now_ms();
	int others = c->running - (w->head.xfer.easy != NULL);

	if (others > 0) {
		w->idle_since = 0;
		tc_timer_cancel(c, &w->timer);
		return;
	}
	if (!w->idle_since)
		w->idle_since = now;
	if (!w->timer.slot && !w->head.xfer.easy &&
	    now - w->idle_since < WARM_FOR_MS)
		tc_timer_arm(c, &w->timer, now + w->every_ms);
}

void tc_conn_shutdown(trigger_client *c)
{
	struct trigger_result res;

	if (c->warm) {
		tc_timer_cancel(c, &c->warm->timer);
		tc_xfer_stop(c, &c->warm->head.xfer);
		tc_xfer_clear(&c->warm->head.xfer);
	}
	tc_result_set(&res, TRIGGER_E_CANCELLED, "the client shut down");
	while (c->checks.next != &c->checks) {
		struct check *k = tc_container_of(c->checks.next, struct check,
						  link);

		tc_xfer_stop(c, &k->head.xfer);
		check_finish(k, &res);
	}
}

void tc_conn_destroy(trigger_client *c)
{
	free(c->warm);
	c->warm = NULL;
}
