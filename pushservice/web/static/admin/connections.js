// The connection table: the connection API's pages (filter by user, topic, instance),
// with a kick button per connection (two clicks: kick, then confirm).

import {ApiError, api, clock, count, el} from './util.js';

const CONFIRM_MS = 4000;

export class ConnectionTable {
  constructor(root) {
    this.root = root;
    this.form = root.querySelector('form');
    this.body = root.querySelector('tbody');
    this.status = root.querySelector('.status');
    this.pageLabel = root.querySelector('.page');
    this.previous = root.querySelector('button[name=previous]');
    this.next = root.querySelector('button[name=next]');
    this.cursors = [null];   // the cursor of each page seen, the first page's is null
    this.nextCursor = null;
    this.loading = null;
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.cursors = [null];
      this.load();
    });
    this.previous.addEventListener('click', () => {
      if (this.cursors.length > 1) { this.cursors.pop(); this.load(); }
    });
    this.next.addEventListener('click', () => {
      if (this.nextCursor) { this.cursors.push(this.nextCursor); this.load(); }
    });
  }

  /** The instances the instance filter offers. */
  setInstances(names) {
    const select = this.form.elements.instance;
    const current = select.value;
    const wanted = ['', ...names];
    const have = [...select.options].map((option) => option.value);
    if (wanted.join('\n') === have.join('\n')) return;
    select.replaceChildren(...wanted.map((name) => el('option', {value: name}, name || 'all instances')));
    select.value = wanted.includes(current) ? current : '';
  }

  query() {
    const params = new URLSearchParams();
    for (const name of ['user', 'topic', 'instance']) {
      const value = this.form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    params.set('limit', this.form.elements.limit.value);
    const cursor = this.cursors[this.cursors.length - 1];
    if (cursor) params.set('cursor', cursor);
    return params;
  }

  /** Load the current page again (after a kick, or when the figures changed). */
  async load() {
    if (this.loading) return this.loading;
    this.loading = this._load().finally(() => { this.loading = null; });
    return this.loading;
  }

  async _load() {
    this.status.textContent = 'Loading…';
    try {
      const {body} = await api(`connections?${this.query()}`);
      this.nextCursor = body.next_cursor;
      this.render(body.connections);
      const page = this.cursors.length;
      this.pageLabel.textContent = `page ${page}`;
      this.previous.disabled = page === 1;
      this.next.disabled = !body.next_cursor;
      this.status.textContent = body.count
        ? `${count(body.count)} connection${body.count === 1 ? '' : 's'} on this page`
        : 'No connection matches.';
    } catch (error) {
      this.status.textContent = error instanceof ApiError ? error.message : String(error);
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        window.location.reload();
      }
    }
  }

  render(connections) {
    this.body.replaceChildren(...connections.map((c) => el('tr', {dataset: {connectionId: c.connection_id}},
      el('td', {'data-label': 'Connection'}, el('code', {}, c.connection_id)),
      el('td', {'data-label': 'User'}, c.user || '–'),
      el('td', {'data-label': 'Kind'}, c.kind),
      el('td', {'data-label': 'Topics', class: 'topics'}, c.topics.join(', ')),
      el('td', {'data-label': 'Instance'}, `${c.instance} · ${c.worker}`),
      el('td', {'data-label': 'Connected'}, c.connected_at ? clock(Number(c.connected_at) * 1000) : '–'),
      el('td', {'data-label': 'Frames', class: 'number'}, count(c.frames_sent)),
      el('td', {'data-label': 'Client', class: 'client'}, c.remote_addr || '–'),
      el('td', {'data-label': ''}, this.kickButton(c.connection_id)))));
  }

  kickButton(connectionId) {
    const button = el('button', {type: 'button', class: 'kick', name: 'kick'}, 'Kick');
    let armed = null;
    button.addEventListener('click', async () => {
      if (!armed) {
        button.textContent = 'Confirm';
        button.classList.add('armed');
        armed = setTimeout(() => {
          armed = null;
          button.textContent = 'Kick';
          button.classList.remove('armed');
        }, CONFIRM_MS);
        return;
      }
      clearTimeout(armed);
      button.disabled = true;
      button.textContent = 'Closing…';
      try {
        const {status} = await api(`connections/${encodeURIComponent(connectionId)}`,
                                   {method: 'DELETE'});
        this.status.textContent = status === 200
          ? `Closed ${connectionId}.`
          : `${connectionId} was told to close; its worker has not confirmed yet.`;
      } catch (error) {
        this.status.textContent = error instanceof ApiError && error.status === 404
          ? `${connectionId} had already gone.`
          : `Could not close ${connectionId}: ${error.message}`;
      }
      this.load();
    });
    return button;
  }
}
