import {
  DAY_MS,
  plan,
  type GoogleKeyInfo,
  type Observed,
  type VaultVersionInfo,
} from '../../../shared/rotation/google-keys/plan';

const T = Date.parse('2026-03-01T00:00:00Z');
const S = { periodDays: 90, graceDays: 7 };
const key = (keyId: string, o: Partial<GoogleKeyInfo> = {}): GoogleKeyInfo => ({
  keyId,
  disabled: false,
  validAfter: 0,
  validBefore: Number.MAX_SAFE_INTEGER,
  ...o,
});
const ver = (version: string, keyId: string, createdOn: number, enabled = true): VaultVersionInfo => ({
  version,
  enabled,
  createdOn,
  tags: { keyId, created: new Date(createdOn).toISOString() },
});
const obs = (keys: GoogleKeyInfo[], versions: VaultVersionInfo[]): Observed => ({
  serviceAccount: 'sa@p.iam.gserviceaccount.com',
  secretName: 's',
  keys,
  versions,
});

describe('plan (pure)', () => {
  test('the current version is the last the broker stored (storedAt tag), whatever the list order and equal `created` seconds', () => {
    // Key Vault: no guaranteed list order, one-second `created` (azure-sdk-assets keyvault-secrets recordings).
    const second = T - 5 * DAY_MS;
    const stored = (version: string, keyId: string, ms: number): VaultVersionInfo => ({
      version,
      enabled: true,
      createdOn: second,
      tags: { keyId, created: new Date(second).toISOString(), storedAt: new Date(second + ms).toISOString() },
    });
    const a = stored('ffff', 'k-old', 1);
    const b = stored('0000', 'k-mid', 2);
    const c = stored('8888', 'k-new', 3);
    const keys = [key('k-old'), key('k-mid'), key('k-new')];
    for (const order of [
      [a, b, c],
      [c, b, a],
      [b, c, a],
      [c, a, b],
    ]) {
      const p = plan(obs(keys, order), S, T);
      expect(p.found.currentVersion).toBe('8888');
    }
  });

  test('never plans an 11th key: blocked when 10 tracked keys remain after cleanup', () => {
    const versions = Array.from({ length: 10 }, (_, i) => ver(`v${i}`, `k${i}`, T - (100 - i) * DAY_MS));
    const keys = versions.map((v) => key(v.tags.keyId!));
    // Every previous key is within … no: all are past grace but enabled → they get disabled, not deleted.
    const p = plan(obs(keys, versions), S, T);
    expect(p.status).toBe('blocked');
    expect(p.actions.some((a) => a.kind === 'rotate')).toBe(false);
    expect(p.reason).toMatch(/10 user-managed keys/);
  });

  test('retired disabled keys are deleted first, which makes room for the rotation', () => {
    const versions = Array.from({ length: 10 }, (_, i) => ver(`v${i}`, `k${i}`, T - (200 - i) * DAY_MS));
    const keys = versions.map((v, i) => key(v.tags.keyId!, { disabled: i < 9 }));
    const p = plan(obs(keys, versions), S, T);
    expect(p.status).toBe('ok');
    expect(p.actions.filter((a) => a.kind === 'delete-key')).toHaveLength(9);
    expect(p.actions.findIndex((a) => a.kind === 'rotate')).toBe(9);
    // Their versions go after the rotation; the current version stays enabled (its key is fine).
    expect(
      p.actions.filter((a) => a.kind === 'disable-version').map((a) => (a.kind === 'disable-version' ? a.version : '')),
    ).toEqual(Array.from({ length: 9 }, (_, i) => `v${i}`));
  });

  test('expired non-current keys are deleted; an expired current key is repaired', () => {
    const p = plan(
      obs(
        [key('old', { validBefore: T - 1 }), key('cur', { validBefore: T - 1 })],
        [ver('v1', 'old', T - 200 * DAY_MS), ver('v2', 'cur', T - 10 * DAY_MS)],
      ),
      S,
      T,
    );
    expect(p.actions[0]).toEqual({ kind: 'delete-key', keyId: 'old', why: 'expired' });
    expect(p.actions[1]).toMatchObject({ kind: 'rotate', why: 'repair', previousKeyId: 'cur' });
    expect(p.found.currentKeyHealth).toBe('expired');
  });

  test('an untracked current version (no keyId tag) is replaced', () => {
    const p = plan(obs([], [{ version: 'v1', enabled: true, createdOn: T, tags: {} }]), S, T);
    expect(p.found.currentKeyHealth).toBe('untracked');
    expect(p.actions).toEqual([
      expect.objectContaining({ kind: 'rotate', why: 'repair' }),
      expect.objectContaining({ kind: 'disable-version', version: 'v1' }),
    ]);
  });

  test('an operator-disabled previous key inside grace is left alone; the latest version is never disabled without a rotation', () => {
    const p = plan(
      obs([key('a', { disabled: true }), key('b')], [ver('v1', 'a', T - 95 * DAY_MS), ver('v2', 'b', T - 5 * DAY_MS)]),
      S,
      T,
    );
    expect(p.actions).toEqual([]);
  });
});
