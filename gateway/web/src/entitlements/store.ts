/**
 * The signed-in user's entitlements, read with ListEntitlements and shared by the pages: read again
 * when an order completes (its entitlements are recorded with it), so an open page updates live.
 */
import { describeError, withRetry, type Problem } from "../api/errors";
import { Store } from "../lib/store";
import { grantedBy, newSince, type EntitlementView } from "./view";

export interface EntitlementsState {
  list: EntitlementView[] | undefined;
  loading: boolean;
  problem: Problem | undefined;
  retrying: Problem | undefined;
}

export interface EntitlementDeps {
  list(): Promise<EntitlementView[]>;
  /** Waits between reads when an order's entitlements are not listed yet. */
  sleep?: (ms: number) => Promise<void>;
  /** Retries of ListEntitlements while the service is unavailable. */
  attempts?: number;
}

export class EntitlementStore {
  readonly state = new Store<EntitlementsState>({ list: undefined, loading: false, problem: undefined, retrying: undefined });
  readonly #deps: EntitlementDeps;
  #inFlight: Promise<EntitlementView[] | undefined> | undefined;
  #again = false;
  #stopped = false;

  constructor(deps: EntitlementDeps) {
    this.#deps = deps;
  }

  stop(): void {
    this.#stopped = true;
  }

  /** Reads the list again (a call already under way is followed by one more, so nothing is missed). */
  refresh(): Promise<EntitlementView[] | undefined> {
    if (this.#inFlight) {
      this.#again = true;
      return this.#inFlight;
    }
    const run = async (): Promise<EntitlementView[] | undefined> => {
      let list: EntitlementView[] | undefined;
      do {
        this.#again = false;
        this.state.update((s) => ({ ...s, loading: true, problem: undefined }));
        try {
          list = await withRetry(() => this.#deps.list(), {
            attempts: this.#deps.attempts ?? 6,
            onRetry: (retrying) => this.state.update((s) => ({ ...s, retrying })),
          });
          if (this.#stopped) return undefined;
          this.state.set({ list, loading: false, problem: undefined, retrying: undefined });
        } catch (err) {
          if (this.#stopped) return undefined;
          this.state.update((s) => ({ ...s, loading: false, retrying: undefined, problem: describeError(err) }));
          list = undefined;
        }
      } while (this.#again && !this.#stopped);
      return list;
    };
    this.#inFlight = run().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  /** One entitlement as AssignSeat/RevokeSeat answered it. */
  replace(e: EntitlementView): void {
    this.state.update((s) => (s.list ? { ...s, list: s.list.map((x) => (x.id === e.id ? e : x)) } : s));
  }

  /**
   * An order completed: reads the list again and returns what the order granted (by its order id,
   * or, without one, what is new since the last read), asking a few more times if none is listed yet.
   */
  async afterOrderCompleted(orderId: string): Promise<EntitlementView[]> {
    const before = this.state.get().list;
    const sleep = this.#deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    for (const wait of [0, 500, 1500, 3000]) {
      if (wait) await sleep(wait);
      if (this.#stopped) return [];
      const list = await this.refresh();
      if (!list) continue;
      const granted = orderId ? grantedBy(list, orderId) : before ? newSince(before, list) : [];
      if (granted.length > 0) return granted;
    }
    return [];
  }
}
