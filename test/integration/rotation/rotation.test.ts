import { captureLogs } from '../../helpers/invoke';
import { PENDING_MAX_DAYS, TAG, pendingSecretName } from '../../../shared/rotation/google-keys/plan';
import { assertHealthy, keyWorks, never, startRotationFixture, type RotationFixture, type Step } from './fixture';

let f: RotationFixture;
let logs: ReturnType<typeof captureLogs>;

beforeAll(async () => {
  logs = captureLogs();
  f = await startRotationFixture();
});
afterAll(async () => {
  logs?.restore();
  await f?.stop();
});

const creates = () => f.sb.googleKeys.iam.count('iam.keys.create');

describe('rotation over the sandbox (real Key Vault SDK, IAM keys API, OAuth token endpoint)', () => {
  test('lifecycle: initial key; nothing before 90 days; rotation at 90; previous alive through grace, then disabled, then deleted', async () => {
    const acct = f.addAccount('lifecycle-sa');
    const managed = [acct];

    // Day 0: no key yet → initial rotation.
    const r0 = await f.run({ managed });
    expect(r0.status).toBe('completed');
    expect(r0.accounts[0]!.actions.map((a) => [a.action.kind, a.outcome])).toEqual([['rotate', 'done']]);
    const k0 = await assertHealthy(f, acct);
    const v0 = (await f.vault.get(acct.secretName))!;
    expect(v0.contentType).toBe('application/json');
    expect(v0.tags).toMatchObject({
      [TAG.keyId]: k0,
      [TAG.serviceAccount]: acct.serviceAccount,
      [TAG.period]: '90',
      [TAG.previousKeyId]: 'none',
    });
    expect(v0.expiresOn!.getTime()).toBe(f.clock.now() + 97 * 86_400_000 - (f.clock.now() % 1000));

    // Day 89: nothing to do.
    f.clock.advanceDays(89);
    const before = creates();
    const r89 = await f.run({ managed });
    expect(r89.accounts[0]!.actions).toEqual([]);
    expect(creates()).toBe(before);
    expect(f.sb.keyVault.versions(acct.secretName)).toHaveLength(1);

    // Day 90: rotate; the previous key keeps working.
    f.clock.advanceDays(1);
    const r90 = await f.run({ managed });
    expect(r90.accounts[0]!.actions.map((a) => [a.action.kind, a.outcome])).toEqual([['rotate', 'done']]);
    const k1 = await assertHealthy(f, acct);
    expect(k1).not.toBe(k0);
    expect((await f.vault.get(acct.secretName))!.tags[TAG.previousKeyId]).toBe(k0);
    const oldJson = (await f.vault.get(acct.secretName, v0.version))!.value;

    // Day 96 (inside grace): previous key alive; runs do nothing.
    f.clock.advanceDays(6);
    expect((await f.run({ managed })).accounts[0]!.actions).toEqual([]);
    expect(await keyWorks(f, oldJson)).toBe(true);

    // Day 97: grace over → previous key disabled (not yet deleted), its Key Vault version still there.
    f.clock.advanceDays(1);
    const r97 = await f.run({ managed });
    expect(r97.accounts[0]!.actions.map((a) => [a.action.kind, a.outcome])).toEqual([['disable-key', 'done']]);
    expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount).find((k) => k.keyId === k0)?.disabled).toBe(true);
    expect(await keyWorks(f, oldJson)).toBe(false);
    await assertHealthy(f, acct);

    // Day 98 (a later run): previous key deleted, its Key Vault version disabled.
    f.clock.advanceDays(1);
    const r98 = await f.run({ managed });
    expect(r98.accounts[0]!.actions.map((a) => [a.action.kind, a.outcome])).toEqual([
      ['delete-key', 'done'],
      ['disable-version', 'done'],
    ]);
    expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount).map((k) => k.keyId)).toEqual([k1]);
    expect(f.sb.keyVault.read(acct.secretName, v0.version)!.enabled).toBe(false);
    await assertHealthy(f, acct);

    // Idempotent: another run right away does nothing.
    expect((await f.run({ managed })).accounts[0]!.actions).toEqual([]);
  });

  const steps: Step[] = ['created', 'proved', 'stored', 'disabled-key', 'deleted-key', 'disabled-version'];
  test.each(steps)(
    'a crash after step "%s", then a re-run, leaves one working current key, no orphans, ≤ 10 keys',
    async (step) => {
      const acct = f.addAccount(`crash-${step}`);
      const managed = [acct];
      let crashed = false;
      let signalCrash: () => void = () => undefined;
      const crashSignal = new Promise<'crashed'>((r) => (signalCrash = () => r('crashed')));
      const crashAt = (s: Step) => {
        if (!crashed && s === step) {
          crashed = true;
          signalCrash();
          return never(); // the process "dies": the run never continues, its lease is never released
        }
        return undefined;
      };
      // Timeline that passes through every step: initial, rotation, disable, delete (+ version disable).
      for (const day of [0, 90, 7, 1]) {
        f.clock.advanceDays(day);
        const run = f.run({ managed, afterStep: crashAt }).then(() => 'done' as const);
        const outcome = crashed ? await run : await Promise.race([run, crashSignal]);
        if (outcome === 'crashed') {
          // Another run while the dead run's lease is live is refused …
          expect((await f.run({ managed })).status).toBe('locked');
          // … and once the dead run's lease ends (it is never renewed again: the Blob service lets it lapse), a re-run
          // finishes the job.
          await f.expireLease();
          expect((await f.run({ managed })).status).toBe('completed');
        }
        await assertHealthy(f, acct);
      }
      expect(crashed).toBe(true);
      expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount).length).toBeLessThanOrEqual(2);
    },
  );

  test('a deleted current key is repaired at once, loudly', async () => {
    const acct = f.addAccount('repair-sa');
    const managed = [acct];
    await f.run({ managed });
    const k0 = await assertHealthy(f, acct);
    const v0 = (await f.vault.get(acct.secretName))!.version;
    f.clock.advanceDays(3);
    const keys = f.sb.googleKeys.state.keys.get(acct.serviceAccount)!;
    keys.splice(
      keys.findIndex((k) => k.keyId === k0),
      1,
    ); // deleted in Google behind our back
    const start = logs.records.length;
    const r = await f.run({ managed });
    const a = r.accounts[0]!;
    expect(a.found.currentKeyHealth).toBe('missing');
    expect(a.actions.map((x) => [x.action.kind, x.outcome])).toEqual([
      ['rotate', 'done'],
      ['disable-version', 'done'],
    ]);
    expect(a.actions[0]!.action).toMatchObject({ why: 'repair' });
    const k1 = await assertHealthy(f, acct);
    expect(k1).not.toBe(k0);
    expect(f.sb.keyVault.read(acct.secretName, v0)!.enabled).toBe(false);
    expect(logs.records.slice(start).some((l) => l.level === 'error' && l.event === 'rotation.repair')).toBe(true);
  });

  test('a disabled current key is repaired too', async () => {
    const acct = f.addAccount('repair2-sa');
    await f.run({ managed: [acct] });
    const k0 = await assertHealthy(f, acct);
    f.sb.googleKeys.iam.userKeys(acct.serviceAccount).find((k) => k.keyId === k0)!.disabled = true;
    const r = await f.run({ managed: [acct] });
    expect(r.accounts[0]!.found.currentKeyHealth).toBe('disabled');
    expect(await assertHealthy(f, acct)).not.toBe(k0);
  });

  test('two concurrent runs create one key', async () => {
    const acct = f.addAccount('race-sa');
    const managed = [acct];
    await f.run({ managed });
    f.clock.advanceDays(90);
    const before = creates();
    // Both take the blob lease at once (two instances): the Blob service grants it to exactly one.
    const [a, b] = await Promise.all([f.run({ managed }), f.run({ managed })]);
    expect([a.status, b.status].sort()).toEqual(['completed', 'locked']);
    expect(creates() - before).toBe(1);
    await assertHealthy(f, acct);
    expect(f.sb.keyVault.versions(acct.secretName)).toHaveLength(2);
    // The winner released the lease at its end: the next run takes it (nothing is due, nothing created).
    expect((await f.run({ managed })).status).toBe('completed');
    expect(creates() - before).toBe(1);
  });

  test('dry-run reports the plan and changes nothing', async () => {
    const acct = f.addAccount('dry-sa');
    const managed = [acct];
    const dry0 = await f.run({ managed }, true);
    expect(dry0.dryRun).toBe(true);
    expect(dry0.accounts[0]!.actions).toEqual([
      { action: expect.objectContaining({ kind: 'rotate', why: 'initial' }), outcome: 'planned' },
    ]);
    expect(f.sb.keyVault.versions(acct.secretName)).toHaveLength(0);
    expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount)).toHaveLength(0);

    await f.run({ managed });
    f.clock.advanceDays(90);
    const kvWrites = () => f.sb.keyVault.count('secrets.set') + f.sb.keyVault.count('secrets.update');
    const iamWrites = () =>
      ['iam.keys.create', 'iam.keys.delete', 'iam.keys.toggle'].reduce((n, r) => n + f.sb.googleKeys.iam.count(r), 0);
    const [kv, iam] = [kvWrites(), iamWrites()];
    const dry = await f.run({ managed }, true);
    expect(dry.accounts[0]!.actions.map((a) => [a.action.kind, a.outcome])).toEqual([['rotate', 'planned']]);
    expect(dry.accounts[0]!.reason).toMatch(/90 days old/);
    expect(kvWrites()).toBe(kv);
    expect(iamWrites()).toBe(iam);
    // The lease lives in Blob Storage: no Key Vault lock secret is ever written.
    expect(f.sb.keyVault.versions('rotation-lock')).toHaveLength(0);
  });

  test('orphans (created but never stored) are deleted before anything else; the cap is never exceeded', async () => {
    const acct = f.addAccount('orphan-sa');
    const managed = [acct];
    await f.run({ managed });
    const token = await f.federatedToken();
    const url = `${f.sb.googleKeys.iam.endpoint}/v1/projects/-/serviceAccounts/${acct.serviceAccount}/keys`;
    for (let i = 0; i < 9; i++) {
      const res = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: '{}',
      });
      expect(res.status).toBe(200);
    }
    expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount)).toHaveLength(10);
    f.clock.advanceDays(90);
    const r = await f.run({ managed });
    const kinds = r.accounts[0]!.actions.map((a) => a.action.kind);
    expect(kinds.slice(0, 9)).toEqual(Array(9).fill('delete-key'));
    expect(kinds[9]).toBe('rotate');
    await assertHealthy(f, acct);
    expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount)).toHaveLength(2);
  });

  test('a new key that Google keeps refusing is never stored as current: pending, retried, deleted after PENDING_MAX_DAYS', async () => {
    const acct = f.addAccount('refused-sa');
    const managed = [acct];
    await f.run({ managed });
    const k0 = await assertHealthy(f, acct);
    f.clock.advanceDays(90);
    f.sb.googleKeys.oauth.inject({
      fault: { kind: 'status', status: 400, body: { error: 'invalid_grant', error_description: 'Invalid JWT Signature.' } },
    });
    try {
      const r = await f.run({ managed });
      expect(r.status).toBe('completed');
      expect(r.accounts[0]!.actions[0]).toMatchObject({ action: { kind: 'rotate' }, outcome: 'pending' });
      expect(f.sb.keyVault.versions(acct.secretName)).toHaveLength(1);
      f.clock.advanceDays(1);
      expect((await f.run({ managed })).accounts[0]!.actions[0]).toMatchObject({
        action: { kind: 'promote' },
        outcome: 'pending',
      });
      f.clock.advanceDays(PENDING_MAX_DAYS);
      const gaveUp = await f.run({ managed });
      expect(gaveUp.status).toBe('partial');
      expect(gaveUp.accounts[0]!.actions[0]).toMatchObject({
        action: { kind: 'promote' },
        outcome: 'failed',
        error: 'upstream_denied',
      });
    } finally {
      f.sb.googleKeys.oauth.clearFaults();
    }
    expect(await assertHealthy(f, acct)).toBe(k0);
    expect(f.sb.keyVault.versions(acct.secretName)).toHaveLength(1);
    expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount).map((k) => k.keyId)).toEqual([k0]);
  });

  describe('new keys are not usable at once (Google: a minute or more)', () => {
    afterEach(() => {
      f.sb.googleKeys.state.keyPropagationMs = 0;
    });

    test('a delay within the proving window: proven in the same run', async () => {
      const acct = f.addAccount('slowkey-sa');
      const managed = [acct];
      f.sb.googleKeys.state.keyPropagationMs = 10_000; // < 30 s of backoff
      const r = await f.run({ managed });
      expect(r.accounts[0]!.actions[0]).toMatchObject({ action: { kind: 'rotate' }, outcome: 'done' });
      await assertHealthy(f, acct);
    });

    test("a delay longer than the run's window: nothing deleted, consumers keep the working key; the next run promotes", async () => {
      const acct = f.addAccount('laggy-sa');
      const managed = [acct];
      await f.run({ managed });
      const k0 = await assertHealthy(f, acct);
      f.clock.advanceDays(90);
      f.sb.googleKeys.state.keyPropagationMs = 5 * 60_000; // five minutes: beyond the 30 s window
      const r = await f.run({ managed });
      expect(r.status).toBe('completed');
      const rotate = r.accounts[0]!.actions.find((a) => a.action.kind === 'rotate')!;
      expect(rotate.outcome).toBe('pending');
      const k1 = rotate.newKeyId!;
      // both keys still exist at Google; consumers still read k0, which works; the new key is not yet usable
      expect(
        f.sb.googleKeys.iam
          .userKeys(acct.serviceAccount)
          .map((k) => k.keyId)
          .sort(),
      ).toEqual([k0, k1].sort());
      expect(await assertHealthy(f, acct)).toBe(k0);
      expect(f.sb.keyVault.versions(acct.secretName)).toHaveLength(1);
      const pending = await f.vault.get(pendingSecretName(acct.secretName));
      expect(pending?.tags?.[TAG.keyId]).toBe(k1);
      expect(await keyWorks(f, pending!.value)).toBe(false);
      // a dry run now plans the promotion, not a second key
      expect((await f.run({ managed }, true)).accounts[0]!.actions.map((a) => a.action.kind)).toEqual(['promote']);

      f.clock.advanceSeconds(5 * 60);
      const next = await f.run({ managed });
      expect(next.accounts[0]!.actions[0]).toMatchObject({ action: { kind: 'promote' }, outcome: 'done', newKeyId: k1 });
      expect(await assertHealthy(f, acct)).toBe(k1);
      expect(f.sb.keyVault.versions(acct.secretName)).toHaveLength(2);
      // the promoted pending version is disabled; a later run does not promote again
      const after = await f.run({ managed });
      expect(after.accounts[0]!.actions.map((a) => a.action.kind)).not.toContain('promote');
      expect(
        f.sb.googleKeys.iam
          .userKeys(acct.serviceAccount)
          .map((k) => k.keyId)
          .sort(),
      ).toEqual([k0, k1].sort());
    });

    test('the OAuth emulator refuses a key until it has propagated (a lax emulator fails this)', async () => {
      const acct = f.addAccount('fresh-sa');
      f.sb.googleKeys.state.keyPropagationMs = 60_000;
      const created = await f.deps().iam.create(acct.serviceAccount);
      expect(await keyWorks(f, created.keyJson)).toBe(false);
      f.clock.advanceSeconds(59);
      expect(await keyWorks(f, created.keyJson)).toBe(false);
      f.clock.advanceSeconds(1);
      expect(await keyWorks(f, created.keyJson)).toBe(true);
    });
  });

  test('Key Vault failing at the store step: the run reports it, keeps the current key, and the next run cleans up and catches up', async () => {
    const acct = f.addAccount('kvdown-sa');
    const managed = [acct];
    await f.run({ managed });
    const k0 = await assertHealthy(f, acct);
    f.clock.advanceDays(90);
    const r = await f.run({
      managed,
      afterStep: (s) => {
        if (s === 'proved') f.sb.keyVault.inject({ fault: { kind: 'status', status: 503 }, routes: ['secrets.set'], times: 3 });
      },
    });
    f.sb.keyVault.clearFaults();
    expect(r.status).toBe('partial');
    expect(r.accounts[0]!.actions[0]).toMatchObject({ outcome: 'failed', error: 'upstream_unavailable' });
    expect(await f.vault.get(acct.secretName).then((v) => v?.tags[TAG.keyId])).toBe(k0);
    expect(await keyWorks(f, (await f.vault.get(acct.secretName))!.value)).toBe(true);
    expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount)).toHaveLength(2); // the unstored key: an orphan

    const next = await f.run({ managed });
    expect(
      next.accounts[0]!.actions.map((a) => [a.action.kind, a.action.kind === 'delete-key' ? a.action.why : '', a.outcome]),
    ).toEqual([
      ['delete-key', 'orphan', 'done'],
      ['rotate', '', 'done'],
    ]);
    expect(await assertHealthy(f, acct)).not.toBe(k0);
  });

  test('org policy forbids key creation: the account reports key_creation_disabled, the current key stays, nothing is left behind', async () => {
    const acct = f.addAccount('orgpolicy-sa');
    const managed = [acct];
    await f.run({ managed });
    const k0 = await assertHealthy(f, acct);
    f.clock.advanceDays(90);
    f.sb.googleKeys.iam.setKeyCreationDisabled(true);
    try {
      const r = await f.run({ managed });
      expect(r.status).toBe('partial');
      expect(r.accounts[0]).toMatchObject({ error: 'key_creation_disabled' });
      expect(r.accounts[0]!.actions[0]).toMatchObject({
        action: { kind: 'rotate' },
        outcome: 'failed',
        error: 'key_creation_disabled',
      });
    } finally {
      f.sb.googleKeys.iam.setKeyCreationDisabled(false);
    }
    expect(await assertHealthy(f, acct)).toBe(k0);
  });

  test('an unknown or foreign account (403 under projects/-/) is reported as refused; the other accounts rotate; a crashed run re-runs correctly', async () => {
    const good = f.addAccount('crash-sa');
    const unknown = { serviceAccount: 'deleted-sa@sandbox-project.iam.gserviceaccount.com', secretName: 'deleted-sa-key' };
    const foreignSa = 'foreign-sa@sandbox-project.iam.gserviceaccount.com';
    f.sb.googleKeys.state.addServiceAccount(foreignSa); // exists, but the rotation principal holds no grant on it
    const foreign = { serviceAccount: foreignSa, secretName: 'foreign-sa-key' };
    const managed = [unknown, foreign, good];
    // crash right after the key was created (before prove/store): an orphan is left in Google
    const crashed = await f
      .run({
        managed,
        afterStep: (s, sa) => {
          if (s === 'created' && sa === good.serviceAccount) throw new Error('crash');
        },
      })
      .catch((e: unknown) => e);
    expect(crashed).not.toBeInstanceOf(Error);
    expect(f.sb.googleKeys.iam.userKeys(good.serviceAccount)).toHaveLength(1);
    const r = await f.run({ managed });
    expect(r.status).toBe('partial');
    expect(r.accounts.map((a) => [a.serviceAccount, a.status, a.error])).toEqual([
      [unknown.serviceAccount, 'blocked', 'upstream_denied'],
      [foreign.serviceAccount, 'blocked', 'upstream_denied'],
      [good.serviceAccount, 'ok', undefined],
    ]);
    expect(r.accounts[2]!.actions.map((a) => [a.action.kind, a.outcome])).toEqual([
      ['delete-key', 'done'],
      ['rotate', 'done'],
    ]);
    await assertHealthy(f, good);
    expect(f.sb.googleKeys.iam.userKeys(foreignSa)).toHaveLength(0);
  });

  test('Key Vault down under the lease: the account is reported blocked (mapped error), nothing changes', async () => {
    const acct = f.addAccount('kvdown2-sa');
    f.sb.keyVault.inject({ fault: { kind: 'status', status: 503 } });
    const before = creates();
    try {
      const r = await f.run({ managed: [acct] });
      expect(r.status).toBe('partial');
      expect(r.accounts[0]).toMatchObject({ status: 'blocked', error: 'upstream_unavailable' });
    } finally {
      f.sb.keyVault.clearFaults();
    }
    expect(creates()).toBe(before);
  });

  test('the lease store unreachable: the run fails cleanly (mapped error) before anything changes', async () => {
    const acct = f.addAccount('lockdown-sa');
    const saved = process.env.ROTATION_LOCK_URL;
    process.env.ROTATION_LOCK_URL = 'https://127.0.0.1:9/devstoreaccount1/policy/rotation-lock'; // nothing listens
    const before = creates();
    try {
      await expect(f.run({ managed: [acct] })).rejects.toMatchObject({ code: 'upstream_unavailable' });
    } finally {
      if (saved === undefined) delete process.env.ROTATION_LOCK_URL;
      else process.env.ROTATION_LOCK_URL = saved;
    }
    expect(creates()).toBe(before);
    expect(f.sb.keyVault.versions(acct.secretName)).toHaveLength(0);
  });

  test('no key material reaches a log line', () => {
    const text = JSON.stringify(logs.records);
    expect(text).not.toMatch(/PRIVATE KEY/);
    expect(text).not.toMatch(/privateKeyData|private_key"/);
    expect(text).not.toMatch(/ya29\.[A-Za-z0-9_-]{10}/);
    expect(logs.records.some((l) => l.action === 'rotation.store-key')).toBe(true);
  });
});
