/**
 * Sign-in with an external OpenID Connect provider: the authorization code flow with PKCE (S256),
 * as a public client (no secret), with `oauth4webapi` doing the protocol work (discovery, the
 * authorization response checks, the code exchange, the ID token claims).
 *
 * `beginSignIn` keeps the PKCE verifier, state, nonce and where to return in this tab's
 * sessionStorage and answers the provider's authorization URL, which the page then navigates to.
 * The provider sends the browser back to `/auth/callback`, where `completeSignIn` checks the answer
 * against what was kept (once: the entry is removed first), exchanges the code at the token endpoint
 * and makes the session. The API's audience is requested as a resource indicator (RFC 8707
 * `resource`, and `audience` for providers that call it that) so the access token is a JWT the
 * services verify with the provider's keys.
 */
import * as oauth from "oauth4webapi";
import type { OidcConfig } from "../config";
import { type KeyValueStorage, readJson, remove, session as tabStorage, writeJson } from "../lib/storage";
import { SignInError } from "./provider";
import type { Session } from "./session";

export const CALLBACK_PATH = "/auth/callback";
/** Where the provider returns the browser after an RP-initiated logout (register it there too). */
export const SIGNED_OUT_PATH = "/login";

const PENDING_KEY = "contoso.oidc.pending.v1";
/** A sign-in not finished within this time is stale (the user walked away from the provider's page). */
const PENDING_TTL_MS = 30 * 60 * 1000;
/** Used when the token endpoint does not say how long the access token lives. */
const DEFAULT_LIFETIME_S = 3600;

interface Pending {
  state: string;
  codeVerifier: string;
  nonce?: string;
  next: string;
  createdAt: number;
}

export interface OidcDeps {
  /** This tab's storage (sessionStorage): the pending sign-in survives the round trip, per tab. */
  storage: KeyValueStorage;
  /** The app's origin, e.g. `https://shop.example.com`. */
  origin: string;
  fetch?: typeof fetch;
  now?: () => number;
}

export interface OidcAuth {
  readonly kind: "oidc";
  /** What the login button calls the provider. */
  readonly label: string;
  /** Prepares a sign-in and answers the provider's authorization URL to navigate to. */
  beginSignIn(next: string): Promise<string>;
  /** Finishes the sign-in the provider sent the browser back from (`/auth/callback?...`). */
  completeSignIn(callbackUrl: URL): Promise<{ session: Session; next: string }>;
  /** Whether this tab has a sign-in waiting for the provider's answer. */
  hasPendingSignIn(): boolean;
}

/** http is allowed for a provider on this machine only (development, the browser tests). */
export function isLoopback(url: URL): boolean {
  return url.hostname === "127.0.0.1" || url.hostname === "localhost" || url.hostname === "[::1]";
}

/** The provider's name on the login button: the configured one, else the authority's host. */
export function providerLabel(config: OidcConfig): string {
  if (config.name?.trim()) return config.name.trim();
  try {
    return new URL(config.authority).host;
  } catch {
    return "your organisation";
  }
}

/** The payload of a JWT, or null for anything else (an opaque token). Not verified: display only. */
export function jwtPayload(token: string): Record<string, unknown> | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const bytes = Uint8Array.from(json, (c) => c.charCodeAt(0));
    const payload: unknown = JSON.parse(new TextDecoder().decode(bytes));
    return payload && typeof payload === "object" ? (payload as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

const text = (v: unknown): string | undefined => (typeof v === "string" && v.trim() ? v : undefined);

export function createOidcAuth(config: OidcConfig, deps: OidcDeps): OidcAuth {
  const issuer = new URL(config.authority);
  const client: oauth.Client = { client_id: config.clientId };
  const redirectUri = deps.origin + CALLBACK_PATH;
  const now = deps.now ?? Date.now;
  const wantsIdToken = config.scope.split(/\s+/).includes("openid");
  const label = providerLabel(config);
  const http = {
    ...(deps.fetch ? { [oauth.customFetch]: deps.fetch } : {}),
    ...(issuer.protocol === "http:" && isLoopback(issuer) ? { [oauth.allowInsecureRequests]: true } : {}),
  };
  const resource: Record<string, string> = config.audience ? { resource: config.audience } : {};

  let metadata: Promise<oauth.AuthorizationServer> | undefined;
  function discover(): Promise<oauth.AuthorizationServer> {
    metadata ??= (async () => {
      if (issuer.protocol !== "https:" && !isLoopback(issuer)) {
        throw new SignInError(`${label} is not configured with an https address; ask an administrator.`);
      }
      let response: Response;
      try {
        response = await oauth.discoveryRequest(issuer, { algorithm: "oidc", ...http });
      } catch {
        throw new SignInError(`${label} cannot be reached. Check your connection and try again.`);
      }
      try {
        return await oauth.processDiscoveryResponse(issuer, response);
      } catch {
        throw new SignInError(`${label} answered with a configuration that does not match; ask an administrator.`);
      }
    })().catch((err) => {
      metadata = undefined;
      throw err;
    });
    return metadata;
  }

  function takePending(): Pending | null {
    const pending = readJson<Pending | null>(deps.storage, PENDING_KEY, null);
    remove(deps.storage, PENDING_KEY);
    if (!pending || typeof pending.state !== "string" || typeof pending.codeVerifier !== "string") return null;
    if (!(now() - pending.createdAt < PENDING_TTL_MS)) return null;
    return pending;
  }

  return {
    kind: "oidc",
    label,

    hasPendingSignIn() {
      return readJson<Pending | null>(deps.storage, PENDING_KEY, null) !== null;
    },

    async beginSignIn(next) {
      const as = await discover();
      if (!as.authorization_endpoint) throw new SignInError(`${label} offers no sign-in page (no authorization endpoint).`);
      const codeVerifier = oauth.generateRandomCodeVerifier();
      const pending: Pending = {
        state: oauth.generateRandomState(),
        codeVerifier,
        nonce: wantsIdToken ? oauth.generateRandomNonce() : undefined,
        next,
        createdAt: now(),
      };
      const url = new URL(as.authorization_endpoint);
      const params = url.searchParams;
      params.set("client_id", config.clientId);
      params.set("redirect_uri", redirectUri);
      params.set("response_type", "code");
      params.set("scope", config.scope);
      params.set("code_challenge", await oauth.calculatePKCECodeChallenge(codeVerifier));
      params.set("code_challenge_method", "S256");
      params.set("state", pending.state);
      if (pending.nonce) params.set("nonce", pending.nonce);
      if (config.audience) {
        params.set("resource", config.audience);
        params.set("audience", config.audience);
      }
      writeJson(deps.storage, PENDING_KEY, pending);
      return url.href;
    },

    async completeSignIn(callbackUrl) {
      const pending = takePending();
      if (!pending) {
        throw new SignInError("This sign-in has expired or was already used. Please sign in again.");
      }
      const as = await discover();
      let params: URLSearchParams;
      try {
        params = oauth.validateAuthResponse(as, client, callbackUrl, pending.state);
      } catch (err) {
        if (err instanceof oauth.AuthorizationResponseError) {
          const why = err.error === "access_denied" ? "Sign-in was cancelled or refused" : `${label} refused the sign-in`;
          throw new SignInError(`${why}${err.error_description ? `: ${err.error_description}` : "."}`);
        }
        throw new SignInError(`The answer from ${label} did not match this sign-in. Please sign in again.`);
      }
      let result: oauth.TokenEndpointResponse;
      try {
        const response = await oauth.authorizationCodeGrantRequest(
          as,
          client,
          oauth.None(),
          params,
          redirectUri,
          pending.codeVerifier,
          { additionalParameters: resource, ...http },
        );
        result = await oauth.processAuthorizationCodeResponse(as, client, response, {
          expectedNonce: pending.nonce ?? oauth.expectNoNonce,
          requireIdToken: wantsIdToken,
        });
      } catch (err) {
        if (err instanceof oauth.ResponseBodyError) {
          throw new SignInError(`${label} refused the sign-in: ${err.error_description ?? err.error}.`);
        }
        if (err instanceof SignInError) throw err;
        throw new SignInError(`${label} could not finish the sign-in. Please try again.`);
      }
      const idClaims = oauth.getValidatedIdTokenClaims(result);
      // The services know the user by the access token's `sub`: use it when the token is a JWT.
      const access = jwtPayload(result.access_token);
      const userId = text(access?.sub) ?? text(idClaims?.sub);
      if (!userId) throw new SignInError(`${label} did not say who signed in.`);
      const lifetime = result.expires_in ?? (typeof access?.exp === "number" ? access.exp - now() / 1000 : DEFAULT_LIFETIME_S);
      const name =
        text(idClaims?.preferred_username) ?? text(idClaims?.name) ?? text(idClaims?.email) ?? text(access?.preferred_username);
      const session: Session = {
        accessToken: result.access_token,
        userId,
        expiresAt: now() + lifetime * 1000,
        provider: "oidc",
        ...(name && name !== userId ? { name } : {}),
      };
      if (as.end_session_endpoint) {
        const logout = new URL(as.end_session_endpoint);
        logout.searchParams.set("client_id", config.clientId);
        logout.searchParams.set("post_logout_redirect_uri", deps.origin + SIGNED_OUT_PATH);
        if (result.id_token) logout.searchParams.set("id_token_hint", result.id_token);
        session.signOutUrl = logout.href;
      }
      return { session, next: pending.next };
    },
  };
}

let shared: { config: OidcConfig; auth: OidcAuth } | undefined;

/** The app's one provider for `config`, keeping its state in this tab's sessionStorage. */
export function oidcAuth(config: OidcConfig): OidcAuth {
  if (shared?.config !== config) {
    shared = { config, auth: createOidcAuth(config, { storage: tabStorage, origin: window.location.origin }) };
  }
  return shared.auth;
}
