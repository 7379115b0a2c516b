import { Store } from "../lib/store";
import { readJson, writeJson, type KeyValueStorage, type StorageEvents } from "../lib/storage";
import {
  EMPTY_CART,
  addToCart,
  parseCart,
  removeLine,
  setQuantity,
  type Cart,
  type CartProduct,
} from "./cart";

export function cartKey(userId: string): string {
  return `contoso.cart.v1.${userId}`;
}

/**
 * The signed-in user's cart, kept in localStorage and in sync across tabs: a change here is written
 * to storage, and the browser's `storage` event brings other tabs' changes in.
 */
export class CartStore {
  readonly state: Store<Cart>;
  readonly #storage: KeyValueStorage;
  readonly #key: string;
  readonly #events: StorageEvents | undefined;
  readonly #onStorage = (event: { key: string | null; newValue: string | null }) => {
    if (event.key !== null && event.key !== this.#key) return;
    // key null: the other tab cleared the whole storage; newValue null: it removed the cart.
    const raw = event.key === null ? null : event.newValue;
    if (raw === null) {
      this.state.set(parseCart(readJson(this.#storage, this.#key, EMPTY_CART)));
      return;
    }
    const next = parseJson(raw);
    if (next !== undefined) this.state.set(parseCart(next));
  };

  constructor(storage: KeyValueStorage, userId: string, events?: StorageEvents) {
    this.#storage = storage;
    this.#key = cartKey(userId);
    this.#events = events;
    this.state = new Store(parseCart(readJson(storage, this.#key, EMPTY_CART)));
    events?.addEventListener("storage", this.#onStorage);
  }

  get cart(): Cart {
    return this.state.get();
  }

  add(product: CartProduct, quantity = 1): void {
    this.#commit(addToCart(this.cart, product, quantity));
  }

  setQuantity(productId: string, quantity: number): void {
    this.#commit(setQuantity(this.cart, productId, quantity));
  }

  remove(productId: string): void {
    this.#commit(removeLine(this.cart, productId));
  }

  clear(): void {
    this.#commit(EMPTY_CART);
  }

  dispose(): void {
    this.#events?.removeEventListener("storage", this.#onStorage);
  }

  #commit(cart: Cart): void {
    if (cart === this.cart) return;
    this.state.set(cart);
    writeJson(this.#storage, this.#key, cart);
  }
}

/** The parsed value, or undefined for text that is not JSON (a write we cannot read is ignored). */
function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return undefined;
  }
}
