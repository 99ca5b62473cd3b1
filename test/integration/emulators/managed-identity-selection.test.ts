import { ManagedIdentityCredential } from '@azure/identity';
import { decodeJwt } from 'jose';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX_FUNCTION_IDENTITY_RESOURCE_ID } from '../../../local/emulators/managed-identity';

/**
 * App Service's managed-identity endpoint selects the identity by `client_id`, `principal_id`/`object_id` or
 * `mi_res_id` (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference); an
 * identity not attached is 400 with exactly `{statusCode, message: "Unable to load the proper Managed Identity.",
 * correlationId}` (Azure/azure-sdk-for-net #43691, microsoft/azure-container-apps #442).
 */

let sb: Sandbox;
let restore: () => void;
const OTHER = {
  clientId: '0a1b0000-0000-4000-8000-0000000000e1',
  objectId: '0a1b0000-0000-4000-8000-0000000000e2',
  resourceId:
    '/subscriptions/00000000-0000-4000-8000-00000000a2e0/resourceGroups/rg-token-broker/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-other',
};

beforeAll(async () => {
  sb = await startSandbox();
  restore = sb.applyEnv();
  sb.msi.addIdentity(OTHER);
});
afterAll(async () => {
  restore?.();
  await sb?.stop();
});

const ask = async (params: Record<string, string>) => {
  const q = new URLSearchParams({ 'api-version': '2019-08-01', resource: 'https://vault.azure.net', ...params });
  const res = await fetch(`${sb.msi.endpoint}?${q.toString()}`, { headers: { 'x-identity-header': sb.msi.secretHeader } });
  return { status: res.status, server: res.headers.get('server'), body: (await res.json()) as Record<string, unknown> };
};
const oidOf = (token: unknown) => decodeJwt(String(token)).oid;

describe('managed-identity endpoint: which identity', () => {
  test('mi_res_id selects that user-assigned identity (not the default one), case-insensitively', async () => {
    const r = await ask({ mi_res_id: OTHER.resourceId.toUpperCase() });
    expect(r.status).toBe(200);
    expect(oidOf(r.body.access_token)).toBe(OTHER.objectId);
    expect(r.body.client_id).toBe(OTHER.clientId);
    // The real SDK sends mi_res_id for `resourceId`.
    const sdk = new ManagedIdentityCredential({ resourceId: OTHER.resourceId });
    expect(oidOf((await sdk.getToken('https://vault.azure.net/.default'))?.token)).toBe(OTHER.objectId);
  });

  test('client_id, object_id, principal_id select; none is the default identity', async () => {
    expect(oidOf((await ask({ client_id: OTHER.clientId })).body.access_token)).toBe(OTHER.objectId);
    expect(oidOf((await ask({ object_id: OTHER.objectId })).body.access_token)).toBe(OTHER.objectId);
    expect(oidOf((await ask({ principal_id: OTHER.objectId })).body.access_token)).toBe(OTHER.objectId);
    expect(oidOf((await ask({ mi_res_id: SANDBOX_FUNCTION_IDENTITY_RESOURCE_ID })).body.access_token)).toBe(sb.msi.objectId);
    expect(oidOf((await ask({})).body.access_token)).toBe(sb.msi.objectId);
  });

  test.each([
    ['client_id not attached', { client_id: '0a1b0000-0000-4000-8000-0000000000ff' }],
    ['object_id not attached', { object_id: '0a1b0000-0000-4000-8000-0000000000ff' }],
    ['mi_res_id not attached', { mi_res_id: OTHER.resourceId.replace(/id-other$/, 'id-nope') }],
    ['two selectors', { client_id: OTHER.clientId, mi_res_id: OTHER.resourceId }],
  ])('%s: 400 with exactly the App Service body', async (_n, params) => {
    const r = await ask(params);
    expect(r.status).toBe(400);
    expect(r.server).toBe('Kestrel');
    expect(Object.keys(r.body).sort()).toEqual(['correlationId', 'message', 'statusCode']);
    expect(r.body).toMatchObject({ statusCode: 400, message: 'Unable to load the proper Managed Identity.' });
  });
});
