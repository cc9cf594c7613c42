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

/** The fields of an access line (http/middleware/request-context.ts); undefined ones are left out. */
export interface AccessFields {
  readonly method: string;
  readonly route: string;
  readonly path: string;
  readonly status: number;
  readonly bytes: number;
  readonly ms: number;
  readonly cache: string | undefined;
  readonly upstream: string | undefined;
  readonly stale: string | undefined;
  readonly aborted: true | undefined;
  readonly userAgent: string | undefined;
}

/**
 * `logger.child({ requestId }).log(level, 'request', fields)`, written without winston's format
 * pipeline when the logger writes JSON (one line per request: winston's child, format pipeline and
 * transport cost ~35–50 µs a line, about a small request's own work; this ~2–3 µs): the same line —
 * the same fields, `level`, `message`, `requestId`, `service`, `timestamp` (ISO), keys in the sorted
 * order winston's json format writes, `undefined` fields left out —, written to the same stream at
 * the same moment, subject to the same level. Any other logger (pretty, silent, a test's own) gets
 * the winston call.
 */
export function logAccessLine(logger: Logger, level: 'info' | 'warn', requestId: string, f: AccessFields): void {
  const write = (logger as { [JSON_LINES]?: (line: string) => void })[JSON_LINES];
  if (!write) {
    logger.log(level, 'request', { requestId, ...f });
    return;
  }
  if (logger.silent || !logger.isLevelEnabled(level)) return;
  // Keys in sorted order (JSON.stringify keeps insertion order and leaves undefined out).
  const line = JSON.stringify({
    aborted: f.aborted,
    bytes: f.bytes,
    cache: f.cache,
    level,
    message: 'request',
    method: f.method,
    ms: f.ms,
    path: f.path,
    requestId,
    route: f.route,
    service: 'hubcache',
    stale: f.stale,
    status: f.status,
    timestamp: new Date().toISOString(),
    upstream: f.upstream,
    userAgent: f.userAgent,
  });
  write(`${line}${EOL}`);
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
