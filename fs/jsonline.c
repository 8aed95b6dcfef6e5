/*
 * Incremental RFC 8259 syntax check of one line: a pushdown automaton,
 * one switch per byte, the container stack one bit per level.
 *
 * Lone surrogates in \u escapes ("\ud800") are accepted: RFC 8259 (8.2)
 * allows them in the grammar and JSON.parse on the server takes them.
 * Encoded in UTF-8, surrogates are invalid UTF-8 and refused.
 */
#include <string.h>

#include "jsonline.h"

enum state {
	S_START,        /* only whitespace so far */
	S_VALUE,        /* a value must come: after ':', or ',' in an array */
	S_ARR_FIRST,    /* after '[': a value or ']' */
	S_OBJ_FIRST,    /* after '{': a key or '}' */
	S_KEY,          /* after ',' in an object: a key */
	S_COLON,        /* after a key */
	S_AFTER,        /* after a value in a container: ',' or its closer */
	S_DONE,         /* after the top-level value: whitespace only */
	S_STRING,       /* sub: KEY_BIT if it is a key */
	S_ESCAPE,       /* after '\' */
	S_UHEX,         /* after "\u"; sub also counts the hex digits */
	S_NUMBER,       /* sub: enum num */
	S_LITERAL,      /* sub: literal index << 3 | bytes matched */
};

#define KEY_BIT 0x80

/* Where a number is; the ones marked * may end there. */
enum num {
	N_MINUS,        /* "-" */
	N_ZERO,         /* "0" *, nothing but '.', 'e' may follow */
	N_INT,          /* "12" * */
	N_DOT,          /* "1." */
	N_FRAC,         /* "1.5" * */
	N_E,            /* "1e" */
	N_ESIGN,        /* "1e+" */
	N_EXP,          /* "1e5" * */
};

static const char *const literals[] = { "true", "false", "null" };

static int is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int num_can_end(unsigned sub)
{
	return sub == N_ZERO || sub == N_INT || sub == N_FRAC || sub == N_EXP;
}

static void bad(struct jsonline *j, const char *why)
{
	j->status = JSONLINE_INVALID;
	j->why = why;
}

static int top_is_object(const struct jsonline *j)
{
	unsigned level = j->depth - 1u;

	return j->stack[level / 8] >> (level % 8) & 1;
}

static void push(struct jsonline *j, int object)
{
	unsigned level = j->depth;

	if (level == JSONLINE_MAX_DEPTH) {
		bad(j, "arrays and objects nested too deep (over 512 levels)");
		return;
	}
	j->stack[level / 8] &= (uint8_t)~(1u << (level % 8));
	j->stack[level / 8] |= (uint8_t)((unsigned)object << (level % 8));
	j->depth++;
	j->state = object ? S_OBJ_FIRST : S_ARR_FIRST;
}

static void value_done(struct jsonline *j)
{
	j->state = j->depth ? S_AFTER : S_DONE;
}

static void begin_string(struct jsonline *j, int key)
{
	j->state = S_STRING;
	j->sub = key ? KEY_BIT : 0;
}

static void begin_number(struct jsonline *j, enum num sub)
{
	j->state = S_NUMBER;
	j->sub = sub;
}

static void begin_value(struct jsonline *j, unsigned char c)
{
	switch (c) {
	case '"':
		begin_string(j, 0);
		break;
	case '{':
	case '[':
		push(j, c == '{');
		break;
	case '-':
		begin_number(j, N_MINUS);
		break;
	case '0':
		begin_number(j, N_ZERO);
		break;
	case 't':
	case 'f':
	case 'n':
		j->state = S_LITERAL;
		j->sub = (uint8_t)((c == 't' ? 0 : c == 'f' ? 1 : 2) << 3 | 1);
		break;
	default:
		if (c >= '1' && c <= '9')
			begin_number(j, N_INT);
		else
			bad(j, "expected a JSON value (object, array, string, "
			    "number, true, false or null)");
	}
}

/* Returns 1 if c belongs to the number, 0 if the number ended before c. */
static int number_byte(struct jsonline *j, unsigned char c)
{
	int digit = is_digit(c), exp = c == 'e' || c == 'E';

	switch (j->sub) {
	case N_MINUS:
		j->sub = c == '0' ? N_ZERO : N_INT;
		if (!digit)
			bad(j, "expected a digit after '-'");
		return 1;
	case N_ZERO:
	case N_INT:
		if (digit && j->sub == N_ZERO) {
			bad(j, "numbers must not have leading zeros");
			return 1;
		}
		j->sub = digit ? N_INT : c == '.' ? N_DOT : exp ? N_E : j->sub;
		return digit || c == '.' || exp;
	case N_DOT:
		j->sub = N_FRAC;
		if (!digit)
			bad(j, "expected a digit after the decimal point");
		return 1;
	case N_FRAC:
		j->sub = exp ? N_E : N_FRAC;
		return digit || exp;
	case N_E:
		if (c == '+' || c == '-') {
			j->sub = N_ESIGN;
			return 1;
		}
		/* fall through */
	case N_ESIGN:
		j->sub = N_EXP;
		if (!digit)
			bad(j, "expected a digit in the exponent");
		return 1;
	default:
		return digit;
	}
}

static void literal_byte(struct jsonline *j, unsigned char c)
{
	const char *lit = literals[j->sub >> 3];
	unsigned pos = j->sub & 7;

	if ((unsigned char)lit[pos] != c) {
		bad(j, "invalid literal: expected true, false or null");
		return;
	}
	j->sub++;
	if (!lit[pos + 1])
		value_done(j);
}

/* A UTF-8 lead byte: how many continuation bytes follow, and the range of
 * the first one, which is what excludes overlong forms, surrogates and code
 * points past U+10FFFF (RFC 3629, table 3-7 of Unicode). */
static void utf8_lead(struct jsonline *j, unsigned char c)
{
	j->utf8_lo = 0x80;
	j->utf8_hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf) {
		j->utf8_left = 1;
	} else if (c >= 0xe0 && c <= 0xef) {
		j->utf8_left = 2;
		if (c == 0xe0)
			j->utf8_lo = 0xa0;
		else if (c == 0xed)
			j->utf8_hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		j->utf8_left = 3;
		if (c == 0xf0)
			j->utf8_lo = 0x90;
		else if (c == 0xf4)
			j->utf8_hi = 0x8f;
	} else if (c == 0xc0 || c == 0xc1) {
		bad(j, "invalid UTF-8: overlong encoding");
	} else if (c >= 0xf5) {
		bad(j, "invalid UTF-8: byte never used in UTF-8");
	} else {
		bad(j, "invalid UTF-8: continuation byte without a lead byte");
	}
}

static void utf8_continue(struct jsonline *j, unsigned char c)
{
	if (c < 0x80 || c > 0xbf)
		bad(j, "invalid UTF-8: sequence cut short");
	else if (c < j->utf8_lo)
		bad(j, "invalid UTF-8: overlong encoding");
	else if (c > j->utf8_hi && j->utf8_hi == 0x9f)
		bad(j, "invalid UTF-8: encoded UTF-16 surrogate");
	else if (c > j->utf8_hi)
		bad(j, "invalid UTF-8: code point above U+10FFFF");
	j->utf8_left--;
	j->utf8_lo = 0x80;
	j->utf8_hi = 0xbf;
}

static void string_byte(struct jsonline *j, unsigned char c)
{
	if (j->utf8_left)
		utf8_continue(j, c);
	else if (c == '"' && (j->sub & KEY_BIT))
		j->state = S_COLON;
	else if (c == '"')
		value_done(j);
	else if (c == '\\')
		j->state = S_ESCAPE;
	else if (c < 0x20)
		bad(j, "control character in a string (write it as an escape "
		    "such as \\n or \\t)");
	else if (c >= 0x80)
		utf8_lead(j, c);
}

static void escape_byte(struct jsonline *j, unsigned char c)
{
	if (c == 'u')
		j->state = S_UHEX;
	else if (c && strchr("\"\\/bfnrt", c))
		j->state = S_STRING;
	else
		bad(j, "invalid escape in a string (valid: \\\" \\\\ \\/ \\b "
		    "\\f \\n \\r \\t \\uXXXX)");
}

static void uhex_byte(struct jsonline *j, unsigned char c)
{
	unsigned char lower = c | 0x20;

	if (!is_digit(c) && (lower < 'a' || lower > 'f')) {
		bad(j, "expected four hex digits after \\u");
		return;
	}
	j->sub++;
	if ((j->sub & 7) == 4) {
		j->sub &= KEY_BIT;
		j->state = S_STRING;
	}
}

/* ',' or the closing bracket after a value inside a container. */
static void after_byte(struct jsonline *j, unsigned char c)
{
	int object = top_is_object(j);

	if (c == ',') {
		j->state = object ? S_KEY : S_VALUE;
	} else if (c == (object ? '}' : ']')) {
		j->depth--;
		value_done(j);
	} else {
		bad(j, object ? "expected ',' or '}' after an object member"
			      : "expected ',' or ']' after an array element");
	}
}

/* Where whitespace may stand, and what else each state takes. */
static void structural_byte(struct jsonline *j, unsigned char c)
{
	switch (j->state) {
	case S_START:
	case S_VALUE:
		begin_value(j, c);
		break;
	case S_ARR_FIRST:
		if (c == ']')
			after_byte(j, c);
		else
			begin_value(j, c);
		break;
	case S_OBJ_FIRST:
		if (c == '}')
			after_byte(j, c);
		else if (c == '"')
			begin_string(j, 1);
		else
			bad(j, "expected a key string or '}' after '{'");
		break;
	case S_KEY:
		if (c == '"')
			begin_string(j, 1);
		else
			bad(j, "expected a key string after ',' in an object");
		break;
	case S_COLON:
		if (c == ':')
			j->state = S_VALUE;
		else
			bad(j, "expected ':' after an object key");
		break;
	case S_AFTER:
		after_byte(j, c);
		break;
	default:
		bad(j, "unexpected text after the JSON value (separate values "
		    "with whitespace)");
	}
}

static void step(struct jsonline *j, unsigned char c)
{
	switch (j->state) {
	case S_STRING:
		string_byte(j, c);
		return;
	case S_ESCAPE:
		escape_byte(j, c);
		return;
	case S_UHEX:
		uhex_byte(j, c);
		return;
	case S_LITERAL:
		literal_byte(j, c);
		return;
	case S_NUMBER:
		if (number_byte(j, c))
			return;
		value_done(j);
		break;
	}
	if (!is_ws(c))
		structural_byte(j, c);
}

void jsonline_init(struct jsonline *j)
{
	memset(j, 0, sizeof(*j));
	j->state = S_START;
	j->status = JSONLINE_EMPTY;
}

enum jsonline_status jsonline_feed(struct jsonline *j, const char *buf, size_t len)
{
	for (size_t i = 0; i < len && j->status != JSONLINE_INVALID; i++) {
		if (!buf[i])
			bad(j, "NUL byte");
		else
			step(j, (unsigned char)buf[i]);
	}
	if (j->status == JSONLINE_INVALID)
		return JSONLINE_INVALID;
	j->status = j->state == S_START ? JSONLINE_EMPTY :
		    j->state == S_DONE ? JSONLINE_COMPLETE : JSONLINE_PARTIAL;
	return j->status;
}

/* A stream of values: stop just past the byte that completes one. */
size_t jsonline_scan(struct jsonline *j, const char *buf, size_t len)
{
	size_t i = 0;

	while (i < len && j->status != JSONLINE_INVALID && j->state != S_DONE) {
		if (!buf[i])
			bad(j, "NUL byte");
		else
			step(j, (unsigned char)buf[i]);
		i++;
	}
	if (j->status != JSONLINE_INVALID)
		j->status = j->state == S_START ? JSONLINE_EMPTY :
			    j->state == S_DONE ? JSONLINE_COMPLETE : JSONLINE_PARTIAL;
	return i;
}

/* At a line end nothing more can come: what is not whole is invalid. */
enum jsonline_status jsonline_end(const struct jsonline *j)
{
	if (j->status == JSONLINE_PARTIAL && j->state == S_NUMBER &&
	    j->depth == 0 && num_can_end(j->sub))
		return JSONLINE_COMPLETE;
	if (j->status == JSONLINE_PARTIAL)
		return JSONLINE_INVALID;
	return (enum jsonline_status)j->status;
}

/* For a line that is INVALID, or that jsonline_end found incomplete. */
const char *jsonline_why(const struct jsonline *j)
{
	if (j->status == JSONLINE_INVALID)
		return j->why;
	switch (j->state) {
	case S_START:
		return "blank line";
	case S_DONE:
		return "complete JSON value";
	case S_STRING:
	case S_ESCAPE:
	case S_UHEX:
		return "the text ends inside a string";
	case S_NUMBER:
		return num_can_end(j->sub) ? "the text ends inside an array or object"
					   : "the text ends inside a number";
	case S_LITERAL:
		return "the text ends inside true, false or null";
	default:
		return j->depth ? "the text ends inside an array or object"
				: "the text ends before the JSON value does";
	}
}
