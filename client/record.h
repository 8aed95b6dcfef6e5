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

/* Where a reader of a v1 (Redis-backed) stream stands.  Those records
 * have no seq, only an id "<ms>-<n>": a record's seq is its place in the
 * stream counted from 0 (Redis streams only grow), so a reader resumes and
 * de-duplicates exactly as with v2.  id is the id of record *last_seq when
 * known: then a connection resumes after it (Last-Event-ID: id); else it
 * reads from the start and counts. */
struct record_v1 {
	long long ord;          /* place of the last record of this connection */
	char id[48];            /* "" when unknown */
};

/* A new connection: it starts after cur->id when known, else at 0. */
void record_v1_connect(struct record_v1 *cur, long long last_seq);

/* One v1 event: id its "<ms>-<n>", data its one data line, which holds
 * the value's JSON text as a JSON string (a JSON value that is not a
 * string is taken as the value itself).  Records up to *last_seq are
 * skipped (replays), the next ones delivered with seq = their place.
 * Returns 0, or -1 when the id is not a Redis id (nothing delivered). */
int record_parse_v1(const char *id, const char *data, size_t len,
		    long long *last_seq, struct record_v1 *cur,
		    record_fn cb, void *arg);

#endif
