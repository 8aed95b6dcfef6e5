/*
 * Server-sent events, as the WHATWG HTML standard parses them
 * ("Interpreting an event stream").  Bytes are passed through undecoded:
 * the records inside are JSON, whose parser checks the UTF-8.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

/* Room for the field name and colon around a value of max_event bytes. */
#define LINE_SLACK 16

struct buf {
	char *p;
	size_t len, cap;
};

struct sse_parser {
	sse_event_fn cb;
	void *arg;
	size_t max_event;
	struct buf line;        /* the current line, without its end */
	struct buf data;        /* data lines, each followed by '\n' */
	struct buf type;        /* event type, NUL-terminated */
	struct buf id;          /* last event id, sticky, NUL-terminated */
	long retry;
	unsigned char bom;      /* BOM bytes matched; BOM_DONE once decided */
	unsigned char cr;       /* the last byte was CR: skip one LF */
	unsigned char comment;  /* inside a comment line: drop to its end */
	unsigned char failed;   /* a field was refused: reset and fail */
};

#define BOM_DONE 4
static const char bom[3] = { '\xef', '\xbb', '\xbf' };

/* Append n bytes and keep a NUL after them. */
static int buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int buf_set(struct buf *b, const char *s, size_t n)
{
	b->len = 0;
	return buf_add(b, s, n);
}

struct sse_parser *sse_parser_new(size_t max_event, sse_event_fn cb, void *arg)
{
	struct sse_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->cb = cb;
	p->arg = arg;
	p->max_event = max_event;
	if (buf_set(&p->id, "", 0) || buf_set(&p->type, "", 0) ||
	    buf_set(&p->data, "", 0)) {
		sse_parser_free(p);
		return NULL;
	}
	p->retry = -1;
	return p;
}

void sse_parser_free(struct sse_parser *p)
{
	if (!p)
		return;
	free(p->line.p);
	free(p->data.p);
	free(p->type.p);
	free(p->id.p);
	free(p);
}

/* The last event id survives, as the standard keeps it across reconnects. */
void sse_parser_reset(struct sse_parser *p)
{
	p->line.len = 0;
	p->data.len = 0;
	p->data.p[0] = '\0';
	p->type.len = 0;
	p->type.p[0] = '\0';
	p->retry = -1;
	p->bom = 0;
	p->cr = 0;
	p->comment = 0;
	p->failed = 0;
}

/* A blank line.  Without data nothing is dispatched, but a pending retry
 * is kept for the next event so that a lone "retry:" block is not lost. */
static int dispatch(struct sse_parser *p)
{
	struct sse_event ev;
	int rc;

	if (!p->data.len) {
		p->type.len = 0;
		p->type.p[0] = '\0';
		return 0;
	}
	p->data.p[--p->data.len] = '\0';
	ev.type = p->type.p;
	ev.data = p->data.p;
	ev.data_len = p->data.len;
	ev.id = p->id.p;
	ev.retry = p->retry;
	rc = p->cb(p->arg, &ev);
	p->data.len = 0;
	p->data.p[0] = '\0';
	p->type.len = 0;
	p->type.p[0] = '\0';
	p->retry = -1;
	return rc;
}

/* Only ASCII digits count; anything else leaves retry alone. */
static void set_retry(struct sse_parser *p, const char *v, size_t n)
{
	long ms = 0;

	if (!n)
		return;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return;
		ms = ms > (LONG_MAX - 9) / 10 ? LONG_MAX : ms * 10 + (v[i] - '0');
	}
	p->retry = ms;
}

static int field_is(const char *f, size_t n, const char *name)
{
	return n == strlen(name) && memcmp(f, name, n) == 0;
}

/* One field line; -1 when data grows past max_event or memory runs out. */
static int process_field(struct sse_parser *p, const char *f, size_t n)
{
	const char *colon = memchr(f, ':', n);
	const char *v = colon ? colon + 1 : f + n;
	size_t fn = (size_t)(v - f) - (colon != NULL);
	size_t vn = (size_t)(f + n - v);

	if (vn && *v == ' ')
		v++, vn--;
	if (field_is(f, fn, "data")) {
		if (p->data.len + vn > p->max_event)
			return -1;
		return buf_add(&p->data, v, vn) || buf_add(&p->data, "\n", 1) ? -1 : 0;
	}
	if (field_is(f, fn, "event"))
		return buf_set(&p->type, v, vn);
	if (field_is(f, fn, "id") && !memchr(v, '\0', vn))
		return buf_set(&p->id, v, vn);
	if (field_is(f, fn, "retry"))
		set_retry(p, v, vn);
	return 0;
}

/* Returns the callback's value; p->failed says a field was refused. */
static int process_line(struct sse_parser *p)
{
	size_t n = p->line.len;

	p->line.len = 0;
	if (!n)
		return dispatch(p);
	if (process_field(p, p->line.p, n))
		p->failed = 1;
	return 0;
}

static int fail(struct sse_parser *p)
{
	sse_parser_reset(p);
	return -1;
}

static const char *find_eol(const char *s, const char *end)
{
	/* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): s is in [s, end) of the caller's bytes */
	while (s < end && *s != '\n' && *s != '\r')
		s++;
	return s;
}

static int add_to_line(struct sse_parser *p, const char *s, size_t n)
{
	if (p->line.len + n > p->max_event + LINE_SLACK)
		return -1;
	return buf_add(&p->line, s, n);
}

/* Bytes after the BOM: split into lines, each handled at its end. */
static int feed_bytes(struct sse_parser *p, const char *s, size_t len)
{
	const char *end = s + len, *eol;
	int rc;

	while (s < end) {
		if (p->cr && *s == '\n') {
			p->cr = 0;
			s++;
			continue;
		}
		p->cr = 0;
		eol = find_eol(s, end);
		/* Comments are dropped as they come, never buffered. */
		if (!p->line.len && !p->comment && eol > s && *s == ':')
			p->comment = 1;
		if (!p->comment && add_to_line(p, s, (size_t)(eol - s)))
			return fail(p);
		if (eol == end)
			break;
		p->cr = *eol == '\r';
		s = eol + 1;
		if (p->comment) {
			p->comment = 0;
			continue;
		}
		rc = process_line(p);
		if (p->failed)
			return fail(p);
		if (rc)
			return rc;
	}
	return 0;
}

/* One UTF-8 BOM at the start of the stream is dropped; the chunk may end
 * inside it, and bytes that turn out not to be one are fed as data. */
int sse_parser_feed(struct sse_parser *p, const char *buf, size_t len)
{
	while (p->bom < sizeof(bom) && len && *buf == bom[p->bom]) {
		p->bom++;
		buf++;
		len--;
	}
	if (p->bom == sizeof(bom)) {
		p->bom = BOM_DONE;
	} else if (p->bom != BOM_DONE && len) {
		size_t held = p->bom;

		p->bom = BOM_DONE;
		if (feed_bytes(p, bom, held))
			return -1;
	}
	return feed_bytes(p, buf, len);
}
