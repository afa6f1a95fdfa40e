// Agents: each agent of the catalog with the tools it is offered right now, and the MCP
// servers behind the MCP tools.

import { api } from '../api.js';
import { badge, empty, errorBox, facts, h, loading, render, table } from '../ui.js';

export async function show() {
  const body = h('div', {}, loading('agents'));
  render('Agents and tools', body);
  let agents;
  try {
    agents = (await api('/v1/agents')).agents;
  } catch (error) {
    body.replaceChildren(errorBox(error, 'The agents'));
    return;
  }
  const sections = await Promise.all(agents.map(agentSection));
  body.replaceChildren(...(sections.length ? sections : [empty('No agents: put one in SABLE_AGENTS_DIR (agents/<id>/agent.toml).')]), await servers());
}

async function agentSection(agent) {
  let tools;
  try {
    tools = table(`Tools offered to ${agent.id}`, [
      { label: 'Tool', cell: (t) => h('code', {}, t.name) },
      { label: 'Source', cell: (t) => t.server ? `${t.source} (${t.server})` : t.source },
      { label: 'Approval', cell: (t) => t.requires_approval ? h('span', { class: 'badge pending' }, 'required') : 'no' },
      { label: 'Description', cell: (t) => t.description },
    ], (await api(`/v1/tools?agent=${encodeURIComponent(agent.id)}`)).tools);
  } catch (error) {
    tools = errorBox(error, 'Its tools');
  }
  return h('section', { class: 'panel', 'aria-labelledby': `agent-${agent.id}`, dataset: { agent: agent.id } },
    h('h2', { id: `agent-${agent.id}` }, agent.name ?? agent.id, ' ', h('code', {}, agent.id), agent.default ? [' ', h('span', { class: 'badge ok' }, 'default')] : null),
    agent.description ? h('p', {}, agent.description) : null,
    facts([
      ['Model profile', agent.model_profile ?? 'default'],
      ['Skills', agent.skills?.length ? agent.skills.join(', ') : 'none'],
      ['Needs approval', agent.requires_approval?.length ? agent.requires_approval.join(', ') : 'nothing'],
    ]),
    tools);
}

async function servers() {
  const section = h('section', { 'aria-labelledby': 'mcp-h' }, h('h2', { id: 'mcp-h' }, 'MCP servers'));
  try {
    const list = (await api('/v1/mcp/servers')).servers;
    section.append(list.length ? table('As the MCP sidecar reports them', [
      { label: 'Server', cell: (s) => h('code', {}, s.name) },
      { label: 'Transport', cell: (s) => s.transport },
      { label: 'State', cell: (s) => [badge(s.state), s.last_error ? h('div', { class: 'hint' }, s.last_error) : null] },
      { label: 'Tools', cell: (s) => String(s.tools) },
      { label: 'Calls', cell: (s) => `${s.calls} (${s.errors} failed)` },
      { label: 'Latency', cell: (s) => `p50 ${s.p50_ms} ms · p99 ${s.p99_ms} ms` },
    ], list) : empty('No MCP servers. Run sable mcp-sidecar with an mcp.toml and set SABLE_MCP_SIDECAR_URL on the gateway and workers.'));
  } catch (error) {
    section.append(errorBox(error, 'The MCP servers'));
  }
  return section;
}
