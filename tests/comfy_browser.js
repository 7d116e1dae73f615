// Headless Chromium on the real ComfyUI web UI, shared by tests/comfy_web_check.js and tests/comfy_screenshot.js.
const { chromium } = require("playwright-core");

// Chromium from $CHROMIUM (default Debian's /usr/bin/chromium), with nothing that reaches the network.
async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// Load the UI at `url` in `page` and wait until the graph and the OpenUni extension are there (or 60 s passed for
// the extension: the caller checks whether it loaded).
async function openComfy(page, url) {
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120000 });
  await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph, null, { timeout: 120000 });
  await page.waitForFunction(() => (window.app.extensions || []).some((e) => e.name === "OpenUni.Nodes"),
    null, { timeout: 60000 }).catch(() => {});
  await page.waitForTimeout(1500);
  await page.keyboard.press("Escape");
}

module.exports = { launch, openComfy };
