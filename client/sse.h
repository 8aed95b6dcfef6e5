/*
 * A WHATWG server-sent-events parser: bytes in, events out.  Incremental
 * (a record may be split at any byte), handles CRLF/CR/LF line ends,
 * comments, multi-line data, id, event and retry fields.  No I/O.
 */
#ifndef TRIGGER_SSE_H
#define TRIGGER_SSE_H

#include <stddef.h>

/* An event, valid only during the callback.  Fields not given are "" / -1. */
struct sse_event {
	const char *type;       /* "event:" field, "" when absent ("message") */
	const char *data;       /* data lines joined by '\n', NUL-terminated */
	size_t data_len;
	const char *id;         /* last id seen on the stream (sticky) */
	long retry;             /* retry: ms in this event, or -1 */
};

/* Return non-zero to stop parsing: sse_parser_feed then returns that. */
typedef int (*sse_event_fn)(void *arg, const struct sse_event *ev);

struct sse_parser;

/* max_event: the largest data buffer accepted; past it feed fails. */
struct sse_parser *sse_parser_new(size_t max_event, sse_event_fn cb, void *arg);
void sse_parser_free(struct sse_parser *p);
/* Forget everything buffered (a new connection).  Keeps the callback. */
void sse_parser_reset(struct sse_parser *p);
/* Returns 0, the callback's non-zero value, or -1 when an event grows past
 * max_event (the parser is then reset). */
int sse_parser_feed(struct sse_parser *p, const char *buf, size_t len);

#endif
