import type { UserContext } from "../app";
import { cartTotals, lineTotalCents } from "../cart/cart";
import { formatMoney } from "../lib/money";
import { useStore } from "../lib/store";
import { ErrorNotice, Link, Price, RetryingNotice, usePageTitle } from "./components";
import { QuantityInput } from "./ProductPage";

export function CartPage({ ctx }: { ctx: UserContext }) {
  usePageTitle("Your cart");
  const cart = useStore(ctx.cart.state);
  const checkout = useStore(ctx.checkout.state);
  const totals = cartTotals(cart);
  const busy = checkout.phase === "submitting" || checkout.phase === "retrying";
  const general = checkout.problem?.fields.filter((f) => !/^(lines|items)\[\d+\]/.test(f.field)) ?? [];

  if (cart.lines.length === 0 && !busy) {
    return (
      <section class="cart-page">
        <h1>Your cart</h1>
        <div class="empty" data-testid="cart-empty">
          <p>Your cart is empty.</p>
          <Link href="/products" class="btn btn-primary">
            Browse products
          </Link>
        </div>
      </section>
    );
  }

  return (
    <section class="cart-page">
      <div class="page-head">
        <h1>Your cart</h1>
        <Link href="/products" class="btn btn-ghost">
          ← Keep shopping
        </Link>
      </div>
      <div class="cart-layout">
        <ul class="cart-lines" aria-label="Items in your cart">
          {cart.lines.map((line) => {
            const errors = checkout.lineErrors[line.productId] ?? [];
            const errorId = `line-error-${line.productId}`;
            return (
              <li key={line.productId} class={`cart-line${errors.length ? " has-error" : ""}`} data-testid="cart-line" data-product-id={line.productId}>
                <img src={line.imageUrl} alt="" width="96" height="60" loading="lazy" />
                <div class="cart-line-info">
                  <Link href={`/products/${encodeURIComponent(line.productId)}`} class="cart-line-name">
                    {line.name}
                  </Link>
                  <div class="muted small">
                    {line.vendor} · {line.productId}
                    {line.billingPeriod ? ` · ${line.billingPeriod}` : ""}
                  </div>
                  <Price priceCents={line.listPriceCents} effectivePriceCents={line.unitPriceCents} currency={line.currency} period={line.billingPeriod} />
                  {errors.length > 0 && (
                    <p id={errorId} class="field-error" role="alert">
                      {errors.join(" ")}
                    </p>
                  )}
                </div>
                <div class="cart-line-qty">
                  <QuantityInput
                    id={`qty-${line.productId}`}
                    label={`quantity of ${line.productId}`}
                    min={0}
                    value={line.quantity}
                    invalid={errors.length > 0}
                    describedBy={errors.length ? errorId : undefined}
                    onChange={(n) => ctx.cart.setQuantity(line.productId, n)}
                  />
                  <button type="button" class="btn btn-ghost btn-small" aria-label={`Remove ${line.productId}`} onClick={() => ctx.cart.remove(line.productId)} disabled={busy}>
                    Remove
                  </button>
                </div>
                <div class="cart-line-total" data-testid="line-total">
                  {formatMoney(lineTotalCents(line), line.currency)}
                </div>
              </li>
            );
          })}
        </ul>
        <aside class="summary" aria-label="Order summary">
          <h2>Summary</h2>
          <dl>
            <div>
              <dt>Items</dt>
              <dd data-testid="summary-count">{totals.itemCount}</dd>
            </div>
            <div>
              <dt>Subtotal</dt>
              <dd>{formatMoney(totals.subtotalCents, totals.currency)}</dd>
            </div>
            {totals.discountCents > 0 && (
              <div class="discount">
                <dt>Discounts</dt>
                <dd data-testid="summary-discount">−{formatMoney(totals.discountCents, totals.currency)}</dd>
              </div>
            )}
            <div class="total">
              <dt>Total</dt>
              <dd data-testid="summary-total">{formatMoney(totals.totalCents, totals.currency)}</dd>
            </div>
          </dl>
          {checkout.phase === "retrying" && checkout.problem && <RetryingNotice problem={checkout.problem} />}
          {checkout.phase === "error" && checkout.problem && (
            <ErrorNotice problem={{ ...checkout.problem, fields: general }} />
          )}
          <button
            type="button"
            class="btn btn-primary btn-block"
            data-testid="checkout"
            aria-busy={busy}
            disabled={cart.lines.length === 0}
            onClick={() => void ctx.checkout.submit()}
          >
            {busy ? "Placing your order…" : `Place order · ${formatMoney(totals.totalCents, totals.currency)}`}
          </button>
          <p class="hint">Subscriptions start when the order completes. You can follow it live.</p>
        </aside>
      </div>
    </section>
  );
}
