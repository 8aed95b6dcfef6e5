// Shared by the tests/sdk/*.mjs scripts: configure the published client from
// the environment (never argv), optionally trace what it sends, and report
// results as one JSON line each so tests/test_sdk.py can parse them.
import { appendFileSync, writeFileSync } from "node:fs";
import { configure } from "@trigger.dev/sdk";

export const env = process.env;

export function need(name) {
  const v = env[name];
  if (v === undefined || v === "") {
    fail(`missing environment variable ${name}`);
  }
  return v;
}

// The credential the script acts with: a public token wins over the secret
// key, as in triggerfs.  configure() is what an application outside a task
// calls; the SDK builds a fresh ApiClient from it for every call.
export function configureFromEnv() {
  const accessToken = env.TRIGGER_ACCESS_TOKEN || env.TRIGGER_SECRET_KEY;
  if (!accessToken) fail("set TRIGGER_ACCESS_TOKEN or TRIGGER_SECRET_KEY");
  configure({ baseURL: need("TRIGGER_API_URL"), accessToken });
  traceFetch();
}

export function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

// The error as the SDK surfaced it: ApiError carries the HTTP status and the
// server's JSON body; connection errors carry neither.
export function describeError(err) {
  return {
    error: err?.message ?? String(err),
    name: err?.constructor?.name ?? typeof err,
    status: typeof err?.status === "number" ? err.status : null,
    body: err?.body ?? null,
  };
}

// process.exit() drops what a pipe has not taken yet: exit once stdout has
// flushed everything written so far.  `await exit(n)` goes no further.
export function exit(code) {
  process.stdout.write("", () => process.exit(code));
  return new Promise(() => {});
}

export function fail(message, code = 1) {
  process.stderr.write(`sdk: ${message}\n`);
  process.exit(code);
}

// Write a secret to a file only its owner can read: tokens never go to
// stdout, argv or logs.
export function writeSecret(path, secret) {
  writeFileSync(path, secret, { mode: 0o600 });
}

// Claims of a JWT without its signature: safe to print.
export function jwtClaims(token) {
  const part = token.split(".")[1];
  return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
}

// Values to send: one JSON text per stdin line (blank lines skipped), so any
// value, including strings that look like numbers, reaches the SDK exactly.
export async function readJsonLines() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return Buffer.concat(chunks)
    .toString("utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l));
}

// With SDK_TRACE=<file>, every request the SDK makes and the status and
// headers it got back are appended there as JSON lines, the credential
// reduced to its kind.  This observes the unmodified client: it wraps the
// global fetch, which is what the SDK calls at request time.
function traceFetch() {
  const file = env.SDK_TRACE;
  if (!file) return;
  const realFetch = globalThis.fetch;
  const log = (o) => appendFileSync(file, JSON.stringify(o) + "\n");
  globalThis.fetch = async (input, init = {}) => {
    const url = typeof input === "string" ? input : input.url;
    const headers = {};
    for (const [k, v] of new Headers(init.headers ?? input?.headers).entries()) {
      headers[k] = k === "authorization" ? redact(v) : v;
    }
    const req = { method: init.method ?? "GET", url, headers };
    if (typeof init.body === "string") req.body = init.body;
    log({ request: req });
    try {
      const res = await realFetch(input, init);
      const got = Object.fromEntries(res.headers);
      if (got["x-trigger-jwt"]) got["x-trigger-jwt"] = "<jwt>";
      log({ response: { url, status: res.status, headers: got } });
      return res;
    } catch (err) {
      log({ response: { url, error: String(err?.name ?? err) } });
      throw err;
    }
  };
}

function redact(auth) {
  const cred = auth.replace(/^Bearer /, "");
  return cred.split(".").length === 3 ? "Bearer <jwt>" : "Bearer <secret key>";
}

// The S2 client inside the SDK's streams.writer talks to the X-S2-Endpoint
// with its HTTP/2 session protocol (s2s) in Node, and with its fetch
// transport (S2's JSON API over HTTP/1.1) where it cannot use HTTP/2:
// browsers and Cloudflare workerd, which it recognises by WebSocketPair.
// The local server speaks the JSON API only, so scripts that write an output
// stream make the S2 client pick its fetch transport; the rest of the
// writer (PUT, StreamsWriterV2, BatchTransform's linger) is unchanged.
export function s2FetchTransport() {
  globalThis.WebSocketPair ??= class {};
}
