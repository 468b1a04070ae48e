/*
 * pushservice.js: the browser client of pushservice, served by the service itself
 * (/static/pushservice.js, or /static/pushservice.mjs as an ES module). No dependencies.
 *
 *   const push = PushService.connect({user: '123'});
 *   push.on('message', (message) => console.log(message.type, message.data));
 *   push.on('progress', (message) => bar.value = message.data.progress);
 *
 * It wraps EventSource and fixes what EventSource gets wrong for this service:
 * - EventSource gives up for good on any non-200 answer (401, 403, 429, 503, a proxy's
 *   502); this client reopens with full-jitter exponential backoff, asking the service
 *   first (a HEAD request) whether to retry, refresh the token or stop.
 * - It resumes after the last event id it saw, passed as ?last_event_id= (EventSource
 *   cannot set headers), and never forgets a known id for an empty one.
 * - One handler for every message and handlers per type, on one connection.
 * - `closing` (with token expiry), `history-lost` and heartbeats become events; a fresh
 *   token is fetched before each connection it opens.
 * - A page in the back/forward cache does not keep its stream open.
 * - Optional acknowledgements of messages that ask for one.
 * docs/javascript-client.md describes the API.
 */
(function () {
  'use strict';

  const CONNECTING = 0;
  const OPEN = 1;
  const CLOSED = 2;

  // The service's message types: each can have its own handlers.
  const MESSAGE_TYPES = ['progress', 'status', 'error', 'success', 'warning', 'info', 'custom'];
  // What the client itself reports.
  const CLIENT_EVENTS = ['open', 'message', 'history-lost', 'closing', 'token-expired',
    'heartbeat', 'reconnecting', 'fatal', 'ack-error'];
  const TYPES = new Set(MESSAGE_TYPES);
  const EVENT_NAMES = new Set(MESSAGE_TYPES.concat(CLIENT_EVENTS));
  // Names people try first, and what this client calls them.
  const RENAMED = {connected: 'open', close: 'closing', lost: 'history-lost'};

  const DEFAULT_BACKOFF = {base: 1000, cap: 30000};
  // Used when a `closing` frame carries no retry_ms (the service's default SSE_RETRY_MS).
  const DEFAULT_RETRY_MS = 3000;
  // Acknowledgements wait this long to travel together (a replay delivers many at once).
  const ACK_DELAY_MS = 25;
  const ACK_BATCH = 100;
  const ACK_ATTEMPTS = 3;
  // Ids of messages that asked for acknowledgement and were handled, remembered so that
  // one delivered again (it waits for its acknowledgement) is not shown twice.
  const HANDLED_MAX = 1000;

  const report = typeof globalThis.reportError === 'function'
    ? (error) => globalThis.reportError(error)
    // A handler's exception must not stop the others, yet must not go unseen.
    : (error) => setTimeout(() => { throw error; });

  // The service this file was loaded from (…/static/pushservice.js): the default `url`.
  // A module has no currentScript; pushservice.mjs fills it in from import.meta.url.
  function scriptBase() {
    const script = typeof document !== 'undefined' ? document.currentScript : null;
    if (!script || !script.src) return null;
    const src = new URL(script.src);
    return src.origin + src.pathname.replace(/\/static\/[^/]*$/, '');
  }

  function streamPath(options) {
    const enc = encodeURIComponent;
    const given = ['path', 'user', 'channels', 'service'].filter((key) => options[key] != null);
    if (given.length !== 1) {
      throw new TypeError('PushService.connect: give exactly one of path, user, channels ' +
        'or service (got ' + (given.join(', ') || 'none') + ')');
    }
    if (options.path != null) return String(options.path);
    if (options.user != null) return '/sse/user/' + enc(options.user);
    if (options.service != null) return '/sse/service/' + enc(options.service);
    const channels = Array.isArray(options.channels) ? options.channels : [options.channels];
    if (!channels.length) throw new TypeError('PushService.connect: channels is empty');
    return '/sse/stream/' + channels.map((name) => enc(name)).join(',');
  }

  // Retry-After in seconds (the service's form) or as an HTTP date; 0 when absent.
  function retryAfterMs(value) {
    if (!value) return 0;
    const seconds = Number(value);
    if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
    const date = Date.parse(value);
    return Number.isFinite(date) ? Math.max(0, date - Date.now()) : 0;
  }

  // Event ids are `<epoch>-<ms>-<seq>`: the stream's epoch, then its Redis entry id.
  function position(eventId) {
    const match = /^(.+)-(\d+)-(\d+)$/.exec(eventId || '');
    return match ? {epoch: match[1], ms: Number(match[2]), seq: Number(match[3])} : null;
  }

  // Whether `eventId` comes after `known` in the same stream (false when unknown).
  function notNewer(eventId, known) {
    const a = position(eventId);
    const b = position(known);
    if (!a || !b || a.epoch !== b.epoch) return false;
    return a.ms < b.ms || (a.ms === b.ms && a.seq <= b.seq);
  }

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (error) {
      report(new Error('pushservice: a ' + event.type + ' frame is not JSON: ' + event.data));
      return null;
    }
  }

  class PushClient {
    /** Opens the stream at once; see docs/javascript-client.md for the options. */
    constructor(options) {
      options = options || {};
      if (typeof EventSource === 'undefined') {
        throw new TypeError('PushService: this environment has no EventSource');
      }
      const base = options.url != null ? options.url : PushService.defaultUrl;
      this._base = String(base || '').replace(/\/+$/, '');  // '' means the page's origin
      this._path = streamPath(options);
      this._sessionId = options.sessionId != null ? String(options.sessionId) : null;
      this._getToken = typeof options.getToken === 'function' ? options.getToken : null;
      this._withCredentials = Boolean(options.withCredentials);
      this._heartbeatEvents = options.heartbeatEvents !== false;
      const backoff = Object.assign({}, DEFAULT_BACKOFF, options.backoff || {});
      this._backoffBase = Math.max(1, Number(backoff.base) || DEFAULT_BACKOFF.base);
      this._backoffCap = Math.max(this._backoffBase, Number(backoff.cap) || DEFAULT_BACKOFF.cap);
      this._ack = Boolean(options.ack);

      this._lastEventId = options.lastEventId ? String(options.lastEventId) : '';
      this._lastMessageId = this._lastEventId;  // the newest message handed to handlers
      this._rebase = false;     // take the next id even if older (after a history-lost)
      this._readyState = CONNECTING;
      this._handlers = new Map();
      this._source = null;      // the one EventSource; never two at once
      this._generation = 0;     // bumped to cancel whatever async step is under way
      this._timer = null;       // the scheduled reconnect
      this._token = null;       // what getToken() returned last
      this._failures = 0;       // connections in a row that did not reach `connected`
      this._refusals = 0;       // refusals in a row (some come after `connected`)
      this._unauthorized = 0;   // 401s in a row, each with a fresh token
      this._suspended = false;  // closed by pagehide, to reopen on pageshow
      this._watchdog = null;
      this._silenceLimitMs = 0;
      this._seenAt = 0;
      this._ackIds = [];
      this._ackTimer = null;
      this._ackWarned = false;
      this._ackBatchMissing = false;
      this._handled = new Set();

      // A page in the back/forward cache would keep its stream (and a slot of the
      // user's MAX_CONNECTIONS_PER_USER) open; close it there and resume on return.
      this._onPageHide = () => this._suspend();
      this._onPageShow = (event) => { if (event.persisted) this._resume(); };
      this._pageEvents = options.pageLifecycle !== false && typeof window !== 'undefined' &&
        typeof window.addEventListener === 'function';
      if (this._pageEvents) {
        window.addEventListener('pagehide', this._onPageHide);
        window.addEventListener('pageshow', this._onPageShow);
      }
      this._attempt(false);
    }

    /** The id of the last event received: where the next connection resumes. */
    get lastEventId() { return this._lastEventId; }

    /** 0 connecting (or waiting to reconnect), 1 open, 2 closed for good. */
    get readyState() { return this._readyState; }

    /** The stream's URL without credentials, as the next connection will open it. */
    get url() { return this._streamUrl(false); }

    /** Calls fn(payload, event) for `name`: a message type, 'message' or a client event. */
    on(name, fn) {
      if (typeof fn !== 'function') throw new TypeError('PushService.on: fn must be a function');
      if (!EVENT_NAMES.has(name)) {
        const hint = RENAMED[name] ? "; did you mean '" + RENAMED[name] + "'?" : '';
        throw new TypeError("PushService.on: unknown event '" + name + "'" + hint);
      }
      if (!this._handlers.has(name)) this._handlers.set(name, []);
      this._handlers.get(name).push(fn);
      return this;
    }

    /** Removes a handler given to on(). */
    off(name, fn) {
      const list = this._handlers.get(name);
      if (list) {
        const index = list.indexOf(fn);
        if (index >= 0) list.splice(index, 1);
      }
      return this;
    }

    /** Closes the stream for good; pending acknowledgements are still sent. */
    close() {
      if (this._readyState === CLOSED) return;
      this._stop();
      this._readyState = CLOSED;
      this._flushAcks(true);
      if (this._pageEvents) {
        window.removeEventListener('pagehide', this._onPageHide);
        window.removeEventListener('pageshow', this._onPageShow);
      }
    }

    // -- connecting ----------------------------------------------------------------------

    _streamUrl(withToken) {
      const where = typeof location !== 'undefined' ? location.href : undefined;
      const url = new URL(this._base + this._path, where);
      // Every message arrives as a plain `message` event, dispatched here by its type.
      // With named frames a message of type `error` would reach EventSource's own error
      // listeners, and types this file does not list could not be listened to at all.
      url.searchParams.set('named', '0');
      if (this._heartbeatEvents) url.searchParams.set('heartbeat_events', '1');
      if (this._sessionId != null) url.searchParams.set('session_id', this._sessionId);
      if (this._lastEventId) url.searchParams.set('last_event_id', this._lastEventId);
      if (withToken && this._token) url.searchParams.set('token', this._token);
      return url.href;
    }

    // One connection attempt: a fresh token, maybe a probe, then the EventSource.
    async _attempt(probe) {
      const generation = this._stop();
      this._readyState = CONNECTING;
      if (this._getToken) {
        let token;
        try {
          token = await this._getToken();
        } catch (error) {
          if (generation !== this._generation) return;
          report(error);
          this._retryLater({reason: 'token', error: error}, probe);
          return;
        }
        if (generation !== this._generation) return;
        // A string goes in ?token=; nothing means the page refreshed its cookie itself.
        this._token = typeof token === 'string' && token ? token : null;
      }
      const url = this._streamUrl(true);
      if (probe) {
        const verdict = await this._probe(url);
        if (generation !== this._generation) return;
        if (verdict.fatal) {
          this._fail(verdict);
          return;
        }
        if (!verdict.ok) {
          this._retryLater(verdict, true);
          return;
        }
      }
      this._open(url);
    }

    // EventSource cannot tell why it was refused: ask with a HEAD request to the same URL,
    // which the service answers as it would the stream (401, 403, 429, 503 and their
    // Retry-After) without keeping one open. It runs only after an EventSource was
    // refused, so a healthy page never pays for it, and while the service keeps refusing
    // it costs a short request instead of a stream.
    async _probe(url) {
      let response;
      try {
        response = await fetch(url, {
          method: 'HEAD', cache: 'no-store',
          credentials: this._withCredentials ? 'include' : 'same-origin',
        });
      } catch (error) {
        // Unreachable, or a CORS refusal (the page's origin is not in CORS_ORIGINS):
        // a script cannot tell these apart, so keep trying with backoff.
        return {reason: 'network'};
      }
      const status = response.status;
      if (status >= 200 && status < 300) return {ok: true};
      // A proxy that does not allow HEAD: nothing learned, so try the stream itself.
      if (status === 405 || status === 501) return {ok: true};
      if (status === 401) {
        // A fresh token that is refused twice in a row will not get better.
        this._unauthorized += 1;
        if (!this._getToken || this._unauthorized > 1) {
          return {fatal: true, reason: 'unauthorized', status: status};
        }
        return {reason: 'unauthorized', status: status};
      }
      if (status >= 400 && status < 500 && status !== 408 && status !== 425 && status !== 429) {
        return {fatal: true, reason: 'rejected', status: status};  // 400, 403, 404: for good
      }
      return {
        reason: 'refused', status: status,
        floorMs: retryAfterMs(response.headers.get('Retry-After')),
      };
    }

    _open(url) {
      const source = new EventSource(url, {withCredentials: this._withCredentials});
      this._source = source;
      this._connected = false;
      // Handlers of an EventSource this client let go of must not act on the current one.
      const guard = (fn) => (event) => {
        if (source === this._source) fn.call(this, event);
      };
      source.addEventListener('message', guard(this._onMessage));
      source.addEventListener('connected', guard(this._onConnected));
      source.addEventListener('history-lost', guard(this._onHistoryLost));
      source.addEventListener('closing', guard(this._onClosing));
      source.addEventListener('heartbeat', guard(this._onHeartbeat));
      source.addEventListener('error', guard(this._onError));
    }

    // Cancels every pending step and lets the current EventSource go.
    _stop() {
      this._generation += 1;
      clearTimeout(this._timer);
      this._timer = null;
      this._stopWatchdog();
      if (this._source) {
        this._source.close();
        this._source = null;
      }
      return this._generation;
    }

    _schedule(delay, probe) {
      const generation = this._generation;
      clearTimeout(this._timer);
      this._timer = setTimeout(() => {
        if (generation === this._generation) this._attempt(probe);
      }, delay);
    }

    // Full jitter: a random delay up to base * 2^(failures - 1), capped, so that a crowd
    // refused together does not come back together.
    _jitter() {
      const exponent = Math.min(30, Math.max(0, this._failures - 1));
      return Math.random() * Math.min(this._backoffCap, this._backoffBase * Math.pow(2, exponent));
    }

    _retryLater(info, probe) {
      this._stop();
      this._readyState = CONNECTING;
      this._failures += 1;
      const delay = Math.round((info.floorMs || 0) + this._jitter());
      this._schedule(delay, probe);
      const detail = {reason: info.reason, attempt: this._failures, delay: delay};
      if (info.status != null) detail.status = info.status;
      if (info.error != null) detail.error = info.error;
      this._emit('reconnecting', detail);
    }

    _fail(info) {
      this._stop();
      this._readyState = CLOSED;
      const detail = {reason: info.reason, status: info.status};
      if (!this._emit('fatal', detail).handled) {
        console.error('pushservice: gave up on ' + this.url + ': ' + info.reason +
          (info.status ? ' (HTTP ' + info.status + ')' : ''));
      }
    }

    // -- page lifecycle ------------------------------------------------------------------

    _suspend() {
      if (this._readyState === CLOSED) return;
      this._stop();
      this._suspended = true;
      this._readyState = CONNECTING;
      this._flushAcks(true);
    }

    _resume() {
      if (!this._suspended || this._readyState === CLOSED) return;
      this._suspended = false;
      this._attempt(false);
    }

    // -- what the stream delivers --------------------------------------------------------

    // Every event carries the EventSource's last event id, including ids that came in
    // frames without data (positions). A resumed stream's `connected` event has none of
    // its own and a new EventSource starts with '': never forget a known id for that.
    // Ids only grow within a stream, so an older one (a repeat) never moves it back;
    // after a history-lost the next different id is taken whatever it is.
    _seen(event) {
      const id = event.lastEventId;
      if (id && id !== this._lastEventId && (this._rebase || !notNewer(id, this._lastEventId))) {
        this._lastEventId = id;
        this._rebase = false;
      }
      this._seenAt = Date.now();
    }

    _onConnected(event) {
      this._seen(event);
      const greeting = parse(event) || {};
      this._connected = true;
      this._failures = 0;
      this._unauthorized = 0;
      this._readyState = OPEN;
      this._startWatchdog(greeting.heartbeat_interval);
      this._emit('open', greeting, event);
    }

    _onMessage(event) {
      this._seen(event);
      // Within one stream epoch ids only grow: an id not newer than the last message's
      // is a repeat (a resume that went back too far), never a new message. A message
      // that waits for acknowledgement may come again on purpose: its frame has no id
      // of its own, and it is known by its message id instead.
      const repeat = notNewer(event.lastEventId, this._lastMessageId);
      const message = parse(event);
      const confirmed = message && message.metadata && message.metadata.require_ack === true;
      if (repeat && !confirmed) {
        console.debug('pushservice: dropped a repeated message', event.lastEventId);
        return;
      }
      if (!repeat && event.lastEventId) this._lastMessageId = event.lastEventId;
      this._refusals = 0;
      if (!message) return;
      if (confirmed && this._handled.has(message.id)) {
        // Handled already on this page; its acknowledgement was lost or is on its way.
        if (this._ack) this._queueAck(message.id);
        return;
      }
      const everyone = this._emit('message', message, event);
      const typed = TYPES.has(message.type)
        ? this._emit(message.type, message, event)
        : {threw: false, pending: []};
      if (!confirmed || everyone.threw || typed.threw) return;  // a throw: show it again
      this._handled.add(message.id);
      if (this._handled.size > HANDLED_MAX) {
        this._handled.delete(this._handled.values().next().value);
      }
      if (!this._ack) return;
      const pending = everyone.pending.concat(typed.pending);
      if (!pending.length) {
        this._queueAck(message.id);
      } else {
        // An async handler counts as done when its promise fulfils.
        Promise.all(pending).then(() => this._queueAck(message.id), report);
      }
    }

    // What the client held is gone, or was never this stream's (a Redis restored from an
    // older copy keeps the epoch but not the newest ids): ids start over from here, and
    // so does the check for repeats.
    _onHistoryLost(event) {
      this._seen(event);
      const lost = parse(event) || {};
      this._lastMessageId = '';
      this._rebase = true;
      if ((lost.reason === 'unknown_position' || lost.reason === 'malformed_last_event_id') &&
          position(lost.resumes_from)) {
        // The stream goes on live from resumes_from: that is the client's position now.
        this._lastEventId = lost.resumes_from;
        this._rebase = false;
      }
      this._emit('history-lost', lost, event);
    }

    _onHeartbeat(event) {
      this._seen(event);
      this._refusals = 0;  // a stream that lives was not refused
      this._emit('heartbeat', parse(event) || {}, event);
    }

    // The stream is ending (shutdown, token expiry, a refusal, ...). Reconnect ourselves
    // rather than let EventSource do it: its URL is fixed, so it would reuse an expired
    // token and a stale last_event_id, and a refusal that repeats would get no backoff.
    _onClosing(event) {
      this._seen(event);
      const closing = parse(event) || {};
      const wasConnected = this._connected;
      this._stop();
      this._readyState = CONNECTING;
      const retry = Number(closing.retry_ms);
      let delay = Number.isFinite(retry) && retry >= 0 ? retry : DEFAULT_RETRY_MS;
      if (closing.refused || !wasConnected) {
        // Refused (the user's stream limit is told after `connected`): honour the service's
        // delay, plus a backoff that grows while refusals repeat.
        this._refusals += 1;
        this._failures = Math.max(this._failures + 1, this._refusals);
        delay += this._jitter();
      } else if (closing.reason === 'token_expired' && this._getToken) {
        delay = 0;  // a fresh token is all it takes; waiting gains nothing
      }
      if (!closing.refused) this._refusals = 0;
      delay = Math.round(delay);
      this._schedule(delay, false);
      this._emit('closing', closing, event);
      if (closing.reason === 'token_expired') this._emit('token-expired', closing, event);
      if (this._readyState === CLOSED) return;  // a handler called close()
      this._emit('reconnecting', {
        reason: 'closing', closing: closing.reason, attempt: this._failures, delay: delay,
      });
    }

    _onError(event) {
      const source = this._source;
      this._stopWatchdog();
      if (source.readyState === EventSource.CONNECTING) {
        // The connection dropped (or could not be made): EventSource retries by itself
        // after the service's `retry:`, with Last-Event-ID; nothing to do but say so.
        this._readyState = CONNECTING;
        this._connected = false;
        this._emit('reconnecting', {reason: 'dropped', attempt: this._failures, delay: null});
        return;
      }
      // CLOSED: a non-200 answer (or a CORS refusal). EventSource will never retry.
      this._source = null;
      source.close();
      this._retryLater({reason: 'refused'}, true);
    }

    // -- a stream that went silent -------------------------------------------------------

    // With heartbeat events the stream is never silent for long; a connection that died
    // without closing (a laptop asleep, a network change, a dead proxy) shows as silence.
    _startWatchdog(intervalSeconds) {
      this._stopWatchdog();
      const interval = Number(intervalSeconds);
      if (!this._heartbeatEvents || !(interval > 0)) return;
      this._silenceLimitMs = 2 * interval * 1000 + 1000;
      const check = () => {
        const silent = Date.now() - this._seenAt;
        if (silent < this._silenceLimitMs) {
          this._watchdog = setTimeout(check, this._silenceLimitMs - silent);
          return;
        }
        this._watchdog = null;
        this._retryLater({reason: 'stalled'}, false);
      };
      this._watchdog = setTimeout(check, this._silenceLimitMs);
    }

    _stopWatchdog() {
      clearTimeout(this._watchdog);
      this._watchdog = null;
    }

    // -- handlers ------------------------------------------------------------------------

    // Calls every handler of `name`; one that throws is reported and the others still run.
    _emit(name, payload, event) {
      const list = this._handlers.get(name);
      const result = {handled: Boolean(list && list.length), threw: false, pending: []};
      if (!list) return result;
      for (const fn of list.slice()) {
        try {
          const value = fn.call(this, payload, event);
          // Kept for acknowledgements; a rejection nobody waits for is the browser's to report.
          if (value && typeof value.then === 'function') result.pending.push(value);
        } catch (error) {
          result.threw = true;
          report(error);
        }
      }
      return result;
    }

    // -- acknowledgements ----------------------------------------------------------------

    _queueAck(id) {
      if (id == null) return;
      this._ackIds.push(String(id));
      if (this._ackTimer == null) {
        this._ackTimer = setTimeout(() => this._flushAcks(false), ACK_DELAY_MS);
      }
    }

    // keepalive: the page is going away and the request must outlive it.
    _flushAcks(keepalive) {
      clearTimeout(this._ackTimer);
      this._ackTimer = null;
      while (this._ackIds.length) this._sendAcks(this._ackIds.splice(0, ACK_BATCH), keepalive);
    }

    async _sendAcks(ids, keepalive) {
      let status = 0;
      for (let attempt = 1; attempt <= ACK_ATTEMPTS; attempt += 1) {
        status = await this._postAcks(ids, keepalive);
        if (status >= 200 && status < 300) return;
        if (status === 401 && this._getToken && attempt === 1) {
          try {
            const token = await this._getToken();
            this._token = typeof token === 'string' && token ? token : null;
          } catch (error) {
            break;
          }
          continue;
        }
        // Retry what time may cure (unreachable, 5xx, 429), never a plain refusal.
        if (status !== 0 && status < 500 && status !== 429) break;
        if (attempt < ACK_ATTEMPTS) {
          await new Promise((resolve) => setTimeout(resolve, this._backoffBase * attempt));
        }
      }
      const reason = status === 404 ? 'not_found' : status === 0 ? 'network' : 'refused';
      if (!this._ackWarned) {
        this._ackWarned = true;  // once: a service without acknowledgements says 404 to all
        console.warn('pushservice: acknowledging messages failed (' +
          (status ? 'HTTP ' + status : 'network error') + '); see the ack-error event');
      }
      this._emit('ack-error', {ids: ids, status: status, reason: reason});
    }

    // One POST for the batch (POST /api/v1/messages/ack {"ids": [...]}), or one per id
    // (POST /api/v1/messages/{id}/ack) for a single id or a service without the batch
    // form. Always JSON: the service refuses anything else, so that no other site can
    // acknowledge with the user's cookie. Returns the status, 0 when no answer came.
    async _postAcks(ids, keepalive) {
      const headers = {'Content-Type': 'application/json'};
      if (this._token) headers.Authorization = 'Bearer ' + this._token;
      const init = {
        method: 'POST', headers: headers, keepalive: keepalive, body: '{}',
        credentials: this._withCredentials ? 'include' : 'same-origin',
      };
      const api = this._base + '/api/v1/messages/';
      try {
        if (ids.length > 1 && !this._ackBatchMissing) {
          const response = await fetch(api + 'ack',
            Object.assign({}, init, {body: JSON.stringify({ids: ids})}));
          if (response.status !== 404 && response.status !== 405) return response.status;
          this._ackBatchMissing = true;
        }
        let worst = 200;
        for (const id of ids) {
          const response = await fetch(api + encodeURIComponent(id) + '/ack', init);
          if (!response.ok) worst = response.status;
        }
        return worst;
      } catch (error) {
        return 0;
      }
    }
  }

  /** Opens a stream: PushService.connect({user: '123'}) and the options of the docs. */
  function connect(options) {
    return new PushClient(options);
  }

  const PushService = {
    connect: connect,
    PushClient: PushClient,
    CONNECTING: CONNECTING,
    OPEN: OPEN,
    CLOSED: CLOSED,
    MESSAGE_TYPES: MESSAGE_TYPES.slice(),
    // The service this file came from; connect() uses it when no `url` is given.
    defaultUrl: scriptBase(),
  };
  globalThis.PushService = PushService;
})();
