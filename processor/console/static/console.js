// kstate console: keeps the server-rendered page live by polling /api/v1/status, and runs the
// call form against /api/v1/call. Plain JavaScript, no build step. Everything from the node is
// put into the page with textContent (never as HTML).
'use strict';
(function () {
  const POLL_MS = 1500;
  const $ = (id) => document.getElementById(id);

  function fmtRate(r) { return r < 10 ? r.toFixed(1) : r.toFixed(0); }

  // fmtDuration matches the Go side (console.go fmtDuration).
  function fmtDuration(sec) {
    if (sec < 1) { return Math.round(sec * 1000) + 'ms'; }
    if (sec < 60) { return (Math.round(sec * 10) / 10) + 's'; }
    let s = Math.round(sec);
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    return (h ? h + 'h' : '') + m + 'm' + s + 's';
  }

  function fmtRestore(l) {
    if (l.phase === 'restoring') {
      let s = l.recordsDone + ' / ' + l.recordsTotal + ' records';
      if (l.recordsTotal > 0) { s += ' (' + Math.floor(100 * l.recordsDone / l.recordsTotal) + '%)'; }
      if (l.recordsPerSec > 0) { s += ', ' + fmtRate(l.recordsPerSec) + '/s'; }
      if (l.etaSeconds >= 0) { s += ', ETA ' + fmtDuration(l.etaSeconds); }
      return 'restoring ' + s;
    }
    if (l.phase === 'serving') {
      return 'serving (restored ' + l.recordsTotal + ' records in ' + fmtDuration(l.elapsedSeconds) + ')';
    }
    return l.phase;
  }

  function fmtSince(now, t) {
    const d = (Date.parse(now) - Date.parse(t)) / 1000;
    if (!isFinite(d) || Date.parse(t) <= 0) { return ''; }
    return fmtDuration(Math.max(0, Math.round(d))) + ' ago';
  }

  function cell(tr, text, cls) {
    const td = document.createElement('td');
    td.textContent = text === undefined || text === null ? '' : String(text);
    if (cls) { td.className = cls; }
    tr.appendChild(td);
    return td;
  }

  function fill(tableId, rows) {
    const tbody = $(tableId).tBodies[0];
    tbody.replaceChildren(...rows);
  }

  function showError(id, prefix, msg) {
    const el = $(id);
    el.hidden = !msg;
    el.textContent = msg ? prefix + msg : '';
  }

  function render(st) {
    const n = st.node;
    $('app').textContent = n.app;
    $('node-id').textContent = n.id;
    $('version').textContent = n.version;
    const state = $('node-state');
    state.textContent = n.state;
    state.className = 'state ' + n.state;
    const upd = $('updated');
    upd.dateTime = st.time;
    upd.textContent = new Date(st.time).toLocaleTimeString();
    $('node-addr').textContent = n.addr || '';
    $('node-advertise').textContent = n.advertise || '';
    $('node-admin').textContent = n.adminAddr || '';
    $('node-assigned').textContent = n.assigned.length + ' of ' + n.partitions + ' assigned' +
      (n.restoring ? ', ' + n.restoring + ' restoring' : '');
    document.title = 'kstate · ' + n.app + ' · ' + n.id;

    showError('group-error', 'group: ', st.groupError);
    fill('nodes', st.nodes.map((m) => {
      const tr = document.createElement('tr');
      tr.dataset.node = m.id;
      if (m.self) { tr.className = 'self'; }
      cell(tr, m.id + (m.self ? ' (this node)' : ''), 'id');
      cell(tr, m.address);
      cell(tr, m.inGroup ? 'yes' : 'no');
      cell(tr, m.partitions, 'num');
      return tr;
    }));

    showError('offsets-error', 'end offsets: ', st.offsetsError);
    fill('partitions', st.partitions.map((p) => {
      const tr = document.createElement('tr');
      tr.dataset.partition = p.partition;
      tr.dataset.owner = p.owner ? p.owner.node : '';
      if (p.owner && p.owner.node === n.id) { tr.className = 'here'; }
      cell(tr, p.partition, 'num');
      if (p.owner) {
        cell(tr, p.owner.node, 'owner');
        cell(tr, p.owner.address);
        cell(tr, p.owner.epoch, 'num');
        cell(tr, fmtSince(st.time, p.owner.acquiredAt));
      } else {
        cell(tr, 'none', 'owner none');
        cell(tr, ''); cell(tr, ''); cell(tr, '');
      }
      cell(tr, p.local ? fmtRestore(p.local) : '', 'local');
      cell(tr, p.logEnd === undefined ? '' : p.logEnd, 'num');
      cell(tr, p.writesPerSec === undefined ? '' : fmtRate(p.writesPerSec), 'num');
      cell(tr, p.local && p.local.commitsPerSec !== undefined ? fmtRate(p.local.commitsPerSec) : '', 'num');
      return tr;
    }));

    fill('services', st.services.map((s) => {
      const tr = document.createElement('tr');
      tr.dataset.service = s.name;
      cell(tr, s.name);
      cell(tr, s.kind);
      cell(tr, s.persistenceId || '');
      cell(tr, s.methods.map((m) => m.name).join(', '));
      cell(tr, s.activeEntities, 'num active');
      return tr;
    }));
    document.body.dataset.refreshed = String((Number(document.body.dataset.refreshed) || 0) + 1);
  }

  async function poll() {
    try {
      const r = await fetch('/api/v1/status', { cache: 'no-store', headers: { accept: 'application/json' } });
      if (!r.ok) { throw new Error('HTTP ' + r.status); }
      render(await r.json());
      showError('conn-error', '', '');
    } catch (e) {
      showError('conn-error', 'cannot reach the node: ', e.message || String(e));
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  // The call form.
  const method = $('call-method');
  const body = $('call-body');
  const headers = $('call-headers');
  const result = $('call-result');
  const code = $('call-code');
  const took = $('call-time');
  const reply = $('call-reply');
  let template = '';

  function useTemplate() {
    const opt = method.selectedOptions[0];
    const next = opt ? opt.dataset.template || '{}' : '{}';
    // Keep what the user typed; replace only an untouched template.
    if (body.value.trim() === '' || body.value === template) { body.value = next; }
    template = next;
  }
  method.addEventListener('change', useTemplate);
  useTemplate();

  function finish(state, codeText, cls, text) {
    code.textContent = codeText;
    code.className = cls;
    reply.textContent = text;
    result.dataset.state = state;
  }

  $('call-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const req = { method: method.value };
    try {
      if (body.value.trim() !== '') { req.request = JSON.parse(body.value); }
      if (headers.value.trim() !== '') { req.headers = JSON.parse(headers.value); }
    } catch (e) {
      finish('error', 'invalid JSON', 'bad', e.message);
      return;
    }
    result.dataset.state = 'pending';
    code.textContent = 'calling…';
    code.className = '';
    took.textContent = '';
    try {
      const r = await fetch('/api/v1/call', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(req),
      });
      const j = await r.json();
      if (j.error) {
        finish('error', 'error (HTTP ' + r.status + ')', 'bad', j.error);
        return;
      }
      const replies = j.replies || [];
      let text = replies.length === 1 ? JSON.stringify(replies[0], null, 2) : JSON.stringify(replies, null, 2);
      if (j.message) { text = j.message + (replies.length ? '\n\n' + text : ''); }
      if (j.truncated) { text += '\n\n(replies truncated)'; }
      took.textContent = j.millis + ' ms';
      finish('done', j.code, j.code === 'OK' ? 'ok' : 'bad', text);
    } catch (e) {
      finish('error', 'error', 'bad', e.message || String(e));
    }
  });

  setTimeout(poll, POLL_MS);
}());
