import { describe, expect, it } from "vitest";
import { backoffCeiling, backoffDelay, STREAM_BACKOFF } from "../src/lib/backoff";

describe("backoff with jitter", () => {
  const opts = { baseMs: 500, maxMs: 15_000 };

  it("the ceiling doubles per attempt up to the maximum", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 50].map((n) => backoffCeiling(n, opts))).toEqual([
      500, 1000, 2000, 4000, 8000, 15_000, 15_000, 15_000,
    ]);
  });

  it("each delay lies between half the ceiling and the ceiling", () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const ceiling = backoffCeiling(attempt, opts);
      expect(backoffDelay(attempt, opts, () => 0)).toBe(ceiling / 2);
      expect(backoffDelay(attempt, opts, () => 0.999_999)).toBeLessThanOrEqual(ceiling);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, opts);
        expect(d).toBeGreaterThanOrEqual(ceiling / 2);
        expect(d).toBeLessThanOrEqual(ceiling);
      }
    }
  });

  it("jitter spreads the delays of many clients", () => {
    const delays = new Set(Array.from({ length: 100 }, () => backoffDelay(4, opts)));
    expect(delays.size).toBeGreaterThan(20);
  });

  it("the stream's default starts fast and never waits more than 15 s", () => {
    expect(backoffDelay(0, STREAM_BACKOFF, () => 0.999)).toBeLessThanOrEqual(500);
    expect(backoffDelay(100, STREAM_BACKOFF, () => 0.999)).toBeLessThanOrEqual(15_000);
    expect(backoffDelay(-1, STREAM_BACKOFF, () => 0)).toBe(250);
  });
});
