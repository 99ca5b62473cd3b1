import { PermissionMode, type PermissionDefinition } from '@azure/cosmos';
import type { Principal } from '../auth/principal';
import { tokenFingerprint } from '../observability/audit';
import { cosmosConfig, endpointOf } from '../config/cosmos';
import { BrokerError } from '../errors';
import type { CosmosDecisionGrant, CosmosResourceTokenGrant } from '../policy/evaluate';
import type { IssueInput, IssuedToken, ProviderResult } from '../exchange/types';
import { jsonNumber } from '../exchange/answer-json';
import type { AccountHandle, CosmosAccounts, RecentSet } from './client';
import { cosmosFailure, cosmosStatus } from './errors';
import { containerLink, cosmosUserId, permissionId } from './ids';
import { recordUpstream } from '../observability/telemetry';

/**
 * CosmosDB resource tokens: one Cosmos user per subject and grant shape, holding one permission (container,
 * mode, partition) — Cosmos allows one permission per (user, resource), see ids.ts — upserted with
 * `x-ms-documentdb-expiry-seconds` = min(requested_lifetime, rule maxTtlSeconds, 18,000 s). A lifetime is never
 * raised: below Cosmos' 10 s floor the request is refused (400 naming requested_lifetime).
 * Issued tokens are cached per (subject, grant, lifetime) while enough life is left; concurrent misses
 * share one upstream call. Cosmos cannot revoke a resource token early: short lifetimes and the policy's
 * deny list (which stops new issuance) are the controls.
 */

export const COSMOS_RESOURCE_TOKEN_TYPE = 'urn:token-broker:params:oauth:token-type:cosmos-resource-token';
/**
 * Resource-token lifetime bounds. The REST reference (Create/Get a Permission) documents the default (3,600 s) and
 * the maximum override, 18,000 s; the .NET SDK reference (RequestOptions.ResourceTokenExpirySeconds) gives the
 * range 10 s to 18,000 s; the v3 Permission class says "up to 24 hours". The broker takes the strictest reading:
 * 10–18,000 s.
 */
const COSMOS_MIN_TTL_SECONDS = 10;
export const COSMOS_MAX_TTL_SECONDS = 18000;

/** min(requested, rule max, Cosmos max); never longer than asked, and a request below Cosmos' floor is refused. */
function cosmosLifetime(maxTtlSeconds: number, requested?: number): number {
  const ttl = Math.min(requested ?? maxTtlSeconds, maxTtlSeconds, COSMOS_MAX_TTL_SECONDS);
  if (ttl < COSMOS_MIN_TTL_SECONDS) {
    throw new BrokerError(
      'invalid_parameter',
      `requested_lifetime must be at least ${COSMOS_MIN_TTL_SECONDS} seconds for a CosmosDB resource token (the shortest lifetime Cosmos issues); the broker never issues a longer lifetime than asked.`,
      { detail: { parameter: 'requested_lifetime' } },
    );
  }
  return ttl;
}

/** What identifies one cached resource token. */
export interface ResourceTokenKey {
  readonly user: string;
  readonly account: string;
  readonly database: string;
  readonly container: string;
  readonly mode: 'read' | 'all';
  /** null: the whole container (never a sentinel string a caller could send). */
  readonly partitionKey: string | null;
  readonly ttlSeconds: number;
}

/** The cache key: JSON of a fixed-order tuple, so every field is delimited and typed (null is not a string). */
export function resourceTokenCacheKey(k: ResourceTokenKey): string {
  return JSON.stringify([k.user, k.account, k.database, k.container, k.mode, k.partitionKey, k.ttlSeconds]);
}

interface ResourceTokenIds {
  readonly userId: string;
  readonly key: string;
}

/**
 * The Cosmos user and cache key of (grant, caller, lifetime), remembered per decision grant object (one per policy
 * grant, mode and partition: policy/evaluate.ts) and Principal object (the verified-token cache returns the same one
 * for the same token) — a cache hit neither rebuilds nor hashes them. Weak on both, so nothing outlives its policy or
 * its caller's token; a caller asking many lifetimes keeps at most 16 (then they are made again). Same inputs, same
 * strings as before: the memo only skips the work.
 */
const idsOf = new WeakMap<CosmosResourceTokenGrant, WeakMap<Principal, Map<number, ResourceTokenIds>>>();

function resourceTokenIds(grant: CosmosResourceTokenGrant, subject: Principal, ttl: number): ResourceTokenIds {
  let byCaller = idsOf.get(grant);
  if (!byCaller) idsOf.set(grant, (byCaller = new WeakMap<Principal, Map<number, ResourceTokenIds>>()));
  let byTtl = byCaller.get(subject);
  if (!byTtl) byCaller.set(subject, (byTtl = new Map<number, ResourceTokenIds>()));
  let ids = byTtl.get(ttl);
  if (ids === undefined) {
    const userId = cosmosUserId(subject, grant);
    const key = resourceTokenCacheKey({
      user: userId,
      account: grant.account,
      database: grant.database,
      container: grant.container,
      mode: grant.mode,
      partitionKey: grant.partitionKey ?? null,
      ttlSeconds: ttl,
    });
    if (byTtl.size >= 16) byTtl.clear();
    byTtl.set(ttl, (ids = { userId, key }));
  }
  return ids;
}

async function upsertPermission(
  knownUsers: RecentSet,
  h: AccountHandle,
  grant: CosmosResourceTokenGrant,
  userId: string,
  ttl: number,
): Promise<string> {
  const database = h.client.database(grant.database);
  const userKey = `${h.account}/${grant.database}/${userId}`;
  const definition: PermissionDefinition = {
    id: permissionId(grant),
    permissionMode: grant.mode === 'all' ? PermissionMode.All : PermissionMode.Read,
    resource: containerLink(grant),
    ...(grant.partitionKey !== undefined ? { resourcePartitionKey: [grant.partitionKey] } : {}),
  };
  const attempt = async (): Promise<string> => {
    if (!knownUsers.has(userKey)) {
      try {
        await database.users.upsert({ id: userId });
      } catch (e) {
        throw cosmosStatus(e) === 404 ? cosmosFailure(e, 'database') : e;
      }
      knownUsers.add(userKey); // bounded (client.ts): forgetting only costs one more upsert
    }
    const { resource } = await database.user(userId).permissions.upsert(definition, { resourceTokenExpirySeconds: ttl });
    if (!resource?._token) throw new Error('CosmosDB answered a permission without a token');
    return resource._token;
  };
  try {
    return await attempt();
  } catch (e) {
    // The user may have been deleted behind the broker's back: upsert it once more, then the container is missing.
    if (cosmosStatus(e) !== 404 || !knownUsers.has(userKey)) throw e;
    knownUsers.delete(userKey);
    try {
      return await attempt();
    } catch (e2) {
      throw cosmosStatus(e2) === 404 ? cosmosFailure(e2, 'container') : e2;
    }
  }
}

/**
 * The Cosmos answer: a keyless (RBAC) token, or a resource token — without a promise when the caller's resource token
 * is cached (what a cache hit finds).
 */
export function issueCosmosToken(input: IssueInput<CosmosDecisionGrant>): ProviderResult | Promise<ProviderResult> {
  const { grant } = input;
  if (grant.auth === 'rbac') return import('./rbac').then((m) => m.issueCosmosRbacToken({ ...input, grant }));
  const resourceInput = input as IssueInput<typeof grant>; // narrowed by grant.auth, without a copy per hit
  return cachedResourceToken(resourceInput) ?? issueResourceToken(resourceInput);
}

/** `issueResourceToken`'s answer from the cache alone; undefined when anything must be loaded, issued or refused. */
function cachedResourceToken(input: IssueInput<CosmosResourceTokenGrant>): ProviderResult | undefined {
  const cosmos = input.app.loadedCosmos;
  if (!cosmos) return undefined;
  const { grant } = input;
  const endpoint = endpointOf(input.app.settings(cosmosConfig), grant.account);
  if (!endpoint) return undefined;
  const ttl = cosmosLifetime(grant.maxTtlSeconds, input.requestedLifetimeSeconds);
  const issued = cosmos.resourceTokens.served(resourceTokenIds(grant, input.subject, ttl).key);
  if (!issued) return undefined;
  if (input.log.enabled('debug'))
    input.log.debug('cosmos.resource_token', { account: grant.account, cached: true, ttlSeconds: ttl });
  return resourceTokenAnswer(grant, endpoint, issued, true);
}

async function issueResourceToken(input: IssueInput<CosmosResourceTokenGrant>): Promise<ProviderResult> {
  const { grant, subject } = input;
  const cfg = input.app.settings(cosmosConfig);
  const cosmos: CosmosAccounts = await input.app.cosmos();
  const ttl = cosmosLifetime(grant.maxTtlSeconds, input.requestedLifetimeSeconds);
  const { userId, key } = resourceTokenIds(grant, subject, ttl);
  const marginMs = Math.min(cfg.minRemainingSeconds, Math.floor(ttl / 2)) * 1000;

  const endpoint = endpointOf(cfg, grant.account);
  if (!endpoint)
    throw new BrokerError('target_misconfigured', `CosmosDB account "${grant.account}" is not configured (COSMOS_ENDPOINTS).`);
  let fetched = false;
  const issued = await cosmos.resourceTokens.get(key, async () => {
    fetched = true;
    const startedAt = Date.now();
    try {
      const issued = await cosmos.withAccount(grant.account, async (h) => {
        const token = await upsertPermission(cosmos.knownUsers, h, grant, userId, ttl);
        const validUntilMs = startedAt + ttl * 1000;
        return { token, validUntilMs, expiresAtMs: validUntilMs - marginMs };
      });
      recordUpstream('cosmos', 'ok'); // telemetry: one per issuance from Cosmos (user + permission upsert)
      return issued;
    } catch (e) {
      const err = cosmosFailure(e, 'container');
      recordUpstream('cosmos', err.code);
      throw err;
    }
  });
  if (input.log.enabled('debug'))
    input.log.debug('cosmos.resource_token', { account: grant.account, cached: !fetched, ttlSeconds: ttl });
  return resourceTokenAnswer(grant, endpoint, issued, !fetched);
}

/**
 * The resource-token answer, and its JSON text made from parts: everything but the token and `expires_in` (types,
 * endpoint, database, container, partition, mode) made and serialised once per (grant, endpoint) instead of per hit.
 */
export function resourceTokenAnswer(
  grant: CosmosResourceTokenGrant,
  endpoint: string,
  issued: { token: string; validUntilMs: number },
  cached: boolean,
): ProviderResult {
  const expiresIn = Math.max(0, Math.floor((issued.validUntilMs - Date.now()) / 1000));
  const rest = answerRest(grant, endpoint);
  const response: IssuedToken = Object.assign(
    { access_token: issued.token, issued_token_type: COSMOS_RESOURCE_TOKEN_TYPE, token_type: 'N_A', expires_in: expiresIn },
    rest.fields,
  );
  return {
    response,
    // The same text as JSON.stringify(response): the head's members, then the rest's.
    json: `{"access_token":${JSON.stringify(issued.token)},"issued_token_type":${rest.typeJson},"token_type":"N_A","expires_in":${jsonNumber(expiresIn)},${rest.json}}`,
    tokenIdHash: tokenFingerprint(issued.token),
    cached,
  };
}

/** The answer's members after `expires_in`, and their JSON members (without braces). */
interface AnswerRest {
  readonly fields: Readonly<Record<string, string | null>>;
  readonly json: string;
  readonly typeJson: string;
}

const answerRests = new WeakMap<CosmosResourceTokenGrant, Map<string, AnswerRest>>();
function answerRest(grant: CosmosResourceTokenGrant, endpoint: string): AnswerRest {
  let byEndpoint = answerRests.get(grant);
  if (!byEndpoint) answerRests.set(grant, (byEndpoint = new Map<string, AnswerRest>()));
  let rest = byEndpoint.get(endpoint);
  if (!rest) {
    const fields = Object.freeze({
      account_endpoint: endpoint,
      database: grant.database,
      container: grant.container,
      partition_key: grant.partitionKey ?? null,
      mode: grant.mode,
      auth: 'resourceToken',
    });
    rest = { fields, json: JSON.stringify(fields).slice(1, -1), typeJson: JSON.stringify(COSMOS_RESOURCE_TOKEN_TYPE) };
    if (byEndpoint.size >= 16) byEndpoint.clear();
    byEndpoint.set(endpoint, rest);
  }
  return rest;
}
