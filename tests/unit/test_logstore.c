/* The log store: logs read back byte-exact at every offset and size while
 * the shared budget holds and the oldest bytes go to unlinked files; record
 * ends found on either side of the memory/disk boundary; a cache directory
 * that fails keeps the bytes in memory and says so once. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "logstore.h"

/* What a log should hold: the same bytes kept plainly. */
struct ref {
	char *data;
	size_t len, cap;
};

static void ref_add(struct ref *r, const char *p, size_t n)
{
	if (r->len + n + 1 > r->cap) {
		r->cap = (r->len + n + 1) * 2;
		r->data = realloc(r->data, r->cap);
	}
	memcpy(r->data + r->len, p, n);
	r->data[r->len + n] = '\n';
	r->len += n + 1;
}

static uint64_t rng = 88172645463325252ull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* A record of n bytes with no newline in it, different every time. */
static char *make_record(size_t n)
{
	char *p = malloc(n ? n : 1);

	for (size_t i = 0; i < n; i++)
		p[i] = (char)('a' + next_rand() % 26);
	return p;
}

static void append(struct logstore *ls, struct ref *r, size_t n)
{
	char *p = make_record(n);

	logstore_append_record(ls, p, n);
	ref_add(r, p, n);
	free(p);
}

static size_t dir_entries(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	size_t n = 0;

	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	if (d)
		closedir(d);
	return n;
}

/* Every byte through reads of many sizes at many offsets, and the spans. */
static void check_reads(struct logstore *ls, const struct ref *r,
			const char *what)
{
	static const size_t sizes[] = { 1, 7, 4096, 65536, 65537, 200000 };
	char *buf = malloc(200000);
	int bad = 0;

	CHECK(logstore_size(ls) == r->len, "%s: size %llu, want %zu", what,
	      (unsigned long long)logstore_size(ls), r->len);
	for (int i = 0; i < 300 && !bad; i++) {
		uint64_t off = next_rand() % (r->len + 1);
		size_t n = sizes[next_rand() % 6];
		size_t want = r->len - off < n ? r->len - off : n;
		ssize_t got = logstore_read(ls, off, buf, n);

		bad = got != (ssize_t)want || memcmp(buf, r->data + off, want);
		CHECK(!bad, "%s: read %zu at %llu: got %zd, want %zu", what, n,
		      (unsigned long long)off, got, want);
		const char *p;
		size_t k = logstore_span(ls, off, &p);

		CHECK(k <= r->len - off && (!k || !memcmp(p, r->data + off, k)),
		      "%s: span at %llu", what, (unsigned long long)off);
	}
	/* The whole log from the start in reads of 128 KiB, as cat does. */
	uint64_t off = 0;
	ssize_t got;

	while ((got = logstore_read(ls, off, buf, 131072)) > 0 &&
	       !memcmp(buf, r->data + off, (size_t)got))
		off += (uint64_t)got;
	CHECK(got == 0 && off == r->len, "%s: sequential read stopped at %llu of %zu",
	      what, (unsigned long long)off, r->len);
	free(buf);
}

/* Every record's end, from its first byte and from a byte inside it. */
static void check_record_ends(struct logstore *ls, const struct ref *r,
			      const char *what)
{
	size_t start = 0, records = 0;
	int bad = 0;

	for (size_t i = 0; i < r->len && !bad; i++) {
		if (r->data[i] != '\n')
			continue;
		uint64_t mid = start + (i - start) / 2;

		bad = logstore_record_end(ls, start) != (int64_t)(i + 1) ||
		      logstore_record_end(ls, mid) != (int64_t)(i + 1);
		CHECK(!bad, "%s: end of the record at %zu: %lld, want %zu", what,
		      start, (long long)logstore_record_end(ls, start), i + 1);
		start = i + 1;
		records++;
	}
	CHECK(logstore_records(ls) == records, "%s: %llu records, want %zu", what,
	      (unsigned long long)logstore_records(ls), records);
}

static void test_in_memory(void)
{
	struct logstore *ls = logstore_new();
	struct ref r = { 0 };
	struct logstore_stats st;

	logstore_configure(-1, 1 << 30, NULL);
	CHECK(logstore_size(ls) == 0 && logstore_read(ls, 0, (char[1]){ 0 }, 1) == 0,
	      "an empty log reads as end of file");
	for (int i = 0; i < 500; i++)
		append(ls, &r, next_rand() % 300);
	append(ls, &r, 0);
	append(ls, &r, 150000);   /* over one chunk */
	append(ls, &r, 3);
	check_reads(ls, &r, "in memory");
	check_record_ends(ls, &r, "in memory");
	logstore_stats(&st);
	CHECK(st.files == 0 && st.disk_bytes == 0, "nothing on disk");
	CHECK(st.mem_bytes >= r.len && st.mem_bytes < 2 * r.len + 65536,
	      "memory %zu for %zu bytes", st.mem_bytes, r.len);
	logstore_free(ls);
	logstore_stats(&st);
	CHECK(st.mem_bytes == 0, "freed: %zu bytes left", st.mem_bytes);
	free(r.data);
}

/* Several logs written in turns through a budget far below their total. */
static void test_spill(const char *dir, size_t budget)
{
	enum { LOGS = 5 };
	struct logstore *ls[LOGS];
	struct ref r[LOGS] = { 0 };
	struct logstore_stats st;
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	size_t over = 0;
	char what[64];

	logstore_configure(dirfd, budget, NULL);
	for (int i = 0; i < LOGS; i++)
		ls[i] = logstore_new();
	for (int i = 0; i < 6000; i++) {
		int k = (int)(next_rand() % LOGS);
		size_t n = next_rand() % 8 == 0 ? next_rand() % 70000
						: next_rand() % 500;

		append(ls[k], &r[k], n);
		logstore_stats(&st);
		if (st.mem_bytes > budget)
			over++;
	}
	CHECK(over == 0, "budget %zu: over it after %zu appends", budget, over);
	logstore_stats(&st);
	CHECK(st.files == LOGS, "budget %zu: %zu files", budget, st.files);
	CHECK(dir_entries(dir) == 0, "the files are unlinked: %zu names in %s",
	      dir_entries(dir), dir);
	size_t total = 0;

	for (int i = 0; i < LOGS; i++) {
		snprintf(what, sizeof(what), "budget %zu log %d", budget, i);
		check_reads(ls[i], &r[i], what);
		check_record_ends(ls[i], &r[i], what);
		total += r[i].len;
	}
	CHECK(st.disk_bytes + st.mem_bytes >= total && st.disk_bytes >= total - budget,
	      "budget %zu: %llu on disk, %zu in memory, %zu in all", budget,
	      (unsigned long long)st.disk_bytes, st.mem_bytes, total);
	/* Lowering the budget spills at once. */
	logstore_configure(dirfd, budget / 4, NULL);
	logstore_stats(&st);
	CHECK(st.mem_bytes <= budget / 4, "lowered: %zu in memory", st.mem_bytes);
	check_reads(ls[0], &r[0], "after lowering");
	for (int i = 0; i < LOGS; i++) {
		logstore_free(ls[i]);
		free(r[i].data);
	}
	logstore_stats(&st);
	CHECK(st.mem_bytes == 0 && st.files == 0 && st.disk_bytes == 0,
	      "all freed: %zu in memory, %zu files", st.mem_bytes, st.files);
	logstore_configure(-1, SIZE_MAX, NULL);
	close(dirfd);
}

static int warnings, warned_errno;

static void on_warn(int err, const char *what)
{
	(void)what;
	warnings++;
	warned_errno = err;
}

/* A cache directory that is gone: the bytes stay, readable, and one
 * warning says why. */
static void test_disk_fails(const char *dir)
{
	struct logstore *ls = logstore_new(), *other = logstore_new();
	struct ref r = { 0 }, ro = { 0 };
	char gone[4096];

	snprintf(gone, sizeof(gone), "%s/gone", dir);
	mkdir(gone, 0700);
	int dirfd = open(gone, O_RDONLY | O_DIRECTORY);

	rmdir(gone);
	logstore_configure(dirfd, 4096, on_warn);
	for (int i = 0; i < 200; i++) {
		append(ls, &r, 100 + next_rand() % 200);
		append(other, &ro, 50);
	}
	CHECK(warnings == 2, "one warning per log: %d", warnings);
	CHECK(warned_errno != 0, "the warning carries errno: %d", warned_errno);
	check_reads(ls, &r, "disk failed");
	check_record_ends(other, &ro, "disk failed");
	logstore_free(ls);
	logstore_free(other);
	free(r.data);
	free(ro.data);
	logstore_configure(-1, SIZE_MAX, NULL);
	close(dirfd);
}

/* A budget of 0: every record goes to disk as it comes. */
static void test_zero_budget(const char *dir)
{
	struct logstore *ls = logstore_new();
	struct ref r = { 0 };
	struct logstore_stats st;
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY);

	logstore_configure(dirfd, 0, NULL);
	for (int i = 0; i < 300; i++) {
		append(ls, &r, next_rand() % 1000);
		logstore_stats(&st);
		if (st.mem_bytes)
			break;
	}
	CHECK(st.mem_bytes == 0, "budget 0: %zu bytes in memory", st.mem_bytes);
	check_reads(ls, &r, "budget 0");
	check_record_ends(ls, &r, "budget 0");
	logstore_free(ls);
	free(r.data);
	logstore_configure(-1, SIZE_MAX, NULL);
	close(dirfd);
}

int main(void)
{
	char dir[] = "/tmp/test-logstore-XXXXXX";

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_in_memory();
	test_spill(dir, 256 * 1024);
	test_spill(dir, 1024 * 1024);
	test_zero_budget(dir);
	test_disk_fails(dir);
	CHECK(dir_entries(dir) == 0, "nothing left in %s", dir);
	rmdir(dir);
	return check_report();
}
