// Sortable tables of the book: every table a chapter recorded (run.table; staged by dfbook.book inside
// [data-dfbook-table]) and any table.dfbook-sortable. Click a header to sort by that column, click again to
// reverse. A cell whose text is a number sorts as that number, the others as text. No dependencies.
(function () {
  function key(cell) {
    var t = cell.textContent.trim();
    if (t === "" || t === "NaN" || t === "nan") { return NaN; }
    return /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(t) ? parseFloat(t) : t;
  }
  function sortBy(table, col, asc) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      var nx = typeof x === "number", ny = typeof y === "number";
      if (nx && ny) {
        if (isNaN(x)) { return 1; }
        if (isNaN(y)) { return -1; }
        return asc ? x - y : y - x;
      }
      return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function init() {
    var tables = document.querySelectorAll("table.dfbook-sortable, [data-dfbook-table] table");
    Array.prototype.forEach.call(tables, function (table) {
      if (!table.tHead || !table.tBodies.length) { return; }
      var head = table.tHead.rows[table.tHead.rows.length - 1];  // pandas' index-name row comes last
      var heads = head.cells;
      Array.prototype.forEach.call(heads, function (th, col) {
        th.style.cursor = "pointer";
        th.setAttribute("title", "sort by this column");
        th.addEventListener("click", function () {
          var asc = th.getAttribute("data-order") !== "asc";
          Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("data-order"); });
          th.setAttribute("data-order", asc ? "asc" : "desc");
          sortBy(table, col, asc);
        });
      });
      table.setAttribute("data-sortable-ready", "1");
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
