import { useState } from "preact/hooks";
import { orderClient } from "../api/client";
import { describeError, type Problem } from "../api/errors";
import type { OrderView } from "../api/model";
import type { UserContext } from "../app";
import { useStore } from "../lib/store";
import { laterStatus, STATUS_LABEL, type Status } from "../orders/status";
import { ConfirmDialog, ErrorNotice } from "./components";

/** The order's status: the later of what was read and what the live stream has said since. */
export function useLiveStatus(ctx: UserContext, order: OrderView | undefined): { status: Status | undefined; reason: string } {
  const tracked = useStore(ctx.tracker.orders);
  const live = order ? tracked[order.correlationId] : undefined;
  return { status: laterStatus(order?.status, live?.status), reason: live?.reason ?? "" };
}

const STEPS: { key: Status; text: string }[] = [
  { key: "accepted", text: "We have your order" },
  { key: "processing", text: "Recording it and provisioning your seats" },
  { key: "completed", text: "Your subscriptions are ready" },
];

export function Timeline({ status, reason }: { status: Status | undefined; reason: string }) {
  const failed = status === "failed";
  const reached = status === "completed" || failed ? 3 : status === "processing" ? 2 : 1;
  const steps = failed ? [...STEPS.slice(0, 2), { key: "failed" as Status, text: reason || "The order could not be completed" }] : STEPS;
  return (
    <ol class={`timeline${failed ? " timeline-failed" : ""}`} aria-label="Order progress" data-testid="timeline" data-status={status}>
      {steps.map((step, i) => {
        const n = i + 1;
        const state = n < reached ? "done" : n === reached ? (n === 3 ? (failed ? "failed" : "done") : "current") : "todo";
        return (
          <li key={step.key} class={`step step-${state}`} aria-current={n === reached ? "step" : undefined}>
            <span class="step-mark" aria-hidden="true">
              {state === "done" ? "✓" : state === "failed" ? "!" : n}
            </span>
            <span class="step-text">
              <strong>{STATUS_LABEL[step.key]}</strong>
              <span class="muted small">{step.text}</span>
            </span>
          </li>
        );
      })}
    </ol>
  );
}

/** "Delete" with a confirmation; FAILED_PRECONDITION (still being processed) is explained, not swallowed. */
export function DeleteOrderButton(props: { orderId: string; ctx: UserContext; onDeleted: () => void; small?: boolean }) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<Problem | null>(null);
  async function confirm() {
    setBusy(true);
    setProblem(null);
    try {
      await orderClient.deleteOrder({ orderId: BigInt(props.orderId) });
      props.ctx.tracker.forget(props.orderId);
      setOpen(false);
      props.onDeleted();
    } catch (err) {
      setProblem(describeError(err));
    } finally {
      setBusy(false);
    }
  }
  return (
    <>
      <button
        type="button"
        class={`btn btn-ghost btn-danger-text${props.small ? " btn-small" : ""}`}
        aria-label={`Delete order ${props.orderId}`}
        data-testid="delete-order"
        onClick={() => {
          setProblem(null);
          setOpen(true);
        }}
      >
        Delete
      </button>
      <ConfirmDialog
        open={open}
        title={`Delete order #${props.orderId}?`}
        confirmText="Delete order"
        danger
        busy={busy}
        onConfirm={() => void confirm()}
        onCancel={() => setOpen(false)}
      >
        <p>The order disappears from your history. Your subscriptions and seats stay as they are.</p>
        {problem && <ErrorNotice problem={problem} />}
      </ConfirmDialog>
    </>
  );
}
