import { AZURE_CLIENT_ID } from './identity';
import { defineSection, type SettingSpec } from './settings';
import { bool, int, oneOf, optionalStr, url } from './setting-types';

/** Where a Google workload identity pool provider lives, as STS expects it in `audience`. */
const WIF_PROVIDER_AUDIENCE =
  /^\/\/iam\.googleapis\.com\/projects\/\d+\/locations\/global\/workloadIdentityPools\/[a-z0-9-]{4,32}\/providers\/[a-z0-9-]{4,32}$/;

function wifAudience(name: string, doc: string): SettingSpec<string> & { optional: true } {
  return {
    ...optionalStr(name, { doc }),
    parse(raw) {
      if (!WIF_PROVIDER_AUDIENCE.test(raw)) {
        throw new Error(
          'must be //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER',
        );
      }
      return raw;
    },
  };
}

/**
 * Entra's token exchange audience (`api://AzureADTokenExchange`, client id fb60f99c-…): a token for it is the credential
 * every Entra app trusting this identity as a federated credential accepts; presenting it to Google too would make one
 * leaked token good on both sides. Google's guide uses a dedicated app registration instead (docs/cloudsql.md).
 */
const ENTRA_TOKEN_EXCHANGE = ['api://azureadtokenexchange', 'fb60f99c-7a34-4190-8149-302f77469936'];

function subjectTokenAudience(name: string, doc: string): SettingSpec<string> & { optional: true } {
  return {
    ...optionalStr(name, { doc }),
    parse(raw) {
      const v = raw.replace(/\/\.default$/, '').replace(/\/+$/, '');
      if (ENTRA_TOKEN_EXCHANGE.includes(v.toLowerCase())) {
        throw new Error(
          "must not be Entra's token exchange audience (api://AzureADTokenExchange): use the App ID URI of a dedicated app registration",
        );
      }
      if (!/^(api|https):\/\/[^\s]+$/.test(raw)) throw new Error('must be an App ID URI (api://… or https://…)');
      return raw;
    },
  };
}

/** Settings of the Google credential plumbing (STS, IAM Credentials, token cache). */
export const googleConfig = defineSection('google', {
  authMode: oneOf('GOOGLE_AUTH_MODE', ['keyless', 'sa-key'] as const, {
    doc: 'Source credential for impersonation: `keyless` (workload identity federation from the managed identity) or `sa-key` (a service-account key JSON from Key Vault)',
    default: 'keyless',
  }),
  wifAudience: wifAudience(
    'GOOGLE_WIF_AUDIENCE',
    'Keyless: the workload identity pool provider, //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER (required in keyless mode)',
  ),
  subjectTokenAudience: subjectTokenAudience(
    'GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE',
    "Keyless: the App ID URI of the Entra app registration the managed identity asks its STS subject token for (Google's Azure guide; default form `api://APP_ID`); the provider's allowed audience (required in keyless mode; `api://AzureADTokenExchange` is refused)",
  ),
  managedIdentityClientId: AZURE_CLIENT_ID,
  stsTokenUrl: url('GOOGLE_STS_TOKEN_URL', {
    doc: 'Google Security Token Service token endpoint (google-auth-library `token_url`)',
    default: 'https://sts.googleapis.com/v1/token',
  }),
  iamCredentialsEndpoint: url('GOOGLE_IAM_CREDENTIALS_ENDPOINT', {
    doc: 'IAM Service Account Credentials API base URL; generateAccessToken is {base}/v1/projects/-/serviceAccounts/{email}:generateAccessToken',
    default: 'https://iamcredentials.googleapis.com',
  }),
  minRemainingSeconds: int('GOOGLE_TOKEN_MIN_REMAINING_SECONDS', {
    doc: 'A cached Google token is served only while it has more than this much life left (the Cloud SQL connectors refresh 4 min before expiry)',
    default: '300',
    min: 0,
    max: 1800,
  }),
  refreshAheadSeconds: int('GOOGLE_TOKEN_REFRESH_AHEAD_SECONDS', {
    doc: 'When a served cached token has less life left than this, one background refresh is started (must exceed the minimum remaining life)',
    default: '600',
    min: 0,
    max: 3000,
  }),
  cacheMaxEntries: int('GOOGLE_TOKEN_CACHE_MAX_ENTRIES', {
    doc: 'Most impersonated tokens kept in memory (one per service account and scope); the oldest is evicted',
    default: '1000',
    min: 1,
    max: 100000,
  }),
  prewarm: bool('GOOGLE_TOKEN_PREWARM', {
    doc: 'On start and on the prewarm timer (every 5 minutes), fetch the Cloud SQL login token of every service account the policy names, so the first caller does not wait for STS and generateAccessToken',
    default: 'true',
  }),
});

export type GoogleConfig = ReturnType<typeof googleConfig.get>;
