/**
 * How a user signs in. The app asks a provider for a session and keeps it in `session.ts`; it
 * never cares where the token came from. Two providers, both offered by /app-config.json:
 * - the dev login (`dev.ts`): the gateway's `POST /dev/token` signs a token for the typed name;
 * - an identity provider (`oidc.ts`): a redirect to the provider (authorization code + PKCE), back
 *   on `/auth/callback`, where the code is exchanged for the provider's access token.
 */
import type { Session } from "./session";

/** A provider that signs in on the spot, with a user name (the dev login). */
export interface AuthProvider {
  readonly kind: "dev";
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
