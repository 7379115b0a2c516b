/**
 * The signed-in session: the access token and who it is for, kept for this tab only
 * (sessionStorage). However the token was obtained (the dev login or an identity provider), the
 * rest of the app only reads it here.
 */
import { Store } from "../lib/store";
import { readJson, remove, session as tabStorage, writeJson } from "../lib/storage";

export interface Session {
  accessToken: string;
  /** Who the services see: the token's `sub`. */
  userId: string;
  /** When the token expires, ms since the epoch. */
  expiresAt: number;
  /** How the user signed in (absent: the dev login, as sessions of earlier builds). */
  provider?: "dev" | "oidc";
  /** What to call the user when it is not their id (an identity provider's user name). */
  name?: string;
  /** The identity provider's logout page for this session (RP-initiated logout), if it has one. */
  signOutUrl?: string;
}

const KEY = "contoso.session.v1";
export const EXPIRED_NOTICE = "Your session has expired. Please sign in again.";

function load(): Session | null {
  const s = readJson<Session | null>(tabStorage, KEY, null);
  if (!s || typeof s.accessToken !== "string" || typeof s.userId !== "string") return null;
  if (!(s.expiresAt > Date.now())) return null;
  return s;
}

export const sessionState = new Store<Session | null>(load());

/** A message for the login page (why the user was sent there). */
export const authNotice = new Store<string | null>(
  readJson<Session | null>(tabStorage, KEY, null) && !sessionState.get() ? EXPIRED_NOTICE : null,
);

let expiryTimer: ReturnType<typeof setTimeout> | undefined;

function armExpiry(s: Session | null) {
  clearTimeout(expiryTimer);
  if (!s) return;
  // setTimeout holds at most ~24.8 days; re-arm past that.
  const ms = Math.min(s.expiresAt - Date.now(), 2 ** 31 - 1);
  expiryTimer = setTimeout(() => (s.expiresAt <= Date.now() ? expireSession() : armExpiry(s)), Math.max(0, ms));
}
armExpiry(sessionState.get());

export function startSession(s: Session): void {
  writeJson(tabStorage, KEY, s);
  authNotice.set(null);
  sessionState.set(s);
  armExpiry(s);
}

export function signOut(notice: string | null = null): void {
  remove(tabStorage, KEY);
  authNotice.set(notice);
  armExpiry(null);
  sessionState.set(null);
}

/**
 * The user's "Sign out": forgets the session in this tab, then, for an identity provider that
 * offers it, ends the provider's session too (RP-initiated logout; it returns to /login).
 */
export function signOutEverywhere(go: (url: string) => void = (url) => window.location.assign(url)): void {
  const url = sessionState.get()?.signOutUrl;
  signOut();
  if (url) go(url);
}

/** The token was refused or ran out: back to login, saying why. */
export function expireSession(): void {
  if (sessionState.get()) signOut(EXPIRED_NOTICE);
}

/** The token to send, or null when signed out or expired (which signs the user out). */
export function currentToken(): string | null {
  const s = sessionState.get();
  if (!s) return null;
  if (s.expiresAt <= Date.now()) {
    expireSession();
    return null;
  }
  return s.accessToken;
}

// Timers sleep in background tabs: check again when the tab comes back.
if (typeof document !== "undefined") {
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") currentToken();
  });
}
