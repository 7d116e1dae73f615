"""The example workflows: up to date with tests/comfy_workflows.py, and valid against the nodes' declarations."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import comfy_workflows as wf  # noqa: E402
from comfy_pack import load_pack  # noqa: E402

CORE_OUTPUTS = {t: [o for _, o in shape[2]] for t, shape in wf.CORE_NODES.items()}
NAMES = sorted(wf.WORKFLOWS)


@pytest.fixture(scope="module")
def pack():
    return load_pack("openuni_pack")


def test_committed_files_match_the_generator(pack):
    rendered = wf.render(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert {p.name for p in rendered} == {f"{n}.json" for n in NAMES}
    for path, text in rendered.items():
        assert path.is_file(), f"{path} is missing: run python tests/comfy_workflows.py"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run python tests/comfy_workflows.py"
    on_disk = {p.name for p in (wf.OUT).glob("*.json")} | {p.name for p in (wf.OUT / "api").glob("*.json")}
    assert on_disk == {f"{n}.json" for n in NAMES}


def _outputs(pack, class_type):
    if class_type in CORE_OUTPUTS:
        return CORE_OUTPUTS[class_type]
    return list(pack.NODE_CLASS_MAPPINGS[class_type].RETURN_TYPES)


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_is_a_valid_prompt(pack, name):
    """What ComfyUI's validate_prompt checks for our nodes: every required input, known values, typed links."""
    prompt = json.loads((wf.OUT / "api" / f"{name}.json").read_text())
    assert any(n["class_type"] == "SaveImage" for n in prompt.values())
    for node_id, node in prompt.items():
        cls = node["class_type"]
        for inp, value in node["inputs"].items():
            if isinstance(value, list):
                src = prompt[value[0]]
                assert value[1] < len(_outputs(pack, src["class_type"])), f"{name}:{node_id}.{inp}"
        if cls in CORE_OUTPUTS:
            continue
        spec = pack.NODE_CLASS_MAPPINGS[cls].INPUT_TYPES()
        for section in ("required", "optional"):
            for inp, (kind, *opts) in spec.get(section, {}).items():
                if inp not in node["inputs"]:
                    assert section == "optional", f"{name}: {cls}.{inp} missing"
                    continue
                value = node["inputs"][inp]
                if isinstance(value, list):  # a link: the source output's type must match
                    src = prompt[value[0]]
                    src_type = _outputs(pack, src["class_type"])[value[1]]
                    assert src_type == ("STRING" if inp == "prompt" else kind), f"{name}: {cls}.{inp}"
                elif isinstance(kind, list) and inp not in ("checkpoint", "mllm", "sana", "vae", "lora_name"):
                    assert value in kind, f"{name}: {cls}.{inp}={value!r}"
                elif kind in ("INT", "FLOAT"):
                    o = opts[0]
                    assert o.get("min", value) <= value <= o.get("max", value), f"{name}: {cls}.{inp}"


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_matches_its_api_copy(pack, name):
    """Same nodes, same links, same widget values (except the tiny-model overrides)."""
    ui = json.loads((wf.OUT / f"{name}.json").read_text())
    api = json.loads((wf.OUT / "api" / f"{name}.json").read_text())
    assert ui["version"] == 0.4 and ui["last_node_id"] == max(n["id"] for n in ui["nodes"])
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert notes and all(len(n["widgets_values"][0]) > 80 for n in notes)
    real = {str(n["id"]): n for n in ui["nodes"] if n["type"] != "Note"}
    assert set(real) == set(api)
    for link_id, src, slot, dst, dst_slot, type_ in ui["links"]:
        target = next(n for n in ui["nodes"] if n["id"] == dst)
        inp = target["inputs"][dst_slot]
        assert inp["link"] == link_id and inp["type"] == type_
        assert api[str(dst)]["inputs"][inp["name"]] == [str(src), slot]
        source = next(n for n in ui["nodes"] if n["id"] == src)
        assert link_id in source["outputs"][slot]["links"]
    for node_id, node in real.items():
        assert node["type"] == api[node_id]["class_type"]
        _, widgets, _ = wf.node_shape(node["type"], pack.NODE_CLASS_MAPPINGS)
        assert len(node["widgets_values"]) == len(widgets)
    loader = next(n for n in ui["nodes"] if n["type"] == "OpenUniModelLoader")
    assert loader["widgets_values"][:4] == list(wf.REAL_MODELS.values())  # real files in the UI copy
    assert api["1"]["inputs"]["checkpoint"] == wf.TINY_MODELS["checkpoint"]  # tiny ones in the API copy
