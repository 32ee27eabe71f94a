// A workflow run's graph: Cytoscape.js over the elements the page put in #run-graph, nodes
// coloured by status (the status is in each label too), and a side panel with the facts of the
// node chosen in the graph or in the nodes table. Everything is written as text, never HTML.
(function () {
  "use strict";
  var COLOURS = {
    pending: "#8a94a6",
    processed: "#1f5fbf",
    final: "#1b7a3d",
    failed: "#b3261e",
    cancelled: "#9a6300"
  };

  function term(list, name, value) {
    var dt = document.createElement("dt");
    var dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value;
    list.appendChild(dt);
    list.appendChild(dd);
  }

  function showNode(panel, facts) {
    panel.textContent = "";
    var title = document.createElement("h3");
    title.textContent = facts.name + " (" + facts.status + ")";
    panel.appendChild(title);
    var list = document.createElement("dl");
    term(list, "Id", facts.id);
    term(list, "Status", facts.status);
    term(list, "Attempts", String(facts.attempts));
    term(list, "Created", facts.created);
    term(list, "Processed", facts.processed);
    term(list, "Took", facts.took);
    if (facts.fork) { term(list, "Fork", "opens a fork"); }
    if (facts.joins) { term(list, "Joins", facts.joins + " forks"); }
    if (facts.message) { term(list, "Error", facts.message); }
    list.setAttribute("data-testid", "node-facts");
    panel.appendChild(list);
    var label = document.createElement("h4");
    label.textContent = "Payload";
    panel.appendChild(label);
    var payload = document.createElement("pre");
    payload.textContent = JSON.stringify(facts.payload, null, 2);
    panel.appendChild(payload);
  }

  function style() {
    var rules = [
      {
        selector: "node",
        style: {
          label: "data(label)",
          "text-wrap": "wrap",
          "text-valign": "center",
          "text-halign": "center",
          color: "#ffffff",
          "font-size": 13,
          shape: "round-rectangle",
          width: 120,
          height: 44,
          "border-width": 0
        }
      },
      {
        selector: "node:selected",
        style: { "border-width": 4, "border-color": "#ffbf47" }
      },
      {
        selector: "edge",
        style: {
          width: 2,
          "line-color": "#5b6475",
          "target-arrow-color": "#5b6475",
          "target-arrow-shape": "triangle",
          "curve-style": "bezier",
          label: "data(label)",
          "font-size": 11,
          color: "#5b6475",
          "text-background-color": "#ffffff",
          "text-background-opacity": 1
        }
      },
      { selector: 'edge[style = "fork"]', style: { width: 4 } },
      { selector: 'edge[style = "join"]', style: { "line-style": "dotted" } },
      { selector: 'edge[style = "error"]', style: { "line-style": "dashed", "line-color": COLOURS.failed } }
    ];
    Object.keys(COLOURS).forEach(function (status) {
      rules.push({
        selector: 'node[status = "' + status + '"]',
        style: { "background-color": COLOURS[status] }
      });
    });
    return rules;
  }

  // Cytoscape adds a <style> element (which the CSP refuses) unless an element has this id;
  // the rule it would add (the container positioned) is in console.css.
  function claimStylesheet() {
    var id = "__________cytoscape_stylesheet";
    if (document.getElementById(id)) { return; }
    var marker = document.createElement("meta");
    marker.id = id;
    marker.name = "cytoscape-stylesheet";
    marker.content = "console.css";
    document.head.appendChild(marker);
  }

  function draw() {
    var box = document.getElementById("run-graph-canvas");
    var panel = document.getElementById("node-panel");
    var elements = window.streamApp.jsonBlock("run-graph");
    if (!box || !panel || !elements || typeof window.cytoscape !== "function") { return; }
    claimStylesheet();
    var cy = window.cytoscape({
      container: box,
      elements: elements,
      style: style(),
      layout: { name: "breadthfirst", directed: true, spacingFactor: 1.1, padding: 16 },
      maxZoom: 1.6
    });
    window.streamApp.runGraph = cy;
    cy.on("tap", "node", function (event) {
      cy.nodes().unselect();
      event.target.select();
      showNode(panel, event.target.data());
    });
    document.querySelectorAll("button.show-node").forEach(function (button) {
      button.addEventListener("click", function () {
        var node = cy.getElementById(button.getAttribute("data-node"));
        if (node.empty()) { return; }
        cy.nodes().unselect();
        node.select();
        showNode(panel, node.data());
        panel.scrollIntoView({ block: "nearest" });
      });
    });
  }

  window.streamApp = window.streamApp || {};
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
