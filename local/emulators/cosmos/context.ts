import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import type { EmuRequest, EmuResponse } from '../harness';
import { recordIssuedToken } from '../issued-tokens';
import type { SandboxCa } from '../../pki';
import type { EntraEmulator } from '../entra';

/**
 * The state of one emulated Cosmos account (databases, containers, users, permissions, documents, both master keys,
 * the clock) and the helpers every route module shares: the service's error shape, system properties, signing.
 */

export interface CosmosContainerSpec {
  readonly database: string;
  readonly id: string;
  /** Partition key path, e.g. `/pk`. */
  readonly partitionKeyPath: string;
}

export interface CosmosEmulatorOptions {
  readonly account: string;
  readonly ca: SandboxCa;
  readonly port?: number;
  readonly host?: string;
  /** Base64 master key (default: random 64 bytes). */
  readonly masterKey?: string;
  readonly containers?: readonly CosmosContainerSpec[];
  /** Emulator name (call records, faults); default `cosmos`. */
  readonly name?: string;
  /** Accept Entra ID tokens (data-plane RBAC) signed by this issuer. */
  readonly entra?: EntraEmulator;
  /** Refuse master keys and resource tokens (an account with `disableLocalAuth: true`). */
  readonly disableLocalAuth?: boolean;
}

export interface PermissionRecord {
  readonly id: string;
  readonly permissionMode: 'Read' | 'All';
  readonly resource: string;
  readonly resourcePartitionKey?: readonly unknown[];
}

export interface Container {
  readonly rid: string;
  readonly pkPath: string;
  readonly docs: Map<string, Record<string, unknown>>;
  readonly ts: number;
}

export interface User {
  readonly rid: string;
  readonly permissions: Map<string, PermissionRecord & { rid: string; ts: number }>;
}

export interface Database {
  readonly rid: string;
  readonly containers: Map<string, Container>;
  readonly users: Map<string, User>;
  readonly ts: number;
}

export interface ResourceTokenPayload {
  /** Which master key signed it. */
  readonly key: 'primary' | 'secondary';
  readonly res: string;
  readonly pk: readonly unknown[] | null;
  readonly mode: 'Read' | 'All';
  readonly user: string;
  readonly perm: string;
  readonly exp: number;
}

export const ALLOWED_SKEW_MS = 15 * 60 * 1000;
export const ID_RULE = /^[^/\\?#]{1,255}$/;
/** Create a Permission: max override 18,000 s; the SDK reference gives the 10 s floor. */
export const MIN_EXPIRY = 10;
export const MAX_EXPIRY = 18000;

export function rid(): string {
  return randomBytes(6).toString('base64');
}

export interface Classified {
  readonly segments: readonly string[];
  readonly resourceType: string;
  readonly resourceLink: string;
}

export function createCosmosContext(opts: CosmosEmulatorOptions) {
  const clock = { now: Date.now };
  const keys = { primary: opts.masterKey ?? randomBytes(64).toString('base64'), secondary: randomBytes(64).toString('base64') };
  recordIssuedToken(keys.primary);
  recordIssuedToken(keys.secondary);
  const dbs = new Map<string, Database>();
  const tls = opts.ca.issueServer({ commonName: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'] });

  const err = (status: number, code: string, message: string, extra: Record<string, string> = {}): EmuResponse => {
    const activityId = randomUUID();
    return {
      status,
      headers: { 'x-ms-activity-id': activityId, ...extra },
      body: {
        code,
        message: `Message: {"Errors":[${JSON.stringify(message)}]}\r\nActivityId: ${activityId}, Microsoft.Azure.Documents.Common/2.14.0`,
      },
    };
  };
  const unauthorized = (m: string) => err(401, 'Unauthorized', m);
  const forbidden = () =>
    err(
      403,
      'Forbidden',
      'Insufficient permissions provided in the authorization header for the corresponding request. Please retry with another authorization header.',
    );
  const notFound = () => err(404, 'NotFound', 'Resource Not Found. Learn more: https://aka.ms/cosmosdb-tsg-not-found');
  const badRequest = (m: string) => err(400, 'BadRequest', m);
  const ok = (status: number, body: object, headers: Record<string, string> = {}): EmuResponse => ({
    status,
    headers: {
      'x-ms-activity-id': randomUUID(),
      'x-ms-request-charge': '1',
      'x-ms-session-token': '0:1#1',
      etag: `"${randomUUID()}"`,
      ...headers,
    },
    body,
  });

  const sign = (key: string, text: string) => createHmac('sha256', Buffer.from(key, 'base64')).update(text, 'utf8').digest();

  const issueResourceToken = (p: ResourceTokenPayload): string => {
    const payload = Buffer.from(JSON.stringify(p)).toString('base64');
    const sig = sign(keys[p.key], payload).toString('base64');
    const token = `type=resource&ver=1.0&sig=${sig};${payload}`;
    recordIssuedToken(token);
    return token;
  };

  // ---- request classification (resource type and link, as the service signs them) ----
  const classify = (path: string): Classified => {
    const segments = path
      .split('/')
      .filter((s) => s.length > 0)
      .map((s) => decodeURIComponent(s));
    if (segments.length === 0) return { segments, resourceType: '', resourceLink: '' };
    if (segments.length % 2 === 1) {
      return { segments, resourceType: segments[segments.length - 1]!, resourceLink: segments.slice(0, -1).join('/') };
    }
    return { segments, resourceType: segments[segments.length - 2]!, resourceLink: segments.join('/') };
  };
  const isQueryRequest = (req: EmuRequest) =>
    (req.header('x-ms-documentdb-isquery') ?? '').toLowerCase() === 'true' ||
    (req.header('content-type') ?? '').startsWith('application/query+json');

  const parsePk = (header: string): unknown => {
    try {
      return JSON.parse(header) as unknown;
    } catch {
      return undefined;
    }
  };

  const pkValueOf = (doc: Record<string, unknown>, pkPath: string): unknown => {
    let cur: unknown = doc;
    for (const part of pkPath.split('/').filter(Boolean)) {
      if (cur === null || typeof cur !== 'object') return undefined;
      cur = (cur as Record<string, unknown>)[part];
    }
    return cur;
  };

  const db = (id: string) => dbs.get(id);
  const coll = (dbId: string, id: string) => dbs.get(dbId)?.containers.get(id);

  const createContainer = (spec: CosmosContainerSpec) => {
    let d = dbs.get(spec.database);
    if (!d) {
      d = { rid: rid(), containers: new Map(), users: new Map(), ts: Math.floor(clock.now() / 1000) };
      dbs.set(spec.database, d);
    }
    if (!d.containers.has(spec.id))
      d.containers.set(spec.id, {
        rid: rid(),
        pkPath: spec.partitionKeyPath,
        docs: new Map(),
        ts: Math.floor(clock.now() / 1000),
      });
  };
  for (const c of opts.containers ?? []) createContainer(c);

  const isUpsert = (req: EmuRequest) => (req.header('x-ms-documentdb-is-upsert') ?? '').toLowerCase() === 'true';
  const sys = (id: string, r: string, self: string, ts: number) => ({ id, _rid: r, _self: self, _etag: `"${r}"`, _ts: ts });
  const docKey = (pk: unknown, id: string) => `${JSON.stringify(pk)}\u0000${id}`;

  return {
    opts,
    clock,
    keys,
    dbs,
    tls,
    /** Set once the server listens (the account body's locations point at it). */
    endpoint: '',
    err,
    unauthorized,
    forbidden,
    notFound,
    badRequest,
    ok,
    sign,
    issueResourceToken,
    classify,
    isQueryRequest,
    parsePk,
    pkValueOf,
    db,
    coll,
    createContainer,
    isUpsert,
    sys,
    docKey,
  };
}

export type CosmosContext = ReturnType<typeof createCosmosContext>;
