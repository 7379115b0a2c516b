/**
 * How a user signs in. The app asks the provider for a session and keeps it in `session.ts`; it
 * never cares where the token came from. Today there is the dev login (`dev.ts`, the gateway's
 * `POST /dev/token`); an OIDC provider (authorization code + PKCE against the identity provider
 * named in /app-config.json) would implement the same interface and the login page would show its
 * "Sign in with …" button instead of the user-name form.
 */
import type { Session } from "./session";

export interface AuthProvider {
  readonly kind: "dev" | "oidc";
  /** Signs in as `userId` (dev) — an OIDC provider would redirect instead and resolve on return. */
  signIn(userId: string): Promise<Session>;
}

/** A sign-in that failed, in plain words, with the field to fix when there is one. */
export class SignInError extends Error {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = "SignInError";
  }
}
