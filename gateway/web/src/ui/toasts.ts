import { Store } from "../lib/store";

export interface Toast {
  id: number;
  kind: "success" | "error" | "info";
  text: string;
  href?: string;
  linkText?: string;
}

const MAX = 3;
export const toasts = new Store<Toast[]>([]);
let next = 1;

/** Shows a toast; at most three at once (the oldest goes), each dismissing itself. */
export function toast(kind: Toast["kind"], text: string, link?: { href: string; text: string }): void {
  const t: Toast = { id: next++, kind, text, href: link?.href, linkText: link?.text };
  toasts.update((list) => [...list, t].slice(-MAX));
  setTimeout(() => dismissToast(t.id), kind === "error" ? 9000 : 6000);
}

export function dismissToast(id: number): void {
  toasts.update((list) => (list.some((t) => t.id === id) ? list.filter((t) => t.id !== id) : list));
}
