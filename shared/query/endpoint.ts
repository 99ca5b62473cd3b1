import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { authenticateClient, knownClient, knownSubject, loadCore, validateSubject } from '../auth/frontdoor';
import { authenticateCertificate, clientCertificateHeader } from '../auth/client-certificate';
import { BrokerError, toBrokerError } from '../errors';
import type { RequestScope } from '../http/handler';
import { readJsonObject } from '../http/request';
import { jsonResponse } from '../http/responses';
import { recordIssuance } from '../observability/telemetry';
import { assertQueryName, runCataloguedQuery } from './run-catalogued';

/**
 * POST /api/query/{name}: run one catalogued, parameterized, read-only query as the caller's Cloud SQL IAM database
 * identity. Authentication as the token endpoint: the gateway (client) presents its own token in
 * `Authorization: Bearer`, the end caller's token travels in `X-Subject-Token`; the JSON body holds only the query's
 * parameters. authenticate → read the arguments → the query path (./run-catalogued.ts) → answer.
 */

const SUBJECT_TOKEN_HEADER = 'x-subject-token';

/** The query endpoint, measured (telemetry: issuance latency, kind `query`, outcome `issued` or the code). */
export async function handleQuery(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  const started = performance.now();
  try {
    const res = await queryEndpoint(req, scope);
    recordIssuance('query', 'issued', performance.now() - started);
    return res;
  } catch (e) {
    recordIssuance('query', toBrokerError(e).code, performance.now() - started);
    throw e;
  }
}

async function queryEndpoint(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  const core = loadCore(scope.app.settingsRecheckMs);
  // A verified token answers without a promise (as the token exchange: shared/exchange/token-endpoint.ts).
  const client = knownClient(req, core) ?? (await authenticateClient(req, core));
  const name = req.params.name ?? '';
  assertQueryName(name);
  const subjectToken = req.headers.get(SUBJECT_TOKEN_HEADER) ?? undefined;
  // A caller authenticated by a client certificate at the gateway: the certificate instead of a token, never both.
  const certHeader = clientCertificateHeader(req);
  if (certHeader !== undefined && subjectToken !== undefined)
    throw new BrokerError(
      'bad_request',
      `Send ${SUBJECT_TOKEN_HEADER} or X-Client-Certificate, not both: a request has one subject.`,
      {
        detail: { header: 'X-Client-Certificate' },
      },
    );
  if (!subjectToken && certHeader === undefined)
    throw new BrokerError('token_missing', `The caller's token is required in the ${SUBJECT_TOKEN_HEADER} header.`, {
      party: 'subject',
    });
  const subject =
    certHeader !== undefined
      ? await authenticateCertificate({
          header: certHeader,
          client,
          core: core,
          app: scope.app,
          log: scope.log,
          action: 'query',
        })
      : (knownSubject(subjectToken, core) ?? (await validateSubject(subjectToken, core)));
  const result = await runCataloguedQuery({
    name,
    subject,
    client,
    args: () => readJsonObject(req),
    scope,
    requestAudit: scope.requestAudit,
  });
  return jsonResponse(200, result, scope);
}
