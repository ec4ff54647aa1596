/* lesion report: glue between the embedded data, Tabulator (tables) and Apache ECharts (charts).
   Views are addressed by the URL fragment: #study, #run/R, #run/R/lesion/KEY, #shapley/S, #improve/I. */
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("lesion-data").textContent);
  const RED = "#c62828", GREEN = "#2e7d32", BLACK = "#222";
  const state = { built: {}, charts: {}, tables: {} };
  window.lesionReport = state;  // for the browser test and the curious

  const fmt = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const signed = (v, d = 2) => (v === null || v === undefined ? "–" : (v > 0 ? "+" : "") + Number(v).toFixed(d));
  const pfmt = (v) => (v === null || v === undefined ? "–" : v < 1e-4 ? Number(v).toExponential(2) : Number(v).toPrecision(3));
  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const chart = (node, option, name) => {
    const c = echarts.init(node, null, { renderer: "canvas" });
    c.setOption(option);
    state.charts[name] = c;
    return c;
  };
  const maxAbs = (rows) => rows.reduce((m, row) => row.reduce((a, v) => (v === null ? a : Math.max(a, Math.abs(v))), m), 1e-9);
  const diverging = ["#b2182b", "#ef8a62", "#fddbc7", "#f7f7f7", "#d1e5f0", "#67a9cf", "#2166ac"];

  function tableRows(run) {
    const L = run.lesions, rows = [];
    for (let i = 0; i < L.key.length; i++) {
      const row = { i, key: L.key[i], plan: L.plan[i], layers: L.layers[i], size: L.size[i], d1: L.d1[i], dk: L.dk[i],
        lost: L.lost[i], gained: L.gained[i], p: L.p[i], q: L.q[i], sig: !!L.sig[i], near: L.near[i] };
      L.cls[i].forEach((v, c) => { row["c" + c] = v; });
      rows.push(row);
    }
    return rows;
  }

  function buildRun(r) {
    const run = DATA.runs[r], view = document.getElementById("view-run-" + r);
    const I = run.intact, classes = run.classes;
    chart(view.querySelector(".chart-intact"), {
      tooltip: { trigger: "axis" }, legend: { top: 0 },
      grid: { left: 50, right: 10, top: 30, bottom: 50 },
      xAxis: { type: "category", data: classes, axisLabel: { rotate: classes.some((c) => c.length > 3) ? 40 : 0 } },
      yAxis: { type: "value", name: "%", max: 100 },
      series: [{ name: "top-1", type: "bar", data: I.top1, itemStyle: { color: BLACK } },
               { name: "top-" + run.k, type: "bar", data: I.topk, itemStyle: { color: "#888" } }],
    }, "intact-" + r);

    const G = run.groups;
    state.tables["groups-" + r] = new Tabulator(view.querySelector(".group-table"), {
      data: G.plan.map((plan, g) => ({ plan, layers: G.layers[g], n: G.n[g], mean: G.mean[g], worst: G.worst[g], best: G.best[g], sig: G.sig[g] })),
      layout: "fitData", columns: [
        { title: "plan", field: "plan" }, { title: "layers", field: "layers" },
        { title: "lesions", field: "n", hozAlign: "right", sorter: "number" },
        { title: "mean Δ top-1", field: "mean", hozAlign: "right", sorter: "number", formatter: (c) => signed(c.getValue()) },
        { title: "worst", field: "worst", hozAlign: "right", sorter: "number", formatter: (c) => signed(c.getValue()) },
        { title: "best", field: "best", hozAlign: "right", sorter: "number", formatter: (c) => signed(c.getValue()) },
        { title: "✓ (BH)", field: "sig", hozAlign: "right", sorter: "number" },
      ] });

    const num = (title, field, filter, formatter) => ({ title, field, hozAlign: "right", sorter: "number", headerFilter: filter ? "number" : undefined,
      headerFilterFunc: filter ? "<=" : undefined, headerFilterPlaceholder: filter ? "≤" : undefined, formatter, headerSortStartingDir: "asc" });
    const pp = (cell) => signed(cell.getValue());
    const columns = [
      { title: "lesion", field: "key", headerFilter: "input", frozen: true },
      { title: "plan", field: "plan", headerFilter: "input" },
      { title: "layers", field: "layers", headerFilter: "input" },
      num("units", "size"),
      num("Δ top-1", "d1", true, pp),
      num("Δ top-" + run.k, "dk", true, pp),
      num("lost", "lost"), num("gained", "gained"),
      num("p", "p", true, (c) => pfmt(c.getValue())),
      num("q (BH)", "q", true, (c) => pfmt(c.getValue())),
      { title: "✓", field: "sig", formatter: "tickCross", hozAlign: "center", headerFilter: "tickCross", headerFilterParams: { tristate: true }, headerFilterEmptyCheck: (v) => v === null },
      num("near-ties", "near"),
      { title: "Δ top-1 per class (pp)", columns: classes.map((name, c) => num(name, "c" + c, false, pp)) },
    ];
    const table = new Tabulator(view.querySelector(".lesion-table"), {
      data: tableRows(run), index: "i", columns, height: "440px", layout: "fitData",
      initialSort: [{ column: "d1", dir: "asc" }], placeholder: "no lesion matches the filters",
    });
    table.on("rowClick", (e, row) => { location.hash = "#run/" + r + "/lesion/" + encodeURIComponent(row.getData().key); });
    state.tables["lesions-" + r] = table;

    const heat = run.heatmap, cells = [];
    heat.forEach((li, x) => run.lesions.cls[li].forEach((v, y) => { if (v !== null) cells.push([x, y, v]); }));
    const m = maxAbs(heat.map((li) => run.lesions.cls[li]));
    const window_ = Math.min(100, 100 * 150 / Math.max(1, heat.length));
    const heatChart = chart(view.querySelector(".chart-heatmap"), {
      tooltip: { position: "top", formatter: (p) => {
        const li = heat[p.data[0]];
        return `lesion <b>${run.lesions.key[li]}</b><br>class <b>${classes[p.data[1]]}</b>: ${signed(p.data[2])} pp` +
          `<br>(intact ${fmt(I.top1[p.data[1]])} %)`;
      } },
      grid: { left: 70, right: 20, top: 10, bottom: 110 },
      xAxis: { type: "category", data: heat.map((li) => run.lesions.key[li]), axisLabel: { rotate: 60, fontSize: 10 }, splitArea: { show: false } },
      yAxis: { type: "category", data: classes, name: "class" },
      visualMap: { min: -m, max: m, calculable: true, orient: "horizontal", left: "center", bottom: 0, itemHeight: 160,
        text: ["+" + fmt(m, 1) + " pp", "−" + fmt(m, 1) + " pp"], inRange: { color: diverging } },
      dataZoom: heat.length > 150 ? [{ type: "slider", xAxisIndex: 0, start: 0, end: window_, bottom: 38, height: 16 }, { type: "inside", xAxisIndex: 0 }] : [],
      series: [{ type: "heatmap", data: cells, emphasis: { itemStyle: { borderColor: "#000", borderWidth: 1 } } }],
    }, "heatmap-" + r);
    heatChart.on("click", (p) => { location.hash = "#run/" + r + "/lesion/" + encodeURIComponent(run.lesions.key[heat[p.data[0]]]); });
  }

  function thumbs(run, samples, total, what) {
    const box = el("div");
    const sprite = run.sprite;
    if (!sprite) { box.appendChild(el("p", { class: "hint" }, run.thumbnail_note || "")); return box; }
    box.appendChild(el("div", { class: "thumb-caption" }, `${what}: ${total} sample${total === 1 ? "" : "s"}` +
      (samples.length < total ? `, ${samples.length} shown` : "") + " (sample index and true class on hover)"));
    const grid = el("div", { class: "thumbs" }), S = DATA.sprites[sprite], zoom = Math.max(1, Math.round(48 / Math.max(S.w, S.h)));
    for (const s of samples) {
      const pos = S.index[String(s)];
      if (pos === undefined) continue;
      const t = el("span", { class: "thumb thumb-" + sprite, title: `sample ${s}, class ${run.classes[S.labels[String(s)]] ?? "?"}`, "data-sample": s });
      t.style.width = S.w * zoom + "px"; t.style.height = S.h * zoom + "px";
      t.style.backgroundSize = `${S.columns * S.w * zoom}px auto`;
      t.style.backgroundPosition = `-${(pos % S.columns) * S.w * zoom}px -${Math.floor(pos / S.columns) * S.h * zoom}px`;
      grid.appendChild(t);
    }
    box.appendChild(grid);
    return box;
  }

  function confusion(node, run, flat, title, xname, name) {
    const cells = [];
    let top = 1;
    for (let j = 0; j < flat.length; j += 3) { cells.push([flat[j + 1], flat[j], flat[j + 2]]); top = Math.max(top, flat[j + 2]); }
    chart(node, {
      title: { text: title, textStyle: { fontSize: 13 } },
      tooltip: { formatter: (p) => `true class <b>${run.classes[p.data[1]]}</b> → ${xname} <b>${run.classes[p.data[0]]}</b>: ${p.data[2]} samples` },
      grid: { left: 10, right: 10, top: 40, bottom: 40, containLabel: true },
      xAxis: { type: "category", data: run.classes, name: xname, nameLocation: "middle", nameGap: 28 },
      yAxis: { type: "category", data: run.classes, inverse: true },
      visualMap: { min: 0, max: top, show: false, inRange: { color: ["#fff5f0", "#fb6a4a", "#67000d"] } },
      series: [{ type: "heatmap", data: cells, label: { show: run.classes.length <= 12, fontSize: 10 } }],
    }, name);
  }

  function openLesion(r, key) {
    const run = DATA.runs[r], view = document.getElementById("view-run-" + r), box = view.querySelector(".lesion-view");
    const i = run.lesions.key.indexOf(key);
    box.hidden = false;
    box.replaceChildren();
    if (i < 0) { box.appendChild(el("p", { class: "note" }, `lesion ${key} is not in this report's table`)); return; }
    const L = run.lesions, B = run.bars, I = run.intact, classes = run.classes, d = run.detail[key];
    box.setAttribute("data-lesion", key);
    box.appendChild(el("h3", {}, `Lesion ${key}`));
    const facts = el("div", { class: "facts" });
    const fact = (label, value, field) => { const s = el("span", {}, label + ": "); s.appendChild(el("b", { "data-field": field }, value)); facts.appendChild(s); };
    fact("plan", L.plan[i], "plan"); fact("layers", L.layers[i], "layers"); fact("units", String(L.size[i]), "size");
    fact("Δ top-1", signed(L.d1[i]) + " pp", "d1"); fact("Δ top-" + run.k, signed(L.dk[i]) + " pp", "dk");
    fact("lost", String(L.lost[i]), "lost"); fact("gained", String(L.gained[i]), "gained");
    fact("McNemar p", pfmt(L.p[i]), "p"); fact("BH q", pfmt(L.q[i]) + (L.sig[i] ? " ✓" : ""), "q"); fact("near-ties", String(L.near[i]), "near");
    box.appendChild(facts);

    const correct = classes.map((_, c) => I.correct[c] - B.lost[i][c] + B.gained[i][c]);
    const row = el("div", { class: "row" });
    const bars = el("div", { class: "chart chart-bars" });
    row.appendChild(bars);
    const perClass = el("div", { class: "lesion-classes" });
    row.appendChild(perClass);
    box.appendChild(row);
    chart(bars, {
      title: { text: "per class: correct / lost / gained samples", textStyle: { fontSize: 13 } },
      tooltip: { trigger: "axis" }, legend: { top: 26 },
      grid: { left: 50, right: 10, top: 64, bottom: 40 },
      xAxis: { type: "category", data: classes }, yAxis: { type: "value", name: "samples" },
      series: [
        { name: "correct", type: "bar", stack: "s", data: correct, itemStyle: { color: BLACK } },
        { name: "lost", type: "bar", stack: "s", data: B.lost[i], itemStyle: { color: RED } },
        { name: "gained", type: "bar", stack: "g", data: B.gained[i].map((v) => -v), itemStyle: { color: GREEN } },
      ],
    }, "bars");
    const classRows = classes.map((name, c) => ({ cls: name, n: I.n[c], correct: correct[c], lost: B.lost[i][c], gained: B.gained[i][c],
      change: L.cls[i][c], q: B.q[i][c], sig: !!B.sig[i][c] }));
    state.tables.lesionClasses = new Tabulator(perClass, {
      data: classRows, layout: "fitData", columns: [
        { title: "class", field: "cls" }, { title: "n", field: "n", hozAlign: "right" },
        { title: "correct", field: "correct", hozAlign: "right" }, { title: "lost", field: "lost", hozAlign: "right" },
        { title: "gained", field: "gained", hozAlign: "right" },
        { title: "Δ top-1 (pp)", field: "change", hozAlign: "right", formatter: (c) => signed(c.getValue()) },
        { title: "q (BH)", field: "q", hozAlign: "right", formatter: (c) => pfmt(c.getValue()) },
        { title: "✓", field: "sig", formatter: "tickCross", hozAlign: "center" },
      ] });

    if (d) {
      const conf = el("div", { class: "row" });
      const a = el("div", { class: "chart chart-confusion" }), b = el("div", { class: "chart chart-confusion" });
      conf.appendChild(a); conf.appendChild(b);
      box.appendChild(el("h4", {}, "Where the lost samples went, and where the gained ones came from"));
      box.appendChild(conf);
      if (d.lost_cells * 3 > d.lost_to.length || d.gained_cells * 3 > d.gained_from.length) {
        box.appendChild(el("p", { class: "hint" }, `The largest cells only: ${d.lost_to.length / 3} of ${d.lost_cells} (lost), ${d.gained_from.length / 3} of ${d.gained_cells} (gained).`));
      }
      confusion(a, run, d.lost_to, "lost: true class (rows) → top-1 after the lesion", "top-1 after", "lost");
      confusion(b, run, d.gained_from, "gained: true class (rows) → intact top-1", "intact top-1", "gained");
      box.appendChild(el("h4", {}, "Samples"));
      box.appendChild(thumbs(run, d.thumbs.lost, d.thumbs.n_lost, "lost"));
      box.appendChild(thumbs(run, d.thumbs.gained, d.thumbs.n_gained, "gained"));
    } else {
      box.appendChild(el("p", { class: "hint" }, "No confusion change or thumbnails for this lesion (the report keeps them for the lesions with the largest change; see the notes above)."));
    }
    pairsOf(run, r, i, box);
    box.scrollIntoView({ block: "start" });
  }

  function pairsOf(run, r, i, box) {
    const P = run.pairs, L = run.lesions;
    const link = (k) => { const a = el("a", { href: "#run/" + r + "/lesion/" + encodeURIComponent(L.key[k]) }, L.key[k]); return a; };
    const asPair = P.pair.indexOf(i);
    const within = [];
    P.pair.forEach((p, j) => { if (P.a[j] === i || P.b[j] === i) within.push(j); });
    if (asPair < 0 && !within.length) return;
    box.appendChild(el("h4", {}, "Pairs: redundancy and synergy (synergy = pair − (single a + single b), top-1 pp; negative: the pair hurts more than its parts add up to)"));
    const rows = (asPair >= 0 ? [asPair] : within);
    const t = el("table", { class: "plain pairs" });
    const head = el("tr");
    ["pair", "single a", "single b", "Δ pair", "Δ a + Δ b", "synergy"].forEach((h) => head.appendChild(el("th", {}, h)));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    for (const j of rows) {
      const tr = el("tr");
      [P.pair[j], P.a[j], P.b[j]].forEach((k) => tr.appendChild(el("td")).appendChild(link(k)));
      tr.appendChild(el("td", { class: "num" }, signed(L.d1[P.pair[j]])));
      tr.appendChild(el("td", { class: "num" }, signed(L.d1[P.a[j]] + L.d1[P.b[j]])));
      tr.appendChild(el("td", { class: "num" }, signed(P.syn[j])));
      body.appendChild(tr);
    }
    box.appendChild(t);
    if (asPair >= 0) {
      box.appendChild(el("p", { class: "hint" }, "per class synergy: " +
        run.classes.map((c, k) => `${c} ${signed(P.cls[asPair][k])}`).join(", ")));
    }
  }

  const columnLabel = (col) => (col.metric === "top1" ? "top-1" : col.metric) + ", " + (col.class < 0 ? "overall" : "class " + col.name) + " (" + col.unit + ")";

  function buildShapley(n) {
    const S = DATA.shapley[n], view = document.getElementById("view-shapley-" + n);
    if (!S.ok) return;
    const select = view.querySelector(".shapley-column");
    S.columns.forEach((col, j) => select.appendChild(el("option", { value: String(j) }, columnLabel(col))));
    const digits = (col) => (col.unit === "pp" ? 2 : 4);
    const rowsOf = (j) => S.players.map((player, i) => ({ i, player, value: S.columns[j].value[i], se: S.columns[j].se[i], single: S.columns[j].single[i] }));
    const num = (title, field, d, filter) => ({ title, field, hozAlign: "right", sorter: "number", headerFilter: filter ? "number" : undefined,
      headerFilterFunc: filter ? ">=" : undefined, headerFilterPlaceholder: filter ? "≥" : undefined, formatter: (c) => (field === "se" ? fmt(c.getValue(), d()) : signed(c.getValue(), d())) });
    let current = 0;
    const d = () => digits(S.columns[current]);
    const table = new Tabulator(view.querySelector(".shapley-table"), {
      data: rowsOf(0), index: "i", layout: "fitData", height: S.players.length > 15 ? "400px" : undefined,
      initialSort: [{ column: "value", dir: "desc" }], placeholder: "no player matches the filters",
      columns: [{ title: "player", field: "player", headerFilter: "input" }, num("Shapley value", "value", d, true),
        num("± SE", "se", d, false), num("leave-one-out", "single", d, true)],
    });
    state.tables["shapley-" + n] = table;
    const plot = chart(view.querySelector(".chart-shapley"), {}, "shapley-" + n);
    const pairRows = (j) => S.pairs.a.map((a, k) => ({ k, a, b: S.pairs.b[k], value: S.pairs.columns[j].value[k], se: S.pairs.columns[j].se[k], pair: S.pairs.columns[j].pair[k] }));
    let pairs = null;
    if (S.pairs.a.length) {
      pairs = new Tabulator(view.querySelector(".shapley-pairs"), {
        data: pairRows(0), index: "k", layout: "fitData", columns: [{ title: "player a", field: "a", headerFilter: "input" }, { title: "player b", field: "b", headerFilter: "input" },
          num("interaction index", "value", d, false), num("± SE", "se", d, false), num("pair alone", "pair", d, false)],
      });
      state.tables["shapley-pairs-" + n] = pairs;
    }
    const show = (j) => {
      current = j;
      const col = S.columns[j], order = S.players.map((_, i) => i).sort((a, b) => (col.value[b] ?? -Infinity) - (col.value[a] ?? -Infinity));
      const many = order.length > 60;
      plot.setOption({
        title: { text: "Shapley value ± SE and leave-one-out, " + columnLabel(col), textStyle: { fontSize: 13 } },
        tooltip: { trigger: "axis", formatter: (ps) => {
          const i = order[ps[0].dataIndex];
          return `<b>${S.players[i]}</b><br>Shapley ${signed(col.value[i], d())} ± ${fmt(col.se[i], d())} ${col.unit}<br>leave-one-out ${signed(col.single[i], d())} ${col.unit}`;
        } },
        legend: { top: 24, data: ["Shapley value", "leave-one-out"] },
        grid: { left: 60, right: 20, top: 60, bottom: many ? 110 : 80 },
        xAxis: { type: "category", data: order.map((i) => S.players[i]), axisLabel: { rotate: 60, fontSize: 10 } },
        yAxis: { type: "value", name: col.unit },
        dataZoom: many ? [{ type: "slider", start: 0, end: 100 * 60 / order.length, bottom: 10, height: 16 }, { type: "inside" }] : [],
        series: [
          { name: "Shapley value", type: "bar", data: order.map((i) => col.value[i]), itemStyle: { color: "#3b6ea5" } },
          { name: "± SE", type: "custom", data: order.map((i, x) => [x, col.value[i] - col.se[i], col.value[i] + col.se[i]]), encode: { x: 0, y: [1, 2] }, z: 10,
            renderItem: (params, api) => {
              const lo = api.coord([api.value(0), api.value(1)]), hi = api.coord([api.value(0), api.value(2)]), half = api.size([1, 0])[0] * 0.15;
              const style = { stroke: BLACK, lineWidth: 1.2 };
              return { type: "group", children: [
                { type: "line", shape: { x1: lo[0], y1: lo[1], x2: hi[0], y2: hi[1] }, style },
                { type: "line", shape: { x1: lo[0] - half, y1: lo[1], x2: lo[0] + half, y2: lo[1] }, style },
                { type: "line", shape: { x1: hi[0] - half, y1: hi[1], x2: hi[0] + half, y2: hi[1] }, style }] };
            } },
          { name: "leave-one-out", type: "scatter", symbol: "diamond", symbolSize: 11, data: order.map((i) => col.single[i]), itemStyle: { color: RED }, z: 11 },
        ],
      }, true);
      state.shapleyColumn = j;
    };
    select.addEventListener("change", () => {
      show(Number(select.value));
      table.replaceData(rowsOf(current));
      if (pairs) pairs.replaceData(pairRows(current));
    });
    show(0);
  }

  function buildImprove(n) {
    const V = DATA.improve[n], view = document.getElementById("view-improve-" + n);
    if (!V.ok) return;
    const C = V.classes;
    chart(view.querySelector(".chart-improve"), {
      title: { text: "top-1 change of the chosen lesion: validation (chosen on) vs test (reported once)", textStyle: { fontSize: 13 } },
      tooltip: { trigger: "axis", formatter: (ps) => {
        const c = ps[0].dataIndex, held = C.held[c] === null ? "" : `<br>held on test: ${C.held[c] ? "yes" : "no"}`;
        return `<b>${C.name[c]}</b><br>validation ${signed(C.val_change[c])} pp<br>test ${signed(C.test_change[c])} pp (McNemar p ${pfmt(C.p[c])})${held}`;
      } },
      legend: { top: 24 }, grid: { left: 60, right: 20, top: 60, bottom: 50 },
      xAxis: { type: "category", data: C.name, axisLabel: { rotate: C.name.some((c) => c.length > 3) ? 40 : 0 } },
      yAxis: { type: "value", name: "pp" },
      series: [{ name: "validation", type: "bar", data: C.val_change, itemStyle: { color: "#888" } },
               { name: "test", type: "bar", data: C.test_change, itemStyle: { color: BLACK } }],
    }, "improve-" + n);
    const pct = (c) => fmt(c.getValue()), pp = (c) => signed(c.getValue());
    const num = (title, field, formatter) => ({ title, field, hozAlign: "right", sorter: "number", formatter });
    state.tables["improve-" + n] = new Tabulator(view.querySelector(".improve-table"), {
      data: C.name.map((name, c) => ({ c, name, vi: C.val_intact[c], vl: C.val_lesion[c], vc: C.val_change[c], ti: C.test_intact[c], tl: C.test_lesion[c],
        tc: C.test_change[c], lost: C.lost[c], gained: C.gained[c], p: C.p[c], q: C.q[c], held: C.held[c] === null ? null : !!C.held[c] })),
      index: "c", layout: "fitData", columns: [
        { title: "class", field: "name", headerFilter: "input" },
        { title: "validation (chosen on)", columns: [num("intact %", "vi", pct), num("lesioned %", "vl", pct), num("Δ pp", "vc", pp)] },
        { title: "test (reported once)", columns: [num("intact %", "ti", pct), num("lesioned %", "tl", pct), num("Δ pp", "tc", pp),
          num("lost", "lost"), num("gained", "gained"), num("McNemar p", "p", (c) => pfmt(c.getValue())), num("q (BH)", "q", (c) => pfmt(c.getValue()))] },
        { title: "held", field: "held", hozAlign: "center", formatter: (c) => (c.getValue() === null ? "–" : c.getValue() ? "✓" : "✗") },
      ] });
    const T = V.steps;
    if (T.step) {
      state.tables["improve-steps-" + n] = new Tabulator(view.querySelector(".improve-steps"), {
        data: T.step.map((step, j) => ({ j, step, lesion: T.lesion[j], score: T.score[j], feasible: T.feasible[j] })),
        index: "j", layout: "fitData", height: T.step.length > 15 ? "360px" : undefined,
        initialSort: [{ column: "score", dir: "desc" }, { column: "step", dir: "asc" }],
        columns: [num("step", "step"), { title: "lesion", field: "lesion", headerFilter: "input" }, num("score %", "score", pct),
          { title: "feasible", field: "feasible", formatter: "tickCross", hozAlign: "center" }] });
    }
  }

  function route() {
    const hash = decodeURIComponent(location.hash.slice(1));
    const m = /^run\/(\d+)(?:\/lesion\/(.+))?$/.exec(hash);
    const a = /^(shapley|improve)\/(\d+)$/.exec(hash);
    const home = DATA.study ? "study" : DATA.improve.length ? "improve/0" : DATA.shapley.length ? "shapley/0" : "run/0";
    const here = m ? "run/" + m[1] : a ? a[1] + "/" + a[2] : home;
    const target = here === "study" ? "view-study" : "view-" + here.replace("/", "-");
    document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.id === target));
    document.querySelectorAll("header nav a").forEach((link) => link.classList.toggle("active", link.getAttribute("href") === "#" + here));
    const [kind, index] = here.split("/");
    const r = kind === "run" ? Number(index) : null;
    if (r !== null && DATA.runs[r]) {
      if (!state.built[r]) { state.built[r] = true; buildRun(r); }
      if (m && m[2]) openLesion(r, m[2]);
    }
    if ((kind === "shapley" || kind === "improve") && DATA[kind][Number(index)] && !state.built[here]) {
      state.built[here] = true;
      (kind === "shapley" ? buildShapley : buildImprove)(Number(index));
    }
    state.view = target;
  }
  window.addEventListener("hashchange", route);
  route();
})();
