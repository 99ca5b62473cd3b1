import { parseJsonDocument, watchedDocument } from '../json-document';
import { policySchema, type Policy } from './schema';

export class PolicyError extends Error {
  constructor(
    readonly source: string,
    readonly problems: readonly string[],
  ) {
    super(`Invalid policy ${source}: ${problems.join('; ')}`);
    this.name = 'PolicyError';
  }
}

/** Parse and schema-check a policy document; errors name the path of each bad entry. */
export function parsePolicy(text: string, source = 'policy'): Policy {
  const r = parseJsonDocument(text, policySchema);
  if ('problems' in r) throw new PolicyError(source, r.problems);
  return r.data;
}

/**
 * The policy at `path`, parsed once and re-read when the file changes (checked at most every 5 s).
 * A missing or invalid file is a configuration error (503 naming the problem), never a 500.
 */
export const loadPolicyFile: (path: string, now?: number) => Policy = watchedDocument({
  what: 'policy file',
  setting: 'BROKER_POLICY_PATH',
  parse: parsePolicy,
  isDocumentError: (e) => e instanceof PolicyError,
});
