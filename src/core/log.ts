/** The logger is injected everywhere: components receive a child of the root logger, never console.*. */
import { pino, type Logger as PinoLogger, type LevelWithSilent } from 'pino';

export type Logger = PinoLogger;

export function createLogger(level: LevelWithSilent = 'info', name = 'uns-bridge'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}

/** A logger that discards everything: for tests and library callers that pass none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
