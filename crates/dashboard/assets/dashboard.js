// Stratus dashboard: progressive enhancement only; every page works without it.
// Loaded from /static (the Content-Security-Policy forbids inline script).
"use strict";
(function () {
  // Confirm destructive buttons.
  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    if (f.dataset && f.dataset.confirm && !window.confirm(f.dataset.confirm + "?")) ev.preventDefault();
  });
  // The project switcher submits on change.
  document.addEventListener("change", function (ev) {
    if (ev.target.hasAttribute && ev.target.hasAttribute("data-autosubmit")) ev.target.form.submit();
  });
  // Polling: an element with data-poll="URL" is refreshed from URL every 2 s while the
  // fragment it receives still holds an element marked data-busy (work in progress).
  function poll(el) {
    var url = el.getAttribute("data-poll");
    setTimeout(function () {
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) {
          // The session ended: the fragment request was sent to the login page.
          if (r.redirected) { window.location = r.url; return null; }
          if (!r.ok) throw new Error(r.status);
          return r.text();
        })
        .then(function (html) {
          if (html === null) return;
          el.innerHTML = html;
          if (el.querySelector("[data-busy]")) poll(el);
        })
        .catch(function () { setTimeout(function () { poll(el); }, 3000); });
    }, 2000);
  }
  // Image upload: the file is PUT as the request body (streamed to the image API, not
  // buffered), with a progress bar.
  function upload(form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var file = form.querySelector("input[type=file]").files[0];
      var bar = form.querySelector("progress");
      var out = form.querySelector(".upload-status");
      var data = new URLSearchParams(new FormData(form));
      data.delete("file");
      fetch(form.action, { method: "POST", credentials: "same-origin", body: data,
                           headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.message); return j; }); })
        .then(function (j) {
          var x = new XMLHttpRequest();
          x.open("PUT", j.upload_url);
          x.setRequestHeader("X-CSRF-Token", form.querySelector("input[name=csrf_token]").value);
          x.setRequestHeader("Content-Type", "application/octet-stream");
          x.upload.onprogress = function (e) { if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; } };
          x.onload = function () {
            if (x.status < 300) { window.location = j.done_url; }
            else { out.textContent = "Upload failed: " + x.status + " " + x.responseText.slice(0, 200); }
          };
          x.onerror = function () { out.textContent = "Upload failed."; };
          x.send(file);
        })
        .catch(function (e) { out.textContent = "Image not created: " + e.message; });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(function (el) {
      if (el.querySelector("[data-busy]")) poll(el);
    });
    document.querySelectorAll("form[data-upload]").forEach(upload);
  });
})();
