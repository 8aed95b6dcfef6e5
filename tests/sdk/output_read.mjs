// Read RUN_ID's output stream STREAM_ID with the SDK's public
// `streams.read(runId, key)` (what a backend or useRealtimeStream reads),
// printing each chunk as one JSON line {"type": typeof chunk, "value": chunk}
// until COUNT chunks (then exit 0) or TIMEOUT_MS (default 20 s; prints
// {"timeout": true, "received": n} and exits 3).
import { streams } from "@trigger.dev/sdk";
import { configureFromEnv, describeError, env, exit, need, out } from "./lib.mjs";

configureFromEnv();
const count = Number(need("COUNT"));
const controller = new AbortController();
let n = 0;
const timer = setTimeout(() => {
  out({ timeout: true, received: n });
  controller.abort();
  exit(3);
}, Number(env.TIMEOUT_MS ?? 20000));
try {
  const stream = await streams.read(need("RUN_ID"), need("STREAM_ID"), {
    signal: controller.signal,
    timeoutInSeconds: 60,
  });
  for await (const chunk of stream) {
    out({ type: typeof chunk, value: chunk });
    if (++n === count) break;
  }
  clearTimeout(timer);
  await exit(0);
} catch (err) {
  out(describeError(err));
  await exit(2);
}
