// Cron: the org's scheduled tasks with their next fires; a task's page edits it (with a
// live preview of the next fire times), runs it now, pauses it and shows its runs.

import { api } from '../api.js';
import { announce, badge, empty, errorBox, facts, field, h, loading, options, render, shortId, table, time } from '../ui.js';

export async function show({ args: [taskId], navigate }) {
  return taskId ? showTask(taskId, navigate) : showList(navigate);
}

async function showList(navigate) {
  const list = h('section', { 'aria-labelledby': 'tasks-h' }, h('h2', { id: 'tasks-h' }, 'Tasks'), loading('tasks'));
  const agents = await agentIds();
  render('Cron tasks', list, h('section', { class: 'panel', 'aria-labelledby': 'new-h' },
    h('h2', { id: 'new-h' }, 'New task'),
    taskForm({ agents, submitLabel: 'Create task', onSubmit: async (body) => {
      const task = await api('/v1/cron/tasks', { method: 'POST', body });
      announce(`Created ${task.name}`);
      navigate(`#/cron/${task.id}`);
    } })));
  let tasks;
  try {
    tasks = (await api('/v1/cron/tasks')).tasks;
  } catch (error) {
    list.replaceChildren(list.firstChild, errorBox(error, 'The tasks'));
    return;
  }
  if (tasks.length === 0) {
    list.replaceChildren(list.firstChild, empty('No scheduled tasks. Create one below; the preview shows when it would fire.'));
    return;
  }
  list.replaceChildren(list.firstChild, table(`${tasks.length} task${tasks.length === 1 ? '' : 's'}`, [
    { label: 'Name', cell: (t) => h('a', { href: `#/cron/${t.id}` }, t.name) },
    { label: 'Schedule', cell: (t) => [h('code', {}, t.schedule), ` ${t.timezone ?? ''}`] },
    { label: 'State', cell: (t) => badge(t.enabled ? 'enabled' : 'paused') },
    { label: 'Next fires', cell: (t) => fires(t.enabled ? t.next_fires.slice(0, 3) : [], 'paused: none') },
    { label: 'Agent', cell: (t) => t.agent ?? 'default' },
  ], tasks));
}

function fires(list, none = 'none') {
  if (!list.length) return h('span', { class: 'hint' }, none);
  return h('ol', { class: 'fires' }, list.map((fire) => h('li', {}, time(fire))));
}

async function agentIds() {
  try {
    return (await api('/v1/agents')).agents.map((agent) => agent.id);
  } catch {
    return [];
  }
}

/** The create / edit form, previewing the next fire times as the schedule is typed. */
function taskForm({ task = {}, agents, submitLabel, onSubmit }) {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const name = h('input', { name: 'name', required: true, value: task.name ?? '' });
  const schedule = h('input', { name: 'schedule', required: true, value: task.schedule ?? '', class: 'mono', spellcheck: 'false' });
  const timezone = h('input', { name: 'timezone', value: task.timezone ?? zone });
  const agent = h('select', { name: 'agent' }, options([['', 'the default agent'], ...agents.map((id) => [id, id])], task.agent ?? ''));
  const prompt = h('textarea', { name: 'prompt', required: true, rows: 3 }, task.prompt ?? '');
  const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: task.enabled ?? true });
  const preview = h('div', { class: 'preview', role: 'status', 'aria-live': 'polite', id: 'cron-preview' });
  const problem = h('div', {});
  const button = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  let timer = null;
  let asked = 0;
  const refresh = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++asked;
      if (!schedule.value.trim()) {
        preview.replaceChildren(h('p', { class: 'hint' }, 'Type a schedule to see when it fires.'));
        return;
      }
      try {
        const body = await api('/v1/cron/preview', { method: 'POST', body: { schedule: schedule.value.trim(), timezone: timezone.value.trim() || 'UTC', count: 5 } });
        if (mine !== asked) return;
        preview.dataset.state = 'ok';
        preview.replaceChildren(h('p', {}, 'Next fire times:'), fires(body.fires, 'it never fires again'));
      } catch (error) {
        if (mine !== asked) return;
        preview.dataset.state = 'invalid';
        preview.replaceChildren(h('p', { class: 'error' }, error.message));
      }
    }, 250);
  };
  schedule.addEventListener('input', refresh);
  timezone.addEventListener('input', refresh);
  refresh();
  const form = h('form', { class: 'form-grid' },
    field('Name', name),
    field('Schedule', schedule, 'cron (0 9 * * MON-FRI), @daily, @every 90s or @at 2030-01-01T09:00:00Z'),
    field('Time zone', timezone, 'IANA zone, e.g. Europe/Berlin'),
    field('Agent', agent),
    h('div', { class: 'wide' }, field('Prompt', prompt, 'What the agent is told at each fire')),
    h('div', {}, h('label', {}, enabled, ' Enabled')),
    h('div', { class: 'wide' }, preview),
    h('div', { class: 'actions wide' }, button), h('div', { class: 'wide' }, problem));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    button.disabled = true;
    problem.replaceChildren();
    try {
      await onSubmit({
        name: name.value.trim(), schedule: schedule.value.trim(), timezone: timezone.value.trim() || 'UTC',
        prompt: prompt.value, agent: agent.value || null, enabled: enabled.checked,
      });
    } catch (error) {
      problem.replaceChildren(errorBox(error, 'The task'));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

async function showTask(taskId, navigate, done) {
  let task;
  try {
    task = await api(`/v1/cron/tasks/${encodeURIComponent(taskId)}`);
  } catch (error) {
    render('Cron task', h('p', {}, h('a', { href: '#/cron' }, '← All tasks')), errorBox(error, 'This task'));
    return;
  }
  const agents = await agentIds();
  const runs = h('section', { 'aria-labelledby': 'runs-h' }, h('h2', { id: 'runs-h' }, 'Run history'), loading('runs'));
  const status = h('div', { role: 'status' }, done ? h('p', { class: 'notice' }, done) : null);
  const act = async (what, request) => {
    status.replaceChildren();
    try {
      await request();
      announce(what);
      if (what !== 'Deleted') await showTask(taskId, navigate, what);
    } catch (error) {
      status.replaceChildren(errorBox(error, 'The action'));
    }
  };
  const path = `/v1/cron/tasks/${encodeURIComponent(taskId)}`;
  render(`Cron task: ${task.name}`,
    h('p', {}, h('a', { href: '#/cron' }, '← All tasks')),
    facts([
      ['State', badge(task.enabled ? 'enabled' : 'paused')],
      ['Schedule', [h('code', {}, task.schedule), ` (${task.timezone})`]],
      ['Next fires', fires(task.enabled ? task.next_fires : [], 'paused: none')],
      ['Created', time(task.created_at)], ['Id', h('span', { class: 'mono' }, task.id)],
    ]),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'primary', onclick: () => act('Run started', () => api(`${path}/run`, { method: 'POST' })) }, 'Run now'),
      h('button', { type: 'button', onclick: () => act(task.enabled ? 'Paused' : 'Resumed', () => api(path, { method: 'PATCH', body: { enabled: !task.enabled } })) }, task.enabled ? 'Pause' : 'Resume'),
      h('button', { type: 'button', class: 'danger', onclick: () => {
        if (confirm(`Delete the task ${task.name}? Its run history goes with it.`)) {
          act('Deleted', () => api(path, { method: 'DELETE' })).then(() => navigate('#/cron'));
        }
      } }, 'Delete')),
    status, runs,
    h('section', { class: 'panel', 'aria-labelledby': 'edit-h' }, h('h2', { id: 'edit-h' }, 'Edit'),
      taskForm({ task, agents, submitLabel: 'Save changes', onSubmit: async (body) => {
        await api(path, { method: 'PATCH', body });
        announce('Saved');
        await showTask(taskId, navigate, 'Saved');
      } })));
  try {
    const history = (await api(`${path}/runs?limit=20`)).runs;
    runs.replaceChildren(runs.firstChild, history.length ? table('Newest first', [
      { label: 'Scheduled', cell: (r) => time(r.scheduled_time) },
      { label: 'Fired', cell: (r) => time(r.fired_time) },
      { label: 'Status', cell: (r) => [badge(r.status), r.error ? h('div', { class: 'hint' }, r.error) : null] },
      { label: 'Turn', cell: (r) => r.turn_id ? h('a', { href: `#/turns/${r.turn_id}` }, shortId(r.turn_id)) : '—' },
      { label: 'Duration', cell: (r) => r.duration_ms == null ? '—' : `${r.duration_ms} ms` },
    ], history) : empty('No runs yet. "Run now" fires it once; the schedule does the rest while sable cron runs.'));
  } catch (error) {
    runs.replaceChildren(runs.firstChild, errorBox(error, 'The run history'));
  }
}
