// ivrkit console: live call list (server-sent events) and the dialpad. No dependencies,
// no inline script (the CSP forbids it); text is set with textContent, never as HTML.
"use strict";
(function () {
  var body = document.body;
  var prefix = body.dataset.prefix;
  var csrf = body.dataset.csrf;

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  // --- calls: live updates -------------------------------------------------------------
  var table = document.getElementById("calls");
  if (table && window.EventSource) {
    var state = document.getElementById("live-state");
    var source = new EventSource(table.dataset.live);
    source.addEventListener("open", function () { state.textContent = "Live updates: on"; });
    source.addEventListener("error", function () { state.textContent = "Live updates: reconnecting…"; });
    source.addEventListener("trouble", function () { state.textContent = "Live updates: the store did not answer"; });
    source.addEventListener("call", function (event) {
      var call = JSON.parse(event.data);
      var tbody = table.tBodies[0];
      var old = tbody.querySelector('tr[data-sid="' + call.call_sid + '"]');
      if (old) { old.remove(); }
      var row = document.createElement("tr");
      row.dataset.sid = call.call_sid;
      row.className = "fresh";
      var first = document.createElement("td");
      var link = document.createElement("a");
      link.href = prefix + "/calls/" + encodeURIComponent(call.call_sid);
      link.textContent = call.call_sid;
      first.appendChild(link);
      if (call.simulated) {
        var tag = document.createElement("span");
        tag.className = "tag sim";
        tag.textContent = "simulated";
        first.appendChild(document.createTextNode(" "));
        first.appendChild(tag);
      }
      row.appendChild(first);
      [call.flow, call.state, call.status, call.caller, call.updated_at].forEach(function (t) { cell(row, t); });
      tbody.insertBefore(row, tbody.firstChild);
      var none = document.getElementById("no-calls");
      if (none) { none.remove(); }
    });
  }

  // --- dialpad -------------------------------------------------------------------------
  var form = document.getElementById("dial-form");
  if (!form) { return; }
  var phone = document.getElementById("phone");
  var heard = document.getElementById("heard");
  var status = document.getElementById("call-state");
  var call = null;
  var cursor = 0;
  var busy = false;

  function post(url, data) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(data)
    }).then(function (response) {
      return response.json().then(function (json) { json.httpStatus = response.status; return json; });
    });
  }

  function line(kind, text) {
    var li = document.createElement("li");
    li.className = kind;
    li.textContent = text;
    heard.appendChild(li);
    li.scrollIntoView({block: "nearest"});
  }

  function speak(text) {
    if (document.getElementById("speak").checked && window.speechSynthesis) {
      window.speechSynthesis.speak(new SpeechSynthesisUtterance(text));
    }
  }

  function describe(e) {
    switch (e.type) {
      case "say": speak(e.text); return ["say", "App: " + e.text];
      case "play": return ["play", "App plays audio"];
      case "input":
        if (e.digits !== undefined) { return ["you", "You pressed " + e.digits]; }
        if (e.speech !== undefined) { return ["you", "You said “" + e.speech + "”"]; }
        return ["you", "You stayed silent"];
      case "dial": return ["outcome", "Dial: " + e.status];
      case "record": return ["outcome", "Recorded " + e.duration + " s"];
      case "enqueue": return ["outcome", "Queue " + e.queue + ": " + e.result];
      case "hangup": return ["outcome", "The app hung up"];
      case "error": return ["error", "Error " + e.code + ": " + e.message];
      case "end": return ["end", "Call ended: " + e.status];
      default: return [e.type, e.type];
    }
  }

  function show(view) {
    if (view.error && view.httpStatus >= 400) { status.textContent = view.error; }
    if (!view.events) { return; }
    view.events.forEach(function (e) { var d = describe(e); line(d[0], d[1]); });
    cursor = view.cursor;
    document.querySelectorAll(".ask").forEach(function (el) { el.hidden = true; });
    if (view.ended) {
      status.textContent = "Call ended (" + view.status + ")";
      document.getElementById("hangup").disabled = true;
      call = null;
      return;
    }
    var q = view.question;
    if (q) {
      var panel = document.getElementById("ask-" + q.kind);
      panel.hidden = false;
      status.textContent = q.kind === "gather" ? "Waiting for your keys or words" : "Waiting for the " + q.kind + " outcome";
      var first = panel.querySelector("input, button, select");
      if (first && q.kind !== "gather") { first.focus(); }
    } else {
      status.textContent = "The app is answering…";
    }
  }

  function act(data) {
    if (!call || busy) { return; }
    busy = true;
    data.since = cursor;
    post(prefix + "/dialpad/calls/" + call, data).then(show).finally(function () { busy = false; });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    heard.textContent = "";
    cursor = 0;
    phone.hidden = false;
    document.getElementById("hangup").disabled = false;
    status.textContent = "Calling…";
    post(prefix + "/dialpad/calls", {flow: document.getElementById("dial-flow").value}).then(function (view) {
      if (view.call_sid) {
        call = view.call_sid;
        document.getElementById("call-link").href = prefix + "/calls/" + call;
      }
      show(view);
    });
  });
  document.querySelectorAll(".key").forEach(function (key) {
    key.addEventListener("click", function () { act({action: "press", digits: key.dataset.key}); });
  });
  document.getElementById("send-keys").addEventListener("click", function () {
    var keys = document.getElementById("keyed");
    act({action: "press", digits: keys.value.replace(/\s/g, "")});
    keys.value = "";
  });
  document.getElementById("keyed").addEventListener("keydown", function (event) {
    if (event.key === "Enter") { event.preventDefault(); document.getElementById("send-keys").click(); }
  });
  document.getElementById("silence").addEventListener("click", function () { act({action: "timeout"}); });
  document.getElementById("send-words").addEventListener("click", function () {
    var words = document.getElementById("words");
    act({action: "say", text: words.value});
    words.value = "";
  });
  document.getElementById("send-dial").addEventListener("click", function () {
    act({action: "dial", status: document.getElementById("dial-status").value});
  });
  document.getElementById("send-record").addEventListener("click", function () {
    act({action: "record", seconds: parseInt(document.getElementById("record-seconds").value, 10) || 0});
  });
  document.getElementById("send-queue").addEventListener("click", function () {
    act({action: "queue", result: document.getElementById("queue-result").value});
  });
  document.getElementById("hangup").addEventListener("click", function () { busy = false; act({action: "hangup"}); });
})();
