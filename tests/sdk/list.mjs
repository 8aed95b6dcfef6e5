// List runs with the SDK's `runs.list({ status, limit })` (STATUS: comma
// separated, optional; LIMIT optional) and print the ids of the first page,
// whether the SDK saw a next page, and the first item as parsed.
import { runs } from "@trigger.dev/sdk";
import { configureFromEnv, exit, describeError, env, out } from "./lib.mjs";

configureFromEnv();
try {
  const page = await runs.list({
    ...(env.STATUS ? { status: env.STATUS.split(",") } : {}),
    ...(env.LIMIT ? { limit: Number(env.LIMIT) } : {}),
  });
  out({
    ids: page.data.map((r) => r.id),
    hasNext: page.hasNextPage(),
    first: page.data[0] ?? null,
  });
} catch (err) {
  out({ list: "failed", ...describeError(err) });
  await exit(2);
}
