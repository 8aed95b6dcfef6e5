/*
 * The watcher thread: answers parked requests whose deadline has passed,
 * polls the status of runs someone waits on, and notices a lazy unmount
 * (`fusermount3 -u -z`), which the kernel does not report while readers
 * still hold files open: then it stops the daemon so they get an error
 * instead of waiting forever.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "triggerfs.h"

#define TICK_MS 50
#define MOUNT_CHECK_EVERY 20   /* ticks: once a second */

static pthread_t thread;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool running;
static dev_t mount_dev;

/* Is a filesystem with our device number still mounted somewhere? */
static bool still_mounted(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], want[32];
	bool found = false;

	if (!f)
		return true;
	snprintf(want, sizeof(want), " %u:%u ", major(mount_dev),
		 minor(mount_dev));
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, want) != NULL;
	fclose(f);
	return found;
}

static void tick(unsigned n)
{
	pthread_mutex_lock(&tfs.lock);
	stream_expire(tfs_now());
	runs_poll_waited();
	pthread_mutex_unlock(&tfs.lock);

	if (n % MOUNT_CHECK_EVERY == 0 && mount_dev && !still_mounted()) {
		tfs_log(LOG_INFO, "%s was unmounted; stopping", tfs.mountpoint);
		mount_dev = 0;
		kill(getpid(), SIGTERM);
	}
}

static void *watch_main(void *arg)
{
	struct stat st;
	unsigned n = 0;

	(void)arg;
	/* The mount answers stat now that the session loop runs. */
	if (stat(tfs.mountpoint, &st) == 0)
		mount_dev = st.st_dev;
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
	return pthread_create(&thread, NULL, watch_main, NULL);
}

void watch_stop(void)
{
	pthread_mutex_lock(&tfs.lock);
	running = false;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&tfs.lock);
	pthread_join(thread, NULL);
}
