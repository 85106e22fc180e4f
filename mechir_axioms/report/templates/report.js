// Draws the blocks and attention heatmaps from the JSON embedded in the page; no network, no libraries.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("plot-data").textContent);
  const tip = document.getElementById("tip");

  function colour(value, scale) {
    if (value === null || Number.isNaN(value)) return "#f0f0f0";
    const t = Math.max(-1, Math.min(1, value / scale));
    const fade = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? `rgb(255,${fade},${fade})` : `rgb(${fade},${fade},255)`;
  }

  function heatmap(canvas, matrix, rows, columns, scale, describe, sequential) {
    // cells of data-cell pixels, or as large as fit 640 pixels (6 to 14) for long inputs
    const cell = Number(canvas.dataset.cell || Math.max(6, Math.min(14, Math.floor(640 / columns.length))));
    const left = 90, top = 8, bottom = 70, font = Math.min(11, cell + 1);
    const width = left + columns.length * cell + 8, height = top + rows.length * cell + bottom;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = width * ratio; canvas.height = height * ratio;
    canvas.style.width = width + "px"; canvas.style.height = height + "px";
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.fillStyle = "#fff"; g.fillRect(0, 0, width, height);
    rows.forEach((row, i) => {
      columns.forEach((_, j) => {
        const v = matrix[i][j];
        g.fillStyle = sequential ? `rgba(90,60,200,${Math.min(1, v / scale)})` : colour(v, scale);
        g.fillRect(left + j * cell, top + i * cell, cell - 1, cell - 1);
      });
      g.fillStyle = "#333"; g.font = font + "px sans-serif"; g.textAlign = "right";
      g.fillText(row, left - 4, top + i * cell + cell - 2);
    });
    g.save();
    columns.forEach((label, j) => {
      g.save();
      g.translate(left + j * cell + cell - 3, top + rows.length * cell + 4);
      g.rotate(-Math.PI / 2.6);
      g.textAlign = "right"; g.fillStyle = label.changed ? "#b00" : "#333";
      g.font = (label.changed ? "bold " : "") + Math.min(10, font) + "px sans-serif";
      g.fillText(label.text.slice(0, 14), 0, 0);
      g.restore();
    });
    g.restore();
    canvas.addEventListener("mousemove", (event) => {
      const box = canvas.getBoundingClientRect();
      const j = Math.floor((event.clientX - box.left - left) / cell), i = Math.floor((event.clientY - box.top - top) / cell);
      if (i < 0 || j < 0 || i >= rows.length || j >= columns.length) { tip.style.display = "none"; return; }
      tip.textContent = describe(i, j, matrix[i][j]);
      tip.style.left = event.clientX + 12 + "px"; tip.style.top = event.clientY + 12 + "px"; tip.style.display = "block";
    });
    canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  }

  document.querySelectorAll("canvas[data-blocks]").forEach((canvas) => {
    const example = data.blocks[canvas.dataset.blocks];
    const component = example.components[canvas.dataset.component];
    const columns = example.tokens.map((text, j) => ({ text, changed: example.changed[j] }));
    const rows = component.map((_, layer) => "layer " + layer);
    heatmap(canvas, component, rows, columns, example.scale, (i, j, v) =>
      `${canvas.dataset.component} layer ${i}, position ${j} '${example.tokens[j]}'` +
      (example.changed[j] ? ` (baseline '${example.baseline[j]}')` : "") +
      `: effect ${v === null ? "n/a" : v.toFixed(3)}`, false);
  });

  document.querySelectorAll("canvas[data-attention]").forEach((canvas) => {
    const example = data.attention[canvas.dataset.attention];
    const head = example.heads[canvas.dataset.head];
    const columns = example.tokens.map((text, j) => ({ text, changed: example.changed[j] }));
    const rows = example.tokens.map((text) => text.slice(0, 12));
    heatmap(canvas, head.pattern, rows, columns, 1, (i, j, v) =>
      `'${example.tokens[i]}' attends to '${example.tokens[j]}': ${v.toFixed(3)}`, true);
  });
})();
