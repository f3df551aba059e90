// The live tail: follows /ui/live/events (server-sent events) and shows the
// newest records first, keeping at most data-max-rows rows, so the page's
// memory stays bounded however long it is left open. Every value is set as
// text, never as markup.
"use strict";
(function () {
  const table = document.getElementById("tail");
  if (!table) return;
  const body = table.tBodies[0];
  const status = document.getElementById("live-status");
  const skippedBox = document.getElementById("live-skipped");
  const maxRows = Number(table.dataset.maxRows) || 500;
  let shown = 0;
  let skipped = 0;

  function cell(tr, text, cls) {
    const td = tr.insertCell();
    if (cls) td.className = cls;
    td.textContent = text == null ? "" : String(text);
    return td;
  }
  function link(tr, text, href) {
    const td = tr.insertCell();
    if (text == null) return td;
    const a = document.createElement("a");
    a.href = href;
    a.textContent = String(text);
    td.appendChild(a);
    return td;
  }
  function idLink(tr, kind, id) {
    return link(tr, id, id == null ? "" : "/ui/" + kind + "/" + encodeURIComponent(id));
  }
  function setStatus(text) { status.textContent = text; }

  function add(row) {
    const tr = document.createElement("tr");
    tr.className = "fresh";
    tr.dataset.id = String(row.id);
    tr.dataset.atMs = String(row.at_ms);
    cell(tr, row.at, "time mono");
    cell(tr, row.topic + " [" + row.partition + "] @" + row.offset, "mono");
    link(tr, row.event_type == null ? "(no event type)" : row.event_type, "/ui/record/" + Number(row.id));
    idLink(tr, "order", row.order_id);
    idLink(tr, "customer", row.customer_id);
    idLink(tr, "runner", row.runner_id);
    idLink(tr, "correlation", row.correlation_id);
    cell(tr, row.source_service);
    cell(tr, row.status);
    const flag = cell(tr, row.flag);
    if (row.flag) flag.className = "flag error";
    body.insertBefore(tr, body.firstChild);
    shown += 1;
    while (body.rows.length > maxRows) body.deleteRow(body.rows.length - 1);
  }

  function describe() {
    let text = "Live: " + shown.toLocaleString() + " records received since the page opened";
    if (body.rows.length >= maxRows) text += " (the newest " + maxRows + " are kept)";
    setStatus(text + ".");
    if (skipped > 0) {
      skippedBox.hidden = false;
      skippedBox.textContent = skipped.toLocaleString() +
        " records were stored while this page could not keep up and are not shown (the stream coalesces rather than grows).";
    }
  }

  const source = new EventSource(table.dataset.events);
  source.addEventListener("ready", function () { setStatus("Live: connected, waiting for new records."); });
  source.addEventListener("rows", function (e) {
    const message = JSON.parse(e.data);
    for (const row of message.rows) add(row);
    skipped += message.skipped || 0;
    if (message.gap) {
      skippedBox.hidden = false;
      skippedBox.textContent = "The connection to the database was interrupted; records stored meanwhile may be missing here.";
    }
    describe();
  });
  source.addEventListener("bye", function () { setStatus("The server is shutting down; reconnecting…"); });
  source.onerror = function () { setStatus("Disconnected; reconnecting…"); };
})();
