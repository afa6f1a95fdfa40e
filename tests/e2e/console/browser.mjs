// Drives the web console in Debian's headless Chromium (playwright-core, no browser
// download), for tests/e2e/console.rs. Argument: one JSON object
// {url, admin_key, member_key, other_key, shots}. Prints one JSON line of what it saw;
// exits non-zero, saying which step failed, when anything is not as it should be.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const WIDE = { width: 1280, height: 900 };
const NARROW = { width: 390, height: 844 };
const seen = { screenshots: [] };
let step = 'starting Chromium';

function log(text) { process.stderr.write(`[console test] ${text}\n`); }

async function main() {
  const profile = mkdtempSync(join(tmpdir(), 'sable-console-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-background-networking', '--disable-component-update'],
    viewport: WIDE,
    acceptDownloads: true,
  });
  context.setDefaultTimeout(30000);
  const page = context.pages()[0] ?? await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => { if (message.type() === 'error') problems.push(`console error: ${message.text()}`); });
  try {
    await asAdmin(page);
    await narrowPass(page);
    await asMember(page);
    await asOtherOrg(page);
    assert.deepEqual(problems.filter((p) => !/status of (401|403|404|422)/.test(p)), [], 'the pages logged errors (refusals the test asks for aside)');
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Waits until no page section is still loading. */
async function settled(page) {
  await page.locator('main h1').first().waitFor();
  await page.waitForFunction(() => !document.querySelector('main[aria-busy=true], main [role=status].hint, main [aria-busy=true]'));
}

async function shoot(page, name) {
  await settled(page);
  // Text outside JSON blocks never shows a value the page failed to render.
  const leaked = await page.evaluate(() => {
    const walker = document.createTreeWalker(document.getElementById('main'), NodeFilter.SHOW_TEXT);
    const found = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!node.parentElement.closest('pre') && /\bnull\b|\bundefined\b|\[object /.test(node.textContent)) found.push(node.textContent);
    }
    return found;
  });
  assert.deepEqual(leaked, [], `the ${name} page shows unrendered values`);
  const width = page.viewportSize().width;
  const path = join(config.shots, `${name}-${width}.png`);
  await page.screenshot({ path, fullPage: true });
  seen.screenshots.push(path);
}

async function go(page, hash) {
  await page.goto(`${config.url}/console/${hash}`);
  await page.waitForFunction((wanted) => document.getElementById('main').dataset.shown === wanted, new URL(`http://x/${hash}`).hash);
  await settled(page);
}

/**
 * After a click that changes the hash: waits until the router has shown the page of the
 * new hash. The URL changes before the router runs, so the previous page is still in
 * the DOM, settled, when the URL already matches; reading it then races the new render.
 */
async function arrived(page) {
  await page.waitForFunction(() => document.getElementById('main').dataset.shown === location.hash);
  await settled(page);
}

async function signIn(page, key, shot) {
  step = 'signing in';
  await page.goto(`${config.url}/console/`);
  const input = page.getByLabel('API key');
  await input.waitFor();
  if (shot) await shoot(page, 'signin');
  await input.fill(key);
  await input.press('Enter');
  await page.locator('#top:not([hidden])').waitFor();
  await settled(page);
}

async function signOut(page) {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('API key').waitFor();
}

async function navLinks(page) {
  return page.getByRole('navigation', { name: 'Console pages' }).getByRole('link').allTextContents();
}

async function asAdmin(page) {
  step = 'a wrong key is refused';
  await page.goto(`${config.url}/console/`);
  await page.getByLabel('API key').fill('sable_nope');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'does not know this key' }).waitFor();

  await signIn(page, config.admin_key, true);
  step = 'the admin sees every page';
  assert.deepEqual(await navLinks(page), ['Sessions', 'Approvals', 'Cron', 'Agents', 'Audit', 'Runtime', 'Keys']);
  await page.locator('main').getByText('No sessions yet').waitFor();
  await streamedConversation(page);
  await toolTurn(page);
  await approval(page);
  await cronTask(page);
  await audit(page);
  await otherAdminPages(page);
}

async function streamedConversation(page) {
  step = 'starting a conversation and watching its reply stream';
  await page.getByLabel('First message').fill('please stream this reply back to me word by word');
  await page.getByLabel('Conversation id').fill('console-chat');
  await page.getByLabel('User id').fill('ada');
  await page.getByRole('button', { name: 'Start' }).click();
  await page.waitForURL(/#\/sessions\/[0-9a-f-]{36}$/);
  seen.session_id = page.url().split('/').at(-1);
  // Part of the reply shown while the turn still runs: only the stream can do that.
  const partial = await page.waitForFunction(() => {
    const live = document.querySelector('section.live');
    const text = live?.querySelector('.text')?.textContent ?? '';
    return live && text.length > 0 && !['done', 'failed'].includes(live.dataset.status) ? text : null;
  }, null, { polling: 'raf' });
  seen.partial_reply = await partial.jsonValue();
  await page.locator('section.live[data-status=done]').waitFor();
  seen.streamed_reply = await page.locator('section.live .text').textContent();
  seen.deltas = Number(await page.locator('section.live').getAttribute('data-deltas'));
  assert.ok(seen.streamed_reply.startsWith(seen.partial_reply) && seen.partial_reply !== seen.streamed_reply,
    `a partial reply (${seen.partial_reply}) before the whole (${seen.streamed_reply})`);
  assert.ok(seen.deltas >= 3, `several deltas streamed, saw ${seen.deltas}`);
  await page.locator('.message.assistant').filter({ hasText: 'echo: please stream' }).waitFor();
}

async function toolTurn(page) {
  step = 'sending a message from the chat box that calls a tool';
  const box = page.getByLabel('Message', { exact: true });
  await box.fill('what time is it #tool=time');
  await box.press('Enter');
  await page.locator('section.live ul li code', { hasText: 'time' }).waitFor();
  await page.locator('section.live[data-status=done]').waitFor();
  await page.locator('.message.assistant').filter({ hasText: 'tool said:' }).waitFor();
  await shoot(page, 'session');
  step = 'opening the turn and seeing its tool call';
  await page.getByRole('link', { name: 'Open the turn' }).click();
  await page.waitForURL(/#\/turns\//);
  seen.tool_turn_id = page.url().split('/').at(-1);
  const call = page.locator('article.tool-call[data-tool=time]');
  await call.waitFor();
  await call.getByRole('heading', { name: 'Result' }).waitFor();
  assert.equal(await page.locator('.waterfall li[data-step=provider_call]').count(), 2, 'two model calls on the timeline');
  assert.equal(await page.locator('.waterfall li[data-step=tool_call]').count(), 1, 'one tool call on the timeline');
  const utc = await page.locator('time').first().getAttribute('title');
  assert.match(utc, /Z \(UTC\)$/, 'times say UTC on hover');
  await shoot(page, 'turn');
}

async function approval(page) {
  step = 'a tool call that needs approval parks its turn';
  await go(page, '#/sessions');
  await page.getByLabel('First message').fill('note this #tool=memory #args={"action":"append","text":"likes-green-tea"}');
  await page.getByLabel('Agent').selectOption('careful');
  await page.getByRole('button', { name: 'Start' }).click();
  await page.locator('section.live[data-status=waiting_approval]').waitFor();
  await page.getByRole('link', { name: 'Decide it on the approvals page' }).waitFor();
  seen.approval_session_id = page.url().split('/').at(-1);
  // Decided in a second tab (signed in on its own: the key is per tab) while this one
  // keeps the session open and must show the resumed turn's reply as it streams.
  const other = await page.context().newPage();
  await decideInAnotherTab(other);
  step = 'the session page streams the resumed turn';
  await page.waitForFunction(() => {
    const live = document.querySelector('section.live');
    return live && live.querySelector('.text').textContent.length > 0 && live.dataset.status !== 'done';
  }, null, { polling: 'raf' });
  await page.locator('section.live[data-status=done]').waitFor();
  await page.locator('.message.assistant').filter({ hasText: 'tool said:' }).waitFor();
  await page.bringToFront();
  await go(page, '#/approvals');
  step = 'the approved turn finishes';
  const decided = page.locator(`article.card[data-approval="${seen.approval_id}"][data-status=approved]`);
  await decided.waitFor();
  await decided.getByText('fine by me').waitFor();
  await decided.getByRole('link').first().click();
  await page.waitForURL(/#\/turns\//);
  seen.approval_turn_id = page.url().split('/').at(-1);
  await page.locator('main [data-status=done]').waitFor();
  await page.locator('article.tool-call[data-tool=memory] .badge.approved').waitFor();
}

async function decideInAnotherTab(page) {
  step = 'approving the pending call with a comment, in another tab';
  await signIn(page, config.admin_key);
  await go(page, '#/approvals');
  const card = page.locator('article.card[data-status=pending]');
  await card.waitFor();
  assert.equal(await card.count(), 1);
  seen.approval_id = await card.getAttribute('data-approval');
  await shoot(page, 'approvals');
  await card.getByLabel('Comment (optional)').fill('fine by me');
  await card.getByRole('button', { name: 'Approve' }).click();
  await page.locator(`article.card[data-approval="${seen.approval_id}"][data-status=approved]`).waitFor();
  await page.locator('main').getByText('Nothing waits for a decision').waitFor();
  await page.close();
}

async function cronTask(page) {
  step = 'creating a cron task with a live preview';
  await go(page, '#/cron');
  await page.locator('main').getByText('No scheduled tasks').waitFor();
  await page.getByLabel('Name').fill('morning digest');
  const schedule = page.getByLabel('Schedule');
  await schedule.fill('61 9 * * *');
  await page.locator('#cron-preview[data-state=invalid]').waitFor();
  await schedule.fill('0 9 * * *');
  await page.getByLabel('Time zone').fill('UTC');
  await page.locator('#cron-preview[data-state=ok]').waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#cron-preview li').length === 5);
  await page.getByLabel('Prompt').fill('summarise the night');
  await page.getByRole('button', { name: 'Create task' }).click();
  await page.waitForURL(/#\/cron\/[0-9a-f-]{36}$/);
  seen.cron_task_id = page.url().split('/').at(-1);
  await page.getByRole('heading', { name: 'Cron task: morning digest' }).waitFor();
  await arrived(page);
  const fires = await page.locator('dl.facts .fires time').allTextContents();
  assert.equal(fires.length, 5, 'the task shows its next five fires');
  step = 'running the task now and seeing its run';
  await page.getByRole('button', { name: 'Run now' }).click();
  await page.locator('main').getByText('Run started').waitFor();
  await settled(page);
  await page.locator('section[aria-labelledby=runs-h] tbody tr').first().waitFor();
  await shoot(page, 'cron-task');
  await go(page, '#/cron');
  await page.getByRole('link', { name: 'morning digest' }).waitFor();
  assert.equal(await page.locator('tbody .fires li').count(), 3, 'the list shows the next fires');
  await shoot(page, 'cron');
  step = 'pausing the task';
  await page.getByRole('link', { name: 'morning digest' }).click();
  await page.getByRole('button', { name: 'Pause' }).click();
  await page.getByRole('button', { name: 'Resume' }).waitFor();
  await page.locator('main').getByText('paused: none').waitFor();
}

async function audit(page) {
  step = 'filtering the audit';
  await page.getByRole('link', { name: 'Audit', exact: true }).click();
  await page.waitForURL(/#\/audit$/);
  await arrived(page);
  const all = await page.locator('tbody code.action').allTextContents();
  assert.ok(all.some((action) => !action.startsWith('approval.')), 'unfiltered, more than approvals');
  await page.getByLabel('Action').fill('approval.*');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/action=approval/);
  await arrived(page);
  const filtered = await page.locator('tbody code.action').allTextContents();
  assert.ok(filtered.length >= 2, `approval requested and granted, saw ${filtered}`);
  assert.ok(filtered.every((action) => action.startsWith('approval.')), `only approvals: ${filtered}`);
  seen.audit_actions = filtered;
  await shoot(page, 'audit');
  step = 'exporting the filtered audit';
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export NDJSON' }).click()]);
  const lines = readFileSync(await download.path(), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
  assert.equal(lines.length, filtered.length, 'the export holds the filtered events');
  assert.ok(lines.every((event) => event.action.startsWith('approval.')));
  seen.exported = lines.length;
}

async function otherAdminPages(page) {
  step = 'the agents page lists tools and MCP servers';
  await go(page, '#/agents');
  await page.locator('section[data-agent=careful] code', { hasText: 'memory' }).waitFor();
  await page.locator('main').getByText('No MCP servers').waitFor();
  await shoot(page, 'agents');
  step = 'the runtime page lists live processes';
  await go(page, '#/runtime');
  await page.locator('tbody td', { hasText: 'worker' }).first().waitFor();
  await shoot(page, 'runtime');
  step = 'the keys page lists the org\'s keys';
  await go(page, '#/keys');
  assert.ok(await page.locator('tbody tr').count() >= 2);
  await shoot(page, 'keys');
}

/** Every page again at 390 px: nothing wider than the screen, and a screenshot. */
async function narrowPass(page) {
  await page.setViewportSize(NARROW);
  const pages = [
    ['sessions', '#/sessions'], ['session', `#/sessions/${seen.session_id}`], ['turn', `#/turns/${seen.tool_turn_id}`],
    ['approvals', '#/approvals'], ['cron', '#/cron'], ['cron-task', `#/cron/${seen.cron_task_id}`],
    ['audit', '#/audit?action=approval.*'], ['agents', '#/agents'], ['runtime', '#/runtime'], ['keys', '#/keys'],
  ];
  for (const [name, hash] of pages) {
    step = `the ${name} page at 390 px`;
    await go(page, hash);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= NARROW.width, `${name} is ${width} px wide at ${NARROW.width} px`);
    await shoot(page, name);
  }
  await page.setViewportSize(WIDE);
  await go(page, '#/sessions');
  await shoot(page, 'sessions');
}

async function asMember(page) {
  step = 'a member key does not see admin pages';
  await signOut(page);
  await page.setViewportSize(NARROW);
  await shoot(page, 'signin');
  await page.setViewportSize(WIDE);
  await signIn(page, config.member_key);
  step = 'a member key does not see admin pages';
  assert.deepEqual(await navLinks(page), ['Sessions', 'Approvals', 'Cron', 'Agents']);
  await page.locator('tbody tr').first().waitFor();
  for (const hash of ['#/audit', '#/runtime', '#/keys']) {
    await go(page, hash);
    await page.getByRole('heading', { name: 'Not for this key' }).waitFor();
  }
}

async function asOtherOrg(page) {
  step = 'another org\'s key sees none of this org\'s data';
  await signOut(page);
  await signIn(page, config.other_key);
  step = 'another org\'s key sees none of this org\'s data';
  await page.locator('main').getByText('No sessions yet').waitFor();
  await go(page, `#/sessions/${seen.session_id}`);
  await page.getByRole('alert').filter({ hasText: 'another org' }).waitFor();
  await go(page, `#/turns/${seen.tool_turn_id}`);
  await page.getByRole('alert').filter({ hasText: 'another org' }).waitFor();
  await go(page, '#/approvals');
  await page.locator('main').getByText('Nothing waits for a decision').waitFor();
  await page.locator('main').getByText('No decisions yet').waitFor();
  await go(page, '#/cron');
  await page.locator('main').getByText('No scheduled tasks').waitFor();
  await go(page, `#/cron/${seen.cron_task_id}`);
  await page.getByRole('alert').filter({ hasText: 'another org' }).waitFor();
  await go(page, '#/audit?action=approval.*');
  await page.locator('main').getByText('No event matches these filters').waitFor();
  await go(page, '#/audit');
  const links = await page.locator('main a').evaluateAll((anchors) => anchors.map((a) => a.getAttribute('href')));
  for (const id of [seen.session_id, seen.tool_turn_id, seen.approval_turn_id]) {
    assert.ok(!links.some((href) => href.includes(id)), `the other org's audit links to ${id}`);
  }
  const actions = await page.locator('tbody code.action').allTextContents();
  const theirs = actions.filter((action) => /^(message|turn|tool|approval|cron|provider)\./.test(action));
  assert.deepEqual(theirs, [], 'the other org\'s audit shows none of this org\'s activity');
  await go(page, '#/keys');
  assert.equal(await page.locator('tbody tr').count(), 1, 'the other org has one key');
}

main().then(() => {
  process.stdout.write(`${JSON.stringify(seen)}\n`);
}, (error) => {
  process.stderr.write(`console browser test failed while ${step}:\n${error.stack ?? error}\n`);
  process.exit(1);
});
