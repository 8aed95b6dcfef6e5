/* Waiting for one request's completion, for tools and tests. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trigger.h"

struct sync_priv {
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

/* Used when the per-request pair cannot be allocated: correct, merely
 * shared (and woken by everyone's completions). */
static struct sync_priv fallback = {
	PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER
};

static struct sync_priv *priv(const struct trigger_sync *s)
{
	return s->priv ? s->priv : &fallback;
}

void trigger_sync_init(struct trigger_sync *s)
{
	struct sync_priv *p = malloc(sizeof(*p));

	memset(s, 0, sizeof(*s));
	if (p) {
		pthread_mutex_init(&p->lock, NULL);
		pthread_cond_init(&p->cond, NULL);
	}
	s->priv = p;
}

void trigger_sync_done(void *arg, const struct trigger_result *res)
{
	struct trigger_sync *s = arg;
	struct sync_priv *p = priv(s);

	pthread_mutex_lock(&p->lock);
	s->code = res->code;
	s->status = res->status;
	snprintf(s->error, sizeof(s->error), "%s", res->error);
	s->body = json_incref(res->body);
	s->jwt = res->jwt ? strdup(res->jwt) : NULL;
	s->done = 1;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

trigger_code trigger_sync_wait(struct trigger_sync *s, int queued)
{
	struct sync_priv *p = priv(s);

	if (queued) {
		s->code = (trigger_code)queued;
		s->done = 1;
		snprintf(s->error, sizeof(s->error), "%s",
			 trigger_strerror(s->code));
		return s->code;
	}
	pthread_mutex_lock(&p->lock);
	while (!s->done)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
	return s->code;
}

void trigger_sync_clear(struct trigger_sync *s)
{
	struct sync_priv *p = s->priv;

	json_decref(s->body);
	free(s->jwt);
	if (p) {
		pthread_mutex_destroy(&p->lock);
		pthread_cond_destroy(&p->cond);
		free(p);
	}
	memset(s, 0, sizeof(*s));
}
