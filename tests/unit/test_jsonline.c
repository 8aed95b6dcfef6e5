/* The incremental JSON line checker: a table of valid, partial and invalid
 * lines, prefixes, byte-by-byte feeding, copies, and random lines checked
 * against jansson. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "check.h"
#include "jsonline.h"

enum kind { VALID, NUMBER_END, PARTIAL, EMPTY, INVALID };

struct jl_case {
	enum kind kind;
	const char *s;
	size_t n;               /* 0: strlen(s) */
	int bad_at;             /* INVALID: the byte that makes it so */
	const char *extra;      /* PARTIAL: what completes it; INVALID: why */
};

#define V(s) { VALID, s, 0, -1, NULL }
#define N(s) { NUMBER_END, s, 0, -1, NULL }
#define P(s, more) { PARTIAL, s, 0, -1, more }
#define E(s) { EMPTY, s, 0, -1, NULL }
#define X(s, at, why) { INVALID, s, 0, at, why }
#define XN(s, at, why) { INVALID, s, sizeof(s) - 1, at, why }

static const struct jl_case cases[] = {
	V("{}"), V("[]"), V("\"\""), V("true"), V("false"), V("null"),
	V("{\"a\":1}"), V("[1,2,3]"), V("\"x\""), V("0 "), V("-0 "),
	V("  {\"a\" : [ true , false , null ] }  "), V("\t[1]\r"),
	V("{\"a\":{\"b\":{\"c\":[]}}}"), V("[[[]]]"), V("{\"\":\"\"}"),
	V("\"\\u00e9\\n\\t\\\"\\\\\\/\\b\\f\\r\""), V("\"\\uD83D\\uDE00\""),
	V("\"\\ud800\""), V("\"\\u0000\""), V("\"\xc3\xa9\""),
	V("\"\xe2\x82\xac\""), V("\"\xf0\x9f\x98\x80\""), V("\"\xf4\x8f\xbf\xbf\""),
	V("\"\xed\x9f\xbf\""), V("\"\xee\x80\x80\""), V("\"\x7f\""),
	V("1.5e+10 "), V("[-0.0e-0]"), V("1E5 "), V("[1e5,2E-3,0.25]"),
	V("{\"a\":[1,{\"b\":2}],\"c\":\"d\"}"), V("[\"a\",{},[],0,-1.5]"),
	V("{\"approved\":true}"), V("12345678901234567890123 "),
	N("0"), N("12"), N("-1"), N("1.5"), N("1e5"), N("1E+5"), N("-0.0"),
	N(" 7"), N("1e-07"),
	P("{\"x\":", "1}"), P("\"ab", "\""), P("tr", "ue"), P("[", "]"),
	P("{", "}"), P("{\"a\"", ":1}"), P("{\"a\":1,", "\"b\":2}"),
	P("[1,", "2]"), P("-", "1"), P("1.", "0"), P("1e", "5"), P("1e+", "5"),
	P("\"\\", "n\""), P("\"\\u12", "34\""), P("\"\xc3", "\xa9\""),
	P("\"\xf0\x9f\x98", "\x80\""), P("[1", "]"), P("{\"a\":12", "}"),
	P("f", "alse"), P("nul", "l"), P("{\"a\":\"b\"", "}"), P("[[", "]]"),
	P("{\"a\":[", "]}"), P("[\"", "\"]"), P("[-0", ".5e1]"), P("\"\xe0", "\xa0\x80\""),
	E(""), E("   "), E("\t \r"),
	X("nope", 1, "literal"), X("{\"a\" 1", 5, "':'"), X("tru e", 3, "literal"),
	X("[1,]", 3, "value"), X("{\"a\":1,}", 7, "key"), X("[,1]", 1, "value"),
	X("{,}", 1, "key"), X("01", 1, "leading zeros"), X("-01", 2, "leading zeros"),
	X("+1", 0, "value"), X(".5", 0, "value"), X("1.e5", 2, "decimal point"),
	X("1ex", 2, "exponent"), X("1e+x", 3, "exponent"), X("--1", 1, "digit"),
	X("0x10", 1, "after the JSON value"), X("1 2", 2, "after the JSON value"),
	X("{} {}", 3, "after the JSON value"), X("{}x", 2, "after"),
	X("\"a\" \"b\"", 4, "after"), X("[1 2]", 3, "','"),
	X("{\"a\":1 \"b\":2}", 7, "'}'"), X("{1:2}", 1, "key"), X("{\"a\"}", 4, "':'"),
	X("{\"a\":}", 5, "value"), X("[}", 1, "value"), X("{]", 1, "key"),
	X("]", 0, "value"), X("}", 0, "value"), X(":", 0, "value"), X(",", 0, "value"),
	X("[1}", 2, "']'"), X("{\"a\":1]", 6, "'}'"), X("[]]", 2, "after"),
	X("\"\x01\"", 1, "control character"), X("\"a\tb\"", 2, "control character"),
	X("\"\\q\"", 2, "escape"), X("\"\\u12g4\"", 5, "hex"), X("\"\\U0041\"", 2, "escape"),
	X("\"\\u\x10""000\"", 3, "hex"), X("'a'", 0, "value"), X("NaN", 0, "value"),
	X("Infinity", 0, "value"), X("-Infinity", 1, "digit"), X("True", 0, "value"),
	X("nulll", 4, "after"), X("truex", 4, "after"), X("falsy", 4, "literal"),
	X("\"\x80\"", 1, "UTF-8"), X("\"\xc0\xaf\"", 1, "overlong"),
	X("\"\xc1\xbf\"", 1, "overlong"), X("\"\xe0\x80\xaf\"", 2, "overlong"),
	X("\"\xed\xa0\x80\"", 2, "surrogate"), X("\"\xf0\x80\x80\xaf\"", 2, "overlong"),
	X("\"\xf4\x90\x80\x80\"", 2, "U+10FFFF"), X("\"\xf5\x80\x80\x80\"", 1, "UTF-8"),
	X("\"\xff\"", 1, "UTF-8"), X("\"\xc3(\"", 2, "cut short"),
	X("\"\xe2\x82\"", 3, "cut short"), X("\xc3\xa9", 0, "value"),
	X("[\xc3\xa9]", 1, "value"), XN("\0", 0, "NUL"), XN("[1,\0]", 3, "NUL"),
	XN("\"a\0\"", 2, "NUL"), XN("1\0", 1, "NUL"), XN("{\"a\":1}\0", 7, "NUL"),
};

/* The status after each byte fed one at a time; returns the index of the
 * first byte that made it INVALID, or -1. */
static int first_invalid(const char *s, size_t n, struct jsonline *j)
{
	jsonline_init(j);
	for (size_t i = 0; i < n; i++)
		if (jsonline_feed(j, s + i, 1) == JSONLINE_INVALID)
			return (int)i;
	return -1;
}

static int jansson_accepts(const char *s, size_t n)
{
	json_t *v = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL |
			       JSON_DECODE_INT_AS_REAL, NULL);

	json_decref(v);
	return v != NULL;
}

/* jansson refuses lone surrogate escapes (RFC 8259 allows them), numbers
 * past the double range and "\u0000" in keys, and it takes a NUL byte
 * after a value: lines where we may disagree.  jansson_why is its error,
 * or NULL to ask whether the line could be such a case at all. */
static int known_difference(const char *s, size_t n, const char *jansson_why)
{
	int surrogate = 0;

	if (memchr(s, '\0', n))
		return 1;
	for (size_t i = 0; i + 2 < n; i++)
		if (s[i] == '\\' && s[i + 1] == 'u' && (s[i + 2] | 0x20) == 'd')
			surrogate = 1;
	if (!jansson_why)
		return surrogate;
	return strstr(jansson_why, "overflow") ||
	       strstr(jansson_why, "NUL byte in object key") ||
	       (surrogate && strstr(jansson_why, "Unicode"));
}

static enum jsonline_status feed_all(struct jsonline *j, const char *s, size_t n)
{
	jsonline_init(j);
	return jsonline_feed(j, s, n);
}

static void check_valid_text(const char *what, const char *s, size_t n)
{
	struct jsonline j;

	CHECK(first_invalid(s, n, &j) < 0, "%s: no prefix is INVALID", what);
	CHECK(jsonline_end(&j) == JSONLINE_COMPLETE, "%s: complete at the end", what);
	CHECK(jansson_accepts(s, n) || known_difference(s, n, NULL),
	      "%s: jansson agrees it is JSON", what);
}

static void check_case(const struct jl_case *c)
{
	static const enum jsonline_status feed_want[] = {
		JSONLINE_COMPLETE, JSONLINE_PARTIAL, JSONLINE_PARTIAL,
		JSONLINE_EMPTY, JSONLINE_INVALID };
	size_t n = c->n ? c->n : strlen(c->s);
	struct jsonline j, k;
	enum jsonline_status st = feed_all(&j, c->s, n);
	int bad = first_invalid(c->s, n, &k);

	CHECK(st == feed_want[c->kind], "'%s': status %d, want %d", c->s, st,
	      feed_want[c->kind]);
	CHECK(k.status == st, "'%s': byte by byte gives the same status", c->s);
	if (c->kind == VALID || c->kind == NUMBER_END)
		check_valid_text(c->s, c->s, n);
	if (c->kind == EMPTY)
		CHECK(jsonline_end(&j) == JSONLINE_EMPTY, "'%s': empty at end", c->s);
	if (c->kind == PARTIAL) {
		char whole[256];

		CHECK(jsonline_end(&j) == JSONLINE_INVALID, "'%s': invalid as a "
		      "whole line (%s)", c->s, jsonline_why(&j));
		CHECK(!jansson_accepts(c->s, n), "'%s': jansson refuses it too", c->s);
		snprintf(whole, sizeof(whole), "%s%s", c->s, c->extra);
		check_valid_text(whole, whole, strlen(whole));
	}
	if (c->kind == INVALID) {
		CHECK(bad == c->bad_at, "'%s': invalid at byte %d, want %d", c->s,
		      bad, c->bad_at);
		CHECK(strstr(jsonline_why(&j), c->extra) != NULL,
		      "'%s': why \"%s\" mentions %s", c->s, jsonline_why(&j), c->extra);
		CHECK(!jansson_accepts(c->s, n) || known_difference(c->s, n, NULL),
		      "'%s': jansson refuses it too", c->s);
	}
}

static void test_table(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(&cases[i]);
}

static void test_depth(void)
{
	static char deep[2 * JSONLINE_MAX_DEPTH + 3];
	struct jsonline j;

	memset(deep, '[', JSONLINE_MAX_DEPTH);
	memset(deep + JSONLINE_MAX_DEPTH, ']', JSONLINE_MAX_DEPTH);
	CHECK(feed_all(&j, deep, 2 * JSONLINE_MAX_DEPTH) == JSONLINE_COMPLETE,
	      "512 levels of nesting are fine");
	CHECK(feed_all(&j, deep, JSONLINE_MAX_DEPTH) == JSONLINE_PARTIAL,
	      "512 open brackets are a prefix");
	CHECK(jsonline_feed(&j, "[", 1) == JSONLINE_INVALID, "the 513th is not");
	CHECK(strstr(jsonline_why(&j), "deep") != NULL, "why: %s", jsonline_why(&j));
	/* alternate objects and arrays so the stack bits matter */
	jsonline_init(&j);
	for (int i = 0; i < JSONLINE_MAX_DEPTH / 2; i++)
		jsonline_feed(&j, "{\"k\":[", 6);
	CHECK(jsonline_feed(&j, "1", 1) == JSONLINE_PARTIAL, "deep mixed nesting");
	for (int i = 0; i < JSONLINE_MAX_DEPTH / 2; i++)
		jsonline_feed(&j, "]}", 2);
	CHECK(j.status == JSONLINE_COMPLETE, "closed in the right order");
	jsonline_init(&j);
	jsonline_feed(&j, "{\"k\":[[{\"a\":1}]", 15);
	CHECK(jsonline_feed(&j, "}", 1) == JSONLINE_INVALID,
	      "'}' where ']' must close: %d", j.status);
}

/* A copy carries on exactly as the original (the writer checks a write on
 * a copy and commits it only if the whole write is good). */
static void test_copy(void)
{
	static const char s[] = "{\"a\":[1,\"\xc3\xa9\\u00e9\",{\"b\":-2.5e3}],\"c\":null}";
	size_t n = sizeof(s) - 1;

	for (size_t cut = 0; cut <= n; cut++) {
		struct jsonline a, b;

		feed_all(&a, s, cut);
		b = a;
		CHECK(jsonline_feed(&b, s + cut, n - cut) == JSONLINE_COMPLETE &&
		      jsonline_feed(&a, s + cut, n - cut) == JSONLINE_COMPLETE,
		      "copy at %zu completes like the original", cut);
	}
	struct jsonline a, b;
	feed_all(&a, "[1,", 3);
	b = a;
	jsonline_feed(&b, "x", 1);
	CHECK(b.status == JSONLINE_INVALID && jsonline_feed(&a, "2]", 2) ==
	      JSONLINE_COMPLETE, "a failed copy leaves the original intact");
	CHECK(jsonline_feed(&b, "2]", 2) == JSONLINE_INVALID, "INVALID stays");
}

static void test_why_incomplete(void)
{
	struct jsonline j;

	feed_all(&j, "\"ab", 3);
	CHECK(strstr(jsonline_why(&j), "string") != NULL, "%s", jsonline_why(&j));
	feed_all(&j, "1.", 2);
	CHECK(strstr(jsonline_why(&j), "number") != NULL, "%s", jsonline_why(&j));
	feed_all(&j, "[1", 2);
	CHECK(strstr(jsonline_why(&j), "array or object") != NULL, "%s",
	      jsonline_why(&j));
	feed_all(&j, "tr", 2);
	CHECK(strstr(jsonline_why(&j), "true") != NULL, "%s", jsonline_why(&j));
}

/* ---- random lines against jansson ------------------------------------ */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng >> 32) % n;
}

struct gen {
	char buf[2048];
	size_t len;
};

static void put(struct gen *g, const char *s)
{
	size_t n = strlen(s);

	if (g->len + n < sizeof(g->buf)) {
		memcpy(g->buf + g->len, s, n);
		g->len += n;
	}
}

static void pick(struct gen *g, const char *const *set, size_t n)
{
	put(g, set[rnd((unsigned)n)]);
}

#define PICK(g, ...) do {                                                  \
		static const char *const set_[] = { __VA_ARGS__ };          \
		pick(g, set_, sizeof(set_) / sizeof(set_[0]));              \
	} while (0)

static void gen_ws(struct gen *g)
{
	PICK(g, "", "", "", "", " ", "\t", "\r", "  ");
}

static void gen_digits(struct gen *g, int max)
{
	for (int i = rnd((unsigned)max) + 1; i > 0; i--)
		PICK(g, "0", "1", "2", "5", "7", "9");
}

static void gen_number(struct gen *g)
{
	if (rnd(3) == 0)
		put(g, "-");
	if (rnd(3) == 0) {
		put(g, "0");
	} else {
		PICK(g, "1", "3", "9");
		if (rnd(2))
			gen_digits(g, 6);
	}
	if (rnd(3) == 0) {
		put(g, ".");
		gen_digits(g, 4);
	}
	if (rnd(4) == 0) {
		PICK(g, "e", "E", "e+", "e-", "E-");
		gen_digits(g, 2);
	}
}

static void gen_string(struct gen *g)
{
	put(g, "\"");
	for (int i = rnd(6); i > 0; i--)
		PICK(g, "a", "Z", " ", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n",
		     "\\r", "\\t", "\\u00e9", "\\u0041", "\\uD83D\\uDE00",
		     "\\u0000", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
		     "\x7f", "{", "]", ":", ",");
	put(g, "\"");
}

static void gen_value(struct gen *g, int depth);

static void gen_container(struct gen *g, int depth, int object)
{
	int n = rnd(4);

	put(g, object ? "{" : "[");
	gen_ws(g);
	for (int i = 0; i < n; i++) {
		if (i)
			put(g, ",");
		if (object) {
			gen_ws(g);
			gen_string(g);
			gen_ws(g);
			put(g, ":");
		}
		gen_value(g, depth + 1);
	}
	put(g, object ? "}" : "]");
}

static void gen_value(struct gen *g, int depth)
{
	unsigned k = rnd(depth < 5 ? 7 : 5);

	gen_ws(g);
	if (k == 0)
		PICK(g, "true", "false", "null");
	else if (k <= 2)
		gen_number(g);
	else if (k <= 4)
		gen_string(g);
	else
		gen_container(g, depth, k == 5);
	gen_ws(g);
}

/* Bytes that matter to the grammar, for mutations and token soup. */
static const char mutants[] =
	"{}[],:\"\\ -+.eE0123456789tfnaulrsxu\t\r\x01\x7f\x80\xbf\xc0\xc3"
	"\xe0\xed\xf0\xf4\xff";

static void mutate(struct gen *g)
{
	size_t at = g->len ? rnd((unsigned)g->len) : 0;
	char c = mutants[rnd(sizeof(mutants) - 1)];

	switch (rnd(4)) {
	case 0:         /* delete */
		if (g->len)
			memmove(g->buf + at, g->buf + at + 1, g->len-- - at - 1);
		break;
	case 1:         /* insert */
		if (g->len + 1 < sizeof(g->buf)) {
			memmove(g->buf + at + 1, g->buf + at, g->len++ - at);
			g->buf[at] = c;
		}
		break;
	case 2:         /* replace */
		if (g->len)
			g->buf[at] = c;
		break;
	default:        /* truncate */
		g->len = at;
	}
}

static void gen_soup(struct gen *g)
{
	for (int i = rnd(30); i > 0; i--)
		PICK(g, "{", "}", "[", "]", ",", ":", "\"", "\"a\"", "1", "-", "0",
		     ".", "e", "true", "fals", "null", " ", "\\", "u", "\xc3\xa9",
		     "\xed\xa0\x80", "\x80", "\"\\u12", "{\"k\":", "[1,");
}

static void test_random(void)
{
	int agree = 0, complete = 0, expected_diff = 0, wrong = 0;
	const int rounds = 300000;

	for (int round = 0; round < rounds; round++) {
		struct gen g = { .len = 0 };
		struct jsonline whole, bytewise;
		json_error_t jerr;
		json_t *v;
		int ours, theirs, bad;

		if (round % 4 == 3)
			gen_soup(&g);
		else
			gen_value(&g, 0);
		/* a quarter stay valid; the rest get one to three edits */
		for (int m = round % 4 ? (int)rnd(3) + 1 : 0; m > 0; m--)
			mutate(&g);
		feed_all(&whole, g.buf, g.len);
		ours = jsonline_end(&whole) == JSONLINE_COMPLETE;
		bad = first_invalid(g.buf, g.len, &bytewise);
		v = json_loadb(g.buf, g.len, JSON_DECODE_ANY | JSON_ALLOW_NUL |
			       JSON_DECODE_INT_AS_REAL, &jerr);
		theirs = v != NULL;
		json_decref(v);
		complete += ours;
		if (whole.status != bytewise.status && wrong++ < 5)
			CHECK(0, "byte by byte differs on '%.*s'", (int)g.len, g.buf);
		if (theirs && bad >= 0 && wrong++ < 5)
			CHECK(0, "a prefix of valid '%.*s' is INVALID at %d",
			      (int)g.len, g.buf, bad);
		if (ours == theirs)
			agree++;
		else if (ours && known_difference(g.buf, g.len, jerr.text))
			expected_diff++;
		else if (wrong++ < 5)
			CHECK(0, "'%.*s': ours %d, jansson %d (%s); why: %s",
			      (int)g.len, g.buf, ours, theirs, jerr.text,
			      jsonline_why(&whole));
	}
	CHECK(wrong == 0, "random: %d disagreements", wrong);
	CHECK(agree + expected_diff == rounds, "random: %d of %d agree with jansson",
	      agree, rounds);
	CHECK(complete > rounds / 5 && complete < rounds * 4 / 5,
	      "random lines mix valid (%d) and not", complete);
	printf("random: %d lines, %d complete, %d known differences\n", rounds,
	       complete, expected_diff);
}

/* Not a pass/fail test: how fast a big line is checked. */
static void measure(void)
{
	size_t size = 16 << 20, n = 0;
	char *big = malloc(size);
	struct jsonline j;
	struct timespec t0, t1;
	static const char item[] = "{\"id\":\"inp_3f9c0a1b2c3d\",\"n\":-12.5e3,"
		"\"ok\":true,\"text\":\"caf\xc3\xa9 \\\"quoted\\\" \\u00e9\"},";

	big[n++] = '[';
	while (n + sizeof(item) + 2 < size) {
		memcpy(big + n, item, sizeof(item) - 1);
		n += sizeof(item) - 1;
	}
	big[n - 1] = ']';
	clock_gettime(CLOCK_MONOTONIC, &t0);
	feed_all(&j, big, n);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(j.status == JSONLINE_COMPLETE, "the big line is complete");
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("checked %zu bytes in %.3f s: %.0f MB/s\n", n, secs, n / secs / 1e6);
	free(big);
}

int main(void)
{
	test_table();
	test_depth();
	test_copy();
	test_why_incomplete();
	test_random();
	measure();
	return check_report();
}
