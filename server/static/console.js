// The policy console: CodeMirror on the policy editor (from npm, /vendor/codemirror), Ctrl+S to save.
(function () {
  "use strict";
  function init() {
    var textarea = document.querySelector("textarea[data-codemirror]");
    if (!textarea || typeof window.CodeMirror === "undefined") {
      return;
    }
    var editor = window.CodeMirror.fromTextArea(textarea, {
      mode: "yaml",
      lineNumbers: true,
      indentUnit: 2,
      tabSize: 2,
      indentWithTabs: false,
      viewportMargin: 20,
      extraKeys: {
        Tab: function (cm) { cm.replaceSelection("  "); },
        "Ctrl-S": function () { save(); },
        "Cmd-S": function () { save(); }
      }
    });
    var form = document.getElementById("file-form");
    function save() {
      editor.save();
      if (form && window.htmx) {
        window.htmx.trigger(form, "submit");
      }
    }
    if (form) {
      // htmx serialises the textarea: copy the editor's text into it first.
      form.addEventListener("htmx:configRequest", function (event) {
        editor.save();
        event.detail.parameters.text = textarea.value;
      });
    }
    // Clicking a located problem moves the cursor there when it is in this file.
    document.addEventListener("click", function (event) {
      var where = event.target.closest(".problems .where");
      if (!where) { return; }
      var match = /^(.+?):(\d+)(?::(\d+))?$/.exec(where.textContent.trim());
      var current = form && form.querySelector('input[name="file"]');
      if (match && current && match[1] === current.value) {
        editor.focus();
        editor.setCursor({ line: Number(match[2]) - 1, ch: match[3] ? Number(match[3]) - 1 : 0 });
      }
    });
  }
  document.addEventListener("DOMContentLoaded", init);
})();
