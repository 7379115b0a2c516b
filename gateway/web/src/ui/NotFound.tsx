import { Link, usePageTitle } from "./components";

export function NotFound({ what = "page", back = "/products", backText = "Browse products" }: { what?: string; back?: string; backText?: string }) {
  usePageTitle("Not found");
  return (
    <section class="not-found" data-testid="not-found">
      <div class="not-found-code" aria-hidden="true">
        404
      </div>
      <h1>We couldn’t find that {what}</h1>
      <p class="muted">It may have been removed, or the link may be mistyped.</p>
      <Link href={back} class="btn btn-primary">
        {backText}
      </Link>
    </section>
  );
}
