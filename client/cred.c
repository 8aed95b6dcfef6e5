/*
 * Credentials: a secret key, or a public access token (a JWT) decoded
 * without verification, since only the server holds the signing key.  No
 * message written to err ever contains the credential itself.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jwt.h>

#include "cred.h"

struct trigger_cred {
	int secret;
	char *text;             /* the key or the JWT */
	int64_t exp;
	char *sub;
	char **scopes;
	size_t nscopes;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Printable ASCII only: the text goes into an HTTP header verbatim. */
static int is_token_text(const char *s)
{
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e)
			return 0;
	return 1;
}

static int looks_like_jwt(const char *s)
{
	const char *dot = strchr(s, '.');

	return strncmp(s, "eyJ", 3) == 0 && dot && strchr(dot + 1, '.');
}

/* tr_<environment>_<random>: the webapp takes any "tr_" key as a secret
 * key and the environments are dev, prod, stg and preview; any lowercase
 * environment name is accepted so that a new one is not refused here. */
static int is_secret_key_form(const char *key)
{
	const char *p = key + 3;

	if (strncmp(key, "tr_", 3) != 0)
		return 0;
	while (*p >= 'a' && *p <= 'z')
		p++;
	return p > key + 3 && *p == '_' && p[1];
}

/* tr_<environment>_sk_<24 alphanumerics>: an additional API key.  The
 * server does not verify tokens it signs (it checks them against the
 * environment's root key), so it must ask the API for them. */
int trigger_key_is_additional(const char *key)
{
	const char *p = key + 3;
	size_t n = 0;

	if (strncmp(key, "tr_", 3) != 0)
		return 0;
	while (*p >= 'a' && *p <= 'z')
		p++;
	if (p == key + 3 || strncmp(p, "_sk_", 4) != 0)
		return 0;
	for (p += 4; isalnum((unsigned char)p[n]); n++)
		;
	return n == 24 && !p[n];
}

static trigger_cred *cred_alloc(int secret, const char *text)
{
	trigger_cred *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->secret = secret;
	c->text = strdup(text);
	if (!c->text) {
		free(c);
		return NULL;
	}
	return c;
}

trigger_cred *trigger_cred_secret_key(const char *key, char *err, size_t errlen)
{
	trigger_cred *c;

	if (!key || !*key) {
		set_err(err, errlen, "secret key is empty");
		return NULL;
	}
	if (!is_token_text(key)) {
		set_err(err, errlen, "secret key contains whitespace or "
			"non-printable characters");
		return NULL;
	}
	if (looks_like_jwt(key)) {
		set_err(err, errlen, "secret key looks like a public access "
			"token (JWT); pass it as an access token instead");
		return NULL;
	}
	if (!is_secret_key_form(key)) {
		set_err(err, errlen, "secret key is malformed: expected "
			"tr_dev_..., tr_prod_..., tr_stg_... or tr_preview_...");
		return NULL;
	}
	c = cred_alloc(1, key);
	if (!c)
		set_err(err, errlen, "out of memory");
	return c;
}

static int b64url_value(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '-')
		return 62;
	if (ch == '_')
		return 63;
	return -1;
}

/* Unpadded base64url (RFC 7515) to a malloc'd NUL-terminated buffer. */
static char *b64url_decode(const char *s, size_t len, size_t *outlen)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t n = 0;
	char *out;

	if (len % 4 == 1)
		return NULL;
	out = malloc(len * 3 / 4 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value((unsigned char)s[i]);

		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (char)(acc >> bits & 0xff);
		}
	}
	out[n] = '\0';
	*outlen = n;
	return out;
}

/* One dot-separated JWT part as a JSON object, or NULL. */
static json_t *jwt_part(const char *s, size_t len)
{
	size_t n;
	char *raw = b64url_decode(s, len, &n);
	json_t *obj;

	if (!raw)
		return NULL;
	obj = json_loadb(raw, n, 0, NULL);
	free(raw);
	if (obj && !json_is_object(obj)) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

static int copy_scopes(trigger_cred *c, json_t *scopes)
{
	size_t i;
	json_t *v;

	c->scopes = calloc(json_array_size(scopes) + 1, sizeof(char *));
	if (!c->scopes)
		return -1;
	json_array_foreach(scopes, i, v) {
		c->scopes[i] = strdup(json_string_value(v));
		if (!c->scopes[i])
			return -1;
		c->nscopes++;
	}
	return 0;
}

/* Returns NULL, or what is wrong with the claims. */
static const char *take_claims(trigger_cred *c, json_t *claims)
{
	json_t *exp = json_object_get(claims, "exp");
	json_t *sub = json_object_get(claims, "sub");
	json_t *scopes = json_object_get(claims, "scopes");
	size_t i;
	json_t *v;

	if (exp && !json_is_number(exp))
		return "exp claim is not a number";
	/* Past int64_t range the conversion would be undefined. */
	if (json_is_real(exp) && !(fabs(json_real_value(exp)) < 9e18))
		return "exp claim is out of range";
	if (json_is_integer(exp))
		c->exp = json_integer_value(exp);
	else if (exp)
		c->exp = (int64_t)json_real_value(exp);
	if (sub && !json_is_string(sub))
		return "sub claim is not a string";
	if (sub && !(c->sub = strdup(json_string_value(sub))))
		return "out of memory";
	if (!scopes)
		return NULL;
	if (!json_is_array(scopes))
		return "scopes claim is not an array";
	json_array_foreach(scopes, i, v)
		if (!json_is_string(v))
			return "scopes claim holds a non-string";
	return copy_scopes(c, scopes) ? "out of memory" : NULL;
}

/* Split header.payload.signature and decode the two JSON parts. */
static const char *decode_jwt(const char *jwt, json_t **claims)
{
	const char *dot1 = strchr(jwt, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	json_t *head;

	if (!dot2 || strchr(dot2 + 1, '.'))
		return "not a JWT (expected three dot-separated parts)";
	head = jwt_part(jwt, (size_t)(dot1 - jwt));
	if (!head || !json_is_string(json_object_get(head, "alg"))) {
		json_decref(head);
		return "not a JWT (its header is not a JSON object with alg)";
	}
	json_decref(head);
	*claims = jwt_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	if (!*claims)
		return "not a JWT (its payload is not a JSON object)";
	return NULL;
}

trigger_cred *trigger_cred_token(const char *jwt, char *err, size_t errlen)
{
	trigger_cred *c;
	json_t *claims = NULL;
	const char *why;

	if (!jwt || !*jwt) {
		set_err(err, errlen, "access token is empty");
		return NULL;
	}
	if (!is_token_text(jwt)) {
		set_err(err, errlen, "access token contains whitespace or "
			"non-printable characters");
		return NULL;
	}
	if (strncmp(jwt, "tr_", 3) == 0) {
		set_err(err, errlen, "access token looks like a secret key "
			"(tr_...); pass it as a secret key instead");
		return NULL;
	}
	why = decode_jwt(jwt, &claims);
	c = why ? NULL : cred_alloc(0, jwt);
	if (!why && !c)
		why = "out of memory";
	if (!why)
		why = take_claims(c, claims);
	json_decref(claims);
	if (why) {
		set_err(err, errlen, "access token: %s", why);
		trigger_cred_free(c);
		return NULL;
	}
	return c;
}

void trigger_cred_free(trigger_cred *cred)
{
	if (!cred)
		return;
	for (size_t i = 0; i < cred->nscopes; i++)
		free(cred->scopes[i]);
	free(cred->scopes);
	free(cred->sub);
	free(cred->text);
	free(cred);
}

trigger_cred *trigger_cred_dup(const trigger_cred *cred)
{
	trigger_cred *c = cred_alloc(cred->secret, cred->text);

	if (!c)
		return NULL;
	c->exp = cred->exp;
	if (cred->sub && !(c->sub = strdup(cred->sub)))
		goto fail;
	if (!cred->scopes)
		return c;
	c->scopes = calloc(cred->nscopes + 1, sizeof(char *));
	if (!c->scopes)
		goto fail;
	for (; c->nscopes < cred->nscopes; c->nscopes++) {
		c->scopes[c->nscopes] = strdup(cred->scopes[c->nscopes]);
		if (!c->scopes[c->nscopes])
			goto fail;
	}
	return c;
fail:
	trigger_cred_free(c);
	return NULL;
}

const char *trigger_cred_text(const trigger_cred *cred)
{
	return cred->text;
}

int trigger_cred_is_secret(const trigger_cred *cred)
{
	return cred->secret;
}

int64_t trigger_cred_exp(const trigger_cred *cred)
{
	return cred->exp;
}

const char *trigger_cred_sub(const trigger_cred *cred)
{
	return cred->sub;
}

size_t trigger_cred_nscopes(const trigger_cred *cred)
{
	return cred->nscopes;
}

const char *trigger_cred_scope(const trigger_cred *cred, size_t i)
{
	return i < cred->nscopes ? cred->scopes[i] : NULL;
}

int trigger_cred_allows(const trigger_cred *cred, const char *action,
			const char *type, const char *id)
{
	if (cred->secret)
		return 1;
	return trigger_scopes_allow((const char *const *)cred->scopes,
				    cred->nscopes, action, type, id);
}

/* {"scopes":[...]} as JSON text for jwt_add_grants_json. */
static char *scopes_json(const char *const *scopes, size_t n)
{
	json_t *arr = json_array();
	json_t *obj = json_object();
	char *text = NULL;

	if (!arr || !obj || json_object_set(obj, "scopes", arr))
		goto out;
	for (size_t i = 0; i < n; i++)
		if (!scopes[i] || json_array_append_new(arr, json_string(scopes[i])))
			goto out;
	text = json_dumps(obj, JSON_COMPACT);
out:
	json_decref(arr);
	json_decref(obj);
	return text;
}

static int add_claims(jwt_t *jwt, const char *sub, const char *scopes,
		      int64_t iat, int64_t exp)
{
	return jwt_add_grant(jwt, "iss", "https://id.trigger.dev") ||
	       jwt_add_grant(jwt, "aud", "https://api.trigger.dev") ||
	       (sub && jwt_add_grant(jwt, "sub", sub)) ||
	       jwt_add_grant_bool(jwt, "pub", 1) ||
	       jwt_add_grants_json(jwt, scopes) ||
	       jwt_add_grant_int(jwt, "iat", (long)iat) ||
	       jwt_add_grant_int(jwt, "exp", (long)exp);
}

char *trigger_jwt_mint(const char *key, const char *sub,
		       const char *const *scopes, size_t nscopes,
		       int64_t iat, int64_t exp)
{
	jwt_t *jwt = NULL;
	char *claims, *out = NULL;

	if (!key || !*key)
		return NULL;
	claims = scopes_json(scopes, nscopes);
	if (!claims || jwt_new(&jwt))
		goto out;
	if (jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)key,
			(int)strlen(key)))
		goto out;
	if (add_claims(jwt, sub, claims, iat, exp))
		goto out;
	out = jwt_encode_str(jwt);
out:
	if (jwt)
		jwt_free(jwt);
	free(claims);
	return out;
}
