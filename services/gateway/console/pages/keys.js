// Keys (admin keys): the org's API keys, a new key (its secret shown once) and revoking.

import { api } from '../api.js';
import { announce, badge, errorBox, field, h, loading, options, render, table, time } from '../ui.js';

export async function show() {
  const list = h('section', { 'aria-labelledby': 'keys-h' }, h('h2', { id: 'keys-h' }, 'Keys'), loading('keys'));
  const created = h('div', { role: 'status' });
  render('API keys', created, list, createForm(list, created));
  await fill(list);
}

async function fill(list) {
  let keys;
  try {
    keys = (await api('/v1/keys')).keys;
  } catch (error) {
    list.replaceChildren(list.firstChild, errorBox(error, 'The keys'));
    return;
  }
  list.replaceChildren(list.firstChild, table('Prefixes only: secrets are shown once, when made', [
    { label: 'Prefix', cell: (k) => h('code', {}, k.prefix) },
    { label: 'Name', cell: (k) => k.name ?? '—' },
    { label: 'Role', cell: (k) => k.role },
    { label: 'Created', cell: (k) => time(k.created_at) },
    { label: 'Last used', cell: (k) => time(k.last_used_at) },
    { label: 'State', cell: (k) => k.revoked_at ? [badge('revoked'), ' ', time(k.revoked_at)] : badge('active') },
    { label: 'Action', cell: (k) => k.revoked_at ? '—' : h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${k.prefix}`, onclick: async () => {
      if (!confirm(`Revoke ${k.prefix}? Requests with it stop working at once here, within 5 s elsewhere.`)) return;
      try {
        await api(`/v1/keys/${encodeURIComponent(k.prefix)}`, { method: 'DELETE' });
        announce(`Revoked ${k.prefix}`);
      } catch (error) {
        list.append(errorBox(error, 'The revocation'));
      }
      await fill(list);
    } }, 'Revoke') },
  ], keys));
}

function createForm(list, created) {
  const name = h('input', { name: 'name', maxlength: 100 });
  const role = h('select', { name: 'role' }, options([['member', 'member'], ['admin', 'admin']], 'member'));
  const form = h('form', { class: 'panel form-grid', 'aria-labelledby': 'new-key-h' },
    h('h2', { id: 'new-key-h', class: 'wide' }, 'New key'),
    field('Name', name, 'Optional, shown in listings and the audit'), field('Role', role),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create key')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const body = { role: role.value };
      if (name.value.trim()) body.name = name.value.trim();
      const key = await api('/v1/keys', { method: 'POST', body });
      created.replaceChildren(h('div', { class: 'notice' }, h('p', {}, `Key ${key.prefix} made. Copy it now: it is not shown again.`), h('p', { class: 'secret' }, key.key)));
      name.value = '';
      await fill(list);
    } catch (error) {
      created.replaceChildren(errorBox(error, 'The new key'));
    }
  });
  return form;
}
