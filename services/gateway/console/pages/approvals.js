// Approvals: pending first, each with its tool and arguments, approved or denied here
// with an optional comment; then the decided ones, newest first.

import { api } from '../api.js';
import { announce, badge, empty, errorBox, facts, field, h, json, loading, options, render, shortId, time } from '../ui.js';

export async function show() {
  const list = h('div', { 'aria-busy': 'true' }, loading('approvals'));
  render('Approvals', h('p', { class: 'hint' }, 'Tool calls an agent must not make without a person. A decision resumes the waiting turn.'), list);
  await fill(list);
}

async function fill(list) {
  let approvals;
  try {
    approvals = (await api('/v1/approvals')).approvals;
  } catch (error) {
    list.replaceChildren(errorBox(error, 'The approvals'));
    list.setAttribute('aria-busy', 'false');
    return;
  }
  list.setAttribute('aria-busy', 'false');
  const pending = approvals.filter((a) => a.status === 'pending').sort(byNewest);
  const decided = approvals.filter((a) => a.status !== 'pending').sort(byNewest);
  list.replaceChildren(
    h('h2', { id: 'pending-h' }, `Pending (${pending.length})`),
    pending.length
      ? h('div', { class: 'cards', 'aria-labelledby': 'pending-h' }, pending.map((a) => card(a, list)))
      : empty('Nothing waits for a decision. Agents whose tools list require_approval park their turn here.'),
    h('h2', { id: 'decided-h' }, `Decided (${decided.length})`),
    decided.length
      ? h('div', { class: 'cards', 'aria-labelledby': 'decided-h' }, decided.map((a) => card(a, list)))
      : empty('No decisions yet.'));
}

function byNewest(a, b) { return Date.parse(b.created_at) - Date.parse(a.created_at); }

function card(approval, list) {
  const headingId = `approval-${approval.approval_id}`;
  return h('article', { class: `card ${approval.status}`, 'aria-labelledby': headingId, dataset: { approval: approval.approval_id, status: approval.status } },
    h('h3', { id: headingId }, h('code', {}, approval.tool), badge(approval.status)),
    facts([
      ['Requested', time(approval.created_at)],
      approval.status === 'pending' ? ['Expires', time(approval.expires_at)] : ['Decided', time(approval.decided_at)],
      ['Turn', h('a', { href: `#/turns/${approval.turn_id}` }, shortId(approval.turn_id))],
      ['Session', h('a', { href: `#/sessions/${approval.session_id}` }, shortId(approval.session_id))],
      approval.decided_by ? ['Decided by', approval.decided_by] : null,
      approval.scope && approval.status !== 'pending' ? ['Scope', approval.scope] : null,
      approval.comment ? ['Comment', approval.comment] : null,
    ]),
    h('h4', {}, 'Arguments'), json(approval.arguments),
    approval.status === 'pending' ? decisionForm(approval, list) : null);
}

function decisionForm(approval, list) {
  const comment = h('textarea', { name: 'comment', rows: 2, maxlength: 2000 });
  const scope = h('select', { name: 'scope' }, options([['once', 'this call only'], ['session', 'this tool for the rest of the session']], 'once'));
  const problem = h('div', {});
  const decide = async (decision, button) => {
    for (const other of form.querySelectorAll('button')) other.disabled = true;
    problem.replaceChildren();
    try {
      const body = { decision, scope: scope.value };
      if (comment.value.trim()) body.comment = comment.value.trim();
      const result = await api(`/v1/approvals/${approval.approval_id}`, { method: 'POST', body });
      announce(`${approval.tool}: ${result.status}`);
      await fill(list);
    } catch (error) {
      problem.replaceChildren(errorBox(error, 'The decision'));
      for (const other of form.querySelectorAll('button')) other.disabled = false;
      button.focus();
    }
  };
  const approve = h('button', { type: 'button', class: 'primary' }, 'Approve');
  const deny = h('button', { type: 'button', class: 'danger' }, 'Deny');
  approve.addEventListener('click', () => decide('approve', approve));
  deny.addEventListener('click', () => decide('deny', deny));
  const form = h('form', { class: 'form-grid', 'aria-label': `Decide ${approval.tool}` },
    h('div', { class: 'wide' }, field('Comment (optional)', comment, 'Kept with the decision; a denial tells the model.')),
    field('Scope', scope),
    h('div', { class: 'actions' }, approve, deny), h('div', { class: 'wide' }, problem));
  form.addEventListener('submit', (event) => event.preventDefault());
  return form;
}
