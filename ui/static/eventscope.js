/* eventscope UI: local times, Plotly figures from JSON blocks, sortable tables, auto-refresh.
 * No inline scripts anywhere (the CSP forbids them): pages carry data in
 * <script type="application/json"> blocks that this file reads. */
"use strict";

const eventscope = (() => {
  /** Milliseconds since the epoch (or an ISO string) as the browser's local time. */
  function localTime(value) {
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? String(value) : wallTime(date.getTime());
  }

  const pad = (n, width = 2) => String(n).padStart(width, "0");

  /** Epoch milliseconds as local wall time text, which Plotly's date axes show as is. */
  function wallTime(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  /** A duration in milliseconds, briefly. */
  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms >= 1000) return (ms / 1000).toFixed(2) + " s";
    if (ms >= 100) return ms.toFixed(0) + " ms";
    return ms.toPrecision(3).replace(/\.?0+$/, "") + " ms";
  }

  /** The parsed JSON of <script type="application/json" id=...>, or null. */
  function data(id) {
    const block = document.getElementById(id);
    return block ? JSON.parse(block.textContent) : null;
  }

  function localiseTimes(root) {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    for (const node of root.querySelectorAll("time[datetime]")) {
      node.title = node.getAttribute("datetime") + " (shown in " + zone + ")";
      node.textContent = localTime(node.getAttribute("datetime"));
    }
  }

  /** plotly.js is large: it is loaded after the page is up, and only where figures are. */
  function loadPlotly() {
    if (!document.querySelector("script.plotly-figure")) return;
    if (typeof Plotly !== "undefined") { drawFigures(); return; }
    const script = document.createElement("script");
    script.src = "/static/plotly.min.js";
    script.addEventListener("load", drawFigures);
    document.head.append(script);
  }

  function drawFigures() {
    for (const block of document.querySelectorAll("script.plotly-figure")) {
      const target = document.getElementById(block.dataset.target);
      if (!target) continue;
      const figure = JSON.parse(block.textContent);
      const meta = (figure.layout && figure.layout.meta) || {};
      if (meta.local_time_x) {
        for (const trace of figure.data || []) trace.x = (trace.x || []).map(wallTime);
        if (meta.local_time_range) figure.layout.xaxis.range = meta.local_time_range.map(wallTime);
      }
      // No toolbar where there is nothing to zoom (maps, treemaps): it would cover labels.
      const config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["toImage"],
        displayModeBar: meta.modebar === false ? false : "hover" };
      Plotly.newPlot(target, figure.data || [], figure.layout || {}, config).then(() => {
        target.dataset.drawn = "1";
        if (figure.layout && figure.layout.meta && figure.layout.meta.links) {
          target.on("plotly_click", (event) => followFigureLink(figure.layout.meta.links, event));
        }
      });
    }
  }

  function followFigureLink(links, event) {
    const point = event.points && event.points[0];
    if (!point) return;
    const key = point.customdata !== undefined ? point.customdata : point.id;
    const href = links[Array.isArray(key) ? key[0] : key];
    if (typeof href === "string" && href.startsWith("/")) window.location.assign(href);
  }

  function cellValue(row, index) {
    const cell = row.cells[index];
    if (!cell) return "";
    const raw = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
    const number = Number(raw.replace(/[ ,]/g, "").replace(/(ms|s)$/, ""));
    return raw !== "" && !Number.isNaN(number) && cell.classList.contains("num") ? number
      : cell.dataset.value !== undefined && !Number.isNaN(Number(raw)) ? Number(raw) : raw.toLowerCase();
  }

  function makeSortable(table) {
    const headers = table.tHead ? Array.from(table.tHead.rows[0].cells) : [];
    headers.forEach((th, index) => {
      if (th.dataset.serverSort) return;  // sorted by the server: a link in the header
      th.addEventListener("click", () => {
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows).filter((r) => !r.classList.contains("none"));
        rows.sort((a, b) => {
          const x = cellValue(a, index), y = cellValue(b, index);
          const order = x < y ? -1 : x > y ? 1 : 0;
          return ascending ? order : -order;
        });
        body.append(...rows);
      });
    });
  }

  const REFRESH_SECONDS = 10;

  /** The auto-refresh box of live pages: remembered per page, or on for a URL with
   * ?refresh=N (seconds), which makes a live view shareable. */
  function autoRefresh() {
    const box = document.getElementById("auto-refresh");
    if (!box) return;
    const key = "eventscope.refresh." + document.body.dataset.page;
    const asked = Number(new URL(window.location.href).searchParams.get("refresh"));
    const seconds = asked > 0 ? Math.min(asked, 3600) : REFRESH_SECONDS;
    let timer = null;
    const arm = () => {
      clearTimeout(timer);
      if (box.checked) timer = setTimeout(() => window.location.reload(), seconds * 1000);
    };
    box.checked = asked > 0 || window.localStorage.getItem(key) === "1";
    box.addEventListener("change", () => {
      window.localStorage.setItem(key, box.checked ? "1" : "0");
      arm();
    });
    arm();
  }

  function start() {
    localiseTimes(document);
    document.querySelectorAll("table.sortable").forEach(makeSortable);
    autoRefresh();
    requestAnimationFrame(loadPlotly);
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", start);
  return { localTime, wallTime, duration, data, localiseTimes };
})();
