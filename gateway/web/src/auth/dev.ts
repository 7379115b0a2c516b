import { SignInError, type AuthProvider } from "./provider";
import type { Session } from "./session";

interface TokenResponse {
  accessToken?: string;
  token?: string;
  userId?: string;
  expiresAtUtc?: string;
  expiresIn?: number;
}

interface ProblemBody {
  title?: string;
  detail?: string;
  errors?: Record<string, string[]>;
}

/** Dev login: the gateway signs a token for whichever user name is typed (dev mode only). */
export const devAuth: AuthProvider = {
  kind: "dev",
  async signIn(userId: string): Promise<Session> {
    const name = userId.trim();
    if (!name) throw new SignInError("Enter a user name.", "userId");
    let response: Response;
    try {
      response = await fetch("/dev/token", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ userId: name }),
      });
    } catch {
      throw new SignInError("The shop cannot be reached. Check your connection and try again.");
    }
    if (!response.ok) {
      const problem = (await response.json().catch(() => ({}))) as ProblemBody;
      if (response.status === 404) throw new SignInError("Dev login is switched off on this server.");
      const fieldMessage = problem.errors ? Object.values(problem.errors).flat()[0] : undefined;
      if (fieldMessage) throw new SignInError(`User name ${fieldMessage}.`, "userId");
      throw new SignInError(problem.detail || problem.title || `Sign-in failed (HTTP ${response.status}).`);
    }
    const body = (await response.json()) as TokenResponse;
    const accessToken = body.accessToken ?? body.token;
    if (!accessToken) throw new SignInError("The server answered without a token.");
    const expiresAt = body.expiresAtUtc
      ? Date.parse(body.expiresAtUtc)
      : Date.now() + (body.expiresIn ?? 3600) * 1000;
    return { accessToken, userId: body.userId ?? name, expiresAt, provider: "dev" };
  },
};
