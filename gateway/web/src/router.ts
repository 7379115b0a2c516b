/** Client-side routes on real paths; the gateway serves index.html for any of them. */
import { Store } from "./lib/store";

export type Route =
  | { name: "login" }
  | { name: "callback" }
  | { name: "products" }
  | { name: "product"; id: string }
  | { name: "cart" }
  | { name: "orders" }
  | { name: "order"; id: string }
  | { name: "subscriptions" }
  | { name: "notFound" };

export interface Location {
  pathname: string;
  search: string;
}

export function parseRoute(pathname: string): Route {
  const path = pathname.replace(/\/+$/, "") || "/";
  if (path === "/" || path === "/products") return { name: "products" };
  if (path === "/login") return { name: "login" };
  if (path === "/auth/callback") return { name: "callback" };
  if (path === "/cart") return { name: "cart" };
  if (path === "/orders") return { name: "orders" };
  if (path === "/subscriptions") return { name: "subscriptions" };
  let m = /^\/products\/([^/]+)$/.exec(path);
  if (m) return { name: "product", id: safeDecode(m[1]) };
  m = /^\/orders\/(\d{1,19})$/.exec(path);
  if (m) return { name: "order", id: m[1] };
  return { name: "notFound" };
}

/** A same-site path to return to after signing in (never another origin, never a sign-in page). */
export function safeNext(raw: string | null | undefined): string {
  if (!raw || !raw.startsWith("/") || raw.startsWith("//") || raw.startsWith("/\\")) return "/products";
  if (raw.startsWith("/login") || raw.startsWith("/auth/")) return "/products";
  return raw;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function current(): Location {
  return { pathname: window.location.pathname, search: window.location.search };
}

export const location = new Store<Location>(typeof window === "undefined" ? { pathname: "/", search: "" } : current());

export function navigate(to: string, options: { replace?: boolean } = {}): void {
  const url = new URL(to, window.location.href);
  const target = url.pathname + url.search + url.hash;
  if (target === window.location.pathname + window.location.search + window.location.hash) return;
  if (options.replace) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  location.set(current());
  if (!options.replace) window.scrollTo(0, 0);
}

if (typeof window !== "undefined") {
  window.addEventListener("popstate", () => location.set(current()));
}

export function searchParams(loc: Location): URLSearchParams {
  return new URLSearchParams(loc.search);
}

/** A same-origin link click that the router should handle (not a new tab/window or download). */
export function isPlainClick(e: MouseEvent): boolean {
  return e.button === 0 && !e.metaKey && !e.ctrlKey && !e.shiftKey && !e.altKey && !e.defaultPrevented;
}
