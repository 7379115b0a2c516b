import { useEffect, useState } from "preact/hooks";
import { entitlementClient } from "../api/client";
import { Code, errorCode } from "../api/errors";
import type { UserContext } from "../app";
import {
  assignProblemText,
  canAssign,
  daysLeftText,
  entitlementView,
  formatDay,
  isActive,
  revokeProblemText,
  seatsFree,
  seatsText,
  seatsUsed,
  splitByActive,
  userIdProblem,
  type EntitlementView,
} from "../entitlements/view";
import { useStore } from "../lib/store";
import { location } from "../router";
import { ConfirmDialog, ErrorNotice, Link, RetryingNotice, Spinner, formatDate, usePageTitle } from "./components";
import { toast } from "./toasts";

function AssignForm({ e, ctx }: { e: EntitlementView; ctx: UserContext }) {
  const [userId, setUserId] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const inputId = `assign-${e.id}`;
  const errorId = `assign-${e.id}-error`;
  async function submit(ev: Event) {
    ev.preventDefault();
    if (busy) return;
    const local = userIdProblem(userId, ctx.userId);
    if (local) {
      setError(local);
      return;
    }
    setBusy(true);
    setError("");
    try {
      const r = await entitlementClient.assignSeat({ entitlementId: BigInt(e.id), userId });
      if (r.entitlement) ctx.entitlements.replace(entitlementView(r.entitlement));
      else void ctx.entitlements.refresh();
      toast("success", `${userId} now has a seat of ${e.productId}.`);
      setUserId("");
    } catch (err) {
      setError(assignProblemText(err, userId));
    } finally {
      setBusy(false);
    }
  }
  return (
    <form class="assign-form" onSubmit={(ev) => void submit(ev)} noValidate data-testid="assign-form">
      <label for={inputId}>Give a seat to (user id)</label>
      <div class="input-row">
        <input
          id={inputId}
          name="userId"
          value={userId}
          autoComplete="off"
          spellcheck={false}
          maxLength={200}
          aria-invalid={error ? "true" : undefined}
          aria-describedby={error ? errorId : undefined}
          onInput={(ev) => {
            setUserId(ev.currentTarget.value);
            if (error) setError("");
          }}
        />
        <button type="submit" class="btn btn-primary" disabled={busy}>
          {busy ? "Assigning…" : "Assign seat"}
        </button>
      </div>
      {error && (
        <p class="field-error" id={errorId} role="alert" data-testid="assign-error">
          {error}
        </p>
      )}
    </form>
  );
}

function Assignments({ e, ctx }: { e: EntitlementView; ctx: UserContext }) {
  const [revoking, setRevoking] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  if (e.assignments.length === 0) return null;
  async function confirm() {
    if (!revoking) return;
    const who = revoking;
    setBusy(true);
    setError("");
    try {
      const r = await entitlementClient.revokeSeat({ entitlementId: BigInt(e.id), userId: who });
      if (r.entitlement) ctx.entitlements.replace(entitlementView(r.entitlement));
      else void ctx.entitlements.refresh();
      setRevoking(null);
      toast("info", `${who} no longer has a seat of ${e.productId}.`);
    } catch (err) {
      setError(revokeProblemText(err, who));
      if (errorCode(err) === Code.NotFound) void ctx.entitlements.refresh();
    } finally {
      setBusy(false);
    }
  }
  return (
    <div class="assignments">
      <h4 class="small-heading">Seats you gave</h4>
      <ul aria-label={`Seats of ${e.productId} given to others`}>
        {e.assignments.map((a) => (
          <li key={a.userId} class="assignment" data-testid="assignment" data-user-id={a.userId}>
            <span>
              <strong>{a.userId}</strong>
              {a.assignedAt && <span class="muted small"> · since {formatDay(a.assignedAt)}</span>}
            </span>
            <button
              type="button"
              class="btn btn-ghost btn-small btn-danger-text"
              aria-label={`Revoke ${a.userId}’s seat of ${e.productId}`}
              onClick={() => {
                setError("");
                setRevoking(a.userId);
              }}
            >
              Revoke
            </button>
          </li>
        ))}
      </ul>
      <ConfirmDialog
        open={revoking !== null}
        title={`Revoke ${revoking ?? ""}’s seat?`}
        confirmText="Revoke seat"
        danger
        busy={busy}
        onConfirm={() => void confirm()}
        onCancel={() => setRevoking(null)}
      >
        <p>
          {revoking} loses access to {e.productName} ({e.productId}) at once. The seat becomes free to give to
          someone else.
        </p>
        {error && (
          <p class="field-error" role="alert">
            {error}
          </p>
        )}
      </ConfirmDialog>
    </div>
  );
}

function EntitlementCard({ e, ctx, now }: { e: EntitlementView; ctx: UserContext; now: number }) {
  const active = isActive(e, now);
  const used = seatsUsed(e);
  const headingId = `ent-${e.id}-name`;
  return (
    <li
      id={`ent-${e.id}`}
      class={`ent${active ? "" : " ent-expired"}`}
      data-testid="entitlement"
      data-entitlement-id={e.id}
      data-product-id={e.productId}
      data-role={e.role}
      data-seats={e.seats}
      data-seats-used={used}
      data-order-id={e.orderId || undefined}
      tabIndex={-1}
      aria-labelledby={headingId}
    >
      <img class="ent-media" src={e.imageUrl} alt="" width={160} height={100} loading="lazy" />
      <div class="ent-body">
        <div class="ent-head">
          <h3 id={headingId} class="ent-title">
            <Link href={`/products/${encodeURIComponent(e.productId)}`}>{e.productName}</Link>
          </h3>
          <span class={`tag ${e.role === "buyer" ? "tag-period" : "tag-assigned"}`} data-testid="entitlement-role">
            {e.role === "buyer" ? "Bought by you" : `Assigned to you by ${e.buyer}`}
          </span>
        </div>
        <div class="muted small">
          {e.productId}
          {e.orderId && (
            <>
              {" · "}
              <Link href={`/orders/${e.orderId}`}>Order #{e.orderId}</Link>
            </>
          )}
        </div>
        <dl class="ent-facts">
          <div>
            <dt>Seats</dt>
            <dd data-testid="seats">
              {seatsText(e)}
              <meter class="seat-meter" min={0} max={e.seats} value={used} aria-hidden="true" />
            </dd>
          </div>
          <div>
            <dt>Valid</dt>
            <dd>
              <time dateTime={new Date(e.validFrom).toISOString()}>{formatDay(e.validFrom)}</time> –{" "}
              <time dateTime={new Date(e.validUntil).toISOString()}>{formatDay(e.validUntil)}</time>
            </dd>
          </div>
          <div>
            <dt>{active ? "Time left" : "Status"}</dt>
            <dd data-testid="days-left" title={active ? `Until ${formatDate(e.validUntil)}` : undefined}>
              {daysLeftText(e, now)}
            </dd>
          </div>
        </dl>
        {e.role === "buyer" && !e.holdsSeat && <p class="hint">You gave every seat away, so you do not hold one yourself.</p>}
        {e.role === "buyer" && active && (
          <div class="ent-manage">
            {canAssign(e, now) ? (
              <AssignForm e={e} ctx={ctx} />
            ) : (
              <p class="hint" data-testid="no-free-seat">
                Every seat is in use. Revoke one to give it to someone else.
              </p>
            )}
            {seatsFree(e) > 0 && (
              <p class="hint small">
                {seatsFree(e)} {seatsFree(e) === 1 ? "seat is" : "seats are"} free.
              </p>
            )}
            <Assignments e={e} ctx={ctx} />
          </div>
        )}
      </div>
    </li>
  );
}

export function SubscriptionsPage({ ctx }: { ctx: UserContext }) {
  usePageTitle("My subscriptions");
  const state = useStore(ctx.entitlements.state);
  const loc = useStore(location);
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    void ctx.entitlements.refresh();
    const t = setInterval(() => setNow(Date.now()), 60_000);
    return () => clearInterval(t);
  }, [ctx]);
  useEffect(() => setNow(Date.now()), [state.list]);

  // A link to one subscription (/subscriptions#ent-7): bring it into view once it is listed.
  const hash = typeof window === "undefined" ? "" : window.location.hash;
  const listed = state.list !== undefined;
  useEffect(() => {
    if (!listed || !hash.startsWith("#ent-")) return;
    const el = document.getElementById(hash.slice(1));
    if (el) {
      el.scrollIntoView({ block: "center" });
      el.focus({ preventScroll: true });
    }
  }, [listed, hash, loc.pathname]);

  const { active, expired } = splitByActive(state.list ?? [], now);
  return (
    <section class="subscriptions-page">
      <div class="page-head">
        <div>
          <h1>My subscriptions</h1>
          <p class="muted">What you bought and the seats others gave you. New purchases appear here as soon as they complete.</p>
        </div>
        <button type="button" class="btn btn-ghost" onClick={() => void ctx.entitlements.refresh()} disabled={state.loading}>
          Refresh
        </button>
      </div>
      {state.retrying && <RetryingNotice problem={state.retrying} />}
      {state.problem && <ErrorNotice problem={state.problem} onRetry={() => void ctx.entitlements.refresh()} />}
      {!state.list && !state.problem && !state.retrying && <Spinner label="Loading your subscriptions…" />}
      {state.list && state.list.length === 0 && (
        <div class="empty" data-testid="subscriptions-empty">
          <p>You have no subscriptions yet. Completed orders, and seats others give you, show up here.</p>
          <Link href="/products" class="btn btn-primary">
            Find something to learn
          </Link>
        </div>
      )}
      {state.list && active.length > 0 && (
        <section aria-labelledby="active-heading">
          <h2 id="active-heading" class="ent-section-title">
            Active <span class="muted">({active.length})</span>
          </h2>
          <ul class="ent-list" data-testid="active-entitlements" aria-busy={state.loading}>
            {active.map((e) => (
              <EntitlementCard key={e.id} e={e} ctx={ctx} now={now} />
            ))}
          </ul>
        </section>
      )}
      {state.list && expired.length > 0 && (
        <section aria-labelledby="expired-heading">
          <h2 id="expired-heading" class="ent-section-title">
            Expired <span class="muted">({expired.length})</span>
          </h2>
          <ul class="ent-list" data-testid="expired-entitlements">
            {expired.map((e) => (
              <EntitlementCard key={e.id} e={e} ctx={ctx} now={now} />
            ))}
          </ul>
        </section>
      )}
    </section>
  );
}
