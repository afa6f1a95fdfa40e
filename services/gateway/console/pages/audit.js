// Audit (admin keys): the org's audit events, newest first, filtered, a page at a time,
// and the same selection exported as NDJSON.

import { download, api, query } from '../api.js';
import { badge, empty, errorBox, field, h, json, loading, options, render, shortId, table, time } from '../ui.js';

const FIELDS = ['action', 'actor', 'subject', 'outcome', 'session_id', 'turn_id', 'since', 'until'];

export async function show({ params }) {
  const filters = Object.fromEntries(FIELDS.map((name) => [name, params.get(name) ?? '']));
  const results = h('section', { 'aria-labelledby': 'events-h', 'aria-busy': 'true' }, h('h2', { id: 'events-h' }, 'Events, newest first'), loading('events'));
  const problem = h('div', {});
  render('Audit', filterForm(filters, problem), problem, results);
  await fill(results, filters, params.get('cursor'), Number(params.get('page') ?? '1'));
}

/** A datetime-local value as RFC 3339 in UTC, or '' when empty. */
function toRfc3339(local) {
  if (!local) return '';
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? local : date.toISOString();
}

function toLocalInput(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const offset = date.getTimezoneOffset() * 60000;
  return new Date(date.getTime() - offset).toISOString().slice(0, 19);
}

function filterForm(filters, problem) {
  const inputs = {
    action: h('input', { name: 'action', value: filters.action, placeholder: 'tool.* or approval.granted' }),
    actor: h('input', { name: 'actor', value: filters.actor, placeholder: 'key:… or cron:…' }),
    subject: h('input', { name: 'subject', value: filters.subject, placeholder: 'id or kind:id' }),
    outcome: h('select', { name: 'outcome' }, options([['', 'any'], ['ok', 'ok'], ['error', 'error'], ['denied', 'denied'], ['rejected', 'rejected']], filters.outcome)),
    session_id: h('input', { name: 'session_id', value: filters.session_id }),
    turn_id: h('input', { name: 'turn_id', value: filters.turn_id }),
    since: h('input', { name: 'since', type: 'datetime-local', step: 1, value: toLocalInput(filters.since) }),
    until: h('input', { name: 'until', type: 'datetime-local', step: 1, value: toLocalInput(filters.until) }),
  };
  const chosen = () => ({
    ...Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, input.value.trim()])),
    since: toRfc3339(inputs.since.value), until: toRfc3339(inputs.until.value),
  });
  const exportButton = h('button', { type: 'button' }, 'Export NDJSON');
  exportButton.addEventListener('click', async () => {
    exportButton.disabled = true;
    problem.replaceChildren();
    try {
      const blob = await download(`/v1/audit/export${query(chosen())}`);
      const link = h('a', { href: URL.createObjectURL(blob), download: `sable-audit-${new Date().toISOString().slice(0, 19)}.ndjson` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (error) {
      problem.replaceChildren(errorBox(error, 'The export'));
    } finally {
      exportButton.disabled = false;
    }
  });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter audit events' },
    field('Action', inputs.action, 'a name, or a family ending in .*'),
    field('Actor', inputs.actor), field('Subject', inputs.subject), field('Outcome', inputs.outcome),
    field('Session id', inputs.session_id), field('Turn id', inputs.turn_id),
    field('Since', inputs.since, 'your time zone'), field('Until', inputs.until, 'your time zone'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Filter'), exportButton, h('a', { href: '#/audit' }, 'Clear')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    location.hash = `#/audit${query(chosen())}`;
  });
  return form;
}

async function fill(section, filters, cursor, pageNumber) {
  let page;
  try {
    page = await api(`/v1/audit${query({ ...filters, cursor, limit: 25 })}`);
  } catch (error) {
    section.replaceChildren(section.firstChild, errorBox(error, 'The audit events'));
    section.setAttribute('aria-busy', 'false');
    return;
  }
  section.setAttribute('aria-busy', 'false');
  const heading = section.firstChild;
  const filtered = Object.values(filters).some(Boolean);
  if (page.events.length === 0) {
    section.replaceChildren(heading, empty(filtered ? 'No event matches these filters. Widen them, or clear them to see every event.' : 'No audit events yet: every action of the org lands here.'));
    return;
  }
  const next = page.next_cursor ? `#/audit${query({ ...filters, cursor: page.next_cursor, page: pageNumber + 1 })}` : null;
  section.replaceChildren(heading,
    table(`Page ${pageNumber}: ${page.events.length} event${page.events.length === 1 ? '' : 's'}`, [
      { label: 'Time', cell: (e) => time(e.time) },
      { label: 'Action', cell: (e) => h('code', { class: 'action' }, e.action) },
      { label: 'Actor', cell: (e) => h('span', {}, e.actor_name ? `${e.actor_name} ` : '', h('span', { class: 'mono hint' }, e.actor)) },
      { label: 'Subject', cell: (e) => h('span', { class: 'mono' }, `${e.subject.kind}:${shortId(e.subject.id)}`) },
      { label: 'Outcome', cell: (e) => badge(e.outcome) },
      { label: 'Turn', cell: (e) => e.turn_id ? h('a', { href: `#/turns/${e.turn_id}` }, shortId(e.turn_id)) : '—' },
      { label: 'Details', cell: (e) => e.details && Object.keys(e.details).length ? h('details', {}, h('summary', {}, 'details'), json(e.details)) : '—' },
    ], page.events),
    h('nav', { class: 'pager', 'aria-label': 'Audit pages' },
      pageNumber > 1 ? h('a', { href: `#/audit${query(filters)}` }, 'First page') : null,
      next ? h('a', { href: next, rel: 'next' }, 'Next page') : h('span', { class: 'hint' }, 'No older events')));
}
