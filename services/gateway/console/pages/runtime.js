// Runtime (admin keys): the deployment's live processes and versions, queue backlog,
// bus, database pool and MCP sidecar.

import { api } from '../api.js';
import { badge, empty, errorBox, facts, h, loading, render, table, time } from '../ui.js';

export async function show() {
  const body = h('div', {}, loading('the runtime view'));
  render('Runtime', body);
  let view;
  try {
    view = await api('/v1/diagnostics/runtime');
  } catch (error) {
    body.replaceChildren(errorBox(error, 'The runtime view'));
    return;
  }
  const queue = (name, stats) => [name, stats.error ? h('span', { class: 'badge error' }, stats.error)
    : `${stats.pending} pending · ${stats.ack_pending} in progress · ${stats.redelivered} redelivered`];
  body.replaceChildren(
    facts([
      ['Gateway version', view.gateway_version],
      ['Bus', badge(view.bus.connected ? 'up' : 'unreachable')],
      queue('Turn queue', view.bus.queues.turns),
      queue('Delivery queue', view.bus.queues.deliveries),
      ['Database pool', `${view.database.pool.size} open · ${view.database.pool.idle} idle · ${view.database.pool.max} max`],
      ['MCP sidecar', [badge(view.mcp.status === 'not_configured' ? 'not configured' : view.mcp.status), view.mcp.error ? ` ${view.mcp.error}` : '']],
    ]),
    h('h2', {}, 'Live processes'),
    view.roles.length ? table('Processes whose heartbeat is recent', [
      { label: 'Role', cell: (r) => r.role },
      { label: 'Instance', cell: (r) => h('span', { class: 'mono' }, r.instance_id) },
      { label: 'Version', cell: (r) => r.version },
      { label: 'Started', cell: (r) => time(r.started_at) },
      { label: 'Last seen', cell: (r) => time(r.last_seen_at) },
    ], view.roles) : empty('No live processes reported. Workers, gateways and cron heartbeat into the database; check that they run against this database.'));
}
