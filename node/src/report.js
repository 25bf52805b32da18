// Draws a fusi run report (the JSON of `--format json`) into a page: the
// HTML report calls it once on the report it carries, and the node's live
// dashboard calls it again on every update of a run under way. It defines
// one global, `fusiReport`: `draw(root, report, options)` and the helpers
// the dashboard shares (formatting, tables, line charts).
(function () {
  'use strict';
  // The SVG namespace, read off an element the HTML parser made, so that
  // the report page holds no URL at all.
  var SVG_NS = document.getElementById('svg-ns').namespaceURI;
  var REGION_COLORS = ['#0969da', '#bc4c00', '#8250df', '#1a7f37', '#bf3989', '#0550ae', '#953800', '#57606a'];
  var failed = false;

  // Data is only ever put in the page as text (textContent) or attribute
  // values: never parsed as HTML.
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent, child) { parent.appendChild(child); return child; }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function arr(v) { return Array.isArray(v) ? v : []; }
  function obj(v) { return v && typeof v === 'object' && !Array.isArray(v) ? v : {}; }
  function num(v) { return typeof v === 'number' && isFinite(v) ? v : null; }
  function str(v) { return v === undefined || v === null ? '' : String(v); }

  function fixed(v, digits) {
    return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function fmtInt(v) { v = num(v); return v === null ? '–' : fixed(Math.round(v), 0); }
  function fmtRate(v) { v = num(v); return v === null ? '–' : fixed(v, v < 100 ? 1 : 0); }
  function fmtPct(v) { v = num(v); return v === null ? '–' : fixed(v * 100, 2) + '%'; }
  function fmtMs(v) {
    v = num(v);
    if (v === null) return '–';
    if (v >= 10000) return fixed(v / 1000, 1) + ' s';
    return fixed(v, v < 1 ? 3 : v < 10 ? 2 : v < 100 ? 1 : 0) + ' ms';
  }
  function fmtNum(v) {
    v = num(v);
    return v === null ? '–' : v.toLocaleString('en-US', { maximumFractionDigits: 4 });
  }

  function fail(section, e) {
    failed = true;
    add(section, el('div', 'fusi-error', 'This part of the report could not be shown: ' + str(e && e.message ? e.message : e)));
  }

  function table(parent, head, rows, numeric) {
    var t = add(parent, el('table'));
    var tr = add(add(t, el('thead')), el('tr'));
    head.forEach(function (h, i) { add(tr, el('th', numeric[i] ? 'n' : '', h)); });
    var body = add(t, el('tbody'));
    rows.forEach(function (row) {
      var r = add(body, el('tr'));
      row.forEach(function (cell, i) {
        var td = add(r, el('td', numeric[i] ? 'n' : ''));
        if (cell instanceof Node) td.appendChild(cell); else td.textContent = str(cell);
      });
    });
    return t;
  }

  function badge(text, cls) { return el('span', 'badge ' + cls, text); }

  function header(r, section, options) {
    var title = 'fusi report ' + str(r.run_id);
    document.getElementById('title').textContent = title;
    if (options.title) document.title = title + (r.scenario ? ' · ' + str(r.scenario) : '');
    var meta = document.getElementById('meta');
    meta.textContent = '';
    [['scenario', r.scenario], ['executor', r.executor], ['outcome', r.outcome]].forEach(function (kv, i) {
      if (i) add(meta, document.createTextNode(' · '));
      add(meta, document.createTextNode(kv[0] + ' '));
      add(meta, el('b', 'mono', str(kv[1]) || '?'));
    });
    var d = num(obj(r.summary).duration_s);
    if (d !== null) add(meta, document.createTextNode(' · ' + fixed(d, 1) + ' s measured'));
  }

  function completeness(r) {
    var box = document.getElementById('completeness');
    var c = obj(r.completeness);
    var lost = arr(c.nodes_lost).map(str);
    var incomplete = arr(c.nodes_incomplete).map(str);
    var whole = c.complete === true;
    box.className = 'banner ' + (whole ? 'complete' : lost.length ? 'lost' : 'partial');
    box.textContent = '';
    add(box, el('b', '', whole ? 'Complete' : 'INCOMPLETE'));
    var parts = [
      fmtInt(c.shards_received) + ' of ' + fmtInt(c.shards_announced) + ' announced shards held',
      fmtInt(c.nodes_reporting) + ' of ' + fmtInt(c.nodes_expected) + ' nodes reporting'
    ];
    parts.push(lost.length ? 'lost: ' + lost.join(', ') : 'no node lost');
    if (incomplete.length) parts.push('incomplete: ' + incomplete.join(', '));
    var load = obj(r.load);
    var planned = num(load.planned);
    if (planned !== null && planned > 0) {
      var unit = load.unit === 'vu_seconds' ? 'VU-seconds' : 'iterations';
      parts.push('load delivered: ' + fmtInt(Math.round(num(load.delivered) || 0)) + ' of ' +
        fmtInt(Math.round(planned)) + ' ' + unit + ' (' + fixed((num(load.ratio) || 0) * 100, 1) + ' %)' +
        (load.short === true ? ' SHORT of ' + fixed((num(load.min_ratio) || 0) * 100, 1) + ' %' : ''));
    }
    var names = {};
    arr(r.nodes).map(obj).forEach(function (n) { names[str(n.id)] = str(n.name) || str(n.id); });
    var moved = {};
    arr(r.moves).map(obj).forEach(function (m) {
      var from = str(m.from);
      if (!moved[from]) moved[from] = { since: num(m.since_ms) || 0, to: [] };
      moved[from].to.push(names[str(m.to)] || str(m.to));
    });
    Object.keys(moved).forEach(function (from) {
      parts.push((names[from] || from) + "'s share moved at " + fixed(moved[from].since / 1000, 1) +
        ' s to ' + moved[from].to.join(', '));
    });
    if (load.short === true && box.className.indexOf('lost') < 0) box.className = 'banner lost';
    add(box, document.createTextNode(parts.join(' · ')));
    if (!whole) {
      add(box, el('span', 'why', 'Every number below counts only the shards held here.'));
    }
  }

  function thresholds(r, section) {
    var list = arr(r.thresholds).map(obj);
    var verdict = document.getElementById('verdict');
    if (!list.length) {
      verdict.appendChild(badge('none set', 'neutral'));
      add(section, el('p', 'none', 'No thresholds were set for this run.'));
      return;
    }
    var ok = list.every(function (t) { return t.pass === true; });
    verdict.appendChild(badge(ok ? 'PASS' : 'FAIL', ok ? 'pass' : 'fail'));
    table(section, ['Threshold', 'Observed', 'Result', 'Problem'], list.map(function (t) {
      var name = el('span', 'mono', str(t.threshold));
      if (t.abort_on_fail === true) add(name, el('span', 'sub', ' (aborts on fail)'));
      return [name, fmtNum(t.observed), badge(t.pass === true ? 'pass' : 'fail', t.pass === true ? 'pass' : 'fail'), str(t.problem)];
    }), [false, true, false, false]);
  }

  function numbers(r, section) {
    var s = obj(r.summary), http = obj(s.http), d = obj(http.duration), it = obj(s.iterations);
    var passes = 0, fails = 0;
    arr(s.checks).forEach(function (c) { passes += num(obj(c).passes) || 0; fails += num(obj(c).fails) || 0; });
    var cards = add(section, el('div', 'cards'));
    [
      ['Requests', fmtInt(http.requests), ''],
      ['Requests/s', fmtRate(http.rps), ''],
      ['Failed', fmtPct(http.failed_rate), fmtInt(http.failed) + ' requests'],
      ['p50', fmtMs(d.p50), 'request duration'],
      ['p95', fmtMs(d.p95), 'request duration'],
      ['p99', fmtMs(d.p99), 'max ' + fmtMs(d.max)],
      ['Iterations', fmtInt(it.completed), fmtInt(it.dropped) + ' dropped'],
      ['VUs max', fmtInt(s.vus_max), ''],
      ['Checks', passes + fails ? fmtPct(passes / (passes + fails)) : '–', fmtInt(passes) + ' passed, ' + fmtInt(fails) + ' failed']
    ].forEach(function (c) {
      var card = add(cards, el('div', 'card'));
      add(card, el('div', 'k', c[0]));
      add(card, el('div', 'v', c[1]));
      if (c[2]) add(card, el('div', 's', c[2]));
    });
  }

  // Round steps (1, 2, 2.5, 5 × 10^k) from 0 to at least max.
  function ticks(max, count) {
    if (!(max > 0)) max = 1;
    var raw = max / count, mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
    var step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
    var n = Math.max(1, Math.ceil(max / step - 1e-9)), out = [];
    for (var i = 0; i <= n; i++) out.push(i * step);
    return out;
  }

  // One line chart. Each series: {name, color, dash (optional), points: [[t_s, value]]}.
  function lineChart(box, kind, unit, series) {
    series = series.filter(function (s) { return s.points.length > 0; });
    if (!series.length) {
      add(box, el('div', 'nodata', 'no data'));
      return;
    }
    var W = 960, H = 280, L = 62, R = 16, T = 12, B = 42;
    var xmax = 0, ymax = 0;
    series.forEach(function (s) {
      s.points.forEach(function (p) { xmax = Math.max(xmax, p[0]); ymax = Math.max(ymax, p[1]); });
    });
    var xt = ticks(xmax, 10), yt = ticks(ymax, 5);
    var xtop = xt[xt.length - 1], ytop = yt[yt.length - 1];
    var x = function (v) { return L + (v / xtop) * (W - L - R); };
    var y = function (v) { return H - B - (v / ytop) * (H - T - B); };
    var label = function (v) { return v.toLocaleString('en-US', { maximumFractionDigits: 3 }); };
    var g = svg('svg', { 'class': 'chart', 'data-chart': kind, viewBox: '0 0 ' + W + ' ' + H, role: 'img' });
    yt.forEach(function (v) {
      add(g, svg('line', { 'class': 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      add(g, svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, label(v)));
    });
    xt.forEach(function (v) {
      add(g, svg('line', { 'class': 'axis', x1: x(v), x2: x(v), y1: H - B, y2: H - B + 4 }));
      add(g, svg('text', { x: x(v), y: H - B + 16, 'text-anchor': 'middle' }, label(v)));
    });
    add(g, svg('line', { 'class': 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
    add(g, svg('line', { 'class': 'axis', x1: L, x2: L, y1: T, y2: H - B }));
    add(g, svg('text', { x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle' }, 'time since start (s)'));
    add(g, svg('text', { x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle', transform: 'rotate(-90 14 ' + (T + H - B) / 2 + ')' }, unit));
    // Dashed lines (the whole run) on top, so that one still shows over the
    // line of its only region, which has the same values.
    series.filter(function (s) { return !s.dash; }).concat(series.filter(function (s) { return s.dash; })).forEach(function (s) {
      var d = s.points.map(function (p, i) {
        return (i ? 'L' : 'M') + x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1);
      }).join(' ');
      // A lone point is a zero-length line, drawn as a dot by its round cap.
      if (s.points.length === 1) d += ' l0,0';
      var attrs = { 'class': 'series', 'data-series': s.name, d: d, stroke: s.color, 'stroke-width': 2 };
      if (s.dash) attrs['stroke-dasharray'] = '7 4';
      var path = add(g, svg('path', attrs));
      add(path, svg('title', {}, s.name));
    });
    add(box, g);
    var legend = add(box, el('div', 'legend'));
    series.forEach(function (s) {
      var item = add(legend, el('span'));
      add(item, el('i', s.dash ? 'dash' : '')).style.color = s.color;
      add(item, document.createTextNode(s.name));
    });
  }

  function points(summary, field) {
    return arr(obj(summary).timeline).map(obj).filter(function (p) {
      return num(p.t_s) !== null && num(p[field]) !== null;
    }).map(function (p) { return [Math.max(0, p.t_s), Math.max(0, p[field])]; });
  }

  function regionSeries(r, field) {
    var all = obj(r.regions);
    return Object.keys(all).sort().map(function (name, i) {
      return { name: name, color: REGION_COLORS[i % REGION_COLORS.length], points: points(all[name], field) };
    });
  }

  function charts(r) {
    var all = { name: 'whole run', color: '#1f2328', dash: true, points: points(r.summary, 'rps') };
    lineChart(document.getElementById('chart-rps'), 'rps', 'requests/s', [all].concat(regionSeries(r, 'rps')));
    lineChart(document.getElementById('chart-latency'), 'latency', 'ms', [
      { name: 'p50', color: '#1a7f37', points: points(r.summary, 'p50_ms') },
      { name: 'p95', color: '#bf8700', points: points(r.summary, 'p95_ms') },
      { name: 'p99', color: '#cf222e', points: points(r.summary, 'p99_ms') }
    ]);
    lineChart(document.getElementById('chart-region-p95'), 'region-p95', 'ms', regionSeries(r, 'p95_ms'));
  }

  function checks(r, section) {
    var s = obj(r.summary);
    var list = arr(s.checks).map(obj);
    if (list.length) {
      table(section, ['Check', 'Passed', 'Failed', 'Pass rate'], checkRows(list), [false, true, true, true]);
    } else {
      add(section, el('p', 'none', 'No checks.'));
    }
    var errors = obj(s.errors), kinds = Object.keys(errors).sort();
    if (kinds.length) {
      add(section, el('h3', '', 'Failed requests by kind')).style.marginTop = '14px';
      table(section, ['Kind', 'Requests'], kinds.map(function (k) { return [k, fmtInt(errors[k])]; }), [false, true]);
    }
    // What the first failures of each kind said (http:refused,
    // iteration:panic, ...), from every node.
    var said = obj(s.first_failures), saidKinds = Object.keys(said).sort(), saidRows = [];
    saidKinds.forEach(function (k) {
      arr(said[k]).forEach(function (text) { saidRows.push([k, String(text)]); });
    });
    if (saidRows.length) {
      add(section, el('h3', '', 'What the first failures said')).style.marginTop = '14px';
      table(section, ['Kind', 'Said'], saidRows, [false, false]);
    }
  }

  function checkRows(list) {
    return list.map(function (c) {
      var p = num(c.passes) || 0, f = num(c.fails) || 0;
      return [c.name, fmtInt(p), fmtInt(f), p + f ? fmtPct(p / (p + f)) : '–'];
    });
  }

  // Each group's time (a group every iteration left early has checks but
  // no time), then the checks made in each group.
  function groups(r, section) {
    var list = arr(obj(r.summary).groups).map(obj);
    if (!list.length) {
      add(section, el('p', 'none', 'No groups.'));
      return;
    }
    table(section, ['Group', 'Times', 'avg', 'p50', 'p90', 'p95', 'p99', 'max', 'Checks'], list.map(function (g) {
      var d = obj(g.duration), timed = (num(d.count) || 0) > 0;
      var ms = function (v) { return timed ? fmtMs(v) : '–'; };
      var p = 0, f = 0;
      arr(g.checks).map(obj).forEach(function (c) { p += num(c.passes) || 0; f += num(c.fails) || 0; });
      return [
        el('span', 'mono', str(g.name)), fmtInt(d.count), ms(d.mean), ms(d.p50), ms(d.p90), ms(d.p95), ms(d.p99), ms(d.max),
        p + f ? fmtPct(p / (p + f)) + ' of ' + fmtInt(p + f) : '–'
      ];
    }), [false, true, true, true, true, true, true, true, true]);
    list.filter(function (g) { return arr(g.checks).length > 0; }).forEach(function (g) {
      var h = add(section, el('h3', 'group-checks'));
      add(h, document.createTextNode('Checks in '));
      add(h, el('span', 'mono', str(g.name)));
      h.style.marginTop = '14px';
      table(section, ['Check', 'Passed', 'Failed', 'Pass rate'], checkRows(arr(g.checks).map(obj)), [false, true, true, true]);
    });
  }

  // The scenario's own metrics, by kind. Their values are in the metric's
  // own unit, which the report does not know: plain numbers.
  function custom(r, section) {
    var s = obj(r.summary), all = obj(s.custom), secs = num(s.duration_s);
    var kinds = { counter: [], rate: [], trend: [], gauge: [] };
    Object.keys(all).sort().forEach(function (name) {
      var m = obj(all[name]);
      if (kinds[m.kind]) kinds[m.kind].push([name, m]);
    });
    if (!Object.keys(all).length) {
      add(section, el('p', 'none', 'No custom metrics.'));
      return;
    }
    var part = function (title, head, rows, numeric) {
      if (!rows.length) return;
      add(section, el('h3', '', title)).style.marginTop = '14px';
      table(section, head, rows, numeric);
    };
    var name = function (n) { return el('span', 'mono', n); };
    part('Counters', ['Counter', 'Total', 'Per second'], kinds.counter.map(function (c) {
      var total = num(c[1].total);
      return [name(c[0]), fmtNum(total), secs && total !== null ? fmtRate(total / secs) : '–'];
    }), [false, true, true]);
    part('Rates', ['Rate', 'Rate', 'Non-zero', 'Zero'], kinds.rate.map(function (c) {
      var p = num(c[1].passes) || 0, f = num(c[1].fails) || 0;
      return [name(c[0]), p + f ? fmtPct(p / (p + f)) : '–', fmtInt(p), fmtInt(f)];
    }), [false, true, true, true]);
    part('Trends', ['Trend', 'Count', 'min', 'avg', 'p50', 'p90', 'p95', 'p99', 'p99.9', 'max'], kinds.trend.map(function (c) {
      var t = c[1];
      return [name(c[0]), fmtInt(t.count), fmtNum(t.min), fmtNum(t.mean), fmtNum(t.p50), fmtNum(t.p90),
        fmtNum(t.p95), fmtNum(t.p99), fmtNum(t.p999), fmtNum(t.max)];
    }), [false, true, true, true, true, true, true, true, true, true]);
    part('Gauges', ['Gauge', 'Last', 'min', 'max'], kinds.gauge.map(function (c) {
      return [name(c[0]), fmtNum(c[1].last), fmtNum(c[1].min), fmtNum(c[1].max)];
    }), [false, true, true, true]);
  }

  // A run with named scenarios: each scenario's executor, load and what
  // its VUs measured. Hidden for a run of one unnamed scenario.
  function scenarios(r, section) {
    var all = obj(r.scenarios), names = Object.keys(all).sort();
    if (!names.length) {
      section.hidden = true;
      return;
    }
    table(section, ['Scenario', 'Executor', 'Start', 'Load delivered', 'Iterations', 'Requests', 'Failed rate', 'p95',
      'WebSocket sessions', 'Checks'], names.map(function (n) {
      var sc = obj(all[n]), load = obj(sc.load), s = obj(sc.summary), h = obj(s.http), it = obj(s.iterations);
      var unit = load.unit === 'vu_seconds' ? ' VU-s' : '';
      var p = 0, f = 0;
      arr(s.checks).map(obj).forEach(function (c) { p += num(c.passes) || 0; f += num(c.fails) || 0; });
      var delivered = fmtInt(load.delivered) + ' of ' + fmtInt(load.planned) + unit + ' (' + fmtPct(load.ratio) + ')';
      return [
        el('span', 'mono', n), str(sc.executor) + ' · ' + str(sc.exec), fmtNum(num(sc.start_s)) + ' s',
        load.short ? badge(delivered, 'fail') : delivered,
        fmtInt(it.completed), fmtInt(h.requests), fmtPct(h.failed_rate), fmtMs(obj(h.duration).p95),
        s.ws ? fmtInt(obj(s.ws).sessions) : '–', p + f ? fmtPct(p / (p + f)) + ' of ' + fmtInt(p + f) : '–'
      ];
    }), [false, false, true, true, true, true, true, true, true, true]);
  }

  function regions(r, section) {
    var names = Object.keys(obj(r.regions)).sort();
    if (!names.length) {
      add(section, el('p', 'none', 'No regions.'));
      return;
    }
    table(section, ['Region', 'Requests', 'Requests/s', 'Failed', 'Failed rate', 'p50', 'p95', 'p99'], names.map(function (n) {
      var h = obj(obj(obj(r.regions)[n]).http), d = obj(h.duration);
      return [n, fmtInt(h.requests), fmtRate(h.rps), fmtInt(h.failed), fmtPct(h.failed_rate), fmtMs(d.p50), fmtMs(d.p95), fmtMs(d.p99)];
    }), [false, true, true, true, true, true, true, true]);
  }

  function nodes(r, section) {
    var list = arr(r.nodes).map(obj);
    if (!list.length) {
      add(section, el('p', 'none', 'No nodes.'));
      return;
    }
    var states = { complete: 'pass', incomplete: 'partial', lost: 'fail', silent: 'fail' };
    table(section, ['Node', 'Region', 'State', 'Shards', 'Requests', 'Requests/s', 'p95', 'Failed', 'CPU (most)'], list.map(function (n) {
      var h = obj(obj(n.summary).http), id = str(n.id), name = el('span', '', str(n.name) || id);
      name.title = id;
      var announced = num(n.shards_announced);
      // How busy its CPUs were (node_cpu): a node at its limit measured
      // its own wait too, so its busy intervals are flagged.
      var cpu = obj(n.cpu), busy = num(cpu.busy), most = fmtPct(cpu.max);
      return [
        name, n.region, badge(str(n.state) || '?', states[n.state] || 'neutral'),
        fmtInt(n.shards_received) + ' of ' + (announced === null ? '?' : fmtInt(announced)),
        fmtInt(h.requests), fmtRate(h.rps), fmtMs(obj(h.duration).p95), fmtInt(h.failed),
        busy ? badge(most + ', busy in ' + fmtInt(busy) + ' of ' + fmtInt(cpu.intervals), 'fail') : most
      ];
    }), [false, false, false, true, true, true, true, true, true]);
  }

  // An element with its id set first (the order attributes appear in
  // when the page is serialized), then its class.
  function part(parent, tag, id, cls) {
    var e = document.createElement(tag);
    if (id) e.id = id;
    if (cls) e.className = cls;
    return add(parent, e);
  }

  // The page's skeleton: a header, then a section per part of the report.
  function skeleton(root) {
    var head = add(root, el('header'));
    part(head, 'h1', 'title').textContent = 'fusi report';
    part(head, 'div', 'meta', 'sub');
    part(head, 'div', 'completeness', 'banner partial').textContent = 'Reading the report…';
    var t = add(part(root, 'section', 'thresholds'), el('h2', '', 'Thresholds '));
    part(t, 'span', 'verdict');
    add(part(root, 'section', 'numbers'), el('h2', '', 'Key numbers'));
    var charts = part(root, 'section', 'charts');
    add(charts, el('h2', '', 'Over time'));
    [
      ['chart-rps', 'Requests per second: the run and each region'],
      ['chart-latency', 'Request duration percentiles, whole run (ms)'],
      ['chart-region-p95', 'p95 request duration per region (ms)']
    ].forEach(function (f) { add(part(charts, 'figure', f[0]), el('h3', '', f[1])); });
    [
      ['scenarios', 'Scenarios'], ['checks', 'Checks and errors'], ['groups', 'Groups'],
      ['custom', 'Custom metrics'], ['regions', 'Regions'], ['nodes', 'Nodes']
    ].forEach(function (s) { add(part(root, 'section', s[0]), el('h2', '', s[1])); });
  }

  // Draws `report` (parsed JSON) into `root`, replacing what was there, and
  // sets root's data-state to `ok`, or `error` when a part could not be
  // drawn (that part then says why). options.title: set the page's title.
  function draw(root, report, options) {
    options = obj(options);
    failed = false;
    root.textContent = '';
    skeleton(root);
    report = obj(report);
    [
      ['meta', header], ['completeness', completeness], ['thresholds', thresholds],
      ['numbers', numbers], ['charts', charts], ['scenarios', scenarios], ['checks', checks],
      ['groups', groups], ['custom', custom], ['regions', regions], ['nodes', nodes]
    ].forEach(function (p) {
      var section = document.getElementById(p[0]);
      try { p[1](report, section, options); } catch (e) { fail(section, e); }
    });
    root.setAttribute('data-state', failed ? 'error' : 'ok');
    return !failed;
  }

  window.fusiReport = {
    draw: draw, el: el, add: add, svg: svg, table: table, badge: badge, lineChart: lineChart,
    arr: arr, obj: obj, num: num, str: str,
    fmtInt: fmtInt, fmtRate: fmtRate, fmtPct: fmtPct, fmtMs: fmtMs, fmtNum: fmtNum,
    REGION_COLORS: REGION_COLORS
  };
})();
