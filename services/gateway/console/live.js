// Turns in progress: the text streamed to this tab (POST /v1/messages as SSE) and the
// turn record polled for status and tool calls until the turn ends.

import { api, streamMessage, streamSession } from './api.js';

const FINAL = new Set(['done', 'failed']);
const POLL_MS = 700;

/** Streamed state by session id, for the session page to pick up after navigating. */
const streams = new Map();
const listeners = new Set();

export function isFinal(status) { return FINAL.has(status); }

export function streamOf(sessionId) { return streams.get(sessionId); }

export function onStreamChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function changed(stream) {
  for (const listener of listeners) listener(stream);
}

/**
 * Sends a message as an SSE stream. Resolves with `{turn_id, session_id}` once the
 * gateway accepted it; the text keeps arriving into `streamOf(session_id)`.
 */
export function sendMessage(body) {
  return new Promise((resolve, reject) => {
    let stream = null;
    const onEvent = (name, data) => {
      if (name === 'accepted') {
        stream = { turnId: data.turn_id, sessionId: data.session_id, text: '', deltas: 0, status: data.status, open: true };
        streams.set(data.session_id, stream);
        changed(stream);
        resolve(data);
      } else if (stream && name === 'delta') {
        stream.text += data.text;
        stream.deltas += 1;
        changed(stream);
      } else if (stream && name === 'final') {
        stream.status = data.status;
        if (data.reply?.text) stream.text = data.reply.text;
        stream.error = data.error;
        changed(stream);
      } else if (stream && name === 'error') {
        stream.error = data.error;
        changed(stream);
      }
    };
    const closed = (error) => {
      if (!stream) {
        reject(error ?? new Error('The gateway closed the stream before accepting the message; try again.'));
        return;
      }
      stream.open = false;
      if (error) stream.error = { message: error.message };
      changed(stream);
    };
    streamMessage(body, onEvent).then(() => closed(), closed);
  });
}

/**
 * Polls GET /v1/turns/{id} until the turn ends, calling onTurn(turn) each time it was
 * read and onError(error) when a read failed. Returns a function that stops it.
 */
export function pollTurn(turnId, onTurn, onError) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      const turn = await api(`/v1/turns/${encodeURIComponent(turnId)}`);
      if (stopped) return;
      onTurn(turn);
      if (isFinal(turn.status)) return;
    } catch (error) {
      if (stopped) return;
      onError?.(error);
    }
    timer = setTimeout(tick, POLL_MS);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/**
 * Follows a session's live events (turns this tab did not start, or resumed after an
 * approval) until the returned function is called; reconnects after a dropped stream.
 */
export function followSession(sessionId, onEvent) {
  const controller = new AbortController();
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        await streamSession(sessionId, onEvent, controller.signal);
      } catch (error) {
        if (controller.signal.aborted || error.status === 404 || error.status === 401) return;
      }
      await new Promise((resolve) => { setTimeout(resolve, 1000); });
    }
  };
  run();
  return () => controller.abort();
}
