import { tokenFingerprint } from '../observability/audit';
import type { CloudSqlDecisionGrant, CloudSqlServiceAccountGrant } from '../policy/evaluate';
import { ACCESS_TOKEN_TYPE, type IssueInput, type IssuedToken, type ProviderResult } from '../exchange/types';
import { jsonNumber } from '../exchange/answer-json';
import { loadCore } from '../auth/frontdoor';
import { connectInfo, knownConnectInfo, refreshAfterSeconds, type InstanceConnectInfo } from './connect-settings';
import { iamDatabaseUser } from '../google/database-user';
import { MAX_IMPERSONATION_LIFETIME_SECONDS, SQL_LOGIN_SCOPE } from '../google/tokens';

/**
 * Cloud SQL IAM database tokens: a Google access token of the service account the matching rule names,
 * scope sqlservice.login only, with lifetime = min(requested_lifetime, rule maxTtlSeconds, 3600 s).
 * A cached token may have less life left than asked, never more than that cap.
 */

function lifetimeCap(grant: Pick<CloudSqlDecisionGrant, 'maxTtlSeconds'>, requested?: number): number {
  return Math.max(1, Math.min(requested ?? grant.maxTtlSeconds, grant.maxTtlSeconds, MAX_IMPERSONATION_LIFETIME_SECONDS));
}

/**
 * The answer's connect-details fields and their JSON (the members without braces), made once per looked-up connect
 * settings (cached 30 s+) instead of per hit: the server CA certificate is ~1.2 KB of PEM whose line breaks
 * `JSON.stringify` escapes character by character, the largest single cost of serialising a hit's answer.
 */
interface ConnectDetails {
  readonly fields: Readonly<Record<string, IssuedToken[string]>>;
  readonly json: string;
}

function details(fields: Readonly<Record<string, IssuedToken[string]>>): ConnectDetails {
  return Object.freeze({ fields, json: JSON.stringify(fields).slice(1, -1) });
}

const UNAVAILABLE = details(Object.freeze({ connect_details: 'unavailable' as const }));

const detailsOf = new WeakMap<InstanceConnectInfo, ConnectDetails>();
function connectDetails(info: InstanceConnectInfo): ConnectDetails {
  let d = detailsOf.get(info);
  if (!d) {
    d = details(
      Object.freeze({
        connect_details: 'included',
        ip_addresses: Object.freeze(info.ipAddresses.map((i) => Object.freeze({ type: i.type, ip_address: i.ipAddress }))),
        ...(info.dnsName ? { dns_name: info.dnsName } : {}),
        port: 5432,
        server_ca_cert: info.serverCaCert,
        server_cert_common_name: info.serverCertCommonName,
      }),
    );
    detailsOf.set(info, d);
  }
  return d;
}

/**
 * The Cloud SQL answer. Without a promise when the service account's login token and the instance's connect settings
 * are both in memory (what a cache hit finds); otherwise after looking up what is missing.
 */
export function issueCloudSqlToken(input: IssueInput<CloudSqlDecisionGrant>): ProviderResult | Promise<ProviderResult> {
  const { grant } = input;
  if (grant.identity !== 'caller') {
    const t = input.app.google.cachedSqlLoginToken({
      serviceAccount: grant.serviceAccount,
      lifetimeSeconds: lifetimeCap(grant, input.requestedLifetimeSeconds),
      log: input.log,
    });
    const info = t && knownConnectInfo(grant.connectionName, Date.now());
    if (t && info !== undefined) return answer(grant, t, serviceAccountUser(grant), info ?? undefined);
  }
  return issueAfterLookUps(input);
}

async function issueAfterLookUps(input: IssueInput<CloudSqlDecisionGrant>): Promise<ProviderResult> {
  const { grant } = input;
  const cap = lifetimeCap(grant, input.requestedLifetimeSeconds);
  let t: { token: string; expiresInSeconds: number; cached: boolean };
  let who: Readonly<Record<string, string>>;
  let adminAccount: string;
  if (grant.identity === 'caller') {
    // The caller's own login: the workforce principal's STS token (its lifetime is Google's, set by the workforce
    // pool's session duration); the answer's expires_in is capped by the rule, the backend must stop using it then.
    const login = await input.app.callerLogins.login(input.subject, input.log);
    const left = Math.floor((login.expiresAtMs - input.app.now()) / 1000);
    t = { token: login.token, expiresInSeconds: Math.max(1, Math.min(left, cap)), cached: login.cached };
    who = { database_user: login.databaseUser, identity: 'caller' };
    adminAccount = grant.adminServiceAccount;
  } else {
    t = await input.app.google.sqlLoginToken({ serviceAccount: grant.serviceAccount, lifetimeSeconds: cap, log: input.log });
    who = serviceAccountUser(grant);
    adminAccount = grant.serviceAccount;
  }
  // Connect details for a backend without Google credentials: plain pg over TLS, the token as the password.
  // Fail-soft: without SQL Admin the token still serves connector users (instance_connection_name); the
  // direct-connect fields are then absent and `connect_details` says so.
  // Looked up (on a cache miss) with the service account's Admin-API-only token: the login token handed out cannot
  // call the Admin API.
  const adminToken = async () => (await input.app.google.sqlAdminToken({ serviceAccount: adminAccount, log: input.log })).token;
  const info = await connectInfo(
    grant.connectionName,
    adminToken,
    loadCore(input.app.settingsRecheckMs).upstreamTimeoutMs,
    Date.now(),
    (e) =>
      input.log.warn('Cloud SQL connect settings unavailable; answering without direct-connect details for 30 s', { cause: e }),
  ).catch(() => undefined);
  return answer(grant, t, who, info, grant.identity !== 'caller');
}

/** The database user and service account members of a service-account grant's answer, made once per grant. */
const serviceAccountUsers = new WeakMap<CloudSqlServiceAccountGrant, Readonly<Record<string, string>>>();
function serviceAccountUser(grant: CloudSqlServiceAccountGrant): Readonly<Record<string, string>> {
  let who = serviceAccountUsers.get(grant);
  if (!who) {
    who = Object.freeze({ database_user: iamDatabaseUser(grant.serviceAccount), service_account: grant.serviceAccount });
    serviceAccountUsers.set(grant, who);
  }
  return who;
}

/**
 * The answer's JSON text around its three per-answer values (the token, expires_in, refresh_after): everything else
 * (types, scope, database user, instance, database and the connect details, whose ~1.3 KB CA PEM `JSON.stringify`
 * escapes character by character) serialised once per (grant, database user members, connect details) instead of
 * per hit.
 */
interface AnswerText {
  readonly afterToken: string;
  readonly afterExpiry: string;
  readonly end: string;
}

function answerText(grant: CloudSqlDecisionGrant, who: Readonly<Record<string, string>>, tail: ConnectDetails): AnswerText {
  const middle = JSON.stringify({
    scope: SQL_LOGIN_SCOPE,
    ...who,
    instance_connection_name: grant.connectionName,
    database: grant.database,
  });
  return {
    afterToken: `,"issued_token_type":${JSON.stringify(ACCESS_TOKEN_TYPE)},"token_type":"Bearer","expires_in":`,
    afterExpiry: `,${middle.slice(1, -1)},"refresh_after":`,
    end: `,${tail.json}}`,
  };
}

/** Per grant and database user members (the same frozen object for a service-account grant), per connect details. */
const answerTexts = new WeakMap<Readonly<Record<string, string>>, WeakMap<ConnectDetails, AnswerText>>();
function rememberedAnswerText(
  grant: CloudSqlDecisionGrant,
  who: Readonly<Record<string, string>>,
  tail: ConnectDetails,
): AnswerText {
  let byDetails = answerTexts.get(who);
  if (!byDetails) answerTexts.set(who, (byDetails = new WeakMap<ConnectDetails, AnswerText>()));
  let text = byDetails.get(tail);
  if (!text) byDetails.set(tail, (text = answerText(grant, who, tail)));
  return text;
}

/**
 * The provider's result: the answer object, and its JSON text — the same text as `JSON.stringify(response)`, made
 * from the remembered parts and the three values (`who` remembered: a service-account grant's; a caller's is new).
 */
export function answer(
  grant: CloudSqlDecisionGrant,
  t: { token: string; expiresInSeconds: number; cached: boolean },
  who: Readonly<Record<string, string>>,
  info: InstanceConnectInfo | undefined,
  remembered = true,
): ProviderResult {
  const tail = info ? connectDetails(info) : UNAVAILABLE;
  const refreshAfter = refreshAfterSeconds(t.expiresInSeconds);
  const response: Record<string, IssuedToken[string]> = {
    access_token: t.token,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: t.expiresInSeconds,
    scope: SQL_LOGIN_SCOPE,
  };
  Object.assign(response, who);
  response.instance_connection_name = grant.connectionName;
  response.database = grant.database;
  response.refresh_after = refreshAfter;
  Object.assign(response, tail.fields);
  const text = remembered ? rememberedAnswerText(grant, who, tail) : answerText(grant, who, tail);
  return {
    response: response as IssuedToken,
    json: `{"access_token":${JSON.stringify(t.token)}${text.afterToken}${jsonNumber(t.expiresInSeconds)}${text.afterExpiry}${jsonNumber(refreshAfter)}${text.end}`,
    tokenIdHash: tokenFingerprint(t.token),
    cached: t.cached,
  };
}
