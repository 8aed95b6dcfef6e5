/* Credentials: secret key checks, JWT decoding without verification, and
 * HS256 minting checked by decoding and by libjwt's own verification. */
#include <stdlib.h>
#include <string.h>
#include <jwt.h>

#include "check.h"
#include "cred.h"
#include "trigger.h"

/* Unpadded base64url, for building tokens by hand. */
static void b64url(char *out, const char *in)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t n = strlen(in), o = 0;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned char)in[i] << 16;

		v |= i + 1 < n ? (unsigned char)in[i + 1] << 8 : 0;
		v |= i + 2 < n ? (unsigned char)in[i + 2] : 0;
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		if (i + 1 < n)
			out[o++] = abc[v >> 6 & 63];
		if (i + 2 < n)
			out[o++] = abc[v & 63];
	}
	out[o] = '\0';
}

static char *make_jwt(const char *header, const char *payload)
{
	static char tok[4096];
	char h[1024], p[2048];

	b64url(h, header);
	b64url(p, payload);
	snprintf(tok, sizeof(tok), "%s.%s.c2lnbmF0dXJl", h, p);
	return tok;
}

#define HS256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static void test_secret_keys(void)
{
	const char *good[] = { "tr_dev_abc123", "tr_prod_Xy9_z-1",
			       "tr_stg_0", "tr_preview_abc" };
	const char *bad[] = { "", "tr_dev_", "tr__abc", "tr_dev", "tr_DEV_abc",
			      "pk_dev_abc", "sk_live_abc", "tr_dev_abc def",
			      "tr_dev_abc\n", "\ttr_dev_abc", "tr_dev_\xc3\xa9",
			      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln" };
	char err[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		trigger_cred *c = trigger_cred_secret_key(good[i], err, sizeof(err));

		CHECK(c, "%s accepted (%s)", good[i], err);
		if (!c)
			continue;
		CHECK(trigger_cred_is_secret(c), "%s is a secret key", good[i]);
		CHECK_STR(trigger_cred_text(c), good[i], "bearer text");
		CHECK(trigger_cred_nscopes(c) == 0 && !trigger_cred_sub(c) &&
		      trigger_cred_exp(c) == 0, "a key has no claims");
		trigger_cred_free(c);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK(!trigger_cred_secret_key(bad[i], err, sizeof(err)),
		      "key %zu refused", i);
		CHECK(strstr(err, "secret key") != NULL, "key %zu: message: %s",
		      i, err);
	}
	CHECK(!trigger_cred_secret_key(NULL, err, sizeof(err)), "NULL refused");
	CHECK(!trigger_cred_secret_key("tr_dev_Zq9W3 x", err, sizeof(err)) &&
	      strstr(err, "whitespace"), "whitespace named: %s", err);
	CHECK(!strstr(err, "Zq9W3"), "the message must not quote the key: %s", err);
	CHECK(!trigger_cred_token("eyJZq9W3.x", err, sizeof(err)) &&
	      !strstr(err, "Zq9W3"), "nor quote the token: %s", err);
	trigger_cred_secret_key("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
				err, sizeof(err));
	CHECK(strstr(err, "access token"), "a JWT given as key is named: %s", err);
}

static void test_token_claims(void)
{
	char err[256];
	trigger_cred *c = trigger_cred_token(make_jwt(HS256,
		"{\"sub\":\"env_1\",\"pub\":true,\"exp\":1700000900,"
		"\"scopes\":[\"read:runs:run_1\",\"write:inputStreams:run_1\"]}"),
		err, sizeof(err));

	CHECK(c, "token decoded: %s", err);
	if (!c)
		return;
	CHECK(!trigger_cred_is_secret(c), "a token is not a secret key");
	CHECK(trigger_cred_exp(c) == 1700000900, "exp %lld",
	      (long long)trigger_cred_exp(c));
	CHECK_STR(trigger_cred_sub(c), "env_1", "sub");
	CHECK(trigger_cred_nscopes(c) == 2, "two scopes");
	CHECK_STR(trigger_cred_scope(c, 0), "read:runs:run_1", "scope 0");
	CHECK_STR(trigger_cred_scope(c, 1), "write:inputStreams:run_1", "scope 1");
	CHECK(!trigger_cred_scope(c, 2), "no scope 2");
	CHECK(trigger_cred_allows(c, "write", "inputStreams", "run_1"), "send");
	CHECK(!trigger_cred_allows(c, "write", "inputStreams", "run_2"), "other run");
	CHECK(trigger_cred_allows(c, "read", "runs", "run_1"), "read run");
	CHECK(!trigger_cred_allows(c, "read", "runs", NULL), "list runs");

	trigger_cred *d = trigger_cred_dup(c);
	trigger_cred_free(c);
	CHECK(d && trigger_cred_nscopes(d) == 2 && trigger_cred_exp(d) == 1700000900,
	      "dup keeps the claims");
	CHECK_STR(d ? trigger_cred_scope(d, 1) : NULL, "write:inputStreams:run_1",
		  "dup scope");
	CHECK_STR(d ? trigger_cred_sub(d) : NULL, "env_1", "dup sub");
	trigger_cred_free(d);

	c = trigger_cred_token(make_jwt("{\"alg\":\"none\"}", "{}"), err, sizeof(err));
	CHECK(c && trigger_cred_exp(c) == 0 && !trigger_cred_sub(c) &&
	      trigger_cred_nscopes(c) == 0, "absent claims: %s", err);
	trigger_cred_free(c);
	c = trigger_cred_token(make_jwt(HS256, "{\"exp\":1.7e9}"), err, sizeof(err));
	CHECK(c && trigger_cred_exp(c) == 1700000000, "real exp");
	trigger_cred_free(c);
}

static void test_not_tokens(void)
{
	struct { const char *jwt, *why; } bad[] = {
		{ "", "empty" },
		{ "abc", "three" },
		{ "a.b", "three" },
		{ "a.b.c.d", "three" },
		{ "eyJ!.eyJ9.x", "header" },
		{ "tr_dev_abc", "secret key" },
		{ "eyJhbGciOiJIUzI1NiJ9 .e30.x", "whitespace" },
		{ NULL, "empty" },
	};
	struct { const char *header, *payload, *why; } badclaims[] = {
		{ "[1]", "{}", "header" },
		{ "{\"typ\":\"JWT\"}", "{}", "header" },
		{ "not json", "{}", "header" },
		{ HS256, "[1]", "payload" },
		{ HS256, "{\"scopes\":\"read:all\"}", "scopes" },
		{ HS256, "{\"scopes\":[\"a\",1]}", "scopes" },
		{ HS256, "{\"exp\":\"soon\"}", "exp" },
		{ HS256, "{\"exp\":1e300}", "exp" },
		{ HS256, "{\"sub\":5}", "sub" },
	};
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK(!trigger_cred_token(bad[i].jwt, err, sizeof(err)),
		      "token %zu refused", i);
		CHECK(strstr(err, "access token") && strstr(err, bad[i].why),
		      "token %zu: message says %s: %s", i, bad[i].why, err);
	}
	for (size_t i = 0; i < sizeof(badclaims) / sizeof(badclaims[0]); i++) {
		err[0] = '\0';
		CHECK(!trigger_cred_token(make_jwt(badclaims[i].header,
						   badclaims[i].payload),
					  err, sizeof(err)), "claims %zu refused", i);
		CHECK(strstr(err, badclaims[i].why), "claims %zu: message says %s: %s",
		      i, badclaims[i].why, err);
	}
}

static void test_mint(void)
{
	const char *key = "tr_dev_s3cr3t";
	const char *scopes[] = { "read:runs:run_1", "write:inputStreams:run_1" };
	char *tok = trigger_jwt_mint(key, "env_9", scopes, 2, 1700000000, 1700000900);
	char err[256];
	trigger_cred *c;
	jwt_t *jwt = NULL;

	CHECK(tok != NULL, "minted");
	if (!tok)
		return;
	c = trigger_cred_token(tok, err, sizeof(err));
	CHECK(c, "the minted token decodes: %s", err);
	if (c) {
		CHECK_STR(trigger_cred_sub(c), "env_9", "minted sub");
		CHECK(trigger_cred_exp(c) == 1700000900, "minted exp");
		CHECK(trigger_cred_nscopes(c) == 2, "minted scope count");
		CHECK_STR(trigger_cred_scope(c, 0), scopes[0], "minted scope 0");
		CHECK_STR(trigger_cred_scope(c, 1), scopes[1], "minted scope 1");
		trigger_cred_free(c);
	}
	CHECK(jwt_decode(&jwt, tok, (const unsigned char *)key, (int)strlen(key)) == 0,
	      "libjwt verifies the signature with the key");
	if (jwt) {
		CHECK(jwt_get_alg(jwt) == JWT_ALG_HS256, "HS256");
		CHECK_STR(jwt_get_grant(jwt, "iss"), "https://id.trigger.dev", "iss");
		CHECK_STR(jwt_get_grant(jwt, "aud"), "https://api.trigger.dev", "aud");
		CHECK(jwt_get_grant_bool(jwt, "pub") == 1, "pub true");
		CHECK(jwt_get_grant_int(jwt, "iat") == 1700000000, "iat");
		jwt_free(jwt);
		jwt = NULL;
	}
	CHECK(jwt_decode(&jwt, tok, (const unsigned char *)"tr_dev_other", 12) != 0,
	      "a wrong key fails verification");
	if (jwt)
		jwt_free(jwt);
	free(tok);

	tok = trigger_jwt_mint(key, "env_9", NULL, 0, 1, 2);
	c = tok ? trigger_cred_token(tok, err, sizeof(err)) : NULL;
	CHECK(c && trigger_cred_nscopes(c) == 0, "no scopes: an empty array");
	trigger_cred_free(c);
	free(tok);
	CHECK(!trigger_jwt_mint(NULL, "env", scopes, 2, 1, 2), "no key");
	CHECK(!trigger_jwt_mint("", "env", scopes, 2, 1, 2), "empty key");
}

int main(void)
{
	test_secret_keys();
	test_token_claims();
	test_not_tokens();
	test_mint();
	return check_report();
}
