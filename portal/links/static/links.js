// The Copy button beside a command shown once (templates/links/router_command.html). Without JavaScript the
// button stays hidden and the command is selected and copied by hand.
"use strict";

document.querySelectorAll("[data-copy]").forEach((button) => {
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    source.select();
    try {
      await navigator.clipboard.writeText(source.value);
    } catch (error) {
      document.execCommand("copy"); // an older browser, or a page served over plain HTTP
    }
    button.textContent = "Copied";
  });
});
