// Sign-in: an API key, checked with GET /v1/me and kept for this tab only.

import { api, storeKey } from '../api.js';
import { errorBox, field, h, render } from '../ui.js';

export function show({ onSignedIn }) {
  const input = h('input', { type: 'password', name: 'key', autocomplete: 'off', required: true, spellcheck: 'false' });
  const problem = h('div', {});
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'panel', 'aria-describedby': 'signin-about' },
    field('API key', input, 'Starts with sable_. Kept in this browser tab only; closing the tab signs out.'),
    h('div', { class: 'actions' }, button),
    problem);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    button.disabled = true;
    problem.replaceChildren();
    try {
      const me = await api('/v1/me', { key });
      storeKey(key);
      onSignedIn(me);
    } catch (error) {
      const message = error.status === 401
        ? { status: 401, message: 'the gateway does not know this key, or it was revoked' }
        : error;
      problem.replaceChildren(errorBox(message, 'Signing in'));
      button.disabled = false;
      input.focus();
    }
  });
  render('Sign in to Sable',
    h('p', { id: 'signin-about' }, 'Use an API key of your org. ', h('code', {}, 'sable admin key create --org ORG'),
      ' makes one (add ', h('code', {}, '--admin'), ' for the audit, runtime and keys pages).'),
    form);
  input.focus();
}
