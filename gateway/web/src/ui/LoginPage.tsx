import { useState } from "preact/hooks";
import { devAuth } from "../auth/dev";
import { SignInError } from "../auth/provider";
import { authNotice, startSession } from "../auth/session";
import { forgetUser, rememberUser, rememberedUsers } from "../auth/users";
import type { AppConfig } from "../config";
import { useStore } from "../lib/store";
import { location, navigate, searchParams } from "../router";
import { usePageTitle } from "./components";

const SUGGESTED = ["alice", "bob", "carol"];

/** A same-site path to return to after signing in (never another origin, never /login again). */
function safeNext(raw: string | null): string {
  if (!raw || !raw.startsWith("/") || raw.startsWith("//") || raw.startsWith("/login")) return "/products";
  return raw;
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
      navigate(safeNext(searchParams(loc).get("next")), { replace: true });
    } catch (err) {
      setError(err instanceof SignInError ? err : new SignInError("Sign-in failed. Please try again."));
    } finally {
      setBusy(false);
    }
  }

  const quick = [...users, ...SUGGESTED.filter((u) => !users.includes(u))].slice(0, 6);

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
        {!config.devAuth ? (
          <div class="notice" role="status">
            Sign-in with your organisation is not available in this build yet. Ask an administrator to switch dev
            login on.
          </div>
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
                  autoFocus
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
