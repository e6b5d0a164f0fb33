// The portal's own script. htmx does the talking; this file only wires what CSP forbids inline.
(function () {
  "use strict";
  // Every htmx request carries the CSRF token from the page's <meta> tag.
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) {
      event.detail.headers["x-csrftoken"] = meta.getAttribute("content");
    }
  });
  // Errors rendered by the server as a flash fragment disappear after a while.
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "flash") {
      window.setTimeout(function () { event.detail.target.innerHTML = ""; }, 8000);
    }
  });
})();
