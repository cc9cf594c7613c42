import { AccessTable, subjectId, type AccessEntry, type AccessRecord, type AccessSubject } from '../access-record.js';

/** An in-memory `AccessRecord` for tests and the memory driver; passes the same conformance suite. Nothing to persist. */
export class MemoryAccessRecord implements AccessRecord {
  readonly #table = new AccessTable();

  touch(subject: AccessSubject, at: number): void {
    this.#table.touch(subject, at);
  }

  forget(subject: AccessSubject): void {
    this.#table.forget(subject);
  }

  async lastAccess(subject: AccessSubject): Promise<number | undefined> {
    return this.#table.times.get(subjectId(subject));
  }

  async *entries(): AsyncIterable<AccessEntry> {
    yield* [...this.#table.entries()];
  }

  async flush(): Promise<void> {
    this.#table.takePending();
  }
}
