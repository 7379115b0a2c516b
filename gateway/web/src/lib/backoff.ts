/**
 * Exponential backoff with "equal jitter": attempt n waits between half and all of
 * min(max, base * 2^n), so retries from many tabs spread out yet still grow quickly.
 */
export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

export const STREAM_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 15_000 };

/** The ceiling of attempt `attempt` (0-based) before jitter. */
export function backoffCeiling(attempt: number, { baseMs, maxMs }: BackoffOptions): number {
  const exp = baseMs * 2 ** Math.max(0, Math.min(attempt, 30));
  return Math.min(maxMs, exp);
}

/** The delay before retry `attempt` (0-based), in [ceiling / 2, ceiling]. `random` returns [0, 1). */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = STREAM_BACKOFF,
  random: () => number = Math.random,
): number {
  const ceiling = backoffCeiling(attempt, options);
  const half = ceiling / 2;
  return Math.round(half + random() * half);
}
