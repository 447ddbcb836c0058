/* The jobs dashboard: renders the snapshot embedded in the page, then polls the JSON
   document and updates the page in place (no reload). No dependencies. */
(function () {
  "use strict";

  var root = document.getElementById("content-main");
  var url = root.dataset.url;
  var every = Number(root.dataset.refresh) || 3000;
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (attrs[key] !== null && attrs[key] !== undefined) node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) {
      node.append(child instanceof Node ? child : String(child === null ? "—" : child));
    });
    return node;
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function link(href, text) {
    return href ? el("a", {href: href}, [text]) : text;
  }

  function number(value) {
    return value === null || value === undefined ? "—" : Number(value).toLocaleString();
  }

  /* Fill a table's body with one row per item, or a line saying there is nothing. */
  function fill(id, items, empty, cells) {
    var table = document.getElementById(id);
    var body = table.tBodies[0];
    var width = table.tHead.rows[0].cells.length;
    if (!items || !items.length) {
      body.replaceChildren(el("tr", {}, [el("td", {colspan: width, "class": "jobs-empty"}, [empty])]));
      return;
    }
    body.replaceChildren.apply(body, items.map(function (item) {
      return el("tr", {}, cells(item).map(function (cell) {
        var numeric = typeof cell === "number" || (cell && cell.numeric);
        return el("td", numeric ? {"class": "jobs-num"} : {}, [cell && cell.numeric ? cell.text : (typeof cell === "number" ? number(cell) : cell)]);
      }));
    }));
  }

  function num(text) { return {numeric: true, text: text === null || text === undefined ? "—" : text}; }

  function cards(data) {
    Object.keys(data.totals).forEach(function (key) {
      var card = document.getElementById("jobs-card-" + key);
      if (!card) return;
      var value = data.totals[key];
      card.hidden = value === null;
      card.classList.toggle("jobs-nonzero", Boolean(value));
      document.getElementById("jobs-total-" + key).textContent = number(value);
      var href = data.links[card.dataset.link];
      if (href) card.setAttribute("href", href);
      else card.removeAttribute("href");
    });
  }

  function chart(series) {
    var node = document.getElementById("jobs-chart");
    var keys = ["succeeded", "failed", "retried"];
    var n = series.succeeded.length;
    var left = 44, right = 712, top = 10, bottom = 160;
    var peak = Math.max.apply(null, keys.map(function (k) { return Math.max.apply(null, series[k]); }));
    var max = niceCeiling(Math.max(peak, 2));
    var x = function (i) { return left + (right - left) * i / Math.max(n - 1, 1); };
    var y = function (v) { return bottom - (bottom - top) * v / max; };
    var parts = [node.querySelector("title")];
    [0, max / 2, max].forEach(function (v) {
      parts.push(svg("line", {x1: left, x2: right, y1: y(v), y2: y(v), "class": "jobs-grid"}));
      parts.push(svg("text", {x: left - 6, y: y(v) + 4, "text-anchor": "end", "class": "jobs-axis"}, number(v)));
    });
    [[0, "−" + n + " min"], [Math.floor(n / 2), "−" + Math.ceil(n / 2) + " min"], [n - 1, "now"]].forEach(function (tick) {
      parts.push(svg("text", {x: x(tick[0]), y: bottom + 18, "text-anchor": tick[0] ? (tick[0] === n - 1 ? "end" : "middle") : "start", "class": "jobs-axis"}, tick[1]));
    });
    keys.forEach(function (key) {
      var points = series[key].map(function (v, i) { return x(i).toFixed(1) + "," + y(v).toFixed(1); });
      parts.push(svg("polyline", {points: points.join(" "), "class": "jobs-line-" + key, "data-series": key}));
    });
    var step = (right - left) / Math.max(n - 1, 1);
    for (var i = 0; i < n; i++) {
      var ago = n - 1 - i;
      var hover = svg("rect", {x: x(i) - step / 2, y: top, width: step, height: bottom - top, "class": "jobs-hover"});
      hover.append(svg("title", {}, (ago ? ago + " min ago" : "this minute") + ": " +
        series.succeeded[i] + " succeeded, " + series.failed[i] + " failed, " + series.retried[i] + " retried"));
      parts.push(hover);
    }
    node.replaceChildren.apply(node, parts);
  }

  /* The chart's top: 2, 4 or 10 times a power of ten, so that its middle line is whole. */
  function niceCeiling(value) {
    for (var magnitude = 1; ; magnitude *= 10) {
      if (2 * magnitude >= value) return 2 * magnitude;
      if (4 * magnitude >= value) return 4 * magnitude;
      if (10 * magnitude >= value) return 10 * magnitude;
    }
  }

  function load(worker) {
    var bar = el("span", {"class": "jobs-load", title: worker.active + " of " + worker.concurrency + " busy"},
      [el("span", {style: "width:" + Math.min(worker.load || 0, 100) + "%"})]);
    return el("span", {}, [bar, worker.active + "/" + worker.concurrency]);
  }

  /* A running job's progress bar when it reports current/total, else its state. */
  function progress(job) {
    var done = job.progress;
    if (!done) return job.state;
    var bar = el("span", {"class": "jobs-progress", role: "progressbar", "aria-valuemin": 0,
      "aria-valuemax": done.total, "aria-valuenow": done.current},
      [el("span", {style: "width:" + done.percent + "%"})]);
    return el("span", {title: job.state}, [bar, el("span", {"class": "jobs-progress-text"},
      [done.current + " / " + done.total + " (" + done.percent + " %)"])]);
  }

  /* A worker's name, and the latest wait for its database if there was one lately. */
  function worker(w) {
    var name = link(w.url, w.hostname + (w.stopping ? " (stopping)" : ""));
    var wait = w.database_wait;
    if (!wait) return name;
    return el("span", {}, [name, el("span", {"class": "jobs-note", title: "from " + wait.since + " to " + wait.until},
      ["waited " + wait.text + " for its database, until " + wait.until])]);
  }

  /* A button that POSTs to a queue's pause or resume address (the page's CSRF token). */
  function control(action, label, queue) {
    var token = document.querySelector("#jobs-csrf input").cloneNode();
    return el("form", {method: "post", action: action, "class": "jobs-inline"},
      [token, el("button", {type: "submit", title: label + " queue " + queue + " on every worker"}, [label])]);
  }

  function render(data) {
    document.getElementById("jobs-updated").textContent = data.now;
    document.getElementById("jobs-broker").textContent = data.broker;
    cards(data);
    chart(data.throughput);
    var panel = document.getElementById("jobs-workers-panel");
    panel.hidden = data.workers === null;
    if (data.workers !== null) {
      fill("jobs-workers", data.workers, "No worker is online.", function (w) {
        return [worker(w), w.queues.join(", "),
                w.pool, num(load(w)), w.processed, num(w.seen_ago + " s ago")];
      });
    }
    var error = document.getElementById("jobs-queues-error");
    error.hidden = data.queues.available;
    error.textContent = data.queues.available ? "" : "The broker is unavailable: " + data.queues.error;
    fill("jobs-queues", data.queues.rows, "No queues.", function (q) {
      return [q.name, num(number(q.ready)), num(number(q.reserved)), num(number(q.delayed)),
              num(number(q.consumers)),
              q.pause_url ? el("span", {}, [control(q.pause_url, "Pause", q.name), control(q.resume_url, "Resume", q.name)]) : ""];
    });
    fill("jobs-running", data.running, "Nothing is running.", function (job) {
      return [link(job.url, job.job_id), job.name, progress(job), job.worker, job.started,
              num(job.runtime_text)];
    });
    fill("jobs-slowest", data.slowest, "No job finished in the last hour.", function (row) {
      return [link(row.url, row.name), row.runs, num(row.p50_text), num(row.p95_text), num(row.max_text)];
    });
    fill("jobs-failing", data.failing, "No job failed in the last hour.", function (row) {
      return [link(row.url, row.name), row.failed, row.runs, num(row.rate + " %")];
    });
  }

  function live(ok, why) {
    var badge = document.getElementById("jobs-live");
    badge.textContent = ok ? "live" : "offline — " + why + "; retrying";
    badge.classList.toggle("jobs-offline", !ok);
  }

  function poll() {
    if (document.hidden) {
      setTimeout(poll, every);
      return;
    }
    fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin", cache: "no-store"})
      .then(function (response) {
        if (response.status === 403) throw new Error("permission denied");
        if (!response.ok) throw new Error("HTTP " + response.status);
        if (response.redirected) throw new Error("logged out");
        return response.json();
      })
      .then(function (data) { render(data); live(true); })
      .catch(function (error) { live(false, error.message); })
      .finally(function () { setTimeout(poll, every); });
  }

  render(JSON.parse(document.getElementById("jobs-dashboard-data").textContent));
  setTimeout(poll, every);
})();
