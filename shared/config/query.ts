import { defineSection } from './settings';
import { bool, int, optionalStr, str } from './setting-types';

/** Settings of the query function (POST /api/query/{name}). */
export const queryConfig = defineSection('query', {
  catalogPath: str('QUERY_CATALOG_PATH', { doc: 'Path of the query catalog JSON file (the only SQL the query function runs)' }),
  poolMax: int('QUERY_POOL_MAX', {
    doc: 'Most connections per pool (one pool per instance, database and identity)',
    default: '5',
    min: 1,
    max: 50,
  }),
  maxPools: int('QUERY_MAX_POOLS', {
    doc: 'Most pools kept; the least recently used is closed beyond it',
    default: '20',
    min: 1,
    max: 500,
  }),
  idleSeconds: int('QUERY_POOL_IDLE_SECONDS', {
    doc: 'An idle connection is closed after this long',
    default: '30',
    min: 1,
    max: 3600,
  }),
  maxLifetimeSeconds: int('QUERY_POOL_MAX_LIFETIME_SECONDS', {
    doc: "Upper bound of a connection's life; the effective bound is also kept 60 s below the login token's life",
    default: '300',
    min: 30,
    max: 3300,
  }),
  connectTimeoutMs: int('QUERY_CONNECT_TIMEOUT_MS', {
    doc: 'Timeout of getting a connection (SQL Admin calls, TLS, login) before the answer is 503',
    default: '10000',
    min: 500,
    max: 60000,
  }),
  maskHashKey: optionalStr('QUERY_MASK_HASH_KEY', {
    doc: 'Key of the catalog `hash` column masks (HMAC-SHA256; at least 32 characters): the same value hashes the same, so masked values still join. Required only when a catalog entry declares a hash mask',
    secret: true,
  }),
  maxRowLimit: int('QUERY_MAX_ROW_LIMIT', {
    doc: "Ceiling of any catalog query's rowLimit",
    default: '10000',
    min: 1,
    max: 100000,
  }),
  commentTraceparent: bool('QUERY_SQL_COMMENT_TRACEPARENT', {
    doc: "Also put the request's traceparent in each statement's sqlcommenter comment (Cloud SQL Query Insights trace linking); each statement text is then unique, so PostgreSQL parses and plans every statement of every query (no prepared statements: about twice its CPU per query, docs/query.md)",
    default: 'false',
  }),
});

export type QueryConfig = ReturnType<typeof queryConfig.get>;
