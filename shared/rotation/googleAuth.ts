import type { TokenCredential } from '@azure/core-auth';
import { BrokerError } from '../errors';
import { fetchWithTimeout, upstreamStatusFailure } from '../upstream';
import { CLOUD_PLATFORM_SCOPE } from './prove';
import type { GoogleTokenSource } from './iam';

/**
 * The rotation's own Google identity, keyless: the Function's managed-identity token (for the workload
 * identity provider's audience) is exchanged at Google STS (RFC 8693) for a federated access token with
 * the cloud-platform scope, used directly on the IAM API (the pool principal holds
 * roles/iam.serviceAccountKeyAdmin on the managed accounts). Cached until 5 minutes before expiry.
 */
export class FederatedTokenSource implements GoogleTokenSource {
  private cached?: { token: string; expiresAtMs: number };
  private inflight?: Promise<string>;

  constructor(
    private readonly opts: {
      credential: TokenCredential;
      entraResource: string;
      stsUrl: string;
      audience: string;
      timeoutMs: number;
      now?: () => number;
    },
  ) {}

  getAccessToken(): Promise<string> {
    const now = (this.opts.now ?? Date.now)();
    if (this.cached && this.cached.expiresAtMs - 300_000 > now) return Promise.resolve(this.cached.token);
    this.inflight ??= this.fetch().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async fetch(): Promise<string> {
    let subject: string;
    try {
      const t = await this.opts.credential.getToken(`${this.opts.entraResource}/.default`, { abortSignal: AbortSignal.timeout(this.opts.timeoutMs) });
      if (!t) throw new Error('no token');
      subject = t.token;
    } catch (e) {
      throw new BrokerError('upstream_unavailable', "The broker's managed identity is unavailable.", { cause: e, retryAfterSeconds: 5 });
    }
    const res = await fetchWithTimeout(
      'Google STS',
      this.opts.stsUrl,
      {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          audience: this.opts.audience,
          scope: CLOUD_PLATFORM_SCOPE,
          requested_token_type: 'urn:ietf:params:oauth:token-type:access_token',
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          subject_token: subject,
        }).toString(),
      },
      this.opts.timeoutMs,
    );
    const body = (await res.json().catch(() => undefined)) as { access_token?: string; expires_in?: number } | undefined;
    if (res.status !== 200 || !body?.access_token) throw upstreamStatusFailure('Google STS', res.status === 200 ? 502 : res.status);
    this.cached = { token: body.access_token, expiresAtMs: (this.opts.now ?? Date.now)() + (body.expires_in ?? 3600) * 1000 };
    return body.access_token;
  }
}
