import { startEmulator, type Emulator } from '../../harness';
import { createStsContext, type StsOptions } from './context';
import { federatedPrincipal, providerAudience, type WorkforcePoolProvider, type WorkloadIdentityProvider } from './providers';
import { tokenRoute } from './routes-token';

export type { StsOptions } from './context';
export {
  compileAttributeCondition,
  federatedPrincipal,
  providerAudience,
  workforceAudience,
  type WorkforcePoolProvider,
  type WorkloadIdentityProvider,
} from './providers';

/**
 * Google Security Token Service (`POST /v1/token`, https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token)
 * for workload identity federation with an OIDC provider (Entra ID): the subject token must be a valid,
 * unexpired RS256 JWT from the provider's issuer (checked against its JWKS) whose `aud` is one of the
 * provider's allowed audiences. The answer is an opaque federated access token registered in GoogleState
 * for `principal://iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/subject/SUB`.
 * Errors are OAuth error bodies (`{error, error_description}`), as the real STS answers.
 *
 * This file wires the service together; providers.ts holds the provider shapes, audiences, principals and the
 * compiled CEL/mapping subsets, context.ts the state (JWKS cache, lifetime) and the OAuth error shape, routes-token.ts
 * the request checks and the workload exchange, routes-workforce.ts the workforce exchange.
 */

export interface StsEmulator extends Emulator {
  readonly providers: readonly WorkloadIdentityProvider[];
  /** `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER` */
  audienceOf(p: WorkloadIdentityProvider): string;
  /** The federated principal of a subject in a pool. */
  principalOf(p: Pick<WorkloadIdentityProvider, 'projectNumber' | 'poolId'>, subject: string): string;
  /** Lifetime of federated tokens, seconds (capped by the subject token's own expiry). */
  federatedLifetimeSeconds: number;
  readonly workforceProviders: readonly WorkforcePoolProvider[];
}

export async function startSts(opts: StsOptions): Promise<StsEmulator> {
  const ctx = createStsContext(opts);
  const { providers, workforce } = ctx;
  const token = tokenRoute(ctx);

  const emu = await startEmulator({
    name: 'google-sts',
    port: opts.port,
    errorBody: (_status, message) => ({ error: 'invalid_request', error_description: message }),
    routes: [{ method: 'POST', path: '/v1/token', name: 'sts.token', handle: token }],
  });
  const out: StsEmulator = Object.assign(emu, {
    providers,
    audienceOf: providerAudience,
    principalOf: federatedPrincipal,
    federatedLifetimeSeconds: opts.federatedLifetimeSeconds ?? 3600,
    workforceProviders: workforce,
  });
  ctx.self = out;
  return out;
}
