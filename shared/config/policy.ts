import { AZURE_CLIENT_ID } from './identity';
import { ConfigError } from '../errors';
import { GUID, defineSection, type SettingSpec } from './settings';
import { int, optionalStr, url } from './setting-types';

/** A blob URL: https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB (or a loopback Azurite path-style URL). */
export function blobUrl(name: string, doc: string): SettingSpec<string> & { optional: true } {
  const base = url(name, { doc, protocols: ['https:'] });
  return {
    ...base,
    optional: true,
    parse(raw) {
      const v = base.parse(raw);
      const u = new URL(v);
      if (u.search || u.hash || u.username || u.password)
        throw new Error('must be a plain blob URL (no query, fragment or credentials: the broker uses its managed identity)');
      const segments = u.pathname.split('/').filter(Boolean);
      const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
      // Azure: /CONTAINER/BLOB; Azurite (loopback, path-style): /ACCOUNT/CONTAINER/BLOB.
      if (segments.length < (loopback ? 3 : 2))
        throw new Error('must name a container and a blob, e.g. https://ACCOUNT.blob.core.windows.net/policy/policy.json');
      return v;
    },
  };
}

/** The live policy (Blob Storage or a file) and the admin identity. */
export const policyConfig = defineSection('policy', {
  url: blobUrl(
    'BROKER_POLICY_URL',
    "Blob URL of the live access policy (the Function's own storage account, read and written with its managed identity); when set it replaces BROKER_POLICY_PATH",
  ),
  caFile: optionalStr('BROKER_POLICY_CA_FILE', {
    doc: 'PEM CA bundle trusted for the policy blob endpoint; local development only: honoured only for a loopback endpoint (Azurite)',
  }),
  refreshSeconds: int('BROKER_POLICY_REFRESH_SECONDS', {
    doc: 'Most time between two conditional reads (If-None-Match) of the policy blob: a change is effective on every instance within this interval',
    default: '5',
    min: 1,
    max: 300,
  }),
  maxStaleSeconds: int('BROKER_POLICY_MAX_STALE_SECONDS', {
    doc: 'While the policy store cannot be read, the last good policy is served for at most this long after it was last confirmed, then requests answer 503 policy_unavailable (never allow)',
    default: '300',
    min: 0,
    max: 86400,
  }),
  adminAudiences: optionalStr('BROKER_ADMIN_AUDIENCES', {
    doc: "Accepted `aud` of an admin's token on /api/admin/* (comma-separated; unset: the broker's own audiences, BROKER_CLIENT_AUDIENCES). Never the subject audiences",
  }),
  adminTenant: {
    ...optionalStr('BROKER_ADMIN_TENANT', {
      doc: 'The one Entra tenant whose tokens may administer the broker (unset: the only tenant of BROKER_ALLOWED_TENANTS; required when it lists several)',
    }),
    parse(raw: string) {
      if (!GUID.test(raw)) throw new Error('must be a tenant GUID');
      return raw.toLowerCase();
    },
  },
  clientId: AZURE_CLIENT_ID,
  storageTimeoutMs: int('BROKER_POLICY_TIMEOUT_MS', {
    doc: 'Deadline of one policy store call (read, write, lease); a read that misses it counts as the store being unreachable',
    default: '3000',
    min: 100,
    max: 30000,
  }),
});

export type PolicyConfig = ReturnType<typeof policyConfig.get>;

/** The container URL and blob name of a blob URL. */
export function splitBlobUrl(blob: string): { containerUrl: string; blobName: string } {
  const u = new URL(blob);
  const segments = u.pathname.split('/').filter(Boolean);
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
  const prefix = loopback ? 2 : 1; // Azurite: /ACCOUNT/CONTAINER
  return {
    containerUrl: `${u.origin}/${segments.slice(0, prefix).join('/')}`,
    blobName: decodeURIComponent(segments.slice(prefix).join('/')),
  };
}

/** The rotation lock blob: ROTATION_LOCK_URL, else `rotation-lock` beside the policy blob. */
export function lockBlobUrl(lockUrl: string | undefined, cfg: PolicyConfig): string {
  if (lockUrl) return lockUrl;
  if (!cfg.url)
    throw new ConfigError('policy', [
      'ROTATION_LOCK_URL is required for a rotation run when BROKER_POLICY_URL is not set (the lease lives in Blob Storage)',
    ]);
  return `${splitBlobUrl(cfg.url).containerUrl}/rotation-lock`;
}
