// The console's only way to the gateway: the public /v1 API with the signed-in key.
// The key lives in sessionStorage: this browser tab only, gone when the tab closes.

const KEY_SLOT = 'sable.console.key';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onSignedOut = () => {};

/** Called when the gateway refuses the key (401): the console asks for one again. */
export function whenSignedOut(callback) { onSignedOut = callback; }

export function storedKey() { return sessionStorage.getItem(KEY_SLOT); }
export function storeKey(key) { sessionStorage.setItem(KEY_SLOT, key); }
export function forgetKey() { sessionStorage.removeItem(KEY_SLOT); }

function headers(key, extra = {}) {
  return { Authorization: `Bearer ${key ?? storedKey() ?? ''}`, ...extra };
}

const UNREACHABLE = 'The gateway cannot be reached. Check that it is running and that this page was opened from it, then try again.';

async function send(path, { method = 'GET', body, key, accept, signal } = {}) {
  const extra = {};
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  if (accept) extra.Accept = accept;
  try {
    return await fetch(path, {
      method,
      headers: headers(key, extra),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'unreachable', UNREACHABLE);
  }
}

async function refusal(response, key) {
  const text = await response.text();
  let error = {};
  try { error = JSON.parse(text).error ?? {}; } catch { /* not JSON: keep the text */ }
  if (response.status === 401 && key === undefined) onSignedOut();
  return new ApiError(response.status, error.code ?? `http_${response.status}`, error.message ?? (text || response.statusText));
}

/** A JSON request; resolves with the parsed body, rejects with an ApiError. */
export async function api(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await refusal(response, options.key);
  if (response.status === 204) return null;
  return response.json();
}

/** A raw download (the audit export): resolves with a Blob. */
export async function download(path) {
  const response = await send(path);
  if (!response.ok) throw await refusal(response);
  return response.blob();
}

/**
 * POST /v1/messages as a server-sent event stream: calls onEvent(name, data) for each
 * event (`accepted`, `delta`, `final`, `error`) and resolves when the stream ends.
 */
export async function streamMessage(body, onEvent, signal) {
  const response = await send('/v1/messages', { method: 'POST', body, accept: 'text/event-stream', signal });
  if (!response.ok) throw await refusal(response);
  await readEvents(response, onEvent);
}

/**
 * GET /v1/sessions/{id}/events: calls onEvent(name, data) for each live event of the
 * session (`delta`, `parked`, `finished`) until the stream ends or `signal` aborts it.
 */
export async function streamSession(sessionId, onEvent, signal) {
  const response = await send(`/v1/sessions/${encodeURIComponent(sessionId)}/events`, { accept: 'text/event-stream', signal });
  if (!response.ok) throw await refusal(response);
  await readEvents(response, onEvent);
}

async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replaceAll('\r\n', '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(block, onEvent);
    }
  }
}

function dispatch(block, onEvent) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) name = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (data.length === 0) return;
  let parsed = data.join('\n');
  try { parsed = JSON.parse(parsed); } catch { /* keep text */ }
  onEvent(name, parsed);
}

/** A query string of the non-empty fields of `params`, with its `?`, or ''. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}
