import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, useColor } from './logger.js';

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
