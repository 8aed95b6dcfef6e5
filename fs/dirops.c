/*
 * Lookups in one directory answered in parallel.  A lookup in runs/ or
 * waitpoints/ waits for the API (an unknown run is asked again for seconds,
 * since the server may have read a lagging replica), and the kernel holds
 * the directory's lock for the whole lookup unless the init reply carries
 * FUSE_PARALLEL_DIROPS.  libfuse before 3.17.1 wants that capability by
 * default but leaves it out of the reply, so an `ls` of ten mistyped run
 * ids took ten times five seconds, one after the other.  Its custom I/O
 * hook lets the flag be added: reading notes which request is the INIT,
 * writing adds the flag to its answer.  Where libfuse sends the flag
 * itself this changes nothing.
 */
#include <linux/fuse.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <unistd.h>

#include "triggerfs.h"

/* Both are set before the INIT is answered (the kernel sends nothing else
 * until then); a notification may be written meanwhile, hence the atomic. */
static _Atomic uint64_t init_unique;
static bool parallel;

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);
	const struct fuse_in_header *in = buf;

	(void)userdata;
	if (n >= (ssize_t)sizeof(*in) && in->opcode == FUSE_INIT)
		init_unique = in->unique;
	return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	const struct fuse_out_header *out = iov[0].iov_base;

	(void)userdata;
	if (init_unique && iov[0].iov_len >= sizeof(*out) &&
	    out->unique == init_unique) {
		init_unique = 0;
		if (parallel && !out->error && count > 1 &&
		    iov[1].iov_len >= offsetof(struct fuse_init_out, max_background))
			((struct fuse_init_out *)iov[1].iov_base)->flags |=
				FUSE_PARALLEL_DIROPS;
	}
	return writev(fd, iov, count);
}

/* After fuse_session_mount: the session's I/O goes through the hooks. */
int dirops_hook(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {
		.read = io_read, .writev = io_writev,
	};

	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

/* From the init callback: ask for parallel lookups if the kernel has them. */
void dirops_want(struct fuse_conn_info *conn)
{
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) {
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
		parallel = true;
	}
}
