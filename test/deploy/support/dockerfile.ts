/**
 * Just enough of the Dockerfile and .dockerignore formats to check our own files without a Docker
 * engine: line continuations, comments, JSON (exec) and shell forms, ARG defaults in FROM, stages.
 * See https://docs.docker.com/reference/dockerfile/ and
 * https://docs.docker.com/build/concepts/context/#dockerignore-files.
 */

export interface Instruction {
  /** Upper-case keyword: FROM, RUN, COPY, … */
  keyword: string;
  /** The text after the keyword, continuations joined. */
  raw: string;
  /** Exec form (`["a","b"]`) parsed, else undefined. */
  json?: string[];
  /** `--from=build`, `--chown=…` and the like. */
  flags: Record<string, string>;
  /** Whitespace-separated words after the flags (shell form). */
  args: string[];
  line: number;
}

export interface Stage {
  name?: string;
  /** Base image with ARG defaults substituted. */
  image: string;
  instructions: Instruction[];
}

export interface Dockerfile {
  /** ARGs declared before the first FROM, with their defaults. */
  globalArgs: Record<string, string>;
  stages: Stage[];
}

export function parseDockerfile(text: string): Dockerfile {
  const instructions: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    // Continuation lines end in a backslash; comment lines inside a continuation are dropped.
    while (/\\\s*$/.test(line) && i + 1 < lines.length) {
      line = line.replace(/\\\s*$/, ' ');
      i++;
      if (/^\s*#/.test(lines[i]!)) {
        line += ' \\';
        continue;
      }
      line += lines[i]!;
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/s.exec(line);
    if (!m) throw new Error(`Dockerfile line ${start + 1}: cannot parse ${JSON.stringify(line)}`);
    const raw = m[2]!.trim();
    let json: string[] | undefined;
    if (raw.startsWith('[')) {
      try {
        json = JSON.parse(raw) as string[];
      } catch {
        json = undefined;
      }
    }
    const words = raw.split(/\s+/);
    const flags: Record<string, string> = {};
    while (words[0]?.startsWith('--')) {
      const [k, v] = words.shift()!.slice(2).split('=', 2);
      flags[k!] = v ?? '';
    }
    instructions.push({ keyword: m[1]!.toUpperCase(), raw, json, flags, args: words, line: start + 1 });
  }

  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const [image, as, name] = ins.args;
      stages.push({ image: substitute(image!, globalArgs), name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword !== 'ARG') throw new Error(`Dockerfile line ${ins.line}: ${ins.keyword} before FROM`);
      const [k, v] = ins.args[0]!.split('=', 2);
      globalArgs[k!] = unquote(v ?? '');
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return { globalArgs, stages };
}

export function substitute(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => vars[(a ?? b)!] ?? '');
}

function unquote(s: string): string {
  return /^".*"$/.test(s) ? (JSON.parse(s) as string) : s;
}

/** `KEY=value KEY2="x y"` (ENV, LABEL): the pairs, quotes removed. */
export function keyValues(raw: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of raw.matchAll(/([\w.-]+)=("(?:[^"\\]|\\.)*"|\S+)/g)) out[m[1]!] = unquote(m[2]!);
  return out;
}

/** A .dockerignore file as a predicate on context-relative paths (`a/b.ts`). */
export function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = (negate ? l.slice(1) : l).replace(/^\/+|\/+$/g, '');
      const re = pattern
        .split('/')
        .map((part) => (part === '**' ? '.*' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
        .join('/')
        .replace(/\.\*\//g, '(?:.*/)?');
      return { negate, re: new RegExp(`^${re}$`) };
    });
  return (path: string) => {
    // A path is excluded when it or one of its parent directories matches; the last rule wins.
    const parts = path.split('/');
    const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const rule of rules) if (candidates.some((c) => rule.re.test(c))) excluded = !rule.negate;
    return excluded;
  };
}
