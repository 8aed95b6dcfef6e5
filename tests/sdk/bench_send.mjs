// scripts/bench, sdk side of "send throughput": every line of RECORDS_FILE
// (one JSON value a line) to each of STREAMS (comma separated) of RUN_ID
// with the SDK's `streams.input({ id }).send(runId, v)`, sequentially per
// stream, the streams concurrently.  Timed from the first send to the last
// answer (Node's start-up and the file's parsing are not counted).
// Prints {"records", "seconds", "cpu_s"}.
import { readFileSync } from "node:fs";
import { streams } from "@trigger.dev/sdk";
import { configureFromEnv, describeError, fail, need, out } from "./lib.mjs";

configureFromEnv();
const runId = need("RUN_ID");
const values = readFileSync(need("RECORDS_FILE"), "utf8")
  .split("\n")
  .filter((l) => l.trim() !== "")
  .map((l) => JSON.parse(l));
const ids = need("STREAMS").split(",");

async function sendAll(stream) {
  for (const v of values) await stream.send(runId, v);
}

const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
try {
  await Promise.all(ids.map((id) => sendAll(streams.input({ id }))));
} catch (err) {
  fail(`send: ${JSON.stringify(describeError(err))}`);
}
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(cpu0);
out({ records: values.length * ids.length, seconds, cpu_s: (cpu.user + cpu.system) / 1e6 });
