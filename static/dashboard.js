// The admin dashboard's charts: reads the report data the page embeds (no fetch, no
// inline script), draws with the vendored Chart.js (static/vendor/, from npm).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  function col(table, name) { return table.columns.indexOf(name); }
  function line(id, table, labels, series, markers) {
    var el = document.getElementById(id);
    if (!el || !table.rows.length) return;
    new Chart(el, {
      type: "line",
      data: { labels: labels, datasets: series },
      options: {
        animation: false, responsive: false,
        scales: { y: { min: 0, max: 1, title: { display: true, text: "rate" } } },
        plugins: { title: { display: true, text: markers } }
      }
    });
  }
  function bars(id, table, dim) {
    var el = document.getElementById(id);
    if (!el || !table.rows.length) return;
    var names = ["accept_all", "reject_all", "custom", "withdraw", "gpc"];
    new Chart(el, {
      type: "bar",
      data: {
        labels: table.rows.map(function (r) { return r[col(table, dim)]; }),
        datasets: names.map(function (a) {
          return { label: a, data: table.rows.map(function (r) { return r[col(table, a)]; }) };
        })
      },
      options: { animation: false, responsive: false, scales: { x: { stacked: true }, y: { stacked: true } } }
    });
  }
  var daily = data.daily;
  var days = [], rate = {}, versionOf = {};
  daily.rows.forEach(function (r) {
    var d = r[col(daily, "day")];
    if (days.indexOf(d) < 0) days.push(d);
    rate[d] = rate[d] || { a: 0, n: 0 };
    rate[d].a += r[col(daily, "accept_all")];
    rate[d].n += r[col(daily, "total")];
    var v = r[col(daily, "banner_version")];
    if (!(v in versionOf)) versionOf[v] = d;
  });
  var markers = Object.keys(versionOf).map(function (v) { return v + " from " + versionOf[v]; });
  line("optin", daily, days.map(function (d) {
    var v = Object.keys(versionOf).filter(function (k) { return versionOf[k] === d; });
    return v.length ? d + " ▲" + v.join(",") : d;
  }), [{
    label: "opt-in rate (accept_all / decisions)",
    data: days.map(function (d) { return rate[d].n ? rate[d].a / rate[d].n : 0; })
  }], "banner versions: " + markers.join("; "));
  bars("regions", data.regions, "region");
  bars("languages", data.languages, "language");
  document.body.setAttribute("data-charts-ready", "true");
})();
