import { useEffect, useMemo, useState } from "preact/hooks";
import { catalogClient } from "../api/client";
import { cartProduct, productView, type ProductView } from "../api/model";
import { loadAllProducts, type UserContext } from "../app";
import { canAdd } from "../cart/cart";
import { useStore } from "../lib/store";
import { location, navigate, searchParams } from "../router";
import { ErrorNotice, Link, Pager, Price, RetryingNotice, Spinner, useAsync, usePageTitle } from "./components";
import { toast } from "./toasts";

const PAGE_SIZE = 12;

function withParams(params: URLSearchParams, changes: Record<string, string | null>): string {
  const next = new URLSearchParams(params);
  for (const [k, v] of Object.entries(changes)) {
    if (v) next.set(k, v);
    else next.delete(k);
  }
  const s = next.toString();
  return `/products${s ? `?${s}` : ""}`;
}

export function ProductCard({ product, ctx }: { product: ProductView; ctx: UserContext }) {
  const cart = useStore(ctx.cart.state);
  const inCart = cart.lines.find((l) => l.productId === product.id)?.quantity ?? 0;
  return (
    <li class="card product-card" data-testid="product-card" data-product-id={product.id}>
      <Link href={`/products/${encodeURIComponent(product.id)}`} class="card-media" tabIndex={-1} aria-hidden="true">
        <img src={product.imageUrl} alt="" loading="lazy" width="320" height="200" />
        {product.discountPercent > 0 && <span class="badge badge-sale">−{product.discountPercent}%</span>}
      </Link>
      <div class="card-body">
        <div class="card-meta">
          <span class="vendor">{product.vendor}</span>
          <span class="dot" aria-hidden="true">
            ·
          </span>
          <span>{product.category}</span>
        </div>
        <h2 class="card-title">
          <Link href={`/products/${encodeURIComponent(product.id)}`}>{product.name}</Link>
        </h2>
        <div class="card-tags">
          <span class="tag">{product.id}</span>
          {product.billingPeriod && <span class="tag tag-period">{product.billingPeriod}</span>}
        </div>
        <div class="card-foot">
          <Price
            priceCents={product.priceCents}
            effectivePriceCents={product.effectivePriceCents}
            currency={product.currency}
            period={product.billingPeriod}
          />
          <button
            type="button"
            class="btn btn-primary btn-small"
            aria-label={`Add ${product.name} to cart`}
            disabled={!canAdd(cart, product.id)}
            onClick={() => {
              ctx.cart.add(cartProduct(product), 1);
              toast("success", `Added ${product.id} to your cart.`, { href: "/cart", text: "View cart" });
            }}
          >
            {inCart ? `Add another (${inCart})` : "Add to cart"}
          </button>
        </div>
      </div>
    </li>
  );
}

export function CatalogPage({ ctx }: { ctx: UserContext }) {
  usePageTitle("Products");
  const loc = useStore(location);
  const params = searchParams(loc);
  const query = params.get("q") ?? "";
  const vendor = params.get("vendor") ?? "";
  const category = params.get("category") ?? "";
  const page = Math.max(1, Number.parseInt(params.get("page") ?? "1", 10) || 1);
  const offset = (page - 1) * PAGE_SIZE;

  const [text, setText] = useState(query);
  useEffect(() => setText(query), [query]);
  useEffect(() => {
    if (text.trim() === query) return;
    const t = setTimeout(() => navigate(withParams(params, { q: text.trim() || null, page: null }), { replace: true }), 250);
    return () => clearTimeout(t);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [text]);

  const all = useAsync(loadAllProducts, []);
  const facets = useMemo(() => {
    const vendors = new Map<string, number>();
    const categories = new Map<string, number>();
    for (const p of all.data ?? []) {
      vendors.set(p.vendor, (vendors.get(p.vendor) ?? 0) + 1);
      categories.set(p.category, (categories.get(p.category) ?? 0) + 1);
    }
    const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => a[0].localeCompare(b[0]));
    return { vendors: sorted(vendors), categories: sorted(categories) };
  }, [all.data]);

  const list = useAsync(
    async () => {
      const r = await catalogClient.listProducts({ offset, size: PAGE_SIZE, query, vendor, category });
      return { products: r.products.map(productView), total: r.total };
    },
    [offset, query, vendor, category],
  );

  const filtered = Boolean(query || vendor || category);

  return (
    <section class="catalog">
      <div class="page-head">
        <div>
          <h1>Products</h1>
          <p class="muted">Practice exams, labs, study guides and video courses, billed monthly or yearly.</p>
        </div>
      </div>
      <form class="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <div class="field field-grow">
          <label for="search">Search</label>
          <input
            id="search"
            type="search"
            placeholder="Exam code or name, e.g. AZ-104"
            value={text}
            onInput={(e) => setText(e.currentTarget.value)}
            onKeyDown={(e) => {
              if (e.key === "Enter") navigate(withParams(params, { q: text.trim() || null, page: null }), { replace: true });
            }}
          />
        </div>
        <div class="field">
          <label for="vendor">Vendor</label>
          <select
            id="vendor"
            value={vendor}
            onChange={(e) => navigate(withParams(params, { vendor: e.currentTarget.value || null, page: null }))}
          >
            <option value="">All vendors</option>
            {facets.vendors.map(([v, n]) => (
              <option key={v} value={v}>
                {v} ({n})
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="category">Category</label>
          <select
            id="category"
            value={category}
            onChange={(e) => navigate(withParams(params, { category: e.currentTarget.value || null, page: null }))}
          >
            <option value="">All categories</option>
            {facets.categories.map(([c, n]) => (
              <option key={c} value={c}>
                {c} ({n})
              </option>
            ))}
          </select>
        </div>
        {filtered && (
          <div class="field field-end">
            <button type="button" class="btn btn-ghost" onClick={() => navigate("/products")}>
              Clear filters
            </button>
          </div>
        )}
      </form>

      {list.retrying && <RetryingNotice problem={list.retrying} />}
      {list.problem && <ErrorNotice problem={list.problem} onRetry={list.reload} />}
      {list.data && (
        <p class="result-count" aria-live="polite" data-testid="result-count">
          {list.data.total === 0
            ? "No products found"
            : `${list.data.total} ${list.data.total === 1 ? "product" : "products"}${filtered ? " match" : ""}`}
          {list.loading && <span class="muted"> · updating…</span>}
        </p>
      )}
      {!list.data && list.loading && !list.retrying && <Spinner label="Loading products…" />}
      {list.data && list.data.total === 0 && (
        <div class="empty">
          <p>Nothing matches {query ? <strong>“{query}”</strong> : "these filters"}.</p>
          <button type="button" class="btn" onClick={() => navigate("/products")}>
            Show all products
          </button>
        </div>
      )}
      {list.data && list.data.products.length > 0 && (
        <ul class="grid" aria-label="Products" aria-busy={list.loading}>
          {list.data.products.map((p) => (
            <ProductCard key={p.id} product={p} ctx={ctx} />
          ))}
        </ul>
      )}
      {list.data && (
        <Pager
          label="Product pages"
          offset={offset}
          size={PAGE_SIZE}
          total={list.data.total}
          onPage={(o) => navigate(withParams(params, { page: o > 0 ? String(o / PAGE_SIZE + 1) : null }))}
        />
      )}
    </section>
  );
}
