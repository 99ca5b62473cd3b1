import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { authenticateClient, loadCore } from '../auth/frontdoor';
import { subjectResolver } from '../auth/client-certificate';
import { auditedIdentity } from '../observability/audit';
import { jsonResponse } from '../http/responses';
import { readParams, requireParam } from '../http/request';
import { type RequestScope } from '../http/handler';
import { explainDecision } from './evaluate';
import { formatTarget, parseTarget } from './target';

/**
 * POST /api/policy/explain: for a subject token and a target, which rule matched, or why none did.
 * Client-authenticated like the token endpoint; issues nothing.
 */
export async function handleExplain(req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> {
  const cfg = loadCore(scope.app.settingsRecheckMs);
  const client = await authenticateClient(req, cfg);
  const params = await readParams(req);
  const target = parseTarget(requireParam(params, 'resource', { exact: true }));
  // As on the token endpoint: subject_token_type (optional here) may select a client certificate the gateway forwarded.
  const subject = await subjectResolver({
    req,
    scope,
    cfg,
    client,
    subjectToken: requireParam(params, 'subject_token'),
    subjectTokenType: params.subject_token_type,
    action: 'explain',
  })();
  const d = explainDecision(await scope.app.policy.current(), subject, target);
  scope.log.info('policy explained', {
    event: 'explain',
    decision: d.decision,
    client: client.objectId,
    subject: auditedIdentity(subject),
    target: formatTarget(target),
  });
  return jsonResponse(
    200,
    {
      decision: d.decision,
      reason: d.decision === 'grant' ? 'granted' : d.code,
      ...(d.decision === 'grant' ? { ruleId: d.ruleId, grant: d.grant } : { detail: d.reason }),
      target: formatTarget(target),
      subject:
        subject.kind === 'certificate'
          ? { kind: 'certificate', certificate: subject.certificate }
          : {
              tenantId: subject.tenantId,
              objectId: subject.objectId,
              appId: subject.appId,
              roles: subject.roles,
              scopes: subject.scopes,
              groups: subject.groups,
            },
      trace: d.trace,
    },
    scope,
  );
}
