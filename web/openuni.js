// OpenUni for ComfyUI: frontend extension.
// - OpenUni Caption, Chat and Prompt Enhance show their answer(s) on the node after they run.
// - OpenUni Sampler keeps width/height on multiples of 32 and offers aspect-ratio presets per variant.
// Uses only the long-standing extension API (app.registerExtension, onExecuted, addDOMWidget, widget callbacks).
// Limits (step, min, max) come from the node's own input definition (the server's /object_info), never repeated here.
import { app } from "../../scripts/app.js";

const CUSTOM = "custom";
// Nodes whose text output ({"ui": {"text": [...]}}) is shown on the node.
const TEXT_NODES = new Set(["OpenUniCaption", "OpenUniChat", "OpenUniPromptEnhance"]);
// [width, height, aspect]; OpenUni-B-512 and OpenUni-L-512 share the 512 px set.
const PRESETS = {
  "512": [[512, 512, "1:1"], [576, 448, "4:3"], [448, 576, "3:4"], [608, 416, "3:2"], [416, 608, "2:3"],
          [672, 384, "16:9"], [384, 672, "9:16"]],
  "1024": [[1024, 1024, "1:1"], [1152, 896, "4:3"], [896, 1152, "3:4"], [1216, 832, "3:2"], [832, 1216, "2:3"],
           [1344, 768, "16:9"], [768, 1344, "9:16"]],
};
const VARIANT_LABEL = { "512": "B/L-512", "1024": "L-1024" };

// spec: the widget's options from the node definition, e.g. {min: 32, max: 4096, step: 32, default: 512}.
export function snapToStep(value, spec) {
  const v = Math.round(Number(value) / spec.step) * spec.step;
  return Math.min(spec.max, Math.max(spec.min, Number.isFinite(v) ? v : spec.default));
}

function sideSpec(nodeData, name) {
  const [, options] = nodeData?.input?.required?.[name] ?? [];
  return options && options.step ? options : null;
}

function presetLabel(size, [w, h, aspect]) {
  return `${VARIANT_LABEL[size]} ${aspect} (${w}×${h})`;
}

function allPresets() {
  const out = [];
  for (const size of Object.keys(PRESETS)) for (const p of PRESETS[size]) out.push([presetLabel(size, p), p]);
  return out;
}

function findWidget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function setupSampler(node, specs) {
  const width = findWidget(node, "width");
  const height = findWidget(node, "height");
  if (!width || !height || !specs.width || !specs.height || findWidget(node, "aspect_preset")) return;
  const presets = allPresets();
  let syncing = false;

  const matchPreset = () => {
    const hit = presets.find(([, [w, h]]) => w === width.value && h === height.value);
    return hit ? hit[0] : CUSTOM;
  };

  const preset = node.addWidget("combo", "aspect_preset", CUSTOM, (label) => {
    const hit = presets.find(([l]) => l === label);
    if (!hit) return;
    syncing = true;
    try {
      width.value = hit[1][0];
      height.value = hit[1][1];
      width.callback?.(width.value);
      height.callback?.(height.value);
    } finally {
      syncing = false;
    }
    node.setDirtyCanvas?.(true, true);
  }, { values: [CUSTOM, ...presets.map(([l]) => l)], serialize: false });
  preset.serialize = false; // UI-only helper: kept out of both the saved workflow and the prompt
  preset.tooltip = "Aspect-ratio presets for each OpenUni variant (OpenUni-B/L-512 and OpenUni-L-1024); " +
    "sets width and height. Sizes stay multiples of 32.";

  for (const w of [width, height]) {
    const spec = specs[w.name];
    if (w.options) w.options.step2 = spec.step;
    const original = w.callback;
    w.callback = function (value, ...rest) {
      const snapped = snapToStep(value, spec);
      if (w.value !== snapped) w.value = snapped;
      const result = original?.call(this, snapped, ...rest);
      if (!syncing) preset.value = matchPreset();
      return result;
    };
  }
  preset.value = matchPreset();
  node.openuniSyncPreset = () => { preset.value = matchPreset(); };
}

function captionWidget(node) {
  let widget = findWidget(node, "caption_text");
  if (widget) return widget;
  const textarea = document.createElement("textarea");
  textarea.readOnly = true;
  textarea.className = "comfy-multiline-input openuni-caption";
  textarea.placeholder = "The answer appears here after the node runs.";
  textarea.style.opacity = "0.85";
  widget = node.addDOMWidget("caption_text", "openuni_caption", textarea, {
    getValue: () => textarea.value,
    setValue: (v) => { textarea.value = v ?? ""; },
    serialize: false,
    hideOnZoom: false,
  });
  widget.serialize = false; // display only: not part of the saved workflow or the prompt
  widget.inputEl = textarea;
  return widget;
}

export function showCaption(node, texts) {
  const widget = captionWidget(node);
  const list = Array.isArray(texts) ? texts : [texts];
  const value = list.length > 1 ? list.map((t, i) => `[${i + 1}] ${t}`).join("\n\n") : (list[0] ?? "");
  widget.value = value;
  if (widget.inputEl) widget.inputEl.value = value;
  const size = node.computeSize?.();
  if (size) node.setSize([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "OpenUni.Nodes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (TEXT_NODES.has(nodeData.name)) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = onNodeCreated?.apply(this, arguments);
        captionWidget(this);
        return r;
      };
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        if (message?.text) showCaption(this, message.text);
      };
    } else if (nodeData.name === "OpenUniSampler") {
      const specs = { width: sideSpec(nodeData, "width"), height: sideSpec(nodeData, "height") };
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = onNodeCreated?.apply(this, arguments);
        setupSampler(this, specs);
        return r;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const r = onConfigure?.apply(this, arguments);
        this.openuniSyncPreset?.(); // a loaded workflow brings its own width/height
        return r;
      };
    }
  },
});
