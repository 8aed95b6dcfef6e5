/*
 * Waitpoint tokens (wait.createToken / wait.forToken / wait.completeToken):
 * retrieve, complete, list, create.  Retrieving, listing and creating
 * accept only a secret key (the key goes as itself); completing also
 * accepts a token scoped write:waitpoints:<id>, so a secret key mints one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "url.h"

static const char tokens_path[] = "/api/v1/waitpoints/tokens";

/* The API answers 500 for an id it does not know, so a 5xx is retried
 * only briefly: a caller asking whether a token exists must not wait the
 * whole request timeout to learn that it does not. */
#define GET_TIMEOUT_MS 1500

int trigger_waitpoint_get(trigger_client *c, const char *waitpoint_id,
			  trigger_done_fn done, void *arg)
{
	struct tc_call call = { .timeout_ms = GET_TIMEOUT_MS };

	if (!c || !waitpoint_id || !*waitpoint_id)
		return TRIGGER_E_INVALID;
	call.url = tc_url(c->url, "/api/v1/waitpoints/tokens/%s", waitpoint_id, NULL);
	return call.url ? tc_call(c, &call, done, arg) : TRIGGER_E_NOMEM;
}

int trigger_waitpoint_complete(trigger_client *c, const char *waitpoint_id,
			       const char *json, size_t len,
			       trigger_done_fn done, void *arg)
{
	struct tc_call call = {
		.action = "write", .type = "waitpoints", .id = waitpoint_id,
	};
	char *scope = NULL;
	int rc;

	if (!c || !waitpoint_id || !*waitpoint_id || !json || !len)
		return TRIGGER_E_INVALID;
	call.url = tc_url(c->url, "/api/v1/waitpoints/tokens/%s/complete",
			  waitpoint_id, NULL);
	call.body = malloc(len + sizeof("{\"data\":}"));
	if (call.body)
		sprintf(call.body, "{\"data\":%.*s}", (int)len, json);
	if (asprintf(&scope, "write:waitpoints:%s", waitpoint_id) < 0)
		scope = NULL;
	call.scope = scope;
	if (!call.url || !call.body || !scope) {
		free(call.url);
		free(call.body);
		free(scope);
		return TRIGGER_E_NOMEM;
	}
	rc = tc_call(c, &call, done, arg);     /* copies the scope */
	free(scope);
	return rc;
}

int trigger_waitpoints_list(trigger_client *c, const char *status_filter,
			    const char *after, trigger_done_fn done, void *arg)
{
	struct tc_call call = { 0 };
	char *es = status_filter ? url_escape_segment(status_filter) : NULL;
	char *ea = after ? url_escape_segment(after) : NULL;

	if (!c)
		return TRIGGER_E_INVALID;
	if ((!status_filter || es) && (!after || ea) &&
	    asprintf(&call.url, "%s%s?page%%5Bsize%%5D=100%s%s%s%s",
		     trigger_client_url(c), tokens_path,
		     es ? "&filter%5Bstatus%5D=" : "", es ? es : "",
		     ea ? "&page%5Bafter%5D=" : "", ea ? ea : "") < 0)
		call.url = NULL;
	free(es);
	free(ea);
	return call.url ? tc_call(c, &call, done, arg) : TRIGGER_E_NOMEM;
}

int trigger_waitpoint_create(trigger_client *c, const char *timeout,
			     trigger_done_fn done, void *arg)
{
	struct tc_call call = { 0 };
	json_t *o = json_object();

	if (!c) {
		json_decref(o);
		return TRIGGER_E_INVALID;
	}
	if (o && timeout)
		json_object_set_new(o, "timeout", json_string(timeout));
	call.body = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (asprintf(&call.url, "%s%s", trigger_client_url(c), tokens_path) < 0)
		call.url = NULL;
	if (!call.url || !call.body) {
		free(call.url);
		free(call.body);
		return TRIGGER_E_NOMEM;
	}
	return tc_call(c, &call, done, arg);
}
