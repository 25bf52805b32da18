// The node's live dashboard. It reads one stream, `GET /v1/events` (server-
// sent events, read with fetch so that the token travels in a header and
// never in a URL): a `mesh` event every second (this node, its peers, the
// runs), and a `report` event whenever the shown run's merged report
// changed. The run's report is drawn by the same code as the HTML report
// (report.js); this script adds the mesh, the runs and the live cards.
(function () {
  'use strict';
  var R = window.fusiReport;
  var el = R.el, add = R.add, arr = R.arr, obj = R.obj, num = R.num, str = R.str;
  var TOKEN_KEY = 'fusi-token';
  var STALE_MS = 3500;
  var root = document.getElementById('dashboard');
  var token = null;
  var picked = null;
  var shownRun = null;
  var lastEvent = 0;
  var updates = 0;
  var controller = null;
  var retry = null;
  // Requests/s per node, from the growth of each node's requests between
  // two reports: a report has no timeline per node, so the page makes one
  // while it watches. MAX_POINTS per node.
  var MAX_POINTS = 900;
  var perNode = { run: null, last: {}, lines: {} };

  // #token=HEX (from `fusi-node dashboard`) is kept for this tab only and
  // taken out of the address bar; #run=ID picks a run.
  function readHash() {
    var params = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      var i = kv.indexOf('=');
      if (i > 0) params[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1));
    });
    if (params.token) {
      try { sessionStorage.setItem(TOKEN_KEY, params.token); } catch (e) { token = params.token; }
    }
    picked = /^[A-Za-z0-9_-]{1,64}$/.test(params.run || '') ? params.run : null;
    history.replaceState(null, '', location.pathname + location.search + (picked ? '#run=' + picked : ''));
    try { token = sessionStorage.getItem(TOKEN_KEY) || token; } catch (e) { /* kept in memory */ }
  }

  function setConn(text, cls) {
    var c = document.getElementById('conn');
    c.textContent = text;
    c.className = 'badge conn ' + cls;
  }

  function showLogin(problem) {
    document.getElementById('login').hidden = false;
    var p = document.getElementById('login-problem');
    p.hidden = !problem;
    p.textContent = problem || '';
    root.setAttribute('data-state', 'login');
    setConn('no token', 'down');
  }

  function later() {
    if (retry) return;
    retry = setTimeout(function () { retry = null; connect(); }, 2000);
  }

  function connect() {
    if (controller) controller.abort();
    if (!token) { showLogin(''); return; }
    document.getElementById('login').hidden = true;
    controller = new AbortController();
    var mine = controller;
    setConn('connecting', 'neutral');
    fetch('/v1/events' + (picked ? '?run=' + encodeURIComponent(picked) : ''), {
      headers: { Authorization: 'Bearer ' + token },
      cache: 'no-store',
      signal: mine.signal
    }).then(function (response) {
      if (response.status === 401) {
        try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing kept */ }
        token = null;
        showLogin('The node refused that token. Run `fusi-node dashboard` on its host for the address with the right one.');
        return null;
      }
      if (!response.ok || !response.body) {
        return response.text().then(function (text) {
          var message = text;
          try { message = str(obj(JSON.parse(text)).error) || text; } catch (e) { /* not JSON */ }
          throw new Error('the node answered ' + response.status + ': ' + message);
        });
      }
      return read(response.body.getReader(), mine);
    }).catch(function (e) {
      if (mine.signal.aborted) return;
      setConn('disconnected: ' + str(e && e.message ? e.message : e), 'down');
      later();
    });
  }

  // Splits the stream into events: blocks of `event:` and `data:` lines
  // ended by a blank line.
  function read(reader, mine) {
    var decoder = new TextDecoder();
    var buffer = '';
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          if (!mine.signal.aborted) { setConn('the node closed the stream', 'down'); later(); }
          return null;
        }
        buffer += decoder.decode(chunk.value, { stream: true });
        var end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          var block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          var name = 'message', data = [];
          block.split('\n').forEach(function (line) {
            if (line.indexOf('event:') === 0) name = line.slice(6).trim();
            else if (line.indexOf('data:') === 0) data.push(line.slice(5).replace(/^ /, ''));
          });
          if (data.length) dispatch(name, data.join('\n'));
        }
        return pump();
      });
    }
    return pump();
  }

  function dispatch(name, data) {
    var value;
    try { value = JSON.parse(data); } catch (e) { return; }
    lastEvent = Date.now();
    setConn('live', 'live');
    if (name === 'mesh') mesh(obj(value));
    else if (name === 'report') report(obj(value));
    if (root.getAttribute('data-state') !== 'error') root.setAttribute('data-state', 'live');
  }

  function bytes(v) {
    v = num(v);
    if (v === null) return '–';
    var units = ['B', 'KB', 'MB', 'GB'], i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return v.toLocaleString('en-US', { maximumFractionDigits: i ? 1 : 0 }) + ' ' + units[i];
  }

  function cards(box, list) {
    box.textContent = '';
    list.forEach(function (c) {
      var card = add(box, el('div', 'card'));
      add(card, el('div', 'k', c[0]));
      var v = add(card, el('div', 'v', c[1]));
      if (c[3]) { v.id = c[3]; v.setAttribute('data-value', str(c[4])); }
      if (c[2]) add(card, el('div', 's', c[2]));
    });
  }

  function ms(v, digits) { v = num(v); return v === null ? '–' : v.toFixed(digits) + ' ms'; }

  function mesh(m) {
    var s = obj(m.status), peers = arr(m.peers).map(obj), runs = arr(m.runs).map(obj);
    document.getElementById('node-title').textContent = 'fusi · ' + (str(s.name) || 'node');
    document.title = 'fusi dashboard · ' + str(s.name);
    document.getElementById('node-meta').textContent = 'region ' + str(s.region) + ' · ' + str(s.mesh) +
      ' mesh · version ' + str(s.version) + ' · up ' + R.fmtInt(s.uptime_s) + ' s';
    var suspects = peers.filter(function (p) { return p.suspect === true; }).length;
    cards(document.getElementById('mesh-cards'), [
      ['Members', R.fmtInt(peers.length + 1), 'this node and ' + R.fmtInt(peers.length) + ' others', 'mesh-members', peers.length + 1],
      ['Connected', R.fmtInt(s.connected), 'open connections'],
      ['Suspects', R.fmtInt(suspects), suspects ? 'missed heartbeats' : 'none'],
      ['CPU', R.fmtNum(Math.round((num(s.cpu) || 0) * 100) / 100), 'cores in use of ' + R.fmtInt(s.cores)],
      ['Sockets', R.fmtInt(s.sockets), 'open'],
      ['Mesh sent', bytes(s.mesh_bytes_sent), 'received ' + bytes(s.mesh_bytes_received)]
    ]);
    var box = document.getElementById('members');
    box.textContent = '';
    if (!peers.length) {
      add(box, el('p', 'none', 'No other member yet.'));
    } else {
      R.table(box, ['Member', 'Region', 'Health', 'Last seen', 'RTT', 'Clock offset', 'CPU', 'Sockets', 'Max VUs'], peers.map(function (p) {
        var name = el('span', '', str(p.name) || str(p.id));
        name.title = str(p.id);
        var health = p.suspect === true ? R.badge('suspect', 'fail') : p.connected === true ? R.badge('healthy', 'pass') : R.badge('not connected', 'neutral');
        var offset = num(p.offset_ms) === null ? '–' : ms(p.offset_ms, 2) + ' ± ' + ms(p.bound_ms, 2);
        return [name, str(p.region), health, R.fmtInt(p.last_seen_ms) + ' ms ago', ms(p.rtt_ms, 2), offset,
          R.fmtNum(Math.round((num(p.cpu) || 0) * 100) / 100), R.fmtInt(p.sockets), R.fmtInt(p.vu_limit)];
      }), [false, false, false, true, true, true, true, true, true]);
    }
    runList(runs);
  }

  function runList(runs) {
    var box = document.getElementById('run-list');
    box.textContent = '';
    if (!runs.length) {
      add(box, el('p', 'none', 'No runs yet: submit one with `fusi-node run --api ...` to any node.'));
      return;
    }
    var t = R.table(box, ['Run', 'Phase', 'Scenario', 'Executor', 'Nodes', 'Elapsed', 'Proposer'], runs.map(function (r) {
      var elapsed = num(r.elapsed_s);
      var when = ended(r.phase) ? 'ended' : elapsed === null ? '–' :
        Math.max(0, elapsed).toFixed(1) + ' of ' + R.fmtNum(r.duration_s) + ' s';
      return [el('span', 'mono', str(r.id)), phase(r.phase), str(r.scenario), str(r.executor), R.fmtInt(arr(r.nodes).length),
        when, str(r.proposer)];
    }), [false, false, false, false, true, true, false]);
    arr(t.tBodies[0] && t.tBodies[0].rows).forEach(function (row, i) {
      var id = str(runs[i].id);
      row.className = 'pick' + (id === shownRun ? ' picked' : '');
      row.title = 'show run ' + id;
      row.addEventListener('click', function () {
        picked = id;
        history.replaceState(null, '', location.pathname + location.search + '#run=' + id);
        connect();
      });
    });
  }

  function phase(p) {
    var cls = { running: 'pass', complete: 'pass', armed: 'neutral', stopped: 'neutral', failed: 'fail' };
    return R.badge(str(p) || '?', cls[p] || 'neutral');
  }

  function last(timeline) {
    var list = arr(timeline).map(obj);
    return list.length ? list[list.length - 1] : {};
  }

  function series(parts, field) {
    return parts.map(function (p, i) {
      return {
        name: p.name, color: R.REGION_COLORS[i % R.REGION_COLORS.length],
        points: arr(obj(p.summary).timeline).map(obj).filter(function (q) {
          return num(q.t_s) !== null && num(q[field]) !== null;
        }).map(function (q) { return [Math.max(0, q.t_s), Math.max(0, q[field])]; })
      };
    });
  }

  function ended(phase) { return ['complete', 'stopped', 'failed'].indexOf(str(phase)) >= 0; }

  function trackNodes(run, r) {
    if (perNode.run !== str(run.id)) perNode = { run: str(run.id), last: {}, lines: {} };
    var t = num(run.elapsed_s);
    if (t === null || ended(run.phase)) return;
    arr(r.nodes).map(obj).forEach(function (n) {
      var id = str(n.id), requests = num(obj(obj(n.summary).http).requests) || 0, prev = perNode.last[id];
      if (prev && t > prev[0]) {
        var line = perNode.lines[id] || (perNode.lines[id] = { name: str(n.name) || id, points: [] });
        line.points.push([Math.max(0, t), Math.max(0, (requests - prev[1]) / (t - prev[0]))]);
        if (line.points.length > MAX_POINTS) line.points.shift();
      }
      perNode.last[id] = [t, requests];
    });
  }

  function redraw(figure, kind, unit, list) {
    var title = figure.querySelector('h3');
    figure.textContent = '';
    if (title) add(figure, title);
    R.lineChart(figure, kind, unit, list);
  }

  function report(event) {
    var run = obj(event.run), r = obj(event.report), s = obj(r.summary), http = obj(s.http);
    shownRun = str(run.id);
    updates += 1;
    root.setAttribute('data-updates', String(updates));
    document.getElementById('run-id').textContent = shownRun;
    var ph = document.getElementById('run-phase');
    ph.textContent = '';
    add(ph, phase(run.phase));
    arr(document.querySelectorAll('#run-list tbody tr')).forEach(function (row) {
      row.className = 'pick' + (row.title === 'show run ' + shownRun ? ' picked' : '');
    });
    var now = last(s.timeline), load = obj(r.load);
    var elapsed = num(run.elapsed_s), duration = num(run.duration_s);
    var planned = num(load.planned), delivered = num(load.delivered);
    var share = elapsed !== null && duration ? Math.min(1, Math.max(0, elapsed / duration)) : 1;
    var phaseDone = ended(run.phase);
    var plannedNow = planned === null ? null : planned * (phaseDone ? 1 : share);
    var unit = load.unit === 'vu_seconds' ? 'VU-seconds' : 'iterations';
    var thresholds = arr(r.thresholds).map(obj);
    var failing = thresholds.filter(function (t) { return t.pass !== true; }).length;
    cards(document.getElementById('run-cards'), [
      phaseDone ? ['Measured', R.fmtNum(s.duration_s) + ' s', 'the run ended'] :
        ['Elapsed', elapsed === null ? '–' : Math.max(0, elapsed).toFixed(1) + ' s', 'of ' + R.fmtNum(duration) + ' s'],
      ['Requests', R.fmtInt(http.requests), R.fmtInt(http.failed) + ' failed', 'live-requests', num(http.requests) || 0],
      ['Requests/s now', R.fmtRate(now.rps), 'latest interval'],
      ['p95 now', R.fmtMs(now.p95_ms), 'p99 ' + R.fmtMs(now.p99_ms)],
      ['VUs now', R.fmtInt(now.vus), 'max ' + R.fmtInt(s.vus_max)],
      ['Load delivered', plannedNow ? R.fmtPct((delivered || 0) / plannedNow) : '–',
        R.fmtInt(delivered) + ' of ' + R.fmtInt(plannedNow) + ' ' + unit + (phaseDone ? '' : ' planned so far')],
      ['Thresholds', thresholds.length ? (failing ? failing + ' failing' : 'all pass') : 'none', thresholds.length ? 'as they stand now' : '']
    ]);
    trackNodes(run, r);
    var nodeLines = Object.keys(perNode.lines).sort().map(function (id, i) {
      var line = perNode.lines[id];
      return { name: line.name, color: R.REGION_COLORS[i % R.REGION_COLORS.length], points: line.points };
    });
    var regions = Object.keys(obj(r.regions)).sort().map(function (n) { return { name: n, summary: obj(r.regions)[n] }; });
    redraw(document.getElementById('chart-node-rps'), 'node-rps', 'requests/s', nodeLines);
    redraw(document.getElementById('chart-vus'), 'vus', 'VUs', series(regions, 'vus'));
    // Intervals are one second long: a count per interval is a rate.
    redraw(document.getElementById('chart-failed'), 'failed', 'failed/s', series(regions, 'failed'));
    var box = document.getElementById('run-report');
    if (!R.draw(box, r, {})) root.setAttribute('data-state', 'error');
  }

  // Marks the view stale when the stream went quiet.
  setInterval(function () {
    if (lastEvent && Date.now() - lastEvent > STALE_MS && controller) {
      setConn('stale: nothing heard for ' + Math.round((Date.now() - lastEvent) / 1000) + ' s', 'stale');
    }
  }, 1000);

  document.getElementById('login-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var value = document.getElementById('login-token').value.trim();
    if (!/^[0-9a-fA-F]{16,256}$/.test(value)) {
      showLogin('That is not a token: a token is the hex text in api.token.');
      return;
    }
    token = value;
    try { sessionStorage.setItem(TOKEN_KEY, value); } catch (err) { /* kept in memory */ }
    connect();
  });
  window.addEventListener('hashchange', function () { readHash(); connect(); });
  readHash();
  connect();
})();
