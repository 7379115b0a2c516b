import { useState } from "preact/hooks";
import { catalogClient } from "../api/client";
import { Code } from "../api/errors";
import { cartProduct, productView } from "../api/model";
import type { UserContext } from "../app";
import { MAX_QUANTITY, canAdd } from "../cart/cart";
import { formatMoney } from "../lib/money";
import { useStore } from "../lib/store";
import { ErrorNotice, Link, Price, RetryingNotice, Spinner, useAsync, usePageTitle } from "./components";
import { NotFound } from "./NotFound";
import { toast } from "./toasts";

export function QuantityInput(props: { id: string; value: number; onChange: (n: number) => void; label: string; min?: number; invalid?: boolean; describedBy?: string }) {
  const min = props.min ?? 1;
  const set = (n: number) => props.onChange(Math.max(min, Math.min(MAX_QUANTITY, Number.isFinite(n) ? Math.trunc(n) : min)));
  return (
    <div class="qty">
      <button type="button" class="qty-btn" aria-label={`Decrease ${props.label}`} onClick={() => set(props.value - 1)} disabled={props.value <= min}>
        −
      </button>
      <input
        id={props.id}
        type="number"
        inputMode="numeric"
        min={min}
        max={MAX_QUANTITY}
        value={props.value}
        aria-label={props.label}
        aria-invalid={props.invalid || undefined}
        aria-describedby={props.describedBy}
        onChange={(e) => set(Number.parseInt(e.currentTarget.value, 10))}
      />
      <button type="button" class="qty-btn" aria-label={`Increase ${props.label}`} onClick={() => set(props.value + 1)} disabled={props.value >= MAX_QUANTITY}>
        +
      </button>
    </div>
  );
}

export function ProductPage({ id, ctx }: { id: string; ctx: UserContext }) {
  const product = useAsync(async () => {
    const r = await catalogClient.getProduct({ id });
    return r.product ? productView(r.product) : undefined;
  }, [id]);
  const cart = useStore(ctx.cart.state);
  const [quantity, setQuantity] = useState(1);
  usePageTitle(product.data?.name ?? id);

  if (product.problem?.code === Code.NotFound || (!product.loading && !product.problem && !product.data)) {
    return <NotFound what={`product “${id}”`} />;
  }
  const p = product.data;
  const inCart = cart.lines.find((l) => l.productId === id)?.quantity ?? 0;
  return (
    <section class="product-page">
      <nav class="breadcrumb" aria-label="Breadcrumb">
        <Link href="/products">Products</Link> <span aria-hidden="true">/</span> <span aria-current="page">{id}</span>
      </nav>
      {product.retrying && <RetryingNotice problem={product.retrying} />}
      {product.problem && <ErrorNotice problem={product.problem} onRetry={product.reload} />}
      {!p && product.loading && !product.retrying && <Spinner label="Loading product…" />}
      {p && (
        <div class="product-detail" data-testid="product-detail">
          <div class="product-media">
            <img src={p.imageUrl} alt={`${p.name} cover`} width="640" height="400" />
            {p.discountPercent > 0 && <span class="badge badge-sale badge-large">Save {p.discountPercent}%</span>}
          </div>
          <div class="product-info">
            <p class="vendor">{p.vendor}</p>
            <h1>{p.name}</h1>
            <dl class="facts">
              <div>
                <dt>Exam code</dt>
                <dd>{p.id}</dd>
              </div>
              <div>
                <dt>Category</dt>
                <dd>{p.category}</dd>
              </div>
              <div>
                <dt>Billing</dt>
                <dd>
                  {p.subscription ? "Subscription" : "One-off"}
                  {p.billingPeriod ? `, ${p.billingPeriod.toLowerCase()}` : ""}
                </dd>
              </div>
            </dl>
            <div class="buy-box">
              <Price priceCents={p.priceCents} effectivePriceCents={p.effectivePriceCents} currency={p.currency} period={p.billingPeriod} />
              {p.discountPercent > 0 && (
                <p class="saving">
                  You save {formatMoney(p.priceCents - p.effectivePriceCents, p.currency)} per seat ({p.discountPercent}% off)
                </p>
              )}
              <form
                class="buy-form"
                onSubmit={(e) => {
                  e.preventDefault();
                  ctx.cart.add(cartProduct(p), quantity);
                  toast("success", `Added ${quantity} × ${p.id} to your cart.`, { href: "/cart", text: "View cart" });
                  setQuantity(1);
                }}
              >
                <label for="quantity">Seats</label>
                <QuantityInput id="quantity" label="quantity" value={quantity} onChange={setQuantity} />
                <button type="submit" class="btn btn-primary" disabled={!canAdd(cart, p.id) || inCart >= MAX_QUANTITY}>
                  Add to cart
                </button>
              </form>
              <p class="hint">
                Each seat gives one learner access for one {p.billingPeriod === "Annual" ? "year" : "month"}.
                {inCart > 0 && (
                  <>
                    {" "}
                    You have <strong>{inCart}</strong> in your cart.{" "}
                    <Link href="/cart">
                      Go to cart
                    </Link>
                  </>
                )}
              </p>
            </div>
          </div>
        </div>
      )}
    </section>
  );
}
