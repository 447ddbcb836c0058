/* Copy buttons (button.jobs-copy[data-copy]): put the text on the clipboard, and say so. */
(function () {
  "use strict";

  function copied(button) {
    button.classList.add("jobs-copied");
    setTimeout(function () { button.classList.remove("jobs-copied"); }, 1500);
  }

  /* Outside a secure context (plain HTTP to another host) there is no clipboard API. */
  function copyBySelection(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.jobs-copy");
    if (!button) return;
    event.preventDefault();
    var text = button.dataset.copy;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button); }, function () {
        copyBySelection(text);
        copied(button);
      });
    } else {
      copyBySelection(text);
      copied(button);
    }
  });
})();
