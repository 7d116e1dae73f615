// Drives the real ComfyUI web UI in headless Chromium (playwright-core + Debian's chromium) for
// tests/test_web_frontend.py. Prints one JSON object with what it saw.
//
//   NODE_PATH=/opt/pwtest/node_modules node tests/comfy_web_check.js <url> <request.json> <out.json> <shot.png>
//
// request.json: {"workflows": {name: uiWorkflow}, "tiny": {name: apiPromptWithTinyModels},
//                "run": {key: [workflowName, nodeType]}, "old": uiWorkflow, "sampler": name}
// Each "run" entry is queued from the UI with the tiny models; the text shown on the node of nodeType is read back.
const fs = require("fs");
const path = require("path");
const { launch, openComfy } = require(path.join(__dirname, "comfy_browser.js"));

const [url, requestPath, outPath, shotPath] = process.argv.slice(2);
const request = JSON.parse(fs.readFileSync(requestPath, "utf8"));

async function main() {
  const browser = await launch();
  const result = { pageErrors: [], consoleErrors: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    page.on("pageerror", (e) => result.pageErrors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") result.consoleErrors.push(m.text()); });
    await openComfy(page, url);

    result.extensionLoaded = await page.evaluate(() => (app.extensions || []).some((e) => e.name === "OpenUni.Nodes"));
    result.registered = await page.evaluate(() => Object.keys(LiteGraph.registered_node_types).filter((t) => t.startsWith("OpenUni")));

    // 1. Every UI-format example loads (no missing node types) and converts to the same API prompt.
    result.workflows = {};
    for (const [name, wf] of Object.entries(request.workflows)) {
      result.workflows[name] = await page.evaluate(async (wf) => {
        await app.loadGraphData(structuredClone(wf));
        const nodes = app.graph._nodes;
        const missing = nodes.map((n) => n.type).filter((t) => !LiteGraph.registered_node_types[t]);
        const prompt = await app.graphToPrompt();
        const saved = app.graph.serialize();
        return {
          missing,
          nodeCount: nodes.length,
          output: prompt.output,
          widgetsValues: Object.fromEntries(saved.nodes.map((n) => [String(n.id), n.widgets_values])),
        };
      }, wf);
    }

    // 2. Width/height snapping and aspect presets on OpenUni Sampler.
    result.sampler = await page.evaluate(async (wf) => {
      const wide = structuredClone(wf);
      const saved = wide.nodes.find((n) => n.type === "OpenUniSampler");
      saved.widgets_values[5] = 1344; // width, after seed, control_after_generate, steps, cfg, sampler
      saved.widgets_values[6] = 768;
      await app.loadGraphData(wide);
      const node = app.graph._nodes.find((n) => n.type === "OpenUniSampler");
      const w = (name) => node.widgets.find((x) => x.name === name);
      const out = { widgetNames: node.widgets.map((x) => x.name), presetOnLoad: w("aspect_preset").value,
                    loadedSize: [w("width").value, w("height").value] };
      w("width").callback(500);
      w("height").callback(47);
      out.snapped = [w("width").value, w("height").value];
      const preset = w("aspect_preset");
      out.presets = preset.options.values;
      const label = preset.options.values.find((v) => v.includes("L-1024") && v.includes("16:9"));
      preset.value = label;
      preset.callback(label);
      out.afterPreset = [w("width").value, w("height").value];
      w("width").callback(1024);
      out.presetAfterEdit = preset.value;
      const prompt = await app.graphToPrompt();
      out.promptKeys = Object.keys(prompt.output[String(node.id)].inputs);
      return out;
    }, request.workflows[request.sampler]);

    // 3. A caption workflow saved before the preset input existed: its positional widget values still land on the
    //    same widgets, and the new input takes its default.
    result.old = await page.evaluate(async (wf) => {
      await app.loadGraphData(structuredClone(wf));
      const node = app.graph._nodes.find((n) => n.type === "OpenUniCaption");
      const prompt = await app.graphToPrompt();
      const saved = node.widgets.filter((w) => w.serialize !== false && w.options?.serialize !== false);
      return { inputs: prompt.output[String(node.id)].inputs,
               widgets: Object.fromEntries(saved.map((w) => [w.name, w.value])) };
    }, request.old);

    // 4. Run workflows with the tiny models from the UI's Queue and read the text shown on the node; a screenshot
    //    of each (the first at shotPath, the others beside it named after their key).
    for (const [key, [name, nodeType]] of Object.entries(request.run)) {
      result[key] = await page.evaluate(async ({ wf, tiny, nodeType }) => {
        await app.loadGraphData(structuredClone(wf));
        for (const node of app.graph._nodes) {
          const values = tiny[String(node.id)]?.inputs || {};
          for (const widget of node.widgets || []) {
            if (widget.name in values && !Array.isArray(values[widget.name])) widget.value = values[widget.name];
          }
        }
        const node = app.graph._nodes.find((n) => n.type === nodeType);
        const widget = node.widgets.find((x) => x.name === "caption_text");
        const before = widget ? widget.value : null;
        await app.queuePrompt(0, 1);
        const deadline = Date.now() + 180000;
        while (Date.now() < deadline && !(widget && widget.value)) await new Promise((r) => setTimeout(r, 250));
        const textarea = widget?.inputEl;
        return {
          hasWidget: !!widget,
          before,
          text: widget ? widget.value : null,
          domText: textarea ? textarea.value : null,
          domVisible: textarea ? textarea.isConnected && textarea.getBoundingClientRect().height > 0 : false,
          nodeId: node.id,
        };
      }, { wf: request.workflows[name], tiny: request.tiny[name], nodeType });
      await page.waitForTimeout(500);
      const first = key === Object.keys(request.run)[0];
      await page.screenshot({ path: first ? shotPath : shotPath.replace(/\.png$/, `_${key}.png`) });
    }
  } finally {
    await browser.close();
  }
  fs.writeFileSync(outPath, JSON.stringify(result, null, 2));
}

main().catch((e) => { console.error("WEB CHECK FAILED:", e); process.exit(1); });
