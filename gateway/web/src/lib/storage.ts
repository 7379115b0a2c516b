/** JSON in Web Storage, tolerant of full, disabled or corrupted storage. */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** `storage` events from other tabs: the part of `window` the cross-tab sync uses. */
export interface StorageEvents {
  addEventListener(type: "storage", listener: (event: { key: string | null; newValue: string | null; storageArea?: unknown }) => void): void;
  removeEventListener(type: "storage", listener: (event: { key: string | null; newValue: string | null; storageArea?: unknown }) => void): void;
}

export function readJson<T>(storage: KeyValueStorage, key: string, fallback: T): T {
  try {
    const raw = storage.getItem(key);
    return raw == null ? fallback : (JSON.parse(raw) as T);
  } catch {
    return fallback;
  }
}

export function writeJson(storage: KeyValueStorage, key: string, value: unknown): void {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the app still works in this tab, it just does not persist.
  }
}

export function remove(storage: KeyValueStorage, key: string): void {
  try {
    storage.removeItem(key);
  } catch {
    // ignore
  }
}

/** A storage that forgets everything: used where the browser refuses Web Storage. */
export function memoryStorage(): KeyValueStorage {
  const map = new Map<string, string>();
  return {
    getItem: (k) => map.get(k) ?? null,
    setItem: (k, v) => void map.set(k, v),
    removeItem: (k) => void map.delete(k),
  };
}

function safe(get: () => Storage): KeyValueStorage {
  try {
    const s = get();
    s.getItem("contoso.probe");
    return s;
  } catch {
    return memoryStorage();
  }
}

export const local: KeyValueStorage = typeof window === "undefined" ? memoryStorage() : safe(() => window.localStorage);
export const session: KeyValueStorage = typeof window === "undefined" ? memoryStorage() : safe(() => window.sessionStorage);
