/*
 * The tree: inode numbers, the table of runs, each run's streams.  Nodes
 * live as long as the mount (names are cheap and the kernel may hold any
 * inode number it was given), so forget needs no bookkeeping.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "triggerfs.h"

#define RUN_BUCKETS 4096

static struct tfs_node **nodes;
static size_t nnodes, nodes_cap;
static struct tfs_run *buckets[RUN_BUCKETS];

struct tfs_node *tree_node(fuse_ino_t ino)
{
	if (ino == 0 || ino >= nnodes)
		return NULL;
	return nodes[ino];
}

fuse_ino_t tree_new_node(enum node_kind kind, struct tfs_run *run,
			 struct tfs_stream *stream)
{
	if (nnodes == 0)
		nnodes = 1;     /* inode 0 is never valid */
	if (nnodes >= nodes_cap) {
		nodes_cap = nodes_cap ? nodes_cap * 2 : 1024;
		nodes = xrealloc(nodes, nodes_cap * sizeof(*nodes));
	}
	struct tfs_node *n = xcalloc(1, sizeof(*n));

	n->ino = nnodes;
	n->kind = kind;
	n->run = run;
	n->stream = stream;
	nodes[nnodes++] = n;
	return n->ino;
}

static unsigned hash(const char *s)
{
	unsigned h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF): the API's ids are strings, and other bytes would reach it as
 * U+FFFD, naming something else. */
static bool utf8_valid(const unsigned char *p)
{
	while (*p) {
		unsigned c = *p++, n, min, cp;

		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, min = 0x80, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, min = 0x800, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, min = 0x10000, cp = c & 0x07;
		else
			return false;
		while (n--) {
			if ((*p & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (*p++ & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return true;
}

/* Names become URL path segments; the kernel already refuses "", "." and
 * "..".  '/' cannot occur. */
bool tree_valid_name(const char *name)
{
	size_t n = strlen(name);

	return n > 0 && n <= 255 && strcmp(name, ".") != 0 &&
	       strcmp(name, "..") != 0 &&
	       utf8_valid((const unsigned char *)name);
}

struct tfs_run *tree_run(const char *id, bool create)
{
	unsigned b = hash(id) % RUN_BUCKETS;

	for (struct tfs_run *r = buckets[b]; r; r = r->hnext)
		if (!strcmp(r->id, id))
			return r;
	if (!create)
		return NULL;

	struct tfs_run *r = xcalloc(1, sizeof(*r));

	r->id = xstrdup(id);
	list_init(&r->lookups);
	list_init(&r->waiting);
	r->ino_dir = tree_new_node(NODE_RUN, r, NULL);
	r->ino_input = tree_new_node(NODE_INPUT_DIR, r, NULL);
	r->ino_log = tree_new_node(NODE_LOG_DIR, r, NULL);
	r->ino_status = tree_new_node(NODE_STATUS, r, NULL);
	r->ino_output = tree_new_node(NODE_OUTPUT_DIR, r, NULL);
	r->hnext = buckets[b];
	buckets[b] = r;
	return r;
}

void tree_for_each_run(void (*fn)(struct tfs_run *run, void *arg), void *arg)
{
	for (size_t b = 0; b < RUN_BUCKETS; b++)
		for (struct tfs_run *r = buckets[b]; r; r = r->hnext)
			fn(r, arg);
}

/* A run's input stream or (output) its output stream of that name: two
 * namespaces in one list. */
struct tfs_stream *tree_stream_of(struct tfs_run *run, const char *name,
				  bool output, bool create)
{
	for (struct tfs_stream *s = run->streams; s; s = s->next)
		if (s->output == output && !strcmp(s->name, name))
			return s;
	if (!create)
		return NULL;

	struct tfs_stream *s = xcalloc(1, sizeof(*s));

	s->name = xstrdup(name);
	s->run = run;
	s->output = output;
	s->last_seq = -1;
	s->log = logstore_new();
	stream_init_queues(s);
	list_init(&s->pollers);
	list_init(&s->sink.writes);
	list_init(&s->idle);
	s->sink.kind = output ? NODE_OUTPUT : NODE_INPUT;
	s->sink.run = run;
	s->sink.name = s->name;
	if (output) {
		s->ino_output = tree_new_node(NODE_OUTPUT, run, s);
	} else {
		s->ino_input = tree_new_node(NODE_INPUT, run, s);
		s->ino_log = tree_new_node(NODE_LOG, run, s);
	}
	s->next = run->streams;
	run->streams = s;
	run->nstreams++;
	tfs.streams++;
	return s;
}

struct tfs_stream *tree_stream(struct tfs_run *run, const char *name,
			       bool create)
{
	return tree_stream_of(run, name, false, create);
}

/* The mode shows what the credential allows; the owner may write. */
static mode_t stream_mode(const struct tfs_node *node)
{
	bool w = node->kind == NODE_INPUT
		 ? trigger_cred_allows(tfs.cred, "write", "inputStreams",
				       node->run->id)
		 : node->kind == NODE_OUTPUT
		 /* Writing takes a secret key, as the SDK's writer does. */
		 ? trigger_cred_is_secret(tfs.cred) : false;

	return S_IFREG | 0444 | (w ? 0200 : 0);
}

void tree_attr(const struct tfs_node *node, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = node->ino;
	st->st_uid = tfs.uid;
	st->st_gid = tfs.gid;
	st->st_blksize = 4096;
	st->st_atime = st->st_mtime = st->st_ctime = tfs.started;
	switch (node->kind) {
	case NODE_INPUT:
	case NODE_LOG:
	case NODE_OUTPUT:
		st->st_mode = stream_mode(node);
		st->st_nlink = 1;
		st->st_size = stream_size(node->stream, node->kind);
		st->st_blocks = (st->st_size + 511) / 512;
		if (node->stream->mtime)
			st->st_mtime = st->st_ctime = node->stream->mtime;
		break;
	case NODE_WAITPOINT:
		waitpoint_attr(node->wp, st);
		break;
	case NODE_STATS:
	case NODE_STATUS:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		break;
	default:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		break;
	}
}

/* Called with tfs.lock held. */
void tree_reply_entry(fuse_req_t req, fuse_ino_t ino, double attr_timeout)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = ino;
	e.attr_timeout = attr_timeout;
	e.entry_timeout = 1.0;
	tree_attr(tree_node(ino), &e.attr);
	fuse_reply_entry(req, &e);
}

/* ---- directory listings ------------------------------------------------ */

/* Open listings are linked so that those whose releasedir never came (the
 * kernel sends it asynchronously; a SIGTERM can end the loop first) are
 * freed at shutdown. */
static pthread_mutex_t dirlists_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tfs_dirlist *dirlists;

struct tfs_dirlist *dirlist_new(void)
{
	struct tfs_dirlist *dl = xcalloc(1, sizeof(*dl));

	pthread_mutex_lock(&dirlists_lock);
	dl->next = dirlists;
	if (dirlists)
		dirlists->prev = dl;
	dirlists = dl;
	pthread_mutex_unlock(&dirlists_lock);
	return dl;
}

void dirlist_add(struct tfs_dirlist *dl, const char *name)
{
	if (dl->n == dl->cap) {
		dl->cap = dl->cap ? dl->cap * 2 : 16;
		dl->names = xrealloc(dl->names, dl->cap * sizeof(*dl->names));
	}
	dl->names[dl->n] = xstrdup(name);
	dl->n++;
}

bool dirlist_has(const struct tfs_dirlist *dl, const char *name)
{
	for (size_t i = 0; i < dl->n; i++)
		if (!strcmp(dl->names[i], name))
			return true;
	return false;
}

void dirlist_free(struct tfs_dirlist *dl)
{
	pthread_mutex_lock(&dirlists_lock);
	if (dl->prev)
		dl->prev->next = dl->next;
	else
		dirlists = dl->next;
	if (dl->next)
		dl->next->prev = dl->prev;
	pthread_mutex_unlock(&dirlists_lock);
	for (size_t i = 0; i < dl->n; i++)
		free(dl->names[i]);
	free(dl->names);
	free(dl);
}

void dirlist_free_all(void)
{
	while (dirlists)
		dirlist_free(dirlists);
}

/* Entries are ".", "..", then the names; off is the index to go on from. */
void dirlist_reply(fuse_req_t req, const struct tfs_dirlist *dl, size_t size,
		   off_t off)
{
	char *buf = malloc(size);
	size_t pos = 0;
	/* The kernel ignores d_ino here, but readdir(3) skips entries whose
	 * d_ino is 0. */
	struct stat st = { .st_mode = S_IFDIR, .st_ino = 0xffffffff };

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (size_t i = off; i < dl->n + 2; i++) {
		const char *name = i == 0 ? "." : i == 1 ? ".." : dl->names[i - 2];
		size_t n = fuse_add_direntry(req, buf + pos, size - pos, name, &st,
					     i + 1);

		if (n > size - pos)
			break;
		pos += n;
	}
	fuse_reply_buf(req, buf, pos);
	free(buf);
}
