// Small DOM helpers shared by the pages. Data is always set as text, never as HTML.

/** Builds an element: h('a', {href: '#/x', class: 'y'}, 'text', child, ...). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

const local = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** A time in the browser's zone, with UTC on hover. */
export function time(iso) {
  if (!iso) return h('span', { class: 'hint' }, '—');
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h('span', {}, iso);
  return h('time', { datetime: date.toISOString(), title: `${date.toISOString().replace('.000Z', 'Z')} (UTC)` }, local.format(date));
}

export function badge(status) {
  const text = String(status ?? 'unknown');
  return h('span', { class: `badge ${text}` }, text.replaceAll('_', ' '));
}

export function ms(value) {
  return value === null || value === undefined ? '—' : `${value} ms`;
}

export function shortId(id) {
  // The end of a UUIDv7: its start is a timestamp, shared by ids made close together.
  return id ? `…${String(id).slice(-8)}` : '—';
}

/** A JSON value, pretty-printed. */
export function json(value) {
  return h('pre', {}, typeof value === 'string' ? value : JSON.stringify(value, null, 2));
}

/** A refusal or failure, with what to do about it. */
export function errorBox(error, what = 'This page') {
  const hint = {
    401: 'Sign in again with a valid key.',
    403: 'This needs an admin key: sign in with one (sable admin key create --admin).',
    404: 'It does not exist, or belongs to another org than this key\'s.',
    503: 'A dependency of the gateway is down (database or bus). Try again shortly; /readyz says which.',
  }[error.status] ?? (error.status === 0 ? '' : 'Try again; if it persists, the gateway\'s log says why.');
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, `${what} could not be loaded`), ': ', error.message ?? String(error),
    hint ? h('p', {}, hint) : null);
}

export function empty(...children) {
  return h('p', { class: 'empty' }, ...children);
}

/**
 * A table that stacks into cards on narrow screens. columns: [{label, cell: row => node}].
 */
export function table(caption, columns, rows) {
  return h('table', { class: 'stack' },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map((column) => h('th', { scope: 'col' }, column.label)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((column) => h('td', { 'data-label': column.label }, column.cell(row)))))));
}

export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([term, value]) => [h('dt', {}, term), h('dd', {}, value ?? '—')]));
}

/** A labelled form field; `control` is an input, select or textarea element. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute('aria-describedby', hintId);
  return h('div', { class: control.dataset.wide ? 'wide' : null },
    h('label', { for: id }, label), control, hint ? h('div', { class: 'hint', id: hintId }, hint) : null);
}

export function options(values, selected) {
  return values.map(([value, label]) => h('option', { value, selected: value === selected }, label));
}

/** Says `text` to screen readers. */
export function announce(text) {
  const announcer = document.getElementById('announcer');
  announcer.textContent = '';
  setTimeout(() => { announcer.textContent = text; }, 20);
}

/** Replaces the page: sets the title, the heading and moves focus to it. */
export function render(title, ...children) {
  const main = document.getElementById('main');
  document.title = `${title} · Sable console`;
  const heading = h('h1', { tabindex: '-1' }, title);
  main.replaceChildren(heading, ...children.flat().filter(Boolean));
  heading.focus({ preventScroll: true });
  return main;
}

export function loading(what) {
  return h('p', { class: 'hint', role: 'status' }, `Loading ${what}…`);
}
