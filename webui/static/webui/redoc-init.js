// Starts Redoc on /api/v1/redoc/ (a file, not an inline script: the Content-Security-Policy
// has no 'unsafe-inline'). Redoc marks the <style> elements it writes with the nonce it is
// given; this script's own nonce is the page's (the attribute reads empty, the property not).
(function () {
  "use strict";
  var container = document.getElementById("redoc-container");
  Redoc.init(container.dataset.specUrl, { nonce: document.currentScript.nonce }, container);
})();
