// scripts/bench, sdk side of "delivery latency": COUNT round trips on
// RUN_ID's input stream STREAM_ID.  The receiving end is what a task runs:
// the StandardInputStreamManager from @trigger.dev/core registered as the
// input-stream manager for the run (as receive.mjs does), waited on with
// `streams.input({ id }).once()`; the sending end is the SDK's send().
// Each sample: from just before send() until once() has the value.  One
// round trip first, not timed, connects the manager's tail.
// Prints {"samples_ns": [...]}.
import { streams } from "@trigger.dev/sdk";
import { apiClientManager, inputStreams } from "@trigger.dev/core/v3";
import { StandardInputStreamManager } from "@trigger.dev/core/v3/workers";
import { configureFromEnv, describeError, fail, need, out } from "./lib.mjs";

configureFromEnv();
const runId = need("RUN_ID");
const count = Number(need("COUNT"));
const manager = new StandardInputStreamManager(
  apiClientManager.clientOrThrow(),
  apiClientManager.baseURL,
);
inputStreams.setGlobalManager(manager);
inputStreams.setRunId(runId, "v2");
const stream = streams.input({ id: need("STREAM_ID") });

async function roundTrip(i) {
  // The arrival time is taken when once() settles, not after send() has
  // also returned: the record may come before the send's answer.
  const got = stream.once({ timeoutMs: 30000 }).then((r) => [r, process.hrtime.bigint()]);
  const t0 = process.hrtime.bigint();
  await stream.send(runId, { i, via: "sdk" });
  const [result, t1] = await got;
  if (!result.ok) throw result.error;
  if (result.output?.i !== i) throw new Error(`round trip ${i} got ${JSON.stringify(result.output)}`);
  return Number(t1 - t0);
}

const samples = [];
try {
  for (let i = 0; i <= count; i++) {
    const ns = await roundTrip(i);
    if (i > 0) samples.push(ns);
  }
} catch (err) {
  fail(`latency: ${JSON.stringify(describeError(err))}`);
}
manager.reset();
out({ samples_ns: samples });
process.exit(0);
