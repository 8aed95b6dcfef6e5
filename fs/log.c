/*
 * Logging: one line per event, to stderr in the foreground and to syslog
 * once daemonised (stderr is /dev/null then).
 */
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

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
