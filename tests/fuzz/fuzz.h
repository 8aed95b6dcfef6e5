/* Helpers shared by the libFuzzer targets: a failed property aborts with a
 * message, so that libFuzzer saves the input as a crash. */
#ifndef TRIGGER_FUZZ_H
#define TRIGGER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "%s:%d: property failed: %s: ",	\
				__FILE__, __LINE__, #cond);		\
			fprintf(stderr, __VA_ARGS__);			\
			fputc('\n', stderr);				\
			abort();					\
		}							\
	} while (0)

/* Split points come from the input itself, so a crash replays exactly. */
static inline uint64_t fuzz_hash(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3u;
	return h;
}

static inline uint64_t fuzz_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A chunk length in 1..left, mostly short, sometimes the rest. */
static inline size_t fuzz_chunk(uint64_t *s, size_t left)
{
	uint64_t r = fuzz_next(s);

	if (r % 8 == 0)
		return left;
	return 1 + (size_t)(r >> 8) % (left < 17 ? left : 17);
}

#endif
