// Receive COUNT values from RUN_ID's input stream STREAM_ID the way a task
// does: the task-side StandardInputStreamManager from @trigger.dev/core,
// registered as the global input-stream manager for RUN_ID exactly as the
// worker runtime registers it, driven through the SDK's public
// `streams.input({ id }).once()` (MODE=once, COUNT consecutive calls) or
// `.on(handler)` (MODE=on).  Prints each value as one JSON line.
// TIMEOUT_MS bounds each once() (default 20 s); on timeout prints
// {"timeout": true} and exits 3.
import { streams } from "@trigger.dev/sdk";
import { apiClientManager, inputStreams } from "@trigger.dev/core/v3";
import { StandardInputStreamManager } from "@trigger.dev/core/v3/workers";
import { configureFromEnv, exit, describeError, env, fail, need, out } from "./lib.mjs";

configureFromEnv();
const runId = need("RUN_ID");
const count = Number(need("COUNT"));
const mode = env.MODE ?? "once";
const timeoutMs = Number(env.TIMEOUT_MS ?? 20000);

const manager = new StandardInputStreamManager(
  apiClientManager.clientOrThrow(),
  apiClientManager.baseURL,
  env.SDK_DEBUG === "1",
);
inputStreams.setGlobalManager(manager);
inputStreams.setRunId(runId, "v2");
const stream = streams.input({ id: need("STREAM_ID") });

function finish(code) {
  manager.reset();
  return exit(code);
}

if (mode === "once") {
  for (let i = 0; i < count; i++) {
    let result;
    try {
      result = await stream.once({ timeoutMs });
    } catch (err) {
      out(describeError(err));
      await finish(2);
    }
    if (!result.ok) {
      out({ timeout: true, error: result.error.message });
      await finish(3);
    }
    out({ value: result.output });
  }
  finish(0);
} else if (mode === "on") {
  let n = 0;
  const timer = setTimeout(() => {
    out({ timeout: true, received: n });
    finish(3);
  }, timeoutMs);
  stream.on((value) => {
    if (n === count) return;
    out({ value });
    if (++n === count) {
      clearTimeout(timer);
      finish(0);
    }
  });
} else {
  fail(`MODE must be once or on, not ${mode}`);
}
