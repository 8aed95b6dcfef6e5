/* The Trigger.dev scope rules (the webapp's buildJwtAbility with its
 * action aliases), as a table. */
#include "check.h"
#include "trigger.h"

struct scope_case {
	const char *scopes[4];  /* NULL-terminated */
	const char *action, *type, *id;
	int allowed;
};

static const struct scope_case cases[] = {
	/* one id */
	{ { "read:runs:run_1" }, "read", "runs", "run_1", 1 },
	{ { "read:runs:run_1" }, "read", "runs", "run_2", 0 },
	{ { "read:runs:run_1" }, "read", "runs", "run_10", 0 },
	{ { "read:runs:run_10" }, "read", "runs", "run_1", 0 },
	{ { "read:runs:run_1" }, "write", "runs", "run_1", 0 },
	{ { "read:runs:run_1" }, "read", "tasks", "run_1", 0 },
	{ { "read:runs:run_1" }, "read", "runs", NULL, 0 },
	{ { "write:inputStreams:run_1" }, "write", "inputStreams", "run_1", 1 },
	{ { "write:inputStreams:run_1" }, "read", "inputStreams", "run_1", 0 },
	{ { "write:inputStreams:run_1" }, "write", "inputstreams", "run_1", 0 },
	/* the whole type */
	{ { "read:runs" }, "read", "runs", "run_1", 1 },
	{ { "read:runs" }, "read", "runs", NULL, 1 },
	{ { "read:runs" }, "read", "runsx", "run_1", 0 },
	{ { "read:run" }, "read", "runs", "run_1", 0 },
	{ { "read:runs" }, "write", "runs", "run_1", 0 },
	/* ids with colons: everything after the second colon */
	{ { "read:tags:env:prod" }, "read", "tags", "env:prod", 1 },
	{ { "read:tags:env:prod" }, "read", "tags", "env", 0 },
	{ { "read:tags:env" }, "read", "tags", "env:prod", 0 },
	{ { "read:tags:env:prod:x" }, "read", "tags", "env:prod", 0 },
	/* super scopes */
	{ { "read:all" }, "read", "runs", "run_1", 1 },
	{ { "read:all" }, "read", "waitpoints", NULL, 1 },
	{ { "read:all" }, "write", "inputStreams", "run_1", 0 },
	{ { "write:all" }, "write", "inputStreams", "run_1", 1 },
	{ { "write:all" }, "write", "runs", NULL, 1 },
	{ { "write:all" }, "read", "runs", "run_1", 0 },
	{ { "admin" }, "read", "runs", "run_1", 1 },
	{ { "admin" }, "write", "inputStreams", NULL, 1 },
	{ { "admin:runs" }, "read", "runs", "run_1", 0 },
	{ { "administrator" }, "read", "runs", "run_1", 0 },
	{ { "all" }, "read", "runs", "run_1", 0 },
	/* type "all" matches before any id is looked at */
	{ { "read:all:run_1" }, "read", "runs", "run_2", 1 },
	/* "*" is any action; admin only bare (or with an empty type) */
	{ { "*:inputStreams:run_1" }, "write", "inputStreams", "run_1", 1 },
	{ { "*:inputStreams:run_1" }, "read", "inputStreams", "run_1", 1 },
	{ { "*:inputStreams:run_1" }, "write", "inputStreams", "run_2", 0 },
	{ { "*:all" }, "read", "runs", "run_1", 1 },
	{ { "*" }, "read", "runs", "run_1", 0 },
	{ { "admin:" }, "write", "runs", "run_1", 1 },
	{ { "admin:inputStreams" }, "write", "inputStreams", "run_1", 0 },
	{ { "admin:inputStreams" }, "admin", "inputStreams", "run_1", 1 },
	{ { "admin:all" }, "write", "runs", "run_1", 0 },
	/* an empty id is no id */
	{ { "read:runs:" }, "read", "runs", "run_1", 1 },
	/* trigger, batchTrigger and update accept write scopes */
	{ { "write:tasks:t1" }, "trigger", "tasks", "t1", 1 },
	{ { "write:tasks" }, "batchTrigger", "tasks", "t1", 1 },
	{ { "write:all" }, "update", "runs", "r", 1 },
	{ { "trigger:tasks:t1" }, "trigger", "tasks", "t1", 1 },
	{ { "trigger:tasks:t1" }, "write", "tasks", "t1", 0 },
	{ { "write:tasks:t1" }, "trigger", "tasks", "t2", 0 },
	{ { "read:tasks:t1" }, "trigger", "tasks", "t1", 0 },
	{ { "write:runs:r" }, "read", "runs", "r", 0 },
	/* exact and case-sensitive */
	{ { "Read:runs:run_1" }, "read", "runs", "run_1", 0 },
	{ { "read:runs:RUN_1" }, "read", "runs", "run_1", 0 },
	{ { " read:runs:run_1" }, "read", "runs", "run_1", 0 },
	{ { "read:runs:run_1 " }, "read", "runs", "run_1", 0 },
	{ { "read::run_1" }, "read", "runs", "run_1", 0 },
	{ { "" }, "read", "runs", "run_1", 0 },
	/* several scopes: any one suffices */
	{ { "read:runs:run_1", "write:inputStreams:run_1" },
	  "write", "inputStreams", "run_1", 1 },
	{ { "read:runs:run_1", "write:inputStreams:run_1" },
	  "write", "inputStreams", "run_2", 0 },
	{ { "read:tasks:t", "read:runs:run_2", "read:runs:run_1" },
	  "read", "runs", "run_1", 1 },
	/* nothing */
	{ { NULL }, "read", "runs", "run_1", 0 },
	{ { NULL }, "read", "runs", NULL, 0 },
};

static size_t count(const char *const *scopes)
{
	size_t n = 0;

	while (n < 4 && scopes[n])
		n++;
	return n;
}

static void test_table(void)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct scope_case *c = &cases[i];
		size_t n = count(c->scopes);

		CHECK(trigger_scopes_allow(c->scopes, n, c->action, c->type,
					   c->id) == c->allowed,
		      "case %zu: [%s%s] %s %s %s should be %s", i,
		      n ? c->scopes[0] : "", n > 1 ? ", ..." : "", c->action,
		      c->type, c->id ? c->id : "(all)",
		      c->allowed ? "allowed" : "refused");
	}
}

static void test_odd_arguments(void)
{
	const char *scopes[] = { "admin", NULL, "read:runs" };

	CHECK(!trigger_scopes_allow(scopes, 1, NULL, "runs", "r"), "no action");
	CHECK(!trigger_scopes_allow(scopes, 1, "read", NULL, "r"), "no type");
	CHECK(!trigger_scopes_allow(scopes, 1, "", "runs", "r"), "empty action");
	CHECK(trigger_scopes_allow(scopes + 1, 2, "read", "runs", "r"),
	      "a NULL entry is skipped");
	CHECK(!trigger_scopes_allow(NULL, 0, "read", "runs", "r"), "no scopes");
}

static void test_cred_allows(void)
{
	char err[256];
	trigger_cred *key = trigger_cred_secret_key("tr_dev_abc123", err, sizeof(err));

	CHECK(key && trigger_cred_allows(key, "write", "inputStreams", NULL),
	      "a secret key allows everything");
	CHECK(key && trigger_cred_allows(key, "read", "runs", "run_x"),
	      "a secret key allows everything");
	trigger_cred_free(key);
}

int main(void)
{
	test_table();
	test_odd_arguments();
	test_cred_allows();
	return check_report();
}
