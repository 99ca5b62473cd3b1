/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { isolatedModules: true, tsconfig: 'tsconfig.json' }] },
  maxWorkers: 2,
  testTimeout: 30000,
  setupFiles: ['<rootDir>/test/setup.ts'],
  // Token-leak scan: every log line of every test file is checked against every credential the emulators issued.
  setupFilesAfterEnv: ['<rootDir>/test/setup-leak-scan.ts', '<rootDir>/test/setup-process-guard.ts'],
};
