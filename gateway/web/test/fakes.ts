import type { KeyValueStorage } from "../src/lib/storage";

type StorageListener = (event: { key: string | null; newValue: string | null; oldValue?: string | null }) => void;

/** A browser tab as the stores see it: its view of the shared localStorage and its `window` events. */
export interface FakeTab {
  storage: KeyValueStorage & { clear(): void };
  events: {
    addEventListener(type: string, listener: (...args: never[]) => void): void;
    removeEventListener(type: string, listener: (...args: never[]) => void): void;
  };
  /** Fires a window event (e.g. "online") in this tab. */
  fire(type: string, event?: unknown): void;
}

/**
 * Tabs of one origin sharing a localStorage: like a browser, a write in one tab fires a `storage`
 * event in every other tab (never in the writer), with key null when the storage is cleared.
 */
export function fakeTabs(count: number): FakeTab[] {
  const data = new Map<string, string>();
  const tabs: FakeTab[] = [];
  for (let i = 0; i < count; i++) {
    const listeners = new Map<string, Set<(...args: unknown[]) => void>>();
    const fire = (type: string, event?: unknown) => {
      for (const l of [...(listeners.get(type) ?? [])]) l(event);
    };
    const others = (event: Parameters<StorageListener>[0]) => {
      for (const t of tabs) if (t !== tab) t.fire("storage", event);
    };
    const tab: FakeTab = {
      storage: {
        getItem: (k) => data.get(k) ?? null,
        setItem: (k, v) => {
          const oldValue = data.get(k) ?? null;
          data.set(k, String(v));
          if (oldValue !== String(v)) others({ key: k, newValue: String(v), oldValue });
        },
        removeItem: (k) => {
          const oldValue = data.get(k) ?? null;
          data.delete(k);
          if (oldValue !== null) others({ key: k, newValue: null, oldValue });
        },
        clear: () => {
          data.clear();
          others({ key: null, newValue: null, oldValue: null });
        },
      },
      events: {
        addEventListener: (type, listener) => {
          let set = listeners.get(type);
          if (!set) listeners.set(type, (set = new Set()));
          set.add(listener as (...args: unknown[]) => void);
        },
        removeEventListener: (type, listener) => void listeners.get(type)?.delete(listener as (...args: unknown[]) => void),
      },
      fire,
    };
    tabs.push(tab);
  }
  return tabs;
}

/** Polls until `check` holds (no sleeping as synchronisation). */
export async function eventually(check: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}
