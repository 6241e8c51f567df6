// jcstate console: refresh the parts of a page marked data-live="KEY" from the JSON object at
// the body's data-live-src (KEY -> text), once a second. Pages work without this script.
"use strict";
(function () {
  var src = document.body.getAttribute("data-live-src");
  if (!src) {
    return;
  }
  function apply(values) {
    var nodes = document.querySelectorAll("[data-live]");
    for (var i = 0; i < nodes.length; i++) {
      var key = nodes[i].getAttribute("data-live");
      if (Object.prototype.hasOwnProperty.call(values, key) && nodes[i].textContent !== values[key]) {
        nodes[i].textContent = values[key]; // text, never markup
      }
    }
  }
  function poll() {
    fetch(src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (values) { if (values) { apply(values); } })
      .catch(function () {})
      .then(function () { window.setTimeout(poll, 1000); });
  }
  window.setTimeout(poll, 1000);
})();
