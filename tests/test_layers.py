"""The package's layers import one way: no circle, no import of a higher layer.

Every import in the package (module level or inside a function) is read from the source and
checked against ``LAYERS``; a new module must be given its layer here. ``docs/architecture.md``
explains the layers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ray_robust"

#: module (or package prefix) → layer; a module may import its own layer or lower ones
LAYERS: dict[str, int] = {
    "ray_robust._validation": 0,
    "ray_robust._files": 0,
    "ray_robust._caller": 0,
    "ray_robust.terminal": 0,
    "ray_robust.core": 0,
    "ray_robust.seeds": 0,
    "ray_robust.data": 1,
    "ray_robust.config": 2,
    "ray_robust.fitted": 2,
    "ray_robust.messages": 3,
    "ray_robust.adversary": 3,
    "ray_robust.algorithm": 3,
    "ray_robust.checkpoint": 3,
    "ray_robust.run_state": 3,
    "ray_robust.theory": 3,
    "ray_robust.engines": 4,
    "ray_robust.api": 5,
    "ray_robust.estimator": 6,
    "ray_robust.plots": 6,
    "ray_robust.comparison": 6,
    "ray_robust.reproduce": 6,
    "ray_robust.studies": 7,
    "ray_robust.cli": 8,
    "ray_robust.cli_tune": 8,
    "ray_robust": 9,  # the package's __init__: lazy re-exports of every layer
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len,
               default=None)
    assert best is not None, f"{module} has no layer: add it to LAYERS in {__file__}"
    return LAYERS[best]


def _imports(path: Path) -> set[str]:
    """The ray_robust modules that ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("ray_robust")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.startswith("ray_robust"):
                out.add(target)
                # `from . import x` / `from .core import wrm`: x may itself be a module
                out |= {f"{target}.{a.name}" for a in node.names
                        if (PACKAGE.parent / Path(*f"{target}.{a.name}".split("."))).is_dir()
                        or (PACKAGE.parent / Path(*f"{target}.{a.name}".split("."))
                            ).with_suffix(".py").is_file()}
    return out


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) - {_module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_no_module_imports_a_higher_layer():
    upward = [f"{mod} (layer {_layer(mod)}) imports {dep} (layer {_layer(dep)})"
              for mod, deps in _graph().items() for dep in deps
              if mod != "ray_robust" and _layer(dep) > _layer(mod)]
    assert upward == []


def test_the_import_graph_has_no_circle():
    graph = _graph()
    graph = {m: {d for d in deps if d in graph and d != "ray_robust"} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, node, dep]))
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state and node != "ray_robust":
            visit(node, [])


def test_the_core_imports_alone_without_ray_or_the_layers_above():
    """``ray_robust.core`` runs with Ray, pandas, YAML and every upper module blocked."""
    blocked = ["ray", "pandas", "yaml", "matplotlib", "ray_robust.api", "ray_robust.config",
               "ray_robust.algorithm", "ray_robust.engines", "ray_robust.data"]
    core = sorted(_module_name(p) for p in (PACKAGE / "core").glob("*.py"))
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n    sys.modules[name] = None\n"
        f"for name in {core!r}:\n    __import__(name)\n"
        "print(sorted(m for m, v in sys.modules.items() if v and m.startswith('ray_robust')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=False)
    assert out.returncode == 0, out.stderr
    loaded = eval(out.stdout)  # a printed list of names
    assert {m for m in loaded if _layer(m) > 0} == {"ray_robust"}
