// Small helpers of the admin dashboard: building DOM nodes (text only, never HTML from
// data), formatting figures, and calling the service's admin API.

/** An element with attributes and children (strings become text nodes). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

const integer = new Intl.NumberFormat('en', {maximumFractionDigits: 0});

/** A count: 12,345. */
export function count(value) {
  return value === null || value === undefined ? '–' : integer.format(value);
}

/** A rate or other figure with up to ``digits`` decimals, shorter when large. */
export function figure(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  const abs = Math.abs(value);
  if (abs >= 1e6) return (value / 1e6).toFixed(1) + 'M';
  if (abs >= 1e4) return (value / 1e3).toFixed(1) + 'k';
  if (abs >= 100) return integer.format(value);
  return value.toFixed(abs >= 10 ? Math.min(digits, 1) : digits).replace(/\.0+$/, '');
}

export function percent(ratio) {
  if (ratio === null || ratio === undefined) return '–';
  const value = ratio * 100;
  return (value === 100 ? '100' : value >= 99.95 ? '99.9' : value.toFixed(1)) + ' %';
}

export function milliseconds(value) {
  if (value === null || value === undefined) return '–';
  return value >= 1000 ? (value / 1000).toFixed(2) + ' s' : figure(value, 1) + ' ms';
}

export function seconds(value) {
  if (value === null || value === undefined) return '–';
  if (value < 1) return Math.round(value * 1000) + ' ms';
  if (value < 120) return figure(value, 1) + ' s';
  if (value < 7200) return Math.round(value / 60) + ' min';
  if (value < 172800) return Math.round(value / 3600) + ' h';
  return Math.round(value / 86400) + ' d';
}

/** How long ago a Unix time (seconds) was. */
export function ago(unixSeconds) {
  if (!unixSeconds) return '–';
  return seconds(Math.max(0, Date.now() / 1000 - Number(unixSeconds)));
}

export function clock(unixMilliseconds) {
  return new Date(unixMilliseconds).toLocaleTimeString('en-GB', {hour12: false});
}

/** Thrown by ``api`` for an answer that is not a success; ``status`` and ``body`` as sent. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error;
    super(error ? `${error.message} (${error.code})` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** Call the admin API (paths relative to /admin/) with the page's cookie; the parsed
 * JSON answer, or null for an empty one; ApiError otherwise. */
export async function api(path, {method = 'GET', json} = {}) {
  const options = {method, credentials: 'same-origin', headers: {}};
  if (json !== undefined) {
    options.headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(json);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) throw new ApiError(response.status, body);
  return {status: response.status, body};
}
