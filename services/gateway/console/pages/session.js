// A session: its messages in order, the turn in progress (text as it streams, tool calls
// as they run, a pending approval) and a chat box that sends the next message.

import { api } from '../api.js';
import { followSession, isFinal, onStreamChange, pollTurn, sendMessage, streamOf } from '../live.js';
import { announce, badge, empty, errorBox, field, h, loading, render, shortId, time } from '../ui.js';

export async function show({ args: [sessionId] }) {
  const list = h('section', { 'aria-labelledby': 'messages-h' }, h('h2', { id: 'messages-h' }, 'Messages'), loading('messages'));
  const liveSlot = h('div', {});
  const page = { sessionId, list, liveSlot, live: null, watching: null, followed: new Map() };
  render(`Session ${shortId(sessionId)}`,
    h('p', {}, h('a', { href: '#/sessions' }, '← All sessions'), ' · ', h('span', { class: 'mono', title: 'Session id' }, sessionId)),
    list, liveSlot, chatBox(page));
  const messages = await loadMessages(page);
  if (!messages) return () => {};
  const stream = streamOf(sessionId);
  const pending = stream && !isFinal(stream.status) ? stream.turnId : await unfinishedTurn(messages);
  if (pending || stream) watch(page, stream?.turnId ?? pending);
  const unfollow = followSession(sessionId, (name, data) => followed(page, name, data));
  return () => { unfollow(); page.live?.stop(); };
}

/**
 * A live event of the session: text of turns this tab is not streaming itself, and a
 * turn started elsewhere is watched as it begins.
 */
function followed(page, name, data) {
  const own = streamOf(page.sessionId);
  if (own?.open && own.turnId === data.turn_id) return;
  if (name === 'delta') {
    page.followed.set(data.turn_id, (page.followed.get(data.turn_id) ?? '') + data.text);
    if (page.watching !== data.turn_id && !page.live?.running()) watch(page, data.turn_id);
  }
  page.live?.refresh(data.turn_id);
}

async function loadMessages(page) {
  let body;
  try {
    body = await api(`/v1/sessions/${encodeURIComponent(page.sessionId)}/messages`);
  } catch (error) {
    page.list.replaceChildren(page.list.firstChild, errorBox(error, 'This session'));
    return null;
  }
  const heading = page.list.firstChild;
  if (body.messages.length === 0) {
    page.list.replaceChildren(heading, empty('No messages yet: write the first one below.'));
    return body.messages;
  }
  page.list.replaceChildren(heading, h('ol', { class: 'messages' }, body.messages.map(message)));
  return body.messages;
}

function message(m) {
  return h('li', { class: `message ${m.role}` },
    h('header', {}, h('strong', {}, m.role), time(m.created_at),
      h('a', { href: `#/turns/${m.turn_id}`, 'aria-label': `Turn ${m.turn_id} of this ${m.role} message` }, `turn ${shortId(m.turn_id)}`)),
    h('div', { class: 'text' }, m.text));
}

/** The turn of a last user message that has no answer yet, when it has not ended. */
async function unfinishedTurn(messages) {
  const last = messages.at(-1);
  if (!last || last.role !== 'user') return null;
  try {
    const turn = await api(`/v1/turns/${last.turn_id}`);
    return isFinal(turn.status) ? null : turn.turn_id;
  } catch {
    return null;
  }
}

/** Shows the turn in progress: streamed text, status, tool calls, until it ends. */
function watch(page, turnId) {
  page.live?.stop();
  page.watching = turnId;
  const status = h('span', {}, badge('queued'));
  const text = h('div', { class: 'text' });
  const tools = h('ul', { 'aria-label': 'Tool calls of this turn' });
  const note = h('div', { role: 'status' });
  const section = h('section', { class: 'live', 'aria-labelledby': 'live-h', dataset: { turn: turnId, status: 'queued', deltas: '0' } },
    h('h2', { id: 'live-h' }, 'Turn in progress '), h('p', {}, 'Status: ', status, ' · ', h('a', { href: `#/turns/${turnId}` }, 'Open the turn')),
    h('h3', {}, 'Reply so far'), text, h('h3', {}, 'Tool calls'), tools, note);
  page.liveSlot.replaceChildren(section);
  const setStatus = (value) => {
    if (section.dataset.status === value) return;
    section.dataset.status = value;
    status.replaceChildren(badge(value));
  };
  const fromStream = (stream) => {
    if (stream.turnId !== turnId) return;
    text.textContent = stream.text;
    section.dataset.deltas = String(stream.deltas);
    if (stream.deltas > 0 && section.dataset.status === 'queued') setStatus('running');
  };
  const current = streamOf(page.sessionId);
  if (current) fromStream(current);
  const refresh = (id) => {
    const followedText = page.followed.get(id);
    if (id === turnId && followedText && !finished) text.textContent = followedText;
  };
  const unsubscribe = onStreamChange(fromStream);
  let finished = false;
  const stopPolling = pollTurn(turnId, (turn) => {
    setStatus(turn.status);
    tools.replaceChildren(...(turn.tool_calls.length ? turn.tool_calls.map((call) => h('li', {}, h('code', {}, call.tool), ' ', badge(call.status),
      call.approval ? [' approval ', badge(call.approval.status)] : null)) : [h('li', { class: 'hint' }, 'none yet')]));
    if (turn.status === 'waiting_approval') {
      note.replaceChildren(h('div', { class: 'notice' }, 'This turn waits for a person to approve a tool call. ', h('a', { href: '#/approvals' }, 'Decide it on the approvals page'), '.'));
    } else {
      note.replaceChildren();
    }
    if (isFinal(turn.status) && !finished) {
      finished = true;
      if (turn.reply?.text) text.textContent = turn.reply.text;
      if (turn.error) note.replaceChildren(h('div', { class: 'error' }, `The turn failed: ${turn.error.code}: ${turn.error.message ?? ''}`));
      section.querySelector('h2').textContent = 'Latest turn';
      section.querySelector('h3').textContent = 'Reply';
      announce(`The turn ended: ${turn.status}`);
      loadMessages(page);
    }
  }, (error) => note.replaceChildren(errorBox(error, 'The turn')));
  page.live = { stop: () => { unsubscribe(); stopPolling(); }, refresh, running: () => !finished };
  refresh(turnId);
}

function chatBox(page) {
  const text = h('textarea', { name: 'text', rows: 3, required: true });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Send');
  const problem = h('div', {});
  const form = h('form', { class: 'chat panel', 'aria-labelledby': 'chat-h' },
    h('h2', { id: 'chat-h' }, 'Send a message'),
    field('Message', text, 'Enter sends; Shift+Enter starts a new line.'),
    h('div', { class: 'actions' }, button), problem);
  text.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!text.value.trim()) return;
    button.disabled = true;
    problem.replaceChildren();
    try {
      const accepted = await sendMessage({ text: text.value, session_id: page.sessionId });
      text.value = '';
      await loadMessages(page);
      watch(page, accepted.turn_id);
    } catch (error) {
      problem.replaceChildren(errorBox(error, 'The message'));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
