import { BrokerError } from '../errors';
import type { CloudSqlDecisionGrant } from '../policy/evaluate';
import type { IssueInput, ProviderResult } from '../exchange/types';

/** Cloud SQL IAM database tokens (issue: Cloud SQL token exchange). Not built yet. */
export async function issueCloudSqlToken(_input: IssueInput<CloudSqlDecisionGrant>): Promise<ProviderResult> {
  throw new BrokerError('invalid_target', 'Cloud SQL token exchange is not enabled in this build.');
}
