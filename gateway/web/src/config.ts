/** What the gateway tells the app about itself (`GET /app-config.json`). */
export interface AppConfig {
  devAuth: boolean;
  /** Sign in with this identity provider (authorization code + PKCE). */
  oidc?: OidcConfig;
}

export interface OidcConfig {
  /** The provider's issuer URL. */
  authority: string;
  clientId: string;
  scope: string;
  /** The API's resource indicator to request, if any. */
  audience?: string;
  /** The provider's name on the login button (default: the authority's host). */
  name?: string;
}

function oidcConfig(raw: unknown): OidcConfig | undefined {
  if (!raw || typeof raw !== "object") return undefined;
  const o = raw as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === "string" && v.trim() ? v : undefined);
  const authority = str(o.authority);
  const clientId = str(o.clientId);
  if (!authority || !clientId) return undefined;
  return { authority, clientId, scope: str(o.scope) ?? "openid profile", audience: str(o.audience), name: str(o.name) };
}

/** Reads /app-config.json; a gateway without it (404, or not JSON) is a dev gateway. */
export async function loadConfig(): Promise<AppConfig> {
  try {
    const response = await fetch("/app-config.json", { headers: { accept: "application/json" } });
    if (!response.ok) return { devAuth: true };
    const body = (await response.json()) as { devAuth?: unknown; oidc?: unknown };
    return { devAuth: body.devAuth !== false, oidc: oidcConfig(body.oidc) };
  } catch {
    return { devAuth: true };
  }
}
