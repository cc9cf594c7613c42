import winston from 'winston';

export type Logger = winston.Logger;

export interface LoggerOptions {
  level: 'error' | 'warn' | 'info' | 'debug';
  format: 'json' | 'pretty';
  /** Where lines go; stdout by default (tests capture them). */
  stream?: NodeJS.WritableStream;
}

/**
 * JSON lines for collectors, a compact format for terminals (coloured on one). Messages are constant
 * strings; values go in fields (`log.info('fill committed', { digest, bytes })`).
 */
export function createLogger(opts: LoggerOptions): Logger {
  const color = useColor(opts.stream ?? process.stdout);
  const format =
    opts.format === 'json'
      ? winston.format.combine(winston.format.timestamp(), winston.format.json())
      : winston.format.combine(
          winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
          ...(color ? [winston.format.colorize()] : []),
          winston.format.printf(({ timestamp, level, message, service: _s, ...rest }) => {
            // Fields left undefined (an access line's `cache` on /v2/) are absent in JSON; here too.
            const fields = Object.entries(rest)
              .filter(([, v]) => v !== undefined)
              .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
              .join(' ');
            return `${timestamp} ${level} ${message}${fields ? ` ${fields}` : ''}`;
          }),
        );
  const transport = opts.stream
    ? new winston.transports.Stream({ stream: opts.stream })
    : new winston.transports.Console();
  return winston.createLogger({ level: opts.level, format, defaultMeta: { service: 'hubcache' }, transports: [transport] });
}

/**
 * Escape codes only for a person at a terminal: piped into a file, `less` or a collector they are
 * noise. NO_COLOR (https://no-color.org) turns them off on a terminal too.
 */
export function useColor(stream: NodeJS.WritableStream, env: NodeJS.ProcessEnv = process.env): boolean {
  return (stream as { isTTY?: boolean }).isTTY === true && !env.NO_COLOR;
}

/** A logger that drops everything, for unit tests. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console({ silent: true })] });
}
