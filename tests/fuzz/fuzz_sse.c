/* client/sse.c, the SSE parser.  Properties: the same bytes fed at once,
 * one byte at a time, or in random pieces give the same events and the
 * same failure (an event over max_event), and so do the bytes with every
 * CRLF and CR turned into LF (the three line ends are one); every event's data is
 * NUL-terminated at data_len; sse_parser_reset forgets a half-read event. */
#include <string.h>

#include "fuzz.h"
#include "sse.h"

/* Small, so that the over-size path is reached often. */
#define MAX_EVENT 512

struct events {
	char *p;
	size_t len, cap;
	size_t count;
};

static void put(struct events *e, const void *s, size_t n)
{
	if (e->len + n > e->cap) {
		e->cap = (e->len + n) * 2;
		e->p = realloc(e->p, e->cap);
		FUZZ_CHECK(e->p, "out of memory");
	}
	memcpy(e->p + e->len, s, n);
	e->len += n;
}

/* Events are kept as one byte string, to compare runs with memcmp. */
static int on_event(void *arg, const struct sse_event *ev)
{
	struct events *e = arg;
	size_t tl = strlen(ev->type), il = strlen(ev->id);

	FUZZ_CHECK(ev->data[ev->data_len] == '\0', "data NUL-terminated");
	FUZZ_CHECK(ev->data_len <= MAX_EVENT, "data within max_event");
	FUZZ_CHECK(ev->retry >= -1, "retry is -1 or a count of ms");
	put(e, &tl, sizeof(tl));
	put(e, ev->type, tl);
	put(e, &ev->data_len, sizeof(ev->data_len));
	put(e, ev->data, ev->data_len);
	put(e, &il, sizeof(il));
	put(e, ev->id, il);
	put(e, &ev->retry, sizeof(ev->retry));
	e->count++;
	return 0;
}

/* Feeds until the first failure, as the client drops a failed connection. */
static int run(const char *s, size_t n, uint64_t seed, int bytewise,
	       struct events *e)
{
	struct sse_parser *p = sse_parser_new(MAX_EVENT, on_event, e);
	size_t at = 0;
	int rc = 0;

	FUZZ_CHECK(p, "parser allocated");
	while (at < n && rc == 0) {
		size_t len = bytewise ? 1 : seed ? fuzz_chunk(&seed, n - at) : n;

		rc = sse_parser_feed(p, s + at, len);
		at += len;
	}
	sse_parser_free(p);
	return rc;
}

static void same(const struct events *a, int ra, const struct events *b,
		 int rb, const char *how)
{
	FUZZ_CHECK(ra == rb, "%s: feed returned %d, at once %d", how, rb, ra);
	FUZZ_CHECK(a->count == b->count, "%s: %zu events, at once %zu", how,
		   b->count, a->count);
	FUZZ_CHECK(a->len == b->len && (!a->len || memcmp(a->p, b->p, a->len) == 0),
		   "%s: the same events", how);
}

/* An id line first, so that the sticky id does not tell a reset parser
 * from a new one. */
static int feed_fresh(struct sse_parser *p, const char *s, size_t n)
{
	static const char id[] = "id: x\n";

	return sse_parser_feed(p, id, sizeof(id) - 1) ? -1 : sse_parser_feed(p, s, n);
}

/* After a reset, the rest of the stream parses as on a new parser. */
static void check_reset(const char *s, size_t n, size_t cut)
{
	struct events a = { 0 }, b = { 0 };
	struct sse_parser *p = sse_parser_new(MAX_EVENT, on_event, &a);
	struct sse_parser *q = sse_parser_new(MAX_EVENT, on_event, &b);
	int ra, rb;

	FUZZ_CHECK(p && q, "parsers allocated");
	sse_parser_feed(p, s, cut);
	sse_parser_reset(p);
	a.len = a.count = 0;
	ra = feed_fresh(p, s + cut, n - cut);
	rb = feed_fresh(q, s + cut, n - cut);
	same(&b, rb, &a, ra, "after reset");
	sse_parser_free(p);
	sse_parser_free(q);
	free(a.p);
	free(b.p);
}

/* CRLF and lone CR to LF; returns the new length. */
static size_t normalize_eol(char *out, const char *s, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		out[o++] = s[i] == '\r' ? '\n' : s[i];
		if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
			i++;
	}
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	uint64_t seed = fuzz_hash(data, size) | 1;
	struct events whole = { 0 }, bytes = { 0 }, pieces = { 0 }, lf = { 0 };
	int rw = run(s, size, 0, 0, &whole);
	char *norm = malloc(size + 1);
	size_t nn;

	FUZZ_CHECK(norm, "malloc");
	nn = normalize_eol(norm, s, size);
	same(&whole, rw, &lf, run(norm, nn, 0, 0, &lf), "with LF line ends");
	same(&whole, rw, &bytes, run(s, size, 0, 1, &bytes), "byte by byte");
	same(&whole, rw, &pieces, run(s, size, seed, 0, &pieces), "in pieces");
	check_reset(s, size, size ? (size_t)(seed % size) : 0);
	free(whole.p);
	free(bytes.p);
	free(pieces.p);
	free(lf.p);
	free(norm);
	return 0;
}
