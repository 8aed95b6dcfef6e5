/*
 * What an answer's headers tell the client beyond its status: retry a 404
 * (x-should-retry: the server read a replica that lags), when a rate limit
 * resets, which stream framing the read route chose, and the server's
 * clock.  Also the two things built on them: the clock the client mints
 * and judges tokens by, and the pace of requests under /api/ with a public
 * token (60 a minute per token on the real server).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http.h"

/* If line is "name: value", the value with blanks and CRLF trimmed. */
static const char *header_value(const char *line, size_t len,
				const char *name, char *buf, size_t buflen)
{
	size_t n = strlen(name), vlen;

	if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
		return NULL;
	line += n + 1;
	len -= n + 1;
	while (len && (*line == ' ' || *line == '\t'))
		line++, len--;
	while (len && strchr(" \t\r\n", line[len - 1]))
		len--;
	vlen = len < buflen - 1 ? len : buflen - 1;
	memcpy(buf, line, vlen);
	buf[vlen] = '\0';
	return buf;
}

void tc_answer_header(struct tc_answer *a, const char *line, size_t len)
{
	char buf[128];
	const char *v;

	if ((v = header_value(line, len, "x-should-retry", buf, sizeof(buf))))
		a->should_retry = !strcasecmp(v, "true");
	else if ((v = header_value(line, len, "x-stream-version", buf, sizeof(buf))))
		a->stream_v2 = !strcasecmp(v, "v2");
	else if ((v = header_value(line, len, "x-ratelimit-reset", buf, sizeof(buf))))
		a->reset_ms = strtoll(v, NULL, 10);
	else if ((v = header_value(line, len, "date", buf, sizeof(buf)))) {
		time_t t = curl_getdate(v, NULL);

		a->date_s = t > 0 ? (int64_t)t : 0;
	}
}

/* ---- the server's clock ------------------------------------------------ */

int64_t tc_server_s(const trigger_client *c)
{
	return tc_wall_s() + atomic_load_explicit(&c->skew_s, memory_order_relaxed);
}

int64_t tc_server_ms(const trigger_client *c, int64_t wall_ms)
{
	return wall_ms + 1000 *
	       atomic_load_explicit(&c->skew_s, memory_order_relaxed);
}

/* Date has whole seconds and arrives a little late: the skew seen is off
 * by a second or so either way, which a token living minutes ignores. */
void tc_clock_seen(trigger_client *c, int64_t date_s)
{
	if (date_s > 0)
		atomic_store_explicit(&c->skew_s, date_s - tc_wall_s(),
				      memory_order_relaxed);
}

/* ---- pace under /api/ --------------------------------------------------- */

int tc_api_path(const trigger_client *c, const char *url)
{
	size_t n = strlen(c->url);

	return !strncmp(url, c->url, n) && !strncmp(url + n, "/api/", 5);
}

int64_t tc_budget_take(struct tc_budget *b, int64_t now)
{
	int64_t oldest = b->at[b->next];

	if (b->blocked_until > now)
		return b->blocked_until - now;
	if (oldest && now - oldest < TC_API_WINDOW_MS)
		return oldest + TC_API_WINDOW_MS - now;
	b->at[b->next] = now ? now : 1;
	b->next = (b->next + 1) % TC_API_BUDGET;
	return 0;
}

int64_t tc_reset_delay(int64_t reset_ms, int64_t server_ms)
{
	int64_t d = reset_ms - server_ms;

	if (reset_ms <= 0 || d < 0)
		return 0;
	return d < TC_API_WINDOW_MS ? d : TC_API_WINDOW_MS;
}
