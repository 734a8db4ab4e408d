// Behaviour every page may use, wired from data- attributes: the Content-Security-Policy
// admits no inline scripts or event handlers.
(function () {
  "use strict";

  // <button data-copy="id">: copies the text of the element with that id.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var text = document.getElementById(button.dataset.copy).textContent;
      navigator.clipboard.writeText(text).then(
        function () { button.textContent = "Copied"; },
        function () { button.textContent = "Select and copy"; }
      );
    });
  });

  // <form data-confirm="question">: submits only once the user agrees.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
})();
