/*
 * Inside libtriggerclient: the client object, its event thread (epoll and
 * libcurl's socket API), timers, the submission queue, single HTTP
 * transfers and the mapping of answers to trigger_code.  api.c builds
 * requests (credentials, retries, send order) on top of this, subscribe.c
 * the SSE subscriptions.
 *
 * Threads: tc_post*() and tc_now_ms() may be called from any thread;
 * everything else runs on the event thread only, so the state it touches
 * needs no lock.
 */
#ifndef TRIGGER_HTTP_H
#define TRIGGER_HTTP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>
#include "trigger.h"

#define TC_BODY_MAX ((size_t)16 << 20)  /* bound on any answer we buffer */
#define TC_SEND_MAX ((size_t)1 << 20)   /* the API's limit per send request */
#define TC_CONNECT_TIMEOUT_MS 10000
#define TC_NOT_FOUND_RETRY_MS 5000 /* a 404 with x-should-retry (the SDK: 3 s) */

#define tc_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

int64_t tc_now_ms(void);        /* CLOCK_MONOTONIC */
int64_t tc_wall_s(void);        /* Unix time (this machine's clock) */
int64_t tc_wall_ms(void);

/* The server's clock as last seen in a Date header: tokens are minted and
 * their expiry judged on it, since the server allows no skew (answer.c).
 * Any thread. */
int64_t tc_server_s(const trigger_client *c);
/* Our clock's wall_ms (tc_wall_ms) on the server's, as best known now. */
int64_t tc_server_ms(const trigger_client *c, int64_t wall_ms);
void tc_clock_seen(trigger_client *c, int64_t date_s);

/* ---- intrusive helpers ---------------------------------------------- */

/* Circular doubly linked list; a node pointing to itself is unlinked. */
struct tc_link {
	struct tc_link *prev, *next;
};

void tc_link_init(struct tc_link *l);
void tc_link_add_tail(struct tc_link *head, struct tc_link *l);
void tc_link_del(struct tc_link *l);

/* String-keyed hash map of caller-owned nodes. */
struct tc_map_node {
	struct tc_map_node *next;
	uint64_t hash;
	const char *key;        /* owned by the node's container */
};

struct tc_map {
	struct tc_map_node **b;
	size_t nb, n;
};

struct tc_map_node *tc_map_find(const struct tc_map *m, const char *key);
int tc_map_add(struct tc_map *m, struct tc_map_node *node);
void tc_map_del(struct tc_map *m, struct tc_map_node *node);
/* Unlinks every node for which drop() returns non-zero (drop may free it). */
void tc_map_sweep(struct tc_map *m, int (*drop)(struct tc_map_node *, void *),
		  void *arg);
void tc_map_destroy(struct tc_map *m, void (*free_node)(struct tc_map_node *));

/* ---- commands, timers ------------------------------------------------ */

/* Work handed to the event thread.  Embedded in the object it concerns. */
struct tc_cmd {
	struct tc_cmd *next;
	void (*fn)(trigger_client *c, struct tc_cmd *cmd);
};

/* Any thread.  Queues cmd and wakes the event thread. */
void tc_post(trigger_client *c, struct tc_cmd *cmd);
/* Any thread.  Queues cmd only the first time *flag is seen clear (under
 * the queue lock), then sets it.  Returns whether it queued. */
int tc_post_once(trigger_client *c, struct tc_cmd *cmd, int *flag);
/* Sets *flag under the queue lock; returns whether it was clear. */
int tc_claim_flag(trigger_client *c, int *flag);

/* One timer per object: each object reserves its heap slot when it
 * becomes live, so arming never allocates (and never fails). */
struct tc_timer {
	int64_t at;
	size_t slot;            /* heap index + 1; 0 when not armed */
	void (*fn)(struct tc_timer *t);
};

int tc_timer_reserve(trigger_client *c);        /* 0, or -1 without memory */
void tc_timer_unreserve(trigger_client *c);
void tc_timer_arm(trigger_client *c, struct tc_timer *t, int64_t at);
void tc_timer_cancel(trigger_client *c, struct tc_timer *t);

/* Next exponential backoff delay: *b runs 100 ms doubling to 5 s; the
 * delay returned is *b with ±50 % jitter. */
int64_t tc_backoff(trigger_client *c, int64_t *b);
void tc_random_hex(trigger_client *c, char *out, size_t nhex);

/* ---- transfers ------------------------------------------------------- */

struct tc_xfer;
struct tc_output;

/* Headers of the final answer that change what the client does next. */
struct tc_answer {
	int should_retry;       /* x-should-retry: true (a replica lagging) */
	int stream_v2;          /* X-Stream-Version: v2; else v1 framing */
	int64_t reset_ms;       /* x-ratelimit-reset: Unix ms, 0: none */
	int64_t date_s;         /* Date: the server's clock, 0: none */
};

/* One header line of an answer into a (answer.c). */
void tc_answer_header(struct tc_answer *a, const char *line, size_t len);

struct tc_xfer_ops {
	/* The final response's headers are in (status >= 200).  Optional. */
	void (*headers)(struct tc_xfer *x, long status);
	/* Every header line of the final response, as received (name: value
	 * and CRLF).  Optional. */
	void (*header_line)(struct tc_xfer *x, const char *line, size_t len);
	/* Body bytes; non-zero aborts the transfer (done gets
	 * CURLE_WRITE_ERROR).  Must not call tc_xfer_* itself. */
	int (*data)(struct tc_xfer *x, const char *buf, size_t len);
	/* The transfer is over and its handle released; may start another. */
	void (*done)(struct tc_xfer *x, CURLcode rc);
};

struct tc_xfer {
	const struct tc_xfer_ops *ops;
	CURL *easy;             /* NULL when idle */
	trigger_client *client; /* set when started */
	struct tc_link live;    /* in client->xfers while running */
	long lport;             /* its connection's local port, once known */
	struct curl_slist *hdrs;
	long status;
	char *jwt;              /* x-trigger-jwt of the answer, or NULL */
	struct tc_answer ans;   /* what else its headers said (answer.c) */
	long os_errno;          /* of a failed connection */
	const char *body;       /* a `once` body, and how much curl took */
	size_t body_len, body_off;
	char errbuf[CURL_ERROR_SIZE];
};

struct tc_xfer_spec {
	const char *url;
	int post;
	const char *method;     /* a method other than GET/POST ("PUT"), or NULL */
	/* The body may reach the server at most once per transfer: curl must
	 * not send it again by itself (see on_read in http.c). */
	int once;
	const char *body;       /* must outlive the transfer */
	size_t body_len;
	struct curl_slist *hdrs;        /* handed over, freed by the xfer */
	long timeout_ms;        /* whole transfer; 0: none */
	int head;               /* HEAD: the headers only */
};

#define TC_API_VERSION "2025-07-16"

/* Common request headers: x-trigger-api-version, x-trigger-branch (a
 * preview branch), Authorization (auth_line is "Authorization:
 * Bearer ..."), Accept, Content-Type for posts, the Expect suppression.
 * Returns NULL without memory. */
struct curl_slist *tc_headers(const trigger_client *c, const char *auth_line,
			      const char *accept, int post);
/* Appends "name: value"; on failure frees the list and returns NULL. */
struct curl_slist *tc_header_add(struct curl_slist *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Starts x (which must be idle).  On failure (TRIGGER_E_NOMEM) nothing is
 * started and spec->hdrs is freed; done is not called. */
int tc_xfer_start(trigger_client *c, struct tc_xfer *x,
		  const struct tc_xfer_spec *spec);
/* Aborts x if running; done is not called.  Not from inside x's ops. */
void tc_xfer_stop(trigger_client *c, struct tc_xfer *x);
void tc_xfer_clear(struct tc_xfer *x);  /* frees the jwt copy */

/* ---- results --------------------------------------------------------- */

/* HTTP status (and the API's error text) to a code. */
trigger_code tc_status_code(long status, const char *error);
/* Whether an attempt that ended so is worth repeating. */
int tc_retryable(CURLcode rc, long status);
/* Whether a failed `once` transfer may still have been acted on: the
 * server answered 5xx, or the connection failed after the whole request
 * went out.  (408 and 429 are refusals: nothing was done.) */
int tc_may_have_acted(const struct tc_xfer *x, CURLcode rc);
/* Fills res from a transfer's outcome.  body/len: the answer buffered
 * (may be NULL); *parsed receives the JSON body (caller decrefs). */
void tc_result_fill(struct trigger_result *res, const struct tc_xfer *x,
		    CURLcode rc, const char *body, size_t len, json_t **parsed);
void tc_result_set(struct trigger_result *res, trigger_code code,
		   const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- credentials (api.c) --------------------------------------------- */

/* Someone waiting for the secret key's claims (the environment id). */
struct tc_waiter {
	struct tc_waiter *next;
	const void *on;         /* the token it waits for; NULL: the claims */
	/* fail is NULL when the claims arrived: try tc_auth_line again. */
	void (*fn)(struct tc_waiter *w, const struct trigger_result *fail);
};

#define TC_AUTH_PENDING (-1)

/* The Authorization line for a request needing these scopes.  Returns 0
 * with *line set (valid until the next call), TC_AUTH_PENDING when w was
 * queued for the claims, or a code with res filled. */
int tc_auth_line(trigger_client *c, char *const *scopes, size_t n,
		 const char **line, struct tc_waiter *w,
		 struct trigger_result *res);
void tc_auth_cancel(trigger_client *c, struct tc_waiter *w);
/* With a secret key, asks for the claims now unless they are known: 1 when
 * asked (or on the way), 0 when there is nothing to ask. */
int tc_auth_prefetch(trigger_client *c);

/* <base>/realtime/v1/streams/<run>/input/<stream>, escaped; or NULL. */
char *tc_stream_url(trigger_client *c, const char *run, const char *stream);

/* Local refusals, on the caller's thread: expiry of a public token and,
 * when action is non-NULL, its scopes. */
int tc_cred_check(const trigger_client *c, const char *action,
		  const char *type, const char *id);

/* ---- requests for the other modules (api.c) -----------------------------
 * One API request with the retries and deadline every request has.  url
 * and body are handed over (freed by the client, also when refused); a
 * body makes it a POST unless method says otherwise ("PUT").  scope: what
 * a token minted from a secret key allows (the whole scope); NULL sends a
 * secret key itself, for the routes that accept nothing else.  When action
 * is set, a public token's scopes are checked locally first (action, type,
 * id as for trigger_cred_allows).  Response headers whose names start with
 * header_prefix reach done in res->headers.  0 or the code refused with
 * (then done is not called). */
struct tc_call {
	const char *method;
	char *url, *body;
	const char *scope;
	const char *action, *type, *id;
	const char *header_prefix;
	long timeout_ms;        /* retry deadline; 0: the client's */
};

int tc_call(trigger_client *c, const struct tc_call *call,
	    trigger_done_fn done, void *arg);
/* "<base><fmt with %s for each escaped segment>" (b may be NULL); base is
 * c->url, or c->stream_base for the stream routes. */
char *tc_url(const char *base, const char *fmt, const char *a, const char *b);

/* ---- the client ------------------------------------------------------ */

struct tc_auth {
	char *key_line;         /* "Authorization: Bearer <secret key or JWT>" */
	char *sub;              /* environment id from the claims */
	int fetching;
	struct tc_waiter *waiters;
	struct tc_map jwts;     /* scopes -> minted token */
	size_t sweep_at;
};

/* Requests under /api/ are rate limited per credential; a public token
 * has 60 a minute.  Start times of the latest ones, and a 429's reset. */
#define TC_API_BUDGET 50                /* per TC_API_WINDOW_MS, a token */
#define TC_API_WINDOW_MS 60000

struct tc_budget {
	int64_t at[TC_API_BUDGET];      /* ring of start times (monotonic) */
	unsigned next;
	int64_t blocked_until;          /* monotonic; a 429 said so */
};

/* Whether url is under <base>/api/ (rate limited). */
int tc_api_path(const trigger_client *c, const char *url);
/* Takes a slot of the budget at now (0), or says how long to wait (ms). */
int64_t tc_budget_take(struct tc_budget *b, int64_t now);
/* Milliseconds until a 429's x-ratelimit-reset (Unix ms on the server's
 * clock), at most a window. */
int64_t tc_reset_delay(int64_t reset_ms, int64_t server_ms);

struct trigger_client {
	char *url;
	char *stream_base;      /* $TRIGGER_STREAM_URL, else url */
	char *branch;           /* $TRIGGER_PREVIEW_BRANCH, or NULL */
	trigger_cred *cred;
	int extra_key;          /* an additional API key: tokens from the API */
	_Atomic int64_t skew_s; /* server clock minus ours */
	struct tc_budget budget;        /* event thread */
	char *user_agent;
	char *ca_file;          /* NULL: the system's CA bundle */
	long send_timeout_ms, request_timeout_ms;
	int sse_timeout_s;
	int tls;

	/* submission queue: any thread, under lock */
	pthread_mutex_t lock;
	struct tc_cmd *qhead, **qtail;
	int woken;              /* the eventfd was written since the last drain */
	int stopping;
	int efd, epfd;
	pthread_t thread;

	/* event thread only */
	CURLM *multi;
	int64_t curl_at;        /* libcurl's timeout, -1: none */
	struct tc_timer **heap;
	size_t nheap, capheap, reserved;
	CURL *pool[16];
	size_t npool;
	uint64_t rng[2];
	int down;               /* the event thread saw stopping */
	struct tc_link reqs, subs;
	struct tc_auth auth;
	struct tc_map streams;  /* api.c: the (run, stream)s sent to */
	struct tc_output *output;       /* output.c, made on first use */
	size_t streams_sweep_at;
	struct tc_link xfers;   /* transfers running */
	long kick[16];          /* local ports of connections to service */
	size_t nkick;
	unsigned long started;  /* transfers started, ever */
	int running;            /* transfers curl has going */
	int proto, proto_applied;       /* 1, 2: HTTP/1.1 or 2 seen (conn.c) */
	int bounded;            /* HTTP/2 seen: connections capped */
	struct tc_warm *warm;   /* conn.c; NULL unless keep_warm */
	struct tc_link checks;  /* conn.c: trigger_client_check()s running */
};

/* ---- the connection (conn.c) ---------------------------------------- */

/* Starts keeping the connection warm (opts.keep_warm): 0, or -1. */
int tc_warm_start(trigger_client *c);
/* The event thread's view after each round: how many transfers run. */
void tc_warm_update(trigger_client *c);
/* A connection has a stream reset queued and no transfer to send it: the
 * keep-warm request goes shortly, unless another transfer starts first
 * (which sends it). */
void tc_warm_soon(trigger_client *c);
void tc_conn_shutdown(trigger_client *c);
void tc_conn_destroy(trigger_client *c);

/* The connection cap, at the start (over TLS); after a response's headers
 * (inside curl's callback), which protocol the server speaks; then, from
 * the loop, the cap kept (HTTP/2) or lifted (HTTP/1.1). */
void tc_conn_init(trigger_client *c);
void tc_conn_learn(trigger_client *c, CURL *e);
void tc_conn_apply(trigger_client *c);

/* Where an open, caught-up subscription of this client to the stream at
 * url stands: the next seq it will be sent (it has had every record
 * before), or -1 when there is none. */
long long tc_sub_next(trigger_client *c, const char *url);

/* Shutdown hooks on the event thread, and cleanup after the join. */
void tc_api_shutdown(trigger_client *c);
void tc_api_destroy(trigger_client *c);
void tc_sub_shutdown(trigger_client *c);
void tc_output_shutdown(trigger_client *c);
void tc_output_destroy(trigger_client *c);

#endif
