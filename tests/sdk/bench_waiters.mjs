// scripts/bench, sdk side of "many waiters": for every run in RUNS_FILE a
// task-side StandardInputStreamManager (what each task process runs), and
// on each of its streams PREFIX0..PREFIX<K-1>, READERS once() waiters.  A
// manager keeps one tail per stream and hands each record to one waiter,
// as triggerfs's input/S does, so each stream costs one SSE connection and
// its READERS waiters are released by READERS records.
// Prints "ready" once every tail's response has arrived, then, when every
// listener has been released, {"released", "last_ns"} (CLOCK_MONOTONIC).
import { readFileSync } from "node:fs";
import { apiClientManager } from "@trigger.dev/core/v3";
import { StandardInputStreamManager } from "@trigger.dev/core/v3/workers";
import { configureFromEnv, need, out } from "./lib.mjs";

const runs = readFileSync(need("RUNS_FILE"), "utf8").split("\n").filter((l) => l !== "");
const k = Number(need("K"));
const readers = Number(need("READERS"));
const prefix = need("PREFIX");
const total = runs.length * k * readers;

// The tails are fetch() calls: count the answered ones to know when every
// stream is listening.  Wrapping the global fetch observes the unmodified
// client (lib.mjs traces the same way).
let connected = 0;
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const res = await realFetch(input, init);
  const url = typeof input === "string" ? input : input.url;
  if (url.includes("/input/") && res.ok && ++connected === runs.length * k) {
    process.stdout.write("ready\n");
  }
  return res;
};
configureFromEnv();

let released = 0;
function done() {
  if (++released === total) {
    out({ released, last_ns: process.hrtime.bigint().toString() });
    process.exit(0);
  }
}

for (const run of runs) {
  const manager = new StandardInputStreamManager(
    apiClientManager.clientOrThrow(),
    apiClientManager.baseURL,
  );
  manager.setRunId(run, "v2");
  for (let s = 0; s < k; s++) {
    for (let r = 0; r < readers; r++) {
      manager.once(`${prefix}${s}`).then(done);
    }
  }
}
