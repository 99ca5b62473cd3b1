import type { AccessToken, TokenCredential } from '@azure/core-auth';
import { SecretClient } from '@azure/keyvault-secrets';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { settle } from '../../../local/emulators/harness';
import { keyVaultConfig } from '../../../shared/config/keyvault';
import { KeyVaultSecrets, createSecretClient, keyVaultErrorCode } from '../../../shared/keyvault/client';
import { BrokerError } from '../../../shared/errors';

let sb: Sandbox;
let restore: () => void;

beforeAll(async () => {
  sb = await startSandbox();
  restore = sb.applyEnv();
});
afterAll(async () => {
  restore?.();
  await sb?.stop();
});
beforeEach(() => {
  sb.keyVault.clearFaults();
  sb.keyVault.resetCalls();
});

const secrets = () => KeyVaultSecrets.fromSettings({ timeoutMs: 3000 });

/** A credential handing the SDK a fixed token (to present bad tokens through the real SDK). */
const fixed = (token: string): TokenCredential => ({
  getToken: async (): Promise<AccessToken> => ({ token, expiresOnTimestamp: Date.now() + 3600_000 }),
});

async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

describe('Key Vault emulator with the real SDK and managed identity', () => {
  test('the unauthenticated first request gets the bearer challenge, then the MI token for vault.azure.net is used', async () => {
    const res = await fetch(`${sb.keyVault.vaultUrl}/secrets/x?api-version=7.6`).catch((e: unknown) => e);
    // Node's fetch does not trust the sandbox CA: HTTPS is real.
    expect(res).not.toHaveProperty('status');
    expect(String((res as { cause?: { code?: string } }).cause?.code)).toMatch(/CERT|SIGNATURE|ISSUER/);

    const kv = secrets();
    const before = sb.msi.issued.length;
    await kv.set('challenge-probe', 'v1');
    const challenged = sb.keyVault.calls.filter((c) => c.route === 'secrets.set');
    expect(challenged.map((c) => c.status)).toEqual([401, 200]);
    const issued = sb.msi.issued.slice(before);
    expect(issued.map((i) => i.resource)).toContain('https://vault.azure.net');
  });

  test('set, get latest and by version, list versions with paging, update properties', async () => {
    const kv = secrets();
    const v1 = await kv.set('sa-key', 'one', { contentType: 'application/json', tags: { keyId: 'k1' } });
    const v2 = await kv.set('sa-key', 'two', { expiresOn: new Date(Date.now() + 86400_000), tags: { keyId: 'k2' } });
    expect(v1.version).toMatch(/^[0-9a-f]{32}$/);
    expect(v1.version).not.toBe(v2.version);

    expect((await kv.get('sa-key'))?.value).toBe('two');
    const old = await kv.get('sa-key', v1.version);
    expect(old?.value).toBe('one');
    expect(old?.contentType).toBe('application/json');
    expect(old?.tags).toEqual({ keyId: 'k1' });

    for (let i = 3; i <= 30; i++) await kv.set('sa-key', `v${i}`);
    sb.keyVault.resetCalls();
    const versions = await kv.versions('sa-key');
    expect(versions).toHaveLength(30);
    expect(sb.keyVault.count('secrets.versions')).toBeGreaterThanOrEqual(2); // followed nextLink

    const updated = await kv.update('sa-key', v2.version, {
      enabled: false,
      tags: { keyId: 'k2', state: 'retired' },
      contentType: 'text/plain',
    });
    expect(updated.enabled).toBe(false);
    const stored = sb.keyVault.read('sa-key', v2.version)!;
    expect(stored.enabled).toBe(false);
    expect(stored.tags).toEqual({ keyId: 'k2', state: 'retired' });
    expect(stored.contentType).toBe('text/plain');

    const listed: string[] = [];
    for await (const p of createSecretClient().listPropertiesOfSecrets()) listed.push(p.name);
    expect(listed).toEqual(expect.arrayContaining(['sa-key', 'challenge-probe']));
  });

  test('a disabled version answers 403 SecretDisabled; mapped to upstream_denied', async () => {
    const v = sb.keyVault.seed('disabled-one', 'x', { enabled: false });
    const raw = await rejectionOf(createSecretClient().getSecret('disabled-one', { version: v.version }));
    expect((raw as { statusCode?: number }).statusCode).toBe(403);
    expect(keyVaultErrorCode(raw)).toBe('SecretDisabled');
    const mapped = await rejectionOf(secrets().get('disabled-one', v.version));
    expect(mapped).toBeInstanceOf(BrokerError);
    expect((mapped as BrokerError).code).toBe('upstream_denied');
    expect((mapped as BrokerError).message).not.toContain('disabled-one');
  });

  test('unknown secret or version: 404 SecretNotFound from the SDK, undefined from the wrapper', async () => {
    const raw = await rejectionOf(createSecretClient().getSecret('nope'));
    expect((raw as { statusCode?: number }).statusCode).toBe(404);
    expect(keyVaultErrorCode(raw)).toBe('SecretNotFound');
    expect(await secrets().get('nope')).toBeUndefined();
    sb.keyVault.seed('exists', 'x');
    expect(await secrets().get('exists', '0'.repeat(32))).toBeUndefined();
    expect(await secrets().versions('nope')).toEqual([]);
  });

  test('listing versions of a never-created secret is 200 with an empty list (recorded), not 404', async () => {
    const pages: unknown[] = [];
    for await (const page of createSecretClient().listPropertiesOfSecretVersions('never-created').byPage()) pages.push(page);
    expect(pages.flat()).toEqual([]);
    const listed = sb.keyVault.calls.filter((c) => c.route === 'secrets.versions');
    expect(listed.at(-1)?.status).toBe(200);
  });

  test('versions listed shuffled, all in one created second: the broker orders them by its own storedAt tag', async () => {
    const frozen = Date.parse('2026-03-01T00:00:00.000Z');
    sb.keyVault.now = () => frozen; // every version gets the same `created` second
    sb.keyVault.versionOrder = 'shuffled';
    try {
      for (let i = 0; i < 8; i++) {
        sb.keyVault.seed('same-second', `v${i}`, { tags: { storedAt: new Date(frozen + i).toISOString(), n: String(i) } });
      }
      expect(new Set(sb.keyVault.versions('same-second').map((v) => v.created)).size).toBe(1);
      for (let round = 0; round < 3; round++) {
        const listed = await secrets().versions('same-second');
        expect(listed.map((v) => v.tags.n)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
      }
    } finally {
      sb.keyVault.now = Date.now;
      sb.keyVault.versionOrder = 'id';
    }
  });

  test('the emulator lists versions in version-id order (as recorded), not creation order', async () => {
    for (let i = 0; i < 6; i++) sb.keyVault.seed('id-order', `v${i}`);
    const ids: string[] = [];
    for await (const p of createSecretClient().listPropertiesOfSecretVersions('id-order')) ids.push(p.version!);
    expect(ids).toEqual([...ids].sort());
    expect(ids).toHaveLength(6);
  });

  test('bad tokens are refused with 401 and the challenge', async () => {
    const cfg = keyVaultConfig.get(0);
    const cases = {
      wrongAudience: await sb.entra.mint({ aud: 'https://management.azure.com', oid: sb.msi.objectId, version: '1.0' }),
      unknownKey: await sb.entra.mint({ aud: 'https://vault.azure.net', oid: sb.msi.objectId, key: sb.entra.strayKey() }),
      expired: await sb.entra.mint({ aud: 'https://vault.azure.net', oid: sb.msi.objectId, expiresIn: -3600 }),
      otherTenant: await sb.entra.mint({
        aud: 'https://vault.azure.net',
        oid: sb.msi.objectId,
        iss: 'https://sts.windows.net/00000000-0000-4000-8000-000000000000/',
      }),
      garbage: 'not-a-jwt',
    };
    for (const [label, token] of Object.entries(cases)) {
      const kv = new KeyVaultSecrets(createSecretClient({ credential: fixed(token), config: cfg }), 3000);
      const err = await rejectionOf(kv.get('exists'));
      expect([label, (err as BrokerError).code]).toEqual([label, 'upstream_denied']);
      expect(((err as BrokerError).cause as { statusCode?: number }).statusCode).toBe(401);
    }
  });

  test('RBAC: a reader may get but not set; an unknown identity may do nothing', async () => {
    const cfg = keyVaultConfig.get(0);
    const readerOid = '0b5e0000-0000-4000-8000-0000000000a1';
    sb.keyVault.grant(readerOid, 'reader');
    const reader = new KeyVaultSecrets(
      createSecretClient({
        credential: fixed(await sb.entra.mint({ aud: 'https://vault.azure.net', oid: readerOid })),
        config: cfg,
      }),
      3000,
    );
    expect((await reader.get('exists'))?.value).toBe('x');
    const denied = await rejectionOf(reader.set('exists', 'y'));
    expect((denied as BrokerError).code).toBe('upstream_denied');
    expect(keyVaultErrorCode((denied as BrokerError).cause)).toBe('ForbiddenByRbac');
    const stranger = new KeyVaultSecrets(
      createSecretClient({ credential: fixed(await sb.entra.mint({ aud: 'https://vault.azure.net' })), config: cfg }),
      3000,
    );
    expect(((await rejectionOf(stranger.get('exists'))) as BrokerError).code).toBe('upstream_denied');
  });

  test('vault down → upstream_unavailable with Retry-After; 5xx → upstream_error; hang → upstream_timeout', async () => {
    sb.keyVault.seed('steady', 'x');
    const cfg = { ...keyVaultConfig.get(0), maxRetries: 0 };
    const kv = new KeyVaultSecrets(createSecretClient({ config: cfg }), 1000);
    expect((await kv.get('steady'))?.value).toBe('x');

    sb.keyVault.inject({ fault: { kind: 'status', status: 500 }, times: 1 });
    const e500 = (await rejectionOf(kv.get('steady'))) as BrokerError;
    expect(e500.code).toBe('upstream_error');

    sb.keyVault.inject({ fault: { kind: 'hang' }, times: 1 });
    const hang = (await rejectionOf(kv.get('steady'))) as BrokerError;
    expect(hang.code).toBe('upstream_timeout');

    sb.keyVault.inject({ fault: { kind: 'down' } });
    await settle(sb.keyVault);
    const down = (await rejectionOf(kv.get('steady'))) as BrokerError;
    expect(down.code).toBe('upstream_unavailable');
    expect(down.retryAfterSeconds).toBeGreaterThan(0);
    sb.keyVault.clearFaults();
    await settle(sb.keyVault);
    expect((await kv.get('steady'))?.value).toBe('x');
  });

  test('readiness check: ok against the sandbox vault, fail (code only) when it is down', async () => {
    const { checkKeyVault } = await import('../../../shared/keyvault/health');
    expect(await checkKeyVault()).toEqual({ status: 'ok' });
    await new Promise((r) => setTimeout(r, 0));
    const saved = process.env.KEY_VAULT_URL;
    process.env.KEY_VAULT_URL = saved + '/'; // a different cache key, same vault
    process.env.KEY_VAULT_MAX_RETRIES = '0';
    sb.keyVault.inject({ fault: { kind: 'down' } });
    await settle(sb.keyVault);
    try {
      expect(await checkKeyVault()).toEqual({ status: 'fail', detail: 'upstream_unavailable' });
    } finally {
      process.env.KEY_VAULT_URL = saved;
      delete process.env.KEY_VAULT_MAX_RETRIES;
      sb.keyVault.clearFaults();
      await settle(sb.keyVault);
    }
  });

  test('the CA setting is refused for a non-loopback vault', () => {
    expect(() => createSecretClient({ config: { ...keyVaultConfig.get(0), vaultUrl: 'https://prod.vault.azure.net' } })).toThrow(
      BrokerError,
    );
    const c = createSecretClient({
      config: { ...keyVaultConfig.get(0), vaultUrl: 'https://prod.vault.azure.net', caFile: undefined },
    });
    expect(c).toBeInstanceOf(SecretClient);
  });
});
