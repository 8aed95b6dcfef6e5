/* Credential internals shared inside libtriggerclient (not public API). */
#ifndef TRIGGER_CRED_H
#define TRIGGER_CRED_H

#include "trigger.h"

/* A deep copy (the client keeps its own); NULL when out of memory. */
trigger_cred *trigger_cred_dup(const trigger_cred *cred);

/* The credential as sent in "Authorization: Bearer <text>": the secret key
 * or the JWT.  Never log it. */
const char *trigger_cred_text(const trigger_cred *cred);

#endif
