/**
 * Checkout: one idempotency key per checkout attempt of a given cart, persisted before the call, so
 * a double click, a retry, another tab or a reload during submit all send the same key and the
 * server places one order. A changed cart gets a new key (the old key with other lines would be
 * refused with ALREADY_EXISTS).
 */
import { Code } from "@connectrpc/connect";
import { describeError, errorCode, lineIndexOf, withRetry, type Problem } from "../api/errors";
import { Store } from "../lib/store";
import { readJson, remove, writeJson, type KeyValueStorage } from "../lib/storage";
import { cartFingerprint, type Cart } from "./cart";
import type { CartStore } from "./store";

/** What PlaceOrder accepts as an idempotency key. */
export const IDEMPOTENCY_KEY = /^[A-Za-z0-9._-]{1,64}$/;

/** Keys are kept well inside the server's 24 h window. */
const KEY_LIFETIME_MS = 12 * 60 * 60 * 1000;

export interface PendingCheckout {
  key: string;
  fingerprint: string;
  createdAt: number;
  /** A PlaceOrder with this key was sent and has not answered yet (or the page went away meanwhile). */
  submitting?: boolean;
}

export function checkoutStorageKey(userId: string): string {
  return `contoso.checkout.v1.${userId}`;
}

export function newIdempotencyKey(): string {
  const uuid =
    typeof crypto !== "undefined" && "randomUUID" in crypto
      ? crypto.randomUUID()
      : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
  return `web-${uuid}`;
}

export function pendingCheckout(storage: KeyValueStorage, userId: string, now = Date.now()): PendingCheckout | null {
  const p = readJson<PendingCheckout | null>(storage, checkoutStorageKey(userId), null);
  if (!p || typeof p.key !== "string" || !IDEMPOTENCY_KEY.test(p.key) || typeof p.fingerprint !== "string") return null;
  if (!(now - p.createdAt < KEY_LIFETIME_MS)) return null;
  return p;
}

/** The key for checking out `cart`: the pending one if it was made for the same lines, else a new one (persisted). */
export function checkoutKeyFor(
  storage: KeyValueStorage,
  userId: string,
  cart: Cart,
  now = Date.now(),
  make: () => string = newIdempotencyKey,
): PendingCheckout {
  const fingerprint = cartFingerprint(cart);
  const pending = pendingCheckout(storage, userId, now);
  if (pending && pending.fingerprint === fingerprint) return pending;
  const fresh = { key: make(), fingerprint, createdAt: now };
  writeJson(storage, checkoutStorageKey(userId), fresh);
  return fresh;
}

function markSubmitting(storage: KeyValueStorage, userId: string, pending: PendingCheckout, submitting: boolean): void {
  writeJson(storage, checkoutStorageKey(userId), { ...pending, submitting });
}

export function clearCheckout(storage: KeyValueStorage, userId: string): void {
  remove(storage, checkoutStorageKey(userId));
}

export interface CheckoutState {
  phase: "idle" | "submitting" | "retrying" | "error";
  /** What went wrong or what is happening, in plain words. */
  problem?: Problem;
  /** Messages about one cart line, by product id. */
  lineErrors: Record<string, string[]>;
}

export interface PlacedOrder {
  orderId: string;
  correlationId: string;
}

export interface CheckoutDeps<T extends PlacedOrder> {
  userId: string;
  storage: KeyValueStorage;
  cart: CartStore;
  place(lines: { productId: string; quantity: number }[], idempotencyKey: string): Promise<T>;
  onPlaced(order: T): void;
}

export class CheckoutController<T extends PlacedOrder> {
  readonly state = new Store<CheckoutState>({ phase: "idle", lineErrors: {} });
  readonly #deps: CheckoutDeps<T>;
  #inFlight: Promise<T | undefined> | undefined;

  constructor(deps: CheckoutDeps<T>) {
    this.#deps = deps;
  }

  /** Whether a checkout of the current cart was sent and never answered (e.g. the page reloaded mid-submit). */
  interrupted(): boolean {
    const cart = this.#deps.cart.cart;
    const p = pendingCheckout(this.#deps.storage, this.#deps.userId);
    return cart.lines.length > 0 && p !== null && p.submitting === true && p.fingerprint === cartFingerprint(cart);
  }

  /** Places the cart's order. Calls while one is running share it: a double click is one order. */
  submit(): Promise<T | undefined> {
    this.#inFlight ??= this.#run().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  async #run(): Promise<T | undefined> {
    const { storage, userId, cart } = this.#deps;
    const snapshot = cart.cart;
    if (snapshot.lines.length === 0) return undefined;
    const pending = checkoutKeyFor(storage, userId, snapshot);
    const lines = snapshot.lines.map((l) => ({ productId: l.productId, quantity: l.quantity }));
    markSubmitting(storage, userId, pending, true);
    this.state.set({ phase: "submitting", lineErrors: {} });
    try {
      const order = await withRetry(() => this.#deps.place(lines, pending.key), {
        attempts: 8,
        // ABORTED: the first attempt with this key is still running; asking again gets its order.
        retryOn: [Code.Unavailable, Code.Aborted, Code.DeadlineExceeded],
        onRetry: (problem) => this.state.set({ phase: "retrying", problem, lineErrors: {} }),
      });
      clearCheckout(storage, userId);
      // Only the lines that were ordered leave the cart (another tab may have changed it meanwhile).
      if (cartFingerprint(cart.cart) === pending.fingerprint) cart.clear();
      this.state.set({ phase: "idle", lineErrors: {} });
      this.#deps.onPlaced(order);
      return order;
    } catch (err) {
      const problem = describeError(err);
      if (errorCode(err) === Code.AlreadyExists) clearCheckout(storage, userId);
      else markSubmitting(storage, userId, pending, false);
      const lineErrors: Record<string, string[]> = {};
      for (const f of problem.fields) {
        const i = lineIndexOf(f.field);
        const line = i === undefined ? undefined : snapshot.lines[i];
        if (line) (lineErrors[line.productId] ??= []).push(f.description);
      }
      this.state.set({ phase: "error", problem, lineErrors });
      return undefined;
    }
  }

  dismiss(): void {
    this.state.set({ phase: "idle", lineErrors: {} });
  }
}
