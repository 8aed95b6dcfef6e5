/*
 * The FUSE low-level operations: find the node, check what the operation
 * may do there, and hand the work to the module that owns it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "triggerfs.h"

#define DIR_TIMEOUT 1.0

static struct tfs_handle *handle_of(struct fuse_file_info *fi)
{
	return (struct tfs_handle *)(uintptr_t)fi->fh;
}

static void reply_entry(fuse_req_t req, fuse_ino_t ino, double timeout)
{
	pthread_mutex_lock(&tfs.lock);
	tree_reply_entry(req, ino, timeout);
	pthread_mutex_unlock(&tfs.lock);
}

static void tfs_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* `echo >` must arrive as an open flag we can ignore, not a setattr. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* Pieces of one large read must come one after the other: sent in
	 * parallel, a piece past the end of the data would park although the
	 * read() already has data to return. */
	conn->want &= ~FUSE_CAP_ASYNC_DIO;
}

static void tfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	pthread_mutex_lock(&tfs.lock);
	struct tfs_node *p = tree_node(parent);
	fuse_ino_t ino = 0;
	double timeout = DIR_TIMEOUT;

	if (!p || strlen(name) > NAME_MAX) {
		pthread_mutex_unlock(&tfs.lock);
		/* FUSE lets names up to 1024 bytes through; ours are paths of
		 * URLs and file names, so the usual limit holds. */
		fuse_reply_err(req, p ? ENAMETOOLONG : ENOENT);
		return;
	}
	switch (p->kind) {
	case NODE_ROOT:
		if (!strcmp(name, "runs"))
			ino = TFS_RUNS_INO;
		else if (!strcmp(name, "waitpoints"))
			ino = TFS_WAITPOINTS_INO;
		else if (!strcmp(name, TFS_STATS_NAME))
			ino = TFS_STATS_INO;
		break;
	case NODE_RUNS:
	case NODE_WAITPOINTS:
		pthread_mutex_unlock(&tfs.lock);
		if (!tree_valid_name(name))
			fuse_reply_err(req, EINVAL);
		else if (p->kind == NODE_RUNS)
			runs_lookup(req, name);
		else
			waitpoints_lookup(req, name);
		return;
	case NODE_RUN:
		ino = !strcmp(name, "input") ? p->run->ino_input
		    : !strcmp(name, "log") ? p->run->ino_log
		    : !strcmp(name, "output") ? p->run->ino_output
		    : !strcmp(name, "status") ? p->run->ino_status : 0;
		timeout = 0;  /* status: a size of 0 that must not be kept */
		break;
	case NODE_INPUT_DIR:
	case NODE_LOG_DIR:
	case NODE_OUTPUT_DIR:
		if (!tree_valid_name(name)) {
			pthread_mutex_unlock(&tfs.lock);
			fuse_reply_err(req, EINVAL);
			return;
		}
		struct tfs_stream *s = tree_stream_of(p->run, name,
						      p->kind == NODE_OUTPUT_DIR,
						      true);

		ino = p->kind == NODE_INPUT_DIR ? s->ino_input
		    : p->kind == NODE_LOG_DIR ? s->ino_log : s->ino_output;
		struct tfs_node *n = tree_node(ino);

		pthread_mutex_unlock(&tfs.lock);
		stream_attr(req, n, true);   /* st_size is live */
		return;
	default:
		pthread_mutex_unlock(&tfs.lock);
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	pthread_mutex_unlock(&tfs.lock);
	if (ino)
		reply_entry(req, ino, timeout);
	else
		fuse_reply_err(req, ENOENT);
}

/* The attributes known now, without asking the API. */
static void reply_attr_known(fuse_req_t req, fuse_ino_t ino)
{
	struct stat st;

	pthread_mutex_lock(&tfs.lock);
	struct tfs_node *n = tree_node(ino);

	if (n)
		tree_attr(n, &st);
	pthread_mutex_unlock(&tfs.lock);
	if (!n)
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_attr(req, &st, S_ISDIR(st.st_mode) ? DIR_TIMEOUT : 0);
}

static void tfs_getattr(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	(void)fi;
	pthread_mutex_lock(&tfs.lock);
	struct tfs_node *n = tree_node(ino);
	bool live = n && (n->kind == NODE_INPUT || n->kind == NODE_LOG);

	pthread_mutex_unlock(&tfs.lock);
	if (live)
		stream_attr(req, n, false);     /* st_size is live */
	else
		reply_attr_known(req, ino);
}

/* The log is append-only: truncate is accepted and ignored (so `>` works),
 * and so are time stamps (so `touch` works); modes and owners are fixed.
 * The answer does not wait for a stream's size: `echo > input/S` sets the
 * times on open, and a send must not pay a read; a stat after asks getattr
 * (streams' attributes are never cached). */
static void tfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int to_set, struct fuse_file_info *fi)
{
	(void)attr;
	(void)fi;
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		fuse_reply_err(req, EPERM);
	else
		reply_attr_known(req, ino);
}

static void tfs_opendir(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct tfs_dirlist *dl;

	pthread_mutex_lock(&tfs.lock);
	struct tfs_node *n = tree_node(ino);

	if (n && (n->kind == NODE_RUNS || n->kind == NODE_WAITPOINTS ||
		  n->kind == NODE_OUTPUT_DIR)) {
		pthread_mutex_unlock(&tfs.lock);
		if (n->kind == NODE_RUNS)
			runs_opendir(req, fi);
		else if (n->kind == NODE_WAITPOINTS)
			waitpoints_opendir(req, fi);
		else
			output_opendir(req, n->run, fi);
		return;
	}
	dl = dirlist_new();
	if (n && n->kind == NODE_ROOT) {
		dirlist_add(dl, "runs");
		dirlist_add(dl, "waitpoints");
	} else if (n && n->kind == NODE_RUN) {
		dirlist_add(dl, "input");
		dirlist_add(dl, "log");
		dirlist_add(dl, "output");
		dirlist_add(dl, "status");
	} else if (n && (n->kind == NODE_INPUT_DIR || n->kind == NODE_LOG_DIR)) {
		for (struct tfs_stream *s = n->run->streams; s; s = s->next)
			if (s->listed && !s->output)
				dirlist_add(dl, s->name);
	}
	pthread_mutex_unlock(&tfs.lock);
	fi->fh = (uintptr_t)dl;
	fuse_reply_open(req, fi);
}

static void tfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	dirlist_reply(req, (struct tfs_dirlist *)(uintptr_t)fi->fh, size, off);
}

static void tfs_releasedir(fuse_req_t req, fuse_ino_t ino,
			   struct fuse_file_info *fi)
{
	(void)ino;
	dirlist_free((struct tfs_dirlist *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

char *tfs_stats_json(size_t *len)
{
	char *text = NULL;
	struct logstore_stats ls;

	pthread_mutex_lock(&tfs.lock);
	logstore_stats(&ls);
	/* The parent of the cache directory is the user's: any bytes. */
	json_t *dir = json_string(cachedir_path());
	char *dir_json = json_dumps(dir, JSON_ENCODE_ANY);

	*len = (size_t)asprintf(&text,
		"{\"parked_reads\":%zu,\"parked_opens\":%zu,\"open_handles\":%zu,"
		"\"streams\":%zu,\"subscriptions\":%zu,\"waited_runs\":%d,"
		"\"cache_dir\":%s,\"cache_mem\":%zu,\"mem_bytes\":%zu,"
		"\"disk_bytes\":%llu,\"disk_files\":%zu}\n",
		tfs.parked[WAIT_READ], tfs.parked[WAIT_OPEN], tfs.open_handles,
		tfs.streams, tfs.subscriptions, !list_empty(&tfs.waited_runs),
		dir_json ? dir_json : "null", ls.budget, ls.mem_bytes,
		(unsigned long long)ls.disk_bytes, ls.files);
	free(dir_json);
	json_decref(dir);
	pthread_mutex_unlock(&tfs.lock);
	return text;
}

static void open_stats(fuse_req_t req, struct fuse_file_info *fi)
{
	size_t len;
	char *text = tfs_stats_json(&len);

	pthread_mutex_lock(&tfs.lock);
	struct tfs_handle *h = stream_new_handle(NODE_STATS, NULL);

	h->text = text;
	h->text_len = len;
	pthread_mutex_unlock(&tfs.lock);
	fi->fh = (uintptr_t)h;
	fi->direct_io = 1;
	fuse_reply_open(req, fi);
}

/* Refuse a write the credential cannot make, before any request. */
static int write_allowed(const struct tfs_run *run)
{
	int64_t exp = trigger_cred_exp(tfs.cred);

	if (exp && exp <= (int64_t)time(NULL)) {
		tfs_log_expiry(run->id);
		return tfs_errno(TRIGGER_E_EXPIRED);
	}
	if (!trigger_cred_allows(tfs.cred, "write", "inputStreams", run->id)) {
		tfs_log(LOG_ERR, "run %s: the access token has no scope to send (needs write:inputStreams:%s)",
			run->id, run->id);
		return tfs_errno(TRIGGER_E_FORBIDDEN);
	}
	return 0;
}

static void tfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
	int err = 0;

	pthread_mutex_lock(&tfs.lock);
	struct tfs_node *n = tree_node(ino);

	if (!n)
		err = ENOENT;
	else if (tfs_is_text(n->kind) || n->kind == NODE_LOG)
		err = writing ? EACCES : 0;
	else if (n->kind == NODE_OUTPUT)
		err = writing ? output_write_allowed(n->run, n->stream->name) : 0;
	else if (n->kind == NODE_WAITPOINT)
		err = writing ? waitpoint_write_allowed(n->wp) : 0;
	else if (n->kind != NODE_INPUT)
		err = EISDIR;
	else if (writing)
		err = write_allowed(n->run);
	pthread_mutex_unlock(&tfs.lock);
	if (err)
		fuse_reply_err(req, err);
	else if (n->kind == NODE_STATS)
		open_stats(req, fi);
	else if (n->kind == NODE_STATUS)
		status_open(req, n->run, fi);
	else if (n->kind == NODE_WAITPOINT)
		waitpoint_open(req, n->wp, fi);
	else
		stream_open(req, n->stream, n->kind, fi);
}

static void tfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct tfs_handle *h = handle_of(fi);

	(void)ino;
	if (tfs_is_text(h->kind))
		text_read(req, h, size, off);
	else if (h->kind == NODE_WAITPOINT)
		waitpoint_read(req, h, size, off, fi->flags);
	else
		stream_read(req, h, size, off, fi->flags);
}

static void tfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		      size_t size, off_t off, struct fuse_file_info *fi)
{
	struct tfs_handle *h = handle_of(fi);

	(void)ino;
	(void)off;   /* the log is append-only: every write is a send */
	if (!h->can_write)
		fuse_reply_err(req, EBADF);
	else
		writer_write(req, h, buf, size);
}

static void tfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tfs_handle *h = handle_of(fi);

	(void)ino;
	if (h->can_write)
		writer_flush(req, h);
	else
		fuse_reply_err(req, 0);
}

static void tfs_release(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct tfs_handle *h = handle_of(fi);

	(void)ino;
	pthread_mutex_lock(&tfs.lock);
	if (h->sink)
		writer_release(h);
	if (h->stream)
		stream_release(h);
	else if (h->wp)
		waitpoint_release(h);
	stream_free_handle(h);
	pthread_mutex_unlock(&tfs.lock);
	fuse_reply_err(req, 0);
}

static void tfs_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct fuse_pollhandle *ph)
{
	struct tfs_handle *h = handle_of(fi);

	(void)ino;
	if (tfs_is_text(h->kind)) {
		if (ph)
			fuse_pollhandle_destroy(ph);
		fuse_reply_poll(req, POLLIN);
		return;
	}
	if (h->kind == NODE_WAITPOINT)
		waitpoint_poll(req, h, ph);
	else
		stream_poll(req, h, ph);
}

/* The tree is the API's: runs and streams exist as soon as they are
 * named, and nothing is made, removed or renamed here. */
static void refuse_edit(fuse_req_t req, const char *what, const char *name)
{
	tfs_log(LOG_WARNING, "%s %s refused: the tree is the API's (streams exist as soon as they are named; nothing is created, removed or renamed)",
		what, name);
	fuse_reply_err(req, EPERM);
}

static void tfs_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		       mode_t mode, struct fuse_file_info *fi)
{
	(void)parent;
	(void)mode;
	(void)fi;
	refuse_edit(req, "create", name);
}

static void tfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, dev_t rdev)
{
	(void)parent;
	(void)mode;
	(void)rdev;
	refuse_edit(req, "create", name);
}

static void tfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode)
{
	(void)parent;
	(void)mode;
	refuse_edit(req, "mkdir", name);
}

static void tfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent;
	refuse_edit(req, "remove", name);
}

static void tfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		       fuse_ino_t newparent, const char *newname,
		       unsigned int flags)
{
	(void)parent;
	(void)newparent;
	(void)newname;
	(void)flags;
	refuse_edit(req, "rename", name);
}

static void tfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
			const char *name)
{
	(void)link;
	(void)parent;
	refuse_edit(req, "symlink", name);
}

static void tfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		     const char *newname)
{
	(void)ino;
	(void)newparent;
	refuse_edit(req, "link", newname);
}

const struct fuse_lowlevel_ops tfs_ops = {
	.init = tfs_init,
	.lookup = tfs_lookup,
	.getattr = tfs_getattr,
	.setattr = tfs_setattr,
	.opendir = tfs_opendir,
	.readdir = tfs_readdir,
	.releasedir = tfs_releasedir,
	.open = tfs_open,
	.read = tfs_read,
	.write = tfs_write,
	.flush = tfs_flush,
	.release = tfs_release,
	.poll = tfs_poll,
	.create = tfs_create,
	.mknod = tfs_mknod,
	.mkdir = tfs_mkdir,
	.unlink = tfs_unlink,
	.rmdir = tfs_unlink,
	.rename = tfs_rename,
	.symlink = tfs_symlink,
	.link = tfs_link,
};
