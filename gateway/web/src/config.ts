/** What the gateway tells the app about itself (`GET /app-config.json`). */
export interface AppConfig {
  devAuth: boolean;
}

/** Reads /app-config.json; a gateway without it (404, or not JSON) is a dev gateway. */
export async function loadConfig(): Promise<AppConfig> {
  try {
    const response = await fetch("/app-config.json", { headers: { accept: "application/json" } });
    if (!response.ok) return { devAuth: true };
    const body = (await response.json()) as Partial<AppConfig>;
    return { devAuth: body.devAuth !== false };
  } catch {
    return { devAuth: true };
  }
}
