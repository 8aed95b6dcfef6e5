/* Decoding "batch" events: the double-encoded envelope, values that are
 * already JSON, storage commands, replays, the tail. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "record.h"

struct seen {
	char text[8192];
	size_t len;
	int count;
};

static void on_record(void *arg, const struct trigger_record *r)
{
	struct seen *s = arg;
	int n = snprintf(s->text + s->len, sizeof(s->text) - s->len,
			 "%lld|%lld|%s|%.*s\n", r->seq, r->timestamp, r->id,
			 (int)r->json_len, r->json);

	CHECK(strlen(r->json) >= r->json_len, "json_len within the text");
	CHECK(!memchr(r->json, '\n', r->json_len), "one line: %s", r->json);
	if (n > 0 && (size_t)n < sizeof(s->text) - s->len)
		s->len += (size_t)n;
	s->count++;
}

/* A body as the server stores it: {"data":"<text>","id":"inp_<seq>"}. */
static char *envelope(const char *data_text, long long seq)
{
	char id[32];
	json_t *o;
	char *s;

	snprintf(id, sizeof(id), "inp_%012lld", seq);
	o = json_pack("{s:s,s:s}", "data", data_text, "id", id);
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* Append a record with the given body text (taken) and headers JSON. */
static void add(json_t *recs, long long seq, char *body, const char *headers)
{
	json_t *r = json_pack("{s:I,s:I,s:s}", "seq_num", (json_int_t)seq,
			      "timestamp", (json_int_t)(1712150400000 + seq),
			      "body", body);

	if (headers)
		json_object_set_new(r, "headers", json_loads(headers, 0, NULL));
	json_array_append_new(recs, r);
	free(body);
}

/* Parse a batch of recs (taken) with the given tail (-1: none). */
static int run(struct seen *s, json_t *recs, long long tail_seq,
	       long long *last, long long *tail)
{
	json_t *b = json_pack("{s:o}", "records", recs);
	char *text;
	int rc;

	if (tail_seq >= 0)
		json_object_set_new(b, "tail", json_pack("{s:I,s:I}", "seq_num",
			(json_int_t)tail_seq, "timestamp", (json_int_t)0));
	text = json_dumps(b, JSON_COMPACT);
	memset(s, 0, sizeof(*s));
	rc = record_parse_batch(text, strlen(text), last, tail, on_record, s);
	free(text);
	json_decref(b);
	return rc;
}

static void test_api_example(void)
{
	static const char data[] =
		"{\"records\":[{\"seq_num\":0,\"timestamp\":1712150400000,"
		"\"body\":\"{\\\"data\\\":\\\"{\\\\\\\"approved\\\\\\\":true}\\\","
		"\\\"id\\\":\\\"inp_3f9c0a1b2c3d\\\"}\"}],"
		"\"tail\":{\"seq_num\":1,\"timestamp\":1712150400000}}";
	struct seen s = { 0 };
	long long last = -1, tail = -1;

	CHECK(record_parse_batch(data, strlen(data), &last, &tail, on_record, &s) == 0,
	      "the example of trigger-api.md parses");
	CHECK_STR(s.text, "0|1712150400000|inp_3f9c0a1b2c3d|{\"approved\":true}\n",
		  "example record");
	CHECK(last == 0 && tail == 1, "last %lld tail %lld", last, tail);
}

/* Values sent as JSON text come back as that text (one line). */
static void test_text_values(void)
{
	static const struct { const char *text, *want; } cases[] = {
		{ "{\"approved\":true}", "{\"approved\":true}" },
		{ "\"123\"", "\"123\"" },
		{ "123", "123" },
		{ "12345678901234567890", "12345678901234567890" },
		{ "0.1", "0.1" },
		{ "1.0", "1.0" },
		{ "1e400", "\"1e400\"" },  /* jansson overflows: kept as a string */
		{ "[1, 2.50, -0]", "[1, 2.50, -0]" },
		{ "{\n  \"a b\": \"c d\",\n  \"n\": [1,\r\n 2]\n}",
		  "{\"a b\":\"c d\",\"n\":[1,2]}" },
		{ "\"caf\\u00e9 \\\" \\\\\"", "\"caf\\u00e9 \\\" \\\\\"" },
		{ "\"\\u0000\"", "\"\\u0000\"" },
		{ "null", "null" },
		{ "hello", "\"hello\"" },
		{ "", "\"\"" },
		{ "{\"unterminated\"", "\"{\\\"unterminated\\\"\"" },
		{ "line\nbreak", "\"line\\nbreak\"" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *recs = json_array();
		struct seen s;
		long long last = -1, tail = -1;
		char want[512];

		add(recs, 7, envelope(cases[i].text, 7), NULL);
		CHECK(run(&s, recs, -1, &last, &tail) == 0, "case %zu parses", i);
		snprintf(want, sizeof(want), "7|1712150400007|inp_000000000007|%s\n",
			 cases[i].want);
		CHECK_STR(s.text, want, cases[i].text);
	}
}

/* data already a JSON value: taken from the envelope's text as is. */
static void test_value_data(void)
{
	static const struct { const char *body, *want; } cases[] = {
		{ "{\"data\":{\"x\": 1.0, \"y\": [1, 2]},\"id\":\"inp_a\"}",
		  "{\"x\":1.0,\"y\":[1,2]}" },
		{ "{\"id\":\"inp_a\",\"data\":0.1}", "0.1" },
		{ "{\"data\":12345678901234567890}", "12345678901234567890" },
		{ "{\"data\":null,\"id\":\"inp_a\"}", "null" },
		{ "{\"data\":[\"a,b\",\"}\",{\"data\":1}],\"id\":\"x\"}",
		  "[\"a,b\",\"}\",{\"data\":1}]" },
		{ "{\"meta\":{\"data\":5},\"id\":\"x\",\"data\":7}", "7" },
		{ "{\"data\":1,\"data\":2}", "2" },
		{ "{\"\\u0064ata\":true}", "true" },
		{ "{\"id\":\"\\\"data\\\":\",\"data\" :\t false }", "false" },
		{ " { \"data\" : { \"k\" : \"v w\" } } ", "{\"k\":\"v w\"}" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *recs = json_array();
		struct seen s;
		long long last = -1, tail = -1;
		char *got;

		add(recs, 0, strdup(cases[i].body), NULL);
		CHECK(run(&s, recs, -1, &last, &tail) == 0, "case %zu parses", i);
		got = strrchr(s.text, '|');
		CHECK(got && strncmp(got + 1, cases[i].want, strlen(cases[i].want)) == 0 &&
		      got[1 + strlen(cases[i].want)] == '\n',
		      "%s: got %s want %s", cases[i].body, got ? got + 1 : "-",
		      cases[i].want);
	}
}

static void test_cursor(void)
{
	json_t *recs = json_array();
	struct seen s;
	long long last = -1, tail = 42;

	add(recs, 0, envelope("\"a\"", 0), NULL);
	add(recs, 1, strdup(""), "[[\"\",\"trim\"],[\"x\",\"y\"]]");
	add(recs, 2, envelope("\"b\"", 2), "[[\"trigger-control\",\"x\"]]");
	add(recs, 3, strdup(""), NULL);               /* control record */
	add(recs, 4, strdup("not json"), NULL);
	add(recs, 5, strdup("{\"id\":\"inp_nodata\"}"), NULL);
	add(recs, 6, strdup("{\"data\":\"5\"}"), NULL);  /* no id */
	add(recs, 7, envelope("\"fenced\"", 7), "[[\"\",\"fence\"]]");
	CHECK(run(&s, recs, -1, &last, &tail) == 0, "parses");
	CHECK_STR(s.text,
		  "0|1712150400000|inp_000000000000|\"a\"\n"
		  "2|1712150400002|inp_000000000002|\"b\"\n"
		  "6|1712150400006||5\n",
		  "commands and non-envelopes skipped");
	CHECK(last == 7, "the cursor passes skipped records: %lld", last);
	CHECK(tail == 42, "no tail: left alone");

	recs = json_array();
	for (int i = 0; i < 5; i++)
		add(recs, i, envelope("1", i), NULL);
	last = 2;
	CHECK(run(&s, recs, 5, &last, &tail) == 0, "replay parses");
	CHECK(s.count == 2 && last == 4 && tail == 5,
	      "replayed records skipped: %d delivered, last %lld, tail %lld",
	      s.count, last, tail);
	CHECK(strncmp(s.text, "3|", 2) == 0, "resumes after the cursor: %s", s.text);
}

static void test_not_batches(void)
{
	static const char *bad[] = {
		"", "nope", "[]", "{}", "{\"records\":{}}",
		"{\"records\":[{\"seq_num\":\"1\",\"body\":\"{}\"}]}",
		"{\"records\":[{\"seq_num\":1.5,\"body\":\"{}\"}]}",
		"{\"records\":[{\"body\":\"{}\"}]}",
		"{\"records\":[{\"seq_num\":0,\"body\":\"{\\\"data\\\":1}\"},"
		"{\"seq_num\":1,\"body\":{\"data\":1}}]}",
		"{\"records\":[{\"seq_num\":0,\"body\":\"{\\\"data\\\":1}\"},5]}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct seen s = { 0 };
		long long last = -1, tail = -1;

		CHECK(record_parse_batch(bad[i], strlen(bad[i]), &last, &tail,
					 on_record, &s) == -1, "not a batch: %s", bad[i]);
		CHECK(s.count == 0 && last == -1 && tail == -1,
		      "nothing delivered from %s", bad[i]);
	}
	struct seen s = { 0 };
	long long last = -1, tail = -1;
	CHECK(record_parse_batch("{\"records\":[]}", 14, &last, &tail, on_record,
				 &s) == 0 && s.count == 0, "an empty batch");
}

int main(void)
{
	test_api_example();
	test_text_values();
	test_value_data();
	test_cursor();
	test_not_batches();
	return check_report();
}
