import { randomBytes, randomUUID } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, errors as joseErrors } from 'jose';
import type { SandboxCa } from '../../pki';
import type { EntraEmulator } from '../entra';
import { startEmulator, type Emulator, type EmuRequest, type EmuResponse } from '../harness';
import { recordIssuedToken } from '../issued-tokens';
import type { CosmosEmulator } from './index';

/**
 * The slice of the Azure Resource Manager API (management plane) that Cosmos account-key rotation needs, from the
 * Cosmos DB resource-provider reference (https://learn.microsoft.com/rest/api/cosmos-db-resource-provider/):
 * - `POST …/databaseAccounts/{name}/listKeys?api-version=…` → 200 `{ primaryMasterKey, secondaryMasterKey,
 *   primaryReadonlyMasterKey, secondaryReadonlyMasterKey }`;
 * - `POST …/databaseAccounts/{name}/regenerateKey?api-version=…` `{ "keyKind": "primary" | "secondary" |
 *   "primaryReadonly" | "secondaryReadonly" }` → 202 Accepted with `Azure-AsyncOperation` and `Location` both the
 *   same `operationsStatus` URL and no `Retry-After` (azure-rest-api-specs `…/Microsoft.DocumentDB/stable/2024-11-15/
 *   examples/CosmosDBDatabaseAccountRegenerateKey.json`), on a regional host when `host` + `region` are set
 *   (`https://<region>.<host>:PORT`, as `centraluseuap.management.azure.com` in that example); the key changes when
 *   the operation completes (after `pollsToComplete` status reads, or `completeAfterMs`, whichever comes first)
 *   (https://learn.microsoft.com/azure/azure-resource-manager/management/async-operations);
 * - `GET …/operationsStatus/{id}` → `{ status }` only, `Enqueued` then `Dequeued` then `Succeeded`, no `Retry-After`
 *   (azure-sdk-for-js `sdk/cosmosdb/arm-cosmosdb/recordings/node/my_test/recording_mongodbresources_create_test.js`);
 *   `GET …/operationResults/{id}` → 202 while running, 204 when done. Only the principal that started the operation
 *   may read it, and it needs the read action at the subscription (the status path is not under the account:
 *   https://learn.microsoft.com/azure/azure-resource-manager/management/async-operations#permission-for-tracking-async-status).
 * Every call needs `Authorization: Bearer <Entra token>` with `aud` https://management.azure.com (401
 * `InvalidAuthenticationToken` / `ExpiredAuthenticationToken` otherwise) of a principal granted the action on that
 * account (403 `AuthorizationFailed` naming action and scope), and an `api-version` (400
 * `MissingApiVersionParameter`). Regenerating a key regenerates it in the linked data-plane emulator.
 */

const LIST_KEYS_ACTION = 'Microsoft.DocumentDB/databaseAccounts/listKeys/action';
const REGENERATE_KEY_ACTION = 'Microsoft.DocumentDB/databaseAccounts/regenerateKey/action';
/** Reading an operation's status: its path is under /subscriptions/{sub}/providers/…/locations, not the account. */
const OPERATION_STATUS_READ = 'Microsoft.DocumentDB/locations/operationsStatus/read';
const OPERATION_RESULTS_READ = 'Microsoft.DocumentDB/locations/operationResults/read';
const ARM_AUDIENCES = ['https://management.azure.com', 'https://management.azure.com/', 'https://management.core.windows.net/'];
const KEY_KINDS = ['primary', 'secondary', 'primaryReadonly', 'secondaryReadonly'] as const;
type KeyKind = (typeof KEY_KINDS)[number];

export interface ManagedCosmosAccount {
  /** `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DocumentDB/databaseAccounts/{name}` */
  readonly resourceId: string;
  readonly emulator: CosmosEmulator;
}

export interface CosmosManagementOptions {
  readonly entra: EntraEmulator;
  readonly ca: SandboxCa;
  readonly port?: number;
  readonly accounts: readonly ManagedCosmosAccount[];
  /** Status reads that report InProgress before Succeeded (default 1). */
  readonly pollsToComplete?: number;
  /** An operation completes on its own after this long, polled or not (default 2000 ms). */
  readonly completeAfterMs?: number;
  /** Retry-After (seconds) on 202 and running answers (default: none, as real ARM sends it). */
  readonly retryAfterSeconds?: number;
  /**
   * A DNS name for the management host (e.g. `management.localhost`; default `127.0.0.1`). With `region`, operation
   * URLs go to `https://<region>.<host>:PORT` — a regional host on the same loopback listener, reached by a client
   * that resolves `*.localhost` to 127.0.0.1 (RFC 6761); the certificate names both.
   */
  readonly host?: string;
  readonly region?: string;
}

interface Operation {
  readonly id: string;
  readonly caller: string;
  readonly resourceId: string;
  readonly kind: KeyKind;
  polls: number;
  done: boolean;
  readonly startTime: string;
  endTime?: string;
}

export interface CosmosManagementEmulator extends Emulator {
  /** `https://127.0.0.1:PORT` or `https://<host>:PORT` (what COSMOS_MANAGEMENT_ENDPOINT points at). */
  readonly endpoint: string;
  /** Where operation URLs point: `endpoint`, or `https://<region>.<host>:PORT`. */
  readonly operationOrigin: string;
  /** Grant a principal (object id) listKeys + regenerateKey on one account (the custom role of infra/modules/cosmos.bicep). */
  grantKeyOperator(principalId: string, resourceId: string, actions?: readonly string[]): void;
  /** Grant a principal the operation-status reads at `/subscriptions/{sub}` (the custom role of infra/main.bicep). */
  grantOperationReader(principalId: string, subscriptionId: string): void;
  revokeAll(principalId: string): void;
  /** Operations started, in order (tests). */
  readonly operations: readonly Readonly<Operation>[];
  /** Complete every running operation now (tests). */
  completeAll(): void;
}

export async function startCosmosManagement(opts: CosmosManagementOptions): Promise<CosmosManagementEmulator> {
  const grants = new Map<string, Map<string, Set<string>>>();
  const operations: Operation[] = [];
  const readonlyKeys = new Map<string, { primaryReadonly: string; secondaryReadonly: string }>();
  const pollsToComplete = opts.pollsToComplete ?? 1;
  const completeAfterMs = opts.completeAfterMs ?? 2000;
  const retryHeader: Record<string, string> =
    opts.retryAfterSeconds === undefined ? {} : { 'retry-after': String(opts.retryAfterSeconds) };
  const host = opts.host ?? '127.0.0.1';
  if (opts.region && /^[0-9.]+$/.test(host)) throw new Error('a regional operation host needs a DNS name as host');
  const regional = opts.region ? `${opts.region}.${host}` : undefined;
  const tls = opts.ca.issueServer({
    commonName: 'localhost',
    dnsNames: ['localhost', ...(opts.host ? [opts.host] : []), ...(regional ? [regional] : [])],
    ips: ['127.0.0.1'],
  });
  let operationOrigin = '';

  const armError = (status: number, code: string, message: string, headers: Record<string, string> = {}): EmuResponse => ({
    status,
    headers: { 'x-ms-request-id': randomUUID(), 'x-ms-correlation-request-id': randomUUID(), ...headers },
    body: { error: { code, message } },
  });
  const accountOf = (resourceId: string) => opts.accounts.find((a) => a.resourceId.toLowerCase() === resourceId.toLowerCase());
  const readonlyOf = (resourceId: string) => {
    let r = readonlyKeys.get(resourceId);
    if (!r) {
      r = { primaryReadonly: randomBytes(64).toString('base64'), secondaryReadonly: randomBytes(64).toString('base64') };
      recordIssuedToken(r.primaryReadonly);
      recordIssuedToken(r.secondaryReadonly);
      readonlyKeys.set(resourceId, r);
    }
    return r;
  };

  const authenticate = async (req: EmuRequest): Promise<{ oid: string } | EmuResponse> => {
    const h = req.header('authorization') ?? '';
    const m = /^Bearer ([A-Za-z0-9._-]+)$/.exec(h);
    const challenge = {
      'www-authenticate': 'Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token"',
    };
    if (!m)
      return armError(401, 'AuthenticationFailed', "Authentication failed. The 'Authorization' header is missing.", challenge);
    try {
      const { payload } = await jwtVerify(m[1]!, createLocalJWKSet({ keys: opts.entra.keys.map((k) => k.publicJwk) }), {
        algorithms: ['RS256'],
        audience: ARM_AUDIENCES,
        issuer: opts.entra.tenants.flatMap((t) => [
          `https://sts.windows.net/${t}/`,
          `https://login.microsoftonline.com/${t}/v2.0`,
        ]),
        requiredClaims: ['exp', 'oid', 'tid'],
        clockTolerance: 0,
      });
      return { oid: String(payload.oid).toLowerCase() };
    } catch (e) {
      if (e instanceof joseErrors.JWTExpired)
        return armError(
          401,
          'ExpiredAuthenticationToken',
          'The access token expiry UTC time is earlier than current UTC time.',
          challenge,
        );
      if (e instanceof joseErrors.JWTClaimValidationFailed && e.claim === 'aud') {
        return armError(
          401,
          'InvalidAuthenticationTokenAudience',
          "The access token has been obtained for wrong audience or resource. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.azure.com/'.",
          challenge,
        );
      }
      return armError(401, 'InvalidAuthenticationToken', 'The access token is invalid.', challenge);
    }
  };

  const authorize = (oid: string, resourceId: string, action: string): EmuResponse | undefined => {
    if (grants.get(oid)?.get(resourceId.toLowerCase())?.has(action)) return undefined;
    return armError(
      403,
      'AuthorizationFailed',
      `The client '${oid}' with object id '${oid}' does not have authorization to perform action '${action}' over scope '${resourceId}' or the scope is invalid. If access was recently granted, please refresh your credentials.`,
    );
  };

  const complete = (op: Operation) => {
    if (op.done) return;
    op.done = true;
    op.endTime = new Date().toISOString();
    const acct = accountOf(op.resourceId);
    if (!acct) return;
    if (op.kind === 'primary' || op.kind === 'secondary') acct.emulator.regenerateKey(op.kind);
    else {
      const r = readonlyOf(op.resourceId);
      r[op.kind] = randomBytes(64).toString('base64');
      recordIssuedToken(r[op.kind]);
    }
  };

  const ACCOUNT_PATH =
    /^(?<rid>\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.DocumentDB\/databaseAccounts\/[^/]+)\/(?<verb>listKeys|regenerateKey)$/;
  const OP_PATH =
    /^\/subscriptions\/(?<sub>[^/]+)\/providers\/Microsoft\.DocumentDB\/locations\/[^/]+\/(?<kind>operationsStatus|operationResults)\/(?<id>[0-9a-f-]+)$/;

  const accountAction = async (req: EmuRequest): Promise<EmuResponse> => {
    const who = await authenticate(req);
    if ('status' in who) return who;
    if (!req.url.searchParams.get('api-version'))
      return armError(
        400,
        'MissingApiVersionParameter',
        'The api-version query parameter (?api-version=) is required for all requests.',
      );
    const rid = req.params.rid!;
    const acct = accountOf(rid);
    if (!acct) return armError(404, 'ResourceNotFound', `The Resource '${rid.split('/providers/')[1]}' was not found.`);
    if (req.params.verb === 'listKeys') {
      const denied = authorize(who.oid, rid, LIST_KEYS_ACTION);
      if (denied) return denied;
      const ro = readonlyOf(acct.resourceId);
      return {
        status: 200,
        body: {
          primaryMasterKey: acct.emulator.masterKey,
          secondaryMasterKey: acct.emulator.secondaryKey,
          primaryReadonlyMasterKey: ro.primaryReadonly,
          secondaryReadonlyMasterKey: ro.secondaryReadonly,
        },
      };
    }
    const denied = authorize(who.oid, rid, REGENERATE_KEY_ACTION);
    if (denied) return denied;
    const body = req.json() as { keyKind?: unknown } | undefined;
    if (!body || typeof body.keyKind !== 'string' || !(KEY_KINDS as readonly string[]).includes(body.keyKind)) {
      return armError(400, 'BadRequest', `keyKind must be one of ${KEY_KINDS.join(', ')}.`);
    }
    const op: Operation = {
      id: randomUUID(),
      caller: who.oid,
      resourceId: acct.resourceId,
      kind: body.keyKind as KeyKind,
      polls: 0,
      done: false,
      startTime: new Date().toISOString(),
    };
    operations.push(op);
    setTimeout(() => complete(op), completeAfterMs).unref();
    const sub = rid.split('/')[2]!;
    const loc = opts.region ?? 'sandbox';
    const base = `${operationOrigin}/subscriptions/${sub}/providers/Microsoft.DocumentDB/locations/${loc}`;
    const v = req.url.searchParams.get('api-version')!;
    const statusUrl = `${base}/operationsStatus/${op.id}?api-version=${v}`;
    return { status: 202, headers: { 'azure-asyncoperation': statusUrl, location: statusUrl, ...retryHeader } };
  };

  const operationStatus = async (req: EmuRequest): Promise<EmuResponse> => {
    const who = await authenticate(req);
    if ('status' in who) return who;
    const scope = `/subscriptions/${req.params.sub}`;
    const denied = authorize(
      who.oid,
      scope,
      req.params.kind === 'operationsStatus' ? OPERATION_STATUS_READ : OPERATION_RESULTS_READ,
    );
    if (denied) return denied;
    const op = operations.find((o) => o.id === req.params.id);
    if (!op) return armError(404, 'NotFound', 'The operation was not found.');
    if (op.caller !== who.oid) {
      return armError(
        403,
        'AuthorizationFailed',
        'Only the original caller of an asynchronous operation is allowed to retrieve the results.',
      );
    }
    op.polls++;
    if (op.polls >= pollsToComplete) complete(op);
    if (req.params.kind === 'operationResults')
      return op.done ? { status: 204 } : { status: 202, headers: { ...retryHeader, location: req.url.toString() } };
    return {
      status: 200,
      headers: op.done ? {} : retryHeader,
      body: { status: op.done ? 'Succeeded' : op.polls <= 1 ? 'Enqueued' : 'Dequeued' },
    };
  };

  const emu = await startEmulator({
    name: 'cosmos-management',
    port: opts.port,
    tls: { key: tls.keyPem, cert: tls.certPem },
    routes: [
      { method: 'POST', path: ACCOUNT_PATH, name: 'arm.cosmos.keys', handle: accountAction },
      { method: 'GET', path: OP_PATH, name: 'arm.operation', handle: operationStatus },
    ],
    throttleHeaders: () => ({}),
    errorBody: (status, message) => ({ error: { code: status === 429 ? 'TooManyRequests' : 'InternalServerError', message } }),
  });
  const endpoint = `https://${host}:${emu.port}`;
  operationOrigin = regional ? `https://${regional}:${emu.port}` : endpoint;
  return Object.assign(emu, {
    endpoint,
    operationOrigin,
    operations,
    grantKeyOperator(
      principalId: string,
      resourceId: string,
      actions: readonly string[] = [LIST_KEYS_ACTION, REGENERATE_KEY_ACTION],
    ) {
      const byRes = grants.get(principalId.toLowerCase()) ?? new Map<string, Set<string>>();
      byRes.set(resourceId.toLowerCase(), new Set(actions));
      grants.set(principalId.toLowerCase(), byRes);
    },
    grantOperationReader(principalId: string, subscriptionId: string) {
      const byRes = grants.get(principalId.toLowerCase()) ?? new Map<string, Set<string>>();
      byRes.set(`/subscriptions/${subscriptionId}`.toLowerCase(), new Set([OPERATION_STATUS_READ, OPERATION_RESULTS_READ]));
      grants.set(principalId.toLowerCase(), byRes);
    },
    revokeAll(principalId: string) {
      grants.delete(principalId.toLowerCase());
    },
    completeAll() {
      for (const op of operations) complete(op);
    },
  });
}
