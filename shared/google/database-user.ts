/**
 * The Cloud SQL IAM database user of a service account: its email without `.gserviceaccount.com`
 * (https://cloud.google.com/sql/docs/postgres/iam-logins), what the token answer names and what the query
 * pools log in as. Computed here only.
 */
export function iamDatabaseUser(serviceAccount: string): string {
  return serviceAccount.replace(/\.gserviceaccount\.com$/, '');
}
