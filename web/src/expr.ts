// The derived-column expression language as the editor needs it: tokens to colour, and what to
// suggest at the cursor. Pure: no DOM. The server parses and checks (and points at mistakes);
// this only has to agree with it on where tokens start and end.

/** A function of the language, as `GET /api/meta` lists them. */
export interface FuncInfo { name: string; category: string; signature: string; min_args: number; max_args: number | null }

export type TokenKind = "column" | "string" | "number" | "func" | "keyword" | "op" | "punct" | "space" | "other";
export interface Token { kind: TokenKind; text: string; start: number }

const NAME_CHAR = /[\p{L}\p{N}_./:=+?-]/u;
const WORD_CHAR = /[\p{L}\p{N}_]/u;

/** Splits an expression into tokens, each with its (character) offset; every character is in one. */
export function tokenize(text: string): Token[] {
  const s = [...text];
  const out: Token[] = [];
  let i = 0;
  const push = (kind: TokenKind, start: number) => out.push({ kind, text: s.slice(start, i).join(""), start });
  const quoted = (close: string, escapes: boolean) => {
    i++;
    while (i < s.length && s[i] !== close) i += escapes && s[i] === "\\" ? 2 : 1;
    i = Math.min(i + 1, s.length);
  };
  while (i < s.length) {
    const start = i;
    const c = s[i];
    if (/\s/.test(c)) {
      while (i < s.length && /\s/.test(s[i])) i++;
      push("space", start);
    } else if (c === "$") {
      i++;
      if (s[i] === '"') quoted('"', true);
      else if (s[i] === "`") quoted("`", false);
      else while (i < s.length && NAME_CHAR.test(s[i])) i++;
      push("column", start);
    } else if (c === '"' || c === "`") {
      quoted(c, c === '"');
      push("string", start);
    } else if (/[0-9.]/.test(c) && /[0-9]/.test(s[i + (c === "." ? 1 : 0)] ?? "")) {
      while (i < s.length && /[0-9.eE]/.test(s[i])) i += /[eE]/.test(s[i]) && /[+-]/.test(s[i + 1] ?? "") ? 2 : 1;
      push("number", start);
    } else if (WORD_CHAR.test(c)) {
      while (i < s.length && WORD_CHAR.test(s[i])) i++;
      const word = s.slice(start, i).join("");
      let j = i;
      while (j < s.length && /\s/.test(s[j])) j++;
      push(s[j] === "(" ? "func" : /^(and|or|true|false|null)$/i.test(word) ? "keyword" : "other", start);
    } else if ("(),".includes(c)) {
      i++;
      push("punct", start);
    } else {
      i += ["<=", ">=", "!="].includes(c + (s[i + 1] ?? "")) ? 2 : 1;
      push("op", start);
    }
  }
  return out;
}

/** A suggestion: what the list shows, and the text that replaces the word being typed. */
export interface Completion { label: string; insert: string; detail: string }

/** How a column is written: `$name`, or `$"name"` when it has characters a bare name cannot. */
export function columnRef(name: string): string {
  return [...name].every((c) => NAME_CHAR.test(c)) && !/^[0-9]/.test(name) ? `$${name}` : `$${JSON.stringify(name)}`;
}

/**
 * What to suggest for the word ending at `cursor`: columns after `$`, functions for a word;
 * `start` is where the word begins (the text from there to the cursor is replaced).
 */
export function completions(
  text: string, cursor: number, columns: string[], functions: FuncInfo[],
): { start: number; items: Completion[] } {
  const before = [...text].slice(0, cursor);
  let start = before.length;
  while (start > 0 && (NAME_CHAR.test(before[start - 1]) || WORD_CHAR.test(before[start - 1]))) start--;
  const dollar = start > 0 && before[start - 1] === "$";
  if (dollar) start--;
  const word = before.slice(start + (dollar ? 1 : 0)).join("").toLowerCase();
  if (dollar) {
    const items = columns
      .filter((c) => c.toLowerCase().includes(word))
      .sort((a, b) => Number(!a.toLowerCase().startsWith(word)) - Number(!b.toLowerCase().startsWith(word)))
      .slice(0, 12)
      .map((c) => ({ label: c, insert: columnRef(c), detail: "column" }));
    return { start, items };
  }
  if (!word || !/^[a-z_][a-z0-9_]*$/i.test(word)) return { start: cursor, items: [] };
  const items = functions
    .filter((f) => f.name.toLowerCase().startsWith(word))
    .slice(0, 12)
    .map((f) => ({ label: f.signature, insert: `${f.name}(`, detail: f.category }));
  return { start, items };
}

/** Whether text typed where a column is expected is an expression (to run as a calculated field). */
export function isExpression(text: string): boolean {
  return /[$(]/.test(text.trim());
}
