import { useState } from "preact/hooks";
import { devAuth } from "../auth/dev";
import { oidcAuth } from "../auth/oidc";
import { SignInError } from "../auth/provider";
import { authNotice, startSession } from "../auth/session";
import { forgetUser, rememberUser, rememberedUsers } from "../auth/users";
import type { AppConfig, OidcConfig } from "../config";
import { useStore } from "../lib/store";
import { location, navigate, safeNext, searchParams } from "../router";
import { usePageTitle } from "./components";

const SUGGESTED = ["alice", "bob", "carol"];

/** "Sign in with <provider>": off to the identity provider, back on /auth/callback. */
function ProviderSignIn({ oidc, next }: { oidc: OidcConfig; next: string }) {
  const auth = oidcAuth(oidc);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function go() {
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      window.location.assign(await auth.beginSignIn(next));
    } catch (err) {
      setError(err instanceof SignInError ? err.message : `Signing in with ${auth.label} failed. Please try again.`);
      setBusy(false);
    }
  }

  return (
    <div class="provider-signin">
      <button type="button" class="btn btn-primary btn-block" disabled={busy} onClick={() => void go()} data-testid="oidc-signin">
        {busy ? `Taking you to ${auth.label}…` : `Sign in with ${auth.label}`}
      </button>
      {error && (
        <p class="field-error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

export function LoginPage({ config }: { config: AppConfig }) {
  usePageTitle("Sign in");
  const notice = useStore(authNotice);
  const loc = useStore(location);
  const [users, setUsers] = useState(rememberedUsers);
  const [name, setName] = useState(users[0] ?? "");
  const [error, setError] = useState<SignInError | null>(null);
  const [busy, setBusy] = useState(false);

  async function signIn(userId: string) {
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      const session = await devAuth.signIn(userId);
      rememberUser(session.userId);
      startSession(session);
      navigate(next, { replace: true });
    } catch (err) {
      setError(err instanceof SignInError ? err : new SignInError("Sign-in failed. Please try again."));
    } finally {
      setBusy(false);
    }
  }

  const quick = [...users, ...SUGGESTED.filter((u) => !users.includes(u))].slice(0, 6);
  const next = safeNext(searchParams(loc).get("next"));

  return (
    <section class="login">
      <div class="login-card">
        <div class="login-hero" aria-hidden="true">
          <span class="brand-mark brand-mark-large">C</span>
        </div>
        <h1>Sign in to Contoso Shop</h1>
        <p class="muted">Practice exams, labs and study guides for your next certification.</p>
        {notice && (
          <div class="notice notice-warn" role="alert" data-testid="login-notice">
            {notice}
          </div>
        )}
        {config.oidc && <ProviderSignIn oidc={config.oidc} next={next} />}
        {config.oidc && config.devAuth && (
          <p class="divider" role="separator">
            <span>or, in dev mode</span>
          </p>
        )}
        {!config.devAuth ? (
          !config.oidc && (
            <div class="notice" role="status">
              No way to sign in is configured on this server. Ask an administrator to set up the identity provider.
            </div>
          )
        ) : (
          <>
            <form
              class="form"
              onSubmit={(e) => {
                e.preventDefault();
                void signIn(name);
              }}
              noValidate
            >
              <label for="login-user">User name</label>
              <div class="input-row">
                <input
                  id="login-user"
                  name="userId"
                  autoComplete="username"
                  autoFocus={!config.oidc}
                  required
                  maxLength={128}
                  value={name}
                  placeholder="e.g. alice"
                  aria-invalid={error?.field ? true : undefined}
                  aria-describedby={error ? "login-error" : "login-hint"}
                  onInput={(e) => setName(e.currentTarget.value)}
                />
                <button type="submit" class="btn btn-primary" disabled={busy}>
                  {busy ? "Signing in…" : "Sign in"}
                </button>
              </div>
              {error ? (
                <p id="login-error" class="field-error" role="alert">
                  {error.message}
                </p>
              ) : (
                <p id="login-hint" class="hint">
                  Dev mode: any name works; each name has its own cart and orders.
                </p>
              )}
            </form>
            <div class="quick-users">
              <h2 class="small-heading">{users.length ? "Continue as" : "Or pick a demo user"}</h2>
              <ul class="chips">
                {quick.map((u) => (
                  <li key={u} class="chip-item">
                    <button type="button" class="chip" disabled={busy} onClick={() => void signIn(u)}>
                      <span class="avatar" aria-hidden="true">
                        {u.slice(0, 1).toUpperCase()}
                      </span>
                      {u}
                    </button>
                    {users.includes(u) && (
                      <button
                        type="button"
                        class="chip-forget"
                        aria-label={`Forget ${u}`}
                        title={`Forget ${u}`}
                        onClick={() => {
                          forgetUser(u);
                          setUsers(rememberedUsers());
                        }}
                      >
                        ×
                      </button>
                    )}
                  </li>
                ))}
              </ul>
            </div>
          </>
        )}
      </div>
    </section>
  );
}
