/*
 * triggerfs: options, credentials, the mount and its shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "triggerfs.h"

#define MAX_SECRET 65536
#define OPEN_TIMEOUT 30.0
#define DEFAULT_CACHE_MEM (16LL << 20)

struct tfs tfs = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

double tfs_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

enum { KEY_SECRET_IN_ARGV };

#define TFS_OPT(t, p) { t, offsetof(struct tfs_options, p), 1 }

static const struct fuse_opt option_spec[] = {
	TFS_OPT("api_url=%s", api_url),
	TFS_OPT("token_file=%s", token_file),
	TFS_OPT("secret_key_file=%s", secret_key_file),
	TFS_OPT("timeout=%s", timeout),
	TFS_OPT("send_timeout=%s", send_timeout),
	TFS_OPT("cafile=%s", cafile),
	TFS_OPT("insecure_http", insecure_http),
	TFS_OPT("cache_mem=%s", cache_mem),
	TFS_OPT("cache_dir=%s", cache_dir),
	FUSE_OPT_KEY("token=", KEY_SECRET_IN_ARGV),
	FUSE_OPT_KEY("access_token=", KEY_SECRET_IN_ARGV),
	FUSE_OPT_KEY("secret_key=", KEY_SECRET_IN_ARGV),
	/* Words of fstab and mount(8) that mean nothing to a FUSE daemon:
	 * mount.fuse3 drops most, a unit or a direct call may pass them. */
	FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nouser", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("owner", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("group", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("comment=", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_END
};

static int option_proc(void *data, const char *arg, int key,
		       struct fuse_args *outargs)
{
	struct tfs_options *o = data;

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT) {
		/* Kept until all are seen: with one it is the mount point,
		 * with two the first is the API URL (see take_positionals). */
		if (o->npositional == 2) {
			fprintf(stderr, "triggerfs: unexpected argument %s (usage: triggerfs [API_URL] MOUNTPOINT [-o OPTIONS])\n", arg);
			return -1;
		}
		o->positional[o->npositional++] = xstrdup(arg);
		return 0;
	}
	/* x-systemd.automount, x-mount.mkdir, ...: for other programs; and
	 * the empty "-o ${OPTIONS}" of a unit whose OPTIONS is empty. */
	if (key == FUSE_OPT_KEY_OPT && (!strncmp(arg, "x-", 2) || !*arg))
		return 0;
	if (key == KEY_SECRET_IN_ARGV) {
		fprintf(stderr, "triggerfs: refusing a credential on the command line (anyone can read it there); use -o token_file=/-o secret_key_file= or TRIGGER_ACCESS_TOKEN/TRIGGER_SECRET_KEY\n");
		return -1;
	}
	return 1;
}

static void usage(const char *prog)
{
	printf("usage: %s [options] [API_URL] MOUNTPOINT\n\n"
	       "Trigger.dev input streams as files: runs/<runId>/input/<streamId>.\n"
	       "As mount(8) and fstab do: mount -t fuse.triggerfs API_URL MOUNTPOINT\n"
	       "-o secret_key_file=PATH (API_URL \"triggerfs\" means the default).\n\n"
	       "triggerfs options:\n"
	       "    -o api_url=URL          API base URL (default $TRIGGER_API_URL,\n"
	       "                            else https://api.trigger.dev)\n"
	       "    -o token_file=PATH      public access token (JWT) file, mode 0600\n"
	       "    -o secret_key_file=PATH secret key file, mode 0600\n"
	       "    -o timeout=DURATION     reads at the end of a stream fail with\n"
	       "                            ETIMEDOUT after this (30s, 5m, 1h; default none)\n"
	       "    -o send_timeout=DURATION  retry deadline of a send (default 30s)\n"
	       "    -o cafile=PATH          trust the certificate authorities in PATH (PEM)\n"
	       "                            instead of the system's (a private CA)\n"
	       "    -o insecure_http        allow http:// to hosts other than loopback\n"
	       "    -o cache_mem=SIZE       record data kept in memory, all streams\n"
	       "                            together (512K, 64M, 1G; default 16M)\n"
	       "    -o cache_dir=DIR        where logs go past cache_mem, in a private\n"
	       "                            directory removed at unmount (default /var/tmp)\n\n"
	       "Credentials come from the files above, else from TRIGGER_ACCESS_TOKEN,\n"
	       "else TRIGGER_SECRET_KEY; never from the command line.\n\n", prog);
}

/* "30s", "5m", "1h", "1d", "250ms", or plain seconds; -1 when malformed. */
static double parse_duration(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	if (!strcmp(end, "") || !strcmp(end, "s"))
		return v;
	if (!strcmp(end, "ms"))
		return v / 1000;
	if (!strcmp(end, "m"))
		return v * 60;
	if (!strcmp(end, "h"))
		return v * 3600;
	if (!strcmp(end, "d"))
		return v * 86400;
	return -1;
}

/* "16M", "512K", "1G" (powers of 1024, an optional "iB" or "B"), or
 * plain bytes; -1 when malformed. */
static long long parse_size(const char *s)
{
	static const char units[] = "KMGT";
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || v < 0)
		return -1;
	const char *u = *end ? strchr(units, *end) : NULL;

	if (u) {
		for (int i = 0; i <= u - units; i++) {
			if (v > LLONG_MAX / 1024)
				return -1;
			v *= 1024;
		}
		end++;
		if (!strcmp(end, "iB"))
			end += 2;
	}
	if (!strcmp(end, "B"))
		end++;
	return *end ? -1 : v;
}

static char *trim(char *s)
{
	size_t n;

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' ||
		     s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* A credential file must be ours to read alone, as ssh insists for keys. */
static char *read_secret_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	char *buf;
	ssize_t n;

	if (fd < 0) {
		fprintf(stderr, "triggerfs: cannot read credential file %s: %s\n",
			path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "triggerfs: credential file %s is not a regular file\n", path);
		close(fd);
		return NULL;
	}
	if (st.st_mode & 077) {
		fprintf(stderr, "triggerfs: credential file %s is accessible by group or others (mode %04o); run: chmod 600 %s\n",
			path, (unsigned)(st.st_mode & 07777), path);
		close(fd);
		return NULL;
	}
	buf = calloc(1, MAX_SECRET + 1);
	n = buf ? read(fd, buf, MAX_SECRET) : -1;
	close(fd);
	if (n < 0) {
		fprintf(stderr, "triggerfs: cannot read credential file %s\n", path);
		free(buf);
		return NULL;
	}
	return buf;
}

/* Take a credential out of the environment and wipe it there, so it does
 * not show in /proc/PID/environ. */
static char *take_env(const char *name)
{
	char *v = getenv(name);
	char *copy;

	if (!v || !*v)
		return NULL;
	copy = strdup(v);
	explicit_bzero(v, strlen(v));
	unsetenv(name);
	return copy;
}

static trigger_cred *load_cred(const struct tfs_options *o)
{
	char err[256] = "";
	char *raw = NULL;
	bool token = true;
	trigger_cred *cred;

	if (o->token_file)
		raw = read_secret_file(o->token_file);
	else if ((raw = take_env("TRIGGER_ACCESS_TOKEN")))
		;
	else if ((token = false), o->secret_key_file)
		raw = read_secret_file(o->secret_key_file);
	else
		raw = take_env("TRIGGER_SECRET_KEY");
	if (!raw) {
		if (!o->token_file && !o->secret_key_file)
			fprintf(stderr, "triggerfs: no credentials: set TRIGGER_SECRET_KEY or TRIGGER_ACCESS_TOKEN, or use -o secret_key_file=PATH / -o token_file=PATH\n");
		return NULL;
	}
	char *v = trim(raw);

	cred = token ? trigger_cred_token(v, err, sizeof(err))
		     : trigger_cred_secret_key(v, err, sizeof(err));
	explicit_bzero(raw, strlen(raw));
	free(raw);
	if (!cred) {
		fprintf(stderr, "triggerfs: bad %s: %s\n",
			token ? "access token" : "secret key", err);
		return NULL;
	}
	int64_t exp = trigger_cred_exp(cred);

	if (token && exp && exp <= (int64_t)time(NULL)) {
		time_t t = (time_t)exp;
		char when[64];

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
		fprintf(stderr, "triggerfs: the access token expired at %s; get a new one (nothing mounted)\n", when);
		trigger_cred_free(cred);
		return NULL;
	}
	return cred;
}

static double read_proc_seconds(const char *path)
{
	FILE *f = fopen(path, "re");
	double v = 0;

	if (f) {
		if (fscanf(f, "%lf", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

/* Kernels from 6.14 may abort the whole mount when a request stays
 * unanswered past a timeout; parked reads are answered with EINTR (which
 * callers retry) well before it. */
static double kernel_park_limit(void)
{
	double def = read_proc_seconds("/proc/sys/fs/fuse/default_request_timeout");
	double max = read_proc_seconds("/proc/sys/fs/fuse/max_request_timeout");
	double t = def;

	if (max > 0 && (t == 0 || max < t))
		t = max;
	if (t <= 0)
		return 0;
	return t - (t / 4 < 5 ? t / 4 : 5);
}

/* A directory that is already a mount of a FUSE filesystem (ours or a
 * dead one) is refused with a word on what to do. */
static int check_mountpoint(const char *mp)
{
	char real[PATH_MAX], line[4096];
	struct stat st;
	FILE *f;

	if (stat(mp, &st) != 0) {
		if (errno == ENOTCONN)
			fprintf(stderr, "triggerfs: %s is a dead FUSE mount; run: fusermount3 -u %s\n", mp, mp);
		else
			fprintf(stderr, "triggerfs: bad mount point %s: %s\n", mp, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "triggerfs: bad mount point %s: not a directory\n", mp);
		return -1;
	}
	if (!realpath(mp, real))
		return 0;
	snprintf(tfs.mount_real, sizeof(tfs.mount_real), "%s", real);
	if (!(f = fopen("/proc/self/mountinfo", "re")))
		return 0;
	while (fgets(line, sizeof(line), f)) {
		char point[PATH_MAX], type[256];
		/* Optional fields (zero or more) end at " - "; the type follows. */
		const char *sep = strstr(line, " - ");

		if (sep && sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1 &&
		    sscanf(sep + 3, "%255s", type) == 1 &&
		    !strcmp(point, real) && !strncmp(type, "fuse", 4)) {
			fprintf(stderr, "triggerfs: %s is already mounted (%s); unmount it first: fusermount3 -u %s\n",
				mp, type, mp);
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

static trigger_client *client_new(const struct tfs_options *o, double send_to,
				  int keep_warm)
{
	char err[256] = "";
	struct trigger_client_opts co = {
		.api_url = o->api_url,
		.cred = tfs.cred,
		.insecure_http = o->insecure_http,
		.send_timeout_ms = (long)(send_to * 1000),
		.user_agent = "triggerfs/" TRIGGERFS_VERSION,
		.ca_file = o->cafile,
		.keep_warm = keep_warm,
	};
	trigger_client *c = trigger_client_new(&co, err, sizeof(err));

	if (!c)
		fprintf(stderr, "triggerfs: %s%s\n", err,
			strstr(err, "insecure http") ? " (-o insecure_http)" : "");
	return c;
}

static void cache_warn(int err, const char *what)
{
	tfs_log(LOG_ERR, "%s %s: %s; that stream's log stays in memory, over cache_mem",
		what, cachedir_path(), strerror(err));
}

/* The daemon works from "/": the CA file's path must not be relative. */
static int cafile_absolute(struct tfs_options *o)
{
	char *abs = realpath(o->cafile, NULL);

	if (!abs || access(abs, R_OK)) {
		fprintf(stderr, "triggerfs: cannot read cafile %s: %s\n", o->cafile,
			strerror(errno));
		free(abs);
		return -1;
	}
	free(o->cafile);
	o->cafile = abs;
	return 0;
}

/* Over https, one request now: a certificate that does not verify is a
 * mistake to report before mounting, not later as "server unreachable"
 * on every send.  An unreachable server is not: it may come up later. */
static int check_tls(trigger_client *c)
{
	const char *url = trigger_client_url(c), *host;
	struct trigger_sync s;
	trigger_code code;

	if (strncmp(url, "https://", 8) != 0)
		return 0;
	trigger_sync_init(&s);
	code = trigger_sync_wait(&s, trigger_client_check(c, trigger_sync_done, &s));
	host = url + 8;
	if (code == TRIGGER_E_TLS)
		fprintf(stderr, "triggerfs: cannot trust %.*s: %s (for a private certificate authority: -o cafile=PATH)\n",
			(int)strcspn(host, "/"), host, s.error);
	trigger_sync_clear(&s);
	return code == TRIGGER_E_TLS ? -1 : 0;
}

/* One request now: a credential the API rejects (a wrong key, a token not
 * signed by the environment's key) is refused before mounting, with one
 * line, rather than an empty runs/ and EACCES everywhere.  A scope that
 * does not allow the question, or a server not up yet, is no reason. */
static int check_cred(trigger_client *c)
{
	struct trigger_sync s;
	trigger_code code;
	char why[320];

	trigger_sync_init(&s);
	code = trigger_sync_wait(&s, trigger_runs_list(c, NULL, 1, NULL,
						       trigger_sync_done, &s));
	if (code == TRIGGER_E_UNAUTHORIZED || code == TRIGGER_E_EXPIRED) {
		struct trigger_result res = { .code = code, .status = s.status };

		snprintf(res.error, sizeof(res.error), "%s", s.error);
		fprintf(stderr, "triggerfs: the API rejects the %s: %s; nothing mounted\n",
			trigger_cred_is_secret(tfs.cred) ? "secret key" : "access token",
			trigger_result_text(&res, why, sizeof(why)));
	}
	trigger_sync_clear(&s);
	return code == TRIGGER_E_UNAUTHORIZED || code == TRIGGER_E_EXPIRED ? -1 : 0;
}

static int configure(struct tfs_options *o, double *send_to)
{
	if (o->timeout && (tfs.read_timeout = parse_duration(o->timeout)) < 0) {
		fprintf(stderr, "triggerfs: bad timeout=%s (use 30s, 5m, 1h)\n", o->timeout);
		return -1;
	}
	*send_to = o->send_timeout ? parse_duration(o->send_timeout) : 30;
	if (*send_to <= 0) {
		fprintf(stderr, "triggerfs: bad send_timeout=%s (use 30s, 5m)\n", o->send_timeout);
		return -1;
	}
	tfs.cache_mem = o->cache_mem ? parse_size(o->cache_mem) : DEFAULT_CACHE_MEM;
	if (tfs.cache_mem < 0) {
		fprintf(stderr, "triggerfs: bad cache_mem=%s (use 512K, 64M, 1G)\n", o->cache_mem);
		return -1;
	}
	tfs.park_limit = kernel_park_limit();
	tfs.open_timeout = OPEN_TIMEOUT > *send_to ? OPEN_TIMEOUT : *send_to;
	tfs.started = time(NULL);
	tfs.uid = getuid();
	tfs.gid = getgid();
	list_init(&tfs.deadlines[WAIT_READ]);
	list_init(&tfs.deadlines[WAIT_OPEN]);
	list_init(&tfs.waited_runs);
	list_init(&tfs.idle_streams);
	list_init(&tfs.handles);
	if (!(tfs.cred = load_cred(o)))
		return -1;
	if (o->cafile && cafile_absolute(o))
		return -1;
	int cache_fd = cachedir_open(o->cache_dir);

	if (cache_fd < 0)
		return -1;
	logstore_configure(cache_fd, (size_t)tfs.cache_mem, cache_warn);
	/* Check the URL now, while errors still reach the terminal.  The
	 * client that checked serves the mount if the daemon stays in the
	 * foreground: its connection and claims are ready for the first
	 * request (a daemon that forks makes another, see serve()). */
	if (!(tfs.client = client_new(o, *send_to, 1)))
		return -1;
	return check_tls(tfs.client) || check_cred(tfs.client) ? -1 : 0;
}

/* "triggerfs [API_URL] MOUNTPOINT": the mount point goes back to
 * fuse_parse_cmdline() (which checks it), the URL becomes -o api_url and,
 * as the source mount(8) was given, the fsname: the same source in
 * mountinfo as in fstab is how "mount -a" sees it is already mounted. */
static int take_positionals(struct fuse_args *args, struct tfs_options *o)
{
	const char *source = o->npositional == 2 ? o->positional[0] : "";
	char *esc = NULL, *opt = NULL;
	int r;

	if (o->npositional)
		fuse_opt_add_arg(args, o->positional[o->npositional - 1]);
	/* "triggerfs" (or an empty API_URL in a unit): the default URL. */
	if (*source && strcmp(source, "triggerfs") != 0) {
		if (o->api_url) {
			fprintf(stderr, "triggerfs: the API URL is given twice (%s and -o api_url=%s); give one\n",
				source, o->api_url);
			return -1;
		}
		o->api_url = xstrdup(source);
	}
	if (fuse_opt_add_opt_escaped(&esc, *source ? source : "triggerfs") ||
	    asprintf(&opt, "-ofsname=%s,subtype=triggerfs", esc) < 0)
		abort();
	r = fuse_opt_add_arg(args, opt);
	free(esc);
	free(opt);
	return r;
}

static void make_tree(void)
{
	fuse_ino_t root = tree_new_node(NODE_ROOT, NULL, NULL);
	fuse_ino_t runs = tree_new_node(NODE_RUNS, NULL, NULL);
	fuse_ino_t stats = tree_new_node(NODE_STATS, NULL, NULL);
	fuse_ino_t wps = tree_new_node(NODE_WAITPOINTS, NULL, NULL);

	if (root != TFS_ROOT_INO || runs != TFS_RUNS_INO ||
	    stats != TFS_STATS_INO || wps != TFS_WAITPOINTS_INO)
		abort();
}

static int serve(struct fuse_cmdline_opts *fo, struct tfs_options *o,
		 double send_to)
{
	struct fuse_loop_config *cfg;
	int ret;

	tfs_log_init(fo->foreground, fo->debug);
	if (!fo->foreground) {  /* its thread would not survive the fork */
		trigger_client_free(tfs.client);
		tfs.client = NULL;
	}
	if (fuse_daemonize(fo->foreground) != 0)
		return 1;
	if (!tfs.client)
		tfs.client = client_new(o, send_to, 1);
	if (!tfs.client || watch_start() != 0)
		return 1;
	tfs_log(LOG_INFO, "mounted %s on %s", trigger_client_url(tfs.client),
		tfs.mountpoint);
	notify_ready(trigger_client_url(tfs.client), tfs.mountpoint);
	if (fo->singlethread) {
		ret = fuse_session_loop(tfs.se);
	} else {
		cfg = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(cfg, fo->clone_fd);
		fuse_loop_cfg_set_max_threads(cfg, fo->max_threads);
		ret = fuse_session_loop_mt(tfs.se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	notify_stopping();
	/* Readers get an error now, not when the network answers. */
	stream_shutdown();
	watch_stop();
	trigger_client_free(tfs.client);
	tfs.client = NULL;
	stream_free_all_handles();
	dirlist_free_all();
	tfs_log(LOG_INFO, "unmounting %s", tfs.mountpoint);
	return ret < 0 ? 1 : 0;
}

/* After a lazy unmount there is nothing left to unmount, and fusermount
 * would only print a spurious error; libfuse still frees its state in
 * fuse_session_unmount, so it is called with stderr on /dev/null. */
static void unmount(void)
{
	int saved = -1, null;

	if (tfs.unmounted && (null = open("/dev/null", O_WRONLY | O_CLOEXEC)) >= 0) {
		fflush(stderr);
		saved = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
		dup2(null, STDERR_FILENO);
		close(null);
	}
	fuse_session_unmount(tfs.se);
	if (saved >= 0) {
		fflush(stderr);
		dup2(saved, STDERR_FILENO);
		close(saved);
	}
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts fo;
	struct tfs_options o;
	double send_to = 30;
	int ret = 1;

	/* A daemon that lives for weeks: blocks of 64 KiB and more (the logs'
	 * full chunks, reads copied from the cache directory) come from the
	 * kernel and go back to it when freed.  glibc's default would raise
	 * that threshold as such blocks are freed and keep them in one arena
	 * per thread, a few MiB each, for good. */
	mallopt(M_MMAP_THRESHOLD, 64 * 1024);
	memset(&o, 0, sizeof(o));
	memset(&fo, 0, sizeof(fo));
	if (fuse_opt_parse(&args, &o, option_spec, option_proc) != 0 ||
	    take_positionals(&args, &o) != 0 ||
	    fuse_parse_cmdline(&args, &fo) != 0)
		goto out;
	if (fo.show_help) {
		usage(argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
		goto out;
	}
	if (fo.show_version) {
		printf("triggerfs version %s\n", TRIGGERFS_VERSION);
		fuse_lowlevel_version();
		ret = 0;
		goto out;
	}
	if (!fo.mountpoint) {
		fprintf(stderr, "usage: %s [options] [API_URL] MOUNTPOINT (see --help)\n", argv[0]);
		goto out;
	}
	tfs.mountpoint = fo.mountpoint;
	if (check_mountpoint(fo.mountpoint) || configure(&o, &send_to))
		goto out;
	make_tree();
	tfs.se = fuse_session_new(&args, &tfs_ops, sizeof(tfs_ops), NULL);
	if (!tfs.se)
		goto out;
	if (fuse_set_signal_handlers(tfs.se) == 0) {
		if (fuse_session_mount(tfs.se, fo.mountpoint) == 0) {
			if (dirops_hook(tfs.se) == 0)
				ret = serve(&fo, &o, send_to);
			unmount();
		}
		fuse_remove_signal_handlers(tfs.se);
	}
	fuse_session_destroy(tfs.se);
out:
	if (tfs.client)         /* refused before serving */
		trigger_client_free(tfs.client);
	cachedir_close();
	if (tfs.cred)
		trigger_cred_free(tfs.cred);
	free(fo.mountpoint);
	free(o.positional[0]);
	free(o.positional[1]);
	free(o.api_url);
	free(o.token_file);
	free(o.secret_key_file);
	free(o.timeout);
	free(o.send_timeout);
	free(o.cache_mem);
	free(o.cache_dir);
	free(o.cafile);
	fuse_opt_free_args(&args);
	return ret;
}
