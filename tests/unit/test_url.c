/* Percent-encoding of path segments and the API base URL check. */
#include <stdlib.h>

#include "check.h"
#include "url.h"

static void test_escape(void)
{
	static const struct { const char *in, *out; } cases[] = {
		{ "run_abc123", "run_abc123" },
		{ "", "" },
		{ "AZaz09-._~", "AZaz09-._~" },
		{ "a b", "a%20b" },
		{ "100%", "100%25" },
		{ "what?", "what%3F" },
		{ "#1", "%231" },
		{ "a/b", "a%2Fb" },
		{ "..", ".." },
		{ "+&=;:@!$'()*,", "%2B%26%3D%3B%3A%40%21%24%27%28%29%2A%2C" },
		{ "\xc3\xa9t\xc3\xa9", "%C3%A9t%C3%A9" },
		{ "\xf0\x9f\x98\x80", "%F0%9F%98%80" },
		{ "\x01\x7f\xff", "%01%7F%FF" },
		{ "a\\b\"c", "a%5Cb%22c" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = url_escape_segment(cases[i].in);

		CHECK_STR(got, cases[i].out, cases[i].in);
		free(got);
	}
	CHECK(url_escape_segment(NULL) == NULL, "NULL in, NULL out");
}

static void check_ok(const char *url, int insecure, const char *want)
{
	char err[256] = "";
	char *got = url_check_base(url, insecure, err, sizeof(err));

	CHECK(got != NULL, "%s accepted (%s)", url, err);
	CHECK_STR(got, want, url);
	free(got);
}

/* Refused, and the message says why (contains `because`). */
static void check_refused(const char *url, int insecure, const char *because)
{
	char err[256] = "";
	char *got = url_check_base(url, insecure, err, sizeof(err));

	CHECK(got == NULL, "%s refused, got %s", url ? url : "(null)", got);
	CHECK(strstr(err, because) != NULL, "%s: message mentions \"%s\": %s",
	      url ? url : "(null)", because, err);
	free(got);
}

static void test_base(void)
{
	check_ok("https://api.trigger.dev", 0, "https://api.trigger.dev");
	check_ok("https://api.trigger.dev/", 0, "https://api.trigger.dev");
	check_ok("HTTPS://API.Trigger.DEV:443/Base//", 0,
		 "https://api.trigger.dev:443/Base");
	check_ok("https://trigger.example.com/self-hosted", 0,
		 "https://trigger.example.com/self-hosted");
	check_ok("http://localhost:3030", 0, "http://localhost:3030");
	check_ok("http://LocalHost:3030/", 0, "http://localhost:3030");
	check_ok("http://127.0.0.1:8080", 0, "http://127.0.0.1:8080");
	check_ok("http://127.255.1.2", 0, "http://127.255.1.2");
	check_ok("http://[::1]:3000", 0, "http://[::1]:3000");
	check_ok("http://[0:0:0:0:0:0:0:1]/", 0, "http://[0:0:0:0:0:0:0:1]");
	check_ok("https://[2001:db8::1]:8443", 0, "https://[2001:db8::1]:8443");
	check_ok("http://trigger.internal:3030", 1, "http://trigger.internal:3030");
	check_ok("http://10.0.0.5", 1, "http://10.0.0.5");

	check_refused("http://trigger.internal:3030", 0, "loopback");
	check_refused("http://128.0.0.1", 0, "loopback");
	check_refused("http://127.0.0.1.evil.example", 0, "loopback");
	check_refused("http://localhost.evil.example", 0, "loopback");
	check_refused("http://[::2]", 0, "loopback");
	check_refused("http://[::ffff:127.0.0.1]", 0, "loopback");
	check_refused("ftp://api.trigger.dev", 0, "scheme");
	check_refused("ws://localhost", 1, "scheme");
	check_refused("api.trigger.dev", 0, "http");
	check_refused("", 0, "empty");
	check_refused(NULL, 0, "empty");
	check_refused("https://user:pw@api.trigger.dev", 0, "user info");
	check_refused("https://@api.trigger.dev", 0, "user info");
	check_refused("https://api.trigger.dev?x=1", 0, "query");
	check_refused("https://api.trigger.dev/a?", 0, "query");
	check_refused("https://api.trigger.dev#top", 0, "fragment");
	check_refused("https://", 0, "no host");
	check_refused("https:///path", 0, "no host");
	check_refused("https://:443", 0, "no host");
	check_refused("http://[::1", 0, "IPv6");
	check_refused("http://[zz]:80", 0, "IPv6");
	check_refused("https://api.trigger.dev:", 0, "port");
	check_refused("https://api.trigger.dev:0", 0, "port");
	check_refused("https://api.trigger.dev:65536", 0, "port");
	check_refused("https://api.trigger.dev:80a", 0, "port");
	check_refused("https://api.trigger.dev:+80", 0, "port");
	check_refused("https://api trigger.dev", 0, "whitespace");
	check_refused("https://api.trigger.dev/\n", 0, "whitespace");
	check_refused("https://b\xc3\xa9.example", 0, "non-ASCII");
	check_refused("https://a,b.example", 0, "host");
}

int main(void)
{
	test_escape();
	test_base();
	return check_report();
}
