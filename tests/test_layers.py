"""Packages depend only downwards: a forbidden import anywhere in a module (also inside a function) fails.

The layers, top to bottom, are those of docs/architecture.md. A module may import from its own package and
from any layer below its own, never from a layer above or beside it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gstalk

ROOT = Path(gstalk.__file__).parent

#: top to bottom; names on one line share a layer and may not import each other
LAYERS = [
    {"__main__"},
    {"cli"},
    {"bench"},
    {"demo"},
    {"serve"},
    {"eval"},
    {"drive"},
    {"train"},
    {"prepare"},
    {"model"},
    {"speech"},
    {"data"},
    {"face", "media"},
    {"splat", "config", "device", "regions"},
    {"outputs"},
    {"fileio"},
    {"errors", "timing", "__init__"},
]
LEVEL = {name: k for k, layer in enumerate(LAYERS) for name in layer}


def _unit(module: Path) -> str:
    """The package (or top-level module) a file belongs to."""
    rel = module.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(module: Path) -> set[str]:
    """The gstalk units ``module`` imports, at module level or inside functions."""
    tree = ast.parse(module.read_text())
    package = module.relative_to(ROOT).parts[:-1]
    units = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "gstalk":
                    continue
                target = parts[1:]
            else:
                base = list(package[: len(package) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
            if target:
                units.add(target[0])
            else:  # "from . import x" at the top level, or "from .. import x"
                units.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "gstalk" and len(parts) > 1:
                    units.add(parts[1])
    return units


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in ROOT.rglob("*.py")}
    assert units <= LEVEL.keys(), f"add these to LAYERS (and docs/architecture.md): {units - LEVEL.keys()}"


def test_imports_point_down():
    wrong = []
    for module in sorted(ROOT.rglob("*.py")):
        unit = _unit(module)
        for target in _imported_units(module):
            if target == unit or target not in LEVEL:
                continue
            if LEVEL[target] <= LEVEL[unit]:
                wrong.append(f"{module.relative_to(ROOT)} imports {target}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_the_check_sees_function_level_and_relative_imports(tmp_path: Path):
    fake = ROOT / "data" / "_layer_probe.py"
    fake.write_text("def f():\n    from ..prepare import prepare\n    from ..train.trainer import Trainer\n")
    try:
        assert _imported_units(fake) == {"prepare", "train"}
    finally:
        fake.unlink()


def _string_constants(module: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_dataset_file_names_live_in_data_layout():
    from gstalk.data import layout

    names = {
        getattr(layout, n)
        for n in ("MANIFEST", "SUMMARY", "TRACKS", "AUDIO", "AUDIO_FEATURES", "BACKGROUND", "CONTACT_SHEET",
                  "TIMELINE")
    }  # fmt: skip
    spelled = [
        f"{module.relative_to(ROOT)}: {name}"
        for module in sorted(ROOT.rglob("*.py"))
        if module != ROOT / "data" / "layout.py"
        for name in sorted(names & _string_constants(module))
    ]
    assert not spelled, "dataset file names spelled outside data/layout.py:\n" + "\n".join(spelled)


def _path_joins(module: Path) -> set[str]:
    """The string constants ``module`` joins onto a path (``x / "name"``)."""
    return {
        node.right.value
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
        and isinstance(node.right, ast.Constant) and isinstance(node.right.value, str)
    }  # fmt: skip


def test_run_file_names_live_in_data_run_layout():
    """A run folder's file names are spelled in data/run_layout.py only: its distinctive names nowhere
    else, and its generic ones ("model", "stages", "eval", ...) never joined onto a path elsewhere."""
    from gstalk.data import run_layout as rl

    distinctive = {rl.MODEL_FILE, rl.META_FILE, rl.OPTIMIZER_FILE, rl.RNG_FILE, rl.LOG, rl.LOSS_PLOT,
                   rl.AUDIO_MOTION, rl.METRICS, rl.REPORT, rl.MOUTH_SHEET, rl.SIDE_BY_SIDE}  # fmt: skip
    generic = {rl.MODEL, rl.STAGES, rl.CHECKPOINTS, rl.LATEST, rl.LEGACY_CHECKPOINT, rl.EVAL}
    spelled = [
        f"{module.relative_to(ROOT)}: {name}"
        for module in sorted(ROOT.rglob("*.py"))
        if module != ROOT / "data" / "run_layout.py"
        for name in sorted((distinctive & _string_constants(module)) | (generic & _path_joins(module)))
    ]
    assert not spelled, "run file names spelled outside data/run_layout.py:\n" + "\n".join(spelled)


def test_prepare_has_no_cycle_and_short_functions():
    """prepare's modules import each other one way (sources never imports the pipeline), and no function
    in prepare/ is longer than a screen (80 lines)."""
    package = ROOT / "prepare"
    long = []
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{module.name}:{node.name} ({lines} lines)")
    assert not long, "functions over 80 lines: " + ", ".join(long)
    for module in ("sources", "work", "crop", "report", "regions", "background"):
        tree = ast.parse((package / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
        assert "pipeline" not in imported, f"prepare/{module}.py imports the pipeline"
