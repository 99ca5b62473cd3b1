import type { JWTPayload } from 'jose';

/**
 * Workload and workforce identity pool providers: their shapes, audiences and federated principals, and the compiled
 * `attribute_mapping` / `attribute_condition` subsets the emulator evaluates.
 */

export interface WorkloadIdentityProvider {
  readonly projectNumber: string;
  readonly poolId: string;
  readonly providerId: string;
  /**
   * The OIDC issuer the provider trusts (`issuer_uri`). For the broker: `https://sts.windows.net/{tid}/`, the issuer of the
   * v1.0 token a managed identity gets for the app registration Google's Azure guide sets up. The token's `iss` must
   * equal it exactly (no trailing-slash leniency: stricter than Google is known to be).
   */
  readonly issuer: string;
  /**
   * Where the issuer's discovery document is fetched: in production `{issuer without a trailing /}/.well-known/openid-configuration`
   * (OpenID Connect Discovery 1.0 §4); in the sandbox the Entra emulator's ({@link discoveryUrlOf} gives the production
   * form). Its `issuer` must equal `issuer`, and its `jwks_uri` gives the signing keys.
   */
  readonly discoveryUrl: string;
  /** Accepted `aud` values of subject tokens (empty: only `https://iam.googleapis.com/` + the provider name). */
  readonly allowedAudiences: readonly string[];
  /**
   * The provider's `attribute_condition` (CEL), as infra/gcp/main.tf writes it. The emulator evaluates the subset the
   * broker uses: `assertion.CLAIM == 'VALUE'` terms joined by `&&`; anything else is refused when STS starts.
   */
  readonly attributeCondition?: string;
  disabled?: boolean;
}

/**
 * A workforce identity pool provider (OIDC) of the organization: STS admits a subject token of `issuer` whose `aud` is
 * the provider's `clientId`, maps `google.subject` (and others) from the token's claims as `attributeMapping` says
 * (the `assertion.CLAIM` form only), applies `attributeCondition`, and requires `options.userProject`
 * (https://cloud.google.com/iam/docs/reference/sts/rest/v1/Options; the emulator refuses a workforce exchange without
 * it: strictest, docs/cloudsql.md). The federated principal is
 * `principal://iam.googleapis.com/locations/global/workforcePools/POOL/subject/SUBJECT`.
 */
export interface WorkforcePoolProvider {
  readonly poolId: string;
  readonly providerId: string;
  readonly issuer: string;
  readonly discoveryUrl: string;
  /** The OIDC provider's `client_id`: the only accepted `aud`. */
  readonly clientId: string;
  /** `google.subject` → `assertion.CLAIM` (infra/gcp/workforce.tf). */
  readonly attributeMapping: Readonly<Record<string, string>>;
  readonly attributeCondition?: string;
  disabled?: boolean;
}

export function workforceAudience(p: Pick<WorkforcePoolProvider, 'poolId' | 'providerId'>): string {
  return `//iam.googleapis.com/locations/global/workforcePools/${p.poolId}/providers/${p.providerId}`;
}

export function workforcePrincipal(poolId: string, subject: string): string {
  return `principal://iam.googleapis.com/locations/global/workforcePools/${poolId}/subject/${subject}`;
}

/** Compile `assertion.CLAIM` mapping expressions (anything else is refused when STS starts). */
export function compileAttributeMapping(m: Readonly<Record<string, string>>): (c: JWTPayload) => Record<string, unknown> {
  const entries = Object.entries(m).map(([attr, expr]) => {
    const mm = /^assertion\.([A-Za-z_][A-Za-z0-9_]*)$/.exec(expr.trim());
    if (!mm) throw new Error(`attribute_mapping: unsupported expression "${expr}" (the emulator maps assertion.CLAIM only)`);
    return [attr, mm[1]!] as const;
  });
  if (!entries.some(([a]) => a === 'google.subject')) throw new Error('attribute_mapping must map google.subject');
  return (c) => Object.fromEntries(entries.map(([a, claim]) => [a, c[claim]]));
}

export function providerAudience(p: Pick<WorkloadIdentityProvider, 'projectNumber' | 'poolId' | 'providerId'>): string {
  return `//iam.googleapis.com/projects/${p.projectNumber}/locations/global/workloadIdentityPools/${p.poolId}/providers/${p.providerId}`;
}

export type Condition = (claims: JWTPayload) => boolean;

/** Compile the CEL subset: `assertion.a == 'x' && assertion.b == 'y'` (no other operators, no functions). */
export function compileAttributeCondition(cel: string): Condition {
  const terms = cel.split('&&').map((t) => t.trim());
  const checks = terms.map((t) => {
    const m = /^assertion\.([A-Za-z_][A-Za-z0-9_]*)\s*==\s*'([^'\\]*)'$/.exec(t);
    if (!m)
      throw new Error(
        `attribute_condition: unsupported term "${t}" (the emulator evaluates assertion.CLAIM == 'VALUE' joined by &&)`,
      );
    const [, claim, value] = m as unknown as [string, string, string];
    return (c: JWTPayload) => c[claim] === value;
  });
  return (c) => checks.every((f) => f(c));
}

export function federatedPrincipal(p: Pick<WorkloadIdentityProvider, 'projectNumber' | 'poolId'>, subject: string): string {
  return `principal://iam.googleapis.com/projects/${p.projectNumber}/locations/global/workloadIdentityPools/${p.poolId}/subject/${subject}`;
}
