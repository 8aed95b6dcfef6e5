/*
 * libtriggerclient: the part of the Trigger.dev HTTP API that triggerfs
 * speaks (see shared/trigger-api.md). Knows nothing of FUSE.
 *
 * All network I/O runs on one event thread owned by the client (libcurl
 * multi).  Every request function returns at once; its completion callback
 * runs later on that event thread, exactly once, even when the client is
 * shut down (then with TRIGGER_E_CANCELLED).  Callbacks must not block.
 */
#ifndef TRIGGER_H
#define TRIGGER_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One code per API outcome; the HTTP status and the API's own text travel
 * beside it in struct trigger_result. */
typedef enum {
	TRIGGER_OK = 0,
	TRIGGER_E_INVALID,        /* caller error or 400 "Invalid request body" */
	TRIGGER_E_NOT_FOUND,      /* 404: run / waitpoint unknown */
	TRIGGER_E_RUN_FINISHED,   /* 400 "... completed run" */
	TRIGGER_E_UNAUTHORIZED,   /* 401: credential missing, bad or expired */
	TRIGGER_E_FORBIDDEN,      /* 403, or refused locally by the scopes */
	TRIGGER_E_EXPIRED,        /* the public token's exp has passed (local) */
	TRIGGER_E_TOO_LARGE,      /* 413, or refused locally (> 1 MiB) */
	TRIGGER_E_CONFLICT,       /* 409, 410, 422 and other 4xx */
	TRIGGER_E_SERVER,         /* 5xx, still failing at the deadline */
	TRIGGER_E_NETWORK,        /* unreachable, still failing at the deadline */
	TRIGGER_E_TIMEOUT,        /* deadline passed with no answer */
	TRIGGER_E_PROTOCOL,       /* the answer could not be understood */
	TRIGGER_E_NOMEM,
	TRIGGER_E_CANCELLED,      /* the client shut down first */
	TRIGGER_E_TLS,            /* the server's certificate did not verify */
	TRIGGER_E_LAST
} trigger_code;

/* Static English text for a code ("run not found", ...). */
const char *trigger_strerror(trigger_code code);

/* Whether a failed request with this code may succeed if tried again
 * (network, 5xx, 408, 429). */
int trigger_code_retryable(trigger_code code);

struct trigger_result {
	trigger_code code;
	long status;            /* HTTP status, 0 when no answer came */
	char error[256];        /* the API's "error" text, or curl's */
	json_t *body;           /* parsed JSON answer or NULL; borrowed */
	const char *jwt;        /* x-trigger-jwt response header or NULL */
	json_t *headers;        /* response headers a function passes on
				 * (lowercased names), or NULL; borrowed */
};

/* res for a log line: "HTTP 404: Run not found", or, when no answer came,
 * what happened ("connection refused: ...").  Returns buf. */
const char *trigger_result_text(const struct trigger_result *res, char *buf,
				size_t len);

/* Runs on the event thread; res and everything it points to is valid only
 * during the call. */
typedef void (*trigger_done_fn)(void *arg, const struct trigger_result *res);

/* ---- credentials ------------------------------------------------------ */

typedef struct trigger_cred trigger_cred;

/* A secret key (tr_dev_..., tr_prod_..., tr_stg_...).  Returns NULL with a
 * message in err when the key is empty or malformed. */
trigger_cred *trigger_cred_secret_key(const char *key, char *err, size_t errlen);

/* A public access token (JWT).  Decoded, not verified (only the server has
 * the secret).  Returns NULL with a message in err when it is not a JWT. */
trigger_cred *trigger_cred_token(const char *jwt, char *err, size_t errlen);

void trigger_cred_free(trigger_cred *cred);

/* Whether a secret key is an additional API key (tr_<env>_sk_<24
 * alphanumerics>): it cannot sign tokens; the client asks the API for
 * them (POST /api/v1/auth/public-tokens) instead. */
int trigger_key_is_additional(const char *key);

int trigger_cred_is_secret(const trigger_cred *cred);
/* For tokens: exp (0 when absent), sub (NULL when absent), the scopes. */
int64_t trigger_cred_exp(const trigger_cred *cred);
const char *trigger_cred_sub(const trigger_cred *cred);
size_t trigger_cred_nscopes(const trigger_cred *cred);
const char *trigger_cred_scope(const trigger_cred *cred, size_t i);

/* Does the credential allow action ("read"/"write") on resource type
 * ("runs", "inputStreams", "tasks", "waitpoints") with id (NULL: any/all)?
 * A secret key allows everything.  Expiry is not considered here. */
int trigger_cred_allows(const trigger_cred *cred, const char *action,
			const char *type, const char *id);

/* The scope rules alone, for a list of scope strings. */
int trigger_scopes_allow(const char *const *scopes, size_t n,
			 const char *action, const char *type, const char *id);

/* Mint an HS256 public token signed with secret key `key`: claims
 * iss/aud/sub/pub/scopes/iat/exp as in trigger-api.md.  Returns a malloc'd
 * string or NULL. */
char *trigger_jwt_mint(const char *key, const char *sub,
		       const char *const *scopes, size_t nscopes,
		       int64_t iat, int64_t exp);

/* ---- the client ------------------------------------------------------- */

typedef struct trigger_client trigger_client;

struct trigger_client_opts {
	const char *api_url;       /* NULL: $TRIGGER_API_URL, else the cloud */
	const trigger_cred *cred;  /* copied; required */
	int insecure_http;         /* allow http:// to non-loopback hosts */
	long send_timeout_ms;      /* retry deadline for sends; 0: 30 s */
	long request_timeout_ms;   /* retry deadline for other calls; 0: 30 s */
	const char *user_agent;    /* NULL: "libtriggerclient/<version>" */
	const char *stream_url;    /* streams; NULL: $TRIGGER_STREAM_URL, else api_url */
	const char *branch;        /* NULL: $TRIGGER_PREVIEW_BRANCH (x-trigger-branch) */
	/* PEM file of the certificate authorities to trust instead of the
	 * system's (a self-hosted instance behind a private CA).  NULL:
	 * $TRIGGER_CA_FILE, else the system bundle. */
	const char *ca_file;
	/* Connect at once and keep the connection alive while no request is
	 * running (a HEAD of the base URL every 45 s, for up to 10 minutes of
	 * idleness): for long-lived clients whose next request should not pay
	 * a new TCP and TLS handshake.  https only.  Servers close idle connections after
	 * a minute or so. */
	int keep_warm;
};

/* Validates the URL (scheme, host; TLS always verified) and starts the
 * event thread.  NULL with a message in err on failure. */
trigger_client *trigger_client_new(const struct trigger_client_opts *opts,
				   char *err, size_t errlen);

/* Stops the event thread.  Every pending request completes with
 * TRIGGER_E_CANCELLED and every subscription gets TRIGGER_SUB_CLOSED before
 * this returns.  Must not be called from a callback. */
void trigger_client_free(trigger_client *client);

const char *trigger_client_url(const trigger_client *client);

/* Connect to the API and ask for the base URL (HEAD): OK on any HTTP
 * answer; TRIGGER_E_TLS when the server's certificate does not verify
 * (res->error says why), NETWORK or TIMEOUT when it cannot be reached.  No
 * retries; request_timeout_ms bounds it.  For a clear error at startup. */
int trigger_client_check(trigger_client *c, trigger_done_fn done, void *arg);

/* ---- requests (all asynchronous) ---------------------------------------
 * Each returns 0 when queued, or a trigger_code when refused at once (bad
 * arguments, scope or expiry refused locally); when refused, done is not
 * called.  Run and stream ids are percent-encoded by the client. */

/* Send one record.  json/len must be one valid JSON value (the caller
 * validated it); the body is {"data":<json>}.  Retried on network errors,
 * 5xx, 408 and 429 with backoff until send_timeout_ms.  Sends on one
 * client are started in the order they are submitted per (run, stream).
 * The API has no idempotent send, so when an attempt may have been stored
 * (a 5xx, or the connection failed after the request went out) the stream
 * is read to see whether it is there before the send is repeated; for
 * that the first send to a stream also reads the stream's tail, and the
 * credential needs read access to the run (else retries are blind).  An
 * OK found that way has status 0.  See "was it stored?" in api.c. */
int trigger_send(trigger_client *c, const char *run_id, const char *stream_id,
		 const char *json, size_t len, trigger_done_fn done, void *arg);

/* GET /api/v3/runs/<id>; res->body is the run object. */
int trigger_run_get(trigger_client *c, const char *run_id,
		    trigger_done_fn done, void *arg);

/* GET /api/v1/runs?filter[status]=...&page[size]=...[&page[after]=...];
 * status_filter NULL for all.  res->body is {"data":[...],"pagination":{}}. */
int trigger_runs_list(trigger_client *c, const char *status_filter,
		      int page_size, const char *after,
		      trigger_done_fn done, void *arg);

/* GET /api/v1/waitpoints/tokens/<id> (a secret key only: the key goes as
 * itself).  res->body: id, status (WAITING, COMPLETED, TIMED_OUT), output
 * (the JSON text of the data), outputIsError, ...  An unknown id is a 500
 * (TRIGGER_E_SERVER), retried for 1.5 s only. */
int trigger_waitpoint_get(trigger_client *c, const char *waitpoint_id,
			  trigger_done_fn done, void *arg);

/* POST /api/v1/tasks/<task>/trigger with {"payload":<payload_json>}.
 * res->body has "id", res->jwt the run's public token. */
int trigger_task_trigger(trigger_client *c, const char *task_id,
			 const char *payload_json, trigger_done_fn done,
			 void *arg);

/* POST /api/v2/runs/<id>/cancel. */
int trigger_run_cancel(trigger_client *c, const char *run_id,
		       trigger_done_fn done, void *arg);

/* ---- output streams (output.c) ----------------------------------------
 * Append one JSON value (validated by the caller) to a run's output stream
 * as the SDK's streams.writer does: the stream's S2 credentials from
 * PUT /realtime/v1/streams/<run>/self/<stream> (a secret key only:
 * TRIGGER_E_FORBIDDEN at once otherwise), cached per stream and asked
 * again when `fresh` (so a finished run refuses: TRIGGER_E_RUN_FINISHED)
 * or when S2 refuses them; then appended to S2 directly as one record
 * {"data":<value>,"id":"<7 chars>"}, so SDK readers get the value itself.
 * done comes once the value is stored (res->body: S2's ack).  Values of
 * one stream are stored in the order submitted, those submitted together
 * or while an append is on its way batched; when one fails, those queued
 * behind it on that stream fail too. */
int trigger_output_append(trigger_client *c, const char *run_id,
			  const char *stream_id, const char *json, size_t len,
			  int fresh, trigger_done_fn done, void *arg);

/* ---- waitpoint tokens (waitpoint.c) ----------------------------------- */

/* POST /api/v1/waitpoints/tokens/<id>/complete with {"data":<json>}: a
 * secret key, or a token scoped write:waitpoints:<id>.  OK also when it
 * was completed before. */
int trigger_waitpoint_complete(trigger_client *c, const char *waitpoint_id,
			       const char *json, size_t len,
			       trigger_done_fn done, void *arg);

/* GET /api/v1/waitpoints/tokens?filter[status]=...&page[size]=100
 * [&page[after]=...] (secret key).  res->body is {"data":[...],
 * "pagination":{"next":...}}. */
int trigger_waitpoints_list(trigger_client *c, const char *status_filter,
			    const char *after, trigger_done_fn done, void *arg);

/* POST /api/v1/waitpoints/tokens (secret key); timeout NULL or "10m".
 * res->body has id and url, res->jwt the token's write:waitpoints:<id>. */
int trigger_waitpoint_create(trigger_client *c, const char *timeout,
			     trigger_done_fn done, void *arg);

/* ---- subscriptions ---------------------------------------------------- */

struct trigger_record {
	long long seq;          /* seq_num: the resume cursor (v1 streams,
				 * which have none: the record's place in
				 * the stream, from 0) */
	long long timestamp;    /* Unix ms */
	const char *id;         /* envelope id ("inp_..."), may be "" (v1) */
	const char *json;       /* the value as one line of compact JSON */
	size_t json_len;        /* without a terminating newline */
};

enum trigger_sub_event {
	/* Everything the server held when this subscription (re)connected has
	 * been delivered; from now on records are new.  Sent once per
	 * subscription, after its first successful connect. */
	TRIGGER_SUB_CAUGHT_UP,
	/* The connection dropped or stalled; reconnecting with backoff and
	 * Last-Event-ID.  res says why. */
	TRIGGER_SUB_RECONNECTING,
	/* A reconnect succeeded. */
	TRIGGER_SUB_CONNECTED,
	/* Given up for good (400/401/403/404/409/410/422); res says why.
	 * TRIGGER_SUB_CLOSED follows. */
	TRIGGER_SUB_FAILED,
	/* Last callback of a subscription: after trigger_unsubscribe, after
	 * FAILED, or at client shutdown.  The arg may be freed now. */
	TRIGGER_SUB_CLOSED,
};

struct trigger_sub_callbacks {
	/* Every record exactly once, in seq order, de-duplicated by seq and
	 * envelope id across reconnects.  Storage commands are skipped. */
	void (*record)(void *arg, const struct trigger_record *rec);
	void (*event)(void *arg, enum trigger_sub_event ev,
		      const struct trigger_result *res);
};

typedef struct trigger_sub trigger_sub;

/* Subscribe to an input stream from after_seq (-1: from record 0).  Held
 * open with Timeout-Seconds: 600 and re-opened before that limit; a
 * connection that brings no byte (not even a ping) for 40 s is replaced.
 * Streams of v2 runs and of v1 (Redis-backed) runs are both read; the
 * answer says which.  Returns NULL (and calls nothing) if refused at
 * once. */
trigger_sub *trigger_subscribe(trigger_client *c, const char *run_id,
			       const char *stream_id, long long after_seq,
			       const struct trigger_sub_callbacks *cb,
			       void *arg);

/* The same for a run's output stream (streams v2: what streams.pipe and
 * streams.writer write, GET /realtime/v1/streams/<run>/<stream>). */
trigger_sub *trigger_subscribe_output(trigger_client *c, const char *run_id,
				      const char *stream_id, long long after_seq,
				      const struct trigger_sub_callbacks *cb,
				      void *arg);

/* Ask the subscription to stop; TRIGGER_SUB_CLOSED follows on the event
 * thread (possibly before this returns, if called from a callback).  Any
 * thread. */
void trigger_unsubscribe(trigger_sub *sub);

/* ---- blocking helper -------------------------------------------------- */

/* For tools and tests: run one request synchronously.  Use
 * trigger_sync_done as the done callback with a struct trigger_sync as arg,
 * then trigger_sync_wait.  The result body is json_incref'd into s->body;
 * call trigger_sync_clear afterwards. */
struct trigger_sync {
	int done;
	trigger_code code;
	long status;
	char error[256];
	json_t *body;
	char *jwt;
	void *priv;             /* internal: mutex and condition */
};

void trigger_sync_init(struct trigger_sync *s);
void trigger_sync_done(void *arg, const struct trigger_result *res);
/* Waits for completion; if `queued` (the request function's return) is
 * not 0, completes at once with that code.  Returns the code. */
trigger_code trigger_sync_wait(struct trigger_sync *s, int queued);
void trigger_sync_clear(struct trigger_sync *s);

#ifdef __cplusplus
}
#endif
#endif
