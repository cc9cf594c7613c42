import { EOL } from 'node:os';
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
  const logger = winston.createLogger({ level: opts.level, format, defaultMeta: { service: 'hubcache' }, transports: [transport] });
  if (opts.format === 'json') {
    // Where the transport writes each line: the stream given, else the Console transport's stdout.
    const out = opts.stream ?? (console as { _stdout?: NodeJS.WritableStream })._stdout ?? process.stdout;
    Object.defineProperty(logger, JSON_LINES, { value: (line: string) => out.write(line) });
  }
  return logger;
}

/** On a JSON logger made by `createLogger`: writes one finished line where its transport writes. */
const JSON_LINES = Symbol('hubcache.jsonLines');

/** The values of a request line's fields; undefined ones are left out, as winston leaves them out. */
export type LineFields = Readonly<Record<string, string | number | boolean | undefined>>;

/**
 * `logger.child({ requestId }).log(level, message, fields)`, written without winston's format
 * pipeline when the logger writes JSON (the access log: one line per request, ~35 µs of winston
 * per line, about the cost of a small request's own work): the same line — the same fields,
 * `level`, `message`, `requestId`, `service`, `timestamp` (ISO), keys in sorted order as winston's
 * json format writes them, `undefined` fields left out —, written to the same stream at the same
 * moment, subject to the same level. Any other logger (pretty, silent, a test's own) gets the
 * winston call.
 */
export function logRequestLine(logger: Logger, level: 'info' | 'warn', message: string, requestId: string, fields: LineFields): void {
  const write = (logger as { [JSON_LINES]?: (line: string) => void })[JSON_LINES];
  if (!write) {
    logger.log(level, message, { requestId, ...fields });
    return;
  }
  if (logger.silent || !logger.isLevelEnabled(level)) return;
  const all: Record<string, string | number | boolean | undefined> = { ...fields, level, message, requestId, service: 'hubcache', timestamp: new Date().toISOString() };
  let line = '{';
  for (const key of Object.keys(all).sort()) {
    const value = all[key];
    if (value === undefined) continue;
    if (line.length > 1) line += ',';
    line += `${JSON.stringify(key)}:${JSON.stringify(value)}`;
  }
  write(`${line}}${EOL}`);
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
