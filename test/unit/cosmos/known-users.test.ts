import { CosmosAccounts, RecentSet } from '../../../shared/cosmos/client';
import { ManagedIdentities } from '../../../shared/azure/managed-identity';

/** The Cosmos users the broker knows exist: a bounded set, so 10,000s of distinct callers cannot grow it without end. */

test('RecentSet keeps the most recently added, forgetting the oldest past its bound', () => {
  const s = new RecentSet(3);
  for (const k of ['a', 'b', 'c']) s.add(k);
  s.add('a'); // re-added: now the newest
  s.add('d');
  expect(['a', 'b', 'c', 'd'].filter((k) => s.has(k))).toEqual(['a', 'c', 'd']);
  expect(s.size).toBe(3);
  s.delete('c');
  expect(s.has('c')).toBe(false);
  s.clear();
  expect(s.size).toBe(0);
});

test('the app state bounds its known users as its resource-token cache (10,000)', () => {
  const cosmos = new CosmosAccounts({ identities: new ManagedIdentities() });
  for (let i = 0; i < 10_005; i++) cosmos.knownUsers.add(`acct/db/user-${i}`);
  expect(cosmos.knownUsers.size).toBe(10_000);
  expect(cosmos.knownUsers.has('acct/db/user-4')).toBe(false);
  expect(cosmos.knownUsers.has('acct/db/user-10004')).toBe(true);
});
