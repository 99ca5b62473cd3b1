import { answer } from '../../../shared/cloudsql/provider';
import type { CloudSqlDecisionGrant } from '../../../shared/policy/evaluate';
import type { InstanceConnectInfo } from '../../../shared/cloudsql/connect-settings';

const grant: CloudSqlDecisionGrant = Object.freeze({
  kind: 'cloudsql',
  connectionName: 'proj:europe-west1:orders-db',
  database: 'orders',
  maxTtlSeconds: 900,
  identity: 'serviceAccount',
  serviceAccount: 'reader@proj.iam.gserviceaccount.com',
});
const who = Object.freeze({ database_user: 'reader@proj.iam', service_account: 'reader@proj.iam.gserviceaccount.com' });
const info: InstanceConnectInfo = {
  ipAddresses: [{ type: 'PRIMARY', ipAddress: '10.0.0.5' }],
  dnsName: 'abc.proj.sql.goog.',
  serverCaCert: '-----BEGIN CERTIFICATE-----\nMIIB"\\quoted\u2028\n-----END CERTIFICATE-----\n',
  serverCertCommonName: 'proj:orders-db',
};

describe('the Cloud SQL answer text', () => {
  test('is JSON.stringify of the answer object, for every shape, whether its parts were remembered or not', () => {
    const cases = [
      { who, info, remembered: true },
      { who, info, remembered: true }, // the remembered parts, second time
      { who, info: undefined, remembered: true }, // connect details unavailable
      { who: { database_user: 'caller-oid', identity: 'caller' }, info, remembered: false },
    ];
    for (const [i, c] of cases.entries()) {
      const t = { token: `ya29.tok"en\\${i}`, expiresInSeconds: 899 - i, cached: true };
      const r = answer(grant, t, c.who, c.info, c.remembered);
      expect(r.json).toBe(JSON.stringify(r.response));
      const parsed = JSON.parse(r.json!) as Record<string, unknown>;
      expect(parsed).toMatchObject({ access_token: t.token, expires_in: 899 - i, database: 'orders', ...c.who });
      expect(parsed.connect_details).toBe(c.info ? 'included' : 'unavailable');
    }
  });

  test('a lifetime that is not a finite number is written as JSON.stringify writes it', () => {
    const r = answer(grant, { token: 'ya29.x', expiresInSeconds: NaN, cached: true }, who, info);
    expect(r.json).toBe(JSON.stringify(r.response));
  });

  test('per-answer values are never taken from an earlier answer', () => {
    const a = answer(grant, { token: 'ya29.first', expiresInSeconds: 3600, cached: false }, who, info);
    const b = answer(grant, { token: 'ya29.second', expiresInSeconds: 100, cached: true }, who, info);
    expect(JSON.parse(a.json!)).toMatchObject({ access_token: 'ya29.first', expires_in: 3600, refresh_after: 1800 });
    expect(JSON.parse(b.json!)).toMatchObject({ access_token: 'ya29.second', expires_in: 100, refresh_after: 0 });
    expect(a.tokenIdHash).not.toBe(b.tokenIdHash);
  });
});
