/* v1 (Redis-backed) streams: Redis-style SSE split at every byte, records
 * counted into seqs, resumed after a reconnect (with the server honouring
 * Last-Event-ID or replaying from the start), each exactly once, in order. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "record.h"
#include "sse.h"

/* What the real webapp sends: ": ping" comments, then per record
 * "id: <ms>-<n>" and one data line, the JSON string of the value's text. */
static const char stream[] =
	": ping\n\n"
	"id: 1712150400000-0\ndata: \"{\\\"a\\\":1}\"\n\n"
	"id: 1712150400000-1\r\ndata: \"\\\"two\\\"\"\r\n\r\n"
	": ping\n\n"
	"id: 1712150400001-0\ndata: \"[1, 2,\\n 3]\"\n\n"
	"id: 1712150400002-0\ndata: not json\n\n"
	"id: 1712150400002-1\ndata: {\"raw\":true}\n\n"
	"id: 1712150400003-0\ndata: \"12345678901234567890\"\n\n";

static const char want_all[] =
	"0|1712150400000|{\"a\":1}\n"
	"1|1712150400000|\"two\"\n"
	"2|1712150400001|[1,2,3]\n"
	"4|1712150400002|{\"raw\":true}\n"
	"5|1712150400003|12345678901234567890\n";

struct reader {
	long long last_seq;
	struct record_v1 cur;
	char out[4096];
	size_t len;
	int bad;
};

static void on_record(void *arg, const struct trigger_record *r)
{
	struct reader *rd = arg;
	int n = snprintf(rd->out + rd->len, sizeof(rd->out) - rd->len,
			 "%lld|%lld|%.*s\n", r->seq, r->timestamp,
			 (int)r->json_len, r->json);

	if (n > 0 && (size_t)n < sizeof(rd->out) - rd->len)
		rd->len += (size_t)n;
}

static int on_event(void *arg, const struct sse_event *ev)
{
	struct reader *rd = arg;

	if (record_parse_v1(ev->id, ev->data, ev->data_len, &rd->last_seq,
			    &rd->cur, on_record, rd))
		rd->bad++;
	return 0;
}

static void reader_init(struct reader *rd, long long after)
{
	memset(rd, 0, sizeof(*rd));
	rd->last_seq = after;
}

/* One connection: the bytes fed in two parts split at `at`. */
static void connect_feed(struct reader *rd, const char *text, size_t at)
{
	struct sse_parser *p = sse_parser_new(1 << 20, on_event, rd);
	size_t len = strlen(text);

	record_v1_connect(&rd->cur, rd->last_seq);
	CHECK(sse_parser_feed(p, text, at) == 0, "first part");
	CHECK(sse_parser_feed(p, text + at, len - at) == 0, "second part");
	sse_parser_free(p);
}

static void test_split_everywhere(void)
{
	size_t len = strlen(stream);

	for (size_t at = 0; at <= len; at++) {
		struct reader rd;

		reader_init(&rd, -1);
		connect_feed(&rd, stream, at);
		CHECK(rd.bad == 0, "split at %zu: bad ids", at);
		CHECK_STR(rd.out, want_all, "split everywhere");
		CHECK(rd.last_seq == 5, "split at %zu: last seq %lld", at,
		      rd.last_seq);
		CHECK_STR(rd.cur.id, "1712150400003-0", "cursor id");
	}
}

static void test_byte_by_byte(void)
{
	struct reader rd;
	struct sse_parser *p = sse_parser_new(1 << 20, on_event, &rd);

	reader_init(&rd, -1);
	record_v1_connect(&rd.cur, rd.last_seq);
	for (size_t i = 0; stream[i]; i++)
		sse_parser_feed(p, stream + i, 1);
	sse_parser_free(p);
	CHECK_STR(rd.out, want_all, "byte by byte");
}

/* The text of stream from the record with id `from` on. */
static const char *from_id(const char *from)
{
	const char *p = strstr(stream, from);

	return p - 4;   /* "id: " */
}

static void test_resume(void)
{
	struct reader rd;
	const char *first = "id: 1712150400000-0\ndata: \"1\"\n\n"
			    "id: 1712150400000-1\ndata: \"2\"\n\n";

	/* The connection drops after two records; the next one asks after
	 * the second's id and gets the rest. */
	reader_init(&rd, -1);
	connect_feed(&rd, first, 5);
	CHECK(rd.last_seq == 1, "two records: %lld", rd.last_seq);
	CHECK_STR(rd.cur.id, "1712150400000-1", "resume id");
	connect_feed(&rd, from_id("1712150400001-0"), 0);
	CHECK_STR(rd.out, "0|1712150400000|1\n1|1712150400000|2\n"
		  "2|1712150400001|[1,2,3]\n4|1712150400002|{\"raw\":true}\n"
		  "5|1712150400003|12345678901234567890\n", "resumed");

	/* A server that ignores Last-Event-ID replays all: nothing twice. */
	reader_init(&rd, -1);
	connect_feed(&rd, stream, 40);
	connect_feed(&rd, stream, 100);
	CHECK_STR(rd.out, want_all, "replayed whole");
}

static void test_after_seq_without_id(void)
{
	struct reader rd;

	/* A subscription from seq 1 on with no id known: the stream is read
	 * from its start and the first two are counted, not delivered. */
	reader_init(&rd, 1);
	connect_feed(&rd, stream, 17);
	CHECK_STR(rd.out, "2|1712150400001|[1,2,3]\n4|1712150400002|{\"raw\":true}\n"
		  "5|1712150400003|12345678901234567890\n", "after seq 1");
	/* Past the end: nothing, and the id of the last is learned. */
	reader_init(&rd, 5);
	connect_feed(&rd, stream, 3);
	CHECK(rd.len == 0, "after seq 5: nothing (%s)", rd.out);
	CHECK_STR(rd.cur.id, "1712150400003-0", "id learned");
}

static void test_bad_ids(void)
{
	static const char *const bad[] = {
		"", "17", "17-", "-1", "a-1", "1-a", "1-1-1", "1- 1",
		"123456789012345678901234567890123456789012345678-0",
	};
	struct reader rd;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		reader_init(&rd, -1);
		record_v1_connect(&rd.cur, -1);
		CHECK(record_parse_v1(bad[i], "1", 1, &rd.last_seq, &rd.cur,
				      on_record, &rd) == -1, "id \"%s\"", bad[i]);
		CHECK(rd.len == 0 && rd.last_seq == -1, "nothing from \"%s\"",
		      bad[i]);
	}
	CHECK(record_parse_v1(NULL, "1", 1, &rd.last_seq, &rd.cur, on_record,
			      &rd) == -1, "no id");
}

int main(void)
{
	test_split_everywhere();
	test_byte_by_byte();
	test_resume();
	test_after_seq_without_id();
	test_bad_ids();
	return check_report();
}
