// Types of tools/helm-docs.mjs, for the tests that import it.
export interface ValueKey {
  key: string;
  value: unknown;
  description: string | undefined;
  covered: boolean;
}
export function valueKeys(valuesText: string): ValueKey[];
export function undocumentedKeys(valuesText: string): string[];
export function renderReadme(chartDir: string): string;
