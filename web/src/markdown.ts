// A small Markdown renderer for board text panels: headings, paragraphs, lists, emphasis, code
// and http(s) links. It builds DOM nodes with textContent only, so no text can become markup.

import { el } from "./dom";

/** Inline spans: `code`, **bold**, *italic*, [text](http…). */
function inline(text: string): Node[] {
  const out: Node[] = [];
  const re = /`([^`]+)`|\*\*([^*]+)\*\*|\*([^*]+)\*|\[([^\]]+)\]\((https?:\/\/[^)\s]+)\)/g;
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
    if (m[1] !== undefined) out.push(el("code", { textContent: m[1] }));
    else if (m[2] !== undefined) out.push(el("strong", { textContent: m[2] }));
    else if (m[3] !== undefined) out.push(el("em", { textContent: m[3] }));
    else out.push(el("a", { textContent: m[4], href: m[5], target: "_blank", rel: "noopener noreferrer" }));
    last = re.lastIndex;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

/** The nodes of `source` rendered. */
export function markdown(source: string): Node[] {
  const out: Node[] = [];
  let para: string[] = [];
  let list: { ordered: boolean; items: string[] } | null = null;
  const flush = () => {
    if (para.length) out.push(el("p", {}, ...inline(para.join(" "))));
    para = [];
    if (list) out.push(el(list.ordered ? "ol" : "ul", {}, ...list.items.map((i) => el("li", {}, ...inline(i)))));
    list = null;
  };
  for (const raw of source.split("\n")) {
    const line = raw.trimEnd();
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^\s*[-*]\s+(.*)$/.exec(line);
    const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
    if (!line.trim()) {
      flush();
    } else if (heading) {
      flush();
      out.push(el(`h${heading[1].length}` as "h1", {}, ...inline(heading[2])));
    } else if (bullet || numbered) {
      const ordered = !bullet;
      if (para.length || (list && list.ordered !== ordered)) flush();
      list ??= { ordered, items: [] };
      list.items.push((bullet ?? numbered)![1]);
    } else {
      if (list) flush();
      para.push(line.trim());
    }
  }
  flush();
  return out;
}
