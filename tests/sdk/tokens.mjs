// Waitpoint tokens with the SDK outside a task: wait.createToken, then
// wait.completeToken (with the token's own public access token when
// COMPLETE_WITH=jwt, as a frontend would), wait.retrieveToken and
// wait.listTokens; prints what the SDK parsed at each step.
import { auth, wait } from "@trigger.dev/sdk";
import { configureFromEnv, exit, describeError, env, out } from "./lib.mjs";

configureFromEnv();
try {
  const token = await wait.createToken({ timeout: "1h", tags: ["sdk-test"] });
  out({ created: { id: token.id, url: token.url, hasPublicAccessToken: !!token.publicAccessToken } });
  const before = await wait.retrieveToken(token.id);
  out({ before: { status: before.status, output: before.output ?? null } });
  if (env.COMPLETE_WITH === "jwt") {
    await auth.withAuth({ accessToken: token.publicAccessToken }, async () => {
      out({ completed: await wait.completeToken(token.id, { approved: true, by: "jwt" }) });
    });
  } else {
    out({ completed: await wait.completeToken(token.id, { approved: true, by: "key" }) });
  }
  const after = await wait.retrieveToken(token.id);
  out({ after: { status: after.status, output: after.output, completedAt: after.completedAt instanceof Date } });
  const listed = [];
  for await (const t of wait.listTokens({ status: "COMPLETED", tags: ["sdk-test"] })) {
    listed.push(t.id);
    if (listed.length > 50) break;
  }
  out({ listed: listed.includes(token.id) });
  await exit(0);
} catch (err) {
  out({ tokens: "failed", ...describeError(err) });
  await exit(2);
}
