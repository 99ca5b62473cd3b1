import { BrokerError } from '../errors';
import type { CosmosDecisionGrant } from '../policy/evaluate';
import type { IssueInput, ProviderResult } from '../exchange/types';

/** CosmosDB resource tokens (issue: CosmosDB resource tokens). Not built yet. */
export async function issueCosmosToken(_input: IssueInput<CosmosDecisionGrant>): Promise<ProviderResult> {
  throw new BrokerError('invalid_target', 'CosmosDB resource tokens are not enabled in this build.');
}
