// Cancel RUN_ID with the SDK's `runs.cancel(runId)` and print the answer as
// the SDK parsed it, or the SDK's error.
import { runs } from "@trigger.dev/sdk";
import { configureFromEnv, exit, describeError, need, out } from "./lib.mjs";

configureFromEnv();
try {
  out(await runs.cancel(need("RUN_ID")));
} catch (err) {
  out({ cancel: "failed", ...describeError(err) });
  await exit(2);
}
