/* Live status on the version page (pipeline steps) and the promotion page (its state).
 *
 * The element with data-live-url names a small JSON view; it is polled every second and
 * the page is updated in place. Once the state settles, the page reloads once so that
 * everything the server renders (scan, package, badges) is current.
 */
(function () {
  "use strict";

  var root = document.querySelector("[data-live-url]");
  if (!root) return;

  var url = root.getAttribute("data-live-url");
  var kind = root.getAttribute("data-live-kind");
  var initial = root.getAttribute("data-live-state");
  // An upload can sit unfinished for a long time; a pipeline or promotion moves in seconds.
  var INTERVAL = kind === "version" && initial === "uploading" ? 5000 : 1000;
  var failures = 0;
  var done = false;

  var VERSION_MOVING = ["uploading", "processing"];
  var PROMOTION_MOVING = ["pending", "approved", "promoting"];

  function setBadge(state) {
    var badge = root.querySelector("[data-live-badge]");
    if (!badge || badge.textContent === state) return;
    badge.className = badge.className.replace(/\bbadge-[a-z]+\b/g, "").trim() + " badge-" + state;
    badge.textContent = state;
  }

  function setReason(text) {
    var reason = root.querySelector("[data-live-reason]");
    if (!reason) return;
    reason.textContent = text || "";
    reason.hidden = !text;
  }

  function updateSteps(pipeline) {
    var steps = root.querySelectorAll("[data-step]");
    Array.prototype.forEach.call(steps, function (li) {
      var state = (pipeline && pipeline[li.getAttribute("data-step")]) || "pending";
      li.className = li.className.replace(/\bstep-[a-z]+\b/g, "").trim() + " step-" + state;
      var label = li.querySelector("[data-step-state]");
      if (label) label.textContent = state;
    });
  }

  function settle() {
    done = true;
    window.location.reload();
  }

  function apply(data) {
    setBadge(data.state);
    setReason(data.status_reason);
    if (kind === "version") {
      updateSteps(data.pipeline);
      if (VERSION_MOVING.indexOf(data.state) === -1 || data.state !== initial) settle();
      return;
    }
    var message = root.querySelector("[data-live-message]");
    if (message && data.state === "promoting") {
      message.textContent = "Promoting: moving " + data.environment + " to v" + data.version + "…";
    }
    if (PROMOTION_MOVING.indexOf(data.state) === -1) settle();
  }

  function poll() {
    if (done) return;
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        apply(data);
      })
      .catch(function () {
        failures += 1; // a restarting server: keep trying, a little slower
      })
      .then(function () {
        if (!done) window.setTimeout(poll, INTERVAL * Math.min(1 + failures, 10));
      });
  }

  window.setTimeout(poll, INTERVAL);
})();
