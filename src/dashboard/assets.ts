import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/**
 * The dashboard's static files: htmx (live updates: sections re-fetch themselves) and Chart.js
 * (the throughput chart), served from their installed packages, and the page's own script and
 * style, kept here as strings so that the built package needs no files beside its JavaScript.
 */

const require = createRequire(import.meta.url);

function packageFile(pkg: string, file: string): () => string {
  let text: string | null = null;
  return () => (text ??= readFileSync(join(dirname(require.resolve(pkg)), file), "utf8"));
}

export const htmxScript = packageFile("htmx.org", "htmx.min.js");
export const chartScript = packageFile("chart.js", "chart.umd.min.js");

/** Draws the throughput chart from its canvas's data-series attribute, again after every live update. */
export const dashboardScript = `
(function () {
  var charts = new WeakMap();
  function draw() {
    document.querySelectorAll("canvas[data-series]").forEach(function (canvas) {
      var series = JSON.parse(canvas.getAttribute("data-series"));
      var data = {
        labels: series.map(function (point) { return point.minute.slice(11, 16); }),
        datasets: [
          { label: "applied", data: series.map(function (point) { return point.applied; }), borderColor: "#2f7d32", backgroundColor: "#2f7d32" },
          { label: "dead", data: series.map(function (point) { return point.dead; }), borderColor: "#c62828", backgroundColor: "#c62828" }
        ]
      };
      var chart = charts.get(canvas);
      if (chart) { chart.data = data; chart.update("none"); return; }
      charts.set(canvas, new Chart(canvas, {
        type: "line",
        data: data,
        options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }
      }));
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
})();
`;

export const dashboardStyle = `
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
header{background:#1f2937;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.3rem 1rem;align-items:center}
header a{color:#e5e7eb;text-decoration:none}header a:hover{text-decoration:underline}
header strong{margin-right:1rem}
main{padding:1rem;max-width:1200px;margin:0 auto}
section{background:#fff;border:1px solid #e3e5e8;border-radius:6px;padding:.8rem 1rem;margin-bottom:1rem;overflow-x:auto}
h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:.2rem 0 .6rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eee;vertical-align:top}
th{font-weight:600;color:#555}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:.6rem}
.card{background:#fff;border:1px solid #e3e5e8;border-radius:6px;padding:.6rem .8rem}
.card .value{font-size:1.6rem;font-weight:600}.card .label{color:#666}
.bad{color:#c62828}.good{color:#2f7d32}.muted{color:#777}
pre{white-space:pre-wrap;word-break:break-word;background:#f3f4f6;padding:.5rem;border-radius:4px;margin:.2rem 0}
.banner{background:#fff8e1;border:1px solid #f0d58a;padding:.5rem .8rem;border-radius:6px;margin-bottom:1rem}
.notice{background:#e8f5e9;border:1px solid #a5d6a7;padding:.5rem .8rem;border-radius:6px;margin-bottom:1rem}
button{font:inherit;padding:.35rem .8rem;border-radius:4px;border:1px solid #888;background:#fff;cursor:pointer}
button.danger{border-color:#c62828;color:#c62828}
form.inline{display:inline}
.chart{position:relative;height:220px}
.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}
.filters label{display:flex;flex-direction:column;font-size:.85rem;color:#555}
input,select{font:inherit;padding:.25rem}
@media (max-width:600px){main{padding:.5rem}th,td{padding:.25rem .3rem}.card .value{font-size:1.3rem}}
`;
