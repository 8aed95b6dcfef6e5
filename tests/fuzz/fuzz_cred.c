/* client/cred.c and client/scope.c: the JWT decoder behind
 * trigger_cred_token and the scope rules behind trigger_cred_allows.
 * The first input byte picks a mode, the rest is lines:
 *   0: one raw token (and the same text as a secret key);
 *   1: claims JSON, then action, type, id: signed-looking token around it;
 *   2: scopes, one a line: minted with trigger_jwt_mint, then decoded.
 * Properties: no error text repeats the credential; scopes come out as
 * they went in; trigger_cred_allows agrees with a reference that compares
 * whole scope strings; every scope allows what it names; a copy is equal. */
#include <string.h>
#include <jansson.h>

#include "cred.h"
#include "fuzz.h"

#define MAX_LINES 64

static const char key[] = "tr_dev_fuzzfuzzfuzzfuzz";

/* The rules as the webapp's buildJwtAbility reads a scope: split at every
 * colon, the action and type are the first two parts (empty: absent), the
 * id all the rest joined again. */
static int ref_scope(const char *s, const char *a, const char *t, const char *id)
{
	char *copy = strdup(s), *type, *rest;
	int ok;

	FUZZ_CHECK(copy, "strdup");
	type = strchr(copy, ':');
	if (type)
		*type++ = '\0';
	rest = type ? strchr(type, ':') : NULL;
	if (rest)
		*rest++ = '\0';
	if (!*copy)
		ok = 0;
	else if (!type || !*type)
		ok = !strcmp(copy, "admin");
	else if (strcmp(copy, a) && strcmp(copy, "*"))
		ok = 0;
	else if (!strcmp(type, "all"))
		ok = 1;
	else if (strcmp(type, t))
		ok = 0;
	else
		ok = !rest || !*rest || (id && !strcmp(rest, id));
	free(copy);
	return ok;
}

static int ref_allows(const trigger_cred *c, const char *a, const char *t,
		      const char *id)
{
	int ok = 0, alias;

	if (!a || !t || !*a || !*t)
		return 0;
	if (trigger_cred_is_secret(c))
		return 1;
	alias = !strcmp(a, "trigger") || !strcmp(a, "batchTrigger") || !strcmp(a, "update");
	for (size_t i = 0; i < trigger_cred_nscopes(c); i++) {
		const char *s = trigger_cred_scope(c, i);

		ok |= ref_scope(s, a, t, id) || (alias && ref_scope(s, "write", t, id));
	}
	return ok;
}

static void check_query(const trigger_cred *c, const char *a, const char *t,
			const char *id)
{
	FUZZ_CHECK(trigger_cred_allows(c, a, t, id) == ref_allows(c, a, t, id),
		   "allows(%s, %s, %s) disagrees with the reference", a, t,
		   id ? id : "(any)");
}

/* "action:type[:id]" allows exactly that. */
static void check_scope_allows_itself(const trigger_cred *c, const char *s)
{
	char *copy = strdup(s), *t, *id;

	FUZZ_CHECK(copy, "strdup");
	t = strchr(copy, ':');
	if (t && t > copy && t[1] && strcmp(t + 1, "all")) {
		*t++ = '\0';
		id = strchr(t, ':');
		if (id)
			*id++ = '\0';
		if (*t)
			FUZZ_CHECK(trigger_cred_allows(c, copy, t, id),
				   "scope %s allows what it names", s);
	}
	free(copy);
}

static void check_cred(const trigger_cred *c, const char *text)
{
	size_t n = trigger_cred_nscopes(c);
	trigger_cred *d = trigger_cred_dup(c);

	FUZZ_CHECK(!strcmp(trigger_cred_text(c), text), "text kept as given");
	FUZZ_CHECK(trigger_cred_scope(c, n) == NULL, "scope(n) is NULL");
	FUZZ_CHECK(d, "dup");
	FUZZ_CHECK(trigger_cred_nscopes(d) == n && trigger_cred_exp(d) == trigger_cred_exp(c) &&
		   !strcmp(trigger_cred_text(d), text) &&
		   !trigger_cred_sub(d) == !trigger_cred_sub(c), "dup is equal");
	for (size_t i = 0; i < n; i++) {
		FUZZ_CHECK(trigger_cred_scope(c, i), "scope %zu present", i);
		FUZZ_CHECK(!strcmp(trigger_cred_scope(c, i), trigger_cred_scope(d, i)),
			   "dup scope %zu", i);
		check_scope_allows_itself(c, trigger_cred_scope(c, i));
	}
	check_query(c, "read", "runs", "run_1");
	check_query(c, "write", "inputStreams", "run_1");
	check_query(c, "read", "runs", NULL);
	trigger_cred_free(d);
}

/* Errors never repeat the credential (a short one may occur by chance). */
static void check_err(const char *err, const char *text)
{
	if (strlen(text) >= 20)
		FUZZ_CHECK(!strstr(err, text), "error text repeats the credential");
}

static void try_token(const char *text, char **q, size_t nq)
{
	char err[256] = "";
	trigger_cred *c = trigger_cred_token(text, err, sizeof(err));

	if (!c) {
		FUZZ_CHECK(err[0], "a refusal says why");
		check_err(err, text);
		return;
	}
	FUZZ_CHECK(!trigger_cred_is_secret(c), "a token is no secret key");
	check_cred(c, text);
	if (nq >= 2)
		check_query(c, q[0], q[1], nq >= 3 ? q[2] : NULL);
	trigger_cred_free(c);
}

static void try_secret(const char *text)
{
	char err[256] = "";
	trigger_cred *c = trigger_cred_secret_key(text, err, sizeof(err));

	if (!c) {
		FUZZ_CHECK(err[0], "a refusal says why");
		check_err(err, text);
		return;
	}
	FUZZ_CHECK(!strncmp(text, "tr_", 3), "secret keys start with tr_");
	check_cred(c, text);
	FUZZ_CHECK(trigger_cred_allows(c, "write", "inputStreams", "x"), "a key allows all");
	trigger_cred_free(c);
}

static char *b64url(const char *s, size_t n)
{
	static const char a[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char *out = malloc(n * 4 / 3 + 4), *o = out;
	uint32_t acc = 0;
	int bits = 0;

	FUZZ_CHECK(out, "malloc");
	for (size_t i = 0; i < n; i++) {
		acc = acc << 8 | (uint8_t)s[i];
		for (bits += 8; bits >= 6; bits -= 6)
			*o++ = a[acc >> (bits - 6) & 63];
	}
	if (bits)
		*o++ = a[acc << (6 - bits) & 63];
	*o = '\0';
	return out;
}

static void try_claims(char **lines, size_t n)
{
	static const char head[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char *h = b64url(head, sizeof(head) - 1), *p = b64url(lines[0], strlen(lines[0]));
	char *tok;

	FUZZ_CHECK(asprintf(&tok, "%s.%s.c2lnbmF0dXJl", h, p) > 0, "asprintf");
	try_token(tok, lines + 1, n - 1);
	free(tok);
	free(h);
	free(p);
}

/* Minted, then decoded: the same scopes, sub and exp. */
static void try_mint(char **scopes, size_t n)
{
	int representable = 1;
	char *tok, err[256] = "";
	trigger_cred *c;

	for (size_t i = 0; i < n; i++) {
		json_t *s = json_string(scopes[i]);

		representable &= s != NULL;
		json_decref(s);
	}
	tok = trigger_jwt_mint(key, "env_fuzz", (const char *const *)scopes, n,
			       1700000000, 1700000900);
	FUZZ_CHECK(tok || !representable, "minting UTF-8 scopes succeeds");
	if (!tok)
		return;
	c = trigger_cred_token(tok, err, sizeof(err));
	FUZZ_CHECK(c, "a minted token decodes: %s", err);
	FUZZ_CHECK(trigger_cred_nscopes(c) == n, "%zu scopes back, %zu in",
		   trigger_cred_nscopes(c), n);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(!strcmp(trigger_cred_scope(c, i), scopes[i]), "scope %zu back", i);
	FUZZ_CHECK(trigger_cred_exp(c) == 1700000900, "exp back");
	FUZZ_CHECK(!strcmp(trigger_cred_sub(c), "env_fuzz"), "sub back");
	check_cred(c, tok);
	trigger_cred_free(c);
	free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf, *lines[MAX_LINES];
	size_t n = 0;

	if (size < 1)
		return 0;
	buf = strndup((const char *)data + 1, size - 1);
	FUZZ_CHECK(buf, "strndup");
	for (char *s = buf, *nl; n < MAX_LINES; s = nl + 1) {
		lines[n++] = s;
		if (!(nl = strchr(s, '\n')))
			break;
		*nl = '\0';
	}
	switch (data[0] % 3) {
	case 0:
		try_token(lines[0], lines + 1, n - 1);
		try_secret(lines[0]);
		break;
	case 1:
		try_claims(lines, n);
		break;
	default:
		try_mint(lines, n);
	}
	free(buf);
	return 0;
}
