/** A validated Entra ID identity. Built only by the token validator. */
export interface Principal {
  readonly tenantId: string;
  readonly objectId: string;
  /** `appid` (v1) or `azp` (v2): the client application that obtained the token. */
  readonly appId?: string;
  readonly roles: readonly string[];
  readonly scopes: readonly string[];
  readonly groups: readonly string[];
  readonly audience: string;
  readonly issuer: string;
  readonly version: '1.0' | '2.0';
  /** `uti` or `jti`, when present. */
  readonly tokenId?: string;
  /** Seconds since the epoch. */
  readonly expiresAt: number;
  /** The token's top-level string-valued claims (identity-bound query parameters read named claims from here). */
  readonly claims?: Readonly<Record<string, string>>;
}

export function v1Issuer(tenantId: string): string {
  return `https://sts.windows.net/${tenantId}/`;
}

export function v2Issuer(tenantId: string): string {
  return `https://login.microsoftonline.com/${tenantId}/v2.0`;
}
