// Mint a public access token with the SDK's `auth.createPublicToken({
// scopes })` (SCOPES: the SDK's scope object as JSON, e.g.
// {"write":{"inputStreams":["run_x"]}}; EXPIRATION optional, e.g. "10m"),
// write it to TOKEN_OUT (mode 0600) and print its claims.  Then, acting with
// that token through `auth.withAuth`, send each stdin JSON line to RUN_ID /
// STREAM_ID (if given), printing {"sent": i} or the SDK's error per value.
import { auth, streams } from "@trigger.dev/sdk";
import {
  configureFromEnv, exit, describeError, env, jwtClaims, need, out, readJsonLines, writeSecret,
} from "./lib.mjs";

configureFromEnv();
let token;
try {
  token = await auth.createPublicToken({
    scopes: JSON.parse(need("SCOPES")),
    ...(env.EXPIRATION ? { expirationTime: env.EXPIRATION } : {}),
  });
} catch (err) {
  out({ mint: "failed", ...describeError(err) });
  await exit(2);
}
writeSecret(need("TOKEN_OUT"), token);
out({ claims: jwtClaims(token) });

if (env.RUN_ID) {
  const stream = streams.input({ id: need("STREAM_ID") });
  const values = await readJsonLines();
  await auth.withAuth({ accessToken: token }, async () => {
    for (let i = 0; i < values.length; i++) {
      try {
        await stream.send(env.RUN_ID, values[i]);
        out({ sent: i });
      } catch (err) {
        out({ failed: i, ...describeError(err) });
      }
    }
  });
}
