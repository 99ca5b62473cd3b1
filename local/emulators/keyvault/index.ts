import { randomBytes, randomInt } from 'node:crypto';
import { createLocalJWKSet, jwtVerify, type JWTPayload } from 'jose';
import { startEmulator, type Emulator, type EmuRequest, type EmuResponse } from '../harness';
import type { EntraEmulator } from '../entra';
import { recordIssuedToken } from '../issued-tokens';
import type { SandboxCa } from '../../pki';

/**
 * Azure Key Vault secrets emulator (data plane, api-version 7.x / 2025-07-01), as `@azure/keyvault-secrets`
 * calls it: HTTPS only (certificate from the sandbox CA), the bearer challenge on unauthenticated
 * requests, access tokens verified as real Entra JWTs (signature against the Entra emulator's keys,
 * issuer of an allowed tenant, aud https://vault.azure.net, exp/nbf), Azure RBAC reduced to two roles
 * per object id: `reader` (Key Vault Secrets User: get, list) and `officer` (Key Vault Secrets Officer:
 * everything). Secrets: set, get (latest or by version), list, list versions (paged by nextLink),
 * update properties. Disabled versions answer 403 SecretDisabled; unknown ones 404 SecretNotFound.
 * Like the real service, `exp`/`nbf` are informational for secrets: get still returns them.
 */

export type KeyVaultRole = 'reader' | 'officer';

export interface StoredSecretVersion {
  readonly name: string;
  readonly version: string;
  readonly value: string;
  contentType?: string;
  tags?: Record<string, string>;
  enabled: boolean;
  /** Unix seconds. */
  nbf?: number;
  exp?: number;
  readonly created: number;
  updated: number;
}

export interface KeyVaultEmulator extends Emulator {
  /** https://127.0.0.1:PORT — the vault URL the client uses. */
  readonly vaultUrl: string;
  /** PEM of the CA that signed the server certificate. */
  readonly caPem: string;
  readonly tenantId: string;
  /** Injectable clock (ms) for created/updated. */
  now: () => number;
  /** Seed a new version directly (no auth), as an operator with the portal would. */
  seed(
    name: string,
    value: string,
    opts?: { contentType?: string; tags?: Record<string, string>; enabled?: boolean; exp?: Date },
  ): StoredSecretVersion;
  /** Latest version (enabled or not), or a given version. */
  read(name: string, version?: string): StoredSecretVersion | undefined;
  /** All versions of a secret, oldest first (the HTTP list is in version-id order, or shuffled). */
  versions(name: string): readonly StoredSecretVersion[];
  /** Order of `GET /secrets/{name}/versions`: `id` (ascending version id, as recorded; default) or `shuffled`. */
  versionOrder: 'id' | 'shuffled';
  names(): readonly string[];
  grant(objectId: string, role: KeyVaultRole): void;
  revoke(objectId: string): void;
}

export interface KeyVaultOptions {
  entra: EntraEmulator;
  ca: SandboxCa;
  port?: number;
  /** Tenant named in the challenge and accepted in tokens (default the Entra emulator's default). */
  tenantId?: string;
  /** Object id → role. */
  access?: Record<string, KeyVaultRole>;
  /** Page size of list operations when the caller gives no maxresults (the real default is 25). */
  pageSize?: number;
}

const KEY_VAULT_RESOURCE = 'https://vault.azure.net';
const API_VERSION = /^(7\.\d(-preview(\.\d+)?)?|20\d\d-\d\d-\d\d(-preview)?)$/;
const SECRET_NAME = /^[0-9a-zA-Z-]{1,127}$/;

function kvError(status: number, code: string, message: string, inner?: string, headers?: Record<string, string>): EmuResponse {
  return { status, headers, body: { error: { code, message, ...(inner ? { innererror: { code: inner } } : {}) } } };
}

/**
 * contentType: "The maximum length of this field is 255 characters"
 * (https://learn.microsoft.com/azure/key-vault/secrets/about-secrets). The service's refusal text is not in a
 * recording: the message is the emulator's own.
 */
const MAX_CONTENT_TYPE = 255;
const CONTENT_TYPE_TOO_LONG = `Property contentType must be at most ${MAX_CONTENT_TYPE} characters.`;

export async function startKeyVault(opts: KeyVaultOptions): Promise<KeyVaultEmulator> {
  const tenantId = (opts.tenantId ?? opts.entra.defaultTenant).toLowerCase();
  const secrets = new Map<string, StoredSecretVersion[]>();
  const access = new Map<string, KeyVaultRole>(Object.entries(opts.access ?? {}));
  const pageSize = opts.pageSize ?? 25;
  const server = opts.ca.issueServer({ commonName: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'] });
  let base = '';
  const clock: { now: () => number } = { now: Date.now };
  const nowS = () => Math.floor(clock.now() / 1000);

  const challenge = `Bearer authorization="https://login.microsoftonline.com/${tenantId}", resource="${KEY_VAULT_RESOURCE}"`;
  const unauthorized = (message: string): EmuResponse =>
    kvError(401, 'Unauthorized', message, undefined, { 'www-authenticate': challenge });

  const addVersion = (
    name: string,
    value: string,
    o: { contentType?: string; tags?: Record<string, string>; enabled?: boolean; nbf?: number; exp?: number },
  ): StoredSecretVersion => {
    const t = nowS();
    const v: StoredSecretVersion = {
      name,
      version: randomBytes(16).toString('hex'),
      value,
      contentType: o.contentType,
      tags: o.tags,
      enabled: o.enabled ?? true,
      nbf: o.nbf,
      exp: o.exp,
      created: t,
      updated: t,
    };
    // token-leak scan: a secret value is a credential, unless the secret publishes it in its own tags
    // (the rotation lease stores its owner id as both value and tag).
    if (!Object.values(o.tags ?? {}).includes(value)) recordIssuedToken(value);
    const list = secrets.get(name) ?? [];
    list.push(v);
    secrets.set(name, list);
    return v;
  };
  const latest = (name: string) => secrets.get(name)?.at(-1);
  const find = (name: string, version?: string) =>
    version ? secrets.get(name)?.find((v) => v.version === version) : latest(name);

  const attributes = (v: StoredSecretVersion) => ({
    enabled: v.enabled,
    ...(v.nbf !== undefined ? { nbf: v.nbf } : {}),
    ...(v.exp !== undefined ? { exp: v.exp } : {}),
    created: v.created,
    updated: v.updated,
    recoveryLevel: 'Recoverable+Purgeable',
    recoverableDays: 90,
  });
  const bundle = (v: StoredSecretVersion, withValue: boolean) => ({
    ...(withValue ? { value: v.value } : {}),
    id: `${base}/secrets/${v.name}/${v.version}`,
    ...(v.contentType !== undefined ? { contentType: v.contentType } : {}),
    attributes: attributes(v),
    ...(v.tags ? { tags: v.tags } : {}),
  });
  const item = (v: StoredSecretVersion, id: string) => ({
    id,
    attributes: attributes(v),
    ...(v.contentType !== undefined ? { contentType: v.contentType } : {}),
    ...(v.tags ? { tags: v.tags } : {}),
  });
  const notFound = (name: string, version?: string) =>
    kvError(
      404,
      'SecretNotFound',
      version
        ? `A secret with (name/id) ${name}/${version} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`
        : `A secret with (name/id) ${name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
    );

  const verify = async (req: EmuRequest): Promise<{ oid: string } | EmuResponse> => {
    const auth = req.header('authorization');
    if (!auth || !/^Bearer\s+\S+$/i.test(auth)) return unauthorized('AKV10000: Request is missing a Bearer or PoP token.');
    const token = auth.replace(/^Bearer\s+/i, '');
    let payload: JWTPayload;
    try {
      const jwks = createLocalJWKSet({ keys: opts.entra.keys.map((k) => k.publicJwk) });
      ({ payload } = await jwtVerify(token, jwks, { algorithms: ['RS256'], clockTolerance: 300 }));
    } catch {
      return unauthorized('AKV10032: Invalid issuer or signature.');
    }
    const tid = typeof payload.tid === 'string' ? payload.tid.toLowerCase() : '';
    const issuers = [`https://sts.windows.net/${tid}/`, `https://login.microsoftonline.com/${tid}/v2.0`];
    if (tid !== tenantId || !issuers.includes(String(payload.iss)))
      return unauthorized(`AKV10032: Invalid issuer. Expected one of https://sts.windows.net/${tenantId}/.`);
    const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    if (!aud.some((a) => a === KEY_VAULT_RESOURCE || a === `${KEY_VAULT_RESOURCE}/`)) {
      return unauthorized(`AKV10022: Invalid audience. Expected ${KEY_VAULT_RESOURCE}.`);
    }
    const oid = typeof payload.oid === 'string' ? payload.oid : undefined;
    if (!oid) return unauthorized('AKV10022: Token has no oid claim.');
    return { oid };
  };

  /** Auth + api-version + RBAC, then the operation. */
  const op =
    (need: 'read' | 'write', fn: (req: EmuRequest) => EmuResponse | Promise<EmuResponse>) =>
    async (req: EmuRequest): Promise<EmuResponse> => {
      const who = await verify(req);
      if ('status' in who) return who;
      const apiVersion = req.url.searchParams.get('api-version');
      if (!apiVersion) return kvError(400, 'BadParameter', 'The request URI must contain an api-version parameter.');
      if (!API_VERSION.test(apiVersion))
        return kvError(
          400,
          'BadParameter',
          `The specified version (${apiVersion}) is not recognized. Consider using the latest supported version (7.6).`,
        );
      const role = access.get(who.oid);
      if (!role || (need === 'write' && role !== 'officer')) {
        return kvError(
          403,
          'Forbidden',
          `Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid=;oid=${who.oid}\r\nAction: 'Microsoft.KeyVault/vaults/secrets/${need === 'write' ? 'setSecret' : 'getSecret'}/action'`,
          'ForbiddenByRbac',
        );
      }
      const name = req.params.name;
      if (name !== undefined && !SECRET_NAME.test(name)) {
        return kvError(
          400,
          'BadParameter',
          'The request URI contains an invalid name: secret names may contain only 0-9, a-z, A-Z, and -.',
        );
      }
      return fn(req);
    };

  const parseAttrs = (
    raw: unknown,
  ): { ok: true; enabled?: boolean; nbf?: number; exp?: number } | { ok: false; message: string } => {
    if (raw === undefined || raw === null) return { ok: true };
    if (typeof raw !== 'object') return { ok: false, message: 'Property attributes must be an object.' };
    const a = raw as Record<string, unknown>;
    const num = (k: string) => (a[k] === undefined || a[k] === null ? undefined : typeof a[k] === 'number' ? a[k] : NaN);
    const nbf = num('nbf');
    const exp = num('exp');
    if (Number.isNaN(nbf) || Number.isNaN(exp))
      return { ok: false, message: 'Property attributes.nbf/exp must be numbers (unix seconds).' };
    if (a.enabled !== undefined && typeof a.enabled !== 'boolean')
      return { ok: false, message: 'Property attributes.enabled must be a boolean.' };
    return { ok: true, enabled: a.enabled, nbf, exp };
  };
  const parseTags = (raw: unknown): Record<string, string> | undefined | false => {
    if (raw === undefined || raw === null) return undefined;
    if (typeof raw !== 'object' || Array.isArray(raw)) return false;
    const out: Record<string, string> = {};
    const entries = Object.entries(raw as Record<string, unknown>);
    if (entries.length > 15) return false;
    for (const [k, v] of entries) {
      if (typeof v !== 'string' || k.length > 512 || v.length > 256) return false;
      out[k] = v;
    }
    return out;
  };

  const page = <T>(req: EmuRequest, all: readonly T[], path: string) => {
    const max = Number(req.url.searchParams.get('maxresults') ?? pageSize);
    const size = Number.isInteger(max) && max >= 1 && max <= 25 ? max : pageSize;
    const skip = Number(req.url.searchParams.get('$skiptoken') ?? '0') || 0;
    const slice = all.slice(skip, skip + size);
    const more = skip + size < all.length;
    const nextLink = more
      ? `${base}${path}?api-version=${req.url.searchParams.get('api-version') ?? '7.6'}&$skiptoken=${skip + size}&maxresults=${size}`
      : null;
    return { value: slice, nextLink };
  };

  const emu = await startEmulator({
    name: 'keyvault',
    port: opts.port,
    tls: { key: server.keyPem, cert: server.certPem },
    errorBody: (status, message) => ({
      error: { code: status === 429 ? 'Throttled' : status >= 500 ? 'InternalServerError' : 'BadRequest', message },
    }),
    routes: [
      {
        method: 'PUT',
        path: '/secrets/:name',
        name: 'secrets.set',
        handle: op('write', (req) => {
          const body = req.json();
          if (!body || typeof body !== 'object') return kvError(400, 'BadParameter', 'The request body must be a JSON object.');
          const b = body as Record<string, unknown>;
          if (typeof b.value !== 'string')
            return kvError(400, 'BadParameter', 'Property value is required and must be a string.');
          if (Buffer.byteLength(b.value) > 25 * 1024)
            return kvError(400, 'BadParameter', 'Secret value exceeds the 25 KB limit.');
          if (b.contentType !== undefined && typeof b.contentType !== 'string')
            return kvError(400, 'BadParameter', 'Property contentType must be a string.');
          if (typeof b.contentType === 'string' && b.contentType.length > MAX_CONTENT_TYPE)
            return kvError(400, 'BadParameter', CONTENT_TYPE_TOO_LONG);
          const tags = parseTags(b.tags);
          if (tags === false) return kvError(400, 'BadParameter', 'Tags must be at most 15 string pairs.');
          const attrs = parseAttrs(b.attributes);
          if (!attrs.ok) return kvError(400, 'BadParameter', attrs.message);
          const v = addVersion(req.params.name!, b.value, {
            contentType: b.contentType,
            tags,
            enabled: attrs.enabled,
            nbf: attrs.nbf,
            exp: attrs.exp,
          });
          return { status: 200, body: bundle(v, true) };
        }),
      },
      {
        method: 'GET',
        path: '/secrets',
        name: 'secrets.list',
        handle: op('read', (req) => {
          const items = [...secrets.entries()]
            .filter(([, vs]) => vs.length > 0)
            .map(([n, vs]) => item(vs.at(-1)!, `${base}/secrets/${n}`));
          return { status: 200, body: page(req, items, '/secrets') };
        }),
      },
      {
        method: 'GET',
        path: '/secrets/:name/versions',
        name: 'secrets.versions',
        handle: op('read', (req) => {
          const name = req.params.name!;
          // A secret never created lists as 200 with no versions (not 404), and versions come in version-id order,
          // not creation order: Azure/azure-sdk-assets js/sdk/keyvault/keyvault-secrets/recordings/node/
          // secret_client__list_secrets_in_various_ways/recording_can_list_secret_versions_non_existing.json and
          // recording_can_retrieve_all_versions_of_a_secret_by_page.json. `versionOrder = 'shuffled'` (tests) lists
          // them in a random order, since the service guarantees none (Azure/azure-sdk-for-net #45792).
          const vs = [...(secrets.get(name) ?? [])];
          if (handle.versionOrder === 'shuffled') {
            for (let i = vs.length - 1; i > 0; i--) {
              const j = randomInt(i + 1);
              [vs[i], vs[j]] = [vs[j]!, vs[i]!];
            }
          } else vs.sort((a, b) => (a.version < b.version ? -1 : a.version > b.version ? 1 : 0));
          return {
            status: 200,
            body: page(
              req,
              vs.map((v) => item(v, `${base}/secrets/${v.name}/${v.version}`)),
              `/secrets/${name}/versions`,
            ),
          };
        }),
      },
      {
        method: 'GET',
        path: /^\/secrets\/(?<name>[^/]+)(?:\/(?<version>[^/]*))?$/,
        name: 'secrets.get',
        handle: op('read', (req) => {
          const name = req.params.name!;
          const version = req.params.version || undefined;
          const v = find(name, version);
          if (!v) return notFound(name, version);
          if (!v.enabled)
            return kvError(403, 'Forbidden', 'Operation get is not allowed on a disabled secret.', 'SecretDisabled');
          return { status: 200, body: bundle(v, true) };
        }),
      },
      {
        method: 'PATCH',
        path: /^\/secrets\/(?<name>[^/]+)(?:\/(?<version>[^/]*))?$/,
        name: 'secrets.update',
        handle: op('write', (req) => {
          const name = req.params.name!;
          const version = req.params.version || undefined;
          const v = find(name, version);
          if (!v) return notFound(name, version);
          const body = req.json();
          if (!body || typeof body !== 'object') return kvError(400, 'BadParameter', 'The request body must be a JSON object.');
          const b = body as Record<string, unknown>;
          const tags = parseTags(b.tags);
          if (tags === false) return kvError(400, 'BadParameter', 'Tags must be at most 15 string pairs.');
          const attrs = parseAttrs(b.attributes);
          if (!attrs.ok) return kvError(400, 'BadParameter', attrs.message);
          if (b.contentType !== undefined && b.contentType !== null) {
            if (typeof b.contentType !== 'string') return kvError(400, 'BadParameter', 'Property contentType must be a string.');
            if (b.contentType.length > MAX_CONTENT_TYPE) return kvError(400, 'BadParameter', CONTENT_TYPE_TOO_LONG);
            v.contentType = b.contentType;
          }
          if (tags !== undefined) v.tags = tags;
          if (attrs.enabled !== undefined) v.enabled = attrs.enabled;
          if (attrs.nbf !== undefined) v.nbf = attrs.nbf;
          if (attrs.exp !== undefined) v.exp = attrs.exp;
          v.updated = nowS();
          return { status: 200, body: bundle(v, false) };
        }),
      },
    ],
  });
  base = emu.url;

  const initialOrder: KeyVaultEmulator['versionOrder'][] = ['id'];
  const handle: KeyVaultEmulator = Object.assign(emu, {
    now: Date.now,
    versionOrder: initialOrder[0]!,
    vaultUrl: emu.url,
    caPem: opts.ca.certPem,
    tenantId,
    seed(
      name: string,
      value: string,
      o: { contentType?: string; tags?: Record<string, string>; enabled?: boolean; exp?: Date } = {},
    ) {
      return addVersion(name, value, { ...o, exp: o.exp ? Math.floor(o.exp.getTime() / 1000) : undefined });
    },
    read: find,
    versions: (name: string) => [...(secrets.get(name) ?? [])],
    names: () => [...secrets.keys()],
    grant: (oid: string, role: KeyVaultRole) => void access.set(oid, role),
    revoke: (oid: string) => void access.delete(oid),
  });
  clock.now = () => handle.now();
  return handle;
}
