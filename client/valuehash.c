/*
 * The value hash: one scan of the JSON text with a stack of open arrays
 * and objects.  Strings hash their decoded bytes (escapes resolved, lone
 * surrogates kept as JavaScript keeps them), numbers their double, an
 * array its elements in order, an object the sum of its members' hashes
 * (so member order does not count).  Duplicate keys count twice where
 * JSON.parse keeps the last: such values are not recognised.
 */
#include <locale.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "valuehash.h"

enum { K_STRING = 1, K_NUMBER, K_LITERAL, K_ARRAY, K_OBJECT, K_BYTES };

#define FNV_BASIS 14695981039346656037ull
#define FNV_PRIME 1099511628211ull

struct frame {
	uint64_t acc;           /* array: its hash so far; object: the sum */
	uint64_t key;           /* object: the key of the member being read */
	size_t n;
	int obj, want_key;
};

struct scan {
	const char *s;
	size_t i, n;
	struct frame *fr, small[32];
	size_t depth, cap;
};

static locale_t c_locale;       /* strtod must not follow LC_NUMERIC */
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
	c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;    /* splitmix64 */
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
	return h ^ (h >> 31);
}

static uint64_t fnv(uint64_t h, const char *p, size_t n)
{
	while (n--)
		h = (h ^ (unsigned char)*p++) * FNV_PRIME;
	return h;
}

/* Code points as UTF-8, surrogates included (generalised UTF-8). */
static uint64_t fnv_code_point(uint64_t h, unsigned cp)
{
	char b[4];
	size_t n = 1;

	if (cp < 0x80) {
		b[0] = (char)cp;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | cp >> 6);
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | cp >> 12);
		n = 3;
	} else {
		b[0] = (char)(0xf0 | cp >> 18);
		n = 4;
	}
	for (size_t k = 1; k < n; k++)
		b[k] = (char)(0x80 | ((cp >> (6 * (n - 1 - k))) & 0x3f));
	return fnv(h, b, n);
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int hex4(const char *p, unsigned *out)
{
	*out = 0;
	for (int k = 0; k < 4; k++) {
		int d = hex_digit(p[k]);

		if (d < 0)
			return -1;
		*out = *out << 4 | (unsigned)d;
	}
	return 0;
}

/* After "\u": one code point, a surrogate pair joined; i moves past it. */
static int escape_u(const char *s, size_t n, size_t *i, unsigned *cp)
{
	unsigned lo;

	if (*i + 4 > n || hex4(s + *i, cp))
		return -1;
	*i += 4;
	if (*cp >= 0xd800 && *cp < 0xdc00 && *i + 6 <= n && s[*i] == '\\' &&
	    s[*i + 1] == 'u' && !hex4(s + *i + 2, &lo) &&
	    lo >= 0xdc00 && lo < 0xe000) {
		*cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
		*i += 6;
	}
	return 0;
}

static int scan_string(struct scan *sc, uint64_t *out)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *s = sc->s, *e;
	size_t i = sc->i + 1, n = sc->n, run;
	uint64_t h = FNV_BASIS;
	unsigned cp;

	for (;;) {
		for (run = i; i < n && s[i] != '"' && s[i] != '\\'; i++)
			;
		h = fnv(h, s + run, i - run);
		if (i >= n)
			return -1;
		if (s[i] == '"')
			break;
		if (++i >= n)
			return -1;
		if (s[i] == 'u') {
			i++;
			if (escape_u(s, n, &i, &cp))
				return -1;
			h = fnv_code_point(h, cp);
		} else if (s[i] && (e = strchr(from, s[i]))) {
			h = fnv(h, &to[e - from], 1);
			i++;
		} else {
			return -1;
		}
	}
	sc->i = i + 1;
	*out = mix(K_STRING, h);
	return 0;
}

static int number_char(char c)
{
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' ||
	       c == 'e' || c == 'E';
}

static int scan_number(struct scan *sc, uint64_t *out)
{
	size_t i = sc->i, len;
	char buf[64], *p = buf, *end;
	uint64_t bits;
	double d;
	int ok;

	while (i < sc->n && number_char(sc->s[i]))
		i++;
	len = i - sc->i;
	if (!len || (len >= sizeof(buf) && !(p = malloc(len + 1))))
		return -1;
	memcpy(p, sc->s + sc->i, len);
	p[len] = '\0';
	pthread_once(&c_locale_once, c_locale_init);
	d = c_locale ? strtod_l(p, &end, c_locale) : strtod(p, &end);
	ok = end == p + len;
	if (p != buf)
		free(p);
	if (!ok)
		return -1;
	if (d == 0)
		d = 0;          /* -0 is stored as 0 */
	memcpy(&bits, &d, sizeof(bits));
	sc->i = i;
	*out = mix(K_NUMBER, bits);
	return 0;
}

static int scan_literal(struct scan *sc, uint64_t *out)
{
	static const char *const words[] = { "true", "false", "null" };

	for (size_t k = 0; k < 3; k++) {
		size_t len = strlen(words[k]);

		if (sc->n - sc->i >= len &&
		    !memcmp(sc->s + sc->i, words[k], len)) {
			sc->i += len;
			*out = mix(K_LITERAL, k);
			return 0;
		}
	}
	return -1;
}

static int push(struct scan *sc, int obj)
{
	if (sc->depth == sc->cap) {
		size_t cap = sc->cap * 2;
		struct frame *fr = malloc(cap * sizeof(*fr));

		if (!fr)
			return -1;
		memcpy(fr, sc->fr, sc->depth * sizeof(*fr));
		if (sc->fr != sc->small)
			free(sc->fr);
		sc->fr = fr;
		sc->cap = cap;
	}
	sc->fr[sc->depth++] = (struct frame){ .obj = obj, .want_key = obj };
	return 0;
}

static void skip_ws(struct scan *sc)
{
	while (sc->i < sc->n && (sc->s[sc->i] == ' ' || sc->s[sc->i] == '\t' ||
				 sc->s[sc->i] == '\n' || sc->s[sc->i] == '\r'))
		sc->i++;
}

/* The next value whole, or a key; returns 1 for a key, 0, or -1. */
static int scan_item(struct scan *sc, uint64_t *v)
{
	struct frame *top = sc->depth ? &sc->fr[sc->depth - 1] : NULL;
	char c = sc->s[sc->i];

	switch (c) {
	case '"':
		if (scan_string(sc, v))
			return -1;
		return top && top->want_key;
	case '}':
	case ']':
		if (!top || top->obj != (c == '}'))
			return -1;
		*v = mix(mix(top->obj ? K_OBJECT : K_ARRAY, top->acc), top->n);
		sc->depth--;
		sc->i++;
		return 0;
	case 't':
	case 'f':
	case 'n':
		return scan_literal(sc, v);
	default:
		return scan_number(sc, v);
	}
}

static int scan_value(struct scan *sc, uint64_t *out)
{
	for (;;) {
		struct frame *top;
		uint64_t v;
		int rc;

		skip_ws(sc);
		if (sc->i >= sc->n)
			return -1;
		if (sc->s[sc->i] == '{' || sc->s[sc->i] == '[') {
			if (push(sc, sc->s[sc->i++] == '{'))
				return -1;
			continue;
		}
		top = sc->depth ? &sc->fr[sc->depth - 1] : NULL;
		if (top && (sc->s[sc->i] == ',' || sc->s[sc->i] == ':')) {
			top->want_key = top->obj && sc->s[sc->i] == ',';
			sc->i++;
			continue;
		}
		rc = scan_item(sc, &v);
		if (rc < 0)
			return -1;
		top = sc->depth ? &sc->fr[sc->depth - 1] : NULL;
		if (rc == 1 && top) {
			top->key = v;
			top->want_key = 0;
		} else if (top) {
			top->acc = top->obj ? top->acc + mix(top->key, v) :
					      mix(top->acc, v);
			top->n++;
		} else {
			skip_ws(sc);
			*out = v;
			return sc->i == sc->n ? 0 : -1;
		}
	}
}

uint64_t json_value_hash(const char *text, size_t len)
{
	struct scan sc = { .s = text, .n = len, .cap = 32 };
	uint64_t h;
	int rc;

	sc.fr = sc.small;
	rc = scan_value(&sc, &h);
	if (sc.fr != sc.small)
		free(sc.fr);
	return rc ? mix(K_BYTES, fnv(FNV_BASIS, text, len)) : h;
}
