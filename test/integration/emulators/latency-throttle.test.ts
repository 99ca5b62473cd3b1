import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';

import { faultOptionsFromEnv, seededRandom, type Emulator } from '../../../local/emulators/harness';
import { emulatorFaultsFromEnv } from '../../../local/sandbox';
import {
  ACCESS_TOKEN_TYPE,
  CLOUDSQL_RESOURCE,
  SANDBOX,
  startFixture,
  TOKEN_EXCHANGE,
  type Fixture,
} from '../../helpers/foundation';
import { captureLogs, invoke, type Result } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');

/**
 * Issue #12 item 10: every HTTP emulator honours a latency and a 429-with-Retry-After throttle (every Nth
 * request, or a seeded rate), and the broker answers 503 + Retry-After under sustained throttling and
 * succeeds under occasional throttling where its client retries (Cosmos and Key Vault SDK policies).
 */

let fx: Fixture;
let gateway: string;
let cas: string[];
const logs = captureLogs();

beforeAll(async () => {
  fx = await startFixture({ COSMOS_THROTTLE_BUDGET_MS: '1000' });
  gateway = await fx.gateway();
  cas = [readFileSync(fx.sandbox.env.KEY_VAULT_CA_FILE!, 'utf8'), readFileSync(fx.sandbox.env.COSMOS_CA_FILE!, 'utf8')];
});

afterAll(async () => {
  await testApp.close();
  logs.restore();
  await fx.stop();
});

beforeEach(() => {
  fx.sandbox.setEmulatorFaults(undefined);
  testApp.renew();
  testApp.renew();
});

interface Raw {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  ms: number;
}

/** One GET to an emulator over its own scheme (HTTPS ones with the sandbox CA). */
function get(emu: Emulator, path = '/latency-probe'): Promise<Raw> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const url = new URL(path, emu.url);
    const done = (res: import('node:http').IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
          ms: performance.now() - started,
        }),
      );
    };
    const req =
      url.protocol === 'https:' ? httpsRequest(url, { ca: cas, agent: false }, done) : httpRequest(url, { agent: false }, done);
    req.on('error', reject);
    req.end();
  });
}

const names = () => fx.sandbox.emulators.map((e) => e.name);

describe('every emulator honours latency and 429 throttling', () => {
  it('covers every HTTP emulator of the sandbox', () => {
    expect(names()).toEqual(
      expect.arrayContaining([
        'entra',
        'managed-identity',
        'google-sts',
        'google-iamcredentials',
        'keyvault',
        'cosmos',
        'google-oauth',
        'google-iam',
      ]),
    );
    expect(new Set(names()).size).toBe(names().length);
  });

  it.each([
    'entra',
    'managed-identity',
    'google-sts',
    'google-iamcredentials',
    'keyvault',
    'cosmos',
    'google-oauth',
    'google-iam',
  ])('%s: latency delays every answer; every=3 answers 429 + Retry-After to requests 3 and 6 only', async (name) => {
    const emu = fx.sandbox.emulators.find((e) => e.name === name)!;
    expect(emu).toBeDefined();
    const base = await get(emu);
    expect(base.status).not.toBe(429);

    emu.setLatency(80);
    const slow = await get(emu);
    expect(slow.ms).toBeGreaterThanOrEqual(75);
    expect(slow.status).toBe(base.status);
    emu.setLatency(0);

    emu.setThrottle({ every: 3, retryAfterSeconds: 2 });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await get(emu);
      statuses.push(r.status);
      if (r.status === 429) {
        expect(r.headers['retry-after']).toBe('2');
        expect(r.body.length).toBeGreaterThan(0);
        expect(() => JSON.parse(r.body) as unknown).not.toThrow();
        if (name === 'cosmos') expect(r.headers['x-ms-retry-after-ms']).toBe('2000');
      }
    }
    expect(statuses.map((s) => s === 429)).toEqual([false, false, true, false, false, true]);
    expect(emu.throttled()).toBe(2);
    expect(emu.calls.filter((c) => c.status === 429)).toHaveLength(2);
    emu.setThrottle(undefined);
    expect((await get(emu)).status).toBe(base.status);
  });

  it('a seeded rate throttles the same requests every run; rate 0 none, rate 1 all; routes limit it', async () => {
    const emu = fx.sandbox.google.sts;
    const run = async (seed: number) => {
      emu.setThrottle({ rate: 0.5, seed });
      const out: boolean[] = [];
      for (let i = 0; i < 12; i++) out.push((await get(emu)).status === 429);
      return out;
    };
    const a = await run(42);
    const b = await run(42);
    expect(a).toEqual(b);
    expect(a.some(Boolean) && a.some((x) => !x)).toBe(true);
    const rnd = seededRandom(42);
    expect(a).toEqual(Array.from({ length: 12 }, () => rnd() < 0.5));

    emu.setThrottle({ rate: 0 });
    expect((await get(emu)).status).not.toBe(429);
    emu.setThrottle({ rate: 1 });
    expect((await get(emu)).status).toBe(429);
    emu.setThrottle({ every: 1, routes: ['sts.token'] });
    expect((await get(emu)).status).not.toBe(429); // the probe path is not sts.token
  });

  it('rejects bad throttle and latency values, naming them', () => {
    const emu = fx.sandbox.google.sts;
    expect(() => emu.setThrottle({ every: 0 })).toThrow(/every/);
    expect(() => emu.setThrottle({ rate: 1.5 })).toThrow(/rate/);
    expect(() => emu.setThrottle({})).toThrow(/every or rate/);
    expect(() => emu.setLatency(-1)).toThrow(/latencyMs/);
    expect(() => fx.sandbox.setEmulatorFaults({ byName: { nope: { latencyMs: 1 } } })).toThrow(/no emulator named "nope"/);
  });

  it('the sandbox reads latency and throttle from the environment', () => {
    expect(faultOptionsFromEnv({})).toBeUndefined();
    expect(
      faultOptionsFromEnv({ SANDBOX_EMULATOR_LATENCY_MS: '30', SANDBOX_EMULATOR_THROTTLE: 'every=10,retryAfter=2' }),
    ).toEqual({
      latencyMs: 30,
      throttle: { every: 10, retryAfterSeconds: 2 },
    });
    expect(faultOptionsFromEnv({ SANDBOX_EMULATOR_THROTTLE: 'rate=0.1,seed=7' })).toEqual({ throttle: { rate: 0.1, seed: 7 } });
    expect(() => faultOptionsFromEnv({ SANDBOX_EMULATOR_LATENCY_MS: 'fast' })).toThrow(/SANDBOX_EMULATOR_LATENCY_MS/);
    expect(() => faultOptionsFromEnv({ SANDBOX_EMULATOR_THROTTLE: 'often=3' })).toThrow(/SANDBOX_EMULATOR_THROTTLE.*often/);
    expect(() => faultOptionsFromEnv({ SANDBOX_EMULATOR_THROTTLE: 'every=0' })).toThrow(/SANDBOX_EMULATOR_THROTTLE.*every/);
    expect(
      emulatorFaultsFromEnv({ SANDBOX_EMULATOR_LATENCY_MS: '5', SANDBOX_EMULATOR_FAULTS_ONLY: 'cosmos, google-sts' }),
    ).toEqual({
      byName: { cosmos: { latencyMs: 5 }, 'google-sts': { latencyMs: 5 } },
    });
  });
});

async function exchange(resource: string): Promise<Result> {
  return invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: { grant_type: TOKEN_EXCHANGE, subject_token: await fx.caller(), subject_token_type: ACCESS_TOKEN_TYPE, resource },
  });
}

const COSMOS = `cosmos://${SANDBOX.cosmos.account}/${SANDBOX.cosmos.database}/${SANDBOX.cosmos.container}`;

describe('the broker under upstream throttling', () => {
  it('sustained 429 from Google STS: 503 temporarily_unavailable with the upstream Retry-After', async () => {
    fx.sandbox.setEmulatorFaults({ byName: { 'google-sts': { throttle: { every: 1, retryAfterSeconds: 7 } } } });
    const r = await exchange(CLOUDSQL_RESOURCE);
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('7');
    expect(r.json).toMatchObject({ error: 'temporarily_unavailable', reason: 'upstream_throttled' });
    expect(r.headers.get('x-correlation-id')).toBeTruthy();
  });

  it('sustained 429 from IAM Credentials: 503 with Retry-After, no token', async () => {
    fx.sandbox.setEmulatorFaults({ byName: { 'google-iamcredentials': { throttle: { every: 1, retryAfterSeconds: 3 } } } });
    const r = await exchange(CLOUDSQL_RESOURCE);
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('3');
    expect(r.json.access_token).toBeUndefined();
    expect(r.json).toMatchObject({ reason: 'upstream_throttled' });
  });

  it('sustained 429 from Cosmos: the SDK retries within the budget, then 503 with Retry-After', async () => {
    fx.sandbox.setEmulatorFaults({ byName: { cosmos: { throttle: { every: 1, retryAfterSeconds: 0 } } } });
    const r = await exchange(COSMOS);
    expect(r.status).toBe(503);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(r.json).toMatchObject({ error: 'temporarily_unavailable', reason: 'upstream_throttled' });
    expect(fx.sandbox.cosmos.throttled()).toBeGreaterThan(1); // it did retry
  });

  it('occasional 429 from Cosmos (every 2nd call): the SDK retries and the exchange succeeds', async () => {
    fx.sandbox.setEmulatorFaults({ byName: { cosmos: { throttle: { every: 2, retryAfterSeconds: 0 } } } });
    const r = await exchange(COSMOS);
    expect(r.status).toBe(200);
    expect(fx.sandbox.cosmos.throttled()).toBeGreaterThanOrEqual(1);
  });

  it('occasional 429 from Key Vault (reading the Cosmos key): the SDK retries and the exchange succeeds', async () => {
    fx.sandbox.setEmulatorFaults({ byName: { keyvault: { throttle: { every: 2, retryAfterSeconds: 0 } } } });
    const r = await exchange(COSMOS);
    expect(r.status).toBe(200);
    expect(fx.sandbox.keyVault.throttled()).toBeGreaterThanOrEqual(1);
  });

  it('latency on every upstream: the cold Cloud SQL exchange still succeeds and pays it', async () => {
    fx.sandbox.setEmulatorFaults({ all: { latencyMs: 30 } });
    const t = performance.now();
    const r = await exchange(CLOUDSQL_RESOURCE);
    expect(r.status).toBe(200);
    expect(performance.now() - t).toBeGreaterThanOrEqual(60); // at least STS and generateAccessToken
  });
});
