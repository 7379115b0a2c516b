import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { asConnectError, describeError, lineIndexOf } from "../src/api/errors";
import { parseRoute } from "../src/router";

describe("errors in plain words", () => {
  it("a failed fetch (gateway down) reads as UNAVAILABLE, retrying", () => {
    const err = new ConnectError("Failed to fetch", Code.Unknown, undefined, undefined, new TypeError("Failed to fetch"));
    expect(asConnectError(err).code).toBe(Code.Unavailable);
    expect(describeError(err).message).toMatch(/unavailable.*retrying/i);
  });

  it("each code the shop meets has its own words", () => {
    expect(describeError(new ConnectError("x", Code.FailedPrecondition)).message).toMatch(/still being processed/i);
    expect(describeError(new ConnectError("x", Code.Aborted)).message).toMatch(/still being submitted/i);
    expect(describeError(new ConnectError("x", Code.AlreadyExists)).message).toMatch(/different cart/i);
    expect(describeError(new ConnectError("x", Code.NotFound)).title).toBe("Not found");
    expect(describeError(new ConnectError("x", Code.Unauthenticated)).message).toMatch(/sign in again/i);
    expect(describeError(new ConnectError("boom", Code.Internal)).message).toContain("boom");
  });

  it("a field path names its line", () => {
    expect(lineIndexOf("lines[3].quantity")).toBe(3);
    expect(lineIndexOf("items[0].productId")).toBe(0);
    expect(lineIndexOf("idempotency_key")).toBeUndefined();
  });
});

describe("routes", () => {
  it("maps real paths to pages", () => {
    expect(parseRoute("/")).toEqual({ name: "products" });
    expect(parseRoute("/products/")).toEqual({ name: "products" });
    expect(parseRoute("/products/AZ-104")).toEqual({ name: "product", id: "AZ-104" });
    expect(parseRoute("/orders/42")).toEqual({ name: "order", id: "42" });
    expect(parseRoute("/orders/abc")).toEqual({ name: "notFound" });
    expect(parseRoute("/login")).toEqual({ name: "login" });
    expect(parseRoute("/cart")).toEqual({ name: "cart" });
    expect(parseRoute("/elsewhere")).toEqual({ name: "notFound" });
  });
});
