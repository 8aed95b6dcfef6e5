/*
 * triggerfs: the daemon's shared state.  One mutex (tfs.lock) guards the
 * tree, the streams, their logs and every parked request: the work under it
 * is short (memcpy, list splices, fuse_reply_*), and one lock keeps the
 * interplay of network callbacks, interrupts and deadlines easy to follow.
 */
#ifndef TRIGGERFS_H
#define TRIGGERFS_H

#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 12)

#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "jsonline.h"
#include "logstore.h"
#include "trigger.h"

/* ---- allocation --------------------------------------------------------
 * Out of memory, the daemon cannot keep its promises to parked requests or
 * the log; it stops, as sshfs does, rather than answer wrongly. */

static inline void *xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (!p)
		abort();
	return p;
}

static inline void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p)
		abort();
	return p;
}

static inline void *xrealloc(void *old, size_t size)
{
	void *p = realloc(old, size);

	if (!p)
		abort();
	return p;
}

static inline char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		abort();
	return p;
}

/* ---- intrusive doubly linked lists ------------------------------------- */

struct list {
	struct list *prev, *next;
};

#define LIST_INIT(l) { &(l), &(l) }
#define list_entry(p, type, member) \
	((type *)((char *)(p) - offsetof(type, member)))

static inline void list_init(struct list *l) { l->prev = l->next = l; }
static inline bool list_empty(const struct list *l) { return l->next == l; }

static inline void list_add_tail(struct list *l, struct list *n)
{
	n->prev = l->prev;
	n->next = l;
	l->prev->next = n;
	l->prev = n;
}

static inline void list_del(struct list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

/* ---- the tree --------------------------------------------------------- */

enum node_kind {
	NODE_ROOT = 1,
	NODE_RUNS,
	NODE_STATS,      /* .triggerfs-stats: hidden, for tests and benchmarks */
	NODE_RUN,
	NODE_INPUT_DIR,
	NODE_LOG_DIR,
	NODE_INPUT,
	NODE_LOG,
	NODE_STATUS,     /* runs/R/status: status.c */
	NODE_OUTPUT_DIR, /* runs/R/output/ and its files: output.c */
	NODE_OUTPUT,
	NODE_WAITPOINTS, /* waitpoints/ and its files: waitpoints.c */
	NODE_WAITPOINT,
};

#define TFS_ROOT_INO   1
#define TFS_RUNS_INO   2
#define TFS_STATS_INO  3
#define TFS_WAITPOINTS_INO 4
#define TFS_STATS_NAME ".triggerfs-stats"

struct tfs_run;
struct tfs_stream;
struct tfs_waitpoint;

/* Where an open file's writes go (an input stream, an output stream, a
 * waitpoint token): writes to one sink form a queue and run one at a time,
 * in order (writer.c). */
struct tfs_sink {
	struct list writes;          /* struct tfs_write queued */
	bool sending;
	enum node_kind kind;         /* INPUT, OUTPUT or WAITPOINT */
	struct tfs_run *run;         /* INPUT, OUTPUT */
	const char *name;            /* the stream's name or the token's id */
};

struct tfs_node {
	fuse_ino_t ino;
	enum node_kind kind;
	struct tfs_run *run;        /* RUN, *_DIR, INPUT, LOG */
	struct tfs_stream *stream;  /* INPUT, LOG, OUTPUT */
	struct tfs_waitpoint *wp;   /* WAITPOINT */
};

enum run_state { RUN_UNKNOWN, RUN_CHECKING, RUN_EXISTS, RUN_MISSING };

struct tfs_run {
	char *id;
	struct tfs_run *hnext;       /* hash chain */
	enum run_state state;
	double checked_at;           /* monotonic seconds */
	bool finished;
	char *final_status;          /* the status it finished with, if known */
	bool polling;                /* a status request is in flight */
	unsigned not_found_polls;    /* polls in a row that found no run */
	double polled_at;
	struct list lookups;         /* struct tfs_lookup waiting for a check */
	struct tfs_stream *streams;  /* singly linked, newest first */
	size_t nstreams;
	fuse_ino_t ino_dir, ino_input, ino_log, ino_status, ino_output;
	struct list waiting;         /* in tfs.waited_runs while it has waiters */
	size_t nwaiters;             /* parked reads on its streams */
};

/* ---- parked requests (parked.c) ---------------------------------------
 * A request answered later: a read at the end of a stream or of a waiting
 * token, or an open, lookup or getattr waiting for a stream's subscription
 * to catch up.  Its interrupt and its deadline are handled in parked.c;
 * whatever ends it, it ends through its queue's finish, tfs.lock held. */
enum waiter_kind { WAIT_READ, WAIT_OPEN };

struct tfs_parked;

/* The requests parked on one thing (a stream's reads, a token's reads). */
struct tfs_parkq {
	struct list reqs;            /* struct tfs_parked */
	/* Take p off (parked_unlink), answer it with err (0: as the state
	 * now allows) and free it. */
	void (*finish)(struct tfs_parked *p, int err);
};

struct tfs_parked {
	struct list node;            /* in q->reqs */
	struct list dnode;           /* in tfs.deadlines[kind] */
	struct tfs_parkq *q;
	fuse_req_t req;
	enum waiter_kind kind;       /* which timeout applies */
	double deadline;             /* 0: none */
	bool expired;                /* finished by its deadline */
};

/* Register the interrupt callback for req (tfs.lock not held), then take
 * tfs.lock: true when req was interrupted already (answer it EINTR). */
bool parked_watch(fuse_req_t req, struct tfs_parkq *q);
/* With tfs.lock held, for a request that must wait: answer it now when
 * the daemon is going away or flags has O_NONBLOCK (true), else false. */
bool parked_refused(fuse_req_t req, int flags);
/* With tfs.lock held: park, unpark, answer all, expire deadlines. */
void parked_add(struct tfs_parked *p, struct tfs_parkq *q, fuse_req_t req,
		enum waiter_kind kind);
void parked_unlink(struct tfs_parked *p);
void parked_finish_all(struct tfs_parkq *q, int err);
void parked_expire(double now);
/* How long a parked request of this kind may wait, 0: forever; *err is
 * what it gets then. */
double parked_timeout(enum waiter_kind kind, int *err);

/* How a WAIT_OPEN is answered once caught up. */
enum waiter_answer { ANSWER_OPEN, ANSWER_ATTR, ANSWER_ENTRY };

/* A request parked on a stream. */
struct tfs_waiter {
	struct tfs_parked p;         /* in stream->reads or stream->opens */
	struct tfs_stream *stream;
	struct tfs_handle *handle;   /* READ */
	off_t off;                   /* READ */
	size_t size;                 /* READ */
	struct fuse_file_info fi;    /* OPEN: replied with fuse_reply_open */
	enum waiter_answer answer;   /* OPEN */
	fuse_ino_t ino;              /* OPEN: ANSWER_ATTR, ANSWER_ENTRY */
};

/* One subscription's context: outlives trigger_unsubscribe until CLOSED. */
struct tfs_subctx {
	struct tfs_stream *stream;
	trigger_sub *sub;
	bool active;
	double lost_at;              /* connection lost since (0: connected) */
	unsigned retries;            /* reconnection attempts since */
};

struct tfs_stream {
	char *name;
	struct tfs_run *run;
	struct tfs_stream *next;
	fuse_ino_t ino_input, ino_log;  /* input streams */
	fuse_ino_t ino_output;          /* output streams */

	/* the log: every record as one line of JSON, append-only */
	struct logstore *log;
	long long last_seq;          /* -1: none */
	time_t mtime;                /* when the last record arrived */
	size_t consumed;             /* input/S: bytes of the records taken on
					this mount (each record goes once) */

	/* the subscription shared by every reader */
	struct tfs_subctx *sub;
	int readers;                 /* open handles that read */
	int writers;                 /* open handles that only write */
	trigger_code sub_error;      /* the subscription gave up with this */
	struct tfs_parkq reads;      /* struct tfs_waiter: reads at the end */
	struct tfs_parkq opens;      /* ... opens, lookups, getattrs */
	struct list pollers;         /* struct tfs_handle with a poll handle */
	struct list idle;            /* in tfs.idle_streams: a subscription
					held for stat only, stopped later */
	double idle_since;
	int attr_waiters;            /* lookups/getattrs waiting to catch up */

	/* the flags, together (no padding between them) */
	bool listed;                 /* used through the mount: in readdir */
	bool caught_up;
	bool output;                 /* an output stream (runs/R/output/S) */

	struct tfs_sink sink;         /* writes: one at a time, in order */
};

/* What an open file has written so far: a stream of JSON texts, checked
 * as it comes (writer.c). */
struct tfs_wstate {
	char *kept;                  /* the value not yet complete */
	size_t kept_len, kept_cap;
	struct jsonline jl;          /* where that value stands */
	size_t lines;                /* newlines since the open */
	size_t value_line;           /* line where the kept value began */
	unsigned char bom;           /* bytes of a leading BOM seen; 3: past */
	int failed;                  /* a value was refused: nothing more */
	int deferred_err;            /* errno to report on the next write */
};

/* An open file. */
struct tfs_handle {
	struct list hnode;           /* in tfs.handles */
	enum node_kind kind;         /* INPUT, LOG, OUTPUT, WAITPOINT or a text
				      * (STATS, STATUS) */
	struct tfs_stream *stream;
	struct tfs_waitpoint *wp;    /* WAITPOINT */
	struct tfs_sink *sink;       /* where writes go, or NULL */
	bool wrote;                  /* a value was sent through this open */
	bool can_read, can_write;
	off_t pos;                   /* end of the last read: poll's position */
	size_t rec_off, rec_end;     /* input/S: the rest of the record this
					descriptor took */
	struct fuse_pollhandle *ph;
	struct list pnode;           /* in stream->pollers while ph is set */

	struct tfs_wstate ws;        /* write side (writer.c) */

	char *text;                  /* STATS, STATUS: the snapshot */
	size_t text_len;
};

/* ---- options and global state ----------------------------------------- */

struct tfs_options {
	char *api_url;
	char *token_file;
	char *secret_key_file;
	char *timeout;
	char *send_timeout;
	char *cache_mem;
	char *cache_dir;
	char *cafile;
	int insecure_http;
	int show_help;
	int show_version;
	char *positional[2];         /* [API_URL] MOUNTPOINT, as mount(8) runs us */
	int npositional;
};

struct tfs {
	pthread_mutex_t lock;
	struct fuse_session *se;
	trigger_client *client;
	trigger_cred *cred;
	uid_t uid;
	gid_t gid;
	time_t started;
	double read_timeout;         /* -o timeout=, seconds; 0: none */
	double park_limit;           /* kernel request timeout guard; 0: none */
	double open_timeout;         /* how long an open waits to catch up */
	long long cache_mem;         /* -o cache_mem=, bytes */
	bool shutting_down;
	bool unmounted;              /* the mount went away (lazy unmount) */
	size_t parked[2];            /* by waiter_kind */
	struct list deadlines[2];    /* by waiter_kind, deadline order */
	struct list waited_runs;     /* runs with parked reads */
	struct list idle_streams;    /* subscriptions held for stat only */
	size_t open_handles;
	struct list handles;         /* every open file, freed at shutdown */
	size_t streams;
	size_t subscriptions;
	char *mountpoint;
	char mount_real[PATH_MAX];   /* resolved before mounting */
};

extern struct tfs tfs;

/* log.c */
void tfs_log_init(bool foreground, bool debug);
void tfs_log(int priority, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void tfs_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *tfs_date(int64_t t, char *buf, size_t len);
void tfs_log_expiry(const char *run_id);

/* notify.c: readiness for systemd (Type=notify) */
void notify_ready(const char *url, const char *mountpoint);
void notify_stopping(void);

/* errmap.c: the one table from API outcomes to errno */
int tfs_errno(trigger_code code);

/* util */
double tfs_now(void);

/* tree.c */
struct tfs_node *tree_node(fuse_ino_t ino);
fuse_ino_t tree_new_node(enum node_kind kind, struct tfs_run *run,
			 struct tfs_stream *stream);
struct tfs_run *tree_run(const char *id, bool create);
struct tfs_stream *tree_stream(struct tfs_run *run, const char *name,
			       bool create);
struct tfs_stream *tree_stream_of(struct tfs_run *run, const char *name,
				  bool output, bool create);
bool tree_valid_name(const char *name);
void tree_attr(const struct tfs_node *node, struct stat *st);
void tree_reply_entry(fuse_req_t req, fuse_ino_t ino, double attr_timeout);
void tree_for_each_run(void (*fn)(struct tfs_run *run, void *arg), void *arg);

/* A directory's entries, snapshot at opendir. */
struct tfs_dirlist {
	char **names;
	size_t n, cap;
	struct tfs_dirlist *prev, *next;   /* every open one, for shutdown */
};

struct tfs_dirlist *dirlist_new(void);
void dirlist_free_all(void);

void dirlist_add(struct tfs_dirlist *dl, const char *name);
bool dirlist_has(const struct tfs_dirlist *dl, const char *name);
void dirlist_free(struct tfs_dirlist *dl);
void dirlist_reply(fuse_req_t req, const struct tfs_dirlist *dl, size_t size,
		   off_t off);

/* runs.c */
void runs_lookup(fuse_req_t req, const char *id);
void runs_opendir(fuse_req_t req, struct fuse_file_info *fi);
void runs_finished(struct tfs_run *run, const char *why);
void runs_learned(struct tfs_run *run, const json_t *body);
void runs_poll_waited(void);
void runs_add_waiter(struct tfs_run *run);
void runs_del_waiter(struct tfs_run *run);

/* stream.c */
void stream_open(fuse_req_t req, struct tfs_stream *s, enum node_kind kind,
		 struct fuse_file_info *fi);
void stream_read(fuse_req_t req, struct tfs_handle *h, size_t size, off_t off,
		 int flags);
void stream_poll(fuse_req_t req, struct tfs_handle *h,
		 struct fuse_pollhandle *ph);
void stream_release(struct tfs_handle *h);
struct tfs_handle *stream_new_handle(enum node_kind kind,
				     struct tfs_stream *s);
void stream_free_handle(struct tfs_handle *h);
void stream_free_all_handles(void);
void stream_run_finished(struct tfs_stream *s);
void stream_expire(double now);
void stream_init_queues(struct tfs_stream *s);
void stream_shutdown(void);
void stream_attr(fuse_req_t req, const struct tfs_node *node, bool entry);
size_t stream_size(const struct tfs_stream *s, enum node_kind kind);

/* writer.c */
void writer_write(fuse_req_t req, struct tfs_handle *h, const char *buf,
		  size_t size);
void writer_flush(fuse_req_t req, struct tfs_handle *h);
void writer_release(struct tfs_handle *h);

/* status.c */
void status_open(fuse_req_t req, struct tfs_run *run,
		 struct fuse_file_info *fi);
bool tfs_is_text(enum node_kind kind);
void text_read(fuse_req_t req, struct tfs_handle *h, size_t size, off_t off);

/* output.c */
void output_opendir(fuse_req_t req, struct tfs_run *run,
		    struct fuse_file_info *fi);
int output_write_allowed(const struct tfs_run *run, const char *name);

/* waitpoints.c */
void waitpoints_lookup(fuse_req_t req, const char *id);
void waitpoints_opendir(fuse_req_t req, struct fuse_file_info *fi);
void waitpoint_open(fuse_req_t req, struct tfs_waitpoint *wp,
		    struct fuse_file_info *fi);
void waitpoint_read(fuse_req_t req, struct tfs_handle *h, size_t size,
		    off_t off, int flags);
void waitpoint_poll(fuse_req_t req, struct tfs_handle *h,
		    struct fuse_pollhandle *ph);
void waitpoint_release(struct tfs_handle *h);
void waitpoint_attr(const struct tfs_waitpoint *wp, struct stat *st);
void waitpoints_tick(double now);
void waitpoints_shutdown(void);
int waitpoint_write_allowed(const struct tfs_waitpoint *wp);
void waitpoint_sent(struct tfs_sink *sink);

/* writer.c: a sink's name in log lines ("run R stream S") */
const char *sink_label(const struct tfs_sink *sink, char *buf, size_t len);
/* cachedir.c */
int cachedir_open(const char *parent);
const char *cachedir_path(void);
void cachedir_close(void);

/* watch.c */
int watch_start(void);
void watch_stop(void);

/* ops.c */
extern const struct fuse_lowlevel_ops tfs_ops;
char *tfs_stats_json(size_t *len);

#endif
