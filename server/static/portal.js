// The portal's script: selection and bulk bars, dropdowns, interactive charts (uPlot).
// Everything works without it (plain forms and links); this only makes it quicker.
(function () {
  "use strict";

  // ── selection and bulk actions ────────────────────────────────────────────────────────
  function scopeOf(element) {
    return element.closest("#results, #task-results, main") || document;
  }

  function refreshBulk(scope) {
    var rows = scope.querySelectorAll("[data-select-row]");
    var chosen = 0;
    rows.forEach(function (box) { if (box.checked) { chosen += 1; } });
    scope.querySelectorAll("[data-bulk-count]").forEach(function (label) {
      label.textContent = chosen ? chosen + " selected" : label.getAttribute("data-empty") || label.textContent;
    });
    scope.querySelectorAll("[data-bulk-action]").forEach(function (button) { button.disabled = chosen === 0; });
    scope.querySelectorAll("[data-select-all]").forEach(function (all) {
      all.checked = rows.length > 0 && chosen === rows.length;
      all.indeterminate = chosen > 0 && chosen < rows.length;
    });
    scope.querySelectorAll("[data-bulk]").forEach(function (bar) { bar.classList.toggle("has-selection", chosen > 0); });
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (!(target instanceof HTMLInputElement)) { return; }
    if (target.hasAttribute("data-select-all")) {
      var scope = scopeOf(target);
      scope.querySelectorAll("[data-select-row]").forEach(function (box) { box.checked = target.checked; });
      refreshBulk(scope);
    } else if (target.hasAttribute("data-select-row")) {
      refreshBulk(scopeOf(target));
    }
  });

  function initBulk(root) {
    root.querySelectorAll("[data-bulk-count]").forEach(function (label) {
      if (!label.hasAttribute("data-empty")) { label.setAttribute("data-empty", label.textContent); }
    });
    root.querySelectorAll("[data-bulk]").forEach(function (bar) { refreshBulk(scopeOf(bar)); });
  }

  // ── dropdowns (<details data-dropdown>): one open at a time, Escape and outside clicks close ──
  document.addEventListener("toggle", function (event) {
    var opened = event.target;
    if (!(opened instanceof HTMLDetailsElement) || !opened.open || !opened.hasAttribute("data-dropdown")) { return; }
    document.querySelectorAll("details[data-dropdown][open]").forEach(function (other) {
      if (other !== opened && !other.contains(opened)) { other.open = false; }
    });
  }, true);
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details[data-dropdown][open]").forEach(function (open) {
      if (!open.contains(event.target)) { open.open = false; }
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") { return; }
    document.querySelectorAll("details[data-dropdown][open]").forEach(function (open) {
      open.open = false;
      var summary = open.querySelector("summary");
      if (summary) { summary.focus(); }
    });
  });

  // ── small conveniences ──────────────────────────────────────────────────────────────────
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.submit();
    }
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.hasAttribute("data-confirm")) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); event.stopPropagation(); }
    }
  }, true);

  // Export links and "save this view" follow the filter in the address bar.
  function syncWithLocation() {
    var params = new URLSearchParams(window.location.search);
    params.delete("page");
    var query = params.toString();
    document.querySelectorAll("a[data-export]").forEach(function (link) {
      var base = link.getAttribute("href").split("?")[0];
      link.setAttribute("href", query ? base + "?" + query : base);
    });
    document.querySelectorAll("input[data-current-query]").forEach(function (input) {
      if (window.location.pathname === input.getAttribute("data-current-query")) { input.value = query; }
    });
  }
  document.addEventListener("htmx:pushedIntoHistory", syncWithLocation);
  document.addEventListener("htmx:afterSettle", syncWithLocation);

  // Messages swapped into #flash out of band fade after a while.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "flash") {
      window.setTimeout(function () { target.innerHTML = ""; }, 7000);
    }
  });

  // ── charts ──────────────────────────────────────────────────────────────────────────────
  var charts = [];

  function overlay(spec) {
    return function (u) {
      var ctx = u.ctx;
      var box = u.bbox;
      ctx.save();
      (spec.thresholds || []).forEach(function (line) {
        var y = Math.round(u.valToPos(line.value, "y", true));
        ctx.strokeStyle = line.colour;
        ctx.globalAlpha = 0.55;
        ctx.setLineDash([3, 4]);
        ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(box.left, y); ctx.lineTo(box.left + box.width, y); ctx.stroke();
        ctx.globalAlpha = 0.9;
        ctx.fillStyle = line.colour;
        ctx.font = Math.round(11 * devicePixelRatio) + "px system-ui, sans-serif";
        ctx.textAlign = "left";
        ctx.textBaseline = "bottom";
        ctx.fillText(line.label + " ≥ " + line.value, box.left + 6 * devicePixelRatio, y - 4 * devicePixelRatio);
      });
      (spec.markers || []).forEach(function (when) {
        var x = Math.round(u.valToPos(when, "x", true));
        ctx.strokeStyle = "#6d28d9";
        ctx.globalAlpha = 0.8;
        ctx.setLineDash([5, 4]);
        ctx.beginPath(); ctx.moveTo(x, box.top); ctx.lineTo(x, box.top + box.height); ctx.stroke();
      });
      ctx.restore();
    };
  }

  function buildChart(element) {
    if (element.getAttribute("data-ready") || typeof window.uPlot === "undefined") { return; }
    var spec;
    try { spec = JSON.parse(element.getAttribute("data-chart")); } catch (error) { return; }
    element.setAttribute("data-ready", "1");
    var series = [{ label: "Date", value: "{DD} {MMM} {YYYY}" }];
    var data = [spec.x];
    spec.series.forEach(function (item) {
      var entry = {
        label: item.label,
        stroke: item.colour,
        width: item.width || 1.5,
        show: item.show !== false,
        spanGaps: false,
        points: { show: spec.x.length <= 40, size: 5 },
      };
      if (item.fill) { entry.fill = item.fill; }
      if (item.dash) { entry.dash = item.dash; }
      if (spec.kind === "bars" && series.length === 1 && window.uPlot.paths && window.uPlot.paths.bars) {
        entry.paths = window.uPlot.paths.bars({ size: [0.7, 24] });
        entry.points = { show: false };
      }
      series.push(entry);
      data.push(item.values);
    });
    var options = {
      width: Math.max(280, element.clientWidth || 600),
      height: spec.height || 240,
      series: series,
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      axes: [
        { stroke: "#5b6577", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dfe3ea" } },
        { stroke: "#5b6577", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#dfe3ea" }, size: 48 },
      ],
      hooks: { draw: [overlay(spec)] },
    };
    if (spec.y) { options.scales.y = { range: [spec.y.min, spec.y.max] }; }
    charts.push({ element: element, chart: new window.uPlot(options, data, element) });
  }

  window.addEventListener("resize", function () {
    charts = charts.filter(function (item) { return document.body.contains(item.element); });
    charts.forEach(function (item) {
      item.chart.setSize({ width: Math.max(280, item.element.clientWidth), height: item.chart.height });
    });
  });

  function init(root) {
    root.querySelectorAll("[data-chart]").forEach(buildChart);
    initBulk(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    init(document);
    syncWithLocation();
    if (window.htmx) {
      window.htmx.onLoad(function (element) { init(element.parentElement || document); });
    }
  });
})();
