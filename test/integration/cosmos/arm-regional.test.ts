import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import type { LookupFunction } from 'node:net';
import type { TokenCredential } from '@azure/identity';
import { CosmosManagement, isArmOperationUrl } from '../../../shared/rotation/cosmos-keys/client';
import { createCa } from '../../../local/pki';
import { startCosmosManagement, type CosmosManagementEmulator } from '../../../local/emulators/cosmos/management';
import { startSandbox, type Sandbox } from '../../../local/sandbox';
import { SANDBOX } from '../../../local/ids';

/**
 * ARM answers regenerateKey's asynchronous operation on a regional host (`https://centraluseuap.management.azure.com`
 * in azure-rest-api-specs `…/Microsoft.DocumentDB/stable/2024-11-15/examples/CosmosDBDatabaseAccountRegenerateKey.json`)
 * and sends no Retry-After (azure-sdk-for-js arm-cosmosdb recordings). The broker follows exactly the configured
 * management host and its regional subdomains, never another host, and backs off on its own.
 */

describe('isArmOperationUrl (the bearer token only goes to the cloud management host)', () => {
  const ARM = 'https://management.azure.com';
  test.each([
    ['https://management.azure.com/subscriptions/s/x', true],
    ['https://centraluseuap.management.azure.com/subscriptions/s/x?api-version=2024-11-15', true],
    ['https://westeurope.management.azure.com:443/x', true],
    ['http://westeurope.management.azure.com/x', false],
    ['https://management.azure.com.evil.example/x', false],
    ['https://evilmanagement.azure.com/x', false],
    ['https://a.b.management.azure.com/x', false],
    ['https://evil.example/x', false],
    ['https://management.azure.com:8443/x', false],
    ['https://user:pw@westeurope.management.azure.com/x', false],
    ['https://login.microsoftonline.com/x', false],
    ['not a url', false],
  ])('%s → %s', (u, ok) => expect(isArmOperationUrl(u, ARM)).toBe(ok));

  test('a sovereign cloud: its own management host and regions, not the public one', () => {
    const gov = 'https://management.usgovcloudapi.net';
    expect(isArmOperationUrl('https://usgovvirginia.management.usgovcloudapi.net/x', gov)).toBe(true);
    expect(isArmOperationUrl('https://westeurope.management.azure.com/x', gov)).toBe(false);
  });

  test('an IP-literal (loopback sandbox) endpoint has no regional form', () => {
    expect(isArmOperationUrl('https://127.0.0.1:9/x', 'https://127.0.0.1:9')).toBe(true);
    expect(isArmOperationUrl('https://1.127.0.0.1:9/x', 'https://127.0.0.1:9')).toBe(false);
    expect(isArmOperationUrl('https://127.0.0.1:10/x', 'https://127.0.0.1:9')).toBe(false);
  });
});

/** `*.localhost` → 127.0.0.1 (RFC 6761), without DNS: how the test reaches the regional-looking host. */
const loopbackLookup = ((hostname: string, options: unknown, cb: unknown) => {
  const done = (typeof options === 'function' ? options : cb) as (
    e: Error | null,
    a: string | LookupAddress[],
    f?: number,
  ) => void;
  const all = typeof options === 'object' && options !== null && (options as { all?: boolean }).all;
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
    return all ? done(null, [{ address: '127.0.0.1', family: 4 }]) : done(null, '127.0.0.1', 4);
  }
  return dnsLookup(hostname, options as never, cb as never);
}) as LookupFunction;

describe('regenerateKey answered on a regional host, without Retry-After', () => {
  let sandbox: Sandbox;
  let arm: CosmosManagementEmulator;
  let ca: string;
  const credential: TokenCredential = {
    getToken: async () => ({
      token: await sandbox.entra.mint({
        oid: sandbox.msi.objectId,
        appId: sandbox.msi.clientId,
        aud: 'https://management.azure.com',
        version: '1.0',
      }),
      expiresOnTimestamp: Date.now() + 3_600_000,
    }),
  };

  beforeAll(async () => {
    sandbox = await startSandbox();
    const sandboxCa = createCa('regional ARM test CA');
    ca = sandboxCa.certPem;
    arm = await startCosmosManagement({
      entra: sandbox.entra,
      ca: sandboxCa,
      host: 'management.localhost',
      region: 'westeurope',
      pollsToComplete: 3,
      completeAfterMs: 60_000,
      accounts: [{ resourceId: SANDBOX.cosmos.resourceId, emulator: sandbox.cosmos }],
    });
    arm.grantKeyOperator(sandbox.msi.objectId, SANDBOX.cosmos.resourceId);
    arm.grantOperationReader(sandbox.msi.objectId, SANDBOX.cosmos.resourceId.split('/')[2]!);
  });
  afterAll(async () => {
    await arm.close();
    await sandbox.stop();
  });

  test('the emulator answers like ARM: regional operationsStatus URL in both headers, no Retry-After, { status } only', async () => {
    expect(arm.operationOrigin).toBe(`https://westeurope.management.localhost:${new URL(arm.endpoint).port}`);
    const before = sandbox.cosmos.secondaryKey;
    const waits: number[] = [];
    const m = new CosmosManagement({
      endpoint: arm.endpoint,
      credential,
      timeoutMs: 5000,
      ca,
      lookup: loopbackLookup,
      sleep: async (ms) => {
        waits.push(ms);
      },
    });
    await m.regenerate(SANDBOX.cosmos.resourceId, 'secondary');
    expect(sandbox.cosmos.secondaryKey).not.toBe(before);
    // No Retry-After from ARM: the broker's own bounded backoff (1 s, 2 s, 4 s), not a tight loop.
    expect(waits).toEqual([1000, 2000, 4000]);
  });

  test('an operation URL on any other host is refused before the token is sent there', async () => {
    // Configured for the loopback IP: the regional host is not that host, so the token never goes there.
    const foreign = new CosmosManagement({
      endpoint: 'https://127.0.0.1:' + new URL(arm.endpoint).port,
      credential,
      timeoutMs: 5000,
      ca,
      sleep: async () => undefined,
    });
    await expect(foreign.regenerate(SANDBOX.cosmos.resourceId, 'secondary')).rejects.toMatchObject({
      code: 'upstream_error',
      message: 'Azure Resource Manager answered an operation URL on another host.',
    });
  });
});
