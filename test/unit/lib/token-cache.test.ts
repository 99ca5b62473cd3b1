import { SingleFlight, TokenCache } from '../../../shared/lib/token-cache';

interface T {
  value: string;
  expiresAtMs: number;
}

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe('TokenCache', () => {
  test('concurrent misses for one key make exactly one upstream call', async () => {
    const c = clock();
    const cache = new TokenCache<T>({ maxEntries: 10, minRemainingMs: 300_000, now: c.now });
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const fetch = async () => {
      calls++;
      await gate;
      return { value: 'v1', expiresAtMs: c.now() + 3_600_000 };
    };
    const all = Array.from({ length: 1000 }, () => cache.get('k', fetch));
    release();
    const results = await Promise.all(all);
    expect(calls).toBe(1);
    expect(new Set(results.map((r) => r.value))).toEqual(new Set(['v1']));
    expect(cache.stats.coalesced).toBe(999);
  });

  test('served() answers without a promise only what get() would answer with nothing else to do', async () => {
    const c = clock();
    const cache = new TokenCache<T>({ maxEntries: 10, minRemainingMs: 60_000, refreshAheadMs: 300_000, now: c.now });
    let n = 0;
    const fetch = async () => ({ value: `v${++n}`, expiresAtMs: c.now() + 600_000 });
    expect(cache.served('k')).toBeUndefined(); // nothing cached: a miss is get()'s
    expect(cache.stats.hits).toBe(0);
    await cache.get('k', fetch);
    expect(cache.served('k')?.value).toBe('v1');
    expect(cache.stats.hits).toBe(1);
    c.advance(300_001); // inside the refresh-ahead window: get() serves and starts a refresh, served() leaves it to get()
    expect(cache.served('k')).toBeUndefined();
    expect((await cache.get('k', fetch)).value).toBe('v1');
    await new Promise((r) => setImmediate(r));
    expect(n).toBe(2);
    expect(cache.served('k')?.value).toBe('v2');
    c.advance(540_001); // within the minimum life left: neither serves it
    expect(cache.served('k')).toBeUndefined();
  });

  test('served while more than the minimum life is left, refetched after', async () => {
    const c = clock();
    const cache = new TokenCache<T>({ maxEntries: 10, minRemainingMs: 300_000, now: c.now });
    let n = 0;
    const fetch = async () => ({ value: `v${++n}`, expiresAtMs: c.now() + 600_000 });
    expect((await cache.get('k', fetch)).value).toBe('v1');
    c.advance(299_000);
    expect((await cache.get('k', fetch)).value).toBe('v1');
    c.advance(2_000); // 299 s left < 300 s minimum
    expect((await cache.get('k', fetch)).value).toBe('v2');
  });

  test('refresh-ahead serves the current value and refreshes once in the background', async () => {
    const c = clock();
    const cache = new TokenCache<T>({ maxEntries: 10, minRemainingMs: 60_000, refreshAheadMs: 300_000, now: c.now });
    let n = 0;
    const fetch = async () => ({ value: `v${++n}`, expiresAtMs: c.now() + 600_000 });
    await cache.get('k', fetch);
    c.advance(400_000); // 200 s left: inside the refresh window
    const [a, b] = await Promise.all([cache.get('k', fetch), cache.get('k', fetch)]);
    expect([a.value, b.value]).toEqual(['v1', 'v1']);
    await new Promise((r) => setImmediate(r));
    expect(n).toBe(2);
    expect((await cache.get('k', fetch)).value).toBe('v2');
  });

  test('a failed fetch is not cached and does not poison later calls', async () => {
    const cache = new TokenCache<T>({ maxEntries: 10, minRemainingMs: 0 });
    await expect(cache.get('k', async () => Promise.reject(new Error('upstream down')))).rejects.toThrow('upstream down');
    expect((await cache.get('k', async () => ({ value: 'ok', expiresAtMs: Date.now() + 10_000 }))).value).toBe('ok');
  });

  test('bounded: the least recently set entry is evicted', async () => {
    const cache = new TokenCache<T>({ maxEntries: 2, minRemainingMs: 0 });
    const v = (s: string) => async () => ({ value: s, expiresAtMs: Date.now() + 60_000 });
    await cache.get('a', v('a'));
    await cache.get('b', v('b'));
    await cache.get('c', v('c'));
    expect(cache.size).toBe(2);
    expect(cache.peek('a')).toBeUndefined();
    expect(cache.peek('c')?.value).toBe('c');
  });
});

test('SingleFlight coalesces and then lets the next call through', async () => {
  const sf = new SingleFlight<number>();
  let calls = 0;
  const fn = async () => {
    calls++;
    await new Promise((r) => setTimeout(r, 5));
    return calls;
  };
  const [a, b] = await Promise.all([sf.run('x', fn), sf.run('x', fn)]);
  expect(a).toBe(1);
  expect(b).toBe(1);
  expect(await sf.run('x', fn)).toBe(2);
});
