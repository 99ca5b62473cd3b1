import { request as httpsRequest } from 'node:https';
import { ManagedIdentityCredential } from '@azure/identity';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';
import { storageBicep } from '../../../local/sandbox-azure';
import { storageRolesFromBicep } from '../../../local/emulators/azurite/storage-auth';
import { BlobPolicySource, blobClientFor } from '../../../shared/policy/blob-store';
import { PolicyStore } from '../../../shared/policy/store';
import { TestApp } from '../../helpers/app';
import { policyConfig } from '../../../shared/config/policy';
import { rotationLeaseFromSettings } from '../../../shared/rotation/lease';
import { BrokerError } from '../../../shared/errors';
import { invoke } from '../../helpers/invoke';
import { CLOUDSQL_RESOURCE } from '../../helpers/foundation';

const testApp = new TestApp();
const explainHandler = testApp.handler('explain');

/**
 * Storage's checks in front of Azurite (issue 25, item 3; /work/notes/recorded-traffic.md §3). Azurite `--oauth basic`
 * accepts a forged signature, another tenant's token and an identity without a data role; Azure Storage answers
 * 401 InvalidAuthenticationInfo with a bearer challenge (microsoft/AzureStorageExplorer #9050, Azure/azure-sdk-for-java
 * #24926, Azure/AzureStor #119) or 403 AuthorizationPermissionMismatch (Azure/azure-sdk-for-python #28284). The role
 * table is infra/modules/storage.bicep's.
 */

let sb: Sandbox;
let restore: () => void;
const OTHER_TENANT = '0ddd0000-0000-4000-8000-0000000a0bad';
/** A user-assigned identity attached to the app that holds no Storage role (the Cosmos reader). */
const NO_ROLE = SANDBOX.cosmosKeyless.readerIdentity;

beforeAll(async () => {
  sb = await startSandbox({ storage: true, env: { BROKER_POLICY_REFRESH_SECONDS: '1' } });
  restore = sb.applyEnv();
  testApp.renew();
}, 60_000);
afterAll(async () => {
  restore?.();
  testApp.renew();
  await sb?.stop();
});

const storageToken = (o: Parameters<Sandbox['entra']['mint']>[0] = {}) =>
  sb.entra.mint({ oid: sb.msi.objectId, appId: sb.msi.clientId, aud: 'https://storage.azure.com', version: '1.0', ...o });

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}
const send = (method: string, url: string, headers: Record<string, string>, body?: string): Promise<Answer> =>
  new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      { method, ca: sb.storage!.caPem, headers: { 'x-ms-version': '2021-10-04', ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
const get = async (token: string, url = sb.storage!.policyBlobUrl) => send('GET', url, { authorization: `Bearer ${token}` });

const CHALLENGE = `Bearer authorization_uri=https://login.microsoftonline.com/${SANDBOX.tenantId}/oauth2/authorize resource_id=https://storage.azure.com`;
const expect401 = (r: Answer, detail: string) => {
  expect(r.status).toBe(401);
  expect(r.headers['www-authenticate']).toBe(CHALLENGE);
  expect(r.headers['x-ms-error-code']).toBe('InvalidAuthenticationInfo');
  expect(r.headers['content-type']).toBe('application/xml');
  expect(r.body).toMatch(
    new RegExp(
      '^<\\?xml version="1.0" encoding="utf-8"\\?><Error><Code>InvalidAuthenticationInfo</Code><Message>Server failed to authenticate the request\\. ' +
        'Please refer to the information in the www-authenticate header\\.\\nRequestId:[0-9a-f-]{36}\\nTime:\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{7}Z</Message>' +
        `<AuthenticationErrorDetail>${detail.replace(/\./g, '\\.')}</AuthenticationErrorDetail></Error>$`,
    ),
  );
};

describe('Storage checks the bearer token (401 InvalidAuthenticationInfo + challenge)', () => {
  test('the broker identity with a good token reads the policy blob', async () => {
    const r = await get(await storageToken());
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toHaveProperty('rules');
  });

  test('a forged signature (a key not published, even under a published kid) is refused', async () => {
    const stray = sb.entra.strayKey();
    expect401(await get(await storageToken({ key: stray })), 'Signature validation failed. Signature is invalid.');
    expect401(
      await get(await storageToken({ key: { ...stray, kid: sb.entra.currentKey.kid } })),
      'Signature validation failed. Signature is invalid.',
    );
    // A token whose payload was edited after signing.
    const [h, p, s] = (await storageToken()).split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
    const edited = Buffer.from(JSON.stringify({ ...claims, oid: '00000000-0000-4000-8000-000000000001' })).toString('base64url');
    expect401(await get(`${h}.${edited}.${s}`), 'Signature validation failed. Signature is invalid.');
  });

  test("another tenant's token (valid signature, same Entra) is refused: Issuer validation failed", async () => {
    expect401(await get(await storageToken({ tenantId: OTHER_TENANT })), 'Issuer validation failed. Issuer did not match.');
    // The v2.0 issuer is not what Entra issues for Storage (its resource takes v1.0 tokens).
    expect401(await get(await storageToken({ version: '2.0' })), 'Issuer validation failed. Issuer did not match.');
  });

  test('a token for another audience is refused; the forms Storage accepts are accepted', async () => {
    expect401(
      await get(await storageToken({ aud: 'https://vault.azure.net' })),
      'Audience validation failed. Audience did not match.',
    );
    expect401(
      await get(await storageToken({ aud: 'https://otheraccount.blob.core.windows.net' })),
      'Audience validation failed. Audience did not match.',
    );
    for (const aud of [
      'https://storage.azure.com/',
      'e406a681-f3d4-42a8-90b6-c2b029497af1',
      'https://devstoreaccount1.blob.core.windows.net',
      'https://devstoreaccount1.blob.core.windows.net/',
    ])
      expect((await get(await storageToken({ aud }))).status).toBe(200);
  });

  test('an expired token is refused: Lifetime validation failed', async () => {
    expect401(await get(await storageToken({ expiresIn: -5 })), 'Lifetime validation failed. The token is expired.');
  });

  test('no bearer token: Azurite answers as before (anonymous access to the private container refused)', async () => {
    const r = await send('GET', sb.storage!.policyBlobUrl, {});
    expect([401, 403, 404]).toContain(r.status);
  });
});

describe('Storage checks the role assignment (403 AuthorizationPermissionMismatch)', () => {
  test('the role table is infra/modules/storage.bicep: Contributor on the policy container, Owner on the account, for the Function identity', () => {
    const fromBicep = storageRolesFromBicep(storageBicep(), { brokerPrincipalId: sb.msi.objectId });
    expect(fromBicep).toEqual(
      expect.arrayContaining([
        { principalId: sb.msi.objectId, role: 'Storage Blob Data Contributor', scope: SANDBOX.storage.container },
        { principalId: sb.msi.objectId, role: 'Storage Blob Data Owner', scope: 'account' },
      ]),
    );
    expect(fromBicep).toHaveLength(2);
    expect(sb.storage!.auth.assignments).toEqual(fromBicep);
    expect(() => storageRolesFromBicep(storageBicep(), {})).toThrow(/brokerPrincipalId/);
  });

  test('an identity with no role on the container: 403 with the exact XML body and no challenge', async () => {
    const r = await get(await storageToken({ oid: NO_ROLE.objectId, appId: NO_ROLE.clientId }));
    expect(r.status).toBe(403);
    expect(r.headers['www-authenticate']).toBeUndefined();
    expect(r.headers['x-ms-error-code']).toBe('AuthorizationPermissionMismatch');
    expect(r.body).toMatch(
      /^<\?xml version="1.0" encoding="utf-8"\?><Error><Code>AuthorizationPermissionMismatch<\/Code><Message>This request is not authorized to perform this operation using this permission\.\nRequestId:[0-9a-f-]{36}\nTime:[0-9T:.-]+\d{7}Z<\/Message><\/Error>$/,
    );
    // The same with a write (the request body is not forwarded).
    const put = await send(
      'PUT',
      sb.storage!.policyBlobUrl,
      {
        authorization: `Bearer ${await storageToken({ oid: NO_ROLE.objectId })}`,
        'x-ms-blob-type': 'BlockBlob',
        'content-type': 'application/json',
      },
      '{"rules":[]}',
    );
    expect(put.status).toBe(403);
    expect((await get(await storageToken())).body).not.toBe('{"rules":[]}');
  });

  test('a role on another container does not cover this one', async () => {
    const someone = '0a1b0000-0000-4000-8000-00000000f00d';
    sb.storage!.auth.assignRole({ principalId: someone, role: 'Storage Blob Data Contributor', scope: 'deploymentpackage' });
    try {
      expect((await get(await storageToken({ oid: someone }))).status).toBe(403);
      sb.storage!.auth.assignRole({
        principalId: someone,
        role: 'Storage Blob Data Contributor',
        scope: SANDBOX.storage.container,
      });
      expect((await get(await storageToken({ oid: someone }))).status).toBe(200);
    } finally {
      sb.storage!.auth.removeRoles(someone);
    }
  });
});

describe('blob semantics pass through unchanged', () => {
  test('conditional read (304 on the ETag), stale If-Match (412), lease acquire / conflict / release through the proxy', async () => {
    const cred = new ManagedIdentityCredential({ clientId: sb.msi.clientId });
    const cfg = { ...policyConfig.get(), url: sb.storage!.policyBlobUrl };
    const blob = blobClientFor(cfg, `${sb.storage!.auth.accountUrl}/${SANDBOX.storage.container}/semantics-probe`, cred);
    const up = await blob.getBlockBlobClient().upload('one', 3, { metadata: { probe: 'yes' } });
    expect(up.etag).toBeTruthy();
    const props = await blob.getProperties();
    expect(props.metadata).toEqual({ probe: 'yes' });
    const raw = await send('GET', blob.url, { authorization: `Bearer ${await storageToken()}`, 'if-none-match': up.etag! });
    expect(raw.status).toBe(304);
    expect(raw.body).toBe('');
    await expect(
      blob.getBlockBlobClient().upload('two', 3, { conditions: { ifMatch: '"0x0000000000000"' } }),
    ).rejects.toMatchObject({
      statusCode: 412,
    });
    const a = blob.getBlobLeaseClient();
    const lease = await a.acquireLease(15);
    expect(lease.leaseId).toBe(a.leaseId);
    await expect(blob.getBlobLeaseClient().acquireLease(15)).rejects.toMatchObject({
      statusCode: 409,
      code: 'LeaseAlreadyPresent',
    });
    await expect(blob.getBlockBlobClient().upload('three', 5)).rejects.toMatchObject({ statusCode: 412 });
    await blob.getBlockBlobClient().upload('three', 5, { conditions: { leaseId: a.leaseId } });
    await a.releaseLease();
    expect((await blob.downloadToBuffer()).toString()).toBe('three');
    await blob.delete();
  });
});

describe('the broker with the wrong identity', () => {
  test('a client id without the role: the live policy is unreadable (403 from Storage), never silently read', async () => {
    const cfg = { ...policyConfig.get(), url: sb.storage!.policyBlobUrl, clientId: NO_ROLE.clientId };
    const store = new PolicyStore(new BlobPolicySource(cfg), { refreshMs: 0, maxStaleMs: 60_000 });
    const err = (await store.current().catch((e: unknown) => e)) as BrokerError;
    expect(err).toBeInstanceOf(BrokerError);
    expect(err.code).toBe('upstream_denied');
    expect(err.message).toBe(
      'The policy store refused the request (HTTP 403): AuthorizationPermissionMismatch (the managed identity, AZURE_CLIENT_ID, has no Storage Blob Data role on the container).',
    );
    expect(sb.storage!.auth.refusals.at(-1)).toMatchObject({ status: 403, principalId: NO_ROLE.objectId });
  });

  test('AZURE_CLIENT_ID of an identity without the role: explain answers an error, not a decision', async () => {
    const saved = process.env.AZURE_CLIENT_ID;
    process.env.AZURE_CLIENT_ID = NO_ROLE.clientId;
    testApp.renew();
    try {
      const r = await invoke(explainHandler, {
        url: 'http://127.0.0.1:7071/api/policy/explain',
        headers: {
          authorization: `Bearer ${await sb.entra.mint({ oid: SANDBOX.gatewayObjectId, appId: SANDBOX.gatewayAppId, aud: SANDBOX.clientAudience, version: '1.0' })}`,
        },
        form: {
          subject_token: await sb.entra.mint({
            oid: SANDBOX.readerObjectId,
            aud: SANDBOX.subjectAudience,
            roles: ['Orders.Read'],
          }),
          resource: CLOUDSQL_RESOURCE,
        },
      });
      expect(r.status).toBeGreaterThanOrEqual(403);
      expect(r.json.decision).toBeUndefined();
      expect(r.status).toBe(403);
      expect(r.json.code).toBe('upstream_denied');
      expect(JSON.stringify(r.json)).toMatch(/AuthorizationPermissionMismatch/);
    } finally {
      process.env.AZURE_CLIENT_ID = saved;
      testApp.renew();
    }
  });

  test('the rotation lease with an identity without the role is refused (never taken silently)', async () => {
    const saved = process.env.AZURE_CLIENT_ID;
    process.env.AZURE_CLIENT_ID = NO_ROLE.clientId;
    try {
      const lock = rotationLeaseFromSettings('google-keys', { info() {}, warn() {}, error() {}, debug() {} } as never);
      await expect(lock.acquire()).rejects.toMatchObject({ code: 'upstream_denied' });
    } finally {
      process.env.AZURE_CLIENT_ID = saved;
    }
  });
});
