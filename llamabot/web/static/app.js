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
  const tryForm = document.getElementById("try");
  if (tryForm) {
    const answer = document.getElementById("try-answer");
    tryForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      answer.textContent = "";
      const body = new URLSearchParams(new FormData(tryForm));
      const reply = await fetch(tryForm.action, {
        method: "POST", body, headers: { "X-CSRF-Token": tryForm.dataset.csrf },
      });
      if (!reply.ok) { answer.textContent = await reply.text(); return; }
      const reader = reply.body.getReader(), decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        answer.textContent += decoder.decode(value, { stream: true });
      }
      answer.dataset.done = "1";
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
