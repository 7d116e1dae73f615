"""Test helpers for a REAL ComfyUI: a throw-away base directory, the server process, HTTP and websocket clients.

Standard library only, so the tests run from any Python; the server itself runs in ComfyUI's own
Python (`$COMFYUI_PYTHON`, else `$COMFYUI_DIR/venv/bin/python` or `.venv/bin/python`, else this one).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "comfyui-openuni"  # a hyphenated folder name, as users clone it
TINY_FILES = {"checkpoint": "openuni_tiny_b.safetensors", "mllm": "InternVL3-tiny", "sana": "Sana-tiny_diffusers",
              "vae": "dc-ae-tiny-diffusers"}


REQUIRE_ENV = "OPENUNI_REQUIRE_E2E"  # CI sets it to 1: a missing ComfyUI or tool fails the tests instead of skipping


def comfy_dir() -> Path | None:
    d = os.environ.get("COMFYUI_DIR")
    return Path(d) if d and (Path(d) / "main.py").is_file() else None


def comfy_problem() -> str | None:
    """Why no real ComfyUI can be used here, or None."""
    d = os.environ.get("COMFYUI_DIR")
    if not d:
        return "COMFYUI_DIR is not set (point it at a ComfyUI checkout)"
    if not (Path(d) / "main.py").is_file():
        return f"COMFYUI_DIR={d} holds no main.py"
    return None


def skip_or_fail(problems) -> None:
    """For the tests that need a real ComfyUI (and tools): skip them, naming what is missing, on a developer's
    machine; when $OPENUNI_REQUIRE_E2E is 1 (CI sets it) fail them with that reason instead, so CI can never
    pass them as skipped."""
    import pytest

    reason = "; ".join(p for p in problems if p)
    if not reason:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def comfy_python(cdir: Path) -> str:
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for cand in (cdir / "venv" / "bin" / "python", cdir / ".venv" / "bin" / "python",
                 cdir / "venv" / "Scripts" / "python.exe"):
        if cand.exists():
            return str(cand)
    return sys.executable


def comfy_commit(cdir: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(cdir), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    marker = cdir / "COMMIT.txt"
    if marker.is_file():
        for line in marker.read_text().splitlines():
            if line.startswith("commit:"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def prepare_base(base: Path, python: str) -> None:
    """custom_nodes/comfyui-openuni → this repo; tiny models in models/openuni/; input/example.png.

    The tiny models are written by the server's own Python (its transformers/diffusers versions)."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    script = f"""
import shutil, sys
from pathlib import Path
import numpy as np
from PIL import Image
from openuni_core.tiny import write_tiny_models
base = Path({str(base)!r})
m = write_tiny_models(base / "tiny_src", "tiny-B", seed=0)
root = base / "models" / "openuni"
for sub in ("mllm", "sana", "vae"):
    (root / sub).mkdir(parents=True, exist_ok=True)
shutil.copy(m.checkpoint_safetensors, root / {TINY_FILES['checkpoint']!r})
shutil.copytree(m.mllm_original, root / "mllm" / {TINY_FILES['mllm']!r})
shutil.copytree(m.sana, root / "sana" / {TINY_FILES['sana']!r})
shutil.copytree(m.vae, root / "vae" / {TINY_FILES['vae']!r})
extra = base / "extra_models" / "openuni_more"
extra.mkdir(parents=True)
shutil.copy(m.checkpoint, extra / "openuni_tiny_b_extra.pth")
(base / "input").mkdir(exist_ok=True)
rng = np.random.RandomState(0)
Image.fromarray((rng.rand(96, 128, 3) * 255).astype("uint8")).save(base / "input" / "example.png")
rgba = (rng.rand(128, 128, 4) * 255).astype("uint8")
rgba[..., 3] = 255
rgba[32:96, 32:96, 3] = 0  # transparent = LoadImage's MASK: exactly latent cells 1..2 of 4x4
Image.fromarray(rgba, "RGBA").save(base / "input" / "example_inpaint.png")
import json, torch
from safetensors.torch import load_file, save_file
sana = load_file(str(next((m.sana / "transformer").glob("*.safetensors"))))
gen = torch.Generator().manual_seed(0)
lora = {{}}
for key, w in sana.items():
    if key.endswith(("to_q.weight", "to_v.weight")) and w.ndim == 2:
        name = "transformer." + key[: -len(".weight")]
        lora[name + ".lora_A.weight"] = torch.randn(4, w.shape[1], generator=gen) * 0.1
        lora[name + ".lora_B.weight"] = torch.randn(w.shape[0], 4, generator=gen) * 0.1
(base / "models" / "loras").mkdir(parents=True, exist_ok=True)
save_file(lora, str(base / "models" / "loras" / "sana_lora.safetensors"), metadata={{
    "lora_adapter_metadata": json.dumps({{"transformer.r": 4, "transformer.lora_alpha": 4}})}})
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    subprocess.run([python, "-c", script], check=True, env=env, capture_output=True, timeout=300)
    shutil.rmtree(base / "tiny_src", ignore_errors=True)
    (base / "extra_model_paths.yaml").write_text(
        f"openuni_extra:\n    base_path: {base / 'extra_models'}\n    openuni: openuni_more\n")


@contextlib.contextmanager
def running_server(cdir: Path, base: Path, extra_args=()):
    """A real ComfyUI on 127.0.0.1 over a throw-away base folder with the pack and the tiny models."""
    python = comfy_python(cdir)
    prepare_base(base, python)
    server = ComfyServer(cdir, base, python, extra_args).start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, cdir: Path, base: Path, python: str, extra_args=()):
        self.cdir, self.base, self.python = cdir, base, python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.extra_args = list(extra_args)
        self.proc = None

    def start(self, timeout: float = 300) -> "ComfyServer":
        args = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--base-directory",
                str(self.base), "--disable-auto-launch", "--extra-model-paths-config",
                str(self.base / "extra_model_paths.yaml"), *self.extra_args]
        if not os.environ.get("COMFYUI_TEST_GPU"):  # tiny models: the CPU is quick and deterministic
            args.append("--cpu")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)  # the pack must work from custom_nodes alone
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=self.cdir, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not start in {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ----- HTTP ---------------------------------------------------------------------------------------------
    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.load(r)

    def post(self, path: str, payload) -> tuple[int, object]:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                body = r.read()
                return r.status, (json.loads(body) if body.strip() else None)
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, body.decode(errors="replace")

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": client_id or "openuni-tests"})
        if status != 200:
            raise AssertionError(f"/prompt refused the prompt ({status}): {body}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log()[-3000:]}")

    def run(self, prompt: dict, timeout: float = 300, client_id: str | None = None) -> dict:
        return self.wait(self.queue(prompt, client_id), timeout)


class WebSocket:
    """Just enough of RFC 6455 to read ComfyUI's status/progress messages (text frames)."""

    def __init__(self, host: str, port: int, path: str):
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake failed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        self.sock.settimeout(None)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return buf

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
        self.sock.sendall(header + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self):
        """The next complete message: str (text) or bytes (binary); None when the server closes."""
        parts, first_opcode = [], None
        while True:
            b0, b1 = self._exact(2)
            opcode, length = b0 & 0x0F, b1 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._exact(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else None
            data = self._exact(length)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 8:
                return None
            if opcode == 9:
                self._send(10, data)
                continue
            if opcode == 10:
                continue
            first_opcode = first_opcode or opcode
            parts.append(data)
            if b0 & 0x80:
                payload = b"".join(parts)
                return payload.decode() if first_opcode == 1 else payload

    def close(self) -> None:
        try:
            self._send(8)
        except OSError:
            pass
        self.sock.close()


class Listener:
    """Collects ComfyUI's JSON websocket messages for one client id in a background thread."""

    def __init__(self, server: ComfyServer):
        self.client_id = f"openuni-{uuid.uuid4().hex[:8]}"
        self.ws = WebSocket("127.0.0.1", server.port, f"/ws?clientId={self.client_id}")
        self.messages: list[dict] = []
        self.binary: list[tuple[float, int, int]] = []  # (time, event type, bytes) of binary messages (previews)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                msg = self.ws.recv()
                if msg is None:
                    return
                with self._lock:
                    if isinstance(msg, str):
                        self.messages.append(json.loads(msg))
                    else:  # ComfyUI's binary frames: a 4-byte big-endian event type, then the payload
                        self.binary.append((time.time(), struct.unpack(">I", msg[:4])[0], len(msg)))
        except (OSError, ConnectionError, ValueError):
            return

    def of(self, type_: str, prompt_id: str | None = None) -> list[dict]:
        with self._lock:
            return [m["data"] for m in self.messages if m.get("type") == type_
                    and (prompt_id is None or m.get("data", {}).get("prompt_id") == prompt_id)]

    def wait_for(self, predicate, timeout: float = 120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                for m in self.messages:
                    if predicate(m):
                        return m
            time.sleep(0.05)
        raise TimeoutError("expected websocket message did not arrive")

    def close(self) -> None:
        self.ws.close()
