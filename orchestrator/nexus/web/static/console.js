// Live updates of the Nexus console without reloading: every few seconds, while the tab is visible, the
// page is fetched again and each element marked data-live is replaced by its newer self (same id). Hidden
// tab: nothing is fetched (the indicator says paused); back in view: refreshed at once. A region being
// used (a ticked box, an open message, text typed, focus inside) is left alone until it is not.
(function () {
  "use strict";
  var PERIOD_MS = 5000;
  var indicator = document.getElementById("live");
  var timer = null;
  if (!indicator || !document.querySelector("[data-live]")) { return; }

  function say(text, paused) {
    indicator.textContent = text;
    indicator.classList.toggle("paused", !!paused);
  }

  function typedIn(el) {
    return Array.prototype.some.call(el.querySelectorAll("textarea, input:not([type]), input[type=text]"),
                                     function (i) { return i.value !== ""; });
  }

  function busy(el) {
    return el.querySelector("input:checked, details[open]") !== null || el.contains(document.activeElement)
      || typedIn(el);
  }

  function refresh() {
    if (document.visibilityState !== "visible") { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "x-live": "1" } })
      .then(function (r) {
        if (r.redirected || !r.ok) { throw new Error("status " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var fresh = el.id ? doc.getElementById(el.id) : null;
          if (fresh && !busy(el) && fresh.innerHTML !== el.innerHTML) { el.innerHTML = fresh.innerHTML; }
        });
        say("live · updated " + new Date().toLocaleTimeString(), false);
      })
      .catch(function () { say("live · update failed, retrying", true); });
  }

  function schedule() {
    if (timer) { window.clearInterval(timer); timer = null; }
    if (document.visibilityState === "visible") {
      refresh();
      timer = window.setInterval(refresh, PERIOD_MS);
    } else {
      say("live · paused while the tab is hidden", true);
    }
  }

  document.addEventListener("visibilitychange", schedule);
  say("live", false);
  timer = window.setInterval(refresh, PERIOD_MS);
})();
