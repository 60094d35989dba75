/* The fan-out waterfall of /requests/{root}: a virtualised, collapsible tree of bars.
 *
 * The page carries the tree as JSON (#fanout-tree): nodes in depth-first order, each with
 * its parent (p), depth (d) and last descendant (e), so a subtree is the index range
 * [i, e] and collapsing skips it. Only the rows in view exist in the DOM (a fixed row
 * height and a spacer make the scrollbar right), so 10,000 nodes scroll like 10. Every
 * string is put in with textContent: nothing from the data is parsed as HTML. */
"use strict";

(() => {
  const ROW = 24;
  const OVERSCAN = 12;
  const EDGE_LABEL = { root: "root", child: "child", link: "link", correlation: "correlation" };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /** The service, and the consumer group when it is not named like the service: two
   * groups of one service handling one event must not read the same. */
  function serviceLabel(node) {
    return node.cg && node.cg !== node.s ? `${node.s} (${node.cg})` : node.s;
  }

  /** What tells apart rows of the same service and span name: the event type of a publish
   * or delivery (one destination carries several), and a redelivery's attempt. */
  function detailLabel(node) {
    const parts = [];
    if (node.et && (node.k === "producer" || node.k === "consumer")) parts.push(node.et);
    if (node.a > 1) parts.push(`attempt ${node.a}`);
    return parts.join(" · ");
  }

  class Waterfall {
    constructor(container, tree, detail) {
      this.tree = tree;
      this.nodes = tree.nodes;
      this.detail = detail;
      this.collapsed = new Uint8Array(this.nodes.length);
      this.visible = new Int32Array(this.nodes.length);
      this.count = 0;
      this.selected = -1;
      this.extent = Math.max(tree.extent_ms, 1e-6);
      this.scroller = container.querySelector(".wf-scroll");
      this.spacer = container.querySelector(".wf-spacer");
      this.container = container;
      this.pool = [];
      this.frame = 0;
      this.needed = this.labelWidth();
      this.fitLabels();
      this.axis(container.querySelector(".wf-head .axis"));
      this.settleLine();
      this.scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
      this.spacer.addEventListener("click", (event) => this.click(event));
      this.scroller.addEventListener("keydown", (event) => this.key(event));
      window.addEventListener("resize", () => { this.fitLabels(); this.schedule(); });
      this.layout();
    }

    /** The width the widest row's label needs (indent, toggle, badges, names), measured
     * with a canvas: no DOM per node, so 10,000 nodes cost milliseconds. */
    labelWidth() {
      const style = getComputedStyle(this.container);
      const family = style.fontFamily || "sans-serif";
      const context = document.createElement("canvas").getContext("2d");
      if (!context) return 0;
      const cache = new Map();
      const text = (value, font) => {
        const key = font + "\u241f" + value;
        if (!cache.has(key)) { context.font = font; cache.set(key, context.measureText(value).width); }
        return cache.get(key);
      };
      const normal = `12.5px ${family}`;
      const badge = (label) => text(label, `11px ${family}`) + 14 + 5;  // padding, border, gap
      let widest = 0;
      for (const node of this.nodes) {
        let width = node.d * 14 + 16 + 5 + badge(EDGE_LABEL[node.g] || node.g);
        width += text(serviceLabel(node), normal) + 5 + text(node.n, normal) + 5;
        const extra = detailLabel(node);
        if (extra) width += text(extra, `12px ${family}`) + 5;
        for (const [, label] of node.f) width += badge(label);
        widest = Math.max(widest, width);
      }
      return Math.ceil(widest + 6);
    }

    /** Give the labels the room they need, between 30 % and 62 % of the waterfall (past
     * that a name is cut with …; the row's tooltip and the detail panel have it whole). */
    fitLabels() {
      const total = this.container.clientWidth || 900;
      this.label = Math.round(Math.min(Math.max(this.needed, total * 0.3), total * 0.62));
      this.container.style.setProperty("--wf-label", this.label + "px");
    }

    axis(head) {
      if (!head) return;
      for (let i = 0; i <= 4; i++) head.append(el("span", "", eventscope.duration((this.extent * i) / 4)));
    }

    settleLine() {
      if (this.tree.settle_ms === null || this.tree.settle_ms === undefined) return;
      const line = el("div", "wf-settle");
      line.title = "settled after " + eventscope.duration(this.tree.settle_ms);
      line.dataset.settle = String(this.tree.settle_ms);
      this.spacer.append(line);
      this.settle = line;
    }

    /** Recompute which nodes are shown (collapsed subtrees skipped), then draw. */
    layout() {
      let n = 0;
      const nodes = this.nodes;
      for (let i = 0; i < nodes.length; ) {
        this.visible[n++] = i;
        i = this.collapsed[i] ? nodes[i].e + 1 : i + 1;
      }
      this.count = n;
      this.spacer.style.height = n * ROW + "px";
      // Short trees take the room they need; long ones scroll inside 62% of the window.
      this.scroller.style.height = Math.max(5 * ROW, Math.min(n * ROW + 2, window.innerHeight * 0.62)) + "px";
      this.scroller.dataset.rows = String(n);
      this.draw();
    }

    schedule() {
      if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
    }

    draw() {
      const top = this.scroller.scrollTop;
      const height = this.scroller.clientHeight || 600;
      const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
      const last = Math.min(this.count, Math.ceil((top + height) / ROW) + OVERSCAN);
      const wanted = last - first;
      while (this.pool.length < wanted) {
        const row = this.makeRow();
        this.pool.push(row);
        this.spacer.append(row.root);
      }
      for (let slot = 0; slot < this.pool.length; slot++) {
        const row = this.pool[slot];
        if (slot < wanted) this.fill(row, this.visible[first + slot], first + slot);
        else if (row.index !== -1) {
          row.root.hidden = true;
          row.index = -1;
          delete row.root.dataset.span;  // a recycled row must not answer for its old node
        }
      }
      if (this.settle) {
        const track = this.spacer.clientWidth - this.label - 16;
        this.settle.style.left = `${this.label + 8 + (track * this.tree.settle_ms) / this.extent}px`;
        this.settle.style.height = this.count * ROW + "px";
      }
      this.scroller.dataset.drawnFirst = String(first);
      this.scroller.dataset.drawnLast = String(last);
    }

    makeRow() {
      const root = el("div", "wf-row");
      root.setAttribute("role", "treeitem");
      const label = el("div", "wf-label");
      const toggle = el("button", "wf-toggle");
      toggle.type = "button";
      toggle.tabIndex = -1;
      const edge = el("span", "badge edge");
      const service = el("span", "svc");
      const name = el("span", "name");
      const extra = el("span", "extra");
      const marks = el("span", "marks");
      label.append(toggle, edge, service, name, extra, marks);
      const track = el("div", "wf-track");
      const wait = el("div", "wf-bar wait");
      const proc = el("div", "wf-bar proc");
      track.append(wait, proc);
      root.append(label, track);
      return { root, label, toggle, edge, service, name, extra, marks, wait, proc, index: -1 };
    }

    fill(row, i, position) {
      const node = this.nodes[i];
      row.root.hidden = false;
      row.root.style.top = position * ROW + "px";
      if (row.index === i) {
        row.toggle.textContent = this.collapsed[i] ? "▸" : "▾";
        row.root.setAttribute("aria-expanded", node.e > i ? String(!this.collapsed[i]) : "false");
        row.root.classList.toggle("selected", i === this.selected);
        return;
      }
      row.index = i;
      const r = row.root;
      r.dataset.index = String(i);
      r.dataset.span = node.sp;
      r.dataset.trace = node.tr;
      r.dataset.edge = node.g;
      r.setAttribute("aria-level", String(node.d + 1));
      const marks = node.f.map(([css]) => css);
      r.className = "wf-row" + (node.c ? " crit" : "") + (marks.includes("error") ? " is-error" : "")
        + (marks.includes("dead_lettered") ? " is-lost" : "") + (i === this.selected ? " selected" : "");
      const leaf = node.e === i;
      row.toggle.className = "wf-toggle" + (leaf ? " leaf" : "");
      row.toggle.textContent = leaf ? "" : this.collapsed[i] ? "▸" : "▾";
      row.toggle.setAttribute("aria-label", leaf ? "" : "collapse or expand");
      r.setAttribute("aria-expanded", leaf ? "false" : String(!this.collapsed[i]));
      row.label.style.paddingLeft = node.d * 14 + "px";
      row.edge.className = "badge edge " + node.g;
      row.edge.textContent = EDGE_LABEL[node.g] || node.g;
      row.service.textContent = serviceLabel(node);
      row.name.textContent = node.n;
      row.extra.textContent = detailLabel(node);
      row.marks.replaceChildren(...node.f.map(([css, label]) => el("span", "badge " + css, label)));
      const scale = 100 / this.extent;
      const waitStart = node.t - (node.w || 0);
      row.wait.hidden = !node.w;
      row.wait.style.left = waitStart * scale + "%";
      row.wait.style.width = (node.w || 0) * scale + "%";
      row.proc.style.left = node.t * scale + "%";
      row.proc.style.width = Math.max(node.u, 0) * scale + "%";
      const marked = node.f.map(([, text]) => text).join(", ");
      r.title = `${serviceLabel(node)} · ${node.n}${detailLabel(node) ? " · " + detailLabel(node) : ""}`
        + `${marked ? " (" + marked + ")" : ""}\nqueue wait ${eventscope.duration(node.w)} · processing ${eventscope.duration(node.u)}`;
    }

    click(event) {
      const rowElement = event.target.closest(".wf-row");
      if (!rowElement) return;
      const i = Number(rowElement.dataset.index);
      if (event.target.closest(".wf-toggle")) this.toggle(i);
      else this.select(i);
    }

    key(event) {
      if (this.selected < 0) return;
      if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
        const collapse = event.key === "ArrowLeft";
        if (Boolean(this.collapsed[this.selected]) !== collapse) this.toggle(this.selected);
        event.preventDefault();
      }
    }

    toggle(i) {
      if (this.nodes[i].e === i) return;
      this.collapsed[i] = this.collapsed[i] ? 0 : 1;
      this.layout();
    }

    /** Collapse (or expand) every node that has children. */
    setAll(collapsed) {
      this.collapsed.fill(0);
      if (collapsed) this.nodes.forEach((node, i) => { if (node.e > i && i > 0) this.collapsed[i] = 1; });
      this.layout();
    }

    select(i) {
      this.selected = i;
      this.pool.forEach((row) => row.root.classList.toggle("selected", row.index === i));
      const node = this.nodes[i];
      const url = new URL(window.location.href);
      url.searchParams.set("span", node.tr + ":" + node.sp);
      window.history.replaceState(null, "", url);
      this.detail.show(node);
    }

    /** Select the node of "trace:span", expanding its ancestors and scrolling to it. */
    reveal(key) {
      const [trace, span] = key.split(":");
      const i = this.nodes.findIndex((node) => node.sp === span && (!trace || node.tr === trace));
      if (i < 0) return;
      for (let p = this.nodes[i].p; p >= 0; p = this.nodes[p].p) this.collapsed[p] = 0;
      this.layout();
      const position = Array.prototype.indexOf.call(this.visible.subarray(0, this.count), i);
      this.scroller.scrollTop = Math.max(0, position * ROW - this.scroller.clientHeight / 3);
      this.draw();
      this.select(i);
    }
  }

  class Detail {
    constructor(panel) {
      this.panel = panel;
      this.request = 0;
    }

    show(node) {
      const ticket = ++this.request;
      this.panel.replaceChildren(el("h3", "", node.n), this.summary(node), el("p", "hint", "loading…"));
      fetch(`/spans/${encodeURIComponent(node.tr)}/${encodeURIComponent(node.sp)}`, {
        headers: { Accept: "application/json" }, credentials: "same-origin",
      })
        .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
        .then((span) => { if (ticket === this.request) this.full(node, span); })
        .catch((status) => {
          if (ticket !== this.request) return;
          this.panel.lastChild.textContent = status === 404
            ? "Only an event record was stored for this delivery (its trace was sampled out)."
            : "could not load the span (" + status + ")";
        });
    }

    summary(node) {
      const dl = el("dl", "kv");
      const add = (key, value) => {
        if (value === null || value === undefined || value === "") return;
        dl.append(el("dt", "", key), el("dd", "", value));
      };
      add("service", node.s);
      add("kind", node.k);
      add("edge", node.g);
      add("starts", "+" + eventscope.duration(node.t));
      add("queue wait", node.w ? eventscope.duration(node.w) : null);
      add("processing", eventscope.duration(node.u));
      add("outcome", node.o);
      add("event type", node.et);
      add("event id", node.ev);
      add("consumer group", node.cg);
      add("marks", node.f.map(([, label]) => label).join(", "));
      add("on critical path", node.c ? "yes" : null);
      add("trace id", node.tr);
      add("span id", node.sp);
      return dl;
    }

    full(node, span) {
      const parts = [el("h3", "", span.name), this.summary(node)];
      const times = el("dl", "kv");
      times.append(el("dt", "", "start"), el("dd", "", eventscope.localTime(span.start_ns / 1e6)));
      times.append(el("dt", "", "status"), el("dd", "", span.status_code + (span.status_message ? ": " + span.status_message : "")));
      parts.push(times);
      const open = el("a", "", "open this trace as the root");
      open.href = `/requests/${encodeURIComponent(span.trace_id)}?span=${encodeURIComponent(span.trace_id + ":" + span.span_id)}`;
      parts.push(el("p"));
      parts[parts.length - 1].append(open);
      parts.push(el("h4", "", "links"));
      const outgoing = span.links.filter((l) => l.direction === "out");
      const incoming = span.links.filter((l) => l.direction === "in");
      parts.push(this.links("links to", outgoing), this.links("linked from", incoming));
      parts.push(el("h4", "", "attributes"), this.attributes(span.attributes));
      if (span.events.length) {
        parts.push(el("h4", "", "events"));
        const list = el("ul");
        for (const event of span.events) {
          const item = el("li", "", `${eventscope.localTime(event.time_ns / 1e6)} ${event.name}`);
          item.append(this.attributes(event.attributes));
          list.append(item);
        }
        parts.push(list);
      }
      parts.push(el("h4", "", "resource"), this.attributes(span.resource_attributes));
      this.panel.replaceChildren(...parts);
      this.panel.dataset.span = span.span_id;
    }

    links(title, links) {
      const block = el("div", "links");
      block.append(el("span", "hint", `${title}: `));
      if (!links.length) { block.append(el("span", "hint", "none")); return block; }
      const list = el("ul");
      for (const link of links) {
        const item = el("li");
        const a = el("a", "trace-link", `${link.service || "?"} · ${link.name || link.span_id}`);
        a.href = `/requests/${encodeURIComponent(link.trace_id)}?span=${encodeURIComponent(link.trace_id + ":" + link.span_id)}`;
        a.dataset.trace = link.trace_id;
        item.append(a, el("span", "hint mono", ` ${link.trace_id.slice(0, 12)}…`));
        list.append(item);
      }
      block.append(list);
      return block;
    }

    attributes(values) {
      const dl = el("dl", "kv");
      for (const [key, value] of Object.entries(values || {})) {
        dl.append(el("dt", "", key), el("dd", "", typeof value === "string" ? value : JSON.stringify(value)));
      }
      return dl;
    }
  }

  function start() {
    const tree = eventscope.data("fanout-tree");
    const container = document.getElementById("waterfall");
    if (!tree || !container) return;
    const t0 = performance.now();
    const waterfall = new Waterfall(container, tree, new Detail(document.getElementById("detail")));
    document.getElementById("collapse-all")?.addEventListener("click", () => waterfall.setAll(true));
    document.getElementById("expand-all")?.addEventListener("click", () => waterfall.setAll(false));
    const wanted = new URL(window.location.href).searchParams.get("span");
    if (wanted) waterfall.reveal(wanted);
    requestAnimationFrame(() => {
      container.dataset.renderMs = String(performance.now() - t0);
      container.dataset.readyAt = String(performance.now());  // ms since navigation start
      container.dataset.ready = "1";
    });
    window.eventscopeWaterfall = waterfall;
  }

  document.addEventListener("DOMContentLoaded", start);
})();
