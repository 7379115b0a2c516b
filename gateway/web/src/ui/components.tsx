import type { ComponentChildren, JSX } from "preact";
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { describeError, withRetry, type Problem } from "../api/errors";
import { formatMoney } from "../lib/money";
import { STATUS_LABEL, type Status } from "../orders/status";
import { isPlainClick, navigate } from "../router";

export function Link(props: JSX.AnchorHTMLAttributes<HTMLAnchorElement> & { href: string; replace?: boolean }) {
  const { href, replace, onClick, ...rest } = props;
  return (
    <a
      {...rest}
      href={href}
      onClick={(e) => {
        if (typeof onClick === "function") onClick.call(e.currentTarget, e);
        if (!isPlainClick(e) || (typeof rest.target === "string" && rest.target !== "_self")) return;
        e.preventDefault();
        navigate(href, { replace });
      }}
    />
  );
}

export function Money({ cents, currency }: { cents: number; currency?: string }) {
  return <>{formatMoney(cents, currency)}</>;
}

/** The price a product costs, with the list price struck through when it is discounted. */
export function Price(props: { priceCents: number; effectivePriceCents: number; currency: string; period?: string }) {
  const discounted = props.effectivePriceCents < props.priceCents;
  return (
    <span class="price">
      <span class="price-now" data-testid="price">
        {formatMoney(props.effectivePriceCents, props.currency)}
      </span>
      {discounted && (
        <s class="price-was" aria-label={`was ${formatMoney(props.priceCents, props.currency)}`}>
          {formatMoney(props.priceCents, props.currency)}
        </s>
      )}
      {props.period && <span class="price-period">/ {props.period === "Annual" ? "year" : "month"}</span>}
    </span>
  );
}

export function StatusBadge({ status }: { status: Status | undefined }) {
  const s = status ?? "accepted";
  return (
    <span class={`status status-${s}`} data-status={s}>
      {STATUS_LABEL[s]}
    </span>
  );
}

export function Spinner({ label = "Loading…" }: { label?: string }) {
  return (
    <div class="spinner" role="status">
      <span class="spinner-dot" aria-hidden="true" />
      {label}
    </div>
  );
}

export function ErrorNotice({ problem, onRetry }: { problem: Problem; onRetry?: () => void }) {
  return (
    <div class="notice notice-error" role="alert">
      <strong>{problem.title}.</strong> {problem.message}
      {problem.fields.length > 0 && (
        <ul>
          {problem.fields.map((f) => (
            <li key={f.field}>
              <code>{f.field}</code>: {f.description}
            </li>
          ))}
        </ul>
      )}
      {onRetry && (
        <button type="button" class="btn btn-small" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function RetryingNotice({ problem }: { problem: Problem }) {
  return (
    <div class="notice notice-warn" role="status">
      <span class="spinner-dot" aria-hidden="true" /> {problem.message}
    </div>
  );
}

/** A modal confirmation (native <dialog>: focus is trapped and Escape cancels). */
export function ConfirmDialog(props: {
  open: boolean;
  title: string;
  children: ComponentChildren;
  confirmText: string;
  busy?: boolean;
  danger?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog
      ref={ref}
      class="dialog"
      aria-labelledby="dialog-title"
      onCancel={(e) => {
        e.preventDefault();
        props.onCancel();
      }}
    >
      <h2 id="dialog-title">{props.title}</h2>
      <div class="dialog-body">{props.children}</div>
      <div class="dialog-actions">
        <button type="button" class="btn" onClick={props.onCancel} disabled={props.busy}>
          Cancel
        </button>
        <button
          type="button"
          class={props.danger ? "btn btn-danger" : "btn btn-primary"}
          onClick={props.onConfirm}
          disabled={props.busy}
        >
          {props.busy ? "Working…" : props.confirmText}
        </button>
      </div>
    </dialog>
  );
}

export function Pager(props: { offset: number; size: number; total: number; onPage: (offset: number) => void; label: string }) {
  const { offset, size, total } = props;
  if (total <= size) return null;
  const page = Math.floor(offset / size) + 1;
  const pages = Math.max(1, Math.ceil(total / size));
  return (
    <nav class="pager" aria-label={props.label}>
      <button type="button" class="btn" disabled={offset <= 0} onClick={() => props.onPage(Math.max(0, offset - size))}>
        ← Previous
      </button>
      <span aria-live="polite">
        Page {page} of {pages}
      </span>
      <button type="button" class="btn" disabled={offset + size >= total} onClick={() => props.onPage(offset + size)}>
        Next →
      </button>
    </nav>
  );
}

export interface AsyncState<T> {
  data: T | undefined;
  problem: Problem | undefined;
  retrying: Problem | undefined;
  loading: boolean;
  reload: () => void;
}

/** Loads data for a page, retrying while the service is unavailable, and ignoring stale answers. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]): AsyncState<T> {
  const [state, setState] = useState<Omit<AsyncState<T>, "reload">>({
    data: undefined,
    problem: undefined,
    retrying: undefined,
    loading: true,
  });
  const [nonce, setNonce] = useState(0);
  useEffect(() => {
    const abort = new AbortController();
    setState((s) => ({ ...s, loading: true, problem: undefined }));
    withRetry(load, {
      attempts: 8,
      signal: abort.signal,
      onRetry: (problem) => !abort.signal.aborted && setState((s) => ({ ...s, retrying: problem })),
    }).then(
      (data) => !abort.signal.aborted && setState({ data, problem: undefined, retrying: undefined, loading: false }),
      (err) =>
        !abort.signal.aborted &&
        setState((s) => ({ ...s, problem: describeError(err), retrying: undefined, loading: false })),
    );
    return () => abort.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, nonce]);
  const reload = useCallback(() => setNonce((n) => n + 1), []);
  return { ...state, reload };
}

/** Sets the document title and moves focus to the page's heading when the page changes. */
export function usePageTitle(title: string) {
  useEffect(() => {
    document.title = title ? `${title} · Contoso Shop` : "Contoso Shop";
  }, [title]);
}

export function formatDate(ms: number | undefined): string {
  if (!ms) return "";
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
