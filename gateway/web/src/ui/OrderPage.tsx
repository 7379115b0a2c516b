import { useEffect, useState } from "preact/hooks";
import { orderClient } from "../api/client";
import { Code } from "../api/errors";
import { orderReport, orderView } from "../api/model";
import type { UserContext } from "../app";
import { formatMoney } from "../lib/money";
import { useStore } from "../lib/store";
import { location, navigate, searchParams } from "../router";
import { ErrorNotice, Link, RetryingNotice, Spinner, StatusBadge, formatDate, useAsync, usePageTitle } from "./components";
import { NotFound } from "./NotFound";
import { DeleteOrderButton, Timeline, useLiveStatus } from "./orderParts";
import { toast } from "./toasts";
import { daysLeftText, grantedBy, periodText, seatsText } from "../entitlements/view";

/** What a completed order granted, linked to its place on the subscriptions page. */
function GrantedByOrder({ orderId, ctx }: { orderId: string; ctx: UserContext }) {
  const state = useStore(ctx.entitlements.state);
  const granted = grantedBy(state.list ?? [], orderId);
  const missing = granted.length === 0;
  useEffect(() => {
    // Not read yet, or read before this order completed: read again (the tracker may be doing so too).
    if (missing) void ctx.entitlements.refresh();
  }, [orderId, ctx, missing]);
  if (missing) return null;
  const now = Date.now();
  return (
    <section class="granted" aria-labelledby="granted-heading" data-testid="order-granted">
      <h2 id="granted-heading" class="small-heading">
        What this order gave you
      </h2>
      <ul>
        {granted.map((e) => (
          <li key={e.id} data-testid="granted-entitlement" data-entitlement-id={e.id}>
            <Link href={`/subscriptions#ent-${e.id}`}>
              {e.productName} ({e.productId})
            </Link>{" "}
            <span class="muted small">
              · {periodText(e.validFrom, e.validUntil)} · {seatsText(e)} · {daysLeftText(e, now)}
            </span>
          </li>
        ))}
      </ul>
    </section>
  );
}

export function OrderPage({ id, ctx }: { id: string; ctx: UserContext }) {
  usePageTitle(`Order #${id}`);
  const loc = useStore(location);
  const justPlaced = searchParams(loc).get("placed") === "1";
  const result = useAsync(async () => {
    const r = await orderClient.getOrder({ orderId: BigInt(id) });
    return r.order ? orderView(r.order) : undefined;
  }, [id]);
  const order = result.data;
  useEffect(() => {
    if (order) ctx.tracker.observe([orderReport(order)]);
  }, [order, ctx]);
  const { status, reason } = useLiveStatus(ctx, order);
  const [copied, setCopied] = useState(false);

  if (result.problem?.code === Code.NotFound || (!result.loading && !result.problem && !order)) {
    return <NotFound what={`order #${id}`} back="/orders" backText="Your orders" />;
  }
  return (
    <section class="order-page">
      <nav class="breadcrumb" aria-label="Breadcrumb">
        <Link href="/orders">Orders</Link> <span aria-hidden="true">/</span> <span aria-current="page">#{id}</span>
      </nav>
      {result.retrying && <RetryingNotice problem={result.retrying} />}
      {result.problem && <ErrorNotice problem={result.problem} onRetry={result.reload} />}
      {!order && result.loading && !result.retrying && <Spinner label="Loading order…" />}
      {order && (
        <>
          {justPlaced && (
            <div class="notice notice-success" role="status" data-testid="placed-banner">
              <strong>Thank you!</strong>{" "}
              {status === "completed"
                ? `Order #${order.orderId} is complete: your subscriptions are ready.`
                : status === "failed"
                  ? `Order #${order.orderId} could not be completed.`
                  : `Order #${order.orderId} was accepted. Follow it here, or keep shopping: we’ll let you know when it completes.`}
            </div>
          )}
          <div class="page-head">
            <div>
              <h1>
                Order #{order.orderId} <StatusBadge status={status} />
              </h1>
              <p class="muted">Placed {formatDate(order.createdAt)}</p>
            </div>
            <DeleteOrderButton
              orderId={order.orderId}
              ctx={ctx}
              onDeleted={() => {
                toast("info", `Order #${order.orderId} was deleted.`);
                navigate("/orders");
              }}
            />
          </div>
          <Timeline status={status} reason={reason} />
          {status === "completed" && <GrantedByOrder orderId={order.orderId} ctx={ctx} />}
          <div class="order-grid">
            <div class="table-wrap">
            <table class="lines">
              <caption class="visually-hidden">Order lines</caption>
              <thead>
                <tr>
                  <th scope="col">Product</th>
                  <th scope="col" class="num">
                    Seats
                  </th>
                  <th scope="col" class="num col-unit">
                    Unit price
                  </th>
                  <th scope="col" class="num">
                    Total
                  </th>
                </tr>
              </thead>
              <tbody>
                {order.lines.map((l) => (
                  <tr key={l.productId} data-testid="order-line">
                    <td>
                      <Link href={`/products/${encodeURIComponent(l.productId)}`}>{l.productName}</Link>
                      <div class="muted small">
                        {l.productId}
                        <span class="phone-only">
                          {" "}
                          · {l.quantity} × {formatMoney(l.unitPriceCents, order.currency)}
                        </span>
                      </div>
                    </td>
                    <td class="num">{l.quantity}</td>
                    <td class="num col-unit">{formatMoney(l.unitPriceCents, order.currency)}</td>
                    <td class="num">{formatMoney(l.lineTotalCents, order.currency)}</td>
                  </tr>
                ))}
              </tbody>
              <tfoot>
                <tr>
                  <th scope="row" colSpan={2} class="num">
                    Order total
                  </th>
                  <td class="col-unit" />
                  <td class="num total" data-testid="order-total">
                    {formatMoney(order.totalCents, order.currency)}
                  </td>
                </tr>
              </tfoot>
            </table>
            </div>
            <aside class="order-facts" aria-label="Order details">
              <dl>
                <div>
                  <dt>Order number</dt>
                  <dd>#{order.orderId}</dd>
                </div>
                <div>
                  <dt>Correlation id</dt>
                  <dd class="cid">
                    <code data-testid="correlation-id">{order.correlationId}</code>
                    <button
                      type="button"
                      class="btn btn-ghost btn-small"
                      onClick={() => {
                        void navigator.clipboard?.writeText(order.correlationId).then(() => setCopied(true), () => undefined);
                      }}
                    >
                      {copied ? "Copied" : "Copy"}
                    </button>
                  </dd>
                </div>
                <div>
                  <dt>Status</dt>
                  <dd data-testid="order-status" data-status={status}>
                    <StatusBadge status={status} />
                  </dd>
                </div>
              </dl>
              <p class="hint small">Quote the correlation id if you contact support about this order.</p>
            </aside>
          </div>
        </>
      )}
    </section>
  );
}
