/*
 * The cache directory: where logs go past -o cache_mem (see logstore.c).
 * Each mount makes its own, private to the mounting user (mkdtemp: mode
 * 0700, a name no one can take first), inside -o cache_dir= (default
 * /var/tmp: on disk, unlike /tmp and $XDG_RUNTIME_DIR on many systems,
 * which are RAM).  The logs in it are unlinked files, so a crash leaves at
 * most an empty directory; the mount holds a lock on it for its life, and
 * the next mount by the same user removes the ones nobody holds.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "triggerfs.h"

#define DEFAULT_PARENT "/var/tmp"
#define PREFIX "triggerfs-"

static char path[PATH_MAX];
static int dir_fd = -1;

/* Empty a directory of ours (it holds only files) and close fd. */
static void empty_dir(int fd)
{
	DIR *d = fdopendir(fd);
	struct dirent *e;

	if (!d) {
		close(fd);
		return;
	}
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
}

/* "triggerfs-UID-XXXXXX" of ours that no live mount holds locked. */
static void remove_if_stale(int pfd, const char *name, const char *prefix)
{
	struct stat st;

	if (strncmp(name, prefix, strlen(prefix)) != 0 ||
	    fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
	    !S_ISDIR(st.st_mode) || st.st_uid != tfs.uid)
		return;
	int fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			O_CLOEXEC);

	if (fd < 0)
		return;
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		close(fd);   /* a live mount's */
		return;
	}
	empty_dir(fd);
	unlinkat(pfd, name, AT_REMOVEDIR);
}

static void remove_stale(const char *parent, const char *prefix)
{
	int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = pfd >= 0 ? fdopendir(pfd) : NULL;
	struct dirent *e;

	if (!d) {
		if (pfd >= 0)
			close(pfd);
		return;
	}
	while ((e = readdir(d)))
		remove_if_stale(pfd, e->d_name, prefix);
	closedir(d);
}

/* Make, open and lock a fresh directory; -1 with errno.  A stale-directory
 * sweep by another mount may remove it between mkdtemp and flock: then it
 * has no links left, and another is made. */
static int make_locked(const char *parent)
{
	for (int tries = 0; tries < 10; tries++) {
		struct stat st;

		if (snprintf(path, sizeof(path), "%s/" PREFIX "%lu-XXXXXX", parent,
			     (unsigned long)tfs.uid) >= (int)sizeof(path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		if (!mkdtemp(path))
			return -1;
		int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			      O_CLOEXEC);

		if (fd < 0)
			return -1;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &st) == 0 &&
		    st.st_nlink > 0)
			return fd;
		close(fd);
	}
	errno = EAGAIN;
	return -1;
}

/* Before daemonising, so that errors reach the terminal; the lock is
 * shared with the daemon's process through the inherited descriptor. */
int cachedir_open(const char *parent)
{
	char prefix[64], real[PATH_MAX];

	if (!parent || !*parent)
		parent = DEFAULT_PARENT;
	/* Absolute: the daemon changes to / when it goes to the background. */
	if (!realpath(parent, real)) {
		fprintf(stderr, "triggerfs: bad cache_dir=%s: %s\n", parent, strerror(errno));
		return -1;
	}
	snprintf(prefix, sizeof(prefix), PREFIX "%lu-", (unsigned long)tfs.uid);
	remove_stale(real, prefix);
	dir_fd = make_locked(real);
	if (dir_fd < 0) {
		fprintf(stderr, "triggerfs: bad cache_dir=%s: cannot make a directory there: %s\n",
			parent, strerror(errno));
		path[0] = '\0';
	}
	return dir_fd;
}

const char *cachedir_path(void)
{
	return path;
}

/* At unmount.  The logs' files are unlinked already; a named one left by
 * a filesystem without O_TMPFILE goes with the directory. */
void cachedir_close(void)
{
	if (dir_fd < 0)
		return;
	empty_dir(dup(dir_fd));
	if (rmdir(path) != 0)
		tfs_log(LOG_WARNING, "cannot remove the cache directory %s: %s",
			path, strerror(errno));
	close(dir_fd);
	dir_fd = -1;
	path[0] = '\0';
}
