import { SQL_LOGIN_SCOPE } from '../../../local/emulators/google/state';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { invoke, type Result } from '../../helpers/invoke';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const tokenHandler = testApp.handler('token');

/**
 * The Google token cache, through the real handler, on an injected clock: minimum remaining life,
 * refresh-ahead, expiry of impersonated and federated tokens, the lifetime cap and the size bound.
 */

const G = SANDBOX.google;
const RESOURCE = `cloudsql://${G.project}/${G.region}/${G.instance}/${G.database}`;

let sb: Sandbox;
let restoreEnv: () => void;
let gateway: string;
let reader: string;
let analyst: string;
let offsetMs = 0;
const clock = () => Date.now() + offsetMs;

beforeAll(async () => {
  sb = await startSandbox();
  restoreEnv = sb.applyEnv();
  sb.google.state.now = clock; // Google's expireTime follows the same clock as the broker
  gateway = await sb.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience });
  reader = await sb.entra.mint({
    oid: SANDBOX.readerObjectId,
    roles: ['Orders.Read'],
    aud: SANDBOX.subjectAudience,
    expiresIn: 7200,
  });
  analyst = await sb.entra.mint({
    oid: SANDBOX.readerObjectId,
    roles: ['Orders.Analyst'],
    aud: SANDBOX.subjectAudience,
    expiresIn: 7200,
  });
});

afterAll(async () => {
  restoreEnv();
  await sb.stop();
});

beforeEach(() => {
  offsetMs = 0;
  testApp.renew({ now: clock });
  sb.google.sts.resetCalls();
  sb.google.iamcredentials.resetCalls();
  mintsBefore = sb.google.iamcredentials.issued.length;
});

const exchange = (subject = reader, extra: Record<string, string> = {}): Promise<Result> =>
  invoke(tokenHandler, {
    headers: { authorization: `Bearer ${gateway}` },
    form: {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: subject,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: RESOURCE,
      ...extra,
    },
  });

// Impersonations that minted a login token (the connect details' Admin-API token is fetched once per instance besides).
const iamCalls = () =>
  sb.google.iamcredentials.issued.slice(mintsBefore).filter((r) => r.scopes.length === 1 && r.scopes[0] === SQL_LOGIN_SCOPE)
    .length;
let mintsBefore = 0;
const stsCalls = () => sb.google.sts.count('sts.token');
const advance = (seconds: number) => {
  offsetMs += seconds * 1000;
};

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

test('served from the cache while more than the minimum life is left; refreshed ahead in the background', async () => {
  const first = await exchange();
  expect(first.status).toBe(200);
  expect(iamCalls()).toBe(1);

  advance(200); // 700 s left: a plain hit
  const hit = await exchange();
  expect(hit.json.access_token).toBe(first.json.access_token);
  expect(hit.json.expires_in).toBeLessThanOrEqual(700);
  expect(hit.json.expires_in).toBeGreaterThan(690);
  expect(iamCalls()).toBe(1);

  advance(300); // 400 s left: inside the refresh-ahead window (min(600 s, 900/2 s)), above the 300 s minimum
  const stillOld = await exchange();
  expect(stillOld.json.access_token).toBe(first.json.access_token);
  await until(() => iamCalls() === 2);
  // IAM Credentials has answered; the refreshed token lands in the cache a moment later. Until then the old
  // token is still served, and no second refresh may start.
  let refreshed = await exchange();
  for (let i = 0; i < 100 && refreshed.json.access_token === first.json.access_token; i++) {
    await new Promise((r) => setTimeout(r, 10));
    refreshed = await exchange();
  }
  expect(refreshed.status).toBe(200);
  expect(refreshed.json.access_token).not.toBe(first.json.access_token);
  expect(iamCalls()).toBe(2);
  expect(stsCalls()).toBe(1);
});

test('below the minimum remaining life the entry is not served: a new token is fetched in the foreground', async () => {
  const first = await exchange();
  advance(601); // 299 s left < 300 s
  const second = await exchange();
  expect(second.status).toBe(200);
  expect(second.json.access_token).not.toBe(first.json.access_token);
  expect(iamCalls()).toBe(2);
  expect(testApp.app.google.service().stats().refreshes).toBe(0);
});

test('the federated token is cached per its own expiry', async () => {
  await exchange();
  await exchange(analyst);
  expect(stsCalls()).toBe(1);
  advance(3600); // the federated token (3600 s) and both impersonated tokens have expired
  const res = await exchange();
  expect(res.status).toBe(200);
  expect(stsCalls()).toBe(2);
});

test('a cached token is never served with more life than the caller may have', async () => {
  const long = await exchange(); // cap 900
  const short = await exchange(reader, { requested_lifetime: '420' });
  expect(short.status).toBe(200);
  expect(short.json.access_token).not.toBe(long.json.access_token);
  expect(short.json.expires_in).toBeLessThanOrEqual(420);
  expect(sb.google.iamcredentials.issued.at(-1)!.lifetimeSeconds).toBe(420);
  // The shorter token now serves callers that may have more (less life than asked, never more than the cap).
  const again = await exchange();
  expect(again.json.access_token).toBe(short.json.access_token);
  expect(iamCalls()).toBe(2);
  // 420 s left of 420 s: not inside its refresh window (min(600, 210) s, floored at the 300 s minimum).
  expect(testApp.app.google.service().stats().refreshes).toBe(0);
});

test('a lifetime at or below the minimum remaining life is never cached and does not displace a good entry', async () => {
  const good = await exchange();
  const a = await exchange(reader, { requested_lifetime: '60' });
  const b = await exchange(reader, { requested_lifetime: '60' });
  expect(a.json.expires_in).toBeLessThanOrEqual(60);
  expect(a.json.access_token).not.toBe(b.json.access_token);
  expect(iamCalls()).toBe(3);
  const stillGood = await exchange();
  expect(stillGood.json.access_token).toBe(good.json.access_token);
  expect(iamCalls()).toBe(3);
});

test('the cache is bounded (GOOGLE_TOKEN_CACHE_MAX_ENTRIES)', async () => {
  process.env.GOOGLE_TOKEN_CACHE_MAX_ENTRIES = '1';
  try {
    await exchange(reader);
    await exchange(analyst); // evicts the reader's token
    await exchange(reader);
    expect(iamCalls()).toBe(3);
    expect(testApp.app.google.service().stats().cachedTokens).toBe(1);
  } finally {
    delete process.env.GOOGLE_TOKEN_CACHE_MAX_ENTRIES;
  }
});

test('google-auth-library is not among the static imports of any function module (loaded lazily)', () => {
  const root = resolve(__dirname, '..', '..', '..');
  const seen = new Set<string>();
  const external = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/^import\s+(?!type\b)[^;]*?from\s+'([^']+)';/gms)) {
      const spec = m[1]!;
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec) + '.ts');
      else external.add(spec);
    }
  };
  for (const f of readdirSync(join(root, 'functions')).filter((f) => f.endsWith('.ts'))) visit(join(root, 'functions', f));
  expect(seen.size).toBeGreaterThan(3);
  expect([...external].filter((s) => s.startsWith('google-auth-library'))).toEqual([]);
});
