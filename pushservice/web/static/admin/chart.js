// Time series drawn on a canvas: the dashboard's charts, with no library. Each chart
// keeps the last few minutes of its series, draws a line per series against a time axis
// ending now, and a legend of the latest values beside it.

export const PALETTE = ['#2f7ed8', '#e4572e', '#29a36a', '#9b59b6', '#f3a712', '#17becf',
                        '#8c564b', '#d62f8a', '#7f7f7f', '#bcbd22'];

// Samples are kept this long; a chart shows the last ``span`` of them.
export const KEPT_SECONDS = 900;

/** Samples of named series over a sliding window of ``windowSeconds``. */
export class History {
  constructor(windowSeconds = KEPT_SECONDS) {
    this.window = windowSeconds * 1000;
    this.series = new Map();   // name -> [[time ms, value or null], ...]
  }

  add(time, values) {
    for (const [name, value] of Object.entries(values)) {
      if (!this.series.has(name)) this.series.set(name, []);
      this.series.get(name).push([time, value]);
    }
    const oldest = time - this.window;
    for (const [name, points] of this.series) {
      while (points.length && points[0][0] < oldest) points.shift();
      if (!points.length) this.series.delete(name);
    }
  }

  latest(name) {
    const points = this.series.get(name);
    return points && points.length ? points[points.length - 1][1] : null;
  }
}

/** A step up a "nice" scale: 1, 2 or 5 times a power of ten. */
function niceStep(range, ticks) {
  const raw = range / Math.max(1, ticks);
  const power = 10 ** Math.floor(Math.log10(raw));
  const scaled = raw / power;
  return (scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 5 ? 5 : 10) * power;
}

export class TimeChart {
  /**
   * ``canvas``: where to draw; ``legend``: a list element for the series' names and
   * latest values. Options: ``format`` (a value as text), ``max`` (a fixed top of the
   * scale), ``minTop`` (the smallest top of an automatic scale), ``colors`` (name ->
   * colour), ``spanSeconds`` (how much of the past the chart shows, 300 by default).
   */
  constructor(canvas, legend, options = {}) {
    this.canvas = canvas;
    this.legend = legend;
    this.format = options.format || ((v) => String(v));
    this.max = options.max ?? null;
    this.minTop = options.minTop ?? 1;
    this.colors = options.colors || {};
    this.history = new History();
    this.span = (options.spanSeconds || 300) * 1000;
    this._assigned = new Map();
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  color(name) {
    if (this.colors[name]) return this.colors[name];
    if (!this._assigned.has(name)) {
      this._assigned.set(name, PALETTE[this._assigned.size % PALETTE.length]);
    }
    return this._assigned.get(name);
  }

  add(time, values) {
    this.history.add(time, values);
    this.refresh(time);
  }

  /** Show the last ``seconds`` of the series. */
  setSpan(seconds) {
    this.span = seconds * 1000;
    this.refresh(this.now);
  }

  /** Draw another History (the same figures grouped another way). */
  show(history) {
    this.history = history;
    this.refresh(this.now);
  }

  refresh(time) {
    this.now = time;
    this.draw();
    this.renderLegend();
  }

  renderLegend() {
    if (!this.legend) return;
    const items = [];
    for (const name of this.history.series.keys()) {
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = this.color(name);
      const label = document.createElement('span');
      label.className = 'name';
      label.textContent = name;
      const value = document.createElement('span');
      value.className = 'value';
      value.textContent = this.format(this.history.latest(name));
      const item = document.createElement('li');
      item.append(swatch, label, value);
      items.push(item);
    }
    this.legend.replaceChildren(...items);
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const ink = style.getPropertyValue('--chart-ink').trim() || '#667';
    const grid = style.getPropertyValue('--chart-grid').trim() || '#e5e7eb';
    g.font = '11px system-ui, sans-serif';

    const now = this.now || Date.now();
    const span = this.span;
    let top = this.max;
    if (top === null) {
      top = this.minTop;
      for (const points of this.history.series.values()) {
        for (const [t, v] of points) if (v !== null && v > top && now - t <= span) top = v;
      }
    }
    const step = niceStep(top, 4);
    top = Math.max(step, Math.ceil(top / step) * step);
    const labels = [];
    for (let v = 0; v <= top + step / 2; v += step) labels.push(v);
    const left = Math.max(...labels.map((v) => g.measureText(this.format(v)).width)) + 10;
    const right = 8;
    const topPad = 8;
    const bottom = 18;
    const plotW = Math.max(10, width - left - right);
    const plotH = Math.max(10, height - topPad - bottom);
    const x = (t) => left + plotW * (1 - (now - t) / span);
    const y = (v) => topPad + plotH * (1 - v / top);

    g.strokeStyle = grid;
    g.fillStyle = ink;
    g.lineWidth = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (const v of labels) {
      const py = Math.round(y(v)) + 0.5;
      g.beginPath();
      g.moveTo(left, py);
      g.lineTo(left + plotW, py);
      g.stroke();
      g.fillText(this.format(v), left - 6, py);
    }
    g.textAlign = 'center';
    g.textBaseline = 'top';
    // Time labels from "now" back, as many as fit without touching each other.
    const seconds = span / 1000;
    const tick = [10, 15, 30, 60, 120, 300, 600].find((n) => (plotW * n) / seconds >= 64) || seconds;
    let leftmost = Infinity;
    for (let back = 0; back <= seconds; back += tick) {
      const text = back === 0 ? 'now' : back < 60 ? `−${back} s` : `−${back / 60} min`;
      const half = g.measureText(text).width / 2;
      const px = Math.min(Math.max(x(now - back * 1000), left + half), left + plotW - half);
      if (px + half > leftmost - 8) continue;
      g.fillText(text, px, topPad + plotH + 4);
      leftmost = px - half;
    }

    g.save();
    g.beginPath();
    g.rect(left, topPad - 2, plotW, plotH + 4);
    g.clip();
    g.lineWidth = 2;
    g.lineJoin = 'round';
    for (const [name, points] of this.history.series) {
      g.strokeStyle = g.fillStyle = this.color(name);
      // Runs of samples with values become lines; a lone sample, a dot; null, a gap.
      let run = [];
      const flush = () => {
        if (run.length === 1) {
          g.beginPath();
          g.arc(run[0][0], run[0][1], 2.5, 0, 2 * Math.PI);
          g.fill();
        } else if (run.length > 1) {
          g.beginPath();
          run.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
          g.stroke();
        }
        run = [];
      };
      for (const [t, v] of points) {
        if (now - t > span + 5000) continue;   // (one more on the left: the clip cuts it)
        if (v === null || v === undefined) { flush(); continue; }
        run.push([x(t), y(Math.min(v, top))]);
      }
      flush();
    }
    g.restore();
  }
}
