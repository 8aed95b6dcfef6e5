/* fs/jsonline.c, the JSON line checker behind write = send.  The line is
 * the input up to its first newline.  Properties:
 * - fed in random pieces, or copied half way, it ends as fed at once;
 * - once INVALID it stays INVALID;
 * - EMPTY exactly when the line is only blanks;
 * - at the line end, COMPLETE lines are JSON to jansson and INVALID ones
 *   are not, except where RFC 8259 and jansson are known to differ. */
#include <string.h>
#include <jansson.h>

#include "fuzz.h"
#include "jsonline.h"

static int jansson_accepts(const char *s, size_t n, json_error_t *err)
{
	json_t *v = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL |
			       JSON_DECODE_INT_AS_REAL, err);

	json_decref(v);
	return v != NULL;
}

/* jansson refuses lone surrogate escapes and numbers past the double
 * range, which RFC 8259 allows; jsonline refuses NUL bytes and nesting past
 * JSONLINE_MAX_DEPTH, which jansson takes. */
static int has_surrogate_escape(const char *s, size_t n)
{
	for (size_t i = 0; i + 2 < n; i++)
		if (s[i] == '\\' && s[i + 1] == 'u' && (s[i + 2] | 0x20) == 'd')
			return 1;
	return 0;
}

static int only_blanks(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return 0;
	return 1;
}

/* Feed in random pieces; returns the end status, checks monotonicity and
 * that a copy taken at a random point agrees. */
static enum jsonline_status feed_pieces(const char *s, size_t n, uint64_t seed,
					struct jsonline *out)
{
	struct jsonline j, copy;
	size_t at = 0, copy_at = n ? (size_t)(seed % (n + 1)) : 0;
	enum jsonline_status st = JSONLINE_EMPTY;
	int copied = 0;

	jsonline_init(&j);
	while (at < n) {
		size_t len = fuzz_chunk(&seed, n - at);
		enum jsonline_status prev = st;

		if (!copied && at >= copy_at) {
			copy = j;
			copied = 1;
			jsonline_feed(&copy, s + at, n - at);
		}
		st = jsonline_feed(&j, s + at, len);
		FUZZ_CHECK(prev != JSONLINE_INVALID || st == JSONLINE_INVALID,
			   "INVALID is final (at byte %zu)", at);
		at += len;
	}
	if (copied)
		FUZZ_CHECK(jsonline_end(&copy) == jsonline_end(&j) &&
			   copy.status == j.status,
			   "a copy taken at byte %zu ends as the original", copy_at);
	*out = j;
	return jsonline_end(&j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	const char *nl = memchr(s, '\n', size);
	size_t n = nl ? (size_t)(nl - s) : size;
	struct jsonline whole, pieces;
	enum jsonline_status fed, end, end2;
	json_error_t err;
	int accepts;

	jsonline_init(&whole);
	fed = jsonline_feed(&whole, s, n);
	end = jsonline_end(&whole);
	end2 = feed_pieces(s, n, fuzz_hash(data, size) | 1, &pieces);
	FUZZ_CHECK(end == end2, "pieces end %d, at once %d", end2, end);
	FUZZ_CHECK(pieces.status == whole.status, "same status fed in pieces");
	FUZZ_CHECK(end != JSONLINE_PARTIAL, "a line end decides");
	FUZZ_CHECK((fed == JSONLINE_EMPTY) == only_blanks(s, n), "EMPTY iff blank");
	FUZZ_CHECK(end != JSONLINE_INVALID || jsonline_why(&whole)[0],
		   "an INVALID line says why");

	accepts = jansson_accepts(s, n, &err);
	if (end == JSONLINE_COMPLETE)
		FUZZ_CHECK(accepts || strstr(err.text, "overflow") ||
			   strstr(err.text, "NUL byte in object key") ||
			   (has_surrogate_escape(s, n) && strstr(err.text, "Unicode")),
			   "COMPLETE but jansson says: %s", err.text);
	if (end == JSONLINE_INVALID && fed == JSONLINE_INVALID)
		FUZZ_CHECK(!accepts || memchr(s, '\0', n) ||
			   strstr(jsonline_why(&whole), "deep"),
			   "INVALID (%s) but jansson accepts it", jsonline_why(&whole));
	if (end == JSONLINE_INVALID && fed != JSONLINE_INVALID)
		FUZZ_CHECK(!accepts, "incomplete (%s) but jansson accepts it",
			   jsonline_why(&whole));
	return 0;
}
