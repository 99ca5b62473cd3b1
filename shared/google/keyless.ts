import type { TokenCredential } from '@azure/core-auth';
import { IdentityPoolClient, gaxios, type SubjectTokenSupplier } from 'google-auth-library';
import { StsCredentials } from 'google-auth-library/build/src/auth/stscredentials';
import { BrokerError } from '../errors';
import { managedIdentityToken } from '../azure/managed-identity';
import { CLOUD_PLATFORM_SCOPE, JWT_SUBJECT_TOKEN_TYPE } from './scopes';
import { recordUpstream } from '../observability/telemetry';
import { googleFailure, withDeadline } from './errors';
import type { SourceCredential, SourceCredentialContext, SourceToken } from './source-types';

/**
 * Keyless source credential: google-auth-library's identity-pool (workload identity federation) client
 * with a programmatic subject-token supplier returning the Function's managed identity token for the
 * pool's audience. STS answers with a federated access token (scope cloud-platform) that may impersonate
 * the service accounts whose IAM bindings name the Function's federated principal.
 *
 * This module imports google-auth-library and @azure/identity at the top: it is itself only loaded
 * lazily (shared/google/source.ts), on the first Cloud SQL token request.
 */

/** gaxios with a hard timeout and no retries: the broker answers 503/504 with Retry-After instead. */
function boundedTransporter(timeoutMs: number): gaxios.Gaxios {
  return new gaxios.Gaxios({ timeout: timeoutMs, retry: false, retryConfig: { retry: 0, noResponseRetries: 0 } });
}

/**
 * IdentityPoolClient whose STS exchange uses the bounded transporter (the base class builds its own
 * StsCredentials with an unbounded, retrying gaxios; `stsCredential` is protected for subclasses).
 */
class BoundedIdentityPoolClient extends IdentityPoolClient {
  constructor(options: ConstructorParameters<typeof IdentityPoolClient>[0], transporter: gaxios.Gaxios) {
    super(options);
    this.stsCredential = new StsCredentials({ tokenExchangeEndpoint: this.getTokenUrl(), transporter });
  }
}

function managedIdentitySupplier(credential: TokenCredential, audience: string, timeoutMs: number): SubjectTokenSupplier {
  const scope = `${audience.replace(/\/+$/, '')}/.default`;
  return {
    async getSubjectToken(): Promise<string> {
      return (await managedIdentityToken(credential, scope, timeoutMs)).token;
    },
  };
}

export function createKeylessSource(ctx: SourceCredentialContext): SourceCredential {
  const { config, timeoutMs, now } = ctx;
  const audience = config.wifAudience;
  if (!audience) throw new BrokerError('config_invalid', 'GOOGLE_WIF_AUDIENCE is required in keyless mode.');
  const subjectAudience = config.subjectTokenAudience;
  if (!subjectAudience) throw new BrokerError('config_invalid', 'GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE is required in keyless mode.');
  const mi = ctx.identities.get(config.managedIdentityClientId);
  const miSupplier = managedIdentitySupplier(mi, subjectAudience, timeoutMs);
  // STS is counted only when it was reached (the managed identity token was obtained).
  let subjectObtained = false;
  const supplier: SubjectTokenSupplier = {
    async getSubjectToken(context) {
      subjectObtained = false;
      const t = await miSupplier.getSubjectToken(context);
      subjectObtained = true;
      return t;
    },
  };
  const transporter = boundedTransporter(timeoutMs);

  return {
    mode: 'keyless',
    async fetchSourceToken(): Promise<SourceToken> {
      // A new client per fetch: the caller caches the federated token, so the client's own cache must not
      // hand back a token the caller has already discarded (e.g. after IAM answered 401).
      const client = new BoundedIdentityPoolClient(
        {
          type: 'external_account',
          audience,
          subject_token_type: JWT_SUBJECT_TOKEN_TYPE,
          token_url: config.stsTokenUrl,
          subject_token_supplier: supplier,
          scopes: [CLOUD_PLATFORM_SCOPE],
        },
        transporter,
      );
      let token: string | null | undefined;
      try {
        // The transporter bounds the STS call; the deadline bounds the whole exchange (MI + STS).
        token = (
          await withDeadline(
            client.getAccessToken(),
            timeoutMs * 2,
            () => new BrokerError('upstream_timeout', 'Google STS did not answer in time.'),
          )
        ).token;
      } catch (e) {
        const err = googleFailure('Google STS', e);
        if (subjectObtained) recordUpstream('google-sts', err.code);
        throw err;
      }
      recordUpstream('google-sts', token ? 'ok' : 'upstream_error');
      if (!token) throw new BrokerError('upstream_error', 'Google STS returned no access token.');
      const expiry = client.credentials.expiry_date;
      // STS always sends expires_in; without it, assume the shortest useful life rather than guess long.
      const expiresAtMs = typeof expiry === 'number' && Number.isFinite(expiry) ? expiry : now() + 5 * 60_000;
      return { token, expiresAtMs };
    },
  };
}
