import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createOidcAuth, jwtPayload, providerLabel, type OidcDeps } from "../src/auth/oidc";
import { SignInError } from "../src/auth/provider";
import { sessionState, signOutEverywhere, startSession } from "../src/auth/session";
import type { OidcConfig } from "../src/config";
import { parseRoute, safeNext } from "../src/router";
import { memoryStorage } from "../src/lib/storage";

const ISSUER = "https://idp.example.test";
const ORIGIN = "https://shop.example.test";
const CONFIG: OidcConfig = {
  authority: ISSUER,
  clientId: "contoso-shop",
  scope: "openid profile",
  audience: "urn:contoso:orders",
  name: "Contoso ID",
};
const NOW = 1_800_000_000_000;

const b64url = (data: string | Buffer) => Buffer.from(data).toString("base64url");
/** A JWT-shaped token (the client never checks signatures of tokens it gets from the token endpoint). */
const jwt = (payload: object) => `${b64url(JSON.stringify({ alg: "RS256", kid: "k1" }))}.${b64url(JSON.stringify(payload))}.c2ln`;

interface TokenCall {
  params: URLSearchParams;
}

/** A fake identity provider behind `fetch`: discovery and a token endpoint that checks PKCE. */
function provider(options: { endSession?: boolean; tokenError?: string; reachable?: boolean; issuer?: string } = {}) {
  const issuer = options.issuer ?? ISSUER;
  const tokenCalls: TokenCall[] = [];
  /** code → the authorization request it was issued for. */
  const codes = new Map<string, URL>();
  const fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    if (options.reachable === false) throw new TypeError("fetch failed");
    const url = new URL(input instanceof Request ? input.url : String(input));
    const json = (body: object, status = 200) =>
      new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
    if (url.pathname === "/.well-known/openid-configuration") {
      return json({
        issuer,
        authorization_endpoint: `${issuer}/auth`,
        token_endpoint: `${issuer}/token`,
        ...(options.endSession === false ? {} : { end_session_endpoint: `${issuer}/session/end` }),
        id_token_signing_alg_values_supported: ["RS256"],
        code_challenge_methods_supported: ["S256"],
      });
    }
    if (url.pathname === "/token") {
      const params = new URLSearchParams(init?.body as string | URLSearchParams);
      tokenCalls.push({ params });
      if (options.tokenError) return json({ error: "invalid_grant", error_description: options.tokenError }, 400);
      const request = codes.get(params.get("code") ?? "");
      const verifier = params.get("code_verifier") ?? "";
      const challenge = createHash("sha256").update(verifier).digest("base64url");
      if (!request || request.searchParams.get("code_challenge") !== challenge) {
        return json({ error: "invalid_grant", error_description: "PKCE verification failed" }, 400);
      }
      const now = Math.floor(NOW / 1000);
      return json({
        token_type: "Bearer",
        expires_in: 300,
        scope: "openid profile",
        access_token: jwt({ iss: issuer, sub: "ada-1815", aud: "contoso-orders", exp: now + 300, iat: now }),
        id_token: jwt({
          iss: issuer,
          sub: "ada-1815",
          aud: CONFIG.clientId,
          exp: now + 300,
          iat: now,
          nonce: request.searchParams.get("nonce"),
          preferred_username: "ada",
        }),
      });
    }
    return json({ error: "not_found" }, 404);
  };
  /** The provider's answer to an authorization request: back to the app with a code. */
  function approve(authorizationUrl: string, extra: Record<string, string> = {}): URL {
    const request = new URL(authorizationUrl);
    const code = `code-${codes.size + 1}`;
    codes.set(code, request);
    const back = new URL(request.searchParams.get("redirect_uri") ?? "");
    back.searchParams.set("code", code);
    back.searchParams.set("state", request.searchParams.get("state") ?? "");
    back.searchParams.set("iss", issuer);
    for (const [k, v] of Object.entries(extra)) back.searchParams.set(k, v);
    return back;
  }
  return { fetch: fetch as typeof globalThis.fetch, approve, tokenCalls };
}

function setup(options: Parameters<typeof provider>[0] = {}, config: OidcConfig = CONFIG) {
  const idp = provider(options);
  let now = NOW;
  const storage = memoryStorage();
  const deps: OidcDeps = { storage, origin: ORIGIN, fetch: idp.fetch, now: () => now };
  return {
    idp,
    storage,
    auth: createOidcAuth(config, deps),
    later: (ms: number) => (now += ms),
  };
}

async function rejection(promise: Promise<unknown>): Promise<SignInError> {
  const err = await promise.then(
    () => {
      throw new Error("expected a refusal");
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SignInError);
  return err as SignInError;
}

describe("sign-in with an identity provider", () => {
  it("starts an authorization code request with PKCE S256, state, nonce and the API's resource", async () => {
    const { auth, storage } = setup();
    const url = new URL(await auth.beginSignIn("/orders/42"));
    expect(url.origin + url.pathname).toBe(`${ISSUER}/auth`);
    const p = url.searchParams;
    expect(p.get("response_type")).toBe("code");
    expect(p.get("client_id")).toBe("contoso-shop");
    expect(p.get("redirect_uri")).toBe(`${ORIGIN}/auth/callback`);
    expect(p.get("scope")).toBe("openid profile");
    expect(p.get("code_challenge_method")).toBe("S256");
    expect(p.get("resource")).toBe("urn:contoso:orders");
    expect(p.get("audience")).toBe("urn:contoso:orders");
    expect(p.get("state")).toMatch(/^[\w-]{20,}$/);
    expect(p.get("nonce")).toMatch(/^[\w-]{20,}$/);
    // The verifier stays in this tab; only its S256 hash travels.
    const kept = JSON.parse(storage.getItem("contoso.oidc.pending.v1") ?? "null");
    expect(kept.next).toBe("/orders/42");
    expect(kept.state).toBe(p.get("state"));
    expect(createHash("sha256").update(kept.codeVerifier).digest("base64url")).toBe(p.get("code_challenge"));
    expect(url.href).not.toContain(kept.codeVerifier);
    expect(auth.hasPendingSignIn()).toBe(true);
  });

  it("each sign-in gets its own verifier and state", async () => {
    const { auth } = setup();
    const a = new URL(await auth.beginSignIn("/")).searchParams;
    const b = new URL(await auth.beginSignIn("/")).searchParams;
    expect(a.get("state")).not.toBe(b.get("state"));
    expect(a.get("code_challenge")).not.toBe(b.get("code_challenge"));
  });

  it("the callback exchanges the code with the verifier and makes a session for the token's user", async () => {
    const { auth, idp } = setup();
    const back = idp.approve(await auth.beginSignIn("/orders/42"));
    const { session, next } = await auth.completeSignIn(back);
    expect(next).toBe("/orders/42");
    expect(session.userId).toBe("ada-1815");
    expect(session.name).toBe("ada");
    expect(session.provider).toBe("oidc");
    expect(session.expiresAt).toBe(NOW + 300_000);
    expect(jwtPayload(session.accessToken)?.aud).toBe("contoso-orders");
    // A public client: the code, the verifier and the resource, no secret.
    const call = idp.tokenCalls[0].params;
    expect(call.get("grant_type")).toBe("authorization_code");
    expect(call.get("client_id")).toBe("contoso-shop");
    expect(call.get("redirect_uri")).toBe(`${ORIGIN}/auth/callback`);
    expect(call.get("resource")).toBe("urn:contoso:orders");
    expect(call.get("client_secret")).toBeNull();
    expect(auth.hasPendingSignIn()).toBe(false);
    // Signing out ends the provider's session too, and comes back to /login.
    const logout = new URL(session.signOutUrl ?? "");
    expect(logout.origin + logout.pathname).toBe(`${ISSUER}/session/end`);
    expect(logout.searchParams.get("post_logout_redirect_uri")).toBe(`${ORIGIN}/login`);
    expect(logout.searchParams.get("client_id")).toBe("contoso-shop");
    expect(jwtPayload(logout.searchParams.get("id_token_hint") ?? "")?.sub).toBe("ada-1815");
  });

  it("a callback is good once", async () => {
    const { auth, idp } = setup();
    const back = idp.approve(await auth.beginSignIn("/"));
    await auth.completeSignIn(back);
    const err = await rejection(auth.completeSignIn(back));
    expect(err.message).toMatch(/expired or was already used/);
    expect(idp.tokenCalls).toHaveLength(1);
  });

  it("a callback for another sign-in (state) is refused without exchanging the code", async () => {
    const { auth, idp } = setup();
    const back = idp.approve(await auth.beginSignIn("/"));
    back.searchParams.set("state", "forged");
    const err = await rejection(auth.completeSignIn(back));
    expect(err.message).toMatch(/did not match this sign-in/);
    expect(idp.tokenCalls).toHaveLength(0);
  });

  it("a code exchanged with another verifier is refused by the provider, and said so", async () => {
    const { auth, idp, storage } = setup();
    const back = idp.approve(await auth.beginSignIn("/"));
    const kept = JSON.parse(storage.getItem("contoso.oidc.pending.v1") ?? "null");
    storage.setItem("contoso.oidc.pending.v1", JSON.stringify({ ...kept, codeVerifier: "x".repeat(43) }));
    const err = await rejection(auth.completeSignIn(back));
    expect(err.message).toBe("Contoso ID refused the sign-in: PKCE verification failed.");
  });

  it("a refusal at the provider comes back in plain words", async () => {
    const { auth, idp } = setup();
    const back = idp.approve(await auth.beginSignIn("/"));
    back.searchParams.delete("code");
    back.searchParams.set("error", "access_denied");
    back.searchParams.set("error_description", "End-User aborted interaction");
    const err = await rejection(auth.completeSignIn(back));
    expect(err.message).toBe("Sign-in was cancelled or refused: End-User aborted interaction");
  });

  it("a sign-in left at the provider for half an hour is stale", async () => {
    const { auth, idp, later } = setup();
    const back = idp.approve(await auth.beginSignIn("/"));
    later(31 * 60 * 1000);
    const err = await rejection(auth.completeSignIn(back));
    expect(err.message).toMatch(/expired/);
  });

  it("a token endpoint error is shown with the provider's description", async () => {
    const { auth, idp } = setup({ tokenError: "grant request is invalid" });
    const back = idp.approve(await auth.beginSignIn("/"));
    const err = await rejection(auth.completeSignIn(back));
    expect(err.message).toBe("Contoso ID refused the sign-in: grant request is invalid.");
  });

  it("without an end-session endpoint, signing out is local", async () => {
    const { auth, idp } = setup({ endSession: false });
    const { session } = await auth.completeSignIn(idp.approve(await auth.beginSignIn("/")));
    expect(session.signOutUrl).toBeUndefined();
  });

  it("a provider that cannot be reached, or names another issuer, is said so", async () => {
    let err = await rejection(setup({ reachable: false }).auth.beginSignIn("/"));
    expect(err.message).toBe("Contoso ID cannot be reached. Check your connection and try again.");
    err = await rejection(setup({ issuer: "https://impostor.example.test" }).auth.beginSignIn("/"));
    expect(err.message).toMatch(/does not match/);
  });

  it("http is allowed for a provider on this machine only", async () => {
    const insecure = { ...CONFIG, authority: "http://idp.example.test" };
    const err = await rejection(setup({}, insecure).auth.beginSignIn("/"));
    expect(err.message).toMatch(/https/);
    const local = { ...CONFIG, authority: "http://127.0.0.1:4444" };
    const { auth, idp } = setup({ issuer: "http://127.0.0.1:4444" }, local);
    const { session } = await auth.completeSignIn(idp.approve(await auth.beginSignIn("/")));
    expect(session.userId).toBe("ada-1815");
  });

  it("the button names the provider, or its host", () => {
    expect(providerLabel(CONFIG)).toBe("Contoso ID");
    expect(providerLabel({ ...CONFIG, name: undefined, authority: "https://login.example.com/realms/x" })).toBe(
      "login.example.com",
    );
  });

  it("signing out forgets the tab's session, then visits the provider's logout page", () => {
    startSession({
      accessToken: "t",
      userId: "ada-1815",
      expiresAt: Date.now() + 60_000,
      provider: "oidc",
      signOutUrl: `${ISSUER}/session/end?client_id=contoso-shop`,
    });
    const visited: string[] = [];
    signOutEverywhere((url) => visited.push(url));
    expect(sessionState.get()).toBeNull();
    expect(visited).toEqual([`${ISSUER}/session/end?client_id=contoso-shop`]);
    // A dev session just ends here.
    startSession({ accessToken: "t", userId: "alice", expiresAt: Date.now() + 60_000 });
    signOutEverywhere((url) => visited.push(url));
    expect(visited).toHaveLength(1);
  });

  it("the callback is an app route, and returning after sign-in stays on this site", () => {
    expect(parseRoute("/auth/callback")).toEqual({ name: "callback" });
    expect(safeNext("/orders/42?placed=1")).toBe("/orders/42?placed=1");
    for (const bad of ["//evil.example", "/\\evil.example", "https://evil.example", "/login?next=/x", "/auth/callback", null]) {
      expect(safeNext(bad)).toBe("/products");
    }
  });
});
