import { createRemoteJWKSet } from 'jose';
import type { EmuRequest, EmuResponse } from '../../harness';
import type { GoogleState } from '../state';
import {
  compileAttributeCondition,
  compileAttributeMapping,
  type WorkforcePoolProvider,
  type WorkloadIdentityProvider,
} from './providers';

/**
 * The state of the STS emulator (providers, their compiled conditions and mappings, the issuers' JWKS cache, the
 * federated token lifetime) and what both exchanges share: the OAuth error shape and the request parser.
 */

export class DiscoveryError extends Error {}
export class MissingKid extends Error {}

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const SUBJECT_TOKEN_TYPES = ['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token'];

export interface StsOptions {
  readonly state: GoogleState;
  readonly providers: readonly WorkloadIdentityProvider[];
  readonly workforceProviders?: readonly WorkforcePoolProvider[];
  readonly port?: number;
  readonly federatedLifetimeSeconds?: number;
}

/**
 * Google's STS reference (`subjectToken`): `iat` "Must be in the past", `exp` "Must be less than 48 hours after iat".
 * https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token
 */
export const MAX_SUBJECT_TOKEN_LIFETIME_SECONDS = 48 * 3600;

export const oauthError = (status: number, error: string, description: string): EmuResponse => ({
  status,
  headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' },
  body: { error, error_description: description },
});

/** STS accepts the form encoding (what client libraries send) and JSON with camelCase or snake_case fields. */
export function readRequest(req: EmuRequest): Record<string, string> | undefined {
  const type = (req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') {
    const out: Record<string, string> = {};
    for (const [k, v] of req.form()) out[k] = v;
    return out;
  }
  if (type === 'application/json') {
    const j = req.json();
    if (!j || typeof j !== 'object' || Array.isArray(j)) return undefined;
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(j as Record<string, unknown>)) {
      const snake = k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      if (typeof v === 'string') out[snake] = v;
    }
    return out;
  }
  return undefined;
}

export function createStsContext(opts: StsOptions) {
  const providers = [...opts.providers];
  const conditions = new Map(
    providers.map((p) => [p, p.attributeCondition === undefined ? undefined : compileAttributeCondition(p.attributeCondition)]),
  );
  const jwks = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
  /** OIDC discovery of the provider's issuer (as Google does), then its JWKS. Refetched after a failure. */
  const keysOf = async (
    p: Pick<WorkloadIdentityProvider, 'discoveryUrl' | 'issuer'>,
  ): Promise<ReturnType<typeof createRemoteJWKSet>> => {
    const cached = jwks.get(p.discoveryUrl);
    if (cached) return cached;
    const res = await fetch(p.discoveryUrl, { signal: AbortSignal.timeout(5000) });
    const doc = (await res.json().catch(() => undefined)) as { issuer?: unknown; jwks_uri?: unknown } | undefined;
    if (!res.ok || !doc || typeof doc.jwks_uri !== 'string')
      throw new DiscoveryError("The discovery document of the provider's issuer could not be fetched.");
    if (doc.issuer !== p.issuer)
      throw new DiscoveryError("The issuer in the discovery document does not match the provider's issuer.");
    const k = createRemoteJWKSet(new URL(doc.jwks_uri), { cooldownDuration: 0, timeoutDuration: 5000 });
    jwks.set(p.discoveryUrl, k);
    return k;
  };
  const workforce = [...(opts.workforceProviders ?? [])];
  const workforceRules = new Map(
    workforce.map((p) => [
      p,
      {
        map: compileAttributeMapping(p.attributeMapping),
        condition: p.attributeCondition === undefined ? undefined : compileAttributeCondition(p.attributeCondition),
      },
    ]),
  );

  return {
    state: opts.state,
    providers,
    conditions,
    keysOf,
    workforce,
    workforceRules,
    /** The emulator handle once it exists (its `federatedLifetimeSeconds` is settable by tests). */
    self: { federatedLifetimeSeconds: opts.federatedLifetimeSeconds ?? 3600 },
  };
}

export type StsContext = ReturnType<typeof createStsContext>;
