// The console's shell: sign-in, the navigation for the key's role, and the hash router.

import { api, forgetKey, storedKey, whenSignedOut } from './api.js';
import { h } from './ui.js';
import * as signin from './pages/signin.js';
import * as sessions from './pages/sessions.js';
import * as session from './pages/session.js';
import * as turn from './pages/turn.js';
import * as approvals from './pages/approvals.js';
import * as cron from './pages/cron.js';
import * as audit from './pages/audit.js';
import * as agents from './pages/agents.js';
import * as runtime from './pages/runtime.js';
import * as keys from './pages/keys.js';

// Pages by route; `roles` lists who may open the page. The role comes from GET /v1/me;
// the lists follow the gateway's permission table (services/gateway/src/permissions.rs).
const EVERYONE = ['viewer', 'member', 'operator', 'admin', 'owner', 'platform'];
const OPERATORS = ['operator', 'admin', 'owner', 'platform'];
const ADMINS = ['admin', 'owner', 'platform'];
const ROUTES = [
  { pattern: /^\/sessions$/, page: sessions, nav: 'Sessions', href: '/sessions', roles: EVERYONE },
  { pattern: /^\/sessions\/([^/]+)$/, page: session, roles: EVERYONE, section: '/sessions' },
  { pattern: /^\/turns\/([^/]+)$/, page: turn, roles: EVERYONE, section: '/sessions' },
  { pattern: /^\/approvals$/, page: approvals, nav: 'Approvals', href: '/approvals', roles: EVERYONE },
  { pattern: /^\/cron$/, page: cron, nav: 'Cron', href: '/cron', roles: EVERYONE },
  { pattern: /^\/cron\/([^/]+)$/, page: cron, roles: EVERYONE, section: '/cron' },
  { pattern: /^\/agents$/, page: agents, nav: 'Agents', href: '/agents', roles: EVERYONE },
  { pattern: /^\/audit$/, page: audit, nav: 'Audit', href: '/audit', roles: OPERATORS },
  { pattern: /^\/runtime$/, page: runtime, nav: 'Runtime', href: '/runtime', roles: ADMINS },
  { pattern: /^\/keys$/, page: keys, nav: 'Keys', href: '/keys', roles: ADMINS },
];

let me = null;
let leave = null;

function parseHash() {
  const hash = location.hash.replace(/^#/, '') || '/sessions';
  const [path, search = ''] = hash.split('?');
  return { path, params: new URLSearchParams(search) };
}

function buildNav(role) {
  const { path } = parseHash();
  const nav = document.getElementById('nav');
  nav.replaceChildren(...ROUTES.filter((route) => route.nav && route.roles.includes(role)).map((route) => {
    const { href } = route;
    const current = path === href || (ROUTES.find((r) => r.pattern.test(path))?.section === href);
    return h('li', {}, h('a', { href: `#${href}`, 'aria-current': current ? 'page' : null }, route.nav));
  }));
}

async function route() {
  leave?.();
  leave = null;
  if (!storedKey() || !me) {
    document.getElementById('top').hidden = true;
    leave = signin.show({ onSignedIn: signedIn }) ?? null;
    return;
  }
  const { path, params } = parseHash();
  buildNav(me.role);
  const found = ROUTES.find((candidate) => candidate.pattern.test(path));
  if (!found) {
    location.replace('#/sessions');
    return;
  }
  const main = document.getElementById('main');
  if (!found.roles.includes(me.role)) {
    main.replaceChildren(h('h1', { tabindex: '-1' }, 'Not for this key'),
      h('div', { class: 'error', role: 'alert' }, `This page is for ${found.roles.join(' or ')} keys; this key is a ${me.role} key. Sign in with another key to open it.`));
    document.title = 'Not for this key · Sable console';
    main.firstChild.focus();
    main.dataset.shown = location.hash;
    return;
  }
  const args = path.match(found.pattern).slice(1).map(decodeURIComponent);
  // Busy until the page has its data: assistive technology (and the browser test) can
  // tell a page still loading from one that is empty.
  main.setAttribute('aria-busy', 'true');
  try {
    leave = (await found.page.show({ args, params, me, navigate })) ?? null;
  } finally {
    main.setAttribute('aria-busy', 'false');
    main.dataset.shown = location.hash;
  }
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function signedIn(who) {
  me = who;
  document.getElementById('top').hidden = false;
  document.getElementById('whoami').textContent = `${who.key.name ?? 'unnamed key'} · ${who.role} · ${who.org_id ? `org …${who.org_id.slice(-8)}` : 'platform'}`;
  document.getElementById('whoami').title = `org ${who.org_id}`;
  route();
}

function signOut() {
  forgetKey();
  me = null;
  route();
}

async function start() {
  whenSignedOut(signOut);
  document.getElementById('signout').addEventListener('click', signOut);
  document.getElementById('skip').addEventListener('click', (event) => {
    event.preventDefault();
    document.getElementById('main').focus();
  });
  window.addEventListener('hashchange', route);
  if (storedKey()) {
    try {
      signedIn(await api('/v1/me'));
      return;
    } catch {
      forgetKey();
    }
  }
  route();
}

start();
