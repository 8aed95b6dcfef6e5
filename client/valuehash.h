/*
 * A hash of a JSON value as JSON.parse sees it, for recognising a value
 * sent to an input stream among the records stored there: the server
 * stores JSON.stringify(JSON.parse(text)), so whitespace, member order,
 * escapes and the spelling of numbers (all doubles; -0 is 0) must not
 * count.  One pass over the text, no allocation for ordinary values.
 */
#ifndef TRIGGER_VALUEHASH_H
#define TRIGGER_VALUEHASH_H

#include <stddef.h>
#include <stdint.h>

/* text must be one valid JSON value (with any whitespace around it); for
 * anything else the result is a hash of the bytes. */
uint64_t json_value_hash(const char *text, size_t len);

#endif
