// scripts/bench, sdk side of "output streams".  The SDK's streams.writer
// runs outside a task here the way output_write.mjs runs it: the task-side
// StandardRealtimeStreamsManager from @trigger.dev/core registered as the
// global manager, then the public `streams.writer(key, { target: runId })`,
// so what is measured is the SDK's own writer: the PUT for S2 credentials,
// StreamsWriterV2 and its S2 append session (fetch transport: lib.mjs),
// BatchTransform lingering X-S2-Flush-Interval-Ms.
//   MODE=send:    every line of RECORDS_FILE written to RUN_ID's output
//                 stream STREAM_ID by one writer; timed from the first write
//                 until waitUntilComplete() (all acknowledged).
//                 Prints {"records", "seconds", "cpu_s"}.
//   MODE=latency: COUNT round trips: one writer stays open; each value is
//                 written when the previous one was read back through the
//                 public `streams.read(runId, key)`; a sample runs from
//                 write() until read yields it.  One round trip first, not
//                 timed.  Prints {"samples_ns": [...]}.
import { readFileSync } from "node:fs";
import { streams } from "@trigger.dev/sdk";
import { apiClientManager, realtimeStreams } from "@trigger.dev/core/v3";
import { StandardRealtimeStreamsManager } from "@trigger.dev/core/v3/workers";
import { configureFromEnv, describeError, fail, need, out, s2FetchTransport } from "./lib.mjs";

configureFromEnv();
s2FetchTransport();
realtimeStreams.setGlobalManager(new StandardRealtimeStreamsManager(
  apiClientManager.clientOrThrow(), apiClientManager.baseURL));
const runId = need("RUN_ID");
const key = need("STREAM_ID");

async function send() {
  const values = readFileSync(need("RECORDS_FILE"), "utf8")
    .split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const { waitUntilComplete } = streams.writer(key, {
    target: runId,
    execute: ({ write }) => { for (const v of values) write(v); },
  });
  await waitUntilComplete();
  const cpu = process.cpuUsage(cpu0);
  out({ records: values.length, seconds: Number(process.hrtime.bigint() - t0) / 1e9,
        cpu_s: (cpu.user + cpu.system) / 1e6 });
}

async function latency() {
  const count = Number(need("COUNT"));
  let writeOne, finish;
  const done = new Promise((r) => { finish = r; });
  const { waitUntilComplete } = streams.writer(key, {
    target: runId,
    execute: ({ write }) => { writeOne = write; return done; },
  });
  const reader = (await streams.read(runId, key, { timeoutInSeconds: 60 }))[Symbol.asyncIterator]();
  const samples = [];
  for (let i = 0; i <= count; i++) {
    const t0 = process.hrtime.bigint();
    writeOne({ i, via: "sdk" });
    const { value, done: end } = await reader.next();
    const t1 = process.hrtime.bigint();
    if (end || value?.i !== i) throw new Error(`round trip ${i} got ${JSON.stringify(value)}`);
    if (i > 0) samples.push(Number(t1 - t0));
  }
  finish();
  await waitUntilComplete();
  out({ samples_ns: samples });
}

try {
  await (process.env.MODE === "latency" ? latency() : send());
} catch (err) {
  fail(`output: ${JSON.stringify(describeError(err))}`);
}
process.exit(0);
