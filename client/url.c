/* Percent-encoding of path segments and checking of the API base URL. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "url.h"

static int is_unreserved(unsigned char ch)
{
	return isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

char *url_escape_segment(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;
	char *out, *o;

	if (!s)
		return NULL;
	out = malloc(strlen(s) * 3 + 1);
	if (!out)
		return NULL;
	for (p = (const unsigned char *)s, o = out; *p; p++) {
		if (is_unreserved(*p)) {
			*o++ = (char)*p;
			continue;
		}
		*o++ = '%';
		*o++ = hex[*p >> 4];
		*o++ = hex[*p & 15];
	}
	*o = '\0';
	return out;
}

/* The pieces of "scheme://host[:port][/path]", pointing into the URL. */
struct base_url {
	int https;
	const char *host;       /* "[::1]" keeps its brackets */
	size_t host_len;
	const char *port;       /* ":8080" or "" */
	size_t port_len;
	const char *path;
	size_t path_len;        /* without trailing '/' */
};

static void fail(char *err, size_t errlen, const char *why)
{
	if (err && errlen)
		snprintf(err, errlen, "API URL %s", why);
}

static int is_host_char(unsigned char ch)
{
	return isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* An IPv6 address, without zone: inet_pton wants it NUL-terminated. */
static int is_ipv6_literal(const char *s, size_t len, struct in6_addr *a6)
{
	char buf[INET6_ADDRSTRLEN];

	if (len >= sizeof(buf))
		return 0;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return inet_pton(AF_INET6, buf, a6) == 1;
}

/* Host and port from the authority [host, end); NULL or the problem. */
static const char *split_authority(struct base_url *u, const char *a,
				   const char *end)
{
	const char *p = a;
	struct in6_addr a6;

	if (memchr(a, '@', (size_t)(end - a)))
		return "must not contain user info (user:password@)";
	if (*p == '[') {
		p = memchr(a, ']', (size_t)(end - a));
		if (!p || !is_ipv6_literal(a + 1, (size_t)(p - a - 1), &a6))
			return "has an invalid [IPv6] host";
		p++;
	} else {
		while (p < end && is_host_char((unsigned char)*p))
			p++;
	}
	u->host = a;
	u->host_len = (size_t)(p - a);
	if (!u->host_len)
		return "has no host";
	if (p < end && *p != ':')
		return "has an invalid character in its host";
	u->port = p;
	u->port_len = (size_t)(end - p);
	if (p < end) {
		char *num_end;
		long port = strtol(p + 1, &num_end, 10);

		if (!isdigit((unsigned char)p[1]) || num_end != end ||
		    port < 1 || port > 65535)
			return "has an invalid port";
	}
	return NULL;
}

static const char *parse_base(struct base_url *u, const char *url)
{
	const char *a, *end, *why;

	for (a = url; *a; a++)
		if ((unsigned char)*a <= ' ' || (unsigned char)*a >= 0x7f)
			return "contains whitespace or non-ASCII characters";
	if (strncasecmp(url, "https://", 8) == 0)
		u->https = 1, a = url + 8;
	else if (strncasecmp(url, "http://", 7) == 0)
		u->https = 0, a = url + 7;
	else if (strstr(url, "://"))
		return "has an unsupported scheme (use https:// or http://)";
	else
		return "is not an absolute http(s):// URL";
	if (strchr(url, '?'))
		return "must not contain a query (?...)";
	if (strchr(url, '#'))
		return "must not contain a fragment (#...)";
	end = a + strcspn(a, "/");
	why = split_authority(u, a, end);
	if (why)
		return why;
	u->path = end;
	u->path_len = strlen(end);
	while (u->path_len && end[u->path_len - 1] == '/')
		u->path_len--;
	return NULL;
}

static int is_loopback(const char *host, size_t len)
{
	char buf[64];
	struct in_addr a4;
	struct in6_addr a6;

	if (host[0] == '[')
		return is_ipv6_literal(host + 1, len - 2, &a6) &&
		       IN6_IS_ADDR_LOOPBACK(&a6);
	if (len >= sizeof(buf))
		return 0;
	memcpy(buf, host, len);
	buf[len] = '\0';
	if (strcasecmp(buf, "localhost") == 0)
		return 1;
	return inet_pton(AF_INET, buf, &a4) == 1 &&
	       (ntohl(a4.s_addr) >> 24) == 127;
}

char *url_check_base(const char *url, int insecure_http, char *err, size_t errlen)
{
	struct base_url u;
	const char *why;
	char *out;

	if (!url || !*url) {
		fail(err, errlen, "is empty");
		return NULL;
	}
	why = parse_base(&u, url);
	if (!why && !u.https && !insecure_http && !is_loopback(u.host, u.host_len))
		why = "uses http:// with a host that is not loopback (localhost,"
		      " 127.0.0.0/8, [::1]): use https:// or allow insecure http";
	if (why) {
		fail(err, errlen, why);
		return NULL;
	}
	if (asprintf(&out, "%s://%.*s%.*s%.*s", u.https ? "https" : "http",
		     (int)u.host_len, u.host, (int)u.port_len, u.port,
		     (int)u.path_len, u.path) < 0) {
		fail(err, errlen, "could not be copied: out of memory");
		return NULL;
	}
	/* Host names are case-insensitive: one spelling per host. */
	for (size_t i = 0; i < u.host_len; i++) {
		char *h = out + (u.https ? 8 : 7) + i;

		*h = (char)tolower((unsigned char)*h);
	}
	return out;
}
