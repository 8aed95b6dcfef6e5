// Write each stdin JSON line to RUN_ID's output stream STREAM_ID with the
// SDK's public `streams.writer(key, { target: runId, execute })`, as a task
// does.  Outside a task the SDK has no realtime-streams manager, so the
// task-side StandardRealtimeStreamsManager from @trigger.dev/core is
// registered as the global one, as the worker runtime does; from there the
// SDK's own code runs: the PUT for S2 credentials, StreamsWriterV2 and its
// S2 append session (its fetch transport: see s2FetchTransport in lib.mjs)
// with BatchTransform lingering X-S2-Flush-Interval-Ms.
// Prints {"written": n, "ms": <until wait() resolved>}.
import { streams } from "@trigger.dev/sdk";
import { apiClientManager, realtimeStreams } from "@trigger.dev/core/v3";
import { StandardRealtimeStreamsManager } from "@trigger.dev/core/v3/workers";
import {
  configureFromEnv, describeError, env, exit, need, out, readJsonLines, s2FetchTransport,
} from "./lib.mjs";

configureFromEnv();
s2FetchTransport();
const values = await readJsonLines();
realtimeStreams.setGlobalManager(new StandardRealtimeStreamsManager(
  apiClientManager.clientOrThrow(), apiClientManager.baseURL, env.SDK_DEBUG === "1"));
const started = performance.now();
try {
  const { waitUntilComplete } = streams.writer(need("STREAM_ID"), {
    target: need("RUN_ID"),
    execute: ({ write }) => {
      for (const v of values) write(v);
    },
  });
  await waitUntilComplete();
  out({ written: values.length, ms: performance.now() - started });
  await exit(0);
} catch (err) {
  out(describeError(err));
  await exit(2);
}
