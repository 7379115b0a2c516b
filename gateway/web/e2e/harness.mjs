// Starts the real backend for the browser tests: an OpenID Provider (./idp.mjs), `contoso dev`
// (in-memory accept/process/notify) and a standalone gateway in front of it serving
// gateway/web/dist, which a test can kill and restart. The services accept both the dev login's
// tokens (JWT_SECRET) and the provider's (JWT_JWKS_FILE, JWT_ISSUER = the provider); the gateway
// offers both sign-ins.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CLIENT_ID, PROVIDER_NAME, RESOURCE, startIdentityProvider } from "./idp.mjs";

const here = dirname(fileURLToPath(import.meta.url));
export const WEB_DIR = resolve(here, "..");
export const DIST_DIR = join(WEB_DIR, "dist");
export const DEV_JWT_SECRET = "contoso-dev-secret-change-me-0123456789abcdef";

export const BIN_DIR =
  process.env.CONTOSO_BIN_DIR ??
  join(process.env.CARGO_TARGET_DIR ?? join(homedir(), ".cache/contoso-orders/target"), "debug");

const children = new Set();

function killAll() {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  children.clear();
}
process.on("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs`. */
export async function waitFor(check, { timeoutMs = 15_000, intervalMs = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${lastError.message}` : ""}`);
}

async function ready(url, child, name, timeoutMs = 30_000) {
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}:\n${child.logs()}`);
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      return r.status === 200;
    },
    { timeoutMs, what: `${name} at ${url}` },
  );
}

function start(name, bin, args, env) {
  if (!existsSync(bin)) {
    throw new Error(
      `${bin} is missing: build it with \`cargo build -p contoso -p gateway\` (or set CONTOSO_BIN_DIR)`,
    );
  }
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  const keep = (chunk) => {
    logs = (logs + chunk.toString()).slice(-20_000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  child.logs = () => logs;
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

function stop(child, signal = "SIGKILL") {
  return new Promise((done) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return done();
    child.once("exit", () => done());
    child.kill(signal);
  });
}

/** The backend: returns the gateway's URL and controls for the gateway process. */
export async function startBackend() {
  if (!existsSync(join(DIST_DIR, "index.html"))) {
    throw new Error(`${DIST_DIR}/index.html is missing: run \`npm run build\` first`);
  }
  const [devGateway, accept, notify, gatewayPort, idpPort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const url = `http://127.0.0.1:${gatewayPort}`;
  const dir = mkdtempSync(join(tmpdir(), "contoso-web-e2e-"));
  const idp = await startIdentityProvider({ port: idpPort, appOrigin: url, dir });
  try {
    return await startServices({ url, dir, idp, devGateway, accept, notify, gatewayPort });
  } catch (err) {
    killAll();
    await idp.close();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function startServices({ url, dir, idp, devGateway, accept, notify, gatewayPort }) {
  // Both kinds of token everywhere: the provider's (by its keys and issuer) and the dev secret's.
  const tokens = { JWT_JWKS_FILE: idp.jwksFile, JWT_ISSUER: idp.issuer };
  const dev = start(
    "contoso dev",
    join(BIN_DIR, "contoso"),
    [
      "dev",
      "--gateway-addr",
      `127.0.0.1:${devGateway}`,
      "--accept-addr",
      `127.0.0.1:${accept}`,
      "--notify-addr",
      `127.0.0.1:${notify}`,
    ],
    { RUST_LOG: "warn", ...tokens },
  );
  await ready(`http://127.0.0.1:${accept}/readyz`, dev, "accept-svc");
  await ready(`http://127.0.0.1:${notify}/readyz`, dev, "notify-svc");

  let gateway;
  const gatewayEnv = {
    LISTEN_ADDR: `127.0.0.1:${gatewayPort}`,
    ACCEPT_GRPC_URL: `http://127.0.0.1:${accept}`,
    NOTIFY_GRPC_URL: `http://127.0.0.1:${notify}`,
    DEV_AUTH: "true",
    WEB_DIR: DIST_DIR,
    JWT_SECRET: DEV_JWT_SECRET,
    ...tokens,
    OIDC_AUTHORITY: idp.issuer,
    OIDC_CLIENT_ID: CLIENT_ID,
    OIDC_AUDIENCE: RESOURCE,
    OIDC_PROVIDER_NAME: PROVIDER_NAME,
    RUST_LOG: "warn",
  };
  async function startGateway() {
    // The port was just freed by the killed gateway; retry if it is not bindable yet.
    gateway = start("gateway", join(BIN_DIR, "gateway"), [], gatewayEnv);
    await ready(`${url}/readyz`, gateway, "gateway");
  }
  await startGateway();

  return {
    url,
    idp,
    async killGateway() {
      await stop(gateway);
    },
    startGateway,
    async close() {
      await stop(gateway, "SIGTERM");
      await stop(dev, "SIGTERM");
      killAll();
      await idp.close();
      rmSync(dir, { recursive: true, force: true });
    },
    logs: () => `--- contoso dev ---\n${dev.logs()}\n--- gateway ---\n${gateway?.logs() ?? ""}`,
  };
}
