/* A chart frame: hand datasette-vega the rows its parent page embeds.
 *
 * The parent page holds each chart's rows in a <script type="application/json">
 * block; this frame's URL names it (?data=ID) and carries datasette-vega's chart
 * settings in its fragment (#g.mark=bar&g.x_column=...). datasette-vega charts the
 * JSON behind `.export-links a[href*=json]` when the document has loaded, after
 * appending "?_shape=array" to that URL: a data: URL ending in "#" keeps that
 * suffix in the fragment, which fetch ignores. This script runs before
 * DOMContentLoaded, so the link is in place when datasette-vega looks for it.
 */
(function () {
  "use strict";
  var id = new URLSearchParams(window.location.search).get("data");
  if (!id || window.parent === window) {
    return;
  }
  var source = window.parent.document.getElementById(id);
  if (!source || source.type !== "application/json") {
    return;
  }
  var rows = JSON.parse(source.textContent);
  document.getElementById("forensics-chart-data").setAttribute(
    "href",
    "data:application/json;charset=utf-8," + encodeURIComponent(JSON.stringify(rows)) + "#"
  );
})();
