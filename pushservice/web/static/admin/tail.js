// The live tail: the newest messages as the service routes them, newest on top, each
// payload as formatted JSON; long ones folded.

import {clock, count, el} from './util.js';

// Messages kept on the page; a payload longer than this many lines starts folded.
const KEPT = 200;
const FOLDED_LINES = 24;
const SUMMARY_CHARS = 140;

export class Tail {
  constructor(list, status) {
    this.list = list;
    this.status = status;
    this.paused = false;
    this.received = 0;
  }

  clear() {
    this.list.replaceChildren();
    this.received = 0;
    this.showStatus();
  }

  add(messages) {
    this.received += messages.length;
    if (!this.paused) {
      for (const item of messages) this.list.prepend(render(item));
      while (this.list.children.length > KEPT) this.list.lastElementChild.remove();
    }
    this.showStatus();
  }

  showStatus(text) {
    if (text) { this.status.textContent = text; return; }
    const shown = this.list.children.length;
    this.status.textContent = shown
      ? `${count(shown)} shown, ${count(this.received)} received${this.paused ? ' (paused)' : ''}`
      : 'Waiting for messages…';
  }
}

function render(item) {
  const payload = item.message !== undefined
    ? JSON.stringify(item.message, null, 2)
    : `${item.preview}…`;
  const lines = payload.split('\n').length;
  const body = el('pre', {class: 'json'}, payload);
  const head = el('div', {class: 'tail-head'},
    el('span', {class: `type type-${item.type}`}, item.type),
    el('time', {}, clock(item.published_at_ms)),
    el('span', {class: 'topics'}, item.topics.join(' ')),
    el('span', {class: 'muted'}, `${count(item.bytes)} B`));
  const note = item.message === undefined
    ? el('p', {class: 'muted'}, `Only the start of this ${count(item.bytes)}-byte message is shown.`)
    : null;
  const content = lines > FOLDED_LINES
    ? el('details', {}, el('summary', {}, summary(item), el('span', {class: 'muted'}, ` (${lines} lines)`)), body)
    : body;
  return el('li', {class: 'tail-item', dataset: {eventId: item.event_id}},
            head, el('div', {class: 'muted small'}, item.event_id), note, content);
}

/** A folded message in one line: its data (or its text), cut short. */
function summary(item) {
  const text = item.message !== undefined
    ? JSON.stringify(item.message.data ?? item.message)
    : item.preview;
  return text.length > SUMMARY_CHARS ? `${text.slice(0, SUMMARY_CHARS)}…` : text;
}
