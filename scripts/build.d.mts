// Types of scripts/build.mjs for the TypeScript that imports it (test/deploy/bundle.test.ts).
import type { Metafile } from 'esbuild';

/** Packages the bundle leaves to node_modules. */
export declare const EXTERNAL: readonly string[];
/** Bundles src/cli.ts into `outdir` (emptied first; default dist/) and returns esbuild's metafile. */
export declare function buildBundle(outdir?: string): Promise<Metafile>;
