// Instance health: each instance with its workers, from the snapshots the workers
// publish (the checks /health makes, as each worker last reported them).

import {ago, count, el, seconds} from './util.js';

export function renderHealth(table, instances) {
  const rows = [];
  for (const instance of instances) {
    const workers = instance.workers;
    const expected = instance.expected_workers;
    const maxLag = Math.max(0, ...workers.map((w) => w.reader_lag_seconds || 0));
    const detail = [
      `${workers.length}${expected ? ` of ${expected}` : ''} worker${workers.length === 1 ? '' : 's'}`,
      instance.address ? `${instance.address}:${instance.port}` : null,
      instance.version ? `v${instance.version}` : null,
      instance.started_at ? `up ${ago(instance.started_at)}` : null,
    ].filter(Boolean).join(' · ');
    rows.push(row('instance', {instance: instance.instance}, el('strong', {}, instance.instance),
                  instance.healthy, instance.connections, maxLag, detail, instance.problems));
    for (const worker of workers) {
      const detail = [
        worker.seconds_since_last_read === null ? 'no read yet'
          : `read ${seconds(worker.seconds_since_last_read)} ago`,
        worker.probe_age_seconds === null ? 'probes off'
          : `own probe ${seconds(worker.probe_age_seconds)} ago`,
        `figures ${seconds(worker.figures_age_seconds)} old`,
      ].join(' · ');
      rows.push(row('worker', {worker: worker.worker_id}, `worker ${worker.pid}`,
                    !worker.problems.length, worker.connections, worker.reader_lag_seconds,
                    detail, worker.problems));
    }
  }
  table.querySelector('tbody').replaceChildren(...rows);
}

function row(kind, dataset, name, healthy, connections, lag, detail, problems) {
  return el('tr', {class: kind, dataset},
    el('td', {'data-label': kind === 'instance' ? 'Instance' : 'Worker'}, name),
    el('td', {'data-label': 'Health'},
       el('span', {class: healthy ? 'pill ok' : 'pill bad'}, healthy ? 'healthy' : 'unhealthy')),
    el('td', {'data-label': 'Connections', class: 'number'}, count(connections)),
    el('td', {'data-label': 'Reader lag', class: 'number'}, seconds(lag)),
    el('td', {'data-label': 'Details', class: 'detail'}, detail),
    el('td', {'data-label': 'Problems', class: 'problems'}, problems.join('; ') || 'none'));
}
