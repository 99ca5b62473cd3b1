import { parseDocument } from '../config/json-document';
import { policySchema, type Policy } from './schema';

/** Parse and schema-check a policy document; errors name the path of each bad entry. */
export function parsePolicy(text: string, source = 'policy'): Policy {
  return parseDocument(text, policySchema, 'policy', source);
}
