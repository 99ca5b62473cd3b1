import { resourceTokenAnswer } from '../../../shared/cosmos/provider';
import type { CosmosResourceTokenGrant } from '../../../shared/policy/evaluate';

const grant = (partitionKey: string | undefined): CosmosResourceTokenGrant =>
  Object.freeze({
    kind: 'cosmos',
    account: 'acct',
    database: 'app',
    container: 'profiles',
    mode: 'read',
    auth: 'resourceToken',
    partitionKey,
    maxTtlSeconds: 3600,
  });

describe('the Cosmos resource-token answer text', () => {
  test('is JSON.stringify of the answer object: whole container, a partition, odd characters, an expired token', () => {
    const cases = [
      { g: grant(undefined), validUntilMs: Date.now() + 3_600_000 },
      { g: grant('0b5e0000-0000-4000-8000-00000000ead1'), validUntilMs: Date.now() + 600_000 },
      { g: grant('quote " back\\slash \u2028 é'), validUntilMs: Date.now() - 5_000 },
    ];
    for (const c of cases)
      for (const token of ['type=resource&ver=1&sig=a"b', 'type=resource&ver=1&sig=other']) {
        const r = resourceTokenAnswer(
          c.g,
          'https://acct.documents.azure.com:443/',
          { token, validUntilMs: c.validUntilMs },
          true,
        );
        expect(r.json).toBe(JSON.stringify(r.response));
        expect(JSON.parse(r.json!)).toMatchObject({ access_token: token, partition_key: c.g.partitionKey ?? null });
      }
  });

  test('the endpoint is never taken from an earlier answer of the same grant', () => {
    const g = grant(undefined);
    const issued = { token: 't', validUntilMs: Date.now() + 60_000 };
    expect(JSON.parse(resourceTokenAnswer(g, 'https://a/', issued, true).json!)).toMatchObject({
      account_endpoint: 'https://a/',
    });
    expect(JSON.parse(resourceTokenAnswer(g, 'https://b/', issued, true).json!)).toMatchObject({
      account_endpoint: 'https://b/',
    });
  });
});
