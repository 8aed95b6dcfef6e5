/*
 * mint-token SUB IAT EXP [SCOPE...]: print an HS256 public token minted by
 * libtriggerclient.  The signing key is read from stdin (one line), never
 * from argv, which any local user can read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trigger.h"

int main(int argc, char **argv)
{
	char key[4096];
	char *tok;

	if (argc < 4) {
		fprintf(stderr, "usage: %s SUB IAT EXP [SCOPE...] < keyfile\n", argv[0]);
		return 2;
	}
	if (!fgets(key, sizeof(key), stdin)) {
		fprintf(stderr, "%s: no key on stdin\n", argv[0]);
		return 2;
	}
	key[strcspn(key, "\r\n")] = '\0';
	tok = trigger_jwt_mint(key, argv[1], (const char *const *)argv + 4,
			       (size_t)(argc - 4), strtoll(argv[2], NULL, 10),
			       strtoll(argv[3], NULL, 10));
	memset(key, 0, sizeof(key));
	if (!tok) {
		fprintf(stderr, "%s: minting failed\n", argv[0]);
		return 1;
	}
	puts(tok);
	free(tok);
	return 0;
}
