import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { EntitlementStore } from "../src/entitlements/store";
import {
  assignProblemText,
  canAssign,
  daysLeft,
  daysLeftText,
  entitlementView,
  grantedBy,
  grantedText,
  newSince,
  periodText,
  revokeProblemText,
  seatsFree,
  seatsText,
  seatsUsed,
  splitByActive,
  userIdProblem,
  type EntitlementView,
} from "../src/entitlements/view";
import { EntitlementRole, EntitlementSchema } from "../src/gen/contoso/entitlements/v1/entitlements_pb";
import { parseRoute } from "../src/router";

const DAY = 24 * 60 * 60 * 1000;
const NOW = Date.UTC(2025, 4, 10, 12, 0, 0); // 10 May 2025, noon UTC

function ent(over: Partial<EntitlementView> = {}): EntitlementView {
  return {
    id: "1",
    productId: "AZ-104",
    productName: "Azure Administrator",
    imageUrl: "/images/products/az-104.svg",
    role: "buyer",
    seats: 3,
    seatsUsed: 1,
    holdsSeat: true,
    validFrom: NOW - DAY,
    validUntil: NOW + 30 * DAY,
    active: true,
    orderId: "42",
    lineNo: 1,
    buyer: "ivan",
    assignments: [],
    ...over,
  };
}

describe("days left", () => {
  it("counts a started day as one, and is 0 once over", () => {
    expect(daysLeft(NOW + 30 * DAY, NOW)).toBe(30);
    expect(daysLeft(NOW + 30 * DAY - 1, NOW)).toBe(30);
    expect(daysLeft(NOW + 30 * DAY + 1, NOW)).toBe(31);
    expect(daysLeft(NOW + 1, NOW)).toBe(1);
    expect(daysLeft(NOW, NOW)).toBe(0);
    expect(daysLeft(NOW - DAY, NOW)).toBe(0);
  });

  it("reads in words, expired once the clock passes the end even if the server said active", () => {
    expect(daysLeftText(ent({ validUntil: NOW + 1 }), NOW)).toBe("1 day left");
    expect(daysLeftText(ent({ validUntil: NOW + 12 * DAY }), NOW)).toBe("12 days left");
    expect(daysLeftText(ent({ validUntil: NOW - 1 }), NOW)).toBe("Expired");
    expect(daysLeftText(ent({ active: false }), NOW)).toBe("Expired");
  });
});

describe("active and expired", () => {
  it("splits them: active ending soonest first, expired latest first", () => {
    const list = [
      ent({ id: "1", validUntil: NOW + 300 * DAY }),
      ent({ id: "2", validUntil: NOW - 5 * DAY, active: false }),
      ent({ id: "3", validUntil: NOW + 3 * DAY }),
      ent({ id: "4", validUntil: NOW - 1 * DAY, active: false }),
      ent({ id: "5", validUntil: NOW - 1, active: true }), // ran out since it was read
    ];
    const { active, expired } = splitByActive(list, NOW);
    expect(active.map((e) => e.id)).toEqual(["3", "1"]);
    expect(expired.map((e) => e.id)).toEqual(["5", "4", "2"]);
  });

  it("an empty list is two empty sections", () => {
    expect(splitByActive([], NOW)).toEqual({ active: [], expired: [] });
  });
});

describe("seats used", () => {
  it("the buyer's own seat plus every assignment, never more than the seats", () => {
    expect(seatsUsed(ent())).toBe(1);
    const one = ent({ assignments: [{ userId: "judy", assignedAt: NOW }] });
    expect(seatsUsed(one)).toBe(2);
    expect(seatsText(one)).toBe("2 of 3 seats used");
    expect(seatsFree(one)).toBe(1);
    const all = ent({ assignments: ["a", "b", "c"].map((userId) => ({ userId, assignedAt: NOW })), holdsSeat: false });
    expect(seatsUsed(all)).toBe(3);
    expect(seatsFree(all)).toBe(0);
    expect(canAssign(all, NOW)).toBe(false);
  });

  it("an assignee sees the server's count; a single seat reads in the singular", () => {
    expect(seatsUsed(ent({ role: "assignee", seatsUsed: 2, assignments: [] }))).toBe(2);
    expect(seatsText(ent({ seats: 1 }))).toBe("1 of 1 seat used");
  });

  it("only the buyer of an active entitlement with a free seat may assign", () => {
    expect(canAssign(ent(), NOW)).toBe(true);
    expect(canAssign(ent({ role: "assignee" }), NOW)).toBe(false);
    expect(canAssign(ent({ validUntil: NOW - 1 }), NOW)).toBe(false);
    expect(canAssign(ent({ seats: 1 }), NOW)).toBe(false);
  });
});

describe("the toast", () => {
  const y = (m: number, d: number) => Date.UTC(2025, m, d, 9, 30);
  it("names the period from the validity in calendar months, or days", () => {
    expect(periodText(y(4, 10), Date.UTC(2026, 4, 10, 9, 30))).toBe("12 months");
    expect(periodText(y(4, 10), y(5, 10))).toBe("1 month");
    expect(periodText(y(0, 31), y(1, 28))).toBe("1 month"); // 31 January + 1 month
    expect(periodText(y(4, 10), y(7, 10))).toBe("3 months");
    expect(periodText(y(4, 10), y(4, 20))).toBe("10 days");
    expect(periodText(y(4, 10), y(4, 11))).toBe("1 day");
  });

  it("reads like a person wrote it", () => {
    const year = { validFrom: Date.UTC(2025, 4, 10), validUntil: Date.UTC(2026, 4, 10) };
    const month = { validFrom: Date.UTC(2025, 4, 10), validUntil: Date.UTC(2025, 5, 10) };
    expect(grantedText([ent({ ...year, seats: 1 })])).toBe("You now have AZ-104 for 12 months");
    expect(grantedText([ent({ ...month, seats: 3, productId: "AZ-500" })])).toBe("You now have AZ-500 (3 seats) for 1 month");
    expect(grantedText([ent({ ...year, seats: 1 }), ent({ ...month, seats: 1, productId: "AZ-900" })])).toBe(
      "You now have AZ-104 for 12 months and AZ-900 for 1 month",
    );
    const many = ["A", "B", "C", "D", "E"].map((productId) => ent({ ...month, seats: 1, productId }));
    expect(grantedText(many)).toBe("You now have A for 1 month, B for 1 month and 3 more subscriptions");
    expect(grantedText([])).toBe("");
  });

  it("picks what the order granted, in line order, and only what the caller bought", () => {
    const list = [
      ent({ id: "1", orderId: "42", lineNo: 2 }),
      ent({ id: "2", orderId: "7" }),
      ent({ id: "3", orderId: "42", lineNo: 1 }),
      ent({ id: "4", orderId: "", role: "assignee" }),
    ];
    expect(grantedBy(list, "42").map((e) => e.id)).toEqual(["3", "1"]);
    expect(grantedBy(list, "")).toEqual([]);
    expect(newSince([list[0]], list).map((e) => e.id)).toEqual(["2", "3"]);
  });
});

describe("from the wire", () => {
  it("turns the message into the view", () => {
    const v = entitlementView(
      create(EntitlementSchema, {
        entitlementId: 9n,
        productId: "SC-900",
        productName: "Security Fundamentals",
        role: EntitlementRole.ASSIGNEE,
        seats: 3,
        seatsUsed: 2,
        holdsSeat: true,
        validFrom: timestampFromMs(NOW),
        validUntil: timestampFromMs(NOW + DAY),
        active: true,
        orderId: 0n,
        buyer: "ivan",
      }),
    );
    expect(v).toMatchObject({ id: "9", role: "assignee", orderId: "", validFrom: NOW, validUntil: NOW + DAY, buyer: "ivan" });
    expect(v.imageUrl).toBe("/images/products/sc-900.svg");
  });

  it("routes /subscriptions", () => {
    expect(parseRoute("/subscriptions")).toEqual({ name: "subscriptions" });
    expect(parseRoute("/subscriptions/")).toEqual({ name: "subscriptions" });
  });
});

describe("seat errors in plain words", () => {
  const problem = (code: Code, message: string) => new ConnectError(message, code);
  it("says what is wrong with the user id", () => {
    expect(assignProblemText(problem(Code.InvalidArgument, "user_id: this user already holds a seat of this entitlement"), "judy")).toBe(
      "judy already has a seat of this subscription.",
    );
    expect(assignProblemText(problem(Code.InvalidArgument, "user_id: the buyer holds a seat of their own and cannot be assigned one"), "ivan")).toMatch(
      /seat of your own/,
    );
    expect(assignProblemText(problem(Code.InvalidArgument, "user_id: must be 1 to 200 printable ASCII characters"), " x")).toMatch(/not a valid user id/);
  });

  it("no free seat, expired, not the buyer, unknown", () => {
    expect(assignProblemText(problem(Code.FailedPrecondition, "no seat is free: all 3 seats are assigned"), "x")).toMatch(/No seat is free/);
    expect(assignProblemText(problem(Code.FailedPrecondition, "the entitlement has expired"), "x")).toMatch(/expired/);
    expect(assignProblemText(problem(Code.PermissionDenied, "only the buyer"), "x")).toMatch(/Only the person who bought/);
    expect(assignProblemText(problem(Code.NotFound, "no such entitlement"), "x")).toMatch(/could not be found/);
    expect(revokeProblemText(problem(Code.NotFound, "this user holds no assigned seat"), "judy")).toBe("judy no longer holds a seat of this subscription.");
  });

  it("checks the user id before asking", () => {
    expect(userIdProblem("", "ivan")).toMatch(/Enter the user id/);
    expect(userIdProblem(" judy", "ivan")).toMatch(/space/);
    expect(userIdProblem("x".repeat(201), "ivan")).toMatch(/200/);
    expect(userIdProblem("jüdy", "ivan")).toMatch(/letters/);
    expect(userIdProblem("ivan", "ivan")).toMatch(/seat of your own/);
    expect(userIdProblem("judy", "ivan")).toBeUndefined();
  });
});

describe("the entitlement store", () => {
  it("after an order completes, reads again until the order's entitlements are listed", async () => {
    const answers = [[ent({ id: "1", orderId: "7" })], [ent({ id: "1", orderId: "7" })], [ent({ id: "1", orderId: "7" }), ent({ id: "2", orderId: "42" })]];
    let calls = 0;
    const waits: number[] = [];
    const store = new EntitlementStore({
      list: async () => answers[Math.min(calls++, answers.length - 1)],
      sleep: async (ms) => void waits.push(ms),
    });
    await store.refresh();
    const granted = await store.afterOrderCompleted("42");
    expect(granted.map((e) => e.id)).toEqual(["2"]);
    expect(store.state.get().list?.map((e) => e.id)).toEqual(["1", "2"]);
    expect(waits).toEqual([500]);
  });

  it("concurrent refreshes share a call and read once more afterwards", async () => {
    let calls = 0;
    const store = new EntitlementStore({ list: async () => [ent({ id: String(++calls) })] });
    const [a, b] = await Promise.all([store.refresh(), store.refresh()]);
    expect(calls).toBe(2);
    expect(a).toBe(b);
    expect(store.state.get().list?.[0].id).toBe("2");
  });

  it("a failed read is a problem in plain words, and an answer replaces one entitlement", async () => {
    let fail = true;
    const store = new EntitlementStore({
      list: async () => {
        if (fail) throw new ConnectError("denied", Code.PermissionDenied);
        return [ent({ id: "1" }), ent({ id: "2" })];
      },
      attempts: 1,
    });
    await store.refresh();
    expect(store.state.get().problem?.title).toBe("Not allowed");
    fail = false;
    await store.refresh();
    store.replace(ent({ id: "2", assignments: [{ userId: "judy", assignedAt: NOW }] }));
    expect(store.state.get().list?.map(seatsUsed)).toEqual([1, 2]);
  });
});
