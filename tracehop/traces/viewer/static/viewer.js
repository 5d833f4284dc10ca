// tracehop trace viewer: the little the server cannot do. Collapse and expand subtrees, open a span's
// details, tie log lines to spans, fill the operation list of a service. Everything else is plain HTML,
// so every page works (and is tested) without this file; it never builds HTML from data (textContent only).
"use strict";

(function () {
  function rows() { return Array.prototype.slice.call(document.querySelectorAll(".span-row")); }
  function depthOf(row) { return parseInt(row.dataset.depth, 10); }
  function detailOf(row) { return document.getElementById("detail-" + row.dataset.spanId); }

  // ------------------------------------------------------------------ collapse / expand
  // A row is hidden when any ancestor is collapsed: recompute visibility from the collapsed set.
  function applyCollapsed() {
    var hiddenBelow = null; // depth of the collapsed ancestor whose subtree we are in
    rows().forEach(function (row) {
      var depth = depthOf(row);
      if (hiddenBelow !== null && depth <= hiddenBelow) hiddenBelow = null;
      var hidden = hiddenBelow !== null;
      row.hidden = hidden;
      var detail = detailOf(row);
      if (detail && hidden) detail.hidden = true;
      if (detail && !hidden && row.classList.contains("selected")) detail.hidden = false;
      var toggle = row.querySelector(".toggle");
      if (!hidden && toggle && toggle.getAttribute("aria-expanded") === "false") hiddenBelow = depth;
    });
  }

  function setExpanded(row, expanded) {
    var toggle = row.querySelector(".toggle");
    if (toggle) toggle.setAttribute("aria-expanded", expanded ? "true" : "false");
  }

  // Open the collapsed ancestors of a row so that it can be seen.
  function reveal(row) {
    var depth = depthOf(row);
    var all = rows();
    for (var i = all.indexOf(row) - 1; i >= 0 && depth > 0; i--) {
      if (depthOf(all[i]) < depth) { setExpanded(all[i], true); depth = depthOf(all[i]); }
    }
    applyCollapsed();
  }

  // ------------------------------------------------------------------ selection
  // A span's details come from the server (GET /trace/<id>/span/<span id>, escaped HTML rendered by the
  // same template as the page) the first time its row is opened, and stay in the page after that.
  function loadDetail(row) {
    var existing = detailOf(row);
    if (existing) return Promise.resolve(existing);
    var traceId = document.getElementById("trace-id").textContent;
    return fetch("/trace/" + traceId + "/span/" + row.dataset.spanId)
      .then(function (response) {
        if (!response.ok) throw new Error("span details: HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (!detailOf(row)) row.insertAdjacentHTML("afterend", html);
        var detail = detailOf(row);
        detail.hidden = true;
        return detail;
      });
  }

  function select(spanId, options) {
    options = options || {};
    var row = document.getElementById("span-" + spanId);
    if (!row) return false;
    var already = row.classList.contains("selected");
    document.querySelectorAll(".span-row.selected").forEach(function (other) {
      other.classList.remove("selected");
      var detail = detailOf(other);
      if (detail) detail.hidden = true;
    });
    var open = !(already && options.toggle);
    document.querySelectorAll(".log-line").forEach(function (line) {
      line.classList.toggle("for-selected", open && line.dataset.spanId === spanId);
    });
    var url = new URL(window.location.href);
    if (open) {
      row.classList.add("selected");
      reveal(row);
      loadDetail(row).then(function (detail) {
        if (row.classList.contains("selected") && !row.hidden) detail.hidden = false;
      }, function (error) {
        console.warn(error.message); // the row stays selected; a reload shows the panel (?span= in the URL)
      });
      url.searchParams.set("span", spanId);
      if (options.scroll) row.scrollIntoView({ block: "center" });
    } else {
      url.searchParams.delete("span");
    }
    url.hash = "";
    window.history.replaceState(null, "", url.toString());
    return true;
  }

  function initTrace() {
    var waterfall = document.getElementById("waterfall");
    if (!waterfall) return;
    waterfall.addEventListener("click", function (event) {
      var toggle = event.target.closest(".toggle");
      if (toggle) {
        var expanded = toggle.getAttribute("aria-expanded") !== "false";
        toggle.setAttribute("aria-expanded", expanded ? "false" : "true");
        applyCollapsed();
        event.stopPropagation();
        return;
      }
      var ref = event.target.closest("a.span-ref, a.span-link");
      if (ref) {
        var sameTrace = !ref.dataset.traceId || ref.dataset.traceId === document.getElementById("trace-id").textContent;
        if (sameTrace && select(ref.dataset.spanId, { scroll: true })) event.preventDefault();
        return;
      }
      if (event.target.closest(".span-detail, a")) return;
      var row = event.target.closest(".span-row");
      if (row) select(row.dataset.spanId, { toggle: true });
    });
    waterfall.addEventListener("keydown", function (event) {
      var row = event.target.closest(".span-row");
      if (row && (event.key === "Enter" || event.key === " ") && event.target === row) {
        event.preventDefault();
        select(row.dataset.spanId, { toggle: true });
      }
    });
    document.querySelectorAll(".log-line").forEach(function (line) {
      function pick() { if (line.dataset.spanId) select(line.dataset.spanId, { scroll: true }); }
      line.addEventListener("click", pick);
      line.addEventListener("keydown", function (event) { if (event.key === "Enter") pick(); });
    });
    var expandAll = document.getElementById("expand-all");
    var collapseAll = document.getElementById("collapse-all");
    if (expandAll) expandAll.addEventListener("click", function () {
      rows().forEach(function (row) { setExpanded(row, true); });
      applyCollapsed();
    });
    if (collapseAll) collapseAll.addEventListener("click", function () {
      // Keep the root open: collapsing everything to one line shows nothing.
      rows().forEach(function (row) { setExpanded(row, depthOf(row) === 0); });
      applyCollapsed();
    });
    var wanted = new URL(window.location.href).searchParams.get("span");
    var hash = window.location.hash.match(/^#span-([0-9a-f]{16})$/);
    if (hash) wanted = hash[1];
    if (wanted) select(wanted.toLowerCase(), { scroll: true });
  }

  // ------------------------------------------------------------------ search form
  function initSearch() {
    var service = document.getElementById("service-select");
    var operation = document.getElementById("operation-select");
    if (!service || !operation) return;
    service.addEventListener("change", function () {
      while (operation.options.length > 1) operation.remove(1);
      if (!service.value) return;
      fetch("/api/v3/operations?service=" + encodeURIComponent(service.value))
        .then(function (response) { return response.ok ? response.json() : { operations: [] }; })
        .then(function (body) {
          (body.operations || []).forEach(function (op) {
            var option = document.createElement("option");
            option.value = op.name;
            option.textContent = op.name + " (" + op.spanKind + ")";
            operation.appendChild(option);
          });
        });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    initTrace();
    initSearch();
  });
})();
