/*
 * The records of a "batch" event.  Values are handed out as the text the
 * server stored, with only the whitespace between tokens removed, never
 * re-printed by jansson: numbers stay exactly as sent (12345678901234567890,
 * 0.1, 1.0 are not rewritten to 1.2345678901234568e+19, 0.10000000000000001
 * and 1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

/* Just checking syntax: big integers must not make valid JSON fail. */
#define CHECK_FLAGS (JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL)

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* i is at an opening quote; returns the index after the closing one. */
static size_t skip_string(const char *s, size_t n, size_t i)
{
	for (i++; i < n && s[i] != '"'; i++)
		if (s[i] == '\\')
			i++;
	return i < n ? i + 1 : n;
}

/* Copy valid JSON text without the whitespace between tokens. */
static char *minify(const char *s, size_t n, size_t *outlen)
{
	char *out = malloc(n + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t end = s[i] == '"' ? skip_string(s, n, i) : i + 1;

		if (!is_ws(s[i])) {
			memcpy(o, s + i, end - i);
			o += end - i;
		}
		i = end;
	}
	*o = '\0';
	*outlen = (size_t)(o - out);
	return out;
}

/* A key as it stands in the text (with its quotes) equals name. */
static int key_is(const char *s, size_t len, const char *name)
{
	size_t n = strlen(name);
	json_t *k;
	int eq;

	if (!memchr(s, '\\', len))
		return len == n + 2 && memcmp(s + 1, name, n) == 0;
	k = json_loadb(s, len, CHECK_FLAGS, NULL);
	eq = json_is_string(k) && json_string_length(k) == n &&
	     memcmp(json_string_value(k), name, n) == 0;
	json_decref(k);
	return eq;
}

/* The raw text of the last top-level member `name` of the object text s,
 * which jansson has already found valid (as JSON.parse, the last of
 * duplicate keys wins).  Returns 0 with its offset and length, or -1. */
static int member_span(const char *s, size_t n, const char *name,
		       size_t *off, size_t *len)
{
	int depth = 0, expect_key = 0, capture = 0, found = -1;
	size_t start = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '"') {
			size_t end = skip_string(s, n, i);

			if (depth == 1 && expect_key)
				capture = key_is(s + i, end - i, name);
			expect_key = 0;
			i = end - 1;
		} else if (c == '{' || c == '[') {
			expect_key = c == '{' && ++depth == 1;
			depth += c == '[';
		} else if (c == ':' && depth == 1) {
			start = i + 1;
		} else if ((c == ',' || c == '}' || c == ']') && depth == 1) {
			if (capture) {
				*off = start;
				*len = i - start;
				found = 0;
			}
			capture = 0;
			expect_key = c == ',';
			depth -= c != ',';
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
	return found;
}

/* Where the value of one record comes from. */
struct value {
	char *owned;            /* malloc'd text, or NULL if borrowed */
	const char *json;
	size_t len;
};

/* data is JSON text in a string: passed through when it is JSON; a string
 * that is not JSON is the value itself, as the SDK's JSON.parse fallback. */
static int value_from_text(struct value *v, const char *s, size_t n)
{
	json_t *check = json_loadb(s, n, CHECK_FLAGS, NULL);

	if (!check) {
		json_t *str = json_stringn(s, n);

		v->owned = str ? json_dumps(str, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		json_decref(str);
		v->json = v->owned;
		v->len = v->owned ? strlen(v->owned) : 0;
		return v->owned ? 0 : -1;
	}
	json_decref(check);
	if (!memchr(s, '\n', n) && !memchr(s, '\r', n)) {
		v->json = s;
		v->len = n;
		return 0;
	}
	v->owned = minify(s, n, &v->len);
	v->json = v->owned;
	return v->owned ? 0 : -1;
}

/* data is a JSON value inside the envelope text: take its text from there. */
static int value_from_envelope(struct value *v, const char *body, size_t n)
{
	size_t off, len;

	if (member_span(body, n, "data", &off, &len))
		return -1;
	v->owned = minify(body + off, len, &v->len);
	v->json = v->owned;
	return v->owned ? 0 : -1;
}

/* The envelope {"data":..,"id":..} of one record; -1 when the body is not
 * one (an empty control record, or something no SDK wrote): skipped. */
static int decode_body(json_t *body, struct value *v, json_t **env,
		       const char **id)
{
	const char *text = json_string_value(body);
	size_t n = json_string_length(body);
	json_t *data, *idv;

	*env = json_loadb(text, n, CHECK_FLAGS, NULL);
	data = json_object_get(*env, "data");
	if (!data)
		return -1;
	idv = json_object_get(*env, "id");
	*id = json_is_string(idv) ? json_string_value(idv) : "";
	if (json_is_string(data))
		return value_from_text(v, json_string_value(data),
				       json_string_length(data));
	return value_from_envelope(v, text, n);
}

/* Storage commands (trim, fence) have one header with an empty name. */
static int is_command(json_t *r)
{
	json_t *first = json_array_get(json_object_get(r, "headers"), 0);
	json_t *name = json_array_get(first, 0);

	return json_is_string(name) && json_string_length(name) == 0;
}

static void deliver(json_t *r, long long *last_seq, record_fn cb, void *arg)
{
	struct trigger_record rec = { 0 };
	struct value v = { 0 };
	json_t *body = json_object_get(r, "body");
	json_t *env = NULL;

	rec.seq = json_integer_value(json_object_get(r, "seq_num"));
	if (rec.seq <= *last_seq)
		return;
	*last_seq = rec.seq;
	if (is_command(r) || !json_is_string(body))
		return;
	rec.timestamp = json_integer_value(json_object_get(r, "timestamp"));
	if (decode_body(body, &v, &env, &rec.id) == 0) {
		rec.json = v.json;
		rec.json_len = v.len;
		cb(arg, &rec);
	}
	free(v.owned);
	json_decref(env);
}

/* Everything delivered is checked first, so that -1 means nothing was. */
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

int record_parse_batch(const char *data, size_t len, long long *last_seq,
		       long long *tail, record_fn cb, void *arg)
{
	json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
	json_t *recs = batch_records(root), *r, *t;
	size_t i;

	if (!recs) {
		json_decref(root);
		return -1;
	}
	json_array_foreach(recs, i, r)
		deliver(r, last_seq, cb, arg);
	t = json_object_get(json_object_get(root, "tail"), "seq_num");
	if (json_is_integer(t))
		*tail = json_integer_value(t);
	json_decref(root);
	return 0;
}

/* ---- v1 (Redis-backed) streams ----------------------------------------- */

/* "<ms>-<n>" (both decimal); returns 0 with the two parts, or -1. */
static int redis_id(const char *id, unsigned long long *ms,
		    unsigned long long *n)
{
	char *end;

	if (*id < '0' || *id > '9')
		return -1;
	*ms = strtoull(id, &end, 10);
	if (*end != '-' || end[1] < '0' || end[1] > '9')
		return -1;
	*n = strtoull(end + 1, &end, 10);
	return *end ? -1 : 0;
}

void record_v1_connect(struct record_v1 *cur, long long last_seq)
{
	cur->ord = cur->id[0] ? last_seq : -1;
}

/* Whether id comes after cur->id (always, when that is unknown). */
static int v1_after(const struct record_v1 *cur, unsigned long long ms,
		    unsigned long long n)
{
	unsigned long long pms, pn;

	if (!cur->id[0] || redis_id(cur->id, &pms, &pn))
		return 1;
	return ms > pms || (ms == pms && n > pn);
}

/* The value in a v1 data line; -1 when it is no JSON (skipped). */
static int v1_value(struct value *v, const char *data, size_t len)
{
	json_t *j = json_loadb(data, len, CHECK_FLAGS, NULL);
	int rc;

	if (!j)
		return -1;
	rc = json_is_string(j) ?
	     value_from_text(v, json_string_value(j), json_string_length(j)) :
	     value_from_text(v, data, len);
	if (rc == 0 && v->json == json_string_value(j)) {
		v->owned = strndup(v->json, v->len);    /* outlive j */
		v->json = v->owned;
		rc = v->owned ? 0 : -1;
	}
	json_decref(j);
	return rc;
}

int record_parse_v1(const char *id, const char *data, size_t len,
		    long long *last_seq, struct record_v1 *cur,
		    record_fn cb, void *arg)
{
	struct trigger_record rec = { .id = "" };
	struct value v = { 0 };
	unsigned long long ms, n;

	if (!id || strlen(id) >= sizeof(cur->id) || redis_id(id, &ms, &n))
		return -1;
	if (!v1_after(cur, ms, n))
		return 0;       /* at or before where this connection began */
	cur->ord++;
	if (cur->ord < *last_seq)
		return 0;       /* read again from the start: counted, skipped */
	snprintf(cur->id, sizeof(cur->id), "%s", id);
	if (cur->ord == *last_seq)
		return 0;
	*last_seq = cur->ord;
	if (v1_value(&v, data, len) == 0) {
		rec.seq = cur->ord;
		rec.timestamp = (long long)ms;
		rec.json = v.json;
		rec.json_len = v.len;
		cb(arg, &rec);
	}
	free(v.owned);
	return 0;
}
