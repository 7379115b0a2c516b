import type { ComponentChildren } from "preact";
import type { UserContext } from "../app";
import { sessionState, signOutEverywhere } from "../auth/session";
import { cartTotals } from "../cart/cart";
import { formatMoney } from "../lib/money";
import { useStore } from "../lib/store";
import { STATUS_LABEL } from "../orders/status";
import type { ConnectionState } from "../orders/tracker";
import { location } from "../router";
import { Link } from "./components";
import { dismissToast, toasts } from "./toasts";

const CONNECTION_LABEL: Record<ConnectionState, string> = {
  connecting: "Connecting",
  connected: "Connected",
  reconnecting: "Reconnecting",
  offline: "Offline",
};

function ConnectionIndicator({ ctx }: { ctx: UserContext }) {
  const state = useStore(ctx.tracker.connection);
  const title =
    state === "connected"
      ? "Live order updates are on"
      : state === "offline"
        ? "You are offline; order updates resume when the connection is back"
        : "Re-establishing live order updates";
  return (
    <button
      type="button"
      class={`conn conn-${state}`}
      data-testid="connection"
      data-state={state}
      title={title}
      onClick={() => state !== "connected" && ctx.tracker.reconnectNow()}
      aria-label={`Live updates: ${CONNECTION_LABEL[state]}${state === "connected" ? "" : " (press to retry now)"}`}
    >
      <span class="conn-dot" aria-hidden="true" />
      <span class="conn-label" aria-live="polite">
        {CONNECTION_LABEL[state]}
      </span>
    </button>
  );
}

function ActiveOrderPill({ ctx }: { ctx: UserContext }) {
  const last = useStore(ctx.tracker.last);
  const orders = useStore(ctx.tracker.orders);
  const order = last ? orders[last] : undefined;
  if (!order) return null;
  const href = order.orderId ? `/orders/${order.orderId}` : "/orders";
  return (
    <Link
      href={href}
      class={`pill pill-${order.status}`}
      data-testid="active-order"
      data-status={order.status}
      aria-label={`Latest order ${order.orderId ? `#${order.orderId}` : ""}: ${STATUS_LABEL[order.status]}`}
    >
      <span class="pill-dot" aria-hidden="true" />
      <span class="pill-text">
        {order.orderId ? `#${order.orderId}` : "Order"} · {STATUS_LABEL[order.status]}
      </span>
    </Link>
  );
}

function CartButton({ ctx }: { ctx: UserContext }) {
  const cart = useStore(ctx.cart.state);
  const totals = cartTotals(cart);
  return (
    <Link
      href="/cart"
      class="cart-button"
      data-testid="cart-button"
      aria-label={`Cart: ${totals.itemCount} ${totals.itemCount === 1 ? "item" : "items"}, ${formatMoney(totals.totalCents, totals.currency)}`}
    >
      <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
        <path
          fill="currentColor"
          d="M7 18a2 2 0 1 0 0 4 2 2 0 0 0 0-4Zm10 0a2 2 0 1 0 0 4 2 2 0 0 0 0-4ZM6.2 6l.9 6.5A2 2 0 0 0 9.1 14h8.2a2 2 0 0 0 1.9-1.4L21 7H6.2ZM2 3h2.6l.5 3h-.1L4 3H2Z"
        />
      </svg>
      <span class="cart-count" data-testid="cart-count">
        {totals.itemCount}
      </span>
      <span class="cart-total">{formatMoney(totals.totalCents, totals.currency)}</span>
    </Link>
  );
}

function Toasts() {
  const list = useStore(toasts);
  return (
    <div class="toasts" aria-live="polite" aria-relevant="additions">
      {list.map((t) => (
        <div key={t.id} class={`toast toast-${t.kind}`} role={t.kind === "error" ? "alert" : "status"} data-testid="toast">
          <span>{t.text}</span>
          {t.href && (
            <Link href={t.href} class="toast-link" onClick={() => dismissToast(t.id)}>
              {t.linkText ?? "Open"}
            </Link>
          )}
          <button type="button" class="toast-close" aria-label="Dismiss" onClick={() => dismissToast(t.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}

export function Shell({ ctx, children }: { ctx: UserContext | null; children: ComponentChildren }) {
  const loc = useStore(location);
  const session = useStore(sessionState);
  const shownName = session?.name ?? ctx?.userId ?? "";
  const section = loc.pathname.startsWith("/orders")
    ? "orders"
    : loc.pathname.startsWith("/subscriptions")
      ? "subscriptions"
      : loc.pathname.startsWith("/cart")
        ? "cart"
        : "products";
  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="header">
        <div class="header-inner">
          <Link href="/products" class="brand" aria-label="Contoso Shop, home">
            <span class="brand-mark" aria-hidden="true">
              C
            </span>
            <span class="brand-name">Contoso Shop</span>
          </Link>
          {ctx && (
            <nav class="nav" aria-label="Main">
              <Link href="/products" aria-current={section === "products" ? "page" : undefined}>
                Products
              </Link>
              <Link href="/orders" aria-current={section === "orders" ? "page" : undefined}>
                Orders
              </Link>
              <Link href="/subscriptions" aria-current={section === "subscriptions" ? "page" : undefined}>
                My subscriptions
              </Link>
            </nav>
          )}
          {ctx && (
            <div class="header-tools">
              <ActiveOrderPill ctx={ctx} />
              <ConnectionIndicator ctx={ctx} />
              <CartButton ctx={ctx} />
              <div class="user">
                <span class="user-name" data-testid="user-name" title={`Signed in as ${shownName}`}>
                  <span class="avatar" aria-hidden="true">
                    {shownName.slice(0, 1).toUpperCase()}
                  </span>
                  <span class="user-label">{shownName}</span>
                </span>
                <button type="button" class="btn btn-ghost btn-small" onClick={() => signOutEverywhere()}>
                  Sign out
                </button>
              </div>
            </div>
          )}
        </div>
      </header>
      <main id="main" class="main" tabIndex={-1}>
        {children}
      </main>
      <footer class="footer">
        Contoso Shop · certification prep for busy learners · prices in USD, billed per period
      </footer>
      <Toasts />
    </>
  );
}
