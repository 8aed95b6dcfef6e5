/*
 * The scope rules of Trigger.dev public access tokens, as the webapp's
 * checkAuthorization applies them: a scope is "action:type" (any id of that
 * type) or "action:type:id" where the id is everything after the second
 * colon (so ids may contain colons); "read:all" / "write:all" allow any
 * read / write and "admin" allows everything (the routes pass these as
 * super scopes).  Matching is exact and case-sensitive.
 */
#include <string.h>

#include "trigger.h"

/* If s starts with word followed by ':', the rest after the colon. */
static const char *after_word(const char *s, const char *word)
{
	size_t n = strlen(word);

	if (strncmp(s, word, n) != 0 || s[n] != ':')
		return NULL;
	return s + n + 1;
}

static int scope_allows(const char *scope, const char *action,
			const char *type, const char *id)
{
	const char *rest;

	if (strcmp(scope, "admin") == 0)
		return 1;
	rest = after_word(scope, action);
	if (!rest)
		return 0;
	if (strcmp(rest, "all") == 0 || strcmp(rest, type) == 0)
		return 1;
	/* A scope naming one id never covers "all of that type". */
	rest = after_word(rest, type);
	return rest && id && strcmp(rest, id) == 0;
}

int trigger_scopes_allow(const char *const *scopes, size_t n,
			 const char *action, const char *type, const char *id)
{
	if (!action || !type || !*action || !*type)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (scopes[i] && scope_allows(scopes[i], action, type, id))
			return 1;
	return 0;
}
