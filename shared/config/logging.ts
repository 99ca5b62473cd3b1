import { defineSection } from './settings';
import { oneOf } from './setting-types';

/** LOG_LEVEL, declared once: its own section (the logger must never fail on another section's bad setting). */
export const LOG_LEVEL = oneOf('LOG_LEVEL', ['debug', 'info', 'warn', 'error'] as const, {
  doc: 'Minimum log level',
  default: 'info',
});

export const loggingConfig = defineSection('logging', { level: LOG_LEVEL });
