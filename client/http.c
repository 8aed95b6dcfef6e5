/*
 * The client's event thread.  One epoll set holds the wakeup eventfd and
 * every socket libcurl wants watched (the socket API: each event touches
 * only the transfers on that socket, not every open subscription); a
 * binary heap holds the timers; other threads hand work over through a
 * mutex-protected queue and one eventfd write.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>

#include "cred.h"
#include "http.h"
#include "url.h"

#define EASY_POOL_MAX (sizeof(((trigger_client *)0)->pool) / sizeof(CURL *))

int64_t tc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tc_wall_s(void)
{
	return (int64_t)time(NULL);
}

int64_t tc_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- lists and maps ---------------------------------------------------- */

void tc_link_init(struct tc_link *l)
{
	l->prev = l->next = l;
}

void tc_link_add_tail(struct tc_link *head, struct tc_link *l)
{
	l->prev = head->prev;
	l->next = head;
	head->prev->next = l;
	head->prev = l;
}

void tc_link_del(struct tc_link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	tc_link_init(l);
}

static uint64_t str_hash(const char *s)
{
	uint64_t h = 14695981039346656037ull;   /* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

struct tc_map_node *tc_map_find(const struct tc_map *m, const char *key)
{
	uint64_t h;

	if (!m->nb)
		return NULL;
	h = str_hash(key);
	for (struct tc_map_node *n = m->b[h & (m->nb - 1)]; n; n = n->next)
		if (n->hash == h && !strcmp(n->key, key))
			return n;
	return NULL;
}

static int map_grow(struct tc_map *m)
{
	size_t nb = m->nb ? m->nb * 2 : 16;
	struct tc_map_node **b = calloc(nb, sizeof(*b));

	if (!b)
		return -1;
	for (size_t i = 0; i < m->nb; i++) {
		struct tc_map_node *n = m->b[i], *next;

		for (; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
	return 0;
}

int tc_map_add(struct tc_map *m, struct tc_map_node *node)
{
	struct tc_map_node **slot;

	if (m->n >= m->nb && map_grow(m))
		return -1;
	node->hash = str_hash(node->key);
	slot = &m->b[node->hash & (m->nb - 1)];
	node->next = *slot;
	*slot = node;
	m->n++;
	return 0;
}

void tc_map_del(struct tc_map *m, struct tc_map_node *node)
{
	struct tc_map_node **p = &m->b[node->hash & (m->nb - 1)];

	while (*p != node)
		p = &(*p)->next;
	*p = node->next;
	m->n--;
}

void tc_map_sweep(struct tc_map *m, int (*drop)(struct tc_map_node *, void *),
		  void *arg)
{
	for (size_t i = 0; i < m->nb; i++) {
		struct tc_map_node **p = &m->b[i];

		while (*p) {
			struct tc_map_node *n = *p;

			*p = n->next;
			if (drop(n, arg)) {
				m->n--;
				continue;
			}
			*p = n;
			p = &n->next;
		}
	}
}

static int drop_all(struct tc_map_node *n, void *fn)
{
	((void (*)(struct tc_map_node *))fn)(n);
	return 1;
}

void tc_map_destroy(struct tc_map *m, void (*free_node)(struct tc_map_node *))
{
	tc_map_sweep(m, drop_all, (void *)free_node);
	free(m->b);
	memset(m, 0, sizeof(*m));
}

/* ---- timers ------------------------------------------------------------ */

static void heap_set(trigger_client *c, size_t i, struct tc_timer *t)
{
	c->heap[i] = t;
	t->slot = i + 1;
}

static void heap_up(trigger_client *c, size_t i)
{
	struct tc_timer *t = c->heap[i];

	while (i > 0 && c->heap[(i - 1) / 2]->at > t->at) {
		heap_set(c, i, c->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(c, i, t);
}

static void heap_down(trigger_client *c, size_t i)
{
	struct tc_timer *t = c->heap[i];

	for (;;) {
		size_t k = 2 * i + 1;

		if (k >= c->nheap)
			break;
		if (k + 1 < c->nheap && c->heap[k + 1]->at < c->heap[k]->at)
			k++;
		if (c->heap[k]->at >= t->at)
			break;
		heap_set(c, i, c->heap[k]);
		i = k;
	}
	heap_set(c, i, t);
}

int tc_timer_reserve(trigger_client *c)
{
	if (c->reserved == c->capheap) {
		size_t cap = c->capheap ? c->capheap * 2 : 64;
		struct tc_timer **h = realloc(c->heap, cap * sizeof(*h));

		if (!h)
			return -1;
		c->heap = h;
		c->capheap = cap;
	}
	c->reserved++;
	return 0;
}

void tc_timer_unreserve(trigger_client *c)
{
	c->reserved--;
}

void tc_timer_cancel(trigger_client *c, struct tc_timer *t)
{
	struct tc_timer *m;
	size_t i;

	if (!t->slot)
		return;
	i = t->slot - 1;
	t->slot = 0;
	if (i == --c->nheap)
		return;
	m = c->heap[c->nheap];
	heap_set(c, i, m);
	heap_up(c, i);
	if (m->slot == i + 1)
		heap_down(c, i);
}

void tc_timer_arm(trigger_client *c, struct tc_timer *t, int64_t at)
{
	tc_timer_cancel(c, t);
	t->at = at;
	heap_set(c, c->nheap++, t);
	heap_up(c, c->nheap - 1);
}

static void run_timers(trigger_client *c)
{
	int64_t now = tc_now_ms();

	while (c->nheap && c->heap[0]->at <= now) {
		struct tc_timer *t = c->heap[0];

		tc_timer_cancel(c, t);
		t->fn(t);
	}
}

/* ---- randomness -------------------------------------------------------- */

static uint64_t rng_next(trigger_client *c)
{
	uint64_t s1 = c->rng[0];
	const uint64_t s0 = c->rng[1];

	c->rng[0] = s0;         /* xorshift128+: only jitter and request ids */
	s1 ^= s1 << 23;
	c->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return c->rng[1] + s0;
}

int64_t tc_backoff(trigger_client *c, int64_t *b)
{
	int64_t base = *b ? *b : 100;

	*b = base * 2 > 5000 ? 5000 : base * 2;
	return base / 2 + (int64_t)(rng_next(c) % (uint64_t)(base + 1));
}

void tc_random_hex(trigger_client *c, char *out, size_t nhex)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t r = 0;

	for (size_t i = 0; i < nhex; i++) {
		if (i % 16 == 0)
			r = rng_next(c);
		out[i] = hex[r & 15];
		r >>= 4;
	}
	out[nhex] = '\0';
}

/* ---- the submission queue --------------------------------------------- */

static void wake(trigger_client *c)
{
	uint64_t one = 1;

	while (write(c->efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/* Under c->lock.  Returns whether the event thread must be woken. */
static int enqueue(trigger_client *c, struct tc_cmd *cmd)
{
	cmd->next = NULL;
	*c->qtail = cmd;
	c->qtail = &cmd->next;
	if (c->woken)
		return 0;
	c->woken = 1;
	return 1;
}

void tc_post(trigger_client *c, struct tc_cmd *cmd)
{
	int w;

	pthread_mutex_lock(&c->lock);
	w = enqueue(c, cmd);
	pthread_mutex_unlock(&c->lock);
	if (w)
		wake(c);
}

int tc_post_once(trigger_client *c, struct tc_cmd *cmd, int *flag)
{
	int queued = 0, w = 0;

	pthread_mutex_lock(&c->lock);
	if (!*flag) {
		*flag = queued = 1;
		w = enqueue(c, cmd);
	}
	pthread_mutex_unlock(&c->lock);
	if (w)
		wake(c);
	return queued;
}

int tc_claim_flag(trigger_client *c, int *flag)
{
	int was;

	pthread_mutex_lock(&c->lock);
	was = *flag;
	*flag = 1;
	pthread_mutex_unlock(&c->lock);
	return !was;
}

/* Runs what was queued; returns non-zero when shutdown was asked. */
static int run_commands(trigger_client *c)
{
	struct tc_cmd *cmd;

	pthread_mutex_lock(&c->lock);
	cmd = c->qhead;
	c->qhead = NULL;
	c->qtail = &c->qhead;
	c->woken = 0;
	c->down = c->stopping;
	pthread_mutex_unlock(&c->lock);
	while (cmd) {
		struct tc_cmd *next = cmd->next;

		cmd->fn(c, cmd);
		cmd = next;
	}
	return c->down;
}

/* ---- transfers --------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	struct tc_xfer *x = ud;

	return x->ops->data(x, p, size * n) ? 0 : size * n;
}

static void take_jwt(struct tc_xfer *x, const char *v, size_t len)
{
	while (len && (*v == ' ' || *v == '\t'))
		v++, len--;
	while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' ||
		       v[len - 1] == ' '))
		len--;
	free(x->jwt);
	x->jwt = strndup(v, len);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	static const char jwt_name[] = "x-trigger-jwt:";
	struct tc_xfer *x = ud;
	size_t len = size * n;
	long status = 0;

	if (len >= 5 && !memcmp(p, "HTTP/", 5)) {
		free(x->jwt);   /* a new response (after a 1xx) */
		x->jwt = NULL;
		memset(&x->ans, 0, sizeof(x->ans));
	} else if (len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status >= 200) {
			x->status = status;
			curl_easy_getinfo(x->easy, CURLINFO_LOCAL_PORT, &x->lport);
			if (!x->client->proto)
				tc_conn_learn(x->client, x->easy);
			tc_clock_seen(x->client, x->ans.date_s);
			if (x->ops->headers)
				x->ops->headers(x, status);
		}
	} else if (len > sizeof(jwt_name) - 1 &&
		   !strncasecmp(p, jwt_name, sizeof(jwt_name) - 1)) {
		take_jwt(x, p + sizeof(jwt_name) - 1,
			 len - (sizeof(jwt_name) - 1));
	} else {
		tc_answer_header(&x->ans, p, len);
	}
	if (x->ops->header_line && len > 2 && memcmp(p, "HTTP/", 5) != 0)
		x->ops->header_line(x, p, len);
	return len;
}

struct curl_slist *tc_header_add(struct curl_slist *l, const char *fmt, ...)
{
	char buf[512], *line = buf;
	struct curl_slist *nl;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(buf)) {
		va_start(ap, fmt);
		n = vasprintf(&line, fmt, ap);
		va_end(ap);
	}
	nl = n < 0 ? NULL : curl_slist_append(l, line);
	if (line != buf && n >= 0)
		free(line);
	if (!nl)
		curl_slist_free_all(l);
	return nl;
}

struct curl_slist *tc_headers(const trigger_client *c, const char *auth_line,
			      const char *accept, int post)
{
	struct curl_slist *l = NULL;

	/* A 1 MiB send would otherwise wait for "100 Continue" first. */
	l = tc_header_add(l, "Expect:");
	if (l)
		l = tc_header_add(l, "Accept: %s", accept);
	if (l && post)
		l = tc_header_add(l, "Content-Type: application/json");
	if (l && auth_line)
		l = tc_header_add(l, "%s", auth_line);
	/* Without it run statuses come back under their legacy names. */
	if (l)
		l = tc_header_add(l, "x-trigger-api-version: " TC_API_VERSION);
	if (l && c->branch)
		l = tc_header_add(l, "x-trigger-branch: %s", c->branch);
	return l;
}

/* A `once` body goes out through this callback, not CURLOPT_POSTFIELDS:
 * when a reused connection dies before any byte of the answer, curl sends
 * the request again on a fresh one by itself, and a send the server had
 * already stored would be stored twice.  A body given by callback cannot
 * be rewound (there is no seek callback), so curl fails that transfer
 * with CURLE_SEND_FAIL_REWIND instead and api.c decides what to do. */
static size_t on_read(char *p, size_t size, size_t n, void *ud)
{
	struct tc_xfer *x = ud;
	size_t len = size * n, left = x->body_len - x->body_off;

	if (len > left)
		len = left;
	memcpy(p, x->body + x->body_off, len);
	x->body_off += len;
	return len;
}

static CURL *easy_get(trigger_client *c)
{
	return c->npool ? c->pool[--c->npool] : curl_easy_init();
}

static void easy_put(trigger_client *c, CURL *e)
{
	if (c->npool == EASY_POOL_MAX) {
		curl_easy_cleanup(e);
		return;
	}
	curl_easy_reset(e);
	c->pool[c->npool++] = e;
}

static void easy_setup(trigger_client *c, struct tc_xfer *x, CURL *e,
		       const struct tc_xfer_spec *s)
{
	long connect = TC_CONNECT_TIMEOUT_MS;

	if (s->timeout_ms && s->timeout_ms < connect)
		connect = s->timeout_ms;
	curl_easy_setopt(e, CURLOPT_URL, s->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	/* The CA bundle only: Debian's libcurl also names the CA directory,
	 * and with a directory set libcurl does not cache the parsed CA
	 * store, so every new connection re-read the whole bundle (20 ms of
	 * CPU on this thread, every transfer stalled meanwhile). */
	curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	if (c->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
#if LIBCURL_VERSION_NUM >= 0x075700     /* 7.87.0 */
	curl_easy_setopt(e, CURLOPT_CA_CACHE_TIMEOUT, 86400L);
#endif
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	if (c->tls)     /* only TLS may multiplex (HTTP/2) */
		curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->hdrs);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, s->timeout_ms);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	if (s->method)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, s->method);
	if (s->head)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	if (!s->post)
		return;
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body_len);
	if (s->once) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(e, CURLOPT_READDATA, x);
	} else {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, s->body ? s->body : "");
	}
}

int tc_xfer_start(trigger_client *c, struct tc_xfer *x,
		  const struct tc_xfer_spec *s)
{
	CURL *e = s->hdrs ? easy_get(c) : NULL;

	if (!e) {
		curl_slist_free_all(s->hdrs);
		return TRIGGER_E_NOMEM;
	}
	x->errbuf[0] = '\0';
	x->status = 0;
	memset(&x->ans, 0, sizeof(x->ans));
	x->body = s->once ? s->body : NULL;
	x->body_len = x->body ? s->body_len : 0;
	x->body_off = 0;
	tc_xfer_clear(x);
	x->easy = e;
	x->client = c;
	x->hdrs = s->hdrs;
	x->lport = 0;
	c->started++;
	easy_setup(c, x, e, s);
	tc_link_add_tail(&c->xfers, &x->live);
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
		tc_link_del(&x->live);
		x->easy = NULL;
		x->hdrs = NULL;
		curl_slist_free_all(s->hdrs);
		easy_put(c, e);
		return TRIGGER_E_NOMEM;
	}
	return 0;
}

/* A transfer stopped before its end, on a shared (HTTP/2) connection:
 * curl queues its RST_STREAM but sends it only when the connection next
 * sends or receives, which on a quiet connection can be minutes, and the
 * server keeps serving the stream meanwhile.  Remember the connection (by
 * its local port: curl names no connection) to make it send. */
static void kick_later(trigger_client *c, const struct tc_xfer *x)
{
	size_t n = sizeof(c->kick) / sizeof(c->kick[0]);

	if (!c->bounded || !x->lport)
		return;
	for (size_t i = 0; i < c->nkick; i++)
		if (c->kick[i] == x->lport)
			return;
	if (c->nkick < n)
		c->kick[c->nkick++] = x->lport;
}

static void xfer_release(trigger_client *c, struct tc_xfer *x, int stopped)
{
	CURL *e = x->easy;

	x->easy = NULL;
	tc_link_del(&x->live);
	if (stopped)
		kick_later(c, x);
	curl_multi_remove_handle(c->multi, e);
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	easy_put(c, e);
}

void tc_xfer_stop(trigger_client *c, struct tc_xfer *x)
{
	if (x->easy)
		xfer_release(c, x, 1);
}

void tc_xfer_clear(struct tc_xfer *x)
{
	free(x->jwt);
	x->jwt = NULL;
}

static void collect_done(trigger_client *c)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(c->multi, &left))) {
		struct tc_xfer *x = NULL;
		CURLcode rc = m->data.result;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		x->os_errno = 0;
		curl_easy_getinfo(m->easy_handle, CURLINFO_OS_ERRNO, &x->os_errno);
		xfer_release(c, x, 0);
		x->ops->done(x, rc);
	}
}

/* ---- results ----------------------------------------------------------- */

trigger_code tc_status_code(long status, const char *error)
{
	if (status >= 200 && status < 300)
		return TRIGGER_OK;
	switch (status) {
	case 400:
		return error && strcasestr(error, "completed run") ?
		       TRIGGER_E_RUN_FINISHED : TRIGGER_E_INVALID;
	case 401:
		return TRIGGER_E_UNAUTHORIZED;
	case 403:
		return TRIGGER_E_FORBIDDEN;
	case 404:
		return TRIGGER_E_NOT_FOUND;
	case 408:
		return TRIGGER_E_TIMEOUT;
	case 413:
		return TRIGGER_E_TOO_LARGE;
	case 429:
		return TRIGGER_E_SERVER;
	}
	if (status >= 400 && status < 500)
		return TRIGGER_E_CONFLICT;
	if (status >= 500 && status < 600)
		return TRIGGER_E_SERVER;
	return TRIGGER_E_PROTOCOL;
}

int tc_retryable(CURLcode rc, long status)
{
	switch (rc) {
	case CURLE_OK:
		return status >= 500 || status == 408 || status == 429;
	case CURLE_WRITE_ERROR:         /* we refused the answer */
	case CURLE_OUT_OF_MEMORY:
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
		return 0;
	default:
		return 1;
	}
}

int tc_may_have_acted(const struct tc_xfer *x, CURLcode rc)
{
	if (rc == CURLE_OK)
		return x->status >= 500;
	/* curl wanted to send it again: it had gone out, at least in part. */
	if (rc == CURLE_SEND_FAIL_REWIND)
		return 1;
	/* A body cut short is never acted on; what curl took whole may have
	 * reached the server even if the connection failed right after. */
	return x->body && x->body_off == x->body_len;
}

void tc_result_set(struct trigger_result *res, trigger_code code,
		   const char *fmt, ...)
{
	va_list ap;

	res->code = code;
	va_start(ap, fmt);
	vsnprintf(res->error, sizeof(res->error), fmt, ap);
	va_end(ap);
}

/* The API's "error" (or "message"), else a printable text body, else the
 * status line's meaning. */
static void error_text(struct trigger_result *res, const json_t *j,
		       const char *body, size_t len)
{
	const char *s = json_string_value(json_object_get(j, "error"));
	size_t n;

	if (!s)
		s = json_string_value(json_object_get(j, "message"));
	if (s) {
		snprintf(res->error, sizeof(res->error), "%s", s);
		return;
	}
	for (n = 0; body && !j && n < len && n < sizeof(res->error) - 1; n++)
		if ((unsigned char)body[n] < 0x20)
			break;
	if (n)
		snprintf(res->error, sizeof(res->error), "%.*s", (int)n, body);
	else if (res->status >= 300)
		snprintf(res->error, sizeof(res->error), "HTTP %ld", res->status);
}

/* The server's certificate did not verify, or ours to check it with
 * could not be read: nothing a retry would change. */
static int tls_failure(CURLcode rc)
{
	return rc == CURLE_PEER_FAILED_VERIFICATION ||
	       rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CERTPROBLEM ||
	       rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH;
}

/* What happened to a transfer that got no answer, in words. */
static const char *net_words(CURLcode rc, long os_errno)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		return os_errno == ECONNREFUSED ? "connection refused" :
		       os_errno == ETIMEDOUT ? "connection timed out" :
		       "cannot connect";
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return "host name not found";
	case CURLE_OPERATION_TIMEDOUT:
		return "timed out";
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_SHUTDOWN_FAILED:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_USE_SSL_FAILED:
		return "TLS failure";
	case CURLE_GOT_NOTHING:
		return "connection closed without an answer";
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		return os_errno == ECONNRESET ? "connection reset" :
		       "connection lost";
	case CURLE_SEND_FAIL_REWIND:
		return "connection lost while sending";
	case CURLE_WRITE_ERROR:
		return "answer refused";
	case CURLE_OUT_OF_MEMORY:
		return "out of memory";
	default:
		return "network failure";
	}
}

void tc_result_fill(struct trigger_result *res, const struct tc_xfer *x,
		    CURLcode rc, const char *body, size_t len, json_t **parsed)
{
	json_t *j = NULL;

	memset(res, 0, sizeof(*res));
	*parsed = NULL;
	res->jwt = x->jwt;
	if (rc != CURLE_OK) {
		tc_result_set(res, rc == CURLE_OPERATION_TIMEDOUT ?
			      TRIGGER_E_TIMEOUT : tls_failure(rc) ?
			      TRIGGER_E_TLS : TRIGGER_E_NETWORK, "%s: %s",
			      net_words(rc, x->os_errno),
			      x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
		return;
	}
	res->status = x->status;
	if (len)
		j = json_loadb(body, len, JSON_DECODE_ANY, NULL);
	error_text(res, j, body, len);
	res->code = tc_status_code(res->status, res->error);
	if (res->code == TRIGGER_OK && len && !j)
		tc_result_set(res, TRIGGER_E_PROTOCOL, "answer is not JSON");
	res->body = j;
	*parsed = j;
}

/* ---- the thread -------------------------------------------------------- */

static int on_socket(CURL *e, curl_socket_t s, int what, void *ud, void *sp)
{
	trigger_client *c = ud;
	struct epoll_event ev = { .data.fd = s };

	(void)e;
	if (what == CURL_POLL_REMOVE) {
		epoll_ctl(c->epfd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) |
		    (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	/* sp only hints whether the fd is in the set: curl may close a
	 * socket before saying REMOVE, and the number be reused. */
	if (epoll_ctl(c->epfd, sp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) &&
	    epoll_ctl(c->epfd, sp ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s, &ev))
		return -1;
	if (!sp)
		curl_multi_assign(c->multi, s, c);
	return 0;
}

static int on_curl_timer(CURLM *m, long ms, void *ud)
{
	trigger_client *c = ud;

	(void)m;
	c->curl_at = ms < 0 ? -1 : tc_now_ms() + ms;
	return 0;
}

static int next_timeout(trigger_client *c)
{
	int64_t at = c->nheap ? c->heap[0]->at : -1, d;

	if (c->curl_at >= 0 && (at < 0 || c->curl_at < at))
		at = c->curl_at;
	if (at < 0)
		return -1;
	d = at - tc_now_ms();
	return d < 0 ? 0 : d > 60000 ? 60000 : (int)d;
}

static void curl_act(trigger_client *c, curl_socket_t s, int flags)
{
	curl_multi_socket_action(c->multi, s, flags, &c->running);
}

/* Pausing and resuming a transfer makes curl send what its connection
 * has queued (the pause is a flow-control window update).  A connection
 * left with no transfer gets the keep-warm request instead, which goes on
 * it when it is the only one. */
static void run_kicks(trigger_client *c)
{
	while (c->nkick) {
		long port = c->kick[--c->nkick];
		struct tc_link *l;

		for (l = c->xfers.next; l != &c->xfers; l = l->next) {
			struct tc_xfer *x = tc_container_of(l, struct tc_xfer, live);

			if (x->lport == port) {
				curl_easy_pause(x->easy, CURLPAUSE_SEND);
				curl_easy_pause(x->easy, CURLPAUSE_CONT);
				break;
			}
		}
		if (l == &c->xfers && c->warm)
			tc_warm_soon(c);
	}
}

static void loop_once(trigger_client *c)
{
	struct epoll_event ev[64];
	int n;

	while (c->nkick) {
		run_kicks(c);
		collect_done(c);
	}
	n = epoll_wait(c->epfd, ev, 64, next_timeout(c));

	for (int i = 0; i < n; i++) {
		int flags = 0;

		if (ev[i].data.fd == c->efd) {
			uint64_t v;     /* the queue is run by run_commands */

			while (read(c->efd, &v, sizeof(v)) < 0 && errno == EINTR)
				;
			continue;
		}
		if (ev[i].events & EPOLLIN)
			flags |= CURL_CSELECT_IN;
		if (ev[i].events & EPOLLOUT)
			flags |= CURL_CSELECT_OUT;
		if (ev[i].events & (EPOLLERR | EPOLLHUP))
			flags |= CURL_CSELECT_ERR;
		curl_act(c, ev[i].data.fd, flags);
	}
	if (c->curl_at >= 0 && c->curl_at <= tc_now_ms()) {
		c->curl_at = -1;
		curl_act(c, CURL_SOCKET_TIMEOUT, 0);
	}
	collect_done(c);
	run_timers(c);
	tc_conn_apply(c);
	if (c->warm)
		tc_warm_update(c);
}

/* Everything live completes (CANCELLED / CLOSED); callbacks may queue
 * more, which is cancelled in turn until nothing is left. */
static void loop_shutdown(trigger_client *c)
{
	for (;;) {
		run_commands(c);
		tc_sub_shutdown(c);
		tc_api_shutdown(c);
		tc_output_shutdown(c);
		tc_conn_shutdown(c);
		pthread_mutex_lock(&c->lock);
		if (!c->qhead) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		pthread_mutex_unlock(&c->lock);
	}
}

static void *loop_main(void *arg)
{
	trigger_client *c = arg;

	while (!run_commands(c))
		loop_once(c);
	loop_shutdown(c);
	return NULL;
}

/* ---- the client -------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

static void set_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
}

static void seed(trigger_client *c)
{
	if (getrandom(c->rng, sizeof(c->rng), 0) != sizeof(c->rng)) {
		c->rng[0] = (uint64_t)tc_now_ms() ^ (uintptr_t)c;
		c->rng[1] = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
	}
	c->rng[0] |= 1;
}

/* $TRIGGER_SSE_TIMEOUT_SECONDS shortens the server's hold of a
 * subscription (1..600): for tests of the re-open path. */
static int sse_timeout_s(void)
{
	const char *s = getenv("TRIGGER_SSE_TIMEOUT_SECONDS");
	long v = s ? strtol(s, NULL, 10) : 0;

	return v >= 1 && v <= 600 ? (int)v : 600;
}

/* An option, else its environment variable; NULL when neither is set. */
static const char *opt_or_env(const char *opt, const char *name)
{
	const char *v = opt && *opt ? opt : getenv(name);

	return v && *v ? v : NULL;
}

/* Where streams are read and sent (the SDK's TRIGGER_STREAM_URL), and the
 * preview branch every request names (TRIGGER_PREVIEW_BRANCH). */
static int optional_fields(trigger_client *c,
			   const struct trigger_client_opts *o,
			   char *err, size_t errlen)
{
	const char *stream = opt_or_env(o->stream_url, "TRIGGER_STREAM_URL");
	const char *branch = opt_or_env(o->branch, "TRIGGER_PREVIEW_BRANCH");
	char why[200];

	c->stream_base = url_check_base(stream ? stream : c->url,
					o->insecure_http, why, sizeof(why));
	if (!c->stream_base) {
		snprintf(err, errlen, "%s (the stream URL)", why);
		return -1;
	}
	for (const char *p = branch; p && *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			set_err(err, errlen, "preview branch name holds a "
				"control character");
			return -1;
		}
	if (branch && !(c->branch = strdup(branch))) {
		set_err(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static int client_fields(trigger_client *c, const struct trigger_client_opts *o,
			 char *err, size_t errlen)
{
	const char *url = o->api_url, *ca;
	char ua[64];

	if (!url || !*url)
		url = getenv("TRIGGER_API_URL");
	if (!url || !*url)
		url = "https://api.trigger.dev";
	c->url = url_check_base(url, o->insecure_http, err, errlen);
	if (!c->url)
		return -1;
	c->tls = !strncmp(c->url, "https:", 6);
	if (optional_fields(c, o, err, errlen))
		return -1;
	snprintf(ua, sizeof(ua), "libtriggerclient/%s", TRIGGERFS_VERSION);
	c->user_agent = strdup(o->user_agent ? o->user_agent : ua);
	ca = o->ca_file ? o->ca_file : getenv("TRIGGER_CA_FILE");
	c->ca_file = ca && *ca ? strdup(ca) : NULL;
	c->cred = trigger_cred_dup(o->cred);
	c->extra_key = c->cred && trigger_cred_is_secret(c->cred) &&
		       trigger_key_is_additional(trigger_cred_text(c->cred));
	if (c->cred && asprintf(&c->auth.key_line, "Authorization: Bearer %s",
				trigger_cred_text(c->cred)) < 0)
		c->auth.key_line = NULL;
	c->send_timeout_ms = o->send_timeout_ms > 0 ? o->send_timeout_ms : 30000;
	c->request_timeout_ms = o->request_timeout_ms > 0 ?
				o->request_timeout_ms : 30000;
	c->sse_timeout_s = sse_timeout_s();
	if (!c->user_agent || !c->auth.key_line || (ca && *ca && !c->ca_file)) {
		set_err(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static int client_loop_init(trigger_client *c)
{
	struct epoll_event ev = { .events = EPOLLIN };

	c->multi = curl_multi_init();
	c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!c->multi || c->efd < 0 || c->epfd < 0)
		return -1;
	ev.data.fd = c->efd;
	if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->efd, &ev))
		return -1;
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	/* As many streams per connection as the server allows (nginx: 128;
	 * curl's own default is 100), so that fewer connections are needed. */
	curl_multi_setopt(c->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, 256L);
	tc_conn_init(c);
	return 0;
}

/* The event thread takes no signals: they belong to the application. */
static int start_thread(trigger_client *c)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&c->thread, NULL, loop_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

static void client_destroy(trigger_client *c)
{
	if (c->multi)
		curl_multi_cleanup(c->multi);
	while (c->npool)
		curl_easy_cleanup(c->pool[--c->npool]);
	if (c->efd >= 0)
		close(c->efd);
	if (c->epfd >= 0)
		close(c->epfd);
	tc_api_destroy(c);
	tc_output_destroy(c);
	tc_conn_destroy(c);
	pthread_mutex_destroy(&c->lock);
	free(c->heap);
	free(c->url);
	free(c->stream_base);
	free(c->branch);
	free(c->user_agent);
	free(c->ca_file);
	if (c->cred)
		trigger_cred_free(c->cred);
	free(c);
}

trigger_client *trigger_client_new(const struct trigger_client_opts *o,
				   char *err, size_t errlen)
{
	trigger_client *c;

	if (!o || !o->cred) {
		set_err(err, errlen, "no credentials");
		return NULL;
	}
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		set_err(err, errlen, "libcurl initialisation failed");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		set_err(err, errlen, "out of memory");
		return NULL;
	}
	c->efd = c->epfd = -1;
	c->curl_at = -1;
	c->qtail = &c->qhead;
	tc_link_init(&c->reqs);
	tc_link_init(&c->subs);
	tc_link_init(&c->checks);
	tc_link_init(&c->xfers);
	pthread_mutex_init(&c->lock, NULL);
	seed(c);
	if (client_fields(c, o, err, errlen))
		goto fail;
	/* Over plain HTTP a new connection costs one round trip, not three. */
	if (client_loop_init(c) || (o->keep_warm && c->tls && tc_warm_start(c)) ||
	    start_thread(c)) {
		set_err(err, errlen, "cannot start the event thread");
		goto fail;
	}
	return c;
fail:
	client_destroy(c);
	return NULL;
}

void trigger_client_free(trigger_client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = 1;
	pthread_mutex_unlock(&c->lock);
	wake(c);
	pthread_join(c->thread, NULL);
	client_destroy(c);
}

const char *trigger_client_url(const trigger_client *c)
{
	return c->url;
}
