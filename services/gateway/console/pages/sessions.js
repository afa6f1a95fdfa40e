// Sessions: the org's sessions, newest first, searchable by conversation or user, and a
// form that starts a new conversation.

import { api, query } from '../api.js';
import { sendMessage } from '../live.js';
import { empty, errorBox, field, h, loading, options, render, shortId, table, time } from '../ui.js';

export async function show({ params, navigate }) {
  const filters = { conversation: params.get('conversation') ?? '', user_id: params.get('user_id') ?? '' };
  const results = h('section', { 'aria-labelledby': 'sessions-h', 'aria-busy': 'true' },
    h('h2', { id: 'sessions-h' }, 'Sessions, newest first'), loading('sessions'));
  render('Sessions', searchForm(filters), results, await startForm(navigate));
  await fill(results, filters);
}

function searchForm(filters) {
  const conversation = h('input', { name: 'conversation', value: filters.conversation, type: 'search' });
  const user = h('input', { name: 'user_id', value: filters.user_id, type: 'search' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Search sessions' },
    field('Conversation', conversation, 'Exact conversation id'),
    field('User', user, 'Exact user id'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Search'),
      h('a', { href: '#/sessions' }, 'Clear')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    location.hash = `#/sessions${query({ conversation: conversation.value.trim(), user_id: user.value.trim() })}`;
  });
  return form;
}

async function fill(section, filters, cursor, rows = []) {
  let page;
  try {
    page = await api(`/v1/sessions${query({ ...filters, cursor, limit: 25 })}`);
  } catch (error) {
    section.replaceChildren(section.firstChild, errorBox(error, 'The sessions'));
    section.setAttribute('aria-busy', 'false');
    return;
  }
  rows.push(...page.sessions);
  const heading = section.firstChild;
  section.setAttribute('aria-busy', 'false');
  if (rows.length === 0) {
    const searching = filters.conversation || filters.user_id;
    section.replaceChildren(heading, empty(searching
      ? 'No session matches this search. Conversation and user ids must match exactly; clear the search to see every session.'
      : 'No sessions yet. Start a conversation below, or send a message to POST /v1/messages.'));
    return;
  }
  const list = table(`${rows.length} session${rows.length === 1 ? '' : 's'}`, [
    { label: 'Session', cell: (s) => h('a', { href: `#/sessions/${s.id}`, class: 'mono', 'aria-label': `Session ${s.id}` }, shortId(s.id)) },
    { label: 'Conversation', cell: (s) => s.conversation ?? '—' },
    { label: 'User', cell: (s) => s.user_id ?? '—' },
    { label: 'Agent', cell: (s) => s.agent },
    { label: 'Channel', cell: (s) => s.channel },
    { label: 'Turns', cell: (s) => String(s.turns) },
    { label: 'Last activity', cell: (s) => time(s.updated_at) },
  ], rows);
  const more = page.next_cursor
    ? h('button', { type: 'button', onclick: () => fill(section, filters, page.next_cursor, rows) }, 'Show older sessions')
    : null;
  section.replaceChildren(...[heading, list, more].filter(Boolean));
}

async function startForm(navigate) {
  let agents = [];
  try {
    agents = (await api('/v1/agents')).agents;
  } catch { /* the select then offers the default only */ }
  const text = h('textarea', { name: 'text', required: true, rows: 3, dataset: { wide: '1' } });
  const agent = h('select', { name: 'agent' },
    options([['', 'the default agent'], ...agents.map((a) => [a.id, `${a.name ?? a.id} (${a.id})`])], ''));
  const conversation = h('input', { name: 'conversation' });
  const user = h('input', { name: 'user' });
  const problem = h('div', {});
  const button = h('button', { type: 'submit', class: 'primary' }, 'Start');
  const form = h('form', { class: 'panel form-grid', 'aria-labelledby': 'start-h' },
    h('h2', { id: 'start-h', class: 'wide' }, 'Start a conversation'),
    field('First message', text),
    field('Agent', agent),
    field('Conversation id', conversation, 'Optional: the same id always reaches the same session'),
    field('User id', user, 'Optional'),
    h('div', { class: 'actions wide' }, button), h('div', { class: 'wide' }, problem));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    problem.replaceChildren();
    const body = { text: text.value };
    if (agent.value) body.agent = agent.value;
    if (conversation.value.trim()) body.conversation = { id: conversation.value.trim(), user_id: user.value.trim() || undefined };
    try {
      const accepted = await sendMessage(body);
      navigate(`#/sessions/${accepted.session_id}`);
    } catch (error) {
      problem.replaceChildren(errorBox(error, 'The message'));
      button.disabled = false;
    }
  });
  return form;
}
