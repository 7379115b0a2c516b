/**
 * Keeps track of the user's orders in flight: one WatchOrderStatus stream per tab, reopened with
 * exponential backoff and jitter whenever it ends or fails, naming the orders in flight so their
 * snapshot is read again. The orders in flight (and the last one placed) live in localStorage, so a
 * reload, another tab, a lost network or a gateway restart never loses track of an order.
 */
import { Code } from "@connectrpc/connect";
import { backoffDelay, STREAM_BACKOFF, type BackoffOptions } from "../lib/backoff";
import { Store } from "../lib/store";
import { readJson, writeJson, type KeyValueStorage, type StorageEvents } from "../lib/storage";
import {
  applyReports,
  isTerminal,
  type OrderStatuses,
  type Status,
  type StatusReport,
  type TrackedOrder,
} from "./status";

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "offline";

export type StreamEvent = { kind: "update"; report: StatusReport } | { kind: "heartbeat" };

export interface WatchOptions {
  signal: AbortSignal;
  /** Called when the stream's response headers arrive: it is open. */
  onOpen: () => void;
}

/** Thrown by `watch`/`getStatus` adapters; `code` is the gRPC status code. */
export interface CodedError {
  code?: Code;
}

export interface TrackerDeps {
  userId: string;
  storage: KeyValueStorage;
  /** `storage`, `online` and `offline` events (the window). */
  events?: StorageEvents & {
    addEventListener(type: "online" | "offline", listener: () => void): void;
    removeEventListener(type: "online" | "offline", listener: () => void): void;
  };
  watch(correlationIds: string[], options: WatchOptions): AsyncIterable<StreamEvent>;
  getStatus(correlationId: string): Promise<StatusReport>;
  isOnline?: () => boolean;
  onUnauthenticated?: () => void;
  /** A watched order reached completed or failed. */
  onFinished?: (order: TrackedOrder) => void;
  errorCode?: (err: unknown) => Code | undefined;
  backoff?: BackoffOptions;
  random?: () => number;
  now?: () => number;
  /** No message for this long (heartbeats come every ~15 s): the stream is dead, reopen it. */
  idleTimeoutMs?: number;
  /** An order in flight with no news for this long is asked for with GetOrderStatus. */
  staleAfterMs?: number;
}

interface PersistedOrder {
  status: Status;
  orderId: string;
  reason?: string;
  at: number;
}

interface Persisted {
  orders: Record<string, PersistedOrder>;
  last: string | null;
}

/** Orders still "in flight" after this long are forgotten (the server keeps statuses ~45 min). */
const FORGET_AFTER_MS = 3 * 60 * 60 * 1000;

export function trackingKey(userId: string): string {
  return `contoso.tracking.v1.${userId}`;
}

export class OrderTracker {
  readonly orders: Store<OrderStatuses>;
  readonly connection = new Store<ConnectionState>("connecting");
  /** Correlation id of the order placed or seen last: the header's "active order". */
  readonly last: Store<string | null>;

  readonly #deps: TrackerDeps;
  readonly #key: string;
  readonly #now: () => number;
  /** When each order was added or last changed here (for the staleness check), and when first seen. */
  readonly #changedAt = new Map<string, number>();
  readonly #firstSeen = new Map<string, number>();
  readonly #announced = new Set<string>();
  #running = false;
  #abort: AbortController | undefined;
  #wake: (() => void) | undefined;
  /** Reconnect without waiting out the backoff (asked for while the loop was not asleep yet). */
  #skipWait = false;
  #staleTimer: ReturnType<typeof setInterval> | undefined;
  #polling = new Set<string>();

  constructor(deps: TrackerDeps) {
    this.#deps = deps;
    this.#key = trackingKey(deps.userId);
    this.#now = deps.now ?? Date.now;
    const persisted = this.#read();
    const reports = Object.entries(persisted.orders).map(([cid, o]) => toReport(cid, o));
    this.orders = new Store(applyReports({}, reports));
    for (const [cid, o] of Object.entries(persisted.orders)) {
      this.#firstSeen.set(cid, o.at);
      this.#changedAt.set(cid, this.#now());
      if (isTerminal(o.status)) this.#announced.add(cid);
    }
    this.last = new Store(persisted.last);
  }

  /** Correlation ids still in flight, oldest first. */
  inFlight(): string[] {
    return Object.values(this.orders.get())
      .filter((o) => !isTerminal(o.status))
      .map((o) => o.correlationId);
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#deps.events?.addEventListener("storage", this.#onStorage);
    this.#deps.events?.addEventListener("online", this.#onOnline);
    this.#deps.events?.addEventListener("offline", this.#onOffline);
    const stale = this.#deps.staleAfterMs ?? 6000;
    this.#staleTimer = setInterval(() => this.#checkStale(stale), Math.max(500, stale / 2));
    void this.#loop();
  }

  stop(): void {
    this.#running = false;
    this.#abort?.abort();
    this.#wake?.();
    clearInterval(this.#staleTimer);
    this.#deps.events?.removeEventListener("storage", this.#onStorage);
    this.#deps.events?.removeEventListener("online", this.#onOnline);
    this.#deps.events?.removeEventListener("offline", this.#onOffline);
  }

  /** An order this tab just placed: watch it and make it the active order. */
  trackPlaced(report: StatusReport): void {
    this.#firstSeen.set(report.correlationId, this.#now());
    this.#apply([report], true);
    this.last.set(report.correlationId);
    this.#persist();
  }

  /** Statuses read with ListOrders/GetOrder: orders still in flight get watched too. */
  observe(reports: StatusReport[]): void {
    for (const r of reports) if (!this.#firstSeen.has(r.correlationId)) this.#firstSeen.set(r.correlationId, this.#now());
    this.#apply(reports, false);
  }

  /** An order the user deleted: no longer the active one, no longer watched. */
  forget(orderId: string): void {
    const entry = Object.values(this.orders.get()).find((o) => o.orderId === orderId);
    if (!entry) return;
    const { [entry.correlationId]: _gone, ...rest } = this.orders.get();
    this.orders.set(rest);
    if (this.last.get() === entry.correlationId) this.last.set(null);
    const stored = this.#read();
    delete stored.orders[entry.correlationId];
    writeJson(this.#deps.storage, this.#key, { orders: stored.orders, last: this.last.get() });
  }

  /** Stops the stream and wakes it at once (e.g. the "retry now" button). */
  reconnectNow(): void {
    this.#skipWait = true;
    this.#abort?.abort();
    this.#wake?.();
  }

  // ---------------------------------------------------------------- the stream

  async #loop(): Promise<void> {
    let attempt = 0;
    const backoff = this.#deps.backoff ?? STREAM_BACKOFF;
    while (this.#running) {
      const abort = new AbortController();
      this.#abort = abort;
      let idle: ReturnType<typeof setTimeout> | undefined;
      const idleMs = this.#deps.idleTimeoutMs ?? 45_000;
      const armIdle = () => {
        clearTimeout(idle);
        idle = setTimeout(() => abort.abort(), idleMs);
      };
      try {
        this.#skipWait = false;
        if (this.#deps.isOnline?.() === false) throw new OfflineError();
        armIdle();
        const stream = this.#deps.watch(this.inFlight(), {
          signal: abort.signal,
          onOpen: () => {
            if (!abort.signal.aborted) this.connection.set("connected");
          },
        });
        for await (const event of stream) {
          armIdle();
          attempt = 0;
          this.connection.set("connected");
          if (event.kind === "update") this.#apply([event.report], true);
        }
      } catch (err) {
        if (this.#deps.errorCode?.(err) === Code.Unauthenticated) {
          clearTimeout(idle);
          this.#running = false;
          this.connection.set("offline");
          this.#deps.onUnauthenticated?.();
          return;
        }
      } finally {
        clearTimeout(idle);
      }
      if (!this.#running) return;
      this.connection.set(this.#deps.isOnline?.() === false ? "offline" : "reconnecting");
      if (this.#skipWait) continue;
      const wait = backoffDelay(attempt, backoff, this.#deps.random);
      attempt++;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, wait);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.#wake = done;
      });
      this.#wake = undefined;
    }
  }

  #onOnline = () => this.reconnectNow();

  #onOffline = () => {
    this.connection.set("offline");
    this.#abort?.abort();
  };

  /** In-flight orders with no news for a while are asked for directly, in case the stream missed them. */
  #checkStale(staleMs: number): void {
    if (this.connection.get() !== "connected") return;
    const now = this.#now();
    for (const cid of this.inFlight()) {
      if (this.#polling.has(cid) || now - (this.#changedAt.get(cid) ?? 0) < staleMs) continue;
      this.#polling.add(cid);
      this.#changedAt.set(cid, now);
      this.#deps
        .getStatus(cid)
        .then((report) => this.#apply([report], true))
        .catch(() => undefined)
        .finally(() => this.#polling.delete(cid));
    }
  }

  // ---------------------------------------------------------------- state

  /** Applies reports; `announce`: a live report, so an order finishing here is told to the user. */
  #apply(reports: StatusReport[], announce: boolean): void {
    const before = this.orders.get();
    const after = applyReports(before, reports);
    if (after === before) return;
    const now = this.#now();
    for (const [cid, order] of Object.entries(after)) {
      if (before[cid] === order) continue;
      this.#changedAt.set(cid, now);
      if (!this.#firstSeen.has(cid)) this.#firstSeen.set(cid, now);
      // An order this tab hears of live for the first time (placed in another tab or on another
      // device) becomes the active one.
      if (announce && before[cid] === undefined) this.last.set(cid);
      if (isTerminal(order.status) && !this.#announced.has(cid)) {
        this.#announced.add(cid);
        const wasWatched = before[cid] !== undefined && !isTerminal(before[cid].status);
        if (wasWatched || (announce && before[cid] === undefined)) this.#deps.onFinished?.(order);
      }
    }
    this.orders.set(after);
    this.#persist();
  }

  #read(): Persisted {
    const raw = readJson<Partial<Persisted>>(this.#deps.storage, this.#key, {});
    const orders: Record<string, PersistedOrder> = {};
    const now = this.#now();
    if (raw.orders && typeof raw.orders === "object") {
      for (const [cid, o] of Object.entries(raw.orders)) {
        if (!o || typeof o !== "object" || !isStatus(o.status)) continue;
        if (!isTerminal(o.status) && now - (o.at ?? 0) > FORGET_AFTER_MS && cid !== raw.last) continue;
        orders[cid] = { status: o.status, orderId: String(o.orderId ?? ""), reason: o.reason, at: Number(o.at) || now };
      }
    }
    const last = typeof raw.last === "string" && orders[raw.last] ? raw.last : null;
    return { orders, last };
  }

  /** Writes the orders in flight and the last one (other tabs' entries merged in first). */
  #persist(): void {
    const theirs = this.#read();
    const mine = this.orders.get();
    const merged = applyReports(
      mine,
      Object.entries(theirs.orders).map(([cid, o]) => toReport(cid, o)),
    );
    if (merged !== mine) {
      // Another tab wrote that an order this tab watches finished, and its storage event has not
      // arrived yet: announce it now, or the event will find nothing new and it never is.
      this.#announceWatched(mine, merged);
      this.orders.set(merged);
    }
    const last = this.last.get() ?? theirs.last;
    const out: Persisted = { orders: {}, last };
    for (const order of Object.values(merged)) {
      if (isTerminal(order.status) && order.correlationId !== last) continue;
      out.orders[order.correlationId] = {
        status: order.status,
        orderId: order.orderId,
        reason: order.reason || undefined,
        at: this.#firstSeen.get(order.correlationId) ?? this.#now(),
      };
    }
    writeJson(this.#deps.storage, this.#key, out);
  }

  /** Orders another tab saw change: announce only those this tab was already watching; the tab that saw it live announces the rest. */
  #announceWatched(before: OrderStatuses, after: OrderStatuses): void {
    for (const [cid, order] of Object.entries(after)) {
      if (before[cid] === order) continue;
      this.#changedAt.set(cid, this.#now());
      if (isTerminal(order.status) && !this.#announced.has(cid)) {
        this.#announced.add(cid);
        if (before[cid] && !isTerminal(before[cid].status)) this.#deps.onFinished?.(order);
      }
    }
  }

  /** Another tab placed or saw an order: merge what it knows. */
  #onStorage = (event: { key: string | null; newValue: string | null }) => {
    if (event.key !== this.#key || event.newValue == null) return;
    let theirs: Partial<Persisted>;
    try {
      theirs = JSON.parse(event.newValue) as Partial<Persisted>;
    } catch {
      return;
    }
    const reports = Object.entries(theirs.orders ?? {})
      .filter(([, o]) => o && isStatus(o.status))
      .map(([cid, o]) => toReport(cid, o));
    for (const r of reports) if (!this.#firstSeen.has(r.correlationId)) this.#firstSeen.set(r.correlationId, this.#now());
    const before = this.orders.get();
    const after = applyReports(before, reports);
    if (after !== before) {
      this.#announceWatched(before, after);
      this.orders.set(after);
    }
    if (typeof theirs.last === "string" && theirs.last && this.orders.get()[theirs.last]) this.last.set(theirs.last);
  };
}

class OfflineError extends Error {}

function isStatus(s: unknown): s is Status {
  return s === "accepted" || s === "processing" || s === "completed" || s === "failed";
}

function toReport(correlationId: string, o: PersistedOrder): StatusReport {
  return { correlationId, status: o.status, orderId: o.orderId, reason: o.reason };
}
