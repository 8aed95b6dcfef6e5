// Trigger TASK_ID with the SDK's `tasks.trigger(taskId, payload)` (PAYLOAD:
// JSON, default {}; IDEMPOTENCY_KEY and TAGS, comma separated, optional),
// print the run id and the public token's claims, and
// write the token (from the x-trigger-jwt response header) to TOKEN_OUT.
// Then, acting with that token, send each stdin JSON line to the new run's
// input stream STREAM_ID (if given), printing {"sent": i} or the error.
import { auth, streams, tasks } from "@trigger.dev/sdk";
import {
  configureFromEnv, exit, describeError, env, jwtClaims, need, out, readJsonLines, writeSecret,
} from "./lib.mjs";

configureFromEnv();
let handle;
try {
  handle = await tasks.trigger(need("TASK_ID"), JSON.parse(env.PAYLOAD ?? "{}"), {
    ...(env.IDEMPOTENCY_KEY ? { idempotencyKey: env.IDEMPOTENCY_KEY } : {}),
    ...(env.TAGS ? { tags: env.TAGS.split(",") } : {}),
  });
} catch (err) {
  out({ trigger: "failed", ...describeError(err) });
  await exit(2);
}
writeSecret(need("TOKEN_OUT"), handle.publicAccessToken);
out({ id: handle.id, claims: jwtClaims(handle.publicAccessToken) });

if (env.STREAM_ID) {
  const stream = streams.input({ id: env.STREAM_ID });
  const values = await readJsonLines();
  await auth.withAuth({ accessToken: handle.publicAccessToken }, async () => {
    for (let i = 0; i < values.length; i++) {
      try {
        await stream.send(handle.id, values[i]);
        out({ sent: i });
      } catch (err) {
        out({ failed: i, ...describeError(err) });
      }
    }
  });
}
