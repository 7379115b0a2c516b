import { describe, expect, it } from "vitest";
import { cartKey, CartStore } from "../src/cart/store";
import type { CartProduct } from "../src/cart/cart";
import { fakeTabs } from "./fakes";

const product: CartProduct = {
  productId: "AZ-104",
  name: "AZ-104",
  vendor: "Microsoft",
  category: "Bundle",
  imageUrl: "",
  billingPeriod: "Annual",
  currency: "USD",
  listPriceCents: 14999,
  unitPriceCents: 13499,
  discountPercent: 10,
};

function twoTabs(user = "alice") {
  const [a, b] = fakeTabs(2);
  return {
    a: new CartStore(a.storage, user, a.events as never),
    b: new CartStore(b.storage, user, b.events as never),
    tabs: [a, b],
  };
}

describe("cart across tabs", () => {
  it("a tab opened later starts with the stored cart", () => {
    const [a, b] = fakeTabs(2);
    new CartStore(a.storage, "alice", a.events as never).add(product, 2);
    expect(new CartStore(b.storage, "alice", b.events as never).cart.lines[0].quantity).toBe(2);
  });

  it("adds, quantity changes and removals in one tab show in the other", () => {
    const { a, b } = twoTabs();
    const seen: number[] = [];
    b.state.subscribe((c) => seen.push(c.lines[0]?.quantity ?? 0));
    a.add(product, 1);
    expect(b.cart.lines).toHaveLength(1);
    a.setQuantity("AZ-104", 4);
    expect(b.cart.lines[0].quantity).toBe(4);
    b.setQuantity("AZ-104", 0);
    expect(a.cart.lines).toEqual([]);
    expect(seen).toEqual([1, 4, 0]);
  });

  it("clearing the cart (after checkout) empties it in every tab", () => {
    const { a, b } = twoTabs();
    a.add(product, 3);
    b.clear();
    expect(a.cart.lines).toEqual([]);
  });

  it("another user's cart is not touched", () => {
    const [a, b] = fakeTabs(2);
    const alice = new CartStore(a.storage, "alice", a.events as never);
    const bob = new CartStore(b.storage, "bob", b.events as never);
    alice.add(product, 1);
    expect(bob.cart.lines).toEqual([]);
  });

  it("a storage wipe in another tab reloads from storage; unreadable writes are ignored", () => {
    const { a, b, tabs } = twoTabs();
    a.add(product, 2);
    tabs[0].storage.setItem(cartKey("alice"), "{not json");
    expect(b.cart.lines[0].quantity).toBe(2);
    tabs[0].storage.clear();
    expect(b.cart.lines).toEqual([]);
  });

  it("a disposed store stops listening", () => {
    const { a, b } = twoTabs();
    b.dispose();
    a.add(product, 1);
    expect(b.cart.lines).toEqual([]);
  });
});
