/*
 * The scope rules of Trigger.dev public access tokens, as the webapp's
 * buildJwtAbility applies them.  A scope is "action:type[:id]": only the
 * first two colons separate, so the id is everything after the second
 * (ids may contain colons); an empty part counts as absent.  Bare
 * "admin" allows everything, but "admin:<type>" is not universal (it is
 * the action "admin" on that type); action "*" matches any action; type
 * "all" any type; no id, any id of the type.  The actions trigger,
 * batchTrigger and update are also allowed by a scope for "write".
 * Matching is exact and case-sensitive.
 */
#include <string.h>

#include "trigger.h"

/* The part of s up to the next colon (or the end): its length. */
static size_t part_len(const char *s)
{
	const char *colon = strchr(s, ':');

	return colon ? (size_t)(colon - s) : strlen(s);
}

static int part_is(const char *p, size_t n, const char *word)
{
	return strlen(word) == n && memcmp(p, word, n) == 0;
}

static int scope_allows(const char *scope, const char *action,
			const char *type, const char *id)
{
	size_t alen = part_len(scope), tlen;
	const char *t, *sid;

	if (!alen)
		return 0;
	t = scope[alen] ? scope + alen + 1 : scope + alen;
	tlen = part_len(t);
	if (!tlen)      /* no type: only bare "admin" means anything */
		return part_is(scope, alen, "admin");
	if (!part_is(scope, alen, action) && !part_is(scope, alen, "*"))
		return 0;
	if (part_is(t, tlen, "all"))
		return 1;
	if (!part_is(t, tlen, type))
		return 0;
	sid = t[tlen] ? t + tlen + 1 : t + tlen;
	if (!*sid)
		return 1;
	/* A scope naming one id never covers "all of that type". */
	return id && strcmp(sid, id) == 0;
}

static int any_allows(const char *const *scopes, size_t n, const char *action,
		      const char *type, const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (scopes[i] && scope_allows(scopes[i], action, type, id))
			return 1;
	return 0;
}

int trigger_scopes_allow(const char *const *scopes, size_t n,
			 const char *action, const char *type, const char *id)
{
	if (!action || !type || !*action || !*type)
		return 0;
	if (any_allows(scopes, n, action, type, id))
		return 1;
	return (!strcmp(action, "trigger") || !strcmp(action, "batchTrigger") ||
		!strcmp(action, "update")) &&
	       any_allows(scopes, n, "write", type, id);
}
