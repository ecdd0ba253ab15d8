"""The app layer's structure: no import cycle, one home per concept, one resolution check."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sned
from sned.arch import ArchError, ResolutionError, check_resolution
from sned.nn.elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear

SRC = Path(sned.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module → sned modules it imports (any import statement, also inside functions)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("sned"):
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules (first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_src_has_no_import_cycle_and_every_module_imports():
    graph = import_graph()
    # package __init__ files import their own submodules; a submodule importing its
    # package's __init__ is the usual re-export pattern, not a layering cycle
    layered = {m: {n for n in deps if not m.startswith(n + ".")} for m, deps in graph.items()}
    assert find_cycle(layered) is None, find_cycle(layered)
    for mod in sorted(graph):
        importlib.import_module(mod)


def test_cli_modules_only_call_the_library():
    graph = import_graph()
    assert "sned.cli.generate" not in graph["sned.app.quickstart"]
    assert "sned.app.quickstart" not in graph["sned.cli.generate"]
    assert "sned.cli.generate" not in graph["sned.cli.evaluate"]
    library = [m for m in graph if not m.startswith("sned.cli")]
    assert not [m for m in library if any(d.startswith("sned.cli") for d in graph[m])]
    names = {m.name for m in pkgutil.iter_modules([str(SRC)])}
    assert {"app", "pipelines", "extract", "cli", "store"} <= names


LOWER = ("sned.store", "sned.nn", "sned.models", "sned.data", "sned.metrics")
UPPER = ("sned.train", "sned.search", "sned.pipelines", "sned.app", "sned.diffnas", "sned.cli")


def _within(mod: str, packages) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in packages)


def test_lower_layers_never_import_upper_layers():
    """store / nn / models / data / metrics never import train, search, pipelines, app, diffnas
    or cli — any import statement, also inside functions (docs/design.md, "Layers")."""
    graph = import_graph()
    bad = sorted((m, d) for m, deps in graph.items() if _within(m, LOWER)
                 for d in deps if _within(d, UPPER))
    assert not bad, bad


def test_store_imports_nothing_of_sned():
    graph = import_graph()
    bad = sorted((m, d) for m, deps in graph.items() if _within(m, ("sned.store",))
                 for d in deps if not _within(d, ("sned.store",)))
    assert not bad, bad


def test_the_layer_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The layer test above can fail: a planted upward import inside a function is found."""
    pkg = tmp_path / "sned"
    for rel in ("__init__.py", "metrics/__init__.py", "train/__init__.py"):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("")
    (pkg / "train/trainer.py").write_text("X = 1\n")
    (pkg / "metrics/bad.py").write_text("def f():\n    from ..train.trainer import X\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    graph = import_graph()
    assert "sned.train.trainer" in graph["sned.metrics.bad"]


def test_few_modules_at_the_top_and_one_command_table():
    top = [m.name for m in pkgutil.iter_modules([str(SRC)]) if not m.ispkg]
    assert len(top) + 1 <= 12, top  # + __init__
    from sned import cli

    assert sorted(cli.COMMANDS) == sorted(
        ["space", "cost", "memory", "train", "extract", "import", "sample", "search",
         "evaluate", "quickstart", "diffnas", "study"])
    parser = cli.build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(choices) == sorted(cli.COMMANDS)


def test_tasks_use_only_the_trainers_public_context():
    """No task module calls a Trainer attribute whose name starts with ``_``."""
    for path in (SRC / "train/tasks.py", SRC / "diffnas/tasks.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id in ("trainer", "tr") and node.attr.startswith("_"):
                raise AssertionError(f"{path.name}:{node.lineno}: trainer.{node.attr}")


def test_old_module_paths_still_import_the_same_module():
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for old, new in sned.MOVED_MODULES.items():
            assert importlib.import_module(old) is importlib.import_module(new), old


def test_arch_at_moves_only_the_resolution():
    space = sned.search_space("tiny-ssr")
    a = space.preset("M")
    b = a.at(64)
    assert (b.resolution, b.blocks, b.config) == (64, a.blocks, a.config)
    assert a.at(a.resolution) is a and space.validate(b) == b


def test_one_resolution_check_with_one_error_type(tiny_base, tmp_path):
    from sned.pipelines.loading import load_denoiser
    from sned.pipelines import Stage, cascade_resolutions
    from sned.search import random_search

    cfg = tiny_base.config
    assert check_resolution(cfg, 32) == 32
    space = sned.search_space(cfg)
    sned.save_pretrained(tiny_base, tmp_path / "sup")
    calls = [lambda: check_resolution(cfg, 48),
             lambda: space.preset("S", 48),
             lambda: space.sample(0, resolution=48),
             lambda: space.validate(space.preset("S").at(48)),
             lambda: random_search(space, lambda a: 0.0, budget=2, resolution=48),
             lambda: load_denoiser(tmp_path / "sup", resolution=48),
             lambda: cascade_resolutions(Stage(tiny_base), Stage(sned.build_supernet("tiny-ssr",
                                                                                     device="meta")),
                                         128)]
    for call in calls:
        with pytest.raises(ResolutionError, match=r"resolution (48|128) is not served"):
            call()
    assert issubclass(ResolutionError, ArchError)


def test_extraction_goes_through_active_weights(tiny_base, monkeypatch):
    calls = []
    for cls in (ElasticConv2d, ElasticLinear, ElasticGroupNorm):
        orig = cls.active_weights

        def spy(self, *a, _orig=orig, **k):
            calls.append(type(self).__name__)
            return _orig(self, *a, **k)
        monkeypatch.setattr(cls, "active_weights", spy)
    space = sned.search_space("tiny-base")
    small = sned.extract(tiny_base, space.preset("S"))
    sup = dict(tiny_base.named_modules())
    cut = [n for n, m in small.named_modules()
           if isinstance(sup[n], (ElasticConv2d, ElasticLinear, ElasticGroupNorm))]
    assert len(calls) == len(cut) > 100
    assert all(type(m) in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm)
               for n, m in small.named_modules() if n in cut)
    kw = sned.example_inputs(small, batch=1, frames=2)
    with torch.no_grad():
        torch.testing.assert_close(small(**kw), tiny_base(**kw, arch=space.preset("S")),
                                   atol=1e-5, rtol=0)


def test_resize_video_has_one_home():
    from sned.data import transforms

    hits = [p for p in SRC.rglob("*.py") if "def resize_video" in p.read_text()]
    assert hits == [Path(transforms.__file__)]
    v = torch.rand(2, 3, 4, 32, 32)
    assert tuple(transforms.resize_video(v, 16).shape) == (2, 3, 4, 16, 16)
    assert np.isclose(float(transforms.resize_video(torch.ones(1, 3, 2, 8, 8), 4).mean()), 1.0)


def test_no_module_reads_a_name_it_never_binds():
    """A coarse static check (per file, not per scope): every name a module reads is a builtin
    or bound somewhere in that file (import, def, class, assignment, argument). It catches a
    helper deleted while a caller still uses it — a path only a slow test would reach."""
    import ast
    import builtins
    from pathlib import Path

    import sned

    dunder = {"__file__", "__name__", "__doc__", "__spec__", "__path__"}
    missing = {}
    for f in Path(sned.__file__).parent.rglob("*.py"):
        tree = ast.parse(f.read_text())
        bound = set(dir(builtins)) | dunder
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(n.name)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in n.names)
            elif isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
                bound.add(n.id)
            elif isinstance(n, ast.arg):
                bound.add(n.arg)
            elif isinstance(n, ast.ExceptHandler) and n.name:
                bound.add(n.name)
        read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                and isinstance(n.ctx, ast.Load)}
        if read - bound:
            missing[f.name] = sorted(read - bound)
    assert missing == {}
