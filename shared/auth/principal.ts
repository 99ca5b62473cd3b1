/**
 * A validated caller: an Entra ID identity (built only by the token validator) or a client certificate the gateway
 * vouched for and the broker verified (built only by shared/auth/client-certificate.ts: `kind` 'certificate',
 * `tenantId` CERTIFICATE_TENANT, `objectId` the certificate's SHA-256 thumbprint, no roles, scopes or groups).
 */
export interface Principal {
  /** Absent: an Entra ID identity. */
  readonly kind?: 'entra' | 'certificate';
  readonly tenantId: string;
  readonly objectId: string;
  /** `appid` (v1) or `azp` (v2): the client application that obtained the token. */
  readonly appId?: string;
  readonly roles: readonly string[];
  readonly scopes: readonly string[];
  readonly groups: readonly string[];
  readonly audience: string;
  readonly issuer: string;
  /** The token version; `x509` for a certificate principal. */
  readonly version: '1.0' | '2.0' | 'x509';
  /** `uti` or `jti`, when present. */
  readonly tokenId?: string;
  /** Seconds since the epoch. */
  readonly expiresAt: number;
  /** The token's top-level string-valued claims (identity-bound query parameters read named claims from here). */
  readonly claims?: Readonly<Record<string, string>>;
  /** The verified client certificate (kind 'certificate' only). */
  readonly certificate?: CertificateIdentity;
}

/** What the broker verified of a client certificate: what policy rules, audit lines and queries see. */
export interface CertificateIdentity {
  /** SHA-256 of the DER, lower-case hex without separators. */
  readonly thumbprint: string;
  /** The subject DN, its attributes in certificate order joined by ", " (e.g. `CN=partner-job, O=Contoso`). */
  readonly subject: string;
  /** The issuer DN, as `subject`. */
  readonly issuer: string;
  /** SHA-256 thumbprint of the trusted CA certificate that issued it. */
  readonly issuerThumbprint: string;
  /** Lower-case hex, without leading zeros. */
  readonly serialNumber: string;
  readonly dnsNames: readonly string[];
  readonly uris: readonly string[];
  /** ISO 8601. */
  readonly notBefore: string;
  readonly notAfter: string;
}

/** The `tenantId` of every certificate principal: never a GUID, so no Entra rule or deny entry can match it. */
export const CERTIFICATE_TENANT = 'certificate';

export function v1Issuer(tenantId: string): string {
  return `https://sts.windows.net/${tenantId}/`;
}

export function v2Issuer(tenantId: string): string {
  return `https://login.microsoftonline.com/${tenantId}/v2.0`;
}
