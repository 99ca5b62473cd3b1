import type { LookupFunction } from 'node:net';
import { Agent, request } from 'node:https';
import type { TokenCredential } from '@azure/identity';
import { BrokerError } from '../../errors';
import { networkFailure, retryAfterSeconds, upstreamStatusFailure } from '../../upstream/failure';
import { sharedHttpsAgent } from '../../upstream/local-endpoints';

/**
 * The Cosmos DB resource provider's key operations on Azure Resource Manager (management plane), with the
 * Function's managed identity (audience https://management.azure.com): `listKeys`, and `regenerateKey`, which
 * answers 200 (done) or 202 Accepted and completes asynchronously (polled through `Azure-AsyncOperation`, honouring
 * `Retry-After` when present; real ARM sends none, so without it the wait backs off 1 s, 2 s, 4 s, … capped at
 * 8 s). The operation URL may be on a regional host (`https://<region>.management.azure.com`, the 2024-11-15
 * regenerateKey example of azure-rest-api-specs): see `isArmOperationUrl`. Every call has a client-side deadline;
 * the whole regeneration has its own.
 * References: https://learn.microsoft.com/rest/api/cosmos-db-resource-provider/ (Database Accounts: List Keys,
 * Regenerate Key), https://learn.microsoft.com/azure/azure-resource-manager/management/async-operations.
 */

const ARM_SCOPE = 'https://management.azure.com/.default';
const ARM_API_VERSION = '2024-11-15';

export type MasterKeyKind = 'primary' | 'secondary';

export interface AccountKeys {
  readonly primary: string;
  readonly secondary: string;
}

export interface ManagementOptions {
  readonly endpoint: string;
  readonly credential: TokenCredential;
  readonly timeoutMs: number;
  /** PEM CA (local development, loopback only). */
  readonly ca?: string;
  /** Longest a regeneration may take, polling included (default 5 min). */
  readonly operationDeadlineMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Local development and tests only: name resolution for loopback `*.localhost` names (no DNS); production never sets it. */
  readonly lookup?: LookupFunction;
}

interface ArmResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: unknown;
}

export class CosmosManagement {
  private readonly agent: Agent;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(private readonly opts: ManagementOptions) {
    // ARM calls of one rotation (list, regenerate, poll the operation) reuse one TLS session: the process's
    // keep-alive agent (a custom lookup gets an agent of its own).
    this.agent = opts.lookup
      ? new Agent({ keepAlive: true, timeout: 30_000, lookup: opts.lookup, ...(opts.ca ? { ca: opts.ca } : {}) })
      : sharedHttpsAgent(opts.ca);
    this.sleep = opts.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  async listKeys(resourceId: string): Promise<AccountKeys> {
    const r = await this.call('POST', `${this.opts.endpoint}${resourceId}/listKeys?api-version=${ARM_API_VERSION}`);
    if (r.status !== 200) throw armFailure(r.status, 'listKeys', header(r, 'retry-after'));
    const b = r.body as { primaryMasterKey?: unknown; secondaryMasterKey?: unknown };
    if (typeof b?.primaryMasterKey !== 'string' || typeof b.secondaryMasterKey !== 'string') {
      throw new BrokerError('upstream_error', 'Azure Resource Manager answered listKeys without the keys.');
    }
    return { primary: b.primaryMasterKey, secondary: b.secondaryMasterKey };
  }

  /** Regenerate one master key and wait for the asynchronous operation to succeed. */
  async regenerate(resourceId: string, kind: MasterKeyKind): Promise<void> {
    const deadline = Date.now() + (this.opts.operationDeadlineMs ?? 300_000);
    const r = await this.call('POST', `${this.opts.endpoint}${resourceId}/regenerateKey?api-version=${ARM_API_VERSION}`, {
      keyKind: kind,
    });
    if (r.status === 200) return;
    if (r.status !== 202) throw armFailure(r.status, 'regenerateKey', header(r, 'retry-after'));
    const statusUrl = header(r, 'azure-asyncoperation') ?? header(r, 'location');
    if (!statusUrl)
      throw new BrokerError('upstream_error', 'Azure Resource Manager accepted regenerateKey without an operation to poll.');
    this.checkOperationHost(statusUrl);
    let attempt = 0;
    let wait = retryAfterMs(r, attempt);
    for (;;) {
      if (Date.now() + wait > deadline) {
        throw new BrokerError('upstream_timeout', 'The Cosmos key regeneration did not complete in time.');
      }
      await this.sleep(wait);
      const p = await this.call('GET', statusUrl);
      if (p.status === 204) return; // Location polling: done
      attempt++;
      if (p.status === 202) {
        wait = retryAfterMs(p, attempt);
        continue;
      }
      if (p.status !== 200) throw armFailure(p.status, 'the regenerateKey operation', header(p, 'retry-after'));
      const status = (p.body as { status?: unknown })?.status;
      if (status === 'Succeeded' || (status === undefined && !header(r, 'azure-asyncoperation'))) return;
      if (status === 'Failed' || status === 'Canceled') {
        throw new BrokerError('upstream_error', `The Cosmos key regeneration ended as ${status}.`);
      }
      wait = retryAfterMs(p, attempt);
    }
  }

  /** Polling URLs come from ARM's answer: never follow one to another host (the bearer token would go with it). */
  private checkOperationHost(u: string): void {
    if (!isArmOperationUrl(u, this.opts.endpoint))
      throw new BrokerError('upstream_error', 'Azure Resource Manager answered an operation URL on another host.');
  }

  private async call(method: 'GET' | 'POST', url: string, body?: unknown): Promise<ArmResponse> {
    const timeoutMs = this.opts.timeoutMs;
    let token: { token: string } | null;
    try {
      token = await this.opts.credential.getToken(ARM_SCOPE, { abortSignal: AbortSignal.timeout(timeoutMs) });
    } catch (e) {
      throw new BrokerError('upstream_unavailable', 'The managed identity endpoint did not give a management token.', {
        cause: e,
      });
    }
    if (!token?.token)
      throw new BrokerError('upstream_unavailable', 'The managed identity endpoint returned no management token.');
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<ArmResponse>((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          agent: this.agent,
          timeout: timeoutMs,
          headers: {
            authorization: `Bearer ${token.token}`,
            accept: 'application/json',
            ...(payload !== undefined
              ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
              : { 'content-length': 0 }),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text ? (JSON.parse(text) as unknown) : undefined;
            } catch {
              parsed = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
          });
          res.on('error', (e) => reject(networkFailure('Azure Resource Manager', e)));
        },
      );
      const timer = setTimeout(
        () => req.destroy(new BrokerError('upstream_timeout', 'Azure Resource Manager did not answer in time.')),
        timeoutMs,
      );
      timer.unref();
      req.on('close', () => clearTimeout(timer));
      req.on('timeout', () => req.destroy(new BrokerError('upstream_timeout', 'Azure Resource Manager did not answer in time.')));
      req.on('error', (e) => reject(e instanceof BrokerError ? e : networkFailure('Azure Resource Manager', e)));
      req.end(payload);
    });
  }
}

function header(r: ArmResponse, name: string): string | undefined {
  const v = r.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Whether ARM's operation URL may receive the management token: HTTPS, the configured endpoint's port, no
 * credentials in the URL, and the host is the configured management host itself or exactly one regional label in
 * front of it (`centraluseuap.management.azure.com` for `management.azure.com`; the same rule holds for a sovereign
 * cloud's management host). An IP-literal endpoint (a loopback development endpoint) has no regional form: same host only.
 */
export function isArmOperationUrl(u: string, endpoint: string): boolean {
  let url: URL;
  let base: URL;
  try {
    url = new URL(u);
    base = new URL(endpoint);
  } catch {
    return false;
  }
  if (url.protocol !== 'https:' || base.protocol !== 'https:') return false;
  if (url.username || url.password || url.port !== base.port) return false;
  const host = url.hostname.toLowerCase();
  const root = base.hostname.toLowerCase();
  if (host === root) return true;
  const isIp = /^[0-9.]+$/.test(root) || root.startsWith('[');
  if (isIp || !host.endsWith(`.${root}`)) return false;
  return /^[a-z0-9]{1,63}$/.test(host.slice(0, -root.length - 1));
}

/** Retry-After when ARM sends one (capped at 60 s); otherwise a bounded backoff: 1, 2, 4, 8, 8, … s. */
function retryAfterMs(r: ArmResponse, attempt: number): number {
  const raw = header(r, 'retry-after');
  const s = raw === undefined || raw.trim() === '' ? NaN : Number(raw);
  if (Number.isFinite(s) && s >= 0) return Math.min(60, s) * 1000;
  return Math.min(8000, 1000 * 2 ** Math.min(attempt, 3));
}

/**
 * Map an ARM error status to the broker's codes (exported for its table test; ARM's text is never read). ARM's own
 * Retry-After (seconds or an HTTP date) wins over the error table's default, as for every other upstream.
 */
export function armFailure(status: number, what: string, retryAfter?: string): BrokerError {
  const wait = retryAfterSeconds(retryAfter);
  if (status === 401 || status === 403)
    return new BrokerError('upstream_denied', `Azure Resource Manager refused ${what} (HTTP ${status}).`);
  if (status === 404)
    return new BrokerError(
      'target_misconfigured',
      `The Cosmos account of ${what} does not exist (check COSMOS_MANAGED_ACCOUNTS).`,
    );
  if (status === 429)
    return new BrokerError('upstream_throttled', 'Azure Resource Manager is throttling requests.', { retryAfterSeconds: wait });
  if (status >= 400 && status < 500)
    return new BrokerError('upstream_error', `Azure Resource Manager rejected ${what} (HTTP ${status}).`);
  return upstreamStatusFailure('Azure Resource Manager', status, wait);
}
