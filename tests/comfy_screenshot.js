// Screenshots of UI-format workflows in the real ComfyUI web UI (headless Chromium via playwright-core), for the
// README's pictures. Run through tests/screenshot_workflows.py, which starts the server and shrinks the PNGs.
//
//   NODE_PATH=/path/to/node_modules node tests/comfy_screenshot.js <url> <request.json> <out_dir>
//
// request.json: {"workflows": {name: uiWorkflow}, "width": px, "height": px, "scale": device pixel ratio};
// writes <out_dir>/<name>.png: the graph fitted into the window, cut to its own bounds.
const fs = require("fs");
const path = require("path");
const { launch, openComfy } = require(path.join(__dirname, "comfy_browser.js"));

const [url, requestPath, outDir] = process.argv.slice(2);
const request = JSON.parse(fs.readFileSync(requestPath, "utf8"));

async function main() {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: request.width, height: request.height },
                                         deviceScaleFactor: request.scale });
    await openComfy(page, url);
    if (!(await page.evaluate(() => (app.extensions || []).some((e) => e.name === "OpenUni.Nodes")))) {
      throw new Error("the OpenUni extension did not load in the UI");
    }
    // The minimap, the canvas menu and the render statistics float over the graph; the picture is of the graph.
    await page.evaluate(async () => {
      for (const id of ["Comfy.Minimap.Visible", "Comfy.Graph.CanvasMenu", "Comfy.Graph.CanvasInfo"]) {
        await app.extensionManager.setting.set(id, false);
      }
    });
    for (const [name, wf] of Object.entries(request.workflows)) {
      const shot = await page.evaluate(async (wf) => {
        await app.loadGraphData(structuredClone(wf));
        // Fit the whole graph (title bars included) into the canvas with a margin, centred.
        const title = LiteGraph.NODE_TITLE_HEIGHT, margin = 30;
        let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
        for (const n of app.graph._nodes) {
          x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
          x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }
        const rect = app.canvas.canvas.getBoundingClientRect();
        const scale = Math.min(rect.width / (x1 - x0 + 2 * margin), rect.height / (y1 - y0 + 2 * margin));
        app.canvas.ds.scale = scale;
        app.canvas.ds.offset = [(rect.width / scale - (x1 - x0)) / 2 - x0, (rect.height / scale - (y1 - y0)) / 2 - y0];
        app.canvas.setDirty(true, true);
        const [ox, oy] = app.canvas.ds.offset;
        const clip = { x: rect.left + (x0 + ox - margin) * scale, y: rect.top + (y0 + oy - margin) * scale,
                       width: (x1 - x0 + 2 * margin) * scale, height: (y1 - y0 + 2 * margin) * scale };
        return { clip, missing: app.graph._nodes.map((n) => n.type).filter((t) => !LiteGraph.registered_node_types[t]) };
      }, wf);
      if (shot.missing.length) throw new Error(`${name}: node types missing in the UI: ${shot.missing}`);
      await page.waitForTimeout(800);
      await page.screenshot({ path: path.join(outDir, `${name}.png`), clip: shot.clip });
      console.log(`${name}: ${path.join(outDir, `${name}.png`)}`);
    }
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error("SCREENSHOT FAILED:", e); process.exit(1); });
