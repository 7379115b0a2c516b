/** What a signed-in user has: their cart, their order tracker and their checkout. Rebuilt on sign-in/out. */
import { catalogClient, entitlementClient, orderClient, statusClient } from "./api/client";
import { asConnectError, errorCode } from "./api/errors";
import { orderView, productView, statusFromProto, updateReport, type OrderView, type ProductView } from "./api/model";
import { sessionState, expireSession } from "./auth/session";
import { CartStore } from "./cart/store";
import { CheckoutController } from "./cart/checkout";
import { EntitlementStore } from "./entitlements/store";
import { entitlementView, grantedText } from "./entitlements/view";
import { local } from "./lib/storage";
import { Store } from "./lib/store";
import { OrderTracker, type StreamEvent, type WatchOptions } from "./orders/tracker";
import { navigate } from "./router";
import { toast } from "./ui/toasts";

export interface UserContext {
  userId: string;
  cart: CartStore;
  tracker: OrderTracker;
  checkout: CheckoutController<OrderView>;
  entitlements: EntitlementStore;
}

export const userContext = new Store<UserContext | null>(null);

async function* watch(correlationIds: string[], { signal, onOpen }: WatchOptions): AsyncIterable<StreamEvent> {
  const stream = statusClient.watchOrderStatus(
    { correlationIds },
    {
      signal,
      onHeader: (headers) => {
        // A trailers-only answer (an error) carries grpc-status in its headers: not open.
        if (!headers.has("grpc-status")) onOpen();
      },
    },
  );
  for await (const message of stream) {
    if (message.event.case === "update") yield { kind: "update", report: updateReport(message.event.value) };
    else yield { kind: "heartbeat" };
  }
}

function build(userId: string): UserContext {
  const events = typeof window === "undefined" ? undefined : window;
  const cart = new CartStore(local, userId, events);
  const entitlements = new EntitlementStore({
    async list() {
      const r = await entitlementClient.listEntitlements({});
      return r.entitlements.map(entitlementView);
    },
  });
  const tracker = new OrderTracker({
    userId,
    storage: local,
    events,
    watch,
    async getStatus(correlationId) {
      const r = await orderClient.getOrderStatus({ correlationId });
      return { correlationId, status: statusFromProto(r.status), orderId: r.orderId.toString() };
    },
    isOnline: () => (typeof navigator === "undefined" ? true : navigator.onLine),
    onUnauthenticated: expireSession,
    errorCode: (err) => errorCode(err),
    onFinished(order) {
      const href = order.orderId ? `/orders/${order.orderId}` : "/orders";
      const name = order.orderId ? `Order #${order.orderId}` : "Your order";
      if (order.status === "completed") {
        toast("success", `${name} is complete.`, { href, text: "View" });
        // What it granted is recorded with it: read it again, say so, and update any page showing it.
        void entitlements.afterOrderCompleted(order.orderId).then((granted) => {
          if (granted.length > 0) toast("success", `${grantedText(granted)}.`, { href: "/subscriptions", text: "My subscriptions" });
        });
      }
      else toast("error", `${name} failed${order.reason ? `: ${order.reason}` : "."}`, { href, text: "View" });
    },
  });
  const checkout = new CheckoutController<OrderView>({
    userId,
    storage: local,
    cart,
    async place(lines, idempotencyKey) {
      const r = await orderClient.placeOrder({ lines, idempotencyKey });
      if (!r.order) throw asConnectError(new Error("the server answered without the order"));
      return orderView(r.order);
    },
    onPlaced(order) {
      tracker.trackPlaced({ correlationId: order.correlationId, status: order.status, orderId: order.orderId });
      navigate(`/orders/${order.orderId}?placed=1`);
    },
  });
  tracker.start();
  return { userId, cart, tracker, checkout, entitlements };
}

function sync(): void {
  const s = sessionState.get();
  const current = userContext.get();
  if (current && current.userId === s?.userId) return;
  if (current) {
    current.tracker.stop();
    current.cart.dispose();
    current.entitlements.stop();
  }
  userContext.set(s ? build(s.userId) : null);
}

sessionState.subscribe(sync);
sync();

/** The whole catalog (145 products: two pages), read once, to derive the vendor and category filters. */
let allProducts: Promise<ProductView[]> | undefined;
export function loadAllProducts(): Promise<ProductView[]> {
  allProducts ??= (async () => {
    const out: ProductView[] = [];
    for (let offset = 0; ; ) {
      const page = await catalogClient.listProducts({ offset, size: 100 });
      out.push(...page.products.map(productView));
      offset += page.products.length;
      if (page.products.length === 0 || offset >= page.total) break;
    }
    return out;
  })().catch((err) => {
    allProducts = undefined;
    throw err;
  });
  return allProducts;
}
