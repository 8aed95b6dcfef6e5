/*
 * Logging: one line per event, to stderr in the foreground and to syslog
 * once daemonised (stderr is /dev/null then).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

#include "triggerfs.h"

static bool to_syslog;
static bool debug_on;

void tfs_log_init(bool foreground, bool debug)
{
	debug_on = debug;
	to_syslog = !foreground;
	if (to_syslog)
		openlog("triggerfs", LOG_PID, LOG_DAEMON);
}

static void vlog(int priority, const char *fmt, va_list ap)
{
	if (to_syslog) {
		vsyslog(priority, fmt, ap);
		return;
	}
	/* One fprintf per line: lines from different threads never mix. */
	char line[1024];
	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(stderr, "triggerfs: %s\n", line);
}

void tfs_log(int priority, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(priority, fmt, ap);
	va_end(ap);
}

void tfs_debug(const char *fmt, ...)
{
	va_list ap;

	if (!debug_on)
		return;
	va_start(ap, fmt);
	vlog(LOG_DEBUG, fmt, ap);
	va_end(ap);
}

/* A Unix time as a date, in UTC. */
const char *tfs_date(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) ||
	    !strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, len, "%lld", (long long)t);
	return buf;
}

void tfs_log_expiry(const char *run_id)
{
	char when[64];

	tfs_log(LOG_ERR, "run %s: the access token expired at %s; get a new one",
		run_id, tfs_date(trigger_cred_exp(tfs.cred), when, sizeof(when)));
}
