import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "../gen/google/rpc/error_details_pb";

export { Code };

export interface FieldProblem {
  /** The request field, e.g. `lines[0].quantity`. */
  field: string;
  description: string;
}

/** A failed call in plain words. */
export interface Problem {
  code: Code;
  title: string;
  message: string;
  fields: FieldProblem[];
}

/** The error as a ConnectError, with the browser's "Failed to fetch" read as UNAVAILABLE. */
export function asConnectError(err: unknown): ConnectError {
  const ce = ConnectError.from(err);
  if (ce.code === Code.Unknown && (ce.cause instanceof TypeError || /fetch|network/i.test(ce.rawMessage))) {
    return new ConnectError("the gateway cannot be reached", Code.Unavailable, undefined, undefined, err);
  }
  return ce;
}

export function errorCode(err: unknown): Code {
  return asConnectError(err).code;
}

export function fieldProblems(err: ConnectError): FieldProblem[] {
  try {
    return err.findDetails(BadRequestSchema).flatMap((d) =>
      d.fieldViolations.map((v) => ({ field: v.field, description: v.description })),
    );
  } catch {
    return [];
  }
}

const TEXT: Partial<Record<Code, [string, string]>> = {
  [Code.InvalidArgument]: ["Please check the details", "Some of what was sent is not valid."],
  [Code.Unavailable]: ["Service unavailable", "The service is unavailable right now; retrying…"],
  [Code.NotFound]: ["Not found", "We could not find what you were looking for."],
  [Code.Aborted]: ["Still submitting", "This order is still being submitted. Hold on a moment."],
  [Code.AlreadyExists]: [
    "Cart changed during checkout",
    "This checkout was already used for a different cart. Review your cart and place the order again.",
  ],
  [Code.FailedPrecondition]: [
    "Still being processed",
    "This order is still being processed. Try again once it has completed.",
  ],
  [Code.Unauthenticated]: ["Signed out", "Your session has expired. Please sign in again."],
  [Code.PermissionDenied]: ["Not allowed", "You are not allowed to do that."],
  [Code.ResourceExhausted]: ["Too many requests", "Too many requests right now. Please wait a moment and try again."],
  [Code.DeadlineExceeded]: ["Timed out", "The service took too long to answer. Please try again."],
  [Code.Canceled]: ["Cancelled", "The request was cancelled."],
};

export function describeError(err: unknown): Problem {
  const ce = asConnectError(err);
  const [title, message] = TEXT[ce.code] ?? [
    "Something went wrong",
    ce.rawMessage ? `Something went wrong: ${ce.rawMessage}` : "Something went wrong. Please try again.",
  ];
  const fields = ce.code === Code.InvalidArgument || ce.code === Code.NotFound ? fieldProblems(ce) : [];
  // For a validation error the server's own words are more useful than ours when no field is named.
  const detail = ce.code === Code.InvalidArgument && fields.length === 0 && ce.rawMessage ? ce.rawMessage : message;
  return { code: ce.code, title, message: detail, fields };
}

/** The index `n` of `lines[n]...` in a field path, or undefined. */
export function lineIndexOf(field: string): number | undefined {
  const m = /^(?:lines|items)\[(\d+)\]/.exec(field);
  return m ? Number(m[1]) : undefined;
}

export const delay = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

/**
 * Runs a call that is safe to repeat (a read, or a write carrying an idempotency key), retrying on
 * UNAVAILABLE with exponential backoff. `onRetry` lets the page say "retrying…".
 */
export async function withRetry<T>(
  call: () => Promise<T>,
  options: { attempts?: number; onRetry?: (problem: Problem, attempt: number) => void; retryOn?: Code[]; signal?: AbortSignal } = {},
): Promise<T> {
  const attempts = options.attempts ?? 6;
  const retryOn = options.retryOn ?? [Code.Unavailable];
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      const code = errorCode(err);
      if (attempt + 1 >= attempts || !retryOn.includes(code) || options.signal?.aborted) throw asConnectError(err);
      options.onRetry?.(describeError(err), attempt);
      const ms = Math.min(8000, 400 * 2 ** attempt);
      await delay(ms / 2 + Math.random() * (ms / 2), options.signal);
      if (options.signal?.aborted) throw asConnectError(err);
    }
  }
}
