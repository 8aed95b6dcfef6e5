// Retrieve RUN_ID with the SDK's `runs.retrieve(runId)` and print what the
// SDK parsed (dates as ISO strings, plus which fields are Date objects), or
// the SDK's error.
import { runs } from "@trigger.dev/sdk";
import { configureFromEnv, exit, describeError, need, out } from "./lib.mjs";

configureFromEnv();
try {
  const run = await runs.retrieve(need("RUN_ID"));
  const dates = Object.keys(run).filter((k) => run[k] instanceof Date);
  out({ run, dates });
} catch (err) {
  out({ retrieve: "failed", ...describeError(err) });
  await exit(2);
}
