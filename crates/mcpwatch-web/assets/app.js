// mcpwatch dashboard script: the live page's pause button, connection status and row cap.
// No markup is built here: rows arrive as server-rendered, escaped HTML through htmx.
(function () {
  "use strict";
  var MAX_ROWS = 200;
  var paused = false;
  var held = 0;

  function status(text) {
    var el = document.getElementById("live-status");
    if (el) { el.textContent = text; }
  }

  function trim(id) {
    var body = document.getElementById(id);
    while (body && body.children.length > MAX_ROWS) { body.removeChild(body.lastElementChild); }
  }

  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest && ev.target.closest("#pause");
    if (!btn) { return; }
    paused = !paused;
    btn.textContent = paused ? "Resume" : "Pause";
    btn.setAttribute("aria-pressed", paused ? "true" : "false");
    if (!paused) { held = 0; }
    var b = document.getElementById("live-buffered");
    if (b) { b.textContent = paused ? "paused" : ""; }
  });

  document.addEventListener("htmx:sseOpen", function () { status("connected"); });
  document.addEventListener("htmx:sseError", function () { status("reconnecting…"); });
  document.addEventListener("htmx:sseBeforeMessage", function (ev) {
    if (paused) {
      ev.preventDefault();
      held += 1;
      var b = document.getElementById("live-buffered");
      if (b) { b.textContent = "paused, " + held + " not shown"; }
    }
  });
  document.addEventListener("htmx:sseMessage", function () {
    trim("live-rows");
    trim("live-alerts");
  });
})();
