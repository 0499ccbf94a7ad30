// Live updates: one Server-Sent Events stream per page, fed from a Redis stream by /ui/events.
// The browser resends the last event id on reconnect (Last-Event-ID), so nothing is missed.
(function () {
  const content = document.getElementById("content");
  if (!content || !content.dataset.live) return;
  const url = "/ui/events?topic=" + encodeURIComponent(content.dataset.live) +
              "&after=" + encodeURIComponent(content.dataset.after || "$");
  const source = new EventSource(url);
  window.chimeraEvents = source;
  source.addEventListener("row", function (ev) {
    const msg = JSON.parse(ev.data);
    const body = document.getElementById(msg.target);
    if (!body) return;
    const empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    body.insertAdjacentHTML("afterbegin", msg.html);
    document.body.dataset.lastEvent = ev.lastEventId;
  });
  source.addEventListener("refresh", function (ev) {
    document.body.dataset.lastEvent = ev.lastEventId;
    htmx.trigger(document.body, "refresh");
  });
  source.addEventListener("open", function () { document.body.dataset.live = "open"; });
})();
