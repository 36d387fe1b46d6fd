// Live updates for the gha-scaler dashboard: on each "change" from /ui/stream (server-sent
// events), fetch the current page's content again and swap it in. Without JavaScript the pages
// reload themselves every 15 s (a <noscript> refresh).
(function () {
  if (!window.EventSource || !window.fetch) return;
  var live = document.getElementById("live");
  var content = document.getElementById("content");
  if (!live || !content) return;
  var busy = false, again = false;
  function say(text) { live.textContent = text; live.setAttribute("data-state", text); }
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.text(); })
      .then(function (html) { content.innerHTML = html; say("live"); })
      .catch(function () { say("offline"); })
      .finally(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  var stream = new EventSource("/ui/stream");
  stream.addEventListener("change", refresh);
  stream.onopen = function () { say("live"); };
  stream.onerror = function () { say("reconnecting"); };
})();
