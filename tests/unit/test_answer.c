/* What answers' headers tell the client (x-should-retry, rate-limit reset,
 * stream version, Date), the server's clock taken from Date, the pace of a
 * public token's /api/ requests, and additional keys. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "http.h"

static struct tc_answer parse(const char *const *lines)
{
	struct tc_answer a;

	memset(&a, 0, sizeof(a));
	for (; *lines; lines++)
		tc_answer_header(&a, *lines, strlen(*lines));
	return a;
}

static void test_headers(void)
{
	static const char *const real[] = {
		"HTTP/1.1 404 Not Found\r\n",
		"Content-Type: application/json; charset=utf-8\r\n",
		"x-should-retry: true\r\n",
		"X-RateLimit-Reset: 1712150460123\r\n",
		"Date: Wed, 03 Apr 2024 13:20:00 GMT\r\n",
		NULL,
	};
	static const char *const other[] = {
		"x-should-retry: false\r\n", "X-Stream-Version:v2\r\n",
		"x-should-retry-later: true\r\n", "dates: nonsense\r\n", NULL,
	};
	static const char *const v1[] = {
		"X-Stream-Version: v1\r\n", "Date: not a date\r\n", NULL,
	};
	struct tc_answer a = parse(real);

	CHECK(a.should_retry == 1, "x-should-retry: true");
	CHECK(a.reset_ms == 1712150460123LL, "reset %lld", (long long)a.reset_ms);
	CHECK(a.date_s == 1712150400, "date %lld", (long long)a.date_s);
	CHECK(a.stream_v2 == 0, "no stream version: v1");
	a = parse(other);
	CHECK(!a.should_retry && a.stream_v2 && !a.date_s && !a.reset_ms,
	      "false, v2 without a blank, look-alike names ignored");
	a = parse(v1);
	CHECK(!a.stream_v2 && !a.date_s, "v1 and a bad date");
}

static void test_server_clock(void)
{
	trigger_client *c = calloc(1, sizeof(*c));
	int64_t now = tc_wall_s();

	CHECK(tc_server_s(c) - now <= 1, "no Date seen: our clock");
	tc_clock_seen(c, now + 600);    /* the server is 10 minutes ahead */
	CHECK(llabs(tc_server_s(c) - (now + 600)) <= 1, "ahead: %lld",
	      (long long)(tc_server_s(c) - now));
	tc_clock_seen(c, 0);            /* no Date: nothing learned */
	CHECK(llabs(tc_server_s(c) - (now + 600)) <= 1, "kept");
	tc_clock_seen(c, now - 600);
	CHECK(llabs(tc_server_s(c) - (now - 600)) <= 1, "behind");
	free(c);
}

static void test_budget(void)
{
	struct tc_budget b;
	int64_t t0 = 1000000;

	memset(&b, 0, sizeof(b));
	for (int i = 0; i < TC_API_BUDGET; i++)
		CHECK(tc_budget_take(&b, t0 + i) == 0, "request %d allowed", i);
	CHECK(tc_budget_take(&b, t0 + 100) == TC_API_WINDOW_MS - 100,
	      "the next waits for the oldest to leave the window");
	CHECK(tc_budget_take(&b, t0 + TC_API_WINDOW_MS) == 0, "then goes");
	CHECK(tc_budget_take(&b, t0 + TC_API_WINDOW_MS) == 1, "one at a time");
	b.blocked_until = t0 + 3 * TC_API_WINDOW_MS;
	CHECK(tc_budget_take(&b, t0 + 2 * TC_API_WINDOW_MS) == TC_API_WINDOW_MS,
	      "a 429's reset holds everything");
}

static void test_reset_delay(void)
{
	CHECK(tc_reset_delay(0, 5000) == 0, "no header");
	CHECK(tc_reset_delay(4000, 5000) == 0, "past");
	CHECK(tc_reset_delay(7500, 5000) == 2500, "ahead");
	CHECK(tc_reset_delay(5000 + 10 * TC_API_WINDOW_MS, 5000) ==
	      TC_API_WINDOW_MS, "at most a window");
}

static void test_additional_keys(void)
{
	CHECK(trigger_key_is_additional("tr_dev_sk_abcdefghijklmnopqrstuvwx"), "dev");
	CHECK(trigger_key_is_additional("tr_prod_sk_ABCDEFGHIJ0123456789abcd"), "prod");
	CHECK(!trigger_key_is_additional("tr_dev_sk_abcdefghijklmnopqrstuvw"), "23");
	CHECK(!trigger_key_is_additional("tr_dev_sk_abcdefghijklmnopqrstuvwxy"), "25");
	CHECK(!trigger_key_is_additional("tr_dev_abcdefghijklmnopqrstu"), "root key");
	CHECK(!trigger_key_is_additional("tr_dev_sk_abcdefghijklmnopqrstuv_x"), "underscore");
	CHECK(!trigger_key_is_additional("tr__sk_abcdefghijklmnopqrstuvwx"), "no env");
}

int main(void)
{
	test_headers();
	test_server_clock();
	test_budget();
	test_reset_delay();
	test_additional_keys();
	return check_report();
}
