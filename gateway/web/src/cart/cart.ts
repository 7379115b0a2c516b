/** The cart's maths: pure functions over an immutable cart, so they are easy to test and to sync. */

export const MAX_QUANTITY = 100;
export const MAX_LINES = 50;

export interface CartLine {
  productId: string;
  name: string;
  vendor: string;
  category: string;
  imageUrl: string;
  billingPeriod: string;
  currency: string;
  /** Price before the discount, per unit, in cents. */
  listPriceCents: number;
  /** What one unit is charged: the price after the discount, in cents. */
  unitPriceCents: number;
  discountPercent: number;
  quantity: number;
}

export interface Cart {
  lines: CartLine[];
}

export const EMPTY_CART: Cart = { lines: [] };

/** What a product contributes to a new cart line (everything but the quantity). */
export type CartProduct = Omit<CartLine, "quantity">;

export interface CartTotals {
  /** Units over all lines. */
  itemCount: number;
  /** Sum of list prices. */
  subtotalCents: number;
  /** How much the discounts take off. */
  discountCents: number;
  /** What the order will cost. */
  totalCents: number;
  currency: string;
}

function clampQuantity(quantity: number): number {
  if (!Number.isFinite(quantity)) return 0;
  return Math.max(0, Math.min(MAX_QUANTITY, Math.trunc(quantity)));
}

/** Adds `quantity` units of a product: to its line if there is one (capped at MAX_QUANTITY), else as a new line. */
export function addToCart(cart: Cart, product: CartProduct, quantity = 1): Cart {
  const add = clampQuantity(quantity);
  if (add === 0) return cart;
  const existing = cart.lines.find((l) => l.productId === product.productId);
  if (existing) {
    return {
      lines: cart.lines.map((l) =>
        l.productId === product.productId
          ? { ...l, ...product, quantity: clampQuantity(l.quantity + add) }
          : l,
      ),
    };
  }
  if (cart.lines.length >= MAX_LINES) return cart;
  return { lines: [...cart.lines, { ...product, quantity: add }] };
}

/** Whether a product can be added (an existing line, or room for one more line). */
export function canAdd(cart: Cart, productId: string): boolean {
  return cart.lines.some((l) => l.productId === productId) || cart.lines.length < MAX_LINES;
}

/** Sets a line's quantity; 0 (or less) removes the line. Unknown products are ignored. */
export function setQuantity(cart: Cart, productId: string, quantity: number): Cart {
  const q = clampQuantity(quantity);
  if (!cart.lines.some((l) => l.productId === productId)) return cart;
  if (q === 0) return removeLine(cart, productId);
  return { lines: cart.lines.map((l) => (l.productId === productId ? { ...l, quantity: q } : l)) };
}

export function removeLine(cart: Cart, productId: string): Cart {
  return { lines: cart.lines.filter((l) => l.productId !== productId) };
}

export function lineTotalCents(line: CartLine): number {
  return line.unitPriceCents * line.quantity;
}

export function cartTotals(cart: Cart): CartTotals {
  let itemCount = 0;
  let subtotalCents = 0;
  let totalCents = 0;
  for (const line of cart.lines) {
    itemCount += line.quantity;
    subtotalCents += line.listPriceCents * line.quantity;
    totalCents += lineTotalCents(line);
  }
  return {
    itemCount,
    subtotalCents,
    discountCents: subtotalCents - totalCents,
    totalCents,
    currency: cart.lines[0]?.currency || "USD",
  };
}

/** A stable text naming the cart's lines and quantities: equal carts make equal orders. */
export function cartFingerprint(cart: Cart): string {
  return cart.lines.map((l) => `${l.productId}x${l.quantity}`).join(",");
}

/** A cart read from storage or another tab: anything malformed is dropped rather than trusted. */
export function parseCart(value: unknown): Cart {
  if (!value || typeof value !== "object" || !Array.isArray((value as Cart).lines)) return EMPTY_CART;
  const lines: CartLine[] = [];
  for (const raw of (value as Cart).lines) {
    if (!raw || typeof raw !== "object") continue;
    const l = raw as Partial<CartLine>;
    const quantity = clampQuantity(Number(l.quantity));
    if (typeof l.productId !== "string" || !l.productId || quantity === 0) continue;
    if (lines.some((x) => x.productId === l.productId)) continue;
    const unit = Number(l.unitPriceCents);
    const list = Number(l.listPriceCents);
    if (!Number.isFinite(unit) || unit < 0) continue;
    lines.push({
      productId: l.productId,
      name: String(l.name ?? l.productId),
      vendor: String(l.vendor ?? ""),
      category: String(l.category ?? ""),
      imageUrl: String(l.imageUrl ?? ""),
      billingPeriod: String(l.billingPeriod ?? ""),
      currency: String(l.currency || "USD"),
      listPriceCents: Number.isFinite(list) && list >= unit ? list : unit,
      unitPriceCents: unit,
      discountPercent: Number(l.discountPercent) || 0,
      quantity,
    });
  }
  return { lines: lines.slice(0, MAX_LINES) };
}
