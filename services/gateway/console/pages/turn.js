// A turn: status, model and usage, the step timeline as a waterfall, every provider call
// and every tool call with its arguments and result, and the trace.

import { api } from '../api.js';
import { isFinal, pollTurn } from '../live.js';
import { badge, empty, errorBox, facts, h, json, loading, ms, render, shortId, table, time } from '../ui.js';

export async function show({ args: [turnId] }) {
  const body = h('div', {}, loading('the turn'));
  render(`Turn ${shortId(turnId)}`, body);
  const stop = pollTurn(turnId, (turn) => {
    body.replaceChildren(...view(turn).flat(Infinity).filter(Boolean));
    body.dataset.status = turn.status;
  }, (error) => {
    body.replaceChildren(errorBox(error, 'This turn'));
    stop();
  });
  return stop;
}

function view(turn) {
  return [
    h('p', {}, h('a', { href: `#/sessions/${turn.session_id}` }, '← Its session')),
    facts([
      ['Status', h('span', { id: 'turn-status' }, badge(turn.status), isFinal(turn.status) ? null : ' (refreshing)')],
      ['Turn id', h('span', { class: 'mono' }, turn.turn_id)],
      ['Agent', [turn.agent, turn.binding_rule ? h('span', { class: 'hint' }, ` (rule ${turn.binding_rule})`) : null]],
      ['Model', turn.model ? `${turn.model.profile} — ${turn.model.route_reason ?? ''}` : '—'],
      ['Usage', turn.usage ? `${turn.usage.input_tokens} in · ${turn.usage.output_tokens} out · ${turn.usage.cached_input_tokens} cached` : '—'],
      ['Attempt', String(turn.attempt)],
      ['Queued', time(turn.created_at)], ['Started', time(turn.started_at)], ['Finished', time(turn.finished_at)],
      ['Trace', trace(turn)],
    ]),
    turn.error ? h('div', { class: 'error', role: 'alert' }, h('strong', {}, turn.error.code), ': ', turn.error.message ?? '') : null,
    turn.reply ? [h('h2', {}, 'Reply'), h('div', { class: 'panel text' }, turn.reply.text)] : null,
    h('h2', { id: 'timeline-h' }, 'Timeline'), waterfall(turn),
    h('h2', {}, 'Provider calls'), providerCalls(turn.provider_calls),
    h('h2', {}, 'Tool calls'), toolCalls(turn.tool_calls),
  ];
}

function trace(turn) {
  if (!turn.trace_id) return 'no trace recorded';
  return [h('span', { class: 'mono' }, turn.trace_id), ' ',
    turn.langfuse_url
      ? h('a', { href: turn.langfuse_url, target: '_blank', rel: 'noopener noreferrer' }, 'Open in Langfuse')
      : h('span', { class: 'hint' }, '(set SABLE_LANGFUSE_HOST to link traces)')];
}

function stepLabel(step) {
  switch (step.step) {
    case 'provider_call': return [`model call: ${step.profile}`, h('small', {}, `${step.purpose} · ${step.outcome}${step.time_to_first_token_ms != null ? ` · first token ${step.time_to_first_token_ms} ms` : ''}`)];
    case 'tool_call': return [`tool: ${step.tool}`, h('small', {}, `round ${step.round} · ${step.status}`)];
    case 'started': return ['started', h('small', {}, `attempt ${step.attempt}`)];
    case 'finished': return ['finished', h('small', {}, step.status)];
    default: return [step.step];
  }
}

/** Each step as a bar placed by its start and sized by its duration. */
function waterfall(turn) {
  const steps = turn.timeline ?? [];
  if (steps.length === 0) return empty('No steps recorded yet.');
  const origin = Date.parse(steps[0].at);
  const ends = steps.map((step) => Date.parse(step.at) + (step.duration_ms ?? 0));
  const span = Math.max(1, Math.max(...ends, isFinal(turn.status) ? 0 : Date.now()) - origin);
  return h('ol', { class: 'waterfall', 'aria-labelledby': 'timeline-h' }, steps.map((step) => {
    const offset = Date.parse(step.at) - origin;
    const bar = h('span', { class: `bar ${step.duration_ms == null ? 'marker' : step.step}` });
    bar.style.left = `${Math.min(99.5, (offset / span) * 100)}%`;
    if (step.duration_ms != null) bar.style.width = `${Math.max(0.5, (step.duration_ms / span) * 100)}%`;
    const said = `${step.step.replace('_', ' ')} at +${offset} ms${step.duration_ms != null ? `, lasting ${step.duration_ms} ms` : ''}`;
    return h('li', { dataset: { step: step.step } },
      h('div', { class: 'label' }, stepLabel(step)),
      h('div', { class: 'track', role: 'img', 'aria-label': said, title: said }, bar));
  }));
}

function providerCalls(calls) {
  if (calls.length === 0) return empty('No model calls yet.');
  return table('Every call to a model provider, retries and failovers included', [
    { label: 'Purpose', cell: (c) => c.purpose },
    { label: 'Profile', cell: (c) => c.profile },
    { label: 'Provider', cell: (c) => `${c.provider} (${c.provider_kind})` },
    { label: 'Model', cell: (c) => c.model },
    { label: 'Outcome', cell: (c) => [badge(c.outcome), c.error_message ? h('div', { class: 'hint' }, c.error_message) : null] },
    { label: 'Failover reason', cell: (c) => c.failover_reason ?? '—' },
    { label: 'First token', cell: (c) => ms(c.time_to_first_token_ms) },
    { label: 'Duration', cell: (c) => ms(c.duration_ms) },
    { label: 'Tokens', cell: (c) => `${c.usage.input_tokens ?? 0} in · ${c.usage.output_tokens ?? 0} out · ${c.usage.cached_input_tokens ?? 0} cached` },
    { label: 'Started', cell: (c) => time(c.started_at) },
  ], calls);
}

function toolCalls(calls) {
  if (calls.length === 0) return empty('This turn called no tools.');
  return h('div', { class: 'cards' }, calls.map((call) => h('article', { class: 'card tool-call', dataset: { tool: call.tool } },
    h('h3', {}, h('code', {}, call.tool), badge(call.status), call.approval ? ['approval ', badge(call.approval.status)] : null),
    facts([
      ['Source', call.server ? `${call.source}, server ${call.server}` : call.source],
      ['Round', `${call.round} (attempt ${call.turn_attempt}, position ${call.position})`],
      ['Started', time(call.started_at)], ['Duration', ms(call.duration_ms)],
      call.error_code ? ['Error', call.error_code] : null,
    ]),
    h('h4', {}, 'Arguments'), json(call.arguments),
    h('h4', {}, 'Result'), call.result == null ? h('p', { class: 'hint' }, 'no result (not run, or not captured by the org\'s policy)') : json(call.result))));
}
