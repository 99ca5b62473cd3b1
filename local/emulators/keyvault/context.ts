import { randomBytes } from 'node:crypto';
import type { EmuRequest, EmuResponse } from '../harness';
import type { EntraEmulator } from '../entra';
import { recordIssuedToken } from '../issued-tokens';
import type { SandboxCa } from '../../pki';

/**
 * The state of one emulated vault (secret versions, role assignments, the clock, the vault URL) and the helpers
 * the route modules share: the service's error shape, secret bundles and list items, paging.
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

export const KEY_VAULT_RESOURCE = 'https://vault.azure.net';
export const API_VERSION = /^(7\.\d(-preview(\.\d+)?)?|20\d\d-\d\d-\d\d(-preview)?)$/;
export const SECRET_NAME = /^[0-9a-zA-Z-]{1,127}$/;

export function kvError(
  status: number,
  code: string,
  message: string,
  inner?: string,
  headers?: Record<string, string>,
): EmuResponse {
  return { status, headers, body: { error: { code, message, ...(inner ? { innererror: { code: inner } } : {}) } } };
}

/**
 * contentType: "The maximum length of this field is 255 characters"
 * (https://learn.microsoft.com/azure/key-vault/secrets/about-secrets). The service's refusal text is not in a
 * recording: the message is the emulator's own.
 */
export const MAX_CONTENT_TYPE = 255;
export const CONTENT_TYPE_TOO_LONG = `Property contentType must be at most ${MAX_CONTENT_TYPE} characters.`;

export function createKeyVaultContext(opts: KeyVaultOptions) {
  const tenantId = (opts.tenantId ?? opts.entra.defaultTenant).toLowerCase();
  const secrets = new Map<string, StoredSecretVersion[]>();
  const access = new Map<string, KeyVaultRole>(Object.entries(opts.access ?? {}));
  const pageSize = opts.pageSize ?? 25;
  const clock: { now: () => number } = { now: Date.now };
  const nowS = () => Math.floor(clock.now() / 1000);

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
    id: `${ctx.base}/secrets/${v.name}/${v.version}`,
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

  const page = <T>(req: EmuRequest, all: readonly T[], path: string) => {
    const max = Number(req.url.searchParams.get('maxresults') ?? pageSize);
    const size = Number.isInteger(max) && max >= 1 && max <= 25 ? max : pageSize;
    const skip = Number(req.url.searchParams.get('$skiptoken') ?? '0') || 0;
    const slice = all.slice(skip, skip + size);
    const more = skip + size < all.length;
    const nextLink = more
      ? `${ctx.base}${path}?api-version=${req.url.searchParams.get('api-version') ?? '7.6'}&$skiptoken=${skip + size}&maxresults=${size}`
      : null;
    return { value: slice, nextLink };
  };

  const ctx = {
    tenantId,
    secrets,
    access,
    clock,
    nowS,
    addVersion,
    find,
    bundle,
    item,
    notFound,
    page,
    /** The vault URL, known once the server listens. */
    base: '',
    /** The emulator handle's `versionOrder` (wired by index.ts). */
    versionOrder: (): 'id' | 'shuffled' => 'id',
  };
  return ctx;
}

export type KeyVaultContext = ReturnType<typeof createKeyVaultContext>;
