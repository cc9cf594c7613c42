/**
 * JSON log lines as a test reads them: every line parsed (a line that isn't JSON is kept as its
 * `message`), and waits for the first line — past or future — that matches. Shared by the real
 * process (`hubcache-process.ts`) and the in-process server (`in-process.ts`).
 */
export type LogLine = Record<string, unknown>;

export class LogLines {
  readonly lines: LogLine[] = [];
  readonly #waiters: Array<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];

  /** One line of output (without its newline); blank lines are skipped. */
  add(text: string): void {
    if (!text.trim()) return;
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      line = { message: text };
    }
    this.lines.push(line);
    for (const w of [...this.#waiters]) {
      if (w.pred(line)) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  }

  /** The first matching line; rejects after `timeoutMs` with `context()` appended to the message. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 20_000, context: () => string = () => ''): Promise<LogLine> {
    const found = this.lines.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise<LogLine>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching log line within ${timeoutMs} ms${context()}`)), timeoutMs);
      this.#waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }
}
