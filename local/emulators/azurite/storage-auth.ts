import { randomUUID } from 'node:crypto';
import { Agent, createServer, request as httpsRequest, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createLocalJWKSet, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { SandboxCa } from '../../pki';
import type { EntraEmulator } from '../entra';

/**
 * Storage's own checks in front of Azurite (issue 25, item 3). Azurite's `--oauth basic` accepts any tenant's token
 * (issuer prefix only), checks no signature and no role assignment, and answers 403 AuthenticationFailed; Azure
 * Storage answers otherwise. This HTTPS reverse proxy checks what Storage checks on a bearer token and streams
 * everything else to Azurite unchanged (method, path, headers, body both ways, status): Azurite keeps the blob
 * semantics (ETags, conditional requests, leases, snapshots).
 *
 * Checked, in this order, with the answers of the real service (sources: /work/notes/recorded-traffic.md §3):
 * - signature (RS256, a key of the sandbox Entra's JWKS), issuer = the account's tenant
 *   (`https://sts.windows.net/{tid}/`: Storage's resource app takes v1.0 tokens), audience (`https://storage.azure.com`
 *   with or without the slash, Storage's app id, or the account URL `https://{account}.blob.core.windows.net[/]`:
 *   Azure/Azurite `VALID_BLOB_AUDIENCES`), lifetime (`exp`, `nbf`; no skew, stricter):
 *   401 `InvalidAuthenticationInfo` with `WWW-Authenticate: Bearer authorization_uri=https://login.microsoftonline.com/{tid}/oauth2/authorize resource_id=https://storage.azure.com`
 *   (unquoted, space-separated) and the XML body with `<AuthenticationErrorDetail>` (microsoft/AzureStorageExplorer #9050,
 *   Azure/azure-sdk-for-java #24926, Azure/AzureStor #119);
 * - a role assignment (`oid`) covering the container (or the account), mirroring infra/modules/storage.bicep:
 *   403 `AuthorizationPermissionMismatch`, XML, no challenge (Azure/azure-sdk-for-python #28284, AzureStorageExplorer #3767).
 * Requests without a bearer token (anonymous, Shared Key) go to Azurite as they are (its own answers).
 */

/**
 * The built-in data roles infra/ assigns (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage):
 * both allow every blob data action (read, write, delete, lease, snapshot), so the check is only whether one covers the container.
 */
const STORAGE_ROLES = {
  'Storage Blob Data Owner': 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b',
  'Storage Blob Data Contributor': 'ba92f5b4-2d11-453d-a403-e96b0029c9fe',
} as const;
export type StorageRole = keyof typeof STORAGE_ROLES;

export interface StorageRoleAssignment {
  readonly principalId: string;
  readonly role: StorageRole;
  /** A container name, or `account` for the whole storage account. */
  readonly scope: string;
}

/** Azure Storage's first-party app id, an accepted `aud` (Azure/Azurite VALID_BLOB_AUDIENCES). */
const STORAGE_APP_ID = 'e406a681-f3d4-42a8-90b6-c2b029497af1';

export interface StorageAuthProxy {
  readonly name: 'storage-auth';
  /** https://127.0.0.1:PORT/{account}: the account URL the broker is given. */
  readonly accountUrl: string;
  readonly port: number;
  readonly assignments: readonly StorageRoleAssignment[];
  assignRole(a: StorageRoleAssignment): void;
  /** Remove every assignment of `principalId` (optionally only at `scope`). */
  removeRoles(principalId: string, scope?: string): void;
  /** Refusals, newest last (status, code, detail), for assertions. */
  readonly refusals: readonly { status: number; code: string; detail?: string; principalId?: string; path: string }[];
  close(): Promise<void>;
}

export interface StorageAuthProxyOptions {
  /** Azurite's port on `host` (HTTPS with `ca`). */
  readonly targetPort: number;
  readonly account: string;
  readonly ca: SandboxCa;
  readonly entra: EntraEmulator;
  /** The account's tenant (the only issuer accepted). */
  readonly tenantId: string;
  readonly assignments?: readonly StorageRoleAssignment[];
  readonly port?: number;
  readonly host?: string;
}

const RESOURCE_ID = 'https://storage.azure.com';

/** Storage's timestamps: ISO-8601 with a 7-digit fraction. */
const storageTime = (d = new Date()) => d.toISOString().replace(/\.(\d{3})Z$/, '.$10000Z');

const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export async function startStorageAuthProxy(opts: StorageAuthProxyOptions): Promise<StorageAuthProxy> {
  const host = opts.host ?? '127.0.0.1';
  const tenant = opts.tenantId.toLowerCase();
  const account = opts.account;
  const assignments: StorageRoleAssignment[] = [...(opts.assignments ?? [])].map((a) => ({
    ...a,
    principalId: a.principalId.toLowerCase(),
  }));
  const refusals: { status: number; code: string; detail?: string; principalId?: string; path: string }[] = [];
  const audiences = new Set([
    RESOURCE_ID,
    `${RESOURCE_ID}/`,
    STORAGE_APP_ID,
    `https://${account}.blob.core.windows.net`,
    `https://${account}.blob.core.windows.net/`,
  ]);
  const issuer = `https://sts.windows.net/${tenant}/`;
  const upstreamAgent = new Agent({ ca: opts.ca.certPem, keepAlive: true });
  const sockets = new Set<Socket>();

  const refuse = (
    req: IncomingMessage,
    res: ServerResponse,
    status: 401 | 403,
    code: string,
    message: string,
    detail?: string,
    principalId?: string,
  ) => {
    refusals.push({ status, code, detail, principalId, path: req.url ?? '' });
    const requestId = randomUUID();
    const body =
      `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>${xmlEscape(message)}\n` +
      `RequestId:${requestId}\nTime:${storageTime()}</Message>` +
      (detail ? `<AuthenticationErrorDetail>${xmlEscape(detail)}</AuthenticationErrorDetail>` : '') +
      '</Error>';
    const headers: Record<string, string | number> = {
      'content-type': 'application/xml',
      'content-length': Buffer.byteLength(body),
      server: status === 401 ? 'Microsoft-HTTPAPI/2.0' : 'Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0',
      'x-ms-request-id': requestId,
      'x-ms-error-code': code,
      date: new Date().toUTCString(),
    };
    if (status === 401)
      headers['www-authenticate'] =
        `Bearer authorization_uri=https://login.microsoftonline.com/${tenant}/oauth2/authorize resource_id=${RESOURCE_ID}`;
    const version = req.headers['x-ms-version'];
    if (typeof version === 'string') headers['x-ms-version'] = version;
    req.resume(); // drain an unread request body
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  const unauthenticated = (req: IncomingMessage, res: ServerResponse, detail: string) =>
    refuse(
      req,
      res,
      401,
      'InvalidAuthenticationInfo',
      'Server failed to authenticate the request. Please refer to the information in the www-authenticate header.',
      detail,
    );

  /** The checked principal, or undefined when a refusal was sent. */
  const authenticate = async (req: IncomingMessage, res: ServerResponse, token: string): Promise<JWTPayload | undefined> => {
    let payload: JWTPayload;
    try {
      // The keys as published now (they roll); signature only here, the claims below with Storage's own details.
      const jwks = createLocalJWKSet({ keys: opts.entra.keys.map((k) => ({ ...k.publicJwk })) });
      ({ payload } = await jwtVerify(token, jwks, { algorithms: ['RS256'], clockTolerance: Number.MAX_SAFE_INTEGER }));
    } catch (e) {
      const detail =
        e instanceof joseErrors.JWSSignatureVerificationFailed || e instanceof joseErrors.JWKSNoMatchingKey
          ? 'Signature validation failed. Signature is invalid.'
          : 'Signature validation failed.';
      unauthenticated(req, res, detail);
      return undefined;
    }
    if (payload.iss !== issuer) {
      unauthenticated(req, res, 'Issuer validation failed. Issuer did not match.');
      return undefined;
    }
    const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    if (!aud.some((a) => typeof a === 'string' && audiences.has(a))) {
      unauthenticated(req, res, 'Audience validation failed. Audience did not match.');
      return undefined;
    }
    const now = Math.floor(Date.now() / 1000);
    if (typeof payload.exp !== 'number' || payload.exp <= now) {
      unauthenticated(req, res, 'Lifetime validation failed. The token is expired.');
      return undefined;
    }
    if (typeof payload.nbf === 'number' && payload.nbf > now) {
      unauthenticated(req, res, 'Lifetime validation failed. The token is not yet valid.');
      return undefined;
    }
    return payload;
  };

  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const up = httpsRequest(
      { host, port: opts.targetPort, method: req.method, path: req.url, headers: req.headers, agent: upstreamAgent },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.statusMessage, ur.rawHeaders);
        ur.pipe(res);
        ur.on('error', () => res.destroy());
      },
    );
    // Azurite gone (stopped): the caller sees the connection drop, as with the process itself.
    up.on('error', () => {
      req.socket.destroy();
    });
    req.pipe(up);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const auth = req.headers.authorization;
    if (!auth || !/^bearer\s/i.test(auth)) return forward(req, res);
    const path = new URL(req.url ?? '/', 'https://x').pathname;
    const segments = path.split('/').filter(Boolean).map(decodeURIComponent);
    if (segments[0] !== account) return forward(req, res); // Azurite answers an unknown account itself
    const payload = await authenticate(req, res, auth.replace(/^bearer\s+/i, '').trim());
    if (!payload) return;
    const oid = typeof payload.oid === 'string' ? payload.oid.toLowerCase() : undefined;
    const container = segments[1];
    const granted =
      oid !== undefined &&
      assignments.some(
        (a) => a.principalId === oid && (a.scope === 'account' || (container !== undefined && a.scope === container)),
      );
    if (!granted)
      return refuse(
        req,
        res,
        403,
        'AuthorizationPermissionMismatch',
        'This request is not authorized to perform this operation using this permission.',
        undefined,
        oid,
      );
    forward(req, res);
  };

  const cert = opts.ca.issueServer({ commonName: 'localhost', dnsNames: ['localhost'], ips: [host] });
  const server: Server = createServer({ cert: cert.certPem, key: cert.keyPem }, (req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    name: 'storage-auth',
    accountUrl: `https://${host}:${port}/${account}`,
    port,
    assignments,
    assignRole(a) {
      assignments.push({ ...a, principalId: a.principalId.toLowerCase() });
    },
    removeRoles(principalId, scope) {
      const p = principalId.toLowerCase();
      for (let i = assignments.length - 1; i >= 0; i--)
        if (assignments[i]!.principalId === p && (scope === undefined || assignments[i]!.scope === scope))
          assignments.splice(i, 1);
    },
    refusals,
    async close() {
      upstreamAgent.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * The data-role assignments infra/modules/storage.bicep makes, as the sandbox's role table: every
 * `Microsoft.Authorization/roleAssignments` whose `scope` is the storage account (`account`) or one of its containers
 * (the container's `name`), with a built-in Storage Blob data role, for a principal parameter mapped by `principals`
 * (e.g. `brokerPrincipalId` → the Function's identity). An unknown role or principal parameter throws, so the
 * sandbox never silently drops an assignment the deployment makes.
 */
export function storageRolesFromBicep(bicep: string, principals: Readonly<Record<string, string>>): StorageRoleAssignment[] {
  const resources = new Map<string, { type: string; body: string }>();
  const re = /^resource\s+(\w+)\s+'([^']+)'\s*=\s*\{([\s\S]*?)^\}/gm;
  for (let m = re.exec(bicep); m; m = re.exec(bicep)) resources.set(m[1]!, { type: m[2]!, body: m[3]! });
  const out: StorageRoleAssignment[] = [];
  for (const [symbol, r] of resources) {
    if (!r.type.startsWith('Microsoft.Authorization/roleAssignments@')) continue;
    const scopeSym = /^\s*scope:\s*(\w+)\s*$/m.exec(r.body)?.[1];
    const roleId = /roleDefinitions',\s*'([0-9a-f-]{36})'\)/.exec(r.body)?.[1];
    const principalParam = /^\s*principalId:\s*(\w+)\s*$/m.exec(r.body)?.[1];
    if (!scopeSym || !roleId || !principalParam)
      throw new Error(`storage.bicep: role assignment ${symbol} is not in the expected form`);
    const role = (Object.keys(STORAGE_ROLES) as StorageRole[]).find((k) => STORAGE_ROLES[k] === roleId);
    if (!role) throw new Error(`storage.bicep: role assignment ${symbol} has role ${roleId}, unknown to the sandbox`);
    const principalId = principals[principalParam];
    if (!principalId)
      throw new Error(`storage.bicep: role assignment ${symbol} names ${principalParam}, which the sandbox does not map`);
    const target = resources.get(scopeSym);
    if (!target) throw new Error(`storage.bicep: role assignment ${symbol} has scope ${scopeSym}, not a resource of the file`);
    let scope: string;
    if (target.type.startsWith('Microsoft.Storage/storageAccounts@')) scope = 'account';
    else if (target.type.startsWith('Microsoft.Storage/storageAccounts/blobServices/containers@')) {
      const name = /^\s*name:\s*'([^']+)'\s*$/m.exec(target.body)?.[1];
      if (!name) throw new Error(`storage.bicep: container ${scopeSym} has no literal name`);
      scope = name;
    } else throw new Error(`storage.bicep: role assignment ${symbol} is scoped to a ${target.type}`);
    out.push({ principalId: principalId.toLowerCase(), role, scope });
  }
  return out;
}
