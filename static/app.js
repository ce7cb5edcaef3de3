// Small behaviours on top of htmx; the pages work without JavaScript.
"use strict";

// After a form fragment comes back with errors, put the focus on the first invalid field.
document.addEventListener("htmx:afterSwap", (event) => {
  const invalid = event.detail.target.querySelector("[aria-invalid='true']");
  if (invalid) invalid.focus();
});

// A table wider than its .table-scroll wrapper scrolls inside it (a bare table on a phone scrolls itself); the
// scroller then takes the keyboard focus, so the arrow keys scroll it too, and only then: nothing to scroll, no
// extra tab stop.
(() => {
  function focusableWhenScrolling() {
    document.querySelectorAll(".table-scroll, main table").forEach((scroller) => {
      if (scroller.scrollWidth > scroller.clientWidth) scroller.tabIndex = 0;
      else scroller.removeAttribute("tabindex");
    });
  }
  document.addEventListener("DOMContentLoaded", focusableWhenScrolling);
  document.addEventListener("htmx:afterSettle", focusableWhenScrolling);
  window.addEventListener("resize", focusableWhenScrolling);
})();

// Copy buttons: `data-copy` names the element whose text (a textarea's value) they copy. Hidden until this script
// shows them, in the page and in fragments htmx swaps in (htmx:load covers both); without JavaScript the text is
// selected by hand.
(() => {
  function selectText(source) {
    if (typeof source.select === "function") { source.select(); return; }
    const range = document.createRange();
    range.selectNodeContents(source);
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
  }
  document.addEventListener("htmx:load", (event) => {
    event.detail.elt.querySelectorAll("[data-copy]").forEach((button) => { button.hidden = false; });
  });
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    const source = button && document.getElementById(button.dataset.copy);
    if (!source) return;
    selectText(source);
    try {
      await navigator.clipboard.writeText(typeof source.value === "string" ? source.value : source.textContent);
    } catch (error) {
      document.execCommand("copy"); // an older browser, or a page served over plain HTTP
    }
    button.textContent = "Copied";
  });
})();

// Live panels. Socket.IO events are hints (DESIGN.md rule 7): an event says what changed, and every panel
// that cares (data-live="status monitor", optionally data-live-match='{"router_id": 7}') is fetched again
// from its own endpoint (data-live-src) and swapped in by htmx. On every (re)connect every panel is
// fetched again, so a missed event costs nothing. Nothing here asks the server anything on a timer.
(() => {
  const indicator = document.getElementById("live-indicator");
  if (!indicator || typeof io !== "function" || typeof htmx === "undefined") return;

  const LABELS = { connecting: "connecting", live: "live", reconnecting: "reconnecting…", offline: "offline" };
  const live = { state: "connecting", connects: 0, received: 0, refreshes: 0 };
  window.portalLive = live; // read-only figures, for tests and the curious

  function show(state, why) {
    live.state = state;
    indicator.hidden = false;
    indicator.dataset.state = state;
    indicator.textContent = LABELS[state];
    indicator.title = state === "live" ? "Updates appear as they happen" : why || "";
  }

  // Requests in flight per target id (ours or the page's own, like a search), and panels to fetch once
  // those end: a refresh never races a swap into the same panel, and a burst of hints costs one fetch.
  // The other way round, a request of the page's own (a filter, a sort) aborts a refresh in flight into the
  // same panel: the refresh's answer, if first, would replace the panel, and the page's own answer would then
  // land in the replaced element, unseen.
  const inflight = new Map();
  const wanted = new Set();
  const refreshing = new Map(); // target id -> the panel whose refresh is in flight
  document.addEventListener("htmx:beforeRequest", (event) => {
    const id = event.detail.target && event.detail.target.id;
    if (!id) return;
    const panel = refreshing.get(id);
    if (panel && panel !== event.detail.elt) htmx.trigger(panel, "htmx:abort");
    inflight.set(id, (inflight.get(id) || 0) + 1);
    event.detail.xhr.addEventListener("loadend", () => { // after htmx's own load handler has swapped
      if (refreshing.get(id) === event.detail.elt) refreshing.delete(id);
      const left = inflight.get(id) - 1;
      if (left > 0) { inflight.set(id, left); return; }
      inflight.delete(id);
      if (wanted.delete(id)) refresh(id);
    });
  });

  function refresh(id) {
    if (inflight.has(id)) { wanted.add(id); return; }
    const panel = document.getElementById(id);
    if (!panel || !panel.dataset.liveSrc) return;
    live.refreshes += 1;
    refreshing.set(id, panel);
    htmx.ajax("GET", panel.dataset.liveSrc, { source: panel, target: panel, swap: "outerHTML" });
  }

  function cares(panel, event, payload) {
    if (!panel.dataset.live.split(/\s+/).includes(event)) return false;
    if (!panel.dataset.liveMatch) return true;
    try {
      const wantedFields = JSON.parse(panel.dataset.liveMatch);
      // A coalesced hint stands for several rows: `mixed` names the fields whose values differed among them.
      const mixed = (payload && payload.mixed) || [];
      return Object.keys(wantedFields).every((key) => mixed.includes(key) || (payload && payload[key] === wantedFields[key]));
    } catch (error) {
      return false;
    }
  }

  const panels = () => Array.from(document.querySelectorAll("[data-live][id]"));

  const socket = io({ transports: ["websocket"], reconnectionDelay: 1000, reconnectionDelayMax: 15000,
                      randomizationFactor: 0.5 });
  socket.onAny((event, payload) => {
    live.received += 1;
    panels().filter((panel) => cares(panel, event, payload)).forEach((panel) => refresh(panel.id));
  });

  // socket.io retries a lost transport by itself; when the server refused us or let us go (its message
  // queue was down, a logout elsewhere) we ask again ourselves, backing off from 1 s to 15 s.
  let retries = 0;
  let retryTimer = null;
  function retryLater() {
    if (retryTimer) return;
    const delay = Math.min(15000, 1000 * 2 ** retries) * (0.5 + Math.random() / 2);
    retries += 1;
    retryTimer = setTimeout(() => { retryTimer = null; socket.connect(); }, delay);
  }

  socket.on("connect", () => {
    retries = 0;
    live.connects += 1;
    show("live");
    panels().forEach((panel) => refresh(panel.id)); // converge on the database after any gap
  });
  socket.on("disconnect", (reason) => {
    show("reconnecting", reason);
    if (reason === "io server disconnect") retryLater();
  });
  socket.on("connect_error", (error) => {
    if (error && error.message === "unauthorized") {
      show("offline", "Logged out: reload the page to log in again");
      return;
    }
    show("reconnecting", error && error.message);
    if (!socket.active) retryLater();
  });

  // "N s ago" counts on between refreshes from the age the server rendered (a local clock, no request).
  const firstSeen = new WeakMap();
  setInterval(() => {
    const now = performance.now();
    document.querySelectorAll(".ago[data-age]").forEach((element) => {
      if (!firstSeen.has(element)) firstSeen.set(element, now);
      const age = Number(element.dataset.age) + Math.floor((now - firstSeen.get(element)) / 1000);
      element.textContent = element.textContent.replace(/\d+/, String(age));
    });
  }, 1000);
})();
