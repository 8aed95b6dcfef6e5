/*
 * An incremental JSON syntax checker for one line: fed bytes as they are
 * written, it tells whether what it has seen is a complete JSON value, can
 * still become one, or never can.  O(1) per byte, fixed size (copyable, so
 * a write can be checked on a copy and committed only if all is well).
 * Strict RFC 8259: UTF-8 checked, no NUL or control bytes in strings,
 * nesting up to JSONLINE_MAX_DEPTH.
 */
#ifndef TRIGGER_JSONLINE_H
#define TRIGGER_JSONLINE_H

#include <stddef.h>
#include <stdint.h>

#define JSONLINE_MAX_DEPTH 512

enum jsonline_status {
	JSONLINE_EMPTY,      /* only whitespace so far (a blank line) */
	JSONLINE_PARTIAL,    /* a prefix of some JSON value */
	JSONLINE_COMPLETE,   /* one whole value (and maybe whitespace) */
	JSONLINE_INVALID,    /* can never become one JSON value */
};

struct jsonline {
	/* private */
	uint8_t stack[JSONLINE_MAX_DEPTH / 8];  /* bit per level: 1 = object */
	uint16_t depth;
	uint8_t state;
	uint8_t sub;          /* position inside a literal / escape / number */
	uint8_t utf8_left;    /* continuation bytes still expected */
	uint8_t utf8_lo, utf8_hi; /* allowed range of the next continuation */
	uint8_t status;
	const char *why;      /* static text when INVALID */
};

void jsonline_init(struct jsonline *j);
/* Feed bytes that contain no '\n'.  Returns the status after them; once
 * INVALID it stays INVALID. */
enum jsonline_status jsonline_feed(struct jsonline *j, const char *buf, size_t len);
/* Feed a stream of values separated by whitespace ('\n' included): stops
 * just past the byte that completes a value (status COMPLETE), at the
 * first byte that makes it INVALID, or at len.  Returns the bytes taken. */
size_t jsonline_scan(struct jsonline *j, const char *buf, size_t len);
/* Status at a line end (a value like 12 that was PARTIAL because more
 * digits could follow is COMPLETE here). */
enum jsonline_status jsonline_end(const struct jsonline *j);
/* Why it is INVALID, for the log ("unexpected 'o' at byte 2"...). */
const char *jsonline_why(const struct jsonline *j);

#endif
