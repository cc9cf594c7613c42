import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, logAccessLine, useColor, type AccessFields } from './logger.js';

/** A stream that says it is (or isn't) a terminal, collecting what is written. */
function sink(isTTY: boolean) {
  const stream = Object.assign(new PassThrough(), { isTTY });
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  return { stream, text: () => text };
}

// eslint-disable-next-line no-control-regex
const ESC = /\x1b\[/;

describe('pretty log format', () => {
  it('colours the level on a terminal (unless NO_COLOR is set here)', () => {
    const out = sink(true);
    createLogger({ level: 'info', format: 'pretty', stream: out.stream }).info('hello', { a: 1 });
    assert.equal(ESC.test(out.text()), !process.env.NO_COLOR, out.text());
  });

  it('no escape codes into a pipe or file', () => {
    const out = sink(false);
    createLogger({ level: 'info', format: 'pretty', stream: out.stream }).warn('hello', { a: 1 });
    assert.doesNotMatch(out.text(), ESC);
    assert.match(out.text(), /^\d{2}:\d{2}:\d{2}\.\d{3} warn hello a=1\n$/);
  });

  it('the default follows the stream: a terminal unless NO_COLOR is set (and not empty)', () => {
    assert.equal(useColor(sink(true).stream, {}), true);
    assert.equal(useColor(sink(true).stream, { NO_COLOR: '1' }), false);
    assert.equal(useColor(sink(true).stream, { NO_COLOR: '' }), true);
    assert.equal(useColor(sink(false).stream, {}), false);
  });
});

describe('logAccessLine (the access log without the format pipeline)', () => {
  // Every field of AccessFields, with values JSON must escape: a field the fast line forgot would differ from winston's line.
  const fields: AccessFields = { method: 'GET', route: 'blob', path: '/v2/a/"b"\\c\u0001\n\u2028\ud800é', status: 200, bytes: 0, ms: 12, cache: undefined, upstream: 'docker.io', stale: undefined, aborted: true as const, userAgent: 'docker/27 (linux)' };
  const lines = (text: string) => text.split('\n').filter(Boolean);
  const withoutTime = (line: string) => line.replace(/"timestamp":"[^"]*"/, '"timestamp":"T"');

  it("writes JSON byte for byte as winston's child logger does (fields, level, message, requestId, service; sorted keys; undefined left out)", () => {
    const fast = sink(false);
    const slow = sink(false);
    logAccessLine(createLogger({ level: 'info', format: 'json', stream: fast.stream }), 'info', 'req-1', fields);
    createLogger({ level: 'info', format: 'json', stream: slow.stream }).child({ requestId: 'req-1' }).log('info', 'request', fields);
    assert.equal(lines(fast.text()).length, 1);
    assert.equal(withoutTime(fast.text()), withoutTime(slow.text()));
    const parsed = JSON.parse(fast.text()) as Record<string, unknown>;
    assert.equal(parsed.path, fields.path);
    assert.match(String(parsed.timestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.ok(!('cache' in parsed) && !('stale' in parsed));
  });

  it("obeys the logger's level: a warn logger drops info lines and writes warn ones", () => {
    const out = sink(false);
    const logger = createLogger({ level: 'warn', format: 'json', stream: out.stream });
    logAccessLine(logger, 'info', 'req-1', fields);
    assert.equal(out.text(), '');
    logAccessLine(logger, 'warn', 'req-2', fields);
    assert.equal((JSON.parse(out.text()) as { level: string; requestId: string }).requestId, 'req-2');
  });

  it('keeps its place among the lines winston writes to the same stream', () => {
    const out = sink(false);
    const logger = createLogger({ level: 'info', format: 'json', stream: out.stream });
    logger.info('before');
    logAccessLine(logger, 'info', 'req-1', fields);
    logger.child({ requestId: 'req-1' }).info('after');
    assert.deepEqual(lines(out.text()).map((l) => (JSON.parse(l) as { message: string }).message), ['before', 'request', 'after']);
  });

  it('the pretty format prints what the child logger prints', () => {
    const fast = sink(false);
    const slow = sink(false);
    logAccessLine(createLogger({ level: 'info', format: 'pretty', stream: fast.stream }), 'warn', 'req-1', fields);
    createLogger({ level: 'info', format: 'pretty', stream: slow.stream }).child({ requestId: 'req-1' }).log('warn', 'request', fields);
    const noTime = (t: string) => t.replace(/^\S+ /, '');
    assert.equal(noTime(fast.text()), noTime(slow.text()));
    assert.match(fast.text(), / warn request requestId=req-1 method=GET /);
  });
});
