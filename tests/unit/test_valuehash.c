/* json_value_hash: equal for every spelling JSON.parse reads as the same
 * value (what the server stores is JSON.stringify of that), different for
 * different values. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "valuehash.h"

static uint64_t h(const char *s)
{
	return json_value_hash(s, strlen(s));
}

static void same(const char *a, const char *b)
{
	CHECK(h(a) == h(b), "%s and %s should hash alike", a, b);
}

static void differ(const char *a, const char *b)
{
	CHECK(h(a) != h(b), "%s and %s should differ", a, b);
}

static void spellings(void)
{
	same("{\"a\":1,\"b\":[1,2]}", " { \"b\" : [ 1.0 , 2e0 ] ,\n\"a\" : 1 }\t");
	same("{\"2\":1,\"10\":2,\"x\":3}", "{\"x\":3,\"10\":2,\"2\":1}");
	same("\"\\u00e9t\\u00E9\"", "\"\xc3\xa9t\xc3\xa9\"");
	same("\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"");
	same("\"\\/\\\"\\\\\\b\\f\\n\\r\\t\"", "\"/\\\"\\\\\\u0008\\u000c\\u000A\\u000d\\u0009\"");
	same("\"a\\u0000b\"", "\"a\\u0000b\"");
	same("-0", "0");
	same("0.0", "0");
	same("1e2", "100");
	same("1E+2", "100.000");
	/* Both are the same double; JSON.stringify prints the second. */
	same("12345678901234567890", "12345678901234567000");
	same("0.1", "1e-1");
	/* A lone surrogate is kept (the server escapes it the same way). */
	same("\"\\ud800x\"", "\"\\uD800x\"");
}

static void differences(void)
{
	differ("1", "\"1\"");
	differ("[]", "{}");
	differ("[]", "\"\"");
	differ("[1,2]", "[2,1]");
	differ("[[1],2]", "[1,[2]]");
	differ("{\"a\":1}", "{\"a\":2}");
	differ("{\"a\":1,\"b\":2}", "{\"a\":2,\"b\":1}");
	differ("{\"a\":\"b\"}", "{\"b\":\"a\"}");
	differ("[\"a\",\"b\"]", "[\"ab\"]");
	differ("null", "false");
	differ("true", "false");
	differ("0.1", "0.10000000000000002");
	differ("\"x\"", "\"x \"");
	differ("{}", "{\"\":null}");
	differ("[null]", "[]");
}

static void long_and_deep(void)
{
	char num[200], *deep = malloc(2 * 600 + 2), *deeper = malloc(2 * 601 + 2);

	/* Past the number buffer: the same double as its short spelling. */
	memset(num, '0', sizeof(num));
	num[0] = '1';
	num[sizeof(num) - 1] = '\0';
	num[sizeof(num) - 5] = '.';
	same(num, "1e194");
	for (int i = 0; i < 600; i++) {
		deep[i] = '[';
		deep[600 + 1 + i] = ']';
	}
	deep[600] = '1';
	deep[2 * 600 + 1] = '\0';
	for (int i = 0; i < 601; i++) {
		deeper[i] = '[';
		deeper[601 + 1 + i] = ']';
	}
	deeper[601] = '1';
	deeper[2 * 601 + 1] = '\0';
	differ(deep, deeper);
	CHECK(h(deep) == h(deep), "deep nesting hashes the same twice");
	free(deep);
	free(deeper);
}

static void not_json(void)
{
	/* Not a value: a hash of the bytes, the same each time. */
	CHECK(h("[1,") == h("[1,"), "a prefix hashes the same twice");
	differ("[1,", "[1, ");
	differ("[1]x", "[1]");
	differ("", " ");
}

int main(void)
{
	spellings();
	differences();
	long_and_deep();
	not_json();
	return check_report();
}
