/* Text and retry policy for trigger_code. */
#include <stdio.h>

#include "trigger.h"

static const char *const messages[TRIGGER_E_LAST] = {
	[TRIGGER_OK] = "success",
	[TRIGGER_E_INVALID] = "invalid request",
	[TRIGGER_E_NOT_FOUND] = "run not found",
	[TRIGGER_E_RUN_FINISHED] = "run has finished",
	[TRIGGER_E_UNAUTHORIZED] = "credential missing, invalid or expired",
	[TRIGGER_E_FORBIDDEN] = "credential does not allow this",
	[TRIGGER_E_EXPIRED] = "access token has expired",
	[TRIGGER_E_TOO_LARGE] = "request too large",
	[TRIGGER_E_CONFLICT] = "request refused by the server",
	[TRIGGER_E_SERVER] = "server error",
	[TRIGGER_E_NETWORK] = "server unreachable",
	[TRIGGER_E_TIMEOUT] = "request timed out",
	[TRIGGER_E_PROTOCOL] = "unexpected answer from the server",
	[TRIGGER_E_NOMEM] = "out of memory",
	[TRIGGER_E_CANCELLED] = "cancelled: the client shut down",
	[TRIGGER_E_TLS] = "server certificate not trusted",
};

const char *trigger_strerror(trigger_code code)
{
	if ((unsigned)code >= TRIGGER_E_LAST || !messages[code])
		return "unknown error";
	return messages[code];
}

/* TIMEOUT counts: a request whose own deadline passed may well get an
 * answer next time (408 maps to a retry inside the client, and a later
 * caller has a fresh deadline). */
int trigger_code_retryable(trigger_code code)
{
	switch (code) {
	case TRIGGER_E_SERVER:
	case TRIGGER_E_NETWORK:
	case TRIGGER_E_TIMEOUT:
		return 1;
	default:
		return 0;
	}
}

/* An answer names its status; a request that got none says what happened
 * instead (never "HTTP 0"). */
const char *trigger_result_text(const struct trigger_result *res, char *buf,
				size_t len)
{
	const char *what = res->error[0] ? res->error : trigger_strerror(res->code);

	if (res->status)
		snprintf(buf, len, "HTTP %ld: %s", res->status, what);
	else
		snprintf(buf, len, "%s", what);
	return buf;
}
