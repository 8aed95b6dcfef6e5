/* A minimal test harness: CHECK keeps going after a failure and says where
 * and why; check_report prints the totals and gives the exit status. */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (cond) {                                                   \
			check_passed++;                                       \
		} else {                                                      \
			check_failed++;                                       \
			fprintf(stderr, "%s:%d: FAILED (%s): ", __FILE__,     \
				__LINE__, #cond);                             \
			fprintf(stderr, __VA_ARGS__);                         \
			fputc('\n', stderr);                                  \
		}                                                             \
	} while (0)

/* Both may be NULL. */
#define CHECK_STR(got, want, what)                                            \
	do {                                                                  \
		const char *g_ = (got), *w_ = (want);                         \
		CHECK((!g_ && !w_) || (g_ && w_ && strcmp(g_, w_) == 0),      \
		      "%s: got \"%s\", want \"%s\"", (what),                  \
		      g_ ? g_ : "(null)", w_ ? w_ : "(null)");                \
	} while (0)

static inline int check_report(void)
{
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}

#endif
