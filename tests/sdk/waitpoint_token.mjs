// Waitpoint tokens with the SDK's public API:
//   ACTION=create:   wait.createToken({ timeout: TIMEOUT }); prints {"id": ...}
//                    and writes the token's public access token to TOKEN_OUT
//                    (mode 0600) when given.
//   ACTION=complete: wait.completeToken(WAITPOINT_ID, <DATA parsed as JSON>);
//                    prints what the SDK returned.
import { wait } from "@trigger.dev/sdk";
import { configureFromEnv, describeError, env, exit, fail, need, out, writeSecret } from "./lib.mjs";

configureFromEnv();
try {
  if (env.ACTION === "create") {
    const token = await wait.createToken(env.TIMEOUT ? { timeout: env.TIMEOUT } : {});
    if (env.TOKEN_OUT) writeSecret(env.TOKEN_OUT, token.publicAccessToken);
    out({ id: token.id });
  } else if (env.ACTION === "complete") {
    out(await wait.completeToken(need("WAITPOINT_ID"), JSON.parse(need("DATA"))));
  } else {
    fail("ACTION must be create or complete");
  }
} catch (err) {
  out(describeError(err));
  await exit(2);
}
