/* The operator dashboard: polls GET /api/dashboard/summary (the session's
   fleets) and redraws five Chart.js charts in place. No external resources. */
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root || typeof Chart === "undefined") { return; }
  var url = root.dataset.url;
  var refreshMs = Math.max(2, Number(root.dataset.refreshS) || 10) * 1000;
  var timeZone = root.dataset.timeZone || undefined;
  var clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", timeZone: timeZone });
  var weekday = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", timeZone: "UTC" });
  var colors = { requested: "#417690", acknowledged: "#5fad56", planned: "#f2c14e", latency: "#c0392b", grey: "#999" };
  var state = { updates: 0, errors: 0, charts: {} };
  window.v2gDashboard = state;
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;

  function chart(id, config) {
    state.charts[id] = new Chart(document.getElementById(id), config);
    return state.charts[id];
  }

  var power = chart("chart-power", {
    type: "line",
    data: { labels: [], datasets: [
      { label: "requested kW", data: [], borderColor: colors.requested, backgroundColor: colors.requested, stepped: true, pointRadius: 0 },
      { label: "acknowledged kW", data: [], borderColor: colors.acknowledged, backgroundColor: colors.acknowledged, stepped: true, pointRadius: 0 }
    ] },
    options: { scales: { y: { title: { display: true, text: "kW (+ = to the grid)" } } } }
  });
  var acks = chart("chart-acks", {
    type: "bar",
    data: { labels: [], datasets: [
      { label: "ack rate %", data: [], backgroundColor: colors.acknowledged, yAxisID: "rate" },
      { label: "mean latency ms", data: [], backgroundColor: colors.latency, yAxisID: "latency" }
    ] },
    options: { scales: {
      rate: { position: "left", min: 0, max: 100, title: { display: true, text: "%" } },
      latency: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "ms" } }
    } }
  });
  var vehicles = chart("chart-vehicles", {
    type: "bar",
    data: { labels: ["active", "online", "plugged in", "dispatched"], datasets: [
      { label: "vehicles", data: [0, 0, 0, 0], backgroundColor: [colors.grey, colors.requested, colors.planned, colors.acknowledged] }
    ] },
    options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } }
  });
  var plan = chart("chart-plan", {
    type: "bar",
    data: { labels: [], datasets: [
      { type: "bar", label: "planned kW", data: [], backgroundColor: colors.planned },
      { type: "line", label: "requested kW", data: [], borderColor: colors.requested, backgroundColor: colors.requested, pointRadius: 0, spanGaps: false },
      { type: "line", label: "acknowledged kW", data: [], borderColor: colors.acknowledged, backgroundColor: colors.acknowledged, pointRadius: 0, spanGaps: false }
    ] },
    options: { scales: { y: { title: { display: true, text: "kW" } } } }
  });
  var co2 = chart("chart-co2", {
    type: "bar",
    data: { labels: [], datasets: [{ label: "kg CO2 avoided", data: [], backgroundColor: colors.acknowledged }] },
    options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } }
  });

  function text(id, value) { document.getElementById(id).textContent = value; }

  function draw(s) {
    power.data.labels = s.power.map(function (p) { return clock.format(new Date(p.at)); });
    power.data.datasets[0].data = s.power.map(function (p) { return p.requested_kw; });
    power.data.datasets[1].data = s.power.map(function (p) { return p.acknowledged_kw; });
    text("dash-hours", s.window.hours);

    acks.data.labels = s.signal_types.map(function (t) { return t.signal_type; });
    acks.data.datasets[0].data = s.signal_types.map(function (t) { return t.ack_rate === null ? null : t.ack_rate * 100; });
    acks.data.datasets[1].data = s.signal_types.map(function (t) { return t.latency_avg_ms; });

    var v = s.vehicles;
    vehicles.data.datasets[0].data = [v.total, v.online, v.plugged_in, v.dispatched];
    text("tile-total", v.total); text("tile-online", v.online);
    text("tile-plugged", v.plugged_in); text("tile-dispatched", v.dispatched);

    var slots = s.plan ? s.plan.slots : [];
    plan.data.labels = slots.map(function (r) { return r.timeslot.slice(11, 16); });
    plan.data.datasets[0].data = slots.map(function (r) { return r.planned_kw; });
    plan.data.datasets[1].data = slots.map(function (r) { return r.requested_kw; });
    plan.data.datasets[2].data = slots.map(function (r) { return r.acknowledged_kw; });
    document.getElementById("plan-none").hidden = !!s.plan;
    text("plan-label", s.plan ? "(" + s.plan.day + ", version " + s.plan.version + ")" : "");

    co2.data.labels = s.co2.days.map(function (d) { return weekday.format(new Date(d.day + "T00:00:00Z")); });
    co2.data.datasets[0].data = s.co2.days.map(function (d) { return d.co2_avoided_g / 1000; });
    text("tile-co2", (s.co2.co2_avoided_g / 1000).toFixed(1));

    Object.keys(state.charts).forEach(function (id) { state.charts[id].update("none"); });
  }

  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (summary) {
        draw(summary);
        state.updates += 1;
        state.last = summary;
        text("dash-updated", new Date().toLocaleTimeString());
        document.getElementById("dash-error").hidden = true;
      })
      .catch(function (error) {
        state.errors += 1;
        var note = document.getElementById("dash-error");
        note.textContent = "could not refresh: " + error.message;
        note.hidden = false;
      })
      .finally(function () { window.setTimeout(refresh, refreshMs); });
  }
  refresh();
})();
