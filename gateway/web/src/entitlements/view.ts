/** Entitlements as the pages show them, and the rules for showing them (pure: no I/O, the clock passed in). */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, asConnectError, describeError, fieldProblems } from "../api/errors";
import { EntitlementRole, type Entitlement } from "../gen/contoso/entitlements/v1/entitlements_pb";

const DAY_MS = 24 * 60 * 60 * 1000;

export interface AssignmentView {
  userId: string;
  assignedAt: number | undefined;
}

export interface EntitlementView {
  id: string;
  productId: string;
  productName: string;
  imageUrl: string;
  role: "buyer" | "assignee";
  seats: number;
  seatsUsed: number;
  holdsSeat: boolean;
  validFrom: number;
  validUntil: number;
  /** Active as the server said when read (`isActive` also checks the clock). */
  active: boolean;
  /** The order that granted it ("" for an assignee: the order is the buyer's). */
  orderId: string;
  lineNo: number;
  buyer: string;
  assignments: AssignmentView[];
}

export function productImage(productId: string): string {
  return `/images/products/${encodeURIComponent(productId.toLowerCase())}.svg`;
}

export function entitlementView(e: Entitlement): EntitlementView {
  return {
    id: e.entitlementId.toString(),
    productId: e.productId,
    productName: e.productName || e.productId,
    imageUrl: productImage(e.productId),
    role: e.role === EntitlementRole.ASSIGNEE ? "assignee" : "buyer",
    seats: e.seats,
    seatsUsed: e.seatsUsed,
    holdsSeat: e.holdsSeat,
    validFrom: e.validFrom ? timestampMs(e.validFrom) : 0,
    validUntil: e.validUntil ? timestampMs(e.validUntil) : 0,
    active: e.active,
    orderId: e.orderId === 0n ? "" : e.orderId.toString(),
    lineNo: e.lineNo,
    buyer: e.buyer,
    assignments: e.assignments.map((a) => ({ userId: a.userId, assignedAt: a.assignedAt ? timestampMs(a.assignedAt) : undefined })),
  };
}

/** Whole days until `until`, a started day counting as one; 0 once it has passed (the server's rule). */
export function daysLeft(until: number, now: number): number {
  return until > now ? Math.ceil((until - now) / DAY_MS) : 0;
}

export function isActive(e: EntitlementView, now: number): boolean {
  return e.active && e.validUntil > now;
}

export function daysLeftText(e: EntitlementView, now: number): string {
  if (!isActive(e, now)) return "Expired";
  const d = daysLeft(e.validUntil, now);
  return d === 1 ? "1 day left" : `${d} days left`;
}

/** Active ones (ending soonest first) and expired ones (the latest first). */
export function splitByActive(list: EntitlementView[], now: number): { active: EntitlementView[]; expired: EntitlementView[] } {
  const active = list.filter((e) => isActive(e, now)).sort((a, b) => a.validUntil - b.validUntil || Number(a.id) - Number(b.id));
  const expired = list.filter((e) => !isActive(e, now)).sort((a, b) => b.validUntil - a.validUntil || Number(b.id) - Number(a.id));
  return { active, expired };
}

/**
 * Seats in use. The buyer sees the assignments: each one, plus their own seat unless every seat went
 * to others. An assignee sees only the server's count.
 */
export function seatsUsed(e: EntitlementView): number {
  if (e.role === "assignee") return e.seatsUsed;
  return Math.min(e.assignments.length + 1, e.seats);
}

export function seatsFree(e: EntitlementView): number {
  return Math.max(0, e.seats - seatsUsed(e));
}

export function seatsText(e: EntitlementView): string {
  return `${seatsUsed(e)} of ${e.seats} ${e.seats === 1 ? "seat" : "seats"} used`;
}

/** Whether the caller may assign seats now: the buyer, while it is active and a seat is free. */
export function canAssign(e: EntitlementView, now: number): boolean {
  return e.role === "buyer" && isActive(e, now) && seatsFree(e) > 0;
}

/** How long an entitlement runs, in the words a customer would use: "12 months", "1 month", "10 days". */
export function periodText(from: number, until: number): string {
  if (!(until > from)) return "0 days";
  const a = new Date(from);
  const b = new Date(until);
  let months = (b.getUTCFullYear() - a.getUTCFullYear()) * 12 + (b.getUTCMonth() - a.getUTCMonth());
  // Calendar months: one month from 31 January ends on the last day of February.
  const landed = addMonthsUtc(from, months);
  if (landed > until) months -= 1;
  if (months >= 1) {
    const rest = until - addMonthsUtc(from, months);
    if (rest < DAY_MS) return months === 1 ? "1 month" : `${months} months`;
  }
  const days = Math.round((until - from) / DAY_MS);
  return days === 1 ? "1 day" : `${days} days`;
}

function addMonthsUtc(ms: number, months: number): number {
  const d = new Date(ms);
  const day = d.getUTCDate();
  d.setUTCDate(1);
  d.setUTCMonth(d.getUTCMonth() + months);
  const last = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
  d.setUTCDate(Math.min(day, last));
  return d.getTime();
}

/** "You now have AZ-104 for 12 months", several joined, seats named when more than one. */
export function grantedText(granted: EntitlementView[]): string {
  const parts = granted.map(
    (e) => `${e.productId}${e.seats > 1 ? ` (${e.seats} seats)` : ""} for ${periodText(e.validFrom, e.validUntil)}`,
  );
  if (parts.length === 0) return "";
  if (parts.length > 3) return `You now have ${parts.slice(0, 2).join(", ")} and ${parts.length - 2} more subscriptions`;
  const list = parts.length === 1 ? parts[0] : `${parts.slice(0, -1).join(", ")} and ${parts[parts.length - 1]}`;
  return `You now have ${list}`;
}

/** The entitlements an order granted (its lines in order). */
export function grantedBy(list: EntitlementView[], orderId: string): EntitlementView[] {
  if (!orderId) return [];
  return list.filter((e) => e.role === "buyer" && e.orderId === orderId).sort((a, b) => a.lineNo - b.lineNo);
}

/** Entitlements in `after` that are new since `before` (a fallback when the order id is unknown). */
export function newSince(before: EntitlementView[], after: EntitlementView[]): EntitlementView[] {
  const known = new Set(before.map((e) => e.id));
  return after.filter((e) => e.role === "buyer" && !known.has(e.id));
}

export function formatDay(ms: number): string {
  if (!ms) return "";
  return new Date(ms).toLocaleDateString(undefined, { dateStyle: "medium" });
}

/** A user id the server will take: 1 to 200 printable ASCII characters, no space at either end. */
export function userIdProblem(raw: string, buyer: string): string | undefined {
  if (raw.length === 0) return "Enter the user id of the person who should get the seat.";
  if (raw.trim() !== raw) return "A user id cannot start or end with a space.";
  if (raw.length > 200) return "A user id is at most 200 characters long.";
  if (!/^[\x20-\x7e]+$/.test(raw)) return "A user id uses only letters, digits and plain punctuation.";
  if (raw === buyer) return "You already hold a seat of your own. Enter someone else’s user id.";
  return undefined;
}

/** Why assigning a seat failed, in plain words. */
export function assignProblemText(err: unknown, userId: string): string {
  const ce = asConnectError(err);
  const said = `${ce.rawMessage} ${fieldProblems(ce).map((f) => f.description).join(" ")}`.toLowerCase();
  switch (ce.code) {
    case Code.InvalidArgument:
      if (/buyer|own/.test(said)) return "You already hold a seat of your own. Enter someone else’s user id.";
      if (/already/.test(said)) return `${userId} already has a seat of this subscription.`;
      return "That is not a valid user id: use 1 to 200 letters, digits or punctuation, with no space at either end.";
    case Code.FailedPrecondition:
      if (/expired/.test(said)) return "This subscription has expired, so its seats can no longer be assigned.";
      return "No seat is free. Revoke a seat first, or buy more seats.";
    case Code.PermissionDenied:
      return "Only the person who bought this subscription can assign its seats.";
    case Code.NotFound:
      return "This subscription could not be found. Refresh the page and try again.";
    default:
      return describeError(err).message;
  }
}

/** Why revoking a seat failed, in plain words. */
export function revokeProblemText(err: unknown, userId: string): string {
  switch (asConnectError(err).code) {
    case Code.NotFound:
      return `${userId} no longer holds a seat of this subscription.`;
    case Code.PermissionDenied:
      return "Only the person who bought this subscription can revoke its seats.";
    default:
      return describeError(err).message;
  }
}
