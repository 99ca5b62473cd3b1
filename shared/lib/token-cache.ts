/**
 * A bounded cache of expiring credentials with single-flight: concurrent misses for one key share one
 * upstream call. An entry is served while it has more than `minRemainingMs` of life left; inside the
 * `refreshAheadMs` window it is still served and one background refresh is started.
 */

export interface Expiring {
  /** Milliseconds since the epoch. */
  readonly expiresAtMs: number;
}

export interface TokenCacheOptions {
  readonly maxEntries: number;
  readonly minRemainingMs: number;
  readonly refreshAheadMs?: number;
  readonly now?: () => number;
}

export interface CacheStats {
  hits: number;
  misses: number;
  coalesced: number;
  refreshes: number;
}

export class TokenCache<V extends Expiring> {
  private readonly entries = new Map<string, V>();
  private readonly inflight = new Map<string, Promise<V>>();
  private readonly now: () => number;
  readonly stats: CacheStats = { hits: 0, misses: 0, coalesced: 0, refreshes: 0 };

  constructor(private readonly opts: TokenCacheOptions) {
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The cached value if it has enough life left, without fetching. */
  peek(key: string): V | undefined {
    const v = this.entries.get(key);
    return v && v.expiresAtMs - this.now() > this.opts.minRemainingMs ? v : undefined;
  }

  /**
   * `get`'s answer when it needs nothing else (cached, enough life left, no refresh ahead due), counted as a hit,
   * without a promise; undefined otherwise (then `get`).
   */
  served(key: string): V | undefined {
    const v = this.entries.get(key);
    if (!v) return undefined;
    const left = v.expiresAtMs - this.now();
    if (left <= this.opts.minRemainingMs || (this.opts.refreshAheadMs !== undefined && left <= this.opts.refreshAheadMs))
      return undefined;
    this.stats.hits++;
    return v;
  }

  async get(key: string, fetch: () => Promise<V>): Promise<V> {
    const v = this.entries.get(key);
    if (v) {
      const left = v.expiresAtMs - this.now();
      if (left > this.opts.minRemainingMs) {
        this.stats.hits++;
        if (this.opts.refreshAheadMs !== undefined && left <= this.opts.refreshAheadMs && !this.inflight.has(key)) {
          this.stats.refreshes++;
          this.load(key, fetch).catch(() => undefined); // the current value stays good; a failed refresh is retried next time
        }
        return v;
      }
      this.entries.delete(key);
    }
    const pending = this.inflight.get(key);
    if (pending) {
      this.stats.coalesced++;
      return pending;
    }
    this.stats.misses++;
    return this.load(key, fetch);
  }

  private load(key: string, fetch: () => Promise<V>): Promise<V> {
    const p = (async () => {
      try {
        const value = await fetch();
        this.set(key, value);
        return value;
      } finally {
        this.inflight.delete(key);
      }
    })();
    this.inflight.set(key, p);
    return p;
  }

  set(key: string, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    while (this.entries.size > this.opts.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }
}

/** Coalesce concurrent calls with the same key into one (no caching of the result). */
export class SingleFlight<V> {
  private readonly inflight = new Map<string, Promise<V>>();
  run(key: string, fn: () => Promise<V>): Promise<V> {
    const p = this.inflight.get(key);
    if (p) return p;
    const q = fn().finally(() => this.inflight.delete(key));
    this.inflight.set(key, q);
    return q;
  }
}
