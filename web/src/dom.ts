// Small DOM helpers the views share.

import { errorText } from "./api";

export const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** An element with properties assigned as given (`textContent`, `className`, `onclick`, …) and children. */
export const el = <K extends keyof HTMLElementTagNameMap>(
  tag: K, props: Record<string, unknown> = {}, ...kids: (Node | string)[]
): HTMLElementTagNameMap[K] => {
  const e = document.createElement(tag);
  Object.assign(e, props);
  e.append(...kids);
  return e;
};

/** An input whose suggestions come from the datalist `list`. */
export function input(props: Record<string, unknown>, list?: string): HTMLInputElement {
  const i = el("input", props);
  if (list) i.setAttribute("list", list);
  return i;
}

/** A removable value of a clause. */
export function chip(text: string, onRemove: () => void): HTMLElement {
  return el("span", { className: "chip" }, text, el("button", { textContent: "×", title: "Remove", onclick: onRemove }));
}

/** One line of the query builder: its label, then its chips and inputs. */
export function clause(label: string, ...kids: (Node | string)[]): HTMLElement {
  return el("div", { className: "clause" }, el("label", { textContent: label }), ...kids);
}

/** A clause's chips replaced by `chips` (right after its label). */
export function setChips(clause: HTMLElement, chips: HTMLElement[]) {
  clause.querySelectorAll(":scope > .chip").forEach((c) => c.remove());
  clause.querySelector(":scope > label")!.after(...chips);
}

export function datalist(id: string, values: string[] = []): HTMLDataListElement {
  const dl = el("datalist", { id });
  setOptions(dl, values.map((v) => [v, ""]));
  return dl;
}

/**
 * A select's or datalist's options set to `[value, label]` pairs, left alone when they already
 * are (so a choice made in a select survives a render); a select keeps its value if still offered.
 */
export function setOptions(list: HTMLSelectElement | HTMLDataListElement, options: [string, string][]) {
  const now = [...list.querySelectorAll("option")].map((o) => [o.value, o.textContent ?? ""]);
  if (JSON.stringify(now) === JSON.stringify(options)) return;
  const value = list instanceof HTMLSelectElement ? list.value : null;
  list.replaceChildren(...options.map(([v, label]) => el("option", label ? { value: v, textContent: label } : { value: v })));
  if (list instanceof HTMLSelectElement && value !== null && options.some(([v]) => v === value)) list.value = value;
}

/** Shows `value` in an input or select unless the user is typing in it. */
export function setValue(e: HTMLInputElement | HTMLSelectElement, value: string) {
  if (e.value !== value && document.activeElement !== e) e.value = value;
}

export function swatch(color: string): HTMLElement {
  const s = el("span", { className: "swatch" });
  s.style.background = color;
  return s;
}

export type MenuItem = [label: string, action: () => void];

/** The context menu (`#menu`) at the pointer; a click elsewhere closes it (see `closeMenuOnClick`). */
export function openMenu(ev: MouseEvent, items: MenuItem[]) {
  const m = $("menu");
  m.replaceChildren(...items.map(([label, f]) => el("button", { textContent: label, onclick: () => { m.hidden = true; f(); } })));
  m.hidden = false;
  m.style.left = `${Math.min(ev.clientX, window.innerWidth - 240)}px`;
  m.style.top = `${Math.min(ev.clientY, window.innerHeight - 40 * items.length)}px`;
  ev.stopPropagation();
}

export function closeMenuOnClick() {
  document.addEventListener("click", (ev) => {
    if (!(ev.target as HTMLElement).closest("#menu")) $("menu").hidden = true;
  });
}

const rendered = new WeakMap<Element, Record<string, unknown>>();

/**
 * Whether `props` differ from those `container` was last rendered with (any property, by
 * identity); records them. Views skip work when nothing they show has changed, so a render
 * elsewhere never replaces the element under a click.
 */
export function changed(container: Element, props: Record<string, unknown>): boolean {
  const last = rendered.get(container);
  rendered.set(container, props);
  if (!last) return true;
  const keys = new Set([...Object.keys(last), ...Object.keys(props)]);
  return [...keys].some((k) => last[k] !== props[k]);
}

/** What `formDialog` shows and does. */
export interface FormDialog {
  /** The dialog's id (an open one of the same id is replaced) and its title. */
  id: string;
  title: string;
  /** The form's rows, between the title and the buttons. */
  rows: HTMLElement[];
  /** The primary button's id and label. */
  submitId: string;
  submitLabel: string;
  /** The id of the line that shows a failed `submit`'s message. */
  errorId: string;
  /** What the primary button does; the dialog closes once it succeeds, else shows its error. */
  submit(): Promise<void> | void;
  /** The element focused when the dialog opens. */
  focus?: HTMLElement;
}

/** A modal form: title, rows, an error line, the primary button and Cancel. */
export function formDialog(f: FormDialog) {
  document.getElementById(f.id)?.remove();
  const dialog = el("dialog", { id: f.id, className: "derived-dialog" });
  const error = el("div", { id: f.errorId, className: "error", hidden: true });
  const form = el("form", { method: "dialog" }, el("h2", { textContent: f.title }), ...f.rows, error,
    el("div", { className: "row" },
      el("button", { id: f.submitId, className: "primary", type: "submit", textContent: f.submitLabel }),
      el("button", { type: "button", textContent: "Cancel", onclick: () => dialog.close() })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await f.submit();
      dialog.close();
    } catch (e) {
      error.hidden = false;
      error.textContent = errorText(e);
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  dialog.append(form);
  document.body.append(dialog);
  dialog.showModal();
  f.focus?.focus();
}

/** A labelled row of a form. */
export const formRow = (label: string, ...kids: (Node | string)[]) =>
  el("div", { className: "row" }, el("label", { textContent: label }), ...kids);
