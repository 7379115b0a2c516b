import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CartStore } from "../src/cart/store";
import type { CartProduct } from "../src/cart/cart";
import {
  CheckoutController,
  IDEMPOTENCY_KEY,
  checkoutKeyFor,
  checkoutStorageKey,
  newIdempotencyKey,
  pendingCheckout,
} from "../src/cart/checkout";
import { BadRequestSchema } from "../src/gen/google/rpc/error_details_pb";
import { create } from "@bufbuild/protobuf";
import { fakeTabs } from "./fakes";

const p = (id: string, cents = 1000): CartProduct => ({
  productId: id,
  name: id,
  vendor: "V",
  category: "C",
  imageUrl: "",
  billingPeriod: "Monthly",
  currency: "USD",
  listPriceCents: cents,
  unitPriceCents: cents,
  discountPercent: 0,
});

interface Placed {
  orderId: string;
  correlationId: string;
}

function setup(place: (lines: { productId: string; quantity: number }[], key: string) => Promise<Placed>) {
  const [tab] = fakeTabs(1);
  const cart = new CartStore(tab.storage, "alice");
  cart.add(p("AZ-104"), 2);
  cart.add(p("AZ-900"), 1);
  const placed: Placed[] = [];
  const checkout = new CheckoutController<Placed>({
    userId: "alice",
    storage: tab.storage,
    cart,
    place,
    onPlaced: (o) => placed.push(o),
  });
  return { tab, cart, checkout, placed };
}

describe("idempotency keys", () => {
  it("new keys fit the server's rules", () => {
    for (let i = 0; i < 50; i++) expect(newIdempotencyKey()).toMatch(IDEMPOTENCY_KEY);
    expect(IDEMPOTENCY_KEY.test("a".repeat(65))).toBe(false);
    expect(IDEMPOTENCY_KEY.test("has space")).toBe(false);
  });

  it("the same cart reuses its key; a changed cart gets a new one", () => {
    const [tab] = fakeTabs(1);
    const cart = new CartStore(tab.storage, "alice");
    cart.add(p("AZ-104"), 1);
    let n = 0;
    const make = () => `k${++n}`;
    const first = checkoutKeyFor(tab.storage, "alice", cart.cart, 1000, make);
    expect(checkoutKeyFor(tab.storage, "alice", cart.cart, 2000, make).key).toBe(first.key);
    cart.setQuantity("AZ-104", 2);
    const second = checkoutKeyFor(tab.storage, "alice", cart.cart, 3000, make);
    expect(second.key).not.toBe(first.key);
    // Stale keys are not reused (the server forgets them after a day).
    expect(checkoutKeyFor(tab.storage, "alice", cart.cart, 3000 + 13 * 3600_000, make).key).not.toBe(second.key);
  });
});

describe("checkout", () => {
  it("a double click places one order and clears the cart", async () => {
    const calls: string[] = [];
    const { checkout, cart, placed, tab } = setup(async (_lines, key) => {
      calls.push(key);
      await new Promise((r) => setTimeout(r, 20));
      return { orderId: "1", correlationId: "c1" };
    });
    const [a, b] = [checkout.submit(), checkout.submit()];
    expect(a).toBe(b);
    await a;
    expect(calls).toHaveLength(1);
    expect(placed).toEqual([{ orderId: "1", correlationId: "c1" }]);
    expect(cart.cart.lines).toEqual([]);
    expect(tab.storage.getItem(checkoutStorageKey("alice"))).toBeNull();
  });

  it("sends the cart's lines in order", async () => {
    let sent: unknown;
    const { checkout } = setup(async (lines) => {
      sent = lines;
      return { orderId: "1", correlationId: "c1" };
    });
    await checkout.submit();
    expect(sent).toEqual([
      { productId: "AZ-104", quantity: 2 },
      { productId: "AZ-900", quantity: 1 },
    ]);
  });

  it("retries UNAVAILABLE and ABORTED with the same key", async () => {
    const keys: string[] = [];
    const failures = [Code.Unavailable, Code.Aborted];
    const { checkout } = setup(async (_l, key) => {
      keys.push(key);
      const code = failures.shift();
      if (code !== undefined) throw new ConnectError("not now", code);
      return { orderId: "2", correlationId: "c2" };
    });
    const phases: string[] = [];
    checkout.state.subscribe((s) => phases.push(s.phase));
    expect(await checkout.submit()).toEqual({ orderId: "2", correlationId: "c2" });
    expect(new Set(keys).size).toBe(1);
    expect(keys).toHaveLength(3);
    expect(phases).toContain("retrying");
  }, 10_000);

  it("a reload mid-submit leaves the key behind, and the retry sends it again", async () => {
    const keys: string[] = [];
    const never = new Promise<Placed>(() => undefined);
    const first = setup(async (_l, key) => {
      keys.push(key);
      return never;
    });
    void first.checkout.submit();
    await Promise.resolve();
    // "Reload": a new controller over the same storage and cart.
    const cart = new CartStore(first.tab.storage, "alice");
    const again = new CheckoutController<Placed>({
      userId: "alice",
      storage: first.tab.storage,
      cart,
      place: async (_l, key) => {
        keys.push(key);
        return { orderId: "3", correlationId: "c3" };
      },
      onPlaced: () => undefined,
    });
    expect(again.interrupted()).toBe(true);
    await again.submit();
    expect(keys).toHaveLength(2);
    expect(keys[0]).toBe(keys[1]);
    expect(again.interrupted()).toBe(false);
  });

  it("INVALID_ARGUMENT puts each field violation next to its cart line", async () => {
    const detail = create(BadRequestSchema, {
      fieldViolations: [
        { field: "lines[1].quantity", description: "must be between 1 and 100" },
        { field: "idempotency_key", description: "too long" },
      ],
    });
    const { checkout, cart } = setup(async () => {
      throw new ConnectError("invalid order", Code.InvalidArgument, undefined, [{ desc: BadRequestSchema, value: detail }]);
    });
    expect(await checkout.submit()).toBeUndefined();
    const s = checkout.state.get();
    expect(s.phase).toBe("error");
    expect(s.lineErrors).toEqual({ "AZ-900": ["must be between 1 and 100"] });
    expect(s.problem?.fields.map((f) => f.field)).toEqual(["lines[1].quantity", "idempotency_key"]);
    expect(cart.cart.lines).toHaveLength(2);
    expect(checkout.interrupted()).toBe(false);
  });

  it("ALREADY_EXISTS drops the key so the next attempt gets a fresh one", async () => {
    const keys: string[] = [];
    const { checkout, tab } = setup(async (_l, key) => {
      keys.push(key);
      if (keys.length === 1) throw new ConnectError("key reused", Code.AlreadyExists);
      return { orderId: "4", correlationId: "c4" };
    });
    await checkout.submit();
    expect(checkout.state.get().problem?.title).toMatch(/cart changed/i);
    expect(pendingCheckout(tab.storage, "alice")).toBeNull();
    await checkout.submit();
    expect(keys[1]).not.toBe(keys[0]);
  });
});
