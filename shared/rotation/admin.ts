import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { authenticateClient, loadCore, validateSubject } from '../auth/frontdoor';
import { audit } from '../audit';
import { BrokerError } from '../errors';
import { jsonResponse, queryParam, readParams, requireParam, type RequestScope } from '../http';
import { runRotation, type RotationDeps } from './run';
import { rotationDepsFromSettings } from './wiring';

/**
 * POST /api/admin/rotate?dryRun=true|false — the rotation plan on demand. Same front door as the token
 * endpoint: the gateway's client token in `Authorization`, the admin's own token as `subject_token`
 * (form or JSON body), which must carry the admin app role (BROKER_ADMIN_ROLE). dryRun defaults to
 * true. A real run takes the same Key Vault lease as the timer; when it is held: 409.
 */
export function makeAdminRotate(depsFor: (scope: RequestScope) => RotationDeps = (s) => rotationDepsFromSettings(s.log)) {
  return async (req: HttpRequest, scope: RequestScope): Promise<HttpResponseInit> => {
    const cfg = loadCore();
    const client = await authenticateClient(req, cfg);
    const raw = queryParam(req, 'dryRun') ?? 'true';
    if (raw !== 'true' && raw !== 'false') {
      throw new BrokerError('invalid_parameter', 'dryRun must be true or false.', { detail: { parameter: 'dryRun' } });
    }
    const dryRun = raw === 'true';
    const params = await readParams(req);
    const subject = await validateSubject(requireParam(params, 'subject_token'), cfg);
    if (!subject.roles.includes(cfg.adminRole)) {
      audit(scope.log, { decision: 'deny', action: 'rotation.admin', client, subject, reason: 'role_required' });
      throw new BrokerError('role_required', 'The admin role is required.', { detail: { role: cfg.adminRole } });
    }
    audit(scope.log, { decision: 'grant', action: 'rotation.admin', client, subject, reason: dryRun ? 'dry-run' : 'run' });
    const report = await runRotation(depsFor(scope), { dryRun, trigger: 'admin' });
    if (report.status === 'locked') {
      throw new BrokerError('conflict', 'Another rotation run is in progress.', { retryAfterSeconds: 60, detail: { reason: 'locked' } });
    }
    return jsonResponse(200, report, scope);
  };
}
