/* The page's script: pick a model (the repository's READY ones), pick or
 * drop an image, POST its bytes to v1/models/{model}/predict, show the
 * top-k, the request's stage latencies and a live panel of that model from
 * /metrics.  URLs are relative, so the page also works behind a proxy that
 * serves the service under a path prefix.  Text from the service is only
 * ever set with textContent.  The API key, when the service needs one,
 * lives in a variable of this tab: never in storage, never in a URL. */
'use strict';

(() => {
  const TOP_K = 5;
  const POLL_MS = 3000;
  const PREVIEW_MAX_H = 320; /* px */
  const STAGES = [
    ['decode', 'Decode', 't-decode'],
    ['preprocess', 'Preprocess', 't-preprocess'],
    ['queue', 'Queue', 't-queue'],
    ['inference', 'Inference', 't-inference'],
  ];

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  let apiKey = '';
  let modelName = '';
  let model = null; /* GET v2/models/{name}: labels_count, input_size, preprocess, ... */
  let sequence = 0; /* answers to an older upload are dropped */
  let previewUrl = null;

  function headers(extra) {
    const h = Object.assign({}, extra);
    if (apiKey) h.Authorization = 'Bearer ' + apiKey;
    return h;
  }

  /* The service's own errors: {"error": {"code", "message"}} (/v1 and the
   * service's endpoints) or {"error": "<message>", "code"} (the Open Inference
   * Protocol, /v2); anything else (a proxy's HTML page, say) is reported by
   * its HTTP status and first words. */
  async function readError(resp) {
    const text = await resp.text().catch(() => '');
    try {
      const o = JSON.parse(text);
      const e = o.error;
      if (e && typeof e.message === 'string')
        return { code: String(e.code || ''), message: e.message, status: resp.status };
      if (typeof e === 'string') return { code: String(o.code || ''), message: e, status: resp.status };
    } catch (_) { /* not JSON */ }
    const excerpt = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
    return { code: 'http_' + resp.status, message: excerpt || resp.statusText || 'no details', status: resp.status };
  }

  /* ---- model and API key ------------------------------------------------ */

  function showModel() {
    const info = $('model-info');
    if (!modelName) { info.textContent = 'Model: unknown'; return; }
    if (!model) { info.textContent = 'Model: ' + modelName; return; }
    const size = model.input_size ? ` · input ${model.input_size[1]}×${model.input_size[0]}` : '';
    info.textContent = `Model: ${model.name} · ${model.arch_name} · ${model.labels_count} labels${size}`;
  }

  function askForKey(message) {
    const form = $('key-form');
    form.hidden = false;
    $('key-hint').textContent = message;
  }

  /* The models to choose from: the repository's READY ones (names, once
   * each).  Without them (an older service, a refusal) the one that
   * v2/health/ready names. */
  async function loadModels() {
    let names = [];
    try {
      const r = await fetch('v2/repository/index', {
        method: 'POST', headers: headers({ 'Content-Type': 'application/json' }),
        body: '{"ready": true}', cache: 'no-store',
      });
      if (r.ok) {
        const index = await r.json();
        if (Array.isArray(index))
          names = [...new Set(index.filter((m) => m && m.state === 'READY').map((m) => String(m.name)))];
      }
    } catch (_) { /* fall back below */ }
    if (!names.length) {
      try {
        const r = await fetch('v2/health/ready', { cache: 'no-store' });
        if (r.ok) {
          const m = (await r.json()).model;
          if (m) names = [String(m)];
        }
      } catch (_) { /* unreachable: loadModel says so */ }
    }
    const select = $('model-select');
    select.replaceChildren();
    for (const n of names.sort()) select.appendChild(el('option', null, n)).value = n;
    if (names.length && !names.includes(modelName)) modelName = names[0];
    select.value = modelName;
    $('model-pick').hidden = names.length < 2;
  }

  $('model-select').addEventListener('change', () => {
    modelName = $('model-select').value;
    model = null;
    last = null;
    loadModel();
    pollLoop();
  });

  async function loadModel() {
    try {
      if (!modelName) await loadModels();
      if (!modelName) {
        const r = await fetch('v2/health/ready', { cache: 'no-store' });
        if (!r.ok) {
          const e = await readError(r);
          $('model-info').textContent = `Model: not ready (${e.message})`;
          return;
        }
      }
      showModel();
      if (!modelName) return;
      const r = await fetch('v2/models/' + encodeURIComponent(modelName),
                            { headers: headers(), cache: 'no-store' });
      if (r.status === 401) {
        const e = await readError(r);
        askForKey(apiKey ? `The service refused this key: ${e.message}`
                         : 'This service needs an API key. It stays in this tab only and is sent as ' +
                           '"Authorization: Bearer" with the page\'s requests.');
        return;
      }
      if (!r.ok) return;
      model = await r.json();
      showModel();
      if (apiKey) {
        $('key-hint').textContent = 'Key accepted. It stays in this tab only.';
        if ($('error-code').textContent === 'unauthorized' && !$('error').hidden) {
          $('error').hidden = true;
          setState('idle', 'Key accepted: choose the image again.');
        }
      }
      if ($('preview-img').naturalWidth) layoutPreview();
    } catch (e) {
      $('model-info').textContent = 'Model: the service cannot be reached';
    }
  }

  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    apiKey = $('key').value.trim();
    model = null;
    loadModels().then(loadModel);
  });

  /* ---- preview ------------------------------------------------------------ */

  /* What the server classifies: the image upright (EXIF applied, as the
   * <img> shows it), resized so its shorter side is `resize`, and the
   * centre input_size cut out (torchvision Resize + CenterCrop).  The
   * dashed box marks that centre on the preview. */
  function layoutPreview() {
    const img = $('preview-img');
    const w = img.naturalWidth, h = img.naturalHeight;
    if (!w || !h) return;
    const frame = $('frame');
    frame.style.aspectRatio = `${w} / ${h}`;
    frame.style.width = `min(100%, ${Math.max(1, Math.round(PREVIEW_MAX_H * w / h))}px)`;
    img.classList.toggle('pixelated', Math.max(w, h) < 256);
    const p = model && model.preprocess;
    img.classList.toggle('gray', !!p && p.channels === 1);
    let caption = `${w} × ${h} px`;
    const crop = $('crop');
    crop.hidden = true;
    if (p && p.resize > 0 && p.input_size) {
      const [ch, cw] = p.input_size;
      const ow = w <= h ? p.resize : Math.floor(p.resize * w / h);
      const oh = w <= h ? Math.floor(p.resize * h / w) : p.resize;
      const left = Math.max(0, (ow - cw) / 2) / ow, top = Math.max(0, (oh - ch) / 2) / oh;
      const cwf = Math.min(1, cw / ow), chf = Math.min(1, ch / oh);
      if (cwf < 0.999 || chf < 0.999) {
        crop.style.left = `${left * 100}%`;
        crop.style.top = `${top * 100}%`;
        crop.style.width = `${cwf * 100}%`;
        crop.style.height = `${chf * 100}%`;
        crop.hidden = false;
        caption += ` · the model sees the dashed box, at ${cw} × ${ch}`;
      } else {
        caption += ` · the model sees all of it, at ${cw} × ${ch}`;
      }
      if (p.channels === 1) caption += ', in grayscale';
    }
    $('preview-caption').textContent = caption;
  }

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    const img = $('preview-img');
    img.onload = layoutPreview;
    img.onerror = () => {
      $('frame').hidden = true;
      $('preview-caption').textContent = `${file.name}: this browser cannot show it`;
    };
    $('frame').hidden = false;
    $('crop').hidden = true;
    $('preview-caption').textContent = file.name;
    img.alt = 'Preview of ' + file.name;
    img.src = previewUrl;
    $('preview').hidden = false;
  }

  /* ---- predict ------------------------------------------------------------ */

  function setState(state, status) {
    $('result').dataset.state = state;
    $('status').textContent = status;
  }

  /* On a phone the answer is below the preview: bring it up once it is
   * there, unless the first prediction or the error is already in sight. */
  function reveal() {
    const shown = $('error').hidden ? $('predictions').firstElementChild : $('error');
    const r = (shown || $('status')).getBoundingClientRect();
    if (r.top < 0 || r.bottom > window.innerHeight)
      $('result').closest('section').scrollIntoView({ block: 'start' });
  }

  function showError(e) {
    $('error-code').textContent = e.code;
    $('error-http').textContent = e.status ? `(HTTP ${e.status})` : '';
    $('error-message').textContent = e.message;
    $('error').hidden = false;
  }

  function percent(p) {
    const v = p * 100;
    if (v >= 0.1) return v.toFixed(1) + ' %';
    if (v >= 0.001) return v.toPrecision(2) + ' %';
    return '< 0.001 %';
  }

  function ms(v) {
    if (v >= 1000) return (v / 1000).toFixed(2) + ' s';
    if (v >= 10) return v.toFixed(1) + ' ms';
    return v.toFixed(2) + ' ms';
  }

  function bar(fraction) {
    const b = el('div', 'bar');
    const fill = el('span');
    fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
    b.appendChild(fill);
    return b;
  }

  function showPredictions(preds) {
    const ol = $('predictions');
    ol.replaceChildren();
    for (const p of preds) {
      const li = el('li');
      li.appendChild(el('span', 'label', p.label));
      li.appendChild(el('span', 'pct', percent(p.probability)));
      li.appendChild(bar(p.probability));
      ol.appendChild(li);
    }
    ol.hidden = false;
  }

  function timingRow(name, value, cls, rowClass) {
    const tr = el('tr', rowClass);
    const th = el('th');
    th.scope = 'row';
    if (cls) th.appendChild(el('span', 'swatch ' + cls));
    th.appendChild(document.createTextNode(name));
    tr.appendChild(th);
    tr.appendChild(el('td', null, value));
    return tr;
  }

  function showTiming(lat, batchSize, roundTripMs) {
    const total = lat.total;
    const known = STAGES.reduce((s, [k]) => s + (lat[k] || 0), 0);
    const other = Math.max(0, total - known);
    const barEl = $('timing-bar');
    const rows = $('timing-rows');
    barEl.replaceChildren();
    rows.replaceChildren();
    for (const [k, name, cls] of STAGES) {
      const seg = el('span', cls);
      seg.style.width = `${total > 0 ? (lat[k] / total) * 100 : 0}%`;
      barEl.appendChild(seg);
      rows.appendChild(timingRow(name, ms(lat[k]), cls));
    }
    rows.appendChild(timingRow('Other (upload, answer)', ms(other), 't-other'));
    rows.appendChild(timingRow('Total in the service', ms(total), null, 'total'));
    if (batchSize) rows.appendChild(timingRow('Batch size', String(batchSize)));
    rows.appendChild(timingRow('Round trip (this page)', ms(roundTripMs)));
    $('timing').hidden = false;
  }

  async function classify(file, note) {
    const seq = ++sequence;
    showPreview(file);
    $('error').hidden = true;
    $('predictions').hidden = true;
    $('timing').hidden = true;
    setState('busy', `Classifying ${file.name}${note || ''}…`);
    const t0 = performance.now();
    let resp;
    try {
      const path = modelName ? 'v1/models/' + encodeURIComponent(modelName) + '/predict' : 'v1/predict';
      resp = await fetch(path + '?top_k=' + TOP_K, {
        method: 'POST',
        body: file,
        headers: headers({ 'Content-Type': file.type || 'application/octet-stream' }),
      });
    } catch (e) {
      if (seq !== sequence) return;
      showError({ code: 'network_error', message: `the service could not be reached (${e.message})` });
      setState('error', `${file.name} could not be classified.`);
      reveal();
      return;
    }
    const roundTrip = performance.now() - t0;
    if (!resp.ok) {
      const e = await readError(resp);
      if (seq !== sequence) return;
      showError(e);
      setState('error', `${file.name} could not be classified.`);
      if (resp.status === 401) {
        askForKey('This service needs an API key: enter it here, then choose the image again.');
        $('key').focus();
      }
      reveal();
      return;
    }
    let a;
    try {
      a = await resp.json();
    } catch (e) {
      if (seq !== sequence) return;
      showError({ code: 'bad_answer', message: 'the answer is not JSON', status: resp.status });
      setState('error', `${file.name} could not be classified.`);
      reveal();
      return;
    }
    if (seq !== sequence) return;
    if (a.model && a.model !== modelName) {
      modelName = a.model;
      model = null;
      showModel();
      loadModels().then(loadModel);
    }
    const preds = a.predictions || [];
    showPredictions(preds);
    const lat = a.latency_ms;
    if (lat && typeof lat.total === 'number') showTiming(lat, a.batch_size, roundTrip);
    const top = preds[0];
    setState('done', top ? `${file.name}: ${top.label}, ${percent(top.probability)}.`
                         : `${file.name}: no predictions.`);
    reveal();
  }

  const input = $('file');
  input.addEventListener('change', () => {
    const f = input.files && input.files[0];
    input.value = ''; /* choosing the same file again is a change too */
    if (f) classify(f);
  });

  /* Drops are taken anywhere on the page (a stray drop would otherwise make
   * the browser navigate to the file); the zone lights up while dragging. */
  const drop = $('drop');
  const hasFiles = (ev) => ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes('Files');
  let dragDepth = 0;
  window.addEventListener('dragenter', (ev) => {
    if (!hasFiles(ev)) return;
    dragDepth++;
    drop.classList.add('dragging');
  });
  window.addEventListener('dragleave', () => {
    if (dragDepth > 0 && --dragDepth === 0) drop.classList.remove('dragging');
  });
  window.addEventListener('dragover', (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = 'copy';
  });
  window.addEventListener('drop', (ev) => {
    ev.preventDefault();
    dragDepth = 0;
    drop.classList.remove('dragging');
    const files = ev.dataTransfer ? ev.dataTransfer.files : null;
    if (files && files.length)
      classify(files[0], files.length > 1 ? ` (the first of ${files.length} files)` : '');
  });

  /* ---- live panel from /metrics ------------------------------------------- */

  /* Prometheus text exposition 0.0.4 -> [{name, labels, value}]. */
  function parseMetrics(text) {
    const out = [];
    const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const l of text.split('\n')) {
      if (!l || l[0] === '#') continue;
      const m = line.exec(l);
      if (!m) continue;
      const labels = {};
      for (const lm of (m[2] || '').matchAll(label))
        labels[lm[1]] = lm[2].replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
      const v = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : parseFloat(m[3]);
      out.push({ name: m[1], labels, value: v });
    }
    return out;
  }

  const matches = (s, name, labels) =>
    s.name === name && Object.entries(labels || {}).every(([k, v]) => s.labels[k] === v);
  const sum = (samples, name, labels) =>
    samples.filter((s) => matches(s, name, labels)).reduce((a, s) => a + s.value, 0);

  /* Cumulative buckets [{le, count}], sorted by le; the series that match
   * (a model's versions, say) are added up bucket by bucket. */
  function buckets(samples, name, labels) {
    const byLe = new Map();
    for (const s of samples.filter((x) => matches(x, name + '_bucket', labels))) {
      const le = s.labels.le === '+Inf' ? Infinity : parseFloat(s.labels.le);
      byLe.set(le, (byLe.get(le) || 0) + s.value);
    }
    return [...byLe].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
  }

  /* Buckets of what happened between two scrapes. */
  function bucketDelta(now, before) {
    if (!before || before.length !== now.length) return now;
    return now.map((b, i) => ({ le: b.le, count: b.count - before[i].count }));
  }

  /* As Prometheus' histogram_quantile(): linear within the bucket holding
   * the rank; in the +Inf bucket, the largest finite bound, as a floor. */
  function quantile(q, bs) {
    if (!bs.length) return null;
    const total = bs[bs.length - 1].count;
    if (!(total > 0)) return null;
    const rank = q * total;
    let prevLe = 0, prevCount = 0;
    for (const b of bs) {
      if (b.count >= rank) {
        if (b.le === Infinity) return { value: prevLe, above: true };
        const inBucket = b.count - prevCount;
        const f = inBucket > 0 ? (rank - prevCount) / inBucket : 1;
        return { value: prevLe + (b.le - prevLe) * f, above: false };
      }
      prevLe = b.le;
      prevCount = b.count;
    }
    return null;
  }

  const seconds = (qv) => (qv ? (qv.above ? '> ' : '') + ms(qv.value * 1000) : '–');

  function showBatchHistogram(bs) {
    const ul = $('batch-hist');
    ul.replaceChildren();
    const rows = [];
    let prev = 0, prevLe = 0;
    for (const b of bs) {
      const n = b.count - prev;
      const lo = Math.floor(prevLe) + 1;
      const name = b.le === Infinity ? `> ${prevLe}` : lo >= b.le ? String(b.le) : `${lo}–${b.le}`;
      rows.push({ name, n });
      prev = b.count;
      prevLe = b.le;
    }
    let last = rows.length - 1;
    while (last > 3 && rows[last].n === 0) last--; /* trailing empty buckets */
    const max = Math.max(1, ...rows.map((r) => r.n));
    for (const r of rows.slice(0, last + 1)) {
      const li = el('li');
      li.appendChild(el('span', null, r.name));
      li.appendChild(bar(r.n / max));
      li.appendChild(el('span', 'n', String(r.n)));
      li.setAttribute('aria-label', `batch size ${r.name}: ${r.n} batches`);
      ul.appendChild(li);
    }
  }

  let last = null; /* previous scrape: time, predict count, duration buckets */

  async function pollMetrics() {
    try {
      const r = await fetch('metrics', { cache: 'no-store' });
      if (!r.ok) throw new Error((await readError(r)).message);
      const samples = parseMetrics(await r.text());
      const t = performance.now();
      /* Behind a load balancer each scrape may come from another replica:
       * a different start time means nothing to take a difference from. */
      const started = sum(samples, 'process_start_time_seconds');
      if (last && last.started !== started) last = null;
      /* the chosen model's requests (all its versions, /v1 and /v2 alike) */
      const sel = modelName ? { model: modelName } : {};
      if (last && last.model !== modelName) last = null;
      const count = sum(samples, 'mobileformer_model_requests_total', sel);
      const dur = buckets(samples, 'mobileformer_model_request_duration_seconds', sel);
      let span = dur, label = 'since start';
      $('m-rate').textContent = '–';
      if (last) {
        const rate = Math.max(0, (count - last.count) / ((t - last.t) / 1000));
        $('m-rate').textContent = rate.toFixed(rate >= 10 ? 0 : 1);
        const d = bucketDelta(dur, last.dur);
        if (d.length && d[d.length - 1].count > 0) { span = d; label = `last ${Math.round((t - last.t) / 1000)} s`; }
      }
      $('m-p50').textContent = seconds(quantile(0.5, span));
      $('m-p99').textContent = seconds(quantile(0.99, span));
      const bCount = sum(samples, 'mobileformer_batch_size_count', sel);
      const bSum = sum(samples, 'mobileformer_batch_size_sum', sel);
      $('m-batch').textContent = bCount > 0 ? (bSum / bCount).toFixed(2) : '–';
      $('m-queue').textContent = String(sum(samples, 'mobileformer_queue_depth', sel));
      /* this scrape is itself in flight while the text is rendered */
      $('m-inflight').textContent = String(Math.max(0, sum(samples, 'mobileformer_inflight_requests') - 1));
      showBatchHistogram(buckets(samples, 'mobileformer_batch_size', sel));
      $('live-note').textContent = `Every ${POLL_MS / 1000} s from /metrics, for ` +
        `${modelName || 'every model'}: requests of /v1 and /v2; ` +
        `latency percentiles ${label}, estimated from the histogram buckets.`;
      $('live-error').textContent = '';
      last = { t, count, dur, started, model: modelName };
    } catch (e) {
      $('live-error').textContent = `Metrics unavailable: ${e.message}`;
    }
  }

  let timer = 0, polling = false;
  async function pollLoop() {
    if (polling) return;
    polling = true;
    clearTimeout(timer);
    if (!document.hidden) await pollMetrics();
    timer = setTimeout(pollLoop, POLL_MS);
    polling = false;
  }
  document.addEventListener('visibilitychange', () => { if (!document.hidden) pollLoop(); });

  loadModel();
  pollLoop();
})();
