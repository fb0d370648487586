// Module hooks that let Node run the UI's TypeScript modules as they are: a relative import
// without an extension (as Vite takes them) finds the `.ts` file, and a `.ts` file is
// transpiled by the repo's `typescript` (types stripped, not checked: `npm run build` checks),
// and a stylesheet is empty.

import { readFile } from "node:fs/promises";
import ts from "typescript";

export async function resolve(specifier, context, next) {
  if (/^\.\.?\//.test(specifier) && !/\.[cm]?[jt]s$/.test(specifier) && context.parentURL?.endsWith(".ts")) {
    return next(`${specifier}.ts`, context);
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  // A stylesheet import (Vite injects it into the page) is an empty module here.
  if (url.endsWith(".css")) return { format: "module", source: "", shortCircuit: true };
  if (!url.endsWith(".ts")) return next(url, context);
  const source = await readFile(new URL(url), "utf8");
  const out = ts.transpileModule(source, {
    fileName: url,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, isolatedModules: true },
  });
  return { format: "module", source: out.outputText, shortCircuit: true };
}
