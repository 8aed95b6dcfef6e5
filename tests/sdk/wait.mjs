// The server side of `streams.input({ id }).wait()`, which itself only runs
// inside a task (it suspends the run through the worker runtime).  Driven
// here with the same pieces the SDK uses:
//   ACTION=create:   apiClient.createInputStreamWaitpoint(RUN_ID, { streamId:
//                    STREAM_ID, timeout: TIMEOUT, lastSeqNum: LAST_SEQ }), the
//                    call .wait() makes; prints the answer.
//   ACTION=retrieve: the SDK's `wait.retrieveToken(WAITPOINT_ID)`, polled every
//                    50 ms until the status is not WAITING (at most POLL_MS,
//                    default 20 s); prints what the SDK parsed.
import { wait } from "@trigger.dev/sdk";
import { apiClientManager } from "@trigger.dev/core/v3";
import { configureFromEnv, exit, describeError, env, fail, need, out } from "./lib.mjs";

configureFromEnv();
try {
  if (env.ACTION === "create") {
    const res = await apiClientManager.clientOrThrow().createInputStreamWaitpoint(need("RUN_ID"), {
      streamId: need("STREAM_ID"),
      ...(env.TIMEOUT ? { timeout: env.TIMEOUT } : {}),
      ...(env.LAST_SEQ ? { lastSeqNum: Number(env.LAST_SEQ) } : {}),
    });
    out(res);
  } else if (env.ACTION === "retrieve") {
    const deadline = Date.now() + Number(env.POLL_MS ?? 20000);
    let token;
    do {
      token = await wait.retrieveToken(need("WAITPOINT_ID"));
      if (token.status !== "WAITING") break;
      await new Promise((r) => setTimeout(r, 50));
    } while (Date.now() < deadline);
    const dates = Object.keys(token).filter((k) => token[k] instanceof Date);
    out({
      status: token.status,
      output: token.output,
      error: token.error ? { name: token.error.name, message: token.error.message } : null,
      dates,
    });
  } else {
    fail("ACTION must be create or retrieve");
  }
} catch (err) {
  out({ [env.ACTION]: "failed", ...describeError(err) });
  await exit(2);
}
