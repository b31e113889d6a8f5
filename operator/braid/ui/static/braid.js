// The little the pages need beyond htmx: filters apply on change; a click on a box of the
// run's picture (or a step's name) opens that step's panel. No inline script anywhere (the
// Content-Security-Policy forbids it).
"use strict";
document.addEventListener("change", (e) => {
  const form = e.target.closest("form[data-autosubmit]");
  if (form) form.requestSubmit();
});
document.addEventListener("click", (e) => {
  const run = document.getElementById("run");
  if (!run) return;
  const box = e.target.closest("#dag g[data-step], [data-step-link]");
  if (!box) return;
  e.preventDefault();
  const step = box.getAttribute("data-step") || box.getAttribute("data-step-link");
  if (step.endsWith(" (undo)")) return;
  window.htmx.ajax("GET", run.dataset.base + "/steps/" + encodeURIComponent(step), {
    target: "#step-panel",
    swap: "innerHTML",
  });
});
