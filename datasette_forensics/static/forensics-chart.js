/* A chart frame: draw, with the Vega that datasette-vega ships, the Vega-Lite spec
 * its parent page embeds.
 *
 * The parent page holds each chart's spec (rows included) in a
 * <script type="application/json"> block; this frame's URL names it (?data=ID).
 *
 * datasette-vega 0.6 bundles React, Vega 4, Vega-Lite 2 and vega-embed in one
 * webpack script and exposes no global. Its own chart builder only knows one mark
 * with x, y and colour, so this script, loaded just before the bundle, notes the
 * bundle's module loader while the bundle starts (webpack calls each module as
 * `factory.call(exports, module, exports, require)`), then puts
 * Function.prototype.call back, before anything else runs. From the loaded modules
 * it takes Vega (the module exporting View and parse) and Vega-Lite (compile), and
 * draws the spec as SVG. The frame has no `.export-links` link, so datasette-vega's
 * own chart tool stays asleep. Nothing is fetched: the rows are in the spec.
 *
 * A mark whose datum has an `href` opens it in the whole window (the requests
 * behind the mark). The frame takes the height of the drawn chart.
 */
(function () {
  "use strict";
  var originalCall = Function.prototype.call;
  var webpackRequire = null;
  Function.prototype.call = function (self, module, exports, require) {
    if (webpackRequire === null && arguments.length === 4 && typeof require === "function" && require.c && require.m) {
      webpackRequire = require;
    }
    return originalCall.apply(this, arguments);
  };

  function libraries() {
    var found = { vega: null, vl: null };
    if (webpackRequire === null) {
      return found;
    }
    Object.keys(webpackRequire.c).forEach(function (id) {
      var exports = webpackRequire.c[id].exports;
      if (!exports || typeof exports !== "object") {
        return;
      }
      try {
        if (!found.vega && typeof exports.View === "function" && typeof exports.parse === "function" && exports.loader) {
          found.vega = exports;
        } else if (!found.vl && typeof exports.compile === "function" && typeof exports.version === "string") {
          found.vl = exports;
        }
      } catch (e) {
        /* an export whose getter throws is not one of ours */
      }
    });
    return found;
  }

  function fail(container, message) {
    container.textContent = message;
    container.className = "forensics-chart-failed";
  }

  function fitFrame() {
    var chart = document.getElementById("forensics-chart");
    if (window.frameElement && chart) {
      // The chart's own height (the document's would never be less than the frame's).
      window.frameElement.style.height = Math.ceil(chart.getBoundingClientRect().bottom + 8) + "px";
    }
  }

  function draw() {
    Function.prototype.call = originalCall;
    var container = document.getElementById("forensics-chart");
    var id = new URLSearchParams(window.location.search).get("data");
    if (!container || !id || window.parent === window) {
      return;
    }
    var source = window.parent.document.getElementById(id);
    if (!source || source.type !== "application/json") {
      return fail(container, "No chart data on the page.");
    }
    var lib = libraries();
    if (!lib.vega || !lib.vl) {
      return fail(container, "datasette-vega's Vega was not found: the figures are in the table beside the chart.");
    }
    var spec = JSON.parse(source.textContent);
    // Full width: the whole chart, axes and legend included, fits the frame (autosize fit).
    spec.width = Math.max(200, document.documentElement.clientWidth - 12);
    var vgSpec = lib.vl.compile(spec).spec;
    var view = new lib.vega.View(lib.vega.parse(vgSpec), { loader: lib.vega.loader({ target: "_top" }) })
      .initialize(container)
      .renderer("svg")
      .hover();
    view.runAsync().then(function () {
      container.setAttribute("data-drawn", "1");
      fitFrame();
    });
    window.forensicsView = view;
  }

  document.addEventListener("DOMContentLoaded", draw);
  window.addEventListener("resize", fitFrame);
})();
