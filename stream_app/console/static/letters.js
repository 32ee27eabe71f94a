// Dead letters page: "select all" and the count of the selected letters.
(function () {
  "use strict";
  function boxes() { return Array.prototype.slice.call(document.querySelectorAll("input.select-letter")); }
  function update() {
    var all = boxes();
    var chosen = all.filter(function (box) { return box.checked; }).length;
    var count = document.getElementById("selected-count");
    var button = document.getElementById("redrive-button");
    var master = document.getElementById("select-all");
    if (count) { count.textContent = chosen + " selected"; }
    if (button) { button.disabled = chosen === 0; }
    if (master) { master.checked = all.length > 0 && chosen === all.length; master.indeterminate = chosen > 0 && chosen < all.length; }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var master = document.getElementById("select-all");
    if (master) {
      master.hidden = false;
      master.addEventListener("change", function () {
        boxes().forEach(function (box) { box.checked = master.checked; });
        update();
      });
    }
    boxes().forEach(function (box) { box.addEventListener("change", update); });
    update();
  });
})();
