/* Decoding the records of an input stream's SSE "batch" event. */
#ifndef TRIGGER_RECORD_H
#define TRIGGER_RECORD_H

#include <stddef.h>
#include "trigger.h"

/* Called for each record in order; rec is valid during the call only. */
typedef void (*record_fn)(void *arg, const struct trigger_record *rec);

/* Parse the data of one "batch" event:
 *   {"records":[{"seq_num":N,"timestamp":T,"body":"<json text>",
 *                "headers":[[name,value],...]?},...],"tail":{...}?}
 * body is {"data":<JSON text as a string, or already a JSON value>,"id":..}.
 * Records whose headers' first pair has an empty name are storage commands:
 * not passed to cb, but *last_seq still advances past them.  The value is
 * handed out as one line of compact JSON (a string data is used as is when
 * it already is one line, re-encoded otherwise).
 * *last_seq: in, the last seq delivered (-1: none); records with seq <=
 * *last_seq are skipped (replays after a reconnect); out, updated.
 * *tail: out, tail.seq_num when present, else left alone.
 * Returns 0, or -1 when the data is not a batch (nothing delivered). */
int record_parse_batch(const char *data, size_t len, long long *last_seq,
		       long long *tail, record_fn cb, void *arg);

#endif
