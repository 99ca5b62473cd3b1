/**
 * sqlcommenter tags (https://google.github.io/sqlcommenter/spec/, now
 * https://open-telemetry.github.io/opentelemetry-sqlcommenter/specifications): `<SQL> /*k='v',…*\/`, keys sorted,
 * each key and value URL-encoded (encodeURIComponent) and then `'` escaped as `\'`, each value in single quotes,
 * pairs joined by `,`. Cloud SQL Query Insights and pgaudit lines carry the comment, so a database log line joins
 * the broker's audit event by correlation id and trace.
 *
 * URL encoding turns `/` into `%2F`, so no value can open or close a comment (`/*`, `*\/`), nor end the SQL.
 * Only ids go into a comment (trace, correlation id, rule id, query name): never personal data.
 */

export type CommentTags = Readonly<Record<string, string | undefined>>;

function serialise(s: string): string {
  return encodeURIComponent(s).replace(/'/g, "\\'");
}

/** The comment for `tags` (undefined values dropped), or '' when nothing is left. */
export function sqlComment(tags: CommentTags): string {
  const pairs = Object.entries(tags)
    .filter((e): e is [string, string] => typeof e[1] === 'string' && e[0].length > 0)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${serialise(k)}='${serialise(v)}'`);
  return pairs.length ? `/*${pairs.join(',')}*/` : '';
}

/**
 * The statement with the comment appended (a trailing `;` is dropped first). The catalog refuses SQL that holds
 * comments of its own, so the spec's "a statement that already has a comment is not mutated" never applies.
 */
export function withComment(sql: string, comment: string): string {
  if (!comment) return sql;
  return `${sql.replace(/[\s;]+$/, '')} ${comment}`;
}

/** Whether SQL text contains a comment opener (`--` or `/*`), outside or inside literals alike (strict). */
export function hasSqlComment(sql: string): boolean {
  return sql.includes('--') || sql.includes('/*');
}
