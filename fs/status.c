/*
 * runs/<runId>/status: the run's status word and a newline, asked of the
 * API at every open (the open waits for the answer, parked, costing no
 * thread) and read from that snapshot; a finished run's status never
 * changes, so it is answered from memory.  Also the text files' reads
 * (this and .triggerfs-stats: a snapshot taken at open).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "triggerfs.h"

struct status_req {
	fuse_req_t req;
	struct fuse_file_info fi;
	struct tfs_run *run;
};

bool tfs_is_text(enum node_kind kind)
{
	return kind == NODE_STATS || kind == NODE_STATUS;
}

void text_read(fuse_req_t req, struct tfs_handle *h, size_t size, off_t off)
{
	/* Under the lock: a release on another thread frees the text. */
	pthread_mutex_lock(&tfs.lock);
	size_t n = (size_t)off < h->text_len ? h->text_len - off : 0;

	fuse_reply_buf(req, h->text + off, n < size ? n : size);
	pthread_mutex_unlock(&tfs.lock);
}

/* Called with tfs.lock held. */
static void reply_text(fuse_req_t req, struct fuse_file_info *fi,
		       const char *status)
{
	struct tfs_handle *h = stream_new_handle(NODE_STATUS, NULL);

	h->text_len = (size_t)asprintf(&h->text, "%s\n", status);
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;   /* the size is not known before the open */
	fuse_reply_open(req, fi);
}

static void status_done(void *arg, const struct trigger_result *res)
{
	struct status_req *sr = arg;
	struct tfs_run *run = sr->run;
	const char *st = json_string_value(json_object_get(res->body, "status"));

	pthread_mutex_lock(&tfs.lock);
	if (res->code == TRIGGER_OK && st) {
		run->state = RUN_EXISTS;
		runs_learned(run, res->body);
		reply_text(sr->req, &sr->fi, st);
	} else {
		trigger_code code = res->code ? res->code : TRIGGER_E_PROTOCOL;

		if (code == TRIGGER_E_NOT_FOUND)
			run->state = RUN_MISSING;
		tfs_log(LOG_ERR, "run %s: cannot read its status: %s (HTTP %ld: %s)",
			run->id, trigger_strerror(code), res->status,
			res->error[0] ? res->error : "no status in the answer");
		fuse_reply_err(sr->req, tfs_errno(code));
	}
	pthread_mutex_unlock(&tfs.lock);
	free(sr);
}

void status_open(fuse_req_t req, struct tfs_run *run, struct fuse_file_info *fi)
{
	struct status_req *sr;
	int rc;

	pthread_mutex_lock(&tfs.lock);
	if (run->final_status) {
		reply_text(req, fi, run->final_status);
		pthread_mutex_unlock(&tfs.lock);
		return;
	}
	pthread_mutex_unlock(&tfs.lock);
	sr = xcalloc(1, sizeof(*sr));
	sr->req = req;
	sr->fi = *fi;
	sr->run = run;
	rc = trigger_run_get(tfs.client, run->id, status_done, sr);
	if (rc) {
		tfs_log(LOG_ERR, "run %s: cannot read its status: %s", run->id,
			trigger_strerror(rc));
		fuse_reply_err(req, tfs_errno(rc));
		free(sr);
	}
}
