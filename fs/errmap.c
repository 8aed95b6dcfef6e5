/*
 * The one table from API outcomes to the errno a shell sees.  Nothing else
 * in triggerfs invents errno values for API failures.
 */
#include <errno.h>

#include "triggerfs.h"

static const int errnos[TRIGGER_E_LAST] = {
	[TRIGGER_OK] = 0,
	[TRIGGER_E_INVALID] = EINVAL,
	[TRIGGER_E_NOT_FOUND] = ENOENT,
	[TRIGGER_E_RUN_FINISHED] = EROFS,  /* not EPIPE: tee exits 0 on it */
	[TRIGGER_E_UNAUTHORIZED] = EACCES,
	[TRIGGER_E_FORBIDDEN] = EACCES,
	[TRIGGER_E_EXPIRED] = EACCES,
	[TRIGGER_E_TOO_LARGE] = EFBIG,
	[TRIGGER_E_CONFLICT] = EIO,
	[TRIGGER_E_SERVER] = EIO,
	[TRIGGER_E_NETWORK] = EIO,
	[TRIGGER_E_TIMEOUT] = ETIMEDOUT,
	[TRIGGER_E_PROTOCOL] = EPROTO,
	[TRIGGER_E_NOMEM] = ENOMEM,
	[TRIGGER_E_CANCELLED] = ENOTCONN,
	[TRIGGER_E_TLS] = EIO,
};

int tfs_errno(trigger_code code)
{
	if ((unsigned)code >= TRIGGER_E_LAST)
		return EIO;
	return errnos[code];
}
