import { describe, expect, it } from "vitest";
import {
  EMPTY_CART,
  MAX_LINES,
  MAX_QUANTITY,
  addToCart,
  canAdd,
  cartFingerprint,
  cartTotals,
  lineTotalCents,
  parseCart,
  removeLine,
  setQuantity,
  type CartProduct,
} from "../src/cart/cart";

const az104: CartProduct = {
  productId: "AZ-104",
  name: "Azure Administrator Associate (AZ-104) Bundle",
  vendor: "Microsoft",
  category: "Bundle",
  imageUrl: "/images/products/az-104.svg",
  billingPeriod: "Annual",
  currency: "USD",
  listPriceCents: 14999,
  unitPriceCents: 13499, // 10 % off
  discountPercent: 10,
};
const az900: CartProduct = { ...az104, productId: "AZ-900", name: "AZ-900", listPriceCents: 1999, unitPriceCents: 1999, discountPercent: 0 };

describe("cart maths", () => {
  it("an empty cart costs nothing", () => {
    expect(cartTotals(EMPTY_CART)).toEqual({ itemCount: 0, subtotalCents: 0, discountCents: 0, totalCents: 0, currency: "USD" });
  });

  it("totals sum lines at the discounted price and report the discount", () => {
    const cart = addToCart(addToCart(EMPTY_CART, az104, 2), az900, 3);
    const t = cartTotals(cart);
    expect(t.itemCount).toBe(5);
    expect(t.subtotalCents).toBe(2 * 14999 + 3 * 1999);
    expect(t.totalCents).toBe(2 * 13499 + 3 * 1999);
    expect(t.discountCents).toBe(2 * 1500);
    expect(lineTotalCents(cart.lines[0])).toBe(26998);
  });

  it("adding a product already in the cart adds to its line", () => {
    const cart = addToCart(addToCart(EMPTY_CART, az104, 1), az104, 2);
    expect(cart.lines).toHaveLength(1);
    expect(cart.lines[0].quantity).toBe(3);
  });

  it("quantities are capped at the order limit", () => {
    const cart = addToCart(addToCart(EMPTY_CART, az104, 60), az104, 60);
    expect(cart.lines[0].quantity).toBe(MAX_QUANTITY);
    expect(setQuantity(cart, "AZ-104", 500).lines[0].quantity).toBe(MAX_QUANTITY);
  });

  it("setting the quantity to 0 removes the line", () => {
    const cart = addToCart(addToCart(EMPTY_CART, az104, 2), az900, 1);
    const after = setQuantity(cart, "AZ-104", 0);
    expect(after.lines.map((l) => l.productId)).toEqual(["AZ-900"]);
    expect(setQuantity(after, "AZ-900", -3).lines).toEqual([]);
  });

  it("changing a quantity keeps the line's place; remove drops it", () => {
    const cart = addToCart(addToCart(EMPTY_CART, az104, 2), az900, 1);
    const changed = setQuantity(cart, "AZ-104", 7);
    expect(changed.lines.map((l) => [l.productId, l.quantity])).toEqual([
      ["AZ-104", 7],
      ["AZ-900", 1],
    ]);
    expect(removeLine(changed, "AZ-104").lines.map((l) => l.productId)).toEqual(["AZ-900"]);
  });

  it("unknown products and zero additions leave the cart as it is", () => {
    const cart = addToCart(EMPTY_CART, az104, 1);
    expect(setQuantity(cart, "NOPE", 3)).toBe(cart);
    expect(addToCart(cart, az900, 0)).toBe(cart);
  });

  it("a cart holds at most MAX_LINES lines", () => {
    let cart = EMPTY_CART;
    for (let i = 0; i < MAX_LINES; i++) cart = addToCart(cart, { ...az900, productId: `P-${i}` }, 1);
    expect(canAdd(cart, "ANOTHER")).toBe(false);
    expect(addToCart(cart, { ...az900, productId: "ANOTHER" }, 1)).toBe(cart);
    expect(canAdd(cart, "P-3")).toBe(true);
  });

  it("the fingerprint names lines and quantities", () => {
    const cart = addToCart(addToCart(EMPTY_CART, az104, 2), az900, 1);
    expect(cartFingerprint(cart)).toBe("AZ-104x2,AZ-900x1");
    expect(cartFingerprint(setQuantity(cart, "AZ-900", 2))).not.toBe(cartFingerprint(cart));
  });

  it("a cart read from storage drops malformed lines and duplicates", () => {
    const parsed = parseCart({
      lines: [
        { ...az104, quantity: 2 },
        { ...az104, quantity: 5 },
        { productId: "", quantity: 1, unitPriceCents: 5 },
        { productId: "X", quantity: 0, unitPriceCents: 5 },
        { productId: "Y", quantity: 1, unitPriceCents: -1 },
        null,
        { productId: "Z", quantity: 1000, unitPriceCents: 100, listPriceCents: 50 },
      ],
    });
    expect(parsed.lines.map((l) => [l.productId, l.quantity])).toEqual([
      ["AZ-104", 2],
      ["Z", MAX_QUANTITY],
    ]);
    // A list price below the charged price is not a discount.
    expect(parsed.lines[1].listPriceCents).toBe(100);
    expect(parseCart("nonsense")).toEqual(EMPTY_CART);
  });
});
