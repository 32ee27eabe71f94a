// The console's own script: CSRF header on every htmx request, confirmations, JSON blocks.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="console-csrf"]');
  document.addEventListener("htmx:configRequest", function (event) {
    if (meta) { event.detail.headers["X-Console-CSRF"] = meta.content; }
  });
  // A failed action still shows its answer (4xx/5xx fragments are swapped in too).
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status >= 400 && status < 600) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  window.streamApp = window.streamApp || {};
  // The JSON a page put in <script type="application/json" id="...">.
  window.streamApp.jsonBlock = function (id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  };
})();
