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
  // Seed 000: every connection starts with the state (each account's stream status), then each change.
  function replaceRow(row) {
    const el = row && document.getElementById(row.id);
    if (el) el.outerHTML = row.html;
    return Boolean(el);
  }
  source.addEventListener("STATE_SNAPSHOT", function (ev) {
    const msg = JSON.parse(ev.data);
    window.chimeraAccounts = msg.accounts_status;
    (msg.rows || []).forEach(replaceRow);
    document.body.dataset.snapshot = String(msg.accounts_status.length);
  });
  source.addEventListener("ACCOUNT_STREAM_STATUS", function (ev) {
    const msg = JSON.parse(ev.data);
    // The accounts page swaps the row; other live pages (dashboard, ops) re-fetch their content.
    if (!replaceRow(msg.row)) htmx.trigger(document.body, "refresh");
    document.body.dataset.lastEvent = ev.lastEventId;
    document.body.dataset.accountStatus = msg.account_id + ":" + msg.market + ":" + msg.ws_status;
  });
  source.addEventListener("open", function () { document.body.dataset.live = "open"; });
})();
