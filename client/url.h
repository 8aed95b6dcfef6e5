/* URL building and checking for the API client. */
#ifndef TRIGGER_URL_H
#define TRIGGER_URL_H

#include <stddef.h>

/* Percent-encode a path segment: everything but RFC 3986 unreserved
 * (ALPHA DIGIT - . _ ~) becomes %XX (uppercase).  Returns malloc'd string. */
char *url_escape_segment(const char *s);

/* Check an API base URL: http or https, a host, no query/fragment/userinfo.
 * http:// is allowed only for loopback hosts (localhost, 127.0.0.0/8, ::1)
 * unless insecure_http.  Returns a malloc'd normalised copy without a
 * trailing '/', or NULL with a message in err. */
char *url_check_base(const char *url, int insecure_http, char *err, size_t errlen);

#endif
