// Imports a module of web/src (TypeScript) into a Node test: `await load("spec-edit")`.

import { register } from "node:module";

register("./ts-hooks.mjs", import.meta.url);

export const load = (name) => import(new URL(`../../src/${name}.ts`, import.meta.url).href);

/** A deep-frozen copy: an edit that changes its input throws instead of passing unnoticed. */
export function frozen(x) {
  const c = structuredClone(x);
  const freeze = (v) => {
    if (v && typeof v === "object") {
      Object.values(v).forEach(freeze);
      Object.freeze(v);
    }
    return v;
  };
  return freeze(c);
}
