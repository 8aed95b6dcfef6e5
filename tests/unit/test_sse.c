/* The SSE parser against the WHATWG rules, fed whole, split at every byte
 * boundary, and one byte at a time. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sse.h"

#define MAX_EVENT 4096

/* Every event seen, as text: "type|id|retry|data" lines. */
struct transcript {
	char text[16384];
	size_t len;
	int stop_after;         /* return 7 from this event on (1-based) */
	int events;
};

static void put(struct transcript *t, const char *s, size_t n)
{
	if (t->len + n < sizeof(t->text)) {
		memcpy(t->text + t->len, s, n);
		t->len += n;
		t->text[t->len] = '\0';
	}
}

static int record(void *arg, const struct sse_event *ev)
{
	struct transcript *t = arg;
	char head[512];

	snprintf(head, sizeof(head), "%s|%s|%ld|", ev->type, ev->id, ev->retry);
	put(t, head, strlen(head));
	for (size_t i = 0; i < ev->data_len; i++) {
		unsigned char c = (unsigned char)ev->data[i];
		char esc[8];

		if (c == '\n')
			put(t, "\\n", 2);
		else if (c < 0x20 || c >= 0x7f) {
			snprintf(esc, sizeof(esc), "\\x%02x", c);
			put(t, esc, strlen(esc));
		} else
			put(t, (const char *)&c, 1);
	}
	put(t, "\n", 1);
	CHECK(ev->data[ev->data_len] == '\0', "data is NUL-terminated");
	t->events++;
	return t->stop_after && t->events >= t->stop_after ? 7 : 0;
}

/* Feed s in pieces split at the given offsets (sorted, 0 = none). */
static const char *parse_split(struct transcript *t, const char *s, size_t n,
			       size_t cut1, size_t cut2)
{
	struct sse_parser *p = sse_parser_new(MAX_EVENT, record, t);
	size_t cuts[] = { 0, cut1, cut2, n };

	memset(t, 0, sizeof(*t));
	for (int i = 0; i < 3; i++)
		CHECK(sse_parser_feed(p, s + cuts[i], cuts[i + 1] - cuts[i]) == 0,
		      "feed piece %d of a split at %zu,%zu", i, cut1, cut2);
	sse_parser_free(p);
	return t->text;
}

static const char *parse(struct transcript *t, const char *s)
{
	return parse_split(t, s, strlen(s), 0, 0);
}

static const char *parse_bytewise(struct transcript *t, const char *s, size_t n)
{
	struct sse_parser *p = sse_parser_new(MAX_EVENT, record, t);

	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < n; i++)
		sse_parser_feed(p, s + i, 1);
	sse_parser_free(p);
	return t->text;
}

/* The same events however the bytes are cut: in two, in three at a CR
 * followed by LF, one by one. */
static void check_every_split(const char *name, const char *s, const char *want)
{
	static struct transcript t;
	size_t n = strlen(s);
	int bad = 0;

	CHECK_STR(parse(&t, s), want, name);
	for (size_t k = 0; k <= n && !bad; k++) {
		bad = strcmp(parse_split(&t, s, n, k, k), want) != 0;
		CHECK(!bad, "%s split at %zu: got\n%s", name, k, t.text);
		for (size_t m = k; m <= n && !bad; m += 7) {
			bad = strcmp(parse_split(&t, s, n, k, m), want) != 0;
			CHECK(!bad, "%s split at %zu and %zu", name, k, m);
		}
	}
	CHECK_STR(parse_bytewise(&t, s, n), want, name);
}

/* The API's example stream, with comments, retry, id, multi-line data. */
static const char stream_lf[] =
	": hello\n"
	"retry: 2500\n"
	"id: 0,1,106\n"
	"event: batch\n"
	"data: {\"records\":[{\"seq_num\":0,\"body\":\"{\\\"data\\\":\\\"1\\\"}\"}]}\n"
	"\n"
	"event: ping\n"
	"data: {\"timestamp\":1712150405000}\n"
	"\n"
	"data: first\n"
	": a comment between data lines\n"
	"data:second\n"
	"data:  third\n"
	"data\n"
	"\n"
	"event: nodata\n"
	"\n"
	"id\n"
	"data: [DONE]\n"
	"\n"
	"data: never dispatched";

static const char stream_want[] =
	"batch|0,1,106|2500|{\"records\":[{\"seq_num\":0,\"body\":\"{\\\"data\\\":\\\"1\\\"}\"}]}\n"
	"ping|0,1,106|-1|{\"timestamp\":1712150405000}\n"
	"|0,1,106|-1|first\\nsecond\\n third\\n\n"
	"||-1|[DONE]\n";

/* stream_lf with every "\n" replaced by eol. */
static char *with_eol(const char *eol)
{
	char *out = malloc(sizeof(stream_lf) * 2), *o = out;

	for (const char *s = stream_lf; *s; s++) {
		if (*s == '\n') {
			strcpy(o, eol);
			o += strlen(eol);
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return out;
}

static void test_line_ends(void)
{
	const char *eols[] = { "\n", "\r\n", "\r" };
	char name[32];

	for (int i = 0; i < 3; i++) {
		char *s = with_eol(eols[i]);

		snprintf(name, sizeof(name), "stream with eol %d", i);
		check_every_split(name, s, stream_want);
		free(s);
	}
	/* BOM only at the very start; cuts inside it must not matter. */
	char bom[sizeof(stream_lf) + 3] = "\xef\xbb\xbf";
	strcat(bom, stream_lf);
	check_every_split("stream with BOM", bom, stream_want);
}

static void test_fields(void)
{
	static struct transcript t;

	CHECK_STR(parse(&t, "data: a\r\n\r\ndata: b\r\rdata: c\n\n"),
		  "||-1|a\n||-1|b\n||-1|c\n", "mixed line ends");
	/* CR ending one chunk, LF starting the next: one line end. */
	CHECK_STR(parse_split(&t, "data: a\r\ndata: b\r\n\r\n", 20, 8, 8),
		  "||-1|a\\nb\n", "CR|LF across chunks");
	CHECK_STR(parse(&t, "data:x\n\ndata:  x\n\ndata: \n\n"),
		  "||-1|x\n||-1| x\n||-1|\n", "one space stripped");
	CHECK_STR(parse(&t, "data\n\n"), "||-1|\n", "field without colon");
	CHECK_STR(parse(&t, "event: foo\n\ndata: x\n\n"), "||-1|x\n",
		  "no data: no dispatch, type reset");
	CHECK_STR(parse(&t, "foo: bar\ndata: x\n\n"), "||-1|x\n", "unknown field");
	CHECK_STR(parse(&t, "Data: x\n\n"), "", "field names are case-sensitive");
	CHECK_STR(parse(&t, ":\n: ping\n\n"), "", "comments only");
	CHECK_STR(parse(&t, "data: a\n\n\n\ndata: b\n\n"), "||-1|a\n||-1|b\n",
		  "extra blank lines");
	CHECK_STR(parse(&t, "data: [DONE]\n\n"), "||-1|[DONE]\n", "[DONE]");
	CHECK_STR(parse(&t, "event: ping\ndata: {}\n\n"), "ping||-1|{}\n", "ping");
	CHECK_STR(parse(&t, "event: a\nevent: b\ndata: x\n\n"), "b||-1|x\n",
		  "last event field wins");
	CHECK_STR(parse(&t, "data: \xc3\xa9\n\n"), "||-1|\\xc3\\xa9\n", "UTF-8 data");
	CHECK_STR(parse(&t, "\xef\xbb\xbf\xef\xbb\xbf" "data: x\n\n"), "",
		  "only one BOM is stripped");
	CHECK_STR(parse(&t, "data: x\n\n\xef\xbb\xbf" "data: y\n\n"), "||-1|x\n",
		  "BOM later is part of a field name");
	CHECK_STR(parse(&t, "\xef\xbb" "data: x\n\n"), "",
		  "half a BOM is not stripped");
}

static void test_id_and_retry(void)
{
	static struct transcript t;
	static const char nul_id[] = "id: 5\ndata: a\n\nid: 6\0x\ndata: b\n\n";

	CHECK_STR(parse(&t, "id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n"),
		  "|1|-1|a\n|1|-1|b\n|2|-1|c\n", "id is sticky");
	CHECK_STR(parse(&t, "id: 1\ndata: a\n\nid\ndata: b\n\n"),
		  "|1|-1|a\n||-1|b\n", "empty id clears it");
	CHECK_STR(parse_split(&t, nul_id, sizeof(nul_id) - 1, 0, 0),
		  "|5|-1|a\n|5|-1|b\n", "id with NUL is ignored");
	CHECK_STR(parse(&t, "id: 9\n\ndata: a\n\n"), "|9|-1|a\n",
		  "id in an event without data still counts");
	CHECK_STR(parse(&t, "retry: 10\ndata: a\n\ndata: b\n\n"),
		  "||10|a\n||-1|b\n", "retry belongs to one event");
	CHECK_STR(parse(&t, "retry: 1a\ndata: a\n\nretry:\ndata: b\n\n"
			"retry: -5\ndata: c\n\nretry:  7\ndata: d\n\n"),
		  "||-1|a\n||-1|b\n||-1|c\n||-1|d\n", "retry only digits");
	CHECK_STR(parse(&t, "retry: 3000\n\ndata: a\n\n"), "||3000|a\n",
		  "a lone retry block carries to the next event");
	CHECK_STR(parse(&t, "retry: 99999999999999999999999\ndata: a\n\n"),
		  "||9223372036854775807|a\n", "huge retry saturates");
}

static void test_limits_and_control(void)
{
	static struct transcript t;
	struct sse_parser *p = sse_parser_new(16, record, &t);
	char line[64];

	memset(&t, 0, sizeof(t));
	CHECK(sse_parser_feed(p, "data: 0123456789abcdef\n\n", 24) == 0,
	      "an event of exactly max_event bytes is accepted");
	CHECK(sse_parser_feed(p, "data: 0123456789abcdefg\n\n", 25) == -1,
	      "one byte more fails");
	CHECK(sse_parser_feed(p, "data: 01234567\ndata: 01234567\n\n", 31) == -1,
	      "the limit counts all data lines");
	CHECK(sse_parser_feed(p, "data: ok\n\n", 10) == 0, "usable after failing");
	memset(line, 'x', sizeof(line));
	line[0] = ':';
	line[sizeof(line) - 1] = '\n';
	CHECK(sse_parser_feed(p, line, sizeof(line)) == 0,
	      "a long comment is dropped, not buffered");
	line[0] = 'z';
	CHECK(sse_parser_feed(p, line, sizeof(line)) == -1,
	      "a long unknown field still fails (bounded memory)");
	sse_parser_feed(p, "data: part", 10);
	sse_parser_reset(p);
	CHECK(sse_parser_feed(p, "\xef\xbb\xbf" "data: b\n\n", 12) == 0, "reset");
	CHECK_STR(t.text, "||-1|0123456789abcdef\n||-1|ok\n||-1|b\n",
		  "events around the failures; reset drops the partial event");
	sse_parser_free(p);

	p = sse_parser_new(MAX_EVENT, record, &t);
	memset(&t, 0, sizeof(t));
	t.stop_after = 1;
	CHECK(sse_parser_feed(p, "data: a\n\ndata: b\n\n", 18) == 7,
	      "the callback's non-zero value stops the feed");
	CHECK_STR(t.text, "||-1|a\n", "nothing after the stop");
	sse_parser_free(p);
}

int main(void)
{
	test_line_ends();
	test_fields();
	test_id_and_retry();
	test_limits_and_control();
	return check_report();
}
