/*
 * The watcher thread: answers parked requests whose deadline has passed,
 * polls the status of runs someone waits on, and notices a lazy unmount
 * (`fusermount3 -u -z`), which the kernel does not report while readers
 * still hold files open: then it stops the daemon so they get an error
 * instead of waiting forever.
 */
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "triggerfs.h"

#define TICK_MS 50
#define MOUNT_CHECK_EVERY 20   /* ticks: once a second */

static pthread_t thread;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool running;
static char mount_dev[40];   /* " major:minor ", "" when unknown */

/* Our mount's "major:minor" as /proc/self/mountinfo shows it, found by
 * mount point and type (the last one: mounts stack).  Never stat() the
 * mount point: asking our own mount would wait on ourselves (and deadlocks
 * under valgrind, which holds its lock across such a call). */
static bool find_mount(const char *real, char *dev, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], esc[PATH_MAX * 4], point[sizeof(esc)], num[32];
	size_t n = 0;
	bool found = false;

	if (!f)
		return false;
	/* mountinfo escapes space, tab, newline and backslash as \ooo. */
	for (const char *p = real; *p && n + 5 < sizeof(esc); p++)
		n += strchr(" \t\n\\", *p) && *p
		     ? (size_t)snprintf(esc + n, 5, "\\%03o", (unsigned char)*p)
		     : (size_t)snprintf(esc + n, 2, "%c", *p);
	while (fgets(line, sizeof(line), f)) {
		const char *sep = strstr(line, " - ");

		if (sep && !strncmp(sep + 3, "fuse.triggerfs ", 15) &&
		    sscanf(line, "%*s %*s %31s %*s %4095s", num, point) == 2 &&
		    !strcmp(point, esc)) {
			snprintf(dev, len, " %s ", num);
			found = true;
		}
	}
	fclose(f);
	return found;
}

/* Is a filesystem with our device number still mounted somewhere? */
static bool still_mounted(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	bool found = false;

	if (!f)
		return true;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, mount_dev) != NULL;
	fclose(f);
	return found;
}

static void tick(unsigned n)
{
	pthread_mutex_lock(&tfs.lock);
	stream_expire(tfs_now());
	parked_expire(tfs_now());
	runs_poll_waited();
	waitpoints_tick(tfs_now());
	pthread_mutex_unlock(&tfs.lock);

	if (n % MOUNT_CHECK_EVERY == 0 && *mount_dev && !still_mounted()) {
		tfs_log(LOG_INFO, "%s was unmounted; stopping", tfs.mountpoint);
		*mount_dev = '\0';
		tfs.unmounted = true;   /* nothing left to unmount */
		kill(getpid(), SIGTERM);
	}
}

static void *watch_main(void *arg)
{
	unsigned n = 0;

	(void)arg;
	if (!find_mount(tfs.mount_real, mount_dev, sizeof(mount_dev)))
		tfs_log(LOG_WARNING, "cannot find %s in /proc/self/mountinfo: a lazy unmount will not be noticed",
			tfs.mountpoint);
	pthread_mutex_lock(&tfs.lock);
	while (running) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&cond, &tfs.lock, &ts);
		if (!running)
			break;
		pthread_mutex_unlock(&tfs.lock);
		tick(++n);
		pthread_mutex_lock(&tfs.lock);
	}
	pthread_mutex_unlock(&tfs.lock);
	return NULL;
}

int watch_start(void)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&cond, &attr);
	pthread_condattr_destroy(&attr);
	running = true;
	/* Signals are for the FUSE loop's thread: a SIGTERM taken here would
	 * set the session's exit flag without waking the loop. */
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&thread, NULL, watch_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

void watch_stop(void)
{
	pthread_mutex_lock(&tfs.lock);
	running = false;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&tfs.lock);
	pthread_join(thread, NULL);
}
