import { describe, expect, it } from "vitest";
import { applyReport, applyReports, isForward, laterStatus, newlyFinished, type OrderStatuses } from "../src/orders/status";

const cid = "0b6f6c9e-1d5c-4b4f-9a57-2f0f3f7c1a11";

describe("status reducer", () => {
  it("moves forward through accepted → processing → completed", () => {
    let s: OrderStatuses = {};
    s = applyReport(s, { correlationId: cid, status: "accepted", orderId: "0" });
    expect(s[cid]).toMatchObject({ status: "accepted", orderId: "" });
    s = applyReport(s, { correlationId: cid, status: "processing", orderId: "42" });
    s = applyReport(s, { correlationId: cid, status: "completed", orderId: "42" });
    expect(s[cid]).toMatchObject({ status: "completed", orderId: "42", reason: "" });
  });

  it("ignores a late or duplicate status", () => {
    const done = applyReports({}, [
      { correlationId: cid, status: "accepted" },
      { correlationId: cid, status: "completed", orderId: "7" },
    ]);
    expect(applyReport(done, { correlationId: cid, status: "processing", orderId: "7" })).toBe(done);
    expect(applyReport(done, { correlationId: cid, status: "accepted" })).toBe(done);
    expect(applyReport(done, { correlationId: cid, status: "completed", orderId: "7" })).toBe(done);
  });

  it("a terminal status never changes into the other terminal one", () => {
    const failed = applyReport({}, { correlationId: cid, status: "failed", reason: "card declined" });
    expect(applyReport(failed, { correlationId: cid, status: "completed" })[cid].status).toBe("failed");
    const completed = applyReport({}, { correlationId: cid, status: "completed" });
    expect(applyReport(completed, { correlationId: cid, status: "failed", reason: "x" })[cid].status).toBe("completed");
  });

  it("keeps the reason of a failure", () => {
    const s = applyReports({}, [
      { correlationId: cid, status: "processing" },
      { correlationId: cid, status: "failed", reason: "product AZ-104 is no longer sold" },
    ]);
    expect(s[cid]).toMatchObject({ status: "failed", reason: "product AZ-104 is no longer sold" });
  });

  it("merges a snapshot read after live updates without going back", () => {
    const other = "c2";
    let s = applyReports({}, [
      { correlationId: cid, status: "completed", orderId: "1" }, // live, newer than the snapshot
    ]);
    const snapshot = [
      { correlationId: cid, status: "processing" as const, orderId: "1" },
      { correlationId: other, status: "accepted" as const, orderId: "2" },
    ];
    s = applyReports(s, snapshot);
    expect(s[cid].status).toBe("completed");
    expect(s[other].status).toBe("accepted");
    s = applyReport(s, { correlationId: other, status: "completed", orderId: "2" });
    expect(s[other].status).toBe("completed");
  });

  it("an older report still fills in an order id that was unknown", () => {
    let s = applyReport({}, { correlationId: cid, status: "processing", orderId: "0" });
    s = applyReport(s, { correlationId: cid, status: "accepted", orderId: "99" });
    expect(s[cid]).toMatchObject({ status: "processing", orderId: "99" });
  });

  it("ignores reports without a status or correlation id", () => {
    const s = applyReport({}, { correlationId: cid, status: "accepted" });
    expect(applyReport(s, { correlationId: cid, status: undefined })).toBe(s);
    expect(applyReport(s, { correlationId: "", status: "completed" })).toBe(s);
  });

  it("tells which orders just finished", () => {
    const before = applyReports({}, [
      { correlationId: "a", status: "processing" },
      { correlationId: "b", status: "completed" },
    ]);
    const after = applyReports(before, [
      { correlationId: "a", status: "completed" },
      { correlationId: "b", status: "completed" },
      { correlationId: "c", status: "failed", reason: "r" },
    ]);
    expect(newlyFinished(before, after).map((o) => o.correlationId).sort()).toEqual(["a", "c"]);
    expect(newlyFinished(after, after)).toEqual([]);
  });

  it("laterStatus and isForward agree with the order of steps", () => {
    expect(laterStatus("accepted", "processing")).toBe("processing");
    expect(laterStatus("completed", "processing")).toBe("completed");
    expect(laterStatus(undefined, "accepted")).toBe("accepted");
    expect(laterStatus("failed", undefined)).toBe("failed");
    expect(isForward("processing", "accepted")).toBe(false);
    expect(isForward("processing", "processing")).toBe(false);
    expect(isForward("processing", "failed")).toBe(true);
  });
});
