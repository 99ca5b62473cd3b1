/**
 * Three projects, as the tree under test/ is laid out: `unit` (one module, no network, no child process: seconds),
 * `integration` (the sandbox's emulators, PostgreSQL, the local host, child processes), `repo` (the repository's own
 * rules: names, import graph, README/docs/settings drift, IaC wiring, APIM policies). `npx jest --selectProjects unit`
 * runs one.
 * @type {import('jest').Config}
 */
const common = require('./test/jest-common');

module.exports = {
  maxWorkers: 2,
  testTimeout: 30000,
  projects: [
    { ...common, displayName: 'unit', roots: ['<rootDir>/test/unit'], testMatch: ['**/*.test.ts'] },
    { ...common, displayName: 'integration', roots: ['<rootDir>/test/integration'], testMatch: ['**/*.test.ts'] },
    { ...common, displayName: 'repo', roots: ['<rootDir>/test/repo'], testMatch: ['**/*.test.ts'] },
  ],
};
