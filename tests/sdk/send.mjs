// Send each JSON value read from stdin (one per line) to RUN_ID's input
// stream STREAM_ID with the SDK's own `streams.input({ id }).send(runId, v)`,
// in order.  Prints {"sent": i} after each accepted send; on the first
// failure prints the error as the SDK surfaced it and exits 2.
import { streams } from "@trigger.dev/sdk";
import { configureFromEnv, exit, describeError, need, out, readJsonLines } from "./lib.mjs";

configureFromEnv();
const runId = need("RUN_ID");
const stream = streams.input({ id: need("STREAM_ID") });
const values = await readJsonLines();
for (let i = 0; i < values.length; i++) {
  try {
    await stream.send(runId, values[i]);
  } catch (err) {
    out({ failed: i, ...describeError(err) });
    await exit(2);
  }
  out({ sent: i });
}
