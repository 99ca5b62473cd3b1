import { captureLogs, invoke } from '../../helpers/invoke';
import { SANDBOX } from '../../../local/ids';
import { httpHandler } from '../../../shared/http/handler';
import { makeAdminRotate } from '../../../shared/rotation/endpoint';
import { registration as timerRegistration } from '../../../functions/rotation-timer';
import { InvocationContext, type Timer } from '@azure/functions';
import { registration as adminRegistration } from '../../../functions/admin-rotate';
import { assertHealthy, startRotationFixture, type RotationFixture } from './fixture';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const timerHandler = testApp.timer('rotationTimer');

let f: RotationFixture;
let logs: ReturnType<typeof captureLogs>;
let acct: { serviceAccount: string; secretName: string };

beforeAll(async () => {
  logs = captureLogs();
  f = await startRotationFixture({ BROKER_JWKS_COOLDOWN_SECONDS: '0' });
  acct = f.addAccount('admin-sa');
});
afterAll(async () => {
  logs?.restore();
  await f?.stop();
});

const handler = () =>
  httpHandler(
    testApp.app,
    'adminRotate',
    'problem',
    makeAdminRotate(() => f.deps({ managed: [acct] })),
    { adminAction: () => 'rotation.admin' },
  );
const gateway = () =>
  f.sb.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience, version: '1.0' });
// An admin token is for the broker itself (its own audience), from the admin tenant.
const admin = (roles: string[] = [SANDBOX.adminRole]) =>
  f.sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.clientAudience, roles });
const url = (q: string) => `http://127.0.0.1:7071/api/admin/rotate${q}`;

describe('POST /api/admin/rotate', () => {
  test('registrations: admin route and the timer on %ROTATION_SCHEDULE%', () => {
    expect(adminRegistration.options).toMatchObject({ route: 'admin/rotate', methods: ['POST'] });
    expect(timerRegistration.timer.schedule).toBe('%ROTATION_SCHEDULE%');
  });

  test('without the gateway token: 401; a non-gateway client: 403', async () => {
    const r = await invoke(handler(), { url: url('?dryRun=true'), form: { subject_token: await admin() } });
    expect(r.status).toBe(401);
    const other = await f.sb.entra.mint({ aud: SANDBOX.clientAudience, version: '1.0' });
    const r2 = await invoke(handler(), {
      url: url(''),
      headers: { authorization: `Bearer ${other}` },
      form: { subject_token: await admin() },
    });
    expect(r2.status).toBe(403);
    expect(r2.json.code).toBe('client_not_allowed');
  });

  test('a subject without the admin role: 403 role_required, nothing runs', async () => {
    const before = f.sb.googleKeys.iam.count();
    const r = await invoke(handler(), {
      url: url('?dryRun=false'),
      headers: { authorization: `Bearer ${await gateway()}` },
      form: { subject_token: await admin(['Orders.Read']) },
    });
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('role_required');
    expect(f.sb.googleKeys.iam.count()).toBe(before);
  });

  test('bad dryRun value or missing subject_token: 400', async () => {
    const g = await gateway();
    const bad = await invoke(handler(), {
      url: url('?dryRun=yes'),
      headers: { authorization: `Bearer ${g}` },
      form: { subject_token: await admin() },
    });
    expect(bad.status).toBe(400);
    const missing = await invoke(handler(), { url: url('?dryRun=true'), headers: { authorization: `Bearer ${g}` }, form: {} });
    expect(missing.status).toBe(400);
  });

  test('dry-run (the default) returns the plan and changes nothing; dryRun=false rotates', async () => {
    const g = await gateway();
    const dry = await invoke(handler(), {
      url: url(''),
      headers: { authorization: `Bearer ${g}` },
      form: { subject_token: await admin() },
    });
    expect(dry.status).toBe(200);
    expect(dry.json.dryRun).toBe(true);
    const accounts = dry.json.accounts as {
      serviceAccount: string;
      actions: { action: { kind: string; why: string }; outcome: string }[];
      reason: string;
    }[];
    expect(accounts[0]).toMatchObject({
      serviceAccount: acct.serviceAccount,
      actions: [{ action: { kind: 'rotate', why: 'initial' }, outcome: 'planned' }],
    });
    expect(f.sb.keyVault.versions(acct.secretName)).toHaveLength(0);

    const real = await invoke(handler(), {
      url: url('?dryRun=false'),
      headers: { authorization: `Bearer ${g}` },
      form: { subject_token: await admin() },
    });
    expect(real.status).toBe(200);
    expect(real.json.status).toBe('completed');
    await assertHealthy(f, acct);
    expect(real.text).not.toMatch(/PRIVATE KEY|private_key/);
  });

  test('while another run holds the lease: 409 with Retry-After; released, the next run goes', async () => {
    const g = await gateway();
    // "Another instance" holds the blob lease on the lock blob.
    const lockBlob = f.sb.storage!.admin().getContainerClient(SANDBOX.storage.container).getBlockBlobClient('rotation-lock');
    await lockBlob.upload('', 0).catch(() => undefined);
    const other = lockBlob.getBlobLeaseClient();
    await other.acquireLease(60);
    const r = await invoke(handler(), {
      url: url('?dryRun=false'),
      headers: { authorization: `Bearer ${g}` },
      form: { subject_token: await admin() },
    });
    expect(r.status).toBe(409);
    expect(r.json.reason).toBe('locked');
    expect(r.headers.get('retry-after')).toBe('60');
    // A dry run takes no lease: it still answers.
    const dry = await invoke(handler(), {
      url: url('?dryRun=true'),
      headers: { authorization: `Bearer ${g}` },
      form: { subject_token: await admin() },
    });
    expect(dry.status).toBe(200);
    await other.releaseLease();
    const ok = await invoke(handler(), {
      url: url('?dryRun=false'),
      headers: { authorization: `Bearer ${g}` },
      form: { subject_token: await admin() },
    });
    expect(ok.status).toBe(200);
    // No Key Vault lock secret is written any more.
    expect(f.sb.keyVault.versions('rotation-lock')).toHaveLength(0);
  });

  test('the admin token must be for the broker (its audience), not for an API behind APIM', async () => {
    const apiToken = await f.sb.entra.mint({
      oid: SANDBOX.readerObjectId,
      aud: SANDBOX.subjectAudience,
      roles: [SANDBOX.adminRole],
    });
    const r = await invoke(handler(), {
      url: url('?dryRun=true'),
      headers: { authorization: `Bearer ${await gateway()}` },
      form: { subject_token: apiToken },
    });
    expect(r.status).toBe(401);
    expect(r.json.code).toBe('token_audience_not_allowed');
  });

  test('the admin token must come from the one admin tenant', async () => {
    const saved = { t: process.env.BROKER_ALLOWED_TENANTS, a: process.env.BROKER_ADMIN_TENANT };
    const otherTenant = '11111111-2222-4333-8444-555555555555';
    try {
      // Two accepted tenants, and no BROKER_ADMIN_TENANT: ambiguous, refused as a configuration error naming it.
      process.env.BROKER_ALLOWED_TENANTS = `${SANDBOX.tenantId},${otherTenant}`;
      const amb = await invoke(handler(), {
        url: url('?dryRun=true'),
        headers: { authorization: `Bearer ${await gateway()}` },
        form: { subject_token: await admin() },
      });
      expect(amb.status).toBe(503);
      expect(amb.json.detail).toMatch(/BROKER_ADMIN_TENANT/);
      // The admin tenant is the other one: a token of the sandbox tenant (accepted elsewhere) is no admin token.
      process.env.BROKER_ADMIN_TENANT = otherTenant;
      const r = await invoke(handler(), {
        url: url('?dryRun=true'),
        headers: { authorization: `Bearer ${await gateway()}` },
        form: { subject_token: await admin() },
      });
      expect(r.status).toBe(403);
      expect(r.json).toMatchObject({ code: 'role_required', reason: 'admin_tenant' });
    } finally {
      process.env.BROKER_ALLOWED_TENANTS = saved.t;
      if (saved.a === undefined) delete process.env.BROKER_ADMIN_TENANT;
      else process.env.BROKER_ADMIN_TENANT = saved.a;
    }
  });

  test('the deny list wins on the admin endpoints: a denied admin with the role runs nothing (dry run or real)', async () => {
    const denied = '0b5e0000-0000-4000-8000-00000000dead';
    const blob = f.sb
      .storage!.admin()
      .getContainerClient(SANDBOX.storage.container)
      .getBlockBlobClient(SANDBOX.storage.policyBlob);
    const before = await blob.downloadToBuffer();
    const text = JSON.stringify({
      ...JSON.parse(before.toString('utf8')),
      deny: [{ tenantId: SANDBOX.tenantId, objectId: denied, reason: 'offboarded' }],
    });
    await blob.upload(text, Buffer.byteLength(text));
    testApp.renew();
    try {
      const tok = await f.sb.entra.mint({ oid: denied, aud: SANDBOX.clientAudience, roles: [SANDBOX.adminRole] });
      const start = logs.records.length;
      for (const q of ['?dryRun=true', '?dryRun=false']) {
        const r = await invoke(handler(), {
          url: url(q),
          headers: { authorization: `Bearer ${await gateway()}` },
          form: { subject_token: tok },
        });
        expect(r.status).toBe(403);
        expect(r.json.code).toBe('subject_denied');
      }
      expect(
        logs.records.slice(start).filter((l) => l.event === 'audit' && l.decision === 'deny' && l.reason === 'subject_denied'),
      ).toHaveLength(2);
    } finally {
      await blob.upload(before, before.length);
      testApp.renew();
    }
  });

  test('timer: a past-due tick runs; an unreachable Google STS is logged, never thrown', async () => {
    const saved = process.env.GOOGLE_STS_TOKEN_URL;
    process.env.GOOGLE_STS_TOKEN_URL = 'http://127.0.0.1:9/v1/token'; // closed port
    const start = logs.records.length;
    try {
      const timer: Timer = {
        isPastDue: true,
        schedule: { adjustForDST: false },
        scheduleStatus: { last: '', next: '', lastUpdated: '' },
      };
      await expect(timerHandler(timer, new InvocationContext({ functionName: 'rotationTimer' }))).resolves.toBeUndefined();
    } finally {
      if (saved === undefined) delete process.env.GOOGLE_STS_TOKEN_URL;
      else process.env.GOOGLE_STS_TOKEN_URL = saved;
    }
    const mine = logs.records.slice(start);
    expect(mine.some((l) => l.event === 'rotation.past-due')).toBe(true);
    expect(mine.some((l) => l.event === 'rotation.observe-failed' || l.event === 'rotation.error')).toBe(true);
  });
});
