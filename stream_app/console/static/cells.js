// The cell page: checks a message body against the behaviour's JSON Schema before it is sent,
// and refreshes the cell's panels for a few seconds after a send.
(function () {
  "use strict";

  // A JSON value's JSON Schema type ("integer" for whole numbers).
  function typeOf(value) {
    if (value === null) { return "null"; }
    if (Array.isArray(value)) { return "array"; }
    if (typeof value === "number") { return Number.isInteger(value) ? "integer" : "number"; }
    return typeof value;
  }

  function hasType(value, type) {
    var actual = typeOf(value);
    return actual === type || (type === "number" && actual === "integer");
  }

  function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

  function show(value) { return JSON.stringify(value); }

  // A schema with its $ref (to "#/$defs/<name>") followed.
  function resolve(schema, root) {
    var seen = 0;
    while (schema && typeof schema.$ref === "string" && seen < 32) {
      var name = schema.$ref.replace(/^#\/\$defs\//, "");
      schema = (root.$defs || {})[name];
      seen += 1;
    }
    return schema || {};
  }

  function checkAlternatives(value, options, root, where, errors) {
    var passes = options.some(function (option) {
      var found = [];
      check(value, option, root, where, found);
      return found.length === 0;
    });
    if (passes) { return; }
    var notNull = options.filter(function (option) { return resolve(option, root).type !== "null"; });
    if (notNull.length === 1 && value !== null) {
      check(value, notNull[0], root, where, errors);
    } else {
      errors.push(where + ": matches none of the allowed forms");
    }
  }

  function checkNumber(value, schema, where, errors) {
    if ("minimum" in schema && value < schema.minimum) { errors.push(where + ": must be at least " + schema.minimum); }
    if ("maximum" in schema && value > schema.maximum) { errors.push(where + ": must be at most " + schema.maximum); }
    if ("exclusiveMinimum" in schema && value <= schema.exclusiveMinimum) { errors.push(where + ": must be more than " + schema.exclusiveMinimum); }
    if ("exclusiveMaximum" in schema && value >= schema.exclusiveMaximum) { errors.push(where + ": must be less than " + schema.exclusiveMaximum); }
    if (schema.multipleOf && Math.abs(value / schema.multipleOf - Math.round(value / schema.multipleOf)) > 1e-9) {
      errors.push(where + ": must be a multiple of " + schema.multipleOf);
    }
  }

  function checkString(value, schema, where, errors) {
    var length = Array.from(value).length;
    if ("minLength" in schema && length < schema.minLength) { errors.push(where + ": must have at least " + schema.minLength + " character(s)"); }
    if ("maxLength" in schema && length > schema.maxLength) { errors.push(where + ": must have at most " + schema.maxLength + " character(s)"); }
    if (typeof schema.pattern === "string") {
      var pattern = null;
      try { pattern = new RegExp(schema.pattern, "u"); } catch (ignored) { pattern = null; }
      if (pattern && !pattern.test(value)) { errors.push(where + ": must match " + schema.pattern); }
    }
  }

  function checkArray(value, schema, root, where, errors) {
    if ("minItems" in schema && value.length < schema.minItems) { errors.push(where + ": must have at least " + schema.minItems + " item(s)"); }
    if ("maxItems" in schema && value.length > schema.maxItems) { errors.push(where + ": must have at most " + schema.maxItems + " item(s)"); }
    var prefix = schema.prefixItems || [];
    value.forEach(function (item, index) {
      var itemSchema = index < prefix.length ? prefix[index] : schema.items;
      if (itemSchema) { check(item, itemSchema, root, where + "[" + index + "]", errors); }
    });
  }

  function checkObject(value, schema, root, where, errors) {
    var properties = schema.properties || {};
    var prefix = where === "body" ? "" : where + ".";
    (schema.required || []).forEach(function (name) {
      if (!Object.prototype.hasOwnProperty.call(value, name)) { errors.push(prefix + name + ": is required"); }
    });
    Object.keys(value).forEach(function (name) {
      if (Object.prototype.hasOwnProperty.call(properties, name)) {
        check(value[name], properties[name], root, prefix + name, errors);
      } else if (schema.additionalProperties === false) {
        var known = Object.keys(properties);
        errors.push(prefix + name + ": is not allowed" + (known.length ? " (known: " + known.join(", ") + ")" : ""));
      } else if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
        check(value[name], schema.additionalProperties, root, prefix + name, errors);
      }
    });
  }

  // Push onto errors what is wrong with value under schema (the subset pydantic emits).
  function check(value, schema, root, where, errors) {
    schema = resolve(schema, root);
    if (schema.anyOf || schema.oneOf) { checkAlternatives(value, schema.anyOf || schema.oneOf, root, where, errors); }
    (schema.allOf || []).forEach(function (part) { check(value, part, root, where, errors); });
    if ("const" in schema && !same(value, schema.const)) { errors.push(where + ": must be " + show(schema.const)); }
    if (schema.enum && !schema.enum.some(function (option) { return same(value, option); })) {
      errors.push(where + ": must be one of " + schema.enum.map(show).join(", "));
    }
    if (schema.type) {
      var types = [].concat(schema.type);
      if (!types.some(function (type) { return hasType(value, type); })) {
        errors.push(where + ": must be " + types.join(" or ") + ", not " + typeOf(value));
        return;
      }
    }
    var kind = typeOf(value);
    if (kind === "integer" || kind === "number") { checkNumber(value, schema, where, errors); }
    if (kind === "string") { checkString(value, schema, where, errors); }
    if (kind === "array") { checkArray(value, schema, root, where, errors); }
    if (kind === "object") { checkObject(value, schema, root, where, errors); }
  }

  // The body schema of message type `type` in a behaviour's envelope schema.
  function bodySchema(root, type) {
    var defs = root.$defs || {};
    var names = Object.keys(defs);
    for (var i = 0; i < names.length; i += 1) {
      var properties = defs[names[i]].properties || {};
      if (properties.type && properties.type.const === type) { return properties.body || {}; }
    }
    return null;
  }

  // What is wrong with the text of a body for message type `type` (empty: nothing).
  function bodyErrors(root, type, text) {
    var schema = bodySchema(root, type);
    if (schema === null) { return ["type: unknown message type " + show(type)]; }
    var value;
    try {
      value = text.trim() === "" ? {} : JSON.parse(text);
    } catch (error) {
      return ["body: not JSON (" + error.message + ")"];
    }
    if (typeOf(value) !== "object") { return ["body: must be a JSON object, not " + typeOf(value)]; }
    var errors = [];
    check(value, schema, root, "body", errors);
    return errors;
  }

  // A starting body for a message type: defaults, and a placeholder for each required field.
  function sampleBody(root, type) {
    var schema = resolve(bodySchema(root, type) || {}, root);
    var sample = {};
    var properties = schema.properties || {};
    var required = schema.required || [];
    Object.keys(properties).forEach(function (name) {
      var field = resolve(properties[name], root);
      if ("default" in field) { sample[name] = field.default; return; }
      if (required.indexOf(name) < 0) { return; }
      var placeholders = { string: "", integer: field.minimum || 0, number: field.minimum || 0, boolean: false, array: [], object: {} };
      sample[name] = Object.prototype.hasOwnProperty.call(placeholders, field.type) ? placeholders[field.type] : null;
    });
    return JSON.stringify(sample, null, 2);
  }

  function setUp() {
    var form = document.getElementById("send-form");
    var root = window.streamApp && window.streamApp.jsonBlock("cell-schema");
    if (!form || !root) { return; }
    var type = document.getElementById("send-type");
    var body = document.getElementById("send-body");
    var list = document.getElementById("send-errors");
    var button = document.getElementById("send-button");
    var sample = "";

    function validate() {
      var errors = bodyErrors(root, type.value, body.value);
      list.replaceChildren.apply(list, errors.map(function (message) {
        var item = document.createElement("li");
        item.textContent = message;
        return item;
      }));
      button.disabled = errors.length > 0;
      body.setAttribute("aria-invalid", errors.length > 0 ? "true" : "false");
      return errors.length === 0;
    }

    function prefill() {
      if (body.value.trim() === "" || body.value.trim() === "{}" || body.value === sample) {
        sample = sampleBody(root, type.value);
        body.value = sample;
      }
      validate();
    }

    type.addEventListener("change", prefill);
    body.addEventListener("input", validate);
    form.addEventListener("submit", function (event) {
      if (!validate()) { event.preventDefault(); event.stopImmediatePropagation(); }
    }, true);
    form.addEventListener("htmx:beforeRequest", function (event) {
      if (!validate()) { event.preventDefault(); }
    });
    form.addEventListener("htmx:afterRequest", function (event) {
      if (!event.detail.successful) { return; }
      [400, 1200, 2500, 4500].forEach(function (delay) {
        window.setTimeout(function () { document.body.dispatchEvent(new CustomEvent("cell-refresh")); }, delay);
      });
    });
    prefill();
  }

  window.streamApp = window.streamApp || {};
  window.streamApp.bodyErrors = bodyErrors;
  window.streamApp.sampleBody = sampleBody;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();
