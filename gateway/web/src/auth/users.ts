import { local, readJson, writeJson } from "../lib/storage";

const KEY = "contoso.users.v1";
const MAX = 6;

/** User names signed in with before on this browser, most recent first. */
export function rememberedUsers(): string[] {
  const list = readJson<unknown>(local, KEY, []);
  return Array.isArray(list) ? list.filter((u): u is string => typeof u === "string").slice(0, MAX) : [];
}

export function rememberUser(userId: string): void {
  writeJson(local, KEY, [userId, ...rememberedUsers().filter((u) => u !== userId)].slice(0, MAX));
}

export function forgetUser(userId: string): void {
  writeJson(local, KEY, rememberedUsers().filter((u) => u !== userId));
}
