/*
 * Parked requests: FUSE requests answered later, not by the thread that
 * got them (a read at the end of a stream or of a waiting token, an open,
 * lookup or getattr waiting for a subscription to catch up).  A parked
 * request costs no thread.  It ends by its owner's answer, an interrupt or
 * its deadline, whichever comes first; the last two are handled here, and
 * every way ends through its queue's finish with tfs.lock held.
 */
#include <errno.h>
#include <fcntl.h>

#include "triggerfs.h"

/* Interrupts arrive on a FUSE worker thread.  The request may already have
 * been answered and freed, so it is looked up in its queue, never trusted
 * by pointer. */
static void on_interrupt(fuse_req_t req, void *data)
{
	struct tfs_parkq *q = data;
	struct list *n;

	pthread_mutex_lock(&tfs.lock);
	for (n = q->reqs.next; n != &q->reqs; n = n->next) {
		struct tfs_parked *p = list_entry(n, struct tfs_parked, node);

		if (p->req == req) {
			q->finish(p, EINTR);
			break;
		}
	}
	pthread_mutex_unlock(&tfs.lock);
}

bool parked_watch(fuse_req_t req, struct tfs_parkq *q)
{
	/* Registered without tfs.lock: libfuse calls it at once, on this
	 * thread, if the request was interrupted already. */
	fuse_req_interrupt_func(req, on_interrupt, q);
	pthread_mutex_lock(&tfs.lock);
	return fuse_req_interrupted(req);
}

bool parked_refused(fuse_req_t req, int flags)
{
	if (tfs.shutting_down)
		fuse_reply_err(req, tfs_errno(TRIGGER_E_CANCELLED));
	else if (flags & O_NONBLOCK)
		fuse_reply_err(req, EAGAIN);
	else
		return false;
	return true;
}

double parked_timeout(enum waiter_kind kind, int *err)
{
	double t = kind == WAIT_READ ? tfs.read_timeout : tfs.open_timeout;

	*err = kind == WAIT_READ ? tfs_errno(TRIGGER_E_TIMEOUT)
				 : tfs_errno(TRIGGER_E_NETWORK);
	if (tfs.park_limit > 0 && (t == 0 || tfs.park_limit < t)) {
		t = tfs.park_limit;
		*err = EINTR;   /* retried by the caller's libc or shell */
	}
	return t;
}

void parked_add(struct tfs_parked *p, struct tfs_parkq *q, fuse_req_t req,
		enum waiter_kind kind)
{
	double t = parked_timeout(kind, &(int){0});

	p->q = q;
	p->req = req;
	p->kind = kind;
	p->expired = false;
	p->deadline = t > 0 ? tfs_now() + t : 0;
	list_add_tail(&q->reqs, &p->node);
	/* Every request of a kind has the same timeout, so appending keeps the
	 * list in deadline order. */
	if (p->deadline)
		list_add_tail(&tfs.deadlines[kind], &p->dnode);
	else
		list_init(&p->dnode);
	tfs.parked[kind]++;
}

void parked_unlink(struct tfs_parked *p)
{
	list_del(&p->node);
	list_del(&p->dnode);
	tfs.parked[p->kind]--;
}

void parked_finish_all(struct tfs_parkq *q, int err)
{
	while (!list_empty(&q->reqs))
		q->finish(list_entry(q->reqs.next, struct tfs_parked, node), err);
}

void parked_expire(double now)
{
	for (int kind = 0; kind < 2; kind++) {
		int err;

		parked_timeout(kind, &err);
		while (!list_empty(&tfs.deadlines[kind])) {
			struct tfs_parked *p = list_entry(tfs.deadlines[kind].next,
							  struct tfs_parked, dnode);

			if (p->deadline > now)
				break;
			p->expired = true;
			p->q->finish(p, err);
		}
	}
}
