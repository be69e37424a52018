// The admin page's only script: a prompt's token count as you type, confirmations
// before destructive buttons, and the live log (Server-Sent Events). No inline script.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const area of document.querySelectorAll("textarea[data-count]")) {
    const shown = document.getElementById(area.dataset.count);
    // The server counted with the model's tokenizer; edits are estimated (~4 chars a token).
    const start = Number(shown.dataset.tokens), startChars = area.value.length;
    area.addEventListener("input", () => {
      shown.textContent = String(Math.max(0, Math.round(start + (area.value.length - startChars) / 4)));
    });
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  const log = document.getElementById("log");
  if (log) {
    const level = document.getElementById("log-level"), text = document.getElementById("log-text");
    const shows = (li) => (!level.value || li.dataset.level === level.value) &&
      (!text.value || li.textContent.toLowerCase().includes(text.value.toLowerCase()));
    const refilter = () => { for (const li of log.children) li.hidden = !shows(li); };
    level.addEventListener("change", refilter);
    text.addEventListener("input", refilter);
    const source = new EventSource(log.dataset.stream);
    source.onmessage = (event) => {
      const line = JSON.parse(event.data), li = document.createElement("li");
      li.className = line.level;
      li.dataset.level = line.level;
      li.textContent = `${line.at} ${line.level} ${line.logger}: ${line.text}`;
      li.hidden = !shows(li);
      log.appendChild(li);
      while (log.children.length > 2000) log.firstChild.remove();
    };
  }
});
