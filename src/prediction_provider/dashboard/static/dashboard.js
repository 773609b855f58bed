// The dashboard's only script of its own: CSRF header, charts, live pause, confirmations, theme.
// No inline script exists on any page (CSP script-src 'self'); data comes from data-* attributes.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every htmx request carries the synchronizer token (set here, not in hx-headers, so htmx 4's
  // explicit inheritance cannot silently drop it).
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  var PALETTE = ["#3b82f6", "#ef4444", "#10b981", "#f59e0b", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16"];

  function drawChart(el) {
    if (el.dataset.drawn === el.dataset.chart) return;
    var spec;
    try { spec = JSON.parse(el.dataset.chart); } catch (e) { return; }
    el.dataset.drawn = el.dataset.chart;
    el.textContent = "";
    var x = spec.x || [];
    el.dataset.points = String(x.length);
    if (!x.length || typeof uPlot === "undefined") {
      var empty = document.createElement("p");
      empty.className = "chart-empty";
      empty.textContent = spec.empty || "No data in this window yet.";
      el.appendChild(empty);
      return;
    }
    var series = [{ label: spec.x_label || "time" }];
    var data = [x];
    (spec.series || []).forEach(function (s, i) {
      var colour = s.colour || PALETTE[i % PALETTE.length];
      var options = { label: s.label, stroke: colour, width: 2, spanGaps: true };
      if (s.kind === "points") {
        options.paths = function () { return null; };
        options.points = { show: true, size: 9, stroke: colour, fill: colour };
      } else if (s.kind === "bars" && uPlot.paths && uPlot.paths.bars) {
        options.paths = uPlot.paths.bars({ size: [0.6, 60] });
        options.fill = colour;
      }
      series.push(options);
      data.push(s.values);
    });
    var width = Math.max(240, el.clientWidth || 600);
    var options = {
      width: width,
      height: spec.height || 200,
      series: series,
      scales: { x: { time: spec.time !== false } },
      axes: spec.axes === false ? [{ show: false }, { show: false }] : [{}, { label: spec.y_label || "" }],
      legend: { show: spec.legend !== false },
    };
    if (spec.categories) {
      var names = spec.categories;
      options.scales.x = { time: false, range: function () { return [-0.5, names.length - 0.5]; } };
      options.axes[0] = {
        splits: function () { return names.map(function (_, i) { return i; }); },
        values: function (u, splits) { return splits.map(function (i) { return names[i] || ""; }); },
      };
    }
    new uPlot(options, data, el);
  }

  function drawCharts(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(drawChart);
  }

  // Live pages: "Pause" stops applying updates (the stream stays open), "Resume" applies them again.
  var paused = false;
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".live-toggle") : null;
    if (!button) return;
    paused = !paused;
    button.setAttribute("aria-pressed", paused ? "true" : "false");
    button.textContent = paused ? "Resume" : "Pause";
    document.querySelectorAll(".live-state").forEach(function (s) { s.textContent = paused ? "Paused" : "Live"; });
  });

  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    if (event.detail && event.detail.type === "signed-out") {
      event.preventDefault();
      signedOut(event.target);
      return;
    }
    if (paused) event.preventDefault();
  });

  // No element swaps "signed-out", so htmx-ext-sse never listens for it: listen on each stream as it
  // opens, and close the source before the server ends the stream, so the browser does not
  // reconnect (a refused reconnect is a console error).
  document.addEventListener("htmx:sseOpen", function (event) {
    var source = event.detail && event.detail.source;
    if (!source || source.ppWatched) return;
    source.ppWatched = true;
    var target = event.target;
    source.addEventListener("signed-out", function () { source.close(); signedOut(target); });
  });

  // The session ended (signed out elsewhere, revoked, expired): stop listening, keep what is shown.
  function signedOut(target) {
    var source = target && target.closest ? target.closest("[sse-connect]") : null;
    if (source && source.parentNode) {
      var still = document.createElement("div");
      still.className = source.className;
      while (source.firstChild) still.appendChild(source.firstChild);
      source.replaceWith(still);
    }
    var banner = document.getElementById("signed-out");
    if (banner) banner.hidden = false;
    document.querySelectorAll(".live-state").forEach(function (s) { s.textContent = "Signed out"; });
    document.body.dataset.session = "ended";
  }

  // Forms that change something important ask first; the question names the change.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // Theme: the system's by default; a choice made here is kept in this browser.
  function applyTheme(theme) {
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
  }
  try { applyTheme(window.localStorage.getItem("pp-theme")); } catch (e) { /* storage disabled */ }
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".theme-toggle") : null;
    if (!button) return;
    var dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : window.matchMedia("(prefers-color-scheme: dark)").matches;
    var next = dark ? "light" : "dark";
    applyTheme(next);
    try { window.localStorage.setItem("pp-theme", next); } catch (e) { /* storage disabled */ }
  });

  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  document.addEventListener("htmx:afterSwap", function (event) { drawCharts(event.target); });
  document.addEventListener("htmx:sseMessage", function (event) { drawCharts(event.target); });
})();
