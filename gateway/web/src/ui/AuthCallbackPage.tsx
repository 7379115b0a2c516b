import { useEffect, useState } from "preact/hooks";
import { oidcAuth } from "../auth/oidc";
import { SignInError } from "../auth/provider";
import { sessionState, startSession } from "../auth/session";
import type { AppConfig } from "../config";
import { navigate, safeNext } from "../router";
import { Link, Spinner, usePageTitle } from "./components";

/** One exchange per callback URL, however often the page mounts (the code is good once). */
const exchanges = new Map<string, Promise<string>>();

function finish(config: AppConfig, href: string): Promise<string> {
  let exchange = exchanges.get(href);
  if (!exchange) {
    exchange = (async () => {
      if (!config.oidc) throw new SignInError("Sign-in with an identity provider is not configured on this server.");
      const { session, next } = await oidcAuth(config.oidc).completeSignIn(new URL(href));
      startSession(session);
      return safeNext(next);
    })();
    exchanges.set(href, exchange);
  }
  return exchange;
}

/** `/auth/callback`: the identity provider sent the browser back; finish signing in, then go on. */
export function AuthCallbackPage({ config }: { config: AppConfig }) {
  usePageTitle("Signing in");
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let live = true;
    finish(config, window.location.href).then(
      (next) => live && navigate(next, { replace: true }),
      (err: unknown) => {
        if (!live) return;
        // A callback visited again (back button) while signed in: nothing to finish.
        if (sessionState.get()) navigate("/products", { replace: true });
        else setError(err instanceof SignInError ? err.message : "Signing in failed. Please try again.");
      },
    );
    return () => {
      live = false;
    };
  }, [config]);

  if (!error) return <Spinner label="Signing you in…" />;
  return (
    <section class="login">
      <div class="login-card">
        <h1>Sign-in did not finish</h1>
        <div class="notice notice-warn" role="alert" data-testid="callback-error">
          {error}
        </div>
        <Link href="/login" class="btn btn-primary" replace>
          Back to sign in
        </Link>
      </div>
    </section>
  );
}
