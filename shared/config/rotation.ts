import { KEY_VAULT_SECRET_NAME, MANAGED_KEY } from '../lib/identifiers';
import { blobUrl } from './policy';
import { defineSection } from './settings';
import { csv, int, str, url } from './setting-types';

/** Service-account key rotation (timer + admin trigger). */
/** Declared once: rotation proves new keys there, the sa-key source exchanges its key there. */
const GOOGLE_OAUTH_TOKEN_URL = url('GOOGLE_OAUTH_TOKEN_URL', {
  doc: "Google OAuth token endpoint used to prove a new key works (JWT-bearer grant); the assertion's aud is always https://oauth2.googleapis.com/token",
  default: 'https://oauth2.googleapis.com/token',
});

export const rotationConfig = defineSection(
  'rotation',
  {
    managedKeys: {
      ...csv('ROTATION_MANAGED_KEYS', {
        doc: 'Managed keys, comma-separated SA_EMAIL=KEY_VAULT_SECRET_NAME pairs (unset: nothing to rotate, e.g. a keyless-only deployment)',
        item: MANAGED_KEY,
        itemDoc: 'SERVICE_ACCOUNT_EMAIL=SECRET_NAME (secret names: 0-9, a-z, A-Z, -)',
      }),
      optional: true as const,
    },
    periodDays: int('ROTATION_PERIOD_DAYS', {
      doc: 'Rotate a key once it is this many days old',
      default: '90',
      min: 1,
      max: 3650,
    }),
    graceDays: int('ROTATION_GRACE_DAYS', {
      doc: 'Days the previous key stays enabled after a rotation (consumers refresh), then it is disabled, and deleted on a later run',
      default: '7',
      min: 0,
      max: 365,
    }),
    schedule: str('ROTATION_SCHEDULE', {
      doc: 'NCRONTAB schedule of the rotation timer (six fields); the timer runs often, keys rotate only when due',
      default: '0 30 2 * * *',
      pattern: /^\S+( \S+){5}$/,
      patternDoc: 'a six-field NCRONTAB expression, e.g. "0 30 2 * * *"',
    }),
    iamEndpoint: url('GOOGLE_IAM_ENDPOINT', {
      doc: 'Google IAM API base URL (service-account keys)',
      default: 'https://iam.googleapis.com',
    }),
    oauthTokenUrl: GOOGLE_OAUTH_TOKEN_URL,
    lockUrl: blobUrl(
      'ROTATION_LOCK_URL',
      'Blob URL whose lease is the rotation lock (unset: rotation-lock in the container of BROKER_POLICY_URL); required for a real rotation run',
    ),
    lockSeconds: int('ROTATION_LOCK_SECONDS', {
      doc: 'Duration of the rotation blob lease (15-60 s, renewed while the run lasts); a crashed run blocks others at most this long',
      default: '60',
      min: 15,
      max: 60,
    }),
  },
  {
    // The rotation's own Google identity is the broker's one keyless source credential (the GOOGLE_* settings).
    removed: {
      ROTATION_STS_URL: 'GOOGLE_STS_TOKEN_URL',
      ROTATION_WIF_AUDIENCE: 'GOOGLE_WIF_AUDIENCE',
      ROTATION_ENTRA_RESOURCE: 'GOOGLE_WIF_SUBJECT_TOKEN_AUDIENCE',
      // The Key Vault claim-then-check lease became a blob lease.
      ROTATION_LOCK_SECRET: 'ROTATION_LOCK_URL',
      ROTATION_LOCK_SETTLE_MS: 'ROTATION_LOCK_URL (a blob lease needs no settle wait)',
    },
  },
);

export type RotationConfig = ReturnType<typeof rotationConfig.get>;

export interface ManagedKey {
  readonly serviceAccount: string;
  readonly secretName: string;
}

export function managedKeysOf(cfg: Pick<RotationConfig, 'managedKeys'>): ManagedKey[] {
  return (cfg.managedKeys ?? []).map((pair) => {
    const [serviceAccount, secretName] = pair.split('=') as [string, string];
    return { serviceAccount, secretName };
  });
}

/** Fallback source credential of the Cloud SQL exchange (GOOGLE_AUTH_MODE=sa-key). */
export const saKeyConfig = defineSection('google-sa-key', {
  secretName: str('GOOGLE_SA_KEY_SECRET', {
    doc: 'sa-key mode: Key Vault secret holding the source service-account key JSON (kept fresh by the rotation timer)',
    pattern: KEY_VAULT_SECRET_NAME,
    patternDoc: 'a Key Vault secret name',
  }),
  tokenUrl: GOOGLE_OAUTH_TOKEN_URL,
});
