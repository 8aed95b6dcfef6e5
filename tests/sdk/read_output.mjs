// Read the output stream STREAM_ID of RUN_ID with the SDK's
// `streams.read(runId, key)` (what a backend or useRealtimeStream does) and
// print each value it yields as {"value": ...}, stopping after COUNT values.
import { streams } from "@trigger.dev/sdk";
import { configureFromEnv, exit, describeError, need, out } from "./lib.mjs";

configureFromEnv();
const count = Number(need("COUNT"));
try {
  const stream = await streams.read(need("RUN_ID"), need("STREAM_ID"), {
    timeoutInSeconds: 10,
  });
  let seen = 0;
  for await (const value of stream) {
    out({ value, type: typeof value });
    if (++seen >= count) break;
  }
  out({ done: seen });
  await exit(0);
} catch (err) {
  out({ read: "failed", ...describeError(err) });
  await exit(2);
}
