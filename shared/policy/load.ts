import { parseDocument, watchedDocument } from '../config/json-document';
import { policySchema, type Policy } from './schema';

/** Parse and schema-check a policy document; errors name the path of each bad entry. */
export function parsePolicy(text: string, source = 'policy'): Policy {
  return parseDocument(text, policySchema, 'policy', source);
}

/**
 * The policy at `path`, parsed once and re-read when the file changes (checked at most every 5 s).
 * A missing or invalid file is a configuration error (503 naming the problem), never a 500.
 */
export const loadPolicyFile: (path: string, now?: number) => Policy = watchedDocument({
  what: 'policy file',
  setting: 'BROKER_POLICY_PATH',
  parse: parsePolicy,
});
