// Small behaviours on top of htmx; the pages work without JavaScript.
"use strict";

// After a form fragment comes back with errors, put the focus on the first invalid field.
document.addEventListener("htmx:afterSwap", (event) => {
  const invalid = event.detail.target.querySelector("[aria-invalid='true']");
  if (invalid) invalid.focus();
});
