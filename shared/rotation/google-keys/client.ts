import { BrokerError } from '../../errors';
import { fetchWithTimeout, retryAfterSeconds, upstreamStatusFailure } from '../../upstream/failure';
import type { GoogleKeyInfo } from './plan';

/** Something that hands out a Google access token (cloud-platform) for the rotation's own IAM calls. */
export interface GoogleTokenSource {
  getAccessToken(): Promise<string>;
}

export interface CreatedKey {
  readonly keyId: string;
  /** The service-account key file (JSON text). Key material: never log it. */
  readonly keyJson: string;
  readonly validAfter: number;
}

interface GoogleErrorBody {
  error?: { code?: number; status?: string; details?: unknown };
}

/** Org-policy constraints that forbid creating service-account keys (the legacy one and its managed successor). */
const KEY_CREATION_CONSTRAINTS = new Set([
  'constraints/iam.disableServiceAccountKeyCreation',
  'constraints/iam.managed.disableServiceAccountKeyCreation',
]);

/**
 * A FAILED_PRECONDITION on key creation is either the org policy (a google.rpc.PreconditionFailure violation
 * naming constraints/iam.disableServiceAccountKeyCreation) or the 10-key cap (no such violation): they need
 * different fixes (the org policy or keyless mode, vs. deleting keys), so each has its own reason code.
 * https://cloud.google.com/iam/docs/troubleshoot-org-policies, https://cloud.google.com/iam/quotas
 */
export function createRefusal(body: unknown): BrokerError {
  const details = (body as GoogleErrorBody | undefined)?.error?.details;
  const violations = Array.isArray(details)
    ? details.flatMap((d) => {
        const v = (d as { '@type'?: unknown; violations?: unknown }) ?? {};
        return v['@type'] === 'type.googleapis.com/google.rpc.PreconditionFailure' && Array.isArray(v.violations)
          ? (v.violations as { type?: unknown }[])
          : [];
      })
    : [];
  const constraint = violations
    .map((v) => v?.type)
    .find((t): t is string => typeof t === 'string' && KEY_CREATION_CONSTRAINTS.has(t));
  if (constraint) {
    return new BrokerError('key_creation_disabled', 'An organization policy forbids creating service-account keys.', {
      detail: { constraint: constraint.replace(/^constraints\//, '') },
      cause: new Error(`Google IAM FAILED_PRECONDITION ${constraint}`),
    });
  }
  return new BrokerError('key_limit_reached', 'The service account has reached its key limit.', {
    cause: new Error('Google IAM FAILED_PRECONDITION (key cap)'),
  });
}

/**
 * The Google IAM API (v1) service-account keys calls the rotation makes, each bounded by a timeout and
 * mapped to BrokerErrors without upstream text. Deleting or disabling a key that is already gone counts
 * as done (the run is idempotent).
 */
export class GoogleIamKeys {
  constructor(
    private readonly endpoint: string,
    private readonly tokens: GoogleTokenSource,
    private readonly timeoutMs: number,
  ) {}

  private keysUrl(sa: string): string {
    return `${this.endpoint}/v1/projects/-/serviceAccounts/${encodeURIComponent(sa)}/keys`;
  }

  private async call(method: string, url: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    const token = await this.tokens.getAccessToken();
    const res = await fetchWithTimeout(
      'Google IAM',
      url,
      {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      },
      this.timeoutMs,
    );
    const json: unknown = await res.json().catch(() => undefined);
    return { status: res.status, json };
  }

  private fail(status: number, json: unknown, headers?: string | null): BrokerError {
    const st = (json as GoogleErrorBody | undefined)?.error?.status;
    const base = upstreamStatusFailure('Google IAM', status, retryAfterSeconds(headers));
    return new BrokerError(base.code, base.message, {
      retryAfterSeconds: base.retryAfterSeconds,
      cause: new Error(`Google IAM HTTP ${status} ${st ?? ''}`),
      ...(st && /^[A-Z_]+$/.test(st) ? { detail: { upstreamStatus: st } } : {}),
    });
  }

  async list(sa: string): Promise<GoogleKeyInfo[]> {
    const r = await this.call('GET', `${this.keysUrl(sa)}?keyTypes=USER_MANAGED`);
    if (r.status !== 200) throw this.fail(r.status, r.json);
    const keys = ((r.json as { keys?: unknown[] } | undefined)?.keys ?? []) as {
      name?: string;
      disabled?: boolean;
      validAfterTime?: string;
      validBeforeTime?: string;
      keyType?: string;
    }[];
    return keys
      .filter((k) => k.keyType === undefined || k.keyType === 'USER_MANAGED')
      .map((k) => ({
        keyId: (k.name ?? '').split('/').at(-1) ?? '',
        disabled: k.disabled === true,
        validAfter: Date.parse(k.validAfterTime ?? '') || 0,
        validBefore: Date.parse(k.validBeforeTime ?? '') || Number.MAX_SAFE_INTEGER,
      }))
      .filter((k) => /^[0-9a-f]+$/.test(k.keyId));
  }

  async create(sa: string): Promise<CreatedKey> {
    const r = await this.call('POST', this.keysUrl(sa), {
      privateKeyType: 'TYPE_GOOGLE_CREDENTIALS_FILE',
      keyAlgorithm: 'KEY_ALG_RSA_2048',
    });
    if (r.status === 400 && (r.json as GoogleErrorBody | undefined)?.error?.status === 'FAILED_PRECONDITION')
      throw createRefusal(r.json);
    if (r.status !== 200) throw this.fail(r.status, r.json);
    const body = r.json as { name?: string; privateKeyData?: string; validAfterTime?: string };
    const keyId = body.name?.split('/').at(-1);
    if (!keyId || !body.privateKeyData) throw new BrokerError('upstream_error', 'Google IAM returned an unusable key.');
    return {
      keyId,
      keyJson: Buffer.from(body.privateKeyData, 'base64').toString('utf8'),
      validAfter: Date.parse(body.validAfterTime ?? '') || 0,
    };
  }

  async disable(sa: string, keyId: string): Promise<void> {
    const r = await this.call('POST', `${this.keysUrl(sa)}/${keyId}:disable`, {});
    if (r.status !== 200 && r.status !== 404) throw this.fail(r.status, r.json);
  }

  async delete(sa: string, keyId: string): Promise<void> {
    const r = await this.call('DELETE', `${this.keysUrl(sa)}/${keyId}`);
    if (r.status !== 200 && r.status !== 404) throw this.fail(r.status, r.json);
  }
}
