import { useEffect } from "preact/hooks";
import { orderClient } from "../api/client";
import { orderReport, orderView, type OrderView } from "../api/model";
import type { UserContext } from "../app";
import { formatMoney } from "../lib/money";
import { useStore } from "../lib/store";
import { location, navigate, searchParams } from "../router";
import { ErrorNotice, Link, Pager, RetryingNotice, Spinner, StatusBadge, formatDate, useAsync, usePageTitle } from "./components";
import { DeleteOrderButton, useLiveStatus } from "./orderParts";
import { toast } from "./toasts";

const PAGE_SIZE = 10;

function OrderRow({ order, ctx, onDeleted }: { order: OrderView; ctx: UserContext; onDeleted: () => void }) {
  const { status } = useLiveStatus(ctx, order);
  const items = order.lines.reduce((n, l) => n + l.quantity, 0);
  const names = order.lines.map((l) => l.productId).join(", ");
  return (
    <li class="order-row" data-testid="order-row" data-order-id={order.orderId} data-status={status}>
      <div class="order-row-main">
        <Link href={`/orders/${order.orderId}`} class="order-link">
          Order #{order.orderId}
        </Link>
        <div class="muted small">{formatDate(order.createdAt)}</div>
      </div>
      <div class="order-row-items small" title={names}>
        {items} {items === 1 ? "seat" : "seats"} · {names}
      </div>
      <div class="order-row-status">
        <StatusBadge status={status} />
      </div>
      <div class="order-row-total">{formatMoney(order.totalCents, order.currency)}</div>
      <div class="order-row-actions">
        <DeleteOrderButton orderId={order.orderId} ctx={ctx} small onDeleted={onDeleted} />
      </div>
    </li>
  );
}

export function OrdersPage({ ctx }: { ctx: UserContext }) {
  usePageTitle("Your orders");
  const loc = useStore(location);
  const params = searchParams(loc);
  const page = Math.max(1, Number.parseInt(params.get("page") ?? "1", 10) || 1);
  const offset = (page - 1) * PAGE_SIZE;
  const list = useAsync(async () => {
    const r = await orderClient.listOrders({ offset, size: PAGE_SIZE });
    return { orders: r.orders.map(orderView), total: r.total };
  }, [offset]);
  useEffect(() => {
    if (list.data) ctx.tracker.observe(list.data.orders.map(orderReport));
  }, [list.data, ctx]);

  return (
    <section class="orders-page">
      <div class="page-head">
        <div>
          <h1>Your orders</h1>
          <p class="muted">Newest first. Orders still in progress update live.</p>
        </div>
        <button type="button" class="btn btn-ghost" onClick={list.reload}>
          Refresh
        </button>
      </div>
      {list.retrying && <RetryingNotice problem={list.retrying} />}
      {list.problem && <ErrorNotice problem={list.problem} onRetry={list.reload} />}
      {!list.data && list.loading && !list.retrying && <Spinner label="Loading your orders…" />}
      {list.data && list.data.total === 0 && (
        <div class="empty" data-testid="orders-empty">
          <p>You have no orders yet.</p>
          <Link href="/products" class="btn btn-primary">
            Find something to learn
          </Link>
        </div>
      )}
      {list.data && list.data.orders.length > 0 && (
        <>
          <p class="result-count" data-testid="orders-count">
            {list.data.total} {list.data.total === 1 ? "order" : "orders"}
          </p>
          <ul class="order-list" aria-label="Orders" aria-busy={list.loading}>
            {list.data.orders.map((o) => (
              <OrderRow
                key={o.orderId}
                order={o}
                ctx={ctx}
                onDeleted={() => {
                  toast("info", `Order #${o.orderId} was deleted.`);
                  // The last row of a page gone: show the page before.
                  if (list.data && list.data.orders.length === 1 && page > 1) navigate(`/orders?page=${page - 1}`);
                  else list.reload();
                }}
              />
            ))}
          </ul>
          <Pager
            label="Order pages"
            offset={offset}
            size={PAGE_SIZE}
            total={list.data.total}
            onPage={(o) => navigate(o > 0 ? `/orders?page=${o / PAGE_SIZE + 1}` : "/orders")}
          />
        </>
      )}
    </section>
  );
}
