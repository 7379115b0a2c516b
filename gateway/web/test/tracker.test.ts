import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import type { StatusReport } from "../src/orders/status";
import { OrderTracker, trackingKey, type StreamEvent, type TrackerDeps, type WatchOptions } from "../src/orders/tracker";
import { eventually, fakeTabs, type FakeTab } from "./fakes";

class CodeError extends Error {
  constructor(readonly code: Code) {
    super(Code[code]);
  }
}

/** A scripted WatchOrderStatus: each call gets the next script; `push` sends live updates to open streams. */
class FakeServer {
  calls: string[][] = [];
  #open = new Set<(e: StreamEvent | Error | null) => void>();
  constructor(private scripts: ((ids: string[]) => (StreamEvent | Error)[] | "hold")[]) {}

  watch = (ids: string[], { signal, onOpen }: WatchOptions): AsyncIterable<StreamEvent> => {
    this.calls.push(ids);
    const script = (this.scripts.shift() ?? (() => "hold"))(ids);
    const queue: (StreamEvent | Error | null)[] = [];
    let wake: (() => void) | undefined;
    const push = (e: StreamEvent | Error | null) => {
      queue.push(e);
      wake?.();
    };
    const open = this.#open;
    return {
      async *[Symbol.asyncIterator]() {
        if (script !== "hold" && script[0] instanceof Error) throw script[0];
        onOpen();
        open.add(push);
        signal.addEventListener("abort", () => push(new CodeError(Code.Canceled)));
        try {
          if (script !== "hold") for (const e of script) queue.push(e);
          if (script !== "hold" && !script.some((e) => e instanceof Error)) {
            // A finite script without an error holds the stream open afterwards.
          }
          for (;;) {
            while (queue.length === 0) await new Promise<void>((r) => (wake = r));
            const e = queue.shift()!;
            if (e === null) return;
            if (e instanceof Error) throw e;
            yield e;
          }
        } finally {
          open.delete(push);
        }
      },
    };
  };

  push(report: StatusReport) {
    for (const p of this.#open) p({ kind: "update", report });
  }

  /** Ends every open stream (a gateway restart, say). */
  fail(code = Code.Unavailable) {
    for (const p of this.#open) p(new CodeError(code));
  }

  get openStreams() {
    return this.#open.size;
  }
}

const trackers: OrderTracker[] = [];
afterEach(() => {
  for (const t of trackers.splice(0)) t.stop();
});

function tracker(tab: FakeTab, server: FakeServer, extra: Partial<TrackerDeps> = {}) {
  const t = new OrderTracker({
    userId: "alice",
    storage: tab.storage,
    events: tab.events as never,
    watch: server.watch,
    getStatus: async () => {
      throw new CodeError(Code.Unavailable);
    },
    errorCode: (err) => (err as CodeError).code,
    backoff: { baseMs: 2, maxMs: 20 },
    ...extra,
  });
  trackers.push(t);
  return t;
}

const update = (correlationId: string, status: StatusReport["status"], orderId = "1", reason = ""): StreamEvent => ({
  kind: "update",
  report: { correlationId, status, orderId, reason },
});

describe("order tracker", () => {
  it("applies the snapshot and live updates, and says Connected", async () => {
    const [tab] = fakeTabs(1);
    const server = new FakeServer([() => []]);
    const finished: string[] = [];
    const t = tracker(tab, server, { onFinished: (o) => finished.push(`${o.orderId}:${o.status}`) });
    t.start();
    await eventually(() => t.connection.get() === "connected");
    t.trackPlaced({ correlationId: "c1", status: "accepted", orderId: "1" });
    server.push({ correlationId: "c1", status: "processing", orderId: "1" });
    server.push({ correlationId: "c1", status: "completed", orderId: "1" });
    server.push({ correlationId: "c1", status: "processing", orderId: "1" }); // late
    await eventually(() => t.orders.get().c1?.status === "completed");
    expect(finished).toEqual(["1:completed"]);
    expect(t.inFlight()).toEqual([]);
    expect(t.last.get()).toBe("c1");
  });

  it("reconnects after an error, naming the orders in flight so their snapshot is read again", async () => {
    const [tab] = fakeTabs(1);
    const server = new FakeServer([
      () => [],
      () => [new CodeError(Code.Unavailable)],
      (ids) => ids.map((id) => update(id, "completed", "5")),
    ]);
    const states: string[] = [];
    const t = tracker(tab, server);
    t.connection.subscribe((s) => states.push(s));
    t.start();
    await eventually(() => t.connection.get() === "connected");
    t.trackPlaced({ correlationId: "c5", status: "accepted", orderId: "5" });
    server.fail();
    await eventually(() => t.orders.get().c5?.status === "completed");
    expect(server.calls).toEqual([[], ["c5"], ["c5"]]);
    expect(states).toEqual(["connected", "reconnecting", "connected"]);
  });

  it("a new tab (or a reload) picks the orders in flight up from storage", async () => {
    const [tab] = fakeTabs(1);
    const first = tracker(tab, new FakeServer([() => []]));
    first.trackPlaced({ correlationId: "c7", status: "processing", orderId: "7" });
    first.stop();
    const server = new FakeServer([(ids) => ids.map((id) => update(id, "failed", "7", "payment refused"))]);
    const finished: string[] = [];
    const reloaded = tracker(tab, server, { onFinished: (o) => finished.push(o.reason) });
    expect(reloaded.orders.get().c7?.status).toBe("processing");
    reloaded.start();
    await eventually(() => reloaded.orders.get().c7?.status === "failed");
    expect(server.calls[0]).toEqual(["c7"]);
    expect(finished).toEqual(["payment refused"]);
    expect(reloaded.orders.get().c7.reason).toBe("payment refused");
  });

  it("an order placed in one tab is watched and announced in the other", async () => {
    const [a, b] = fakeTabs(2);
    const server = new FakeServer([() => [], () => []]);
    const announced: string[] = [];
    const ta = tracker(a, server, { onFinished: (o) => announced.push(`a:${o.orderId}`) });
    const tb = tracker(b, server, { onFinished: (o) => announced.push(`b:${o.orderId}`) });
    ta.start();
    tb.start();
    await eventually(() => server.openStreams === 2);
    ta.trackPlaced({ correlationId: "c9", status: "accepted", orderId: "9" });
    expect(tb.orders.get().c9?.status).toBe("accepted");
    expect(tb.last.get()).toBe("c9");
    server.push({ correlationId: "c9", status: "completed", orderId: "9" });
    await eventually(() => announced.length === 2);
    expect(announced.sort()).toEqual(["a:9", "b:9"]);
  });

  it("an order another tab saw finish is announced here even when that tab's storage event comes late", async () => {
    const [a] = fakeTabs(1);
    const server = new FakeServer([() => []]);
    const announced: string[] = [];
    const t = tracker(a, server, { onFinished: (o) => announced.push(`${o.orderId}:${o.status}`) });
    t.start();
    await eventually(() => server.openStreams === 1);
    t.trackPlaced({ correlationId: "c4", status: "accepted", orderId: "4" });
    // Another tab heard "completed" first and wrote it; this tab has not had the storage event yet
    // (a write by this tab's storage fires no event here), and then hears "processing" itself.
    const at = Date.now();
    a.storage.setItem(trackingKey("alice"), JSON.stringify({ orders: { c4: { status: "completed", orderId: "4", at } }, last: "c4" }));
    server.push({ correlationId: "c4", status: "processing", orderId: "4" });
    await eventually(() => announced.length === 1);
    expect(announced).toEqual(["4:completed"]);
    expect(t.orders.get().c4.status).toBe("completed");
  });

  it("UNAUTHENTICATED stops the stream and signs the user out", async () => {
    const [tab] = fakeTabs(1);
    let signedOut = 0;
    const server = new FakeServer([() => [new CodeError(Code.Unauthenticated)]]);
    const t = tracker(tab, server, { onUnauthenticated: () => signedOut++ });
    t.start();
    await eventually(() => signedOut === 1);
    expect(server.calls).toHaveLength(1);
  });

  it("asks GetOrderStatus about an order the stream has said nothing of for a while", async () => {
    const [tab] = fakeTabs(1);
    const server = new FakeServer([() => []]);
    const asked: string[] = [];
    const t = tracker(tab, server, {
      staleAfterMs: 50,
      getStatus: async (cid) => {
        asked.push(cid);
        return { correlationId: cid, status: "completed", orderId: "3" };
      },
    });
    t.start();
    await eventually(() => t.connection.get() === "connected");
    t.trackPlaced({ correlationId: "c3", status: "accepted", orderId: "3" });
    await eventually(() => t.orders.get().c3?.status === "completed");
    expect(asked).toEqual(["c3"]);
  });

  it("goes Offline when the browser does, and reconnects when it is back", async () => {
    const [tab] = fakeTabs(1);
    let online = true;
    const server = new FakeServer([() => [], () => []]);
    const t = tracker(tab, server, { isOnline: () => online, backoff: { baseMs: 60_000, maxMs: 60_000 } });
    t.start();
    await eventually(() => t.connection.get() === "connected");
    online = false;
    tab.fire("offline");
    await eventually(() => t.connection.get() === "offline");
    online = true;
    tab.fire("online");
    await eventually(() => t.connection.get() === "connected" && server.calls.length === 2);
  });

  it("forgets a deleted order, here and in storage", () => {
    const [tab] = fakeTabs(1);
    const t = tracker(tab, new FakeServer([]));
    t.trackPlaced({ correlationId: "c1", status: "completed", orderId: "11" });
    t.forget("11");
    expect(t.orders.get().c1).toBeUndefined();
    expect(t.last.get()).toBeNull();
    expect(JSON.parse(tab.storage.getItem(trackingKey("alice"))!)).toEqual({ orders: {}, last: null });
  });

  it("persists only orders in flight and the last one", () => {
    const [tab] = fakeTabs(1);
    const t = tracker(tab, new FakeServer([]));
    t.trackPlaced({ correlationId: "old", status: "accepted", orderId: "1" });
    t.observe([{ correlationId: "old", status: "completed", orderId: "1" }]);
    t.trackPlaced({ correlationId: "new", status: "accepted", orderId: "2" });
    const stored = JSON.parse(tab.storage.getItem(trackingKey("alice"))!);
    expect(Object.keys(stored.orders)).toEqual(["new"]);
    expect(stored.last).toBe("new");
  });
});
