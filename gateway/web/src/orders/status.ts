/**
 * Order statuses as the UI knows them, and the reducer that merges what the status stream, the
 * snapshot and the order reads report. Statuses only move forward (accepted → processing →
 * completed | failed), so a late, duplicated or out-of-order report never moves one back.
 */

export type Status = "accepted" | "processing" | "completed" | "failed";

const RANK: Record<Status, number> = { accepted: 1, processing: 2, completed: 3, failed: 3 };

export const STATUS_LABEL: Record<Status, string> = {
  accepted: "Accepted",
  processing: "Processing",
  completed: "Completed",
  failed: "Failed",
};

export function isTerminal(status: Status | undefined): boolean {
  return status === "completed" || status === "failed";
}

/** One report of an order's status, from the stream, a snapshot or an order read. */
export interface StatusReport {
  correlationId: string;
  status: Status | undefined;
  /** Decimal order id; "" or "0" when the sender does not know it yet. */
  orderId?: string;
  reason?: string;
  /** When the status changed (ms since the epoch), if known. */
  occurredAt?: number;
}

export interface TrackedOrder {
  correlationId: string;
  status: Status;
  orderId: string;
  reason: string;
  occurredAt: number;
}

export type OrderStatuses = Readonly<Record<string, TrackedOrder>>;

/** Whether `next` may replace `current`: only a later step, never a sideways move between terminals. */
export function isForward(current: Status | undefined, next: Status): boolean {
  if (current === undefined) return true;
  if (isTerminal(current)) return false;
  return RANK[next] > RANK[current];
}

/** The later of two statuses (either may be unknown). */
export function laterStatus(a: Status | undefined, b: Status | undefined): Status | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return isForward(a, b) ? b : a;
}

function knownId(id: string | undefined): string {
  return id && id !== "0" ? id : "";
}

/**
 * Applies one report. Returns the same object when nothing changes, so callers can tell a real
 * transition from a duplicate. A report with an older or equal status can still fill in an order id
 * or a failure reason that was not known yet.
 */
export function applyReport(state: OrderStatuses, report: StatusReport): OrderStatuses {
  const { correlationId, status } = report;
  if (!correlationId || status === undefined) return state;
  const current = state[correlationId];
  const orderId = knownId(report.orderId);
  if (!current) {
    return {
      ...state,
      [correlationId]: {
        correlationId,
        status,
        orderId,
        reason: status === "failed" ? (report.reason ?? "") : "",
        occurredAt: report.occurredAt ?? 0,
      },
    };
  }
  if (isForward(current.status, status)) {
    return {
      ...state,
      [correlationId]: {
        correlationId,
        status,
        orderId: orderId || current.orderId,
        reason: status === "failed" ? (report.reason ?? "") : "",
        occurredAt: Math.max(report.occurredAt ?? 0, current.occurredAt),
      },
    };
  }
  // Not forward: keep the status, but learn what the older report knows that we do not.
  const fillId = !current.orderId && orderId;
  const fillReason = current.status === "failed" && status === "failed" && !current.reason && report.reason;
  if (!fillId && !fillReason) return state;
  return {
    ...state,
    [correlationId]: {
      ...current,
      orderId: fillId ? orderId : current.orderId,
      reason: fillReason ? (report.reason ?? "") : current.reason,
    },
  };
}

/** Applies a batch (a snapshot, or a page of orders) in order. */
export function applyReports(state: OrderStatuses, reports: Iterable<StatusReport>): OrderStatuses {
  let next = state;
  for (const report of reports) next = applyReport(next, report);
  return next;
}

/** The orders whose status reached completed or failed between `before` and `after`. */
export function newlyFinished(before: OrderStatuses, after: OrderStatuses): TrackedOrder[] {
  if (before === after) return [];
  const done: TrackedOrder[] = [];
  for (const [cid, order] of Object.entries(after)) {
    if (isTerminal(order.status) && !isTerminal(before[cid]?.status)) done.push(order);
  }
  return done;
}
