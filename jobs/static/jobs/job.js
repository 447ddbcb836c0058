/* A running job's page: polls the job's state and progress and updates the state badge and
   the progress bar in place (no reload), until the job is finished. No dependencies. */
(function () {
  "use strict";

  var box = document.getElementById("jobs-job-progress");
  if (!box) return;
  var every = Number(box.dataset.refresh) || 2000;

  function render(data) {
    var badge = document.querySelector(".field-state_label .jobs-badge");
    if (badge) {
      badge.textContent = data.state;
      badge.className = "jobs-badge jobs-badge-" + data.style;
    }
    if (data.ready) {
      var again = document.createElement("a");
      again.href = window.location.href;
      again.textContent = "finished: reload the page for its outcome";
      box.replaceChildren(again);
      box.hidden = false;
      return;
    }
    var done = data.progress;
    box.hidden = !done;
    if (!done) return;
    var bar = box.querySelector(".jobs-progress");
    bar.setAttribute("aria-valuenow", done.current);
    bar.setAttribute("aria-valuemax", done.total);
    bar.firstElementChild.style.width = done.percent + "%";
    box.querySelector(".jobs-progress-text").textContent =
      done.current + " / " + done.total + " (" + done.percent + " %)";
  }

  function poll() {
    fetch(box.dataset.url, {headers: {Accept: "application/json"}, credentials: "same-origin",
                            cache: "no-store"})
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        render(data);
        if (!data.ready) setTimeout(poll, every);
      })
      .catch(function () { setTimeout(poll, every); });
  }

  setTimeout(poll, every);
})();
