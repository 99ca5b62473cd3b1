import { googleRefusal } from '../google/errors';
import { SingleFlight } from '../lib/token-cache';
import { cloudSqlConfig } from '../config/cloudsql';
import { BrokerError } from '../errors';
import { fetchWithTimeout, retryAfterSeconds, upstreamStatusFailure } from '../upstream/failure';

/**
 * What a backend needs to log in to a Cloud SQL instance with plain `pg` over TLS and the IAM token as the
 * password, from the SQL Admin API's `connectSettings`
 * (https://cloud.google.com/sql/docs/postgres/admin-api/rest/v1beta4/connect/get): the instance's IP addresses,
 * its DNS name when it has one, and the server CA certificate that signs the instance's server certificate.
 * Cached per instance (the CA changes only on a CA rotation, which Google announces in advance); concurrent
 * misses share one call. The call is authorised with the same sqlservice.login token being issued.
 */

export interface InstanceConnectInfo {
  readonly ipAddresses: readonly { readonly type: string; readonly ipAddress: string }[];
  readonly dnsName?: string;
  readonly serverCaCert: string;
  /** Expected CN of a legacy per-instance server certificate: PROJECT:INSTANCE. */
  readonly serverCertCommonName: string;
}

const TTL_MS = 60 * 60 * 1000;
/** A failed look-up is remembered this long, so an unreachable SQL Admin API does not slow every exchange. */
const FAILURE_TTL_MS = 30 * 1000;
const cache = new Map<string, { info: InstanceConnectInfo; until: number }>();
const failures = new Map<string, { error: unknown; until: number }>();
const flights = new SingleFlight<InstanceConnectInfo>();

/** Forget the cache (tests). */
export function clearConnectInfoCache(): void {
  cache.clear();
  failures.clear();
}

interface ConnectSettingsBody {
  serverCaCert?: { cert?: unknown };
  ipAddresses?: { type?: unknown; ipAddress?: unknown }[];
  dnsName?: unknown;
}

function parse(body: ConnectSettingsBody, project: string, instance: string): InstanceConnectInfo {
  const cert = body.serverCaCert?.cert;
  const ips = Array.isArray(body.ipAddresses) ? body.ipAddresses : [];
  if (typeof cert !== 'string' || !cert.includes('BEGIN CERTIFICATE')) {
    throw new BrokerError('upstream_error', 'The Cloud SQL Admin API answered connect settings without a server CA certificate.');
  }
  const ipAddresses = ips
    .filter((i): i is { type: string; ipAddress: string } => typeof i.type === 'string' && typeof i.ipAddress === 'string')
    .map((i) => ({ type: i.type, ipAddress: i.ipAddress }));
  const dnsName = typeof body.dnsName === 'string' && body.dnsName ? body.dnsName : undefined;
  if (ipAddresses.length === 0 && !dnsName) {
    throw new BrokerError('upstream_error', 'The Cloud SQL Admin API answered connect settings without an address.');
  }
  return { ipAddresses, dnsName, serverCaCert: cert, serverCertCommonName: `${project}:${instance}` };
}

/**
 * The connect details of PROJECT:REGION:INSTANCE (cached for an hour). A failed look-up is logged once, by the
 * request whose call failed (`onFailure`), and then answered from memory for FAILURE_TTL_MS without a log line.
 */
export async function connectInfo(
  connectionName: string,
  /** The Admin API token (sqlservice.admin), asked only on a cache miss. */
  accessToken: () => Promise<string>,
  timeoutMs: number,
  now = Date.now(),
  onFailure?: (e: unknown) => void,
): Promise<InstanceConnectInfo> {
  const known = knownConnectInfo(connectionName, now);
  if (known) return known;
  if (known === null) throw failures.get(connectionName)!.error;
  return flights.run(connectionName, async () => {
    try {
      return await lookUp(connectionName, await accessToken(), timeoutMs);
    } catch (e) {
      failures.set(connectionName, { error: e, until: Date.now() + FAILURE_TTL_MS });
      onFailure?.(e);
      throw e;
    }
  });
}

/**
 * What `connectInfo` would answer from memory, without a promise: the cached details, `null` while a failed look-up
 * is remembered (connectInfo rejects with its error), undefined when they must be looked up (then connectInfo).
 */
export function knownConnectInfo(connectionName: string, now: number): InstanceConnectInfo | null | undefined {
  const hit = cache.get(connectionName);
  if (hit && hit.until > now) return hit.info;
  const failed = failures.get(connectionName);
  return failed && failed.until > now ? null : undefined;
}

async function lookUp(connectionName: string, accessToken: string, timeoutMs: number): Promise<InstanceConnectInfo> {
  {
    const [project, , instance] = connectionName.split(':') as [string, string, string];
    const base = cloudSqlConfig.get().sqlAdminEndpoint.replace(/\/+$/, '');
    const url = `${base}/v1beta4/projects/${encodeURIComponent(project)}/instances/${encodeURIComponent(instance)}/connectSettings`;
    const res = await fetchWithTimeout(
      'Cloud SQL Admin API',
      url,
      { headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json' } },
      timeoutMs,
    );
    if (!res.ok) {
      const failure = upstreamStatusFailure('Cloud SQL Admin API', res.status, retryAfterSeconds(res.headers.get('retry-after')));
      const errBody: unknown = await res.json().catch(() => undefined);
      const refusal = googleRefusal(errBody, res.headers.get('www-authenticate'));
      if (!refusal) throw failure;
      throw new BrokerError(failure.code, failure.message, {
        retryAfterSeconds: failure.retryAfterSeconds,
        detail: { ...(failure.detail ?? {}), refusal },
        cause: { httpStatus: res.status, refusal },
      });
    }
    let body: ConnectSettingsBody;
    try {
      body = (await res.json()) as ConnectSettingsBody;
    } catch (e) {
      throw new BrokerError('upstream_error', 'The Cloud SQL Admin API answered with a body that is not JSON.', { cause: e });
    }
    const info = parse(body, project, instance);
    cache.set(connectionName, { info, until: Date.now() + TTL_MS });
    failures.delete(connectionName);
    return info;
  }
}

/**
 * When a backend should fetch a new token, in seconds from now: the Cloud SQL Node.js connector's refresh rule
 * (src/time.ts getRefreshInterval, https://github.com/GoogleCloudPlatform/cloud-sql-nodejs-connector/blob/main/src/time.ts):
 * half the remaining life when at least an hour is left, else four minutes before expiry, else now.
 */
export function refreshAfterSeconds(expiresInSeconds: number): number {
  if (expiresInSeconds >= 3600) return Math.floor(expiresInSeconds / 2);
  if (expiresInSeconds < 240) return 0;
  return Math.floor(expiresInSeconds - 240);
}
