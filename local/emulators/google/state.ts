import { randomBytes } from 'node:crypto';
import { recordIssuedToken } from '../issued-tokens';

/**
 * State shared by the Google emulators (STS, IAM Credentials, IAM keys, OAuth token endpoint, SQL
 * Admin, the Cloud SQL server): service accounts, who may impersonate whom, the opaque tokens they
 * issued (so one emulator can check a token another issued), and service-account keys.
 */

export interface ServiceAccount {
  readonly email: string;
  readonly projectId: string;
  readonly uniqueId: string;
  disabled: boolean;
}

export type GoogleTokenKind = 'federated' | 'access';

export interface GoogleToken {
  readonly token: string;
  readonly kind: GoogleTokenKind;
  /**
   * Who the token is for: a service account email for access tokens; for federated tokens the
   * workload identity principal, `principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/subject/SUBJECT`.
   */
  readonly principal: string;
  readonly scopes: readonly string[];
  /** Milliseconds since the epoch. */
  readonly expiresAtMs: number;
  readonly issuedAtMs: number;
}

export interface ServiceAccountKey {
  /** projects/PROJECT/serviceAccounts/EMAIL/keys/KEY_ID */
  readonly name: string;
  readonly keyId: string;
  readonly serviceAccount: string;
  readonly publicKeyPem: string;
  readonly validAfterTime: string;
  readonly validBeforeTime: string;
  disabled: boolean;
  readonly keyType: 'USER_MANAGED' | 'SYSTEM_MANAGED';
  /**
   * Google-state clock (ms) from which the key authenticates: a new key is not usable at once ("you might need to wait
   * for 60 seconds or more before you perform another operation with the key",
   * https://cloud.google.com/iam/docs/keys-create-delete). Set by the IAM keys emulator to creation + keyPropagationMs.
   */
  readonly usableAfterMs?: number;
}

export const SQL_LOGIN_SCOPE = 'https://www.googleapis.com/auth/sqlservice.login';
export const CLOUD_PLATFORM_SCOPE = 'https://www.googleapis.com/auth/cloud-platform';

export class GoogleState {
  readonly serviceAccounts = new Map<string, ServiceAccount>();
  /** SA email → members allowed roles/iam.serviceAccountTokenCreator (or workloadIdentityUser) on it. */
  readonly tokenCreators = new Map<string, Set<string>>();
  readonly tokens = new Map<string, GoogleToken>();
  /** SA email → its keys. */
  readonly keys = new Map<string, ServiceAccountKey[]>();
  /** Injectable clock (ms), so rotation tests control time. */
  now: () => number = Date.now;
  /** How long a newly created service-account key is refused by the token endpoint (ms; sandbox default 3000). */
  keyPropagationMs = 0;

  addServiceAccount(email: string): ServiceAccount {
    const projectId = /@([^.]+)\.iam\.gserviceaccount\.com$/.exec(email)?.[1];
    if (!projectId) throw new Error(`not a service account email: ${email}`);
    const sa: ServiceAccount = {
      email,
      projectId,
      uniqueId: String(100000000000000000000n + BigInt(this.serviceAccounts.size + 1)),
      disabled: false,
    };
    this.serviceAccounts.set(email, sa);
    this.keys.set(email, this.keys.get(email) ?? []);
    return sa;
  }

  /** Grant `member` (e.g. `principal://…`, `principalSet://…/*`, `serviceAccount:EMAIL`) the right to impersonate `saEmail`. */
  allowImpersonation(saEmail: string, member: string): void {
    const set = this.tokenCreators.get(saEmail) ?? new Set<string>();
    set.add(member);
    this.tokenCreators.set(saEmail, set);
  }

  revokeImpersonation(saEmail: string, member?: string): void {
    if (member === undefined) this.tokenCreators.delete(saEmail);
    else this.tokenCreators.get(saEmail)?.delete(member);
  }

  /** Whether the holder of a token for `principal` may impersonate `saEmail`. Wildcard principalSets end in `/*`. */
  canImpersonate(saEmail: string, principal: string): boolean {
    const members = this.tokenCreators.get(saEmail);
    if (!members) return false;
    for (const m of members) {
      if (m === principal || m === `serviceAccount:${principal}`) return true;
      if (m.endsWith('/*') && principal.startsWith(m.slice(0, -1).replace('principalSet://', 'principal://'))) return true;
    }
    return false;
  }

  /** Issue an opaque token, unique, registered with its principal, scopes and expiry. */
  issueToken(kind: GoogleTokenKind, principal: string, scopes: readonly string[], lifetimeSeconds: number): GoogleToken {
    const now = this.now();
    const prefix = kind === 'access' ? 'ya29.c.' : 'ya29.d.';
    const t: GoogleToken = {
      token: prefix + randomBytes(48).toString('base64url'),
      kind,
      principal,
      scopes: [...scopes],
      issuedAtMs: now,
      expiresAtMs: now + lifetimeSeconds * 1000,
    };
    this.tokens.set(t.token, t);
    recordIssuedToken(t.token); // token-leak scan
    return t;
  }

  /** The live token, or undefined when unknown or expired. */
  lookupToken(token: string): GoogleToken | undefined {
    const t = this.tokens.get(token);
    return t && t.expiresAtMs > this.now() ? t : undefined;
  }

  /** Every token issued so far (for leak scans in tests). */
  allTokens(): string[] {
    return [...this.tokens.keys()];
  }
}

/** `{"error": {"code", "message", "status"}}`, as Google's JSON APIs answer errors. */
export function googleError(code: number, status: string, message: string) {
  return { status: code, body: { error: { code, message, status } } };
}

/**
 * The error body of the harness's own answers (429 throttle, 404 no route, 413 body too large, injected 5xx) in
 * Google's shape: 429 RESOURCE_EXHAUSTED, 404 NOT_FOUND, any other status named by the service's `otherStatus`.
 */
export function googleHarnessErrorBody(otherStatus: (status: number) => string) {
  return (status: number, message: string) =>
    googleError(status, status === 429 ? 'RESOURCE_EXHAUSTED' : status === 404 ? 'NOT_FOUND' : otherStatus(status), message).body;
}
