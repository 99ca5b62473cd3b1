import { createSaKeySource, KeyVaultKeySource } from '../../../shared/google/sa-key';
import { googleConfig } from '../../../shared/config/google';
import { captureLogs } from '../../helpers/invoke';
import { assertHealthy, startRotationFixture, type RotationFixture } from './fixture';

let f: RotationFixture;
beforeAll(async () => {
  f = await startRotationFixture();
});
afterAll(async () => {
  await f?.stop();
});

describe('sa-key source credential (Key Vault → JWT-bearer → Google token) across rotations', () => {
  test('follows the rotated key, survives a Key Vault outage with the cached key, and never uses a retired key', async () => {
    const acct = f.addAccount('broker-src');
    const managed = [acct];
    await f.run({ managed });
    const k0 = await assertHealthy(f, acct);
    const source = new KeyVaultKeySource({
      vault: f.vault,
      secretName: acct.secretName,
      tokenUrl: f.sb.env.GOOGLE_OAUTH_TOKEN_URL!,
      timeoutMs: 3000,
      now: f.clock.now,
    });
    const principalOf = async () => f.sb.googleKeys.state.lookupToken((await source.fetchSourceToken()).token)?.principal;

    expect(await principalOf()).toBe(acct.serviceAccount);
    expect(f.sb.googleKeys.oauth.keysUsed.at(-1)).toBe(k0);

    // Rotation at day 90: the next fetch uses the new key.
    f.clock.advanceDays(90);
    await f.run({ managed });
    const k1 = await assertHealthy(f, acct);
    expect(await principalOf()).toBe(acct.serviceAccount);
    expect(f.sb.googleKeys.oauth.keysUsed.at(-1)).toBe(k1);

    // Key Vault down: the cached (current) key keeps working.
    f.sb.keyVault.inject({ fault: { kind: 'status', status: 503 } });
    try {
      expect(await principalOf()).toBe(acct.serviceAccount);
    } finally {
      f.sb.keyVault.clearFaults();
    }

    // Through grace, disable and delete of the old key, fetches keep working on the new one.
    for (const d of [7, 1]) {
      f.clock.advanceDays(d);
      await f.run({ managed });
      expect(await principalOf()).toBe(acct.serviceAccount);
      expect(f.sb.googleKeys.oauth.keysUsed.at(-1)).toBe(k1);
    }
    expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount).map((k) => k.keyId)).toEqual([k1]);
  });

  test('the source built from the settings logs its fallback to the cached key (no request correlation id)', async () => {
    const acct = f.addAccount('broker-src-log');
    await f.run({ managed: [acct] });
    const logs = captureLogs();
    const saved = { mode: process.env.GOOGLE_AUTH_MODE, secret: process.env.GOOGLE_SA_KEY_SECRET };
    process.env.GOOGLE_AUTH_MODE = 'sa-key';
    process.env.GOOGLE_SA_KEY_SECRET = acct.secretName;
    try {
      const source = createSaKeySource({
        config: googleConfig.get(0),
        timeoutMs: 3000,
        now: f.clock.now,
        identities: f.app().identities,
        logger: (fields) => f.app().logger(fields),
      });
      await source.fetchSourceToken();
      f.sb.keyVault.inject({ fault: { kind: 'status', status: 503 } });
      try {
        await source.fetchSourceToken();
      } finally {
        f.sb.keyVault.clearFaults();
      }
      const line = logs.records.find((r) => r.event === 'sa-key.cached');
      expect(line).toMatchObject({ level: 'warn', fn: 'google.sa-key' });
      expect(line?.correlationId).toBeUndefined();
    } finally {
      logs.restore();
      for (const [k, v] of [
        ['GOOGLE_AUTH_MODE', saved.mode],
        ['GOOGLE_SA_KEY_SECRET', saved.secret],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  test('no secret in Key Vault: a clear misconfiguration error', async () => {
    const source = new KeyVaultKeySource({
      vault: f.vault,
      secretName: 'absent-secret',
      tokenUrl: f.sb.env.GOOGLE_OAUTH_TOKEN_URL!,
      timeoutMs: 3000,
      now: f.clock.now,
    });
    await expect(source.fetchSourceToken()).rejects.toMatchObject({ code: 'target_misconfigured' });
  });
});
