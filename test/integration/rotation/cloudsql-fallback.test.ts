import { invoke } from '../../helpers/invoke';
import { SANDBOX } from '../../../local/ids';
import { assertHealthy, startRotationFixture, type RotationFixture } from './fixture';
import { TestApp } from '../../helpers/app';

const testApp = new TestApp();
const token = testApp.handler('token');

/**
 * The Cloud SQL exchange's fallback mode (GOOGLE_AUTH_MODE=sa-key) reads the key the rotation timer keeps
 * in Key Vault, and keeps issuing tokens across a rotation, its grace period and the old key's deletion.
 */
let f: RotationFixture;
let acct: { serviceAccount: string; secretName: string };
beforeAll(async () => {
  f = await startRotationFixture();
  acct = f.addAccount('broker-fallback');
  process.env.GOOGLE_AUTH_MODE = 'sa-key';
  process.env.GOOGLE_SA_KEY_SECRET = acct.secretName;
  // The key's account may impersonate the database identity (roles/iam.serviceAccountTokenCreator).
  f.sb.googleKeys.state.allowImpersonation(SANDBOX.google.readerServiceAccount, `serviceAccount:${acct.serviceAccount}`);
});
afterAll(async () => {
  await testApp.close();
  delete process.env.GOOGLE_AUTH_MODE;
  delete process.env.GOOGLE_SA_KEY_SECRET;
  await f?.stop();
});

async function exchange() {
  testApp.renew({ now: f.clock.now }); // no cached token: every call goes through the key
  const gateway = await f.sb.entra.mint({ oid: SANDBOX.gatewayObjectId, aud: SANDBOX.clientAudience, version: '1.0' });
  const caller = await f.sb.entra.mint({ oid: SANDBOX.readerObjectId, aud: SANDBOX.subjectAudience, roles: ['Orders.Read'] });
  return invoke(token, {
    headers: { authorization: `Bearer ${gateway}` },
    form: {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      subject_token: caller,
      resource: `cloudsql://${SANDBOX.google.project}/${SANDBOX.google.region}/${SANDBOX.google.instance}/${SANDBOX.google.database}`,
    },
  });
}

test('before the first rotation there is no key: a clear 5xx, never a 500', async () => {
  const res = await exchange();
  expect([502, 503]).toContain(res.status);
});

test('sa-key mode issues Cloud SQL tokens with the rotated key, across rotation, grace and deletion', async () => {
  const managed = [acct];
  await f.run({ managed });
  const k0 = await assertHealthy(f, acct);
  const stsBefore = f.sb.google.sts.count('sts.token'); // the rotation itself runs keyless (its own Google identity)
  const first = await exchange();
  expect(first.status).toBe(200);
  expect(first.json.service_account).toBe(SANDBOX.google.readerServiceAccount);
  expect(f.sb.googleKeys.oauth.keysUsed.at(-1)).toBe(k0);
  expect(f.sb.google.sts.count('sts.token') - stsBefore).toBe(0); // the exchange does not use the keyless path

  f.clock.advanceDays(90);
  await f.run({ managed });
  const k1 = await assertHealthy(f, acct);
  expect(k1).not.toBe(k0);
  for (const days of [0, 7, 1]) {
    f.clock.advanceDays(days);
    if (days) await f.run({ managed });
    const res = await exchange();
    expect(res.status).toBe(200);
    expect(f.sb.googleKeys.oauth.keysUsed.at(-1)).toBe(k1);
  }
  expect(f.sb.googleKeys.iam.userKeys(acct.serviceAccount).map((k) => k.keyId)).toEqual([k1]);
});
