/* Every code has its own text, and the retry policy matches the HTTP
 * mapping (5xx and 429 are SERVER, 408 is TIMEOUT). */
#include "check.h"
#include "trigger.h"

int main(void)
{
	for (int a = 0; a < TRIGGER_E_LAST; a++) {
		const char *ta = trigger_strerror((trigger_code)a);

		CHECK(ta && *ta && strcmp(ta, "unknown error") != 0,
		      "code %d has a text", a);
		for (int b = 0; b < a; b++)
			CHECK(strcmp(ta, trigger_strerror((trigger_code)b)) != 0,
			      "codes %d and %d share \"%s\"", a, b, ta);
	}
	CHECK_STR(trigger_strerror(TRIGGER_E_NOT_FOUND), "run not found", "404");
	CHECK_STR(trigger_strerror(TRIGGER_E_LAST), "unknown error", "LAST");
	CHECK_STR(trigger_strerror((trigger_code)-1), "unknown error", "-1");
	for (int c = 0; c < TRIGGER_E_LAST; c++)
		CHECK(trigger_code_retryable((trigger_code)c) ==
		      (c == TRIGGER_E_SERVER || c == TRIGGER_E_NETWORK ||
		       c == TRIGGER_E_TIMEOUT), "retry policy of code %d", c);
	return check_report();
}
