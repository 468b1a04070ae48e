// The admin dashboard: fed by the service's own event stream (admin/events), which sends
// the deployment's figures every second and the newest messages as they are routed.

import {History, TimeChart} from './chart.js';
import {ConnectionTable} from './connections.js';
import {renderHealth} from './health.js';
import {Tail} from './tail.js';
import {$, ApiError, api, count, figure, milliseconds, percent, seconds} from './util.js';

// Without a figure for this long the page says it is no longer live.
const STALE_MS = 3500;
const RECONNECT_MS = 3000;

const state = window.dashboard = {
  source: null, hello: null, latest: null, lastFiguresAt: 0, topic: '', totals: [],
};

const charts = {
  connections: new TimeChart($('#chart-connections'), $('#legend-connections'),
                             {format: count, colors: {total: '#334155'}}),
  rates: new TimeChart($('#chart-rates'), $('#legend-rates'),
                       {format: (v) => figure(v), colors: {published: '#2f7ed8', delivered: '#29a36a'}}),
  latency: new TimeChart($('#chart-latency'), $('#legend-latency'),
                         {format: milliseconds, colors: {p50: '#2f7ed8', p99: '#e4572e'}}),
  success: new TimeChart($('#chart-success'), $('#legend-success'),
                         {format: (v) => (v === null ? '–' : `${figure(v, 1)} %`), max: 100,
                          colors: {stored: '#29a36a'}}),
  stream: new TimeChart($('#chart-stream'), $('#legend-stream'),
                        {format: count, colors: {'stream length': '#9b59b6'}}),
  lag: new TimeChart($('#chart-lag'), $('#legend-lag'),
                     {format: seconds, minTop: 0.01, colors: {'reader lag': '#f3a712'}}),
};
const byInstance = charts.connections.history;
const byWorker = new History();
const table = new ConnectionTable($('#panel-connections'));
const tail = new Tail($('#tail'), $('#tail-status'));

// -- the event stream --------------------------------------------------------------------

function connect() {
  if (state.source) state.source.close();
  const url = state.topic ? `events?topic=${encodeURIComponent(state.topic)}` : 'events';
  const source = state.source = new EventSource(url);
  source.addEventListener('hello', (event) => hello(JSON.parse(event.data)));
  source.addEventListener('figures', (event) => showFigures(JSON.parse(event.data)));
  source.addEventListener('messages', (event) => tail.add(JSON.parse(event.data)));
  source.addEventListener('closing', (event) => {
    if (JSON.parse(event.data).reason === 'token_expired') {
      source.close();
      window.location.reload();   // the sign-in form
    }
  });
  source.addEventListener('error', () => {
    setLive(false);
    if (source.readyState !== EventSource.CLOSED || source !== state.source) return;
    // Refused, or the service is away: a refusal of the token means signing in again.
    api('instances').then(() => setTimeout(connect, RECONNECT_MS), (error) => {
      if (error instanceof ApiError && [401, 403].includes(error.status)) {
        window.location.reload();
      } else if (error instanceof ApiError && error.status === 400) {
        tail.showStatus(error.message);
      } else {
        setTimeout(connect, RECONNECT_MS);
      }
    });
  });
}

function hello(greeting) {
  state.hello = greeting;
  $('#viewer').textContent = greeting.auth
    ? `signed in as ${greeting.viewer}` : 'authentication is off: this page is open to anyone';
  $('#sign-out').hidden = !greeting.auth;
}

function setLive(live) {
  const pill = $('#live');
  pill.textContent = live ? 'live' : 'reconnecting…';
  pill.className = live ? 'pill ok' : 'pill bad';
}

setInterval(() => {
  if (state.lastFiguresAt && Date.now() - state.lastFiguresAt > STALE_MS) setLive(false);
}, 1000);

// -- figures -----------------------------------------------------------------------------

function tile(id, value, note) {
  const node = $(`#tile-${id}`);
  node.querySelector('.value').textContent = value;
  if (note !== undefined) node.querySelector('.note').textContent = note;
}

function showFigures(f) {
  state.latest = f;
  state.lastFiguresAt = Date.now();
  setLive(true);
  const time = f.as_of * 1000;
  $('#as-of').textContent = `as of ${new Date(time).toLocaleTimeString('en-GB')}`;
  const banner = $('#banner');
  banner.hidden = !f.error;
  banner.textContent = f.error || '';

  const connections = f.connections;
  const rates = f.rates;
  const latency = f.latency || {};
  const lag = f.stream.reader_lag_seconds.max;
  const healthy = f.instances.filter((i) => i.healthy).length;
  tile('connections', count(connections.total),
       `${Object.keys(connections.by_instance).length} instance(s), ` +
       `${Object.keys(connections.by_worker).length} worker(s)`);
  tile('publish', figure(rates.published_per_second));
  tile('delivery', figure(rates.delivered_per_second));
  tile('success', percent(rates.success_rate),
       rates.failed_per_second ? `${figure(rates.failed_per_second)} failed/s` : 'of messages stored');
  tile('latency', latencyPair(latency.p50_ms, latency.p99_ms),
       latency.samples ? `${count(latency.samples)} deliveries` : 'no delivery lately');
  tile('stream', count(f.stream.length));
  tile('lag', seconds(lag));
  tile('health', `${healthy} / ${f.instances.length}`, healthy === f.instances.length
       ? 'healthy' : 'some unhealthy');
  $('#tile-health').classList.toggle('alert', healthy !== f.instances.length);
  $('#redis-health').textContent = f.redis.ok
    ? `Redis answers in ${milliseconds(f.redis.latency_ms)}` : 'Redis does not answer';

  byInstance.add(time, {total: connections.total, ...connections.by_instance});
  byWorker.add(time, {total: connections.total, ...connections.by_worker});
  charts.connections.refresh(time);
  charts.rates.add(time, {published: rates.published_per_second,
                          delivered: rates.delivered_per_second});
  charts.latency.add(time, {p50: latency.p50_ms ?? null, p99: latency.p99_ms ?? null});
  charts.success.add(time, {stored: rates.success_rate === null ? null : rates.success_rate * 100});
  charts.stream.add(time, {'stream length': f.stream.length});
  charts.lag.add(time, {'reader lag': lag});

  renderHealth($('#health-table'), f.instances);
  table.setInstances(f.instances.map((i) => i.instance));
  // The table follows the figures: load it again when the number of connections moved.
  state.totals.push(connections.total);
  if (state.totals.length > 2) state.totals.shift();
  if (state.totals.length === 1 || state.totals[0] !== state.totals[1]) table.load();
}

/** "5 / 50 ms": the two quantiles in one unit. */
function latencyPair(p50, p99) {
  if (p50 === null || p50 === undefined) return '–';
  if (p99 >= 1000) return `${figure(p50 / 1000, 2)} / ${figure(p99 / 1000, 2)} s`;
  return `${figure(p50)} / ${figure(p99)} ms`;
}

$('#span').addEventListener('change', (event) => {
  for (const chart of Object.values(charts)) chart.setSpan(Number(event.target.value));
});

$('#group-by').addEventListener('change', (event) => {
  charts.connections.show(event.target.value === 'worker' ? byWorker : byInstance);
});

// -- the tail ----------------------------------------------------------------------------

const tailForm = $('#tail-form');
tailForm.addEventListener('submit', (event) => {
  event.preventDefault();
  state.topic = tailForm.elements.topic.value.trim();
  tail.clear();
  connect();
});
tailForm.elements.pause.addEventListener('change', (event) => {
  tail.paused = event.target.checked;
  tail.showStatus();
});
tailForm.elements.clear.addEventListener('click', () => tail.clear());

// -- test messages -----------------------------------------------------------------------

const sendForm = $('#send-form');
sendForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const result = sendForm.elements.result;
  const message = {type: sendForm.elements.type.value};
  for (const name of ['target', 'data']) {
    const text = sendForm.elements[name].value.trim();
    if (!text) continue;
    try {
      message[name] = JSON.parse(text);
    } catch (error) {
      result.textContent = `${name} is not JSON: ${error.message}`;
      result.className = 'small error';
      return;
    }
  }
  try {
    const {body} = await api('messages', {method: 'POST', json: message});
    result.textContent = `Sent ${body.id} to ${body.topics.join(', ')}`;
    result.className = 'small ok';
  } catch (error) {
    const details = error.body && error.body.error && error.body.error.details;
    result.textContent = error.message + (Array.isArray(details)
      ? ': ' + details.map((d) => `${d.field || 'message'} ${d.error}`).join('; ') : '');
    result.className = 'small error';
  }
});

// -- signing out -------------------------------------------------------------------------

$('#sign-out').addEventListener('click', async () => {
  if (state.source) state.source.close();
  await api('session', {method: 'DELETE'}).catch(() => null);
  window.location.reload();
});

tail.showStatus();
connect();
