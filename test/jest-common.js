/** What every Jest project of this repository shares (jest.config.js; the leak scan's child run uses it too). */
module.exports = {
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['ts-jest', { isolatedModules: true, tsconfig: 'tsconfig.json' }] },
  setupFiles: ['<rootDir>/test/setup.ts'],
  // Token-leak scan: every log line of every test file is checked against every credential the emulators issued.
  setupFilesAfterEnv: [
    '<rootDir>/test/setup-leak-scan.ts',
    '<rootDir>/test/setup-process-guard.ts',
    '<rootDir>/test/setup-close-contexts.ts',
  ],
};
