// The little JavaScript the portal uses; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Confirm destructive actions (withdraw, revoke).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // Dataset rows of the request form: add and remove.
  const rows = document.getElementById("dataset-rows");
  const template = document.getElementById("dataset-row-template");
  const add = document.getElementById("add-dataset");
  if (rows && template && add) {
    add.addEventListener("click", () => {
      rows.appendChild(template.content.cloneNode(true));
      const inputs = rows.querySelectorAll("input[name=dataset_node]");
      inputs[inputs.length - 1].focus();
    });
    rows.addEventListener("click", (event) => {
      const button = event.target.closest("[data-remove-row]");
      if (button && rows.querySelectorAll(".dataset-row").length > 1) {
        button.closest(".dataset-row").remove();
      }
    });
  }
  // Conditions only make sense with an approval.
  const decision = document.getElementById("decision-form");
  const conditions = document.getElementById("conditions");
  if (decision && conditions) {
    const sync = () => {
      const chosen = decision.querySelector("input[name=decision]:checked");
      conditions.disabled = chosen !== null && chosen.value !== "approve";
    };
    decision.addEventListener("change", sync);
    sync();
  }
});
