/* client/record.c, the decoding of an SSE "batch" event.  An independent
 * oracle built on jansson says which records must come out and with what
 * value; record_parse_batch must agree.  Properties:
 * - -1 means nothing was delivered;
 * - each value is one line of JSON (no newline, no NUL) equal, as a JSON
 *   value, to the envelope's data (parsed again when it is JSON text);
 * - seqs rise and pass the cursor given; a second parse with the cursor
 *   it returned delivers nothing (replays are dropped). */
#include <string.h>
#include <jansson.h>

#include "fuzz.h"
#include "record.h"

#define FLAGS (JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)

struct got {
	json_t *want;           /* the oracle's records: [seq, value] */
	size_t next;
	long long last;
	size_t count;
};

static int is_command(json_t *r)
{
	json_t *name = json_array_get(json_array_get(json_object_get(r, "headers"), 0), 0);

	return json_is_string(name) && json_string_length(name) == 0;
}

/* The value a reader must see for a body text, or NULL for none. */
static json_t *expected_value(json_t *body)
{
	json_t *env = json_loadb(json_string_value(body), json_string_length(body),
				 FLAGS, NULL);
	json_t *data = json_incref(json_object_get(env, "data")), *parsed;

	json_decref(env);
	if (!json_is_string(data))
		return data;
	parsed = json_loadb(json_string_value(data), json_string_length(data),
			    FLAGS, NULL);
	if (!parsed)
		return data;
	json_decref(data);
	return parsed;
}

/* [[seq, value], ...] for the records past *cursor. */
static json_t *oracle(json_t *recs, long long cursor)
{
	json_t *out = json_array(), *r;
	size_t i;

	json_array_foreach(recs, i, r) {
		json_t *body = json_object_get(r, "body"), *v;
		long long seq = json_integer_value(json_object_get(r, "seq_num"));

		if (seq <= cursor)
			continue;
		cursor = seq;
		if (is_command(r) || !json_is_string(body) || !(v = expected_value(body)))
			continue;
		json_array_append_new(out, json_pack("[Io]", (json_int_t)seq, v));
	}
	return out;
}

static void on_record(void *arg, const struct trigger_record *rec)
{
	struct got *g = arg;
	json_t *w = json_array_get(g->want, g->next++), *v;

	FUZZ_CHECK(w, "record %lld delivered beyond the oracle's %zu", rec->seq,
		   json_array_size(g->want));
	FUZZ_CHECK(rec->seq > g->last, "seq %lld after %lld", rec->seq, g->last);
	g->last = rec->seq;
	FUZZ_CHECK(rec->seq == json_integer_value(json_array_get(w, 0)),
		   "seq %lld, the oracle says %lld", rec->seq,
		   (long long)json_integer_value(json_array_get(w, 0)));
	FUZZ_CHECK(rec->id != NULL, "id is a string");
	FUZZ_CHECK(!memchr(rec->json, '\n', rec->json_len) &&
		   !memchr(rec->json, '\r', rec->json_len),
		   "seq %lld: value is one line", rec->seq);
	FUZZ_CHECK(!memchr(rec->json, '\0', rec->json_len),
		   "seq %lld: value holds no NUL byte", rec->seq);
	v = json_loadb(rec->json, rec->json_len, FLAGS, NULL);
	FUZZ_CHECK(v, "seq %lld: value is JSON: %.*s", rec->seq,
		   (int)(rec->json_len > 200 ? 200 : rec->json_len), rec->json);
	FUZZ_CHECK(json_equal(v, json_array_get(w, 1)),
		   "seq %lld: value %.*s is the envelope's data", rec->seq,
		   (int)(rec->json_len > 200 ? 200 : rec->json_len), rec->json);
	json_decref(v);
	g->count++;
}

/* Parse with a cursor; check against the oracle; returns the new cursor. */
static long long parse(const char *s, size_t n, json_t *recs, long long cursor)
{
	struct got g = { .want = recs ? oracle(recs, cursor) : json_array(),
			 .last = cursor };
	long long last = cursor, tail = -7;
	int rc = record_parse_batch(s, n, &last, &tail, on_record, &g);

	if (rc != 0) {
		FUZZ_CHECK(rc == -1, "returns 0 or -1");
		FUZZ_CHECK(g.count == 0, "-1 but %zu records delivered", g.count);
		FUZZ_CHECK(last == cursor, "-1 leaves the cursor alone");
	} else {
		FUZZ_CHECK(recs, "0 for something that is no batch");
		FUZZ_CHECK(g.count == json_array_size(g.want),
			   "%zu records delivered, the oracle says %zu", g.count,
			   json_array_size(g.want));
		FUZZ_CHECK(last >= g.last, "cursor %lld covers seq %lld", last, g.last);
	}
	json_decref(g.want);
	return last;
}

/* A batch in the oracle's eyes: records an array of objects-or-not whose
 * seq_num are integers and bodies strings, null or absent. */
static json_t *batch_records(json_t *root)
{
	json_t *recs = json_object_get(root, "records"), *r, *body;
	size_t i;

	if (!json_is_array(recs))
		return NULL;
	json_array_foreach(recs, i, r) {
		body = json_object_get(r, "body");
		if (!json_is_integer(json_object_get(r, "seq_num")) ||
		    (body && !json_is_string(body) && !json_is_null(body)))
			return NULL;
	}
	return recs;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	json_t *root = json_loadb(s, size, JSON_ALLOW_NUL, NULL);
	json_t *recs = batch_records(root);
	long long cursor = parse(s, size, recs, -1);

	if (recs) {
		json_t *first = json_array_get(recs, 0);
		long long mid = json_integer_value(json_object_get(first, "seq_num"));

		FUZZ_CHECK(parse(s, size, recs, cursor) == cursor,
			   "a replay with the returned cursor moves nothing");
		parse(s, size, recs, mid);
	}
	json_decref(root);
	return 0;
}
