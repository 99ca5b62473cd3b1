import { startEmulator, type Emulator } from '../harness';
import { createAuth } from './auth';
import { createKeyVaultContext, type KeyVaultOptions, type KeyVaultRole, type StoredSecretVersion } from './context';
import { secretRoutes } from './routes-secrets';

export type { KeyVaultOptions, KeyVaultRole, StoredSecretVersion } from './context';

/**
 * Azure Key Vault secrets emulator (data plane, api-version 7.x / 2025-07-01), as `@azure/keyvault-secrets`
 * calls it: HTTPS only (certificate from the sandbox CA), the bearer challenge on unauthenticated
 * requests, access tokens verified as real Entra JWTs (signature against the Entra emulator's keys,
 * issuer of an allowed tenant, aud https://vault.azure.net, exp/nbf), Azure RBAC reduced to two roles
 * per object id: `reader` (Key Vault Secrets User: get, list) and `officer` (Key Vault Secrets Officer:
 * everything). Secrets: set, get (latest or by version), list, list versions (paged by nextLink),
 * update properties. Disabled versions answer 403 SecretDisabled; unknown ones 404 SecretNotFound.
 * Like the real service, `exp`/`nbf` are informational for secrets: get still returns them.
 *
 * This file wires the vault together; the behaviour lives beside it: context.ts (state, error shape, bundles, paging),
 * auth.ts (Entra token verification, api-version, RBAC), routes-secrets.ts (the secret operations).
 */

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

export async function startKeyVault(opts: KeyVaultOptions): Promise<KeyVaultEmulator> {
  const ctx = createKeyVaultContext(opts);
  const { tenantId, secrets, access, clock, addVersion, find } = ctx;
  const { op } = createAuth(ctx, opts.entra);
  const server = opts.ca.issueServer({ commonName: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'] });

  const emu = await startEmulator({
    name: 'keyvault',
    port: opts.port,
    tls: { key: server.keyPem, cert: server.certPem },
    errorBody: (status, message) => ({
      error: { code: status === 429 ? 'Throttled' : status >= 500 ? 'InternalServerError' : 'BadRequest', message },
    }),
    routes: secretRoutes(ctx, op),
  });
  ctx.base = emu.url;

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
  ctx.versionOrder = () => handle.versionOrder;
  return handle;
}
