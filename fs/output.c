/*
 * runs/<runId>/output/: the run's realtime output streams (streams v2).
 * A file is a stream (struct tfs_stream with `output` set): reading is the
 * observer's view served by stream.c from one subscription per stream
 * (from the start for every open, blocking at the end, end of file once
 * the run has finished); writing appends through writer.c, each JSON value
 * one record, as the SDK's streams.writer stores it (client/output.c).
 * This file lists the directory and says who may write.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "triggerfs.h"

struct output_list {
	fuse_req_t req;
	struct fuse_file_info fi;
	struct tfs_run *run;
};

static void add_used(struct tfs_dirlist *dl, struct tfs_run *run)
{
	for (struct tfs_stream *s = run->streams; s; s = s->next)
		if (s->output && s->listed && !dirlist_has(dl, s->name))
			dirlist_add(dl, s->name);
}

static void list_done(void *arg, const struct trigger_result *res)
{
	struct output_list *l = arg;
	struct tfs_dirlist *dl = dirlist_new();
	json_t *names = json_object_get(res->body, "realtimeStreams"), *v;
	size_t i;

	if (res->code != TRIGGER_OK)
		tfs_log(LOG_WARNING, "run %s: cannot list its output streams: %s (HTTP %ld: %s); showing those used here",
			l->run->id, trigger_strerror(res->code), res->status,
			res->error);
	json_array_foreach(names, i, v) {
		const char *name = json_string_value(v);

		if (name && tree_valid_name(name) && !dirlist_has(dl, name))
			dirlist_add(dl, name);
	}
	pthread_mutex_lock(&tfs.lock);
	add_used(dl, l->run);
	pthread_mutex_unlock(&tfs.lock);
	l->fi.fh = (uintptr_t)dl;
	fuse_reply_open(l->req, &l->fi);
	free(l);
}

/* The run object names its output streams (realtimeStreams); the streams
 * used through this mount are added. */
void output_opendir(fuse_req_t req, struct tfs_run *run,
		    struct fuse_file_info *fi)
{
	struct output_list *l = xcalloc(1, sizeof(*l));
	int rc;

	l->req = req;
	l->fi = *fi;
	l->run = run;
	rc = trigger_run_get(tfs.client, run->id, list_done, l);
	if (rc) {
		struct trigger_result res = { .code = rc };

		snprintf(res.error, sizeof(res.error), "%s", trigger_strerror(rc));
		list_done(l, &res);
	}
}

/* Called with tfs.lock held, at an open for writing. */
int output_write_allowed(const struct tfs_run *run, const char *name)
{
	if (!trigger_cred_is_secret(tfs.cred)) {
		tfs_log(LOG_ERR, "run %s output stream %s: writing an output stream takes a secret key (the API gives its S2 credentials to nothing else)",
			run->id, name);
		return tfs_errno(TRIGGER_E_FORBIDDEN);
	}
	if (run->finished) {
		tfs_log(LOG_ERR, "run %s output stream %s: write refused: the run has finished",
			run->id, name);
		return tfs_errno(TRIGGER_E_RUN_FINISHED);
	}
	return 0;
}
