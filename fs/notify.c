/*
 * Telling a service manager how the mount is doing (sd_notify(3)).
 * systemd starts what is ordered after a Type=notify unit only once it
 * gets READY=1, so READY=1 goes out when the mount answers requests, not
 * when the process starts.  Without $NOTIFY_SOCKET these do nothing.
 */
#include <string.h>
#include <syslog.h>
#include <systemd/sd-daemon.h>

#include "triggerfs.h"

void notify_ready(const char *url, const char *mountpoint)
{
	int r = sd_notifyf(0, "READY=1\nSTATUS=Mounted %s on %s", url,
			   mountpoint);

	if (r < 0)
		tfs_log(LOG_WARNING, "cannot tell the service manager the mount is ready: %s",
			strerror(-r));
}

/* Sent as soon as the session loop ends (SIGTERM, SIGINT, or an unmount),
 * before the slower teardown, so that the manager knows the stop is ours. */
void notify_stopping(void)
{
	sd_notify(0, "STOPPING=1\nSTATUS=Unmounting");
}
