"""The fast test loop (issue 18, item 6): ``pytest -m "not slow"`` still imports every module.

Read statically from the test files: what a test file imports at its top (when it has a test
that is not marked slow), what its non-slow tests and helpers import or run (``python -m
ray_robust.cli``, the package's lazy names such as ``rr.train``), closed over the modules those
import at their own top (which runs on import). A module outside that set would be tested only
by the slow tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ray_robust"
TESTS = ROOT / "tests"
_DOTTED = re.compile(r"\bray_robust(?:\.\w+)*")


def _modules() -> set[str]:
    out = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


MODULES = _modules()


def _exports() -> dict[str, str]:
    """``ray_robust``'s lazy public names → their module (``_EXPORTS`` in its ``__init__``)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_EXPORTS":
            return {k.value: f"ray_robust.{v.value}" for k, v in
                    zip(node.value.keys, node.value.values, strict=True)}
    raise AssertionError("ray_robust/__init__.py has no _EXPORTS")


def _resolve(name: str) -> str | None:
    """The longest module of the package that ``name`` (a dotted path) starts with."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _referenced(nodes: list[ast.AST], package: str, exports: dict[str, str]) -> set[str]:
    """The package modules that these statements import, name by their lazy exports, or name
    in a string (a ``python -m ray_robust.cli`` command)."""
    out: set[str] = set()
    aliases = {"ray_robust"}
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("ray_robust"):
                        out.add(_resolve(a.name))
                        if a.name == "ray_robust":
                            aliases.add(a.asname or a.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                if base == "ray_robust" or base.startswith("ray_robust."):
                    for a in node.names:
                        full = f"{base}.{a.name}"
                        out.add(full if full in MODULES else exports.get(a.name)
                                if base == "ray_robust" else _resolve(base))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.update(_resolve(m) for m in _DOTTED.findall(node.value))
        for node in ast.walk(root):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr in exports):
                out.add(exports[node.attr])
    out.discard(None)
    return out


def _is_slow(node: ast.AST) -> bool:
    return any("slow" in ast.unparse(d) for d in getattr(node, "decorator_list", []))


def _fast_references(path: Path, exports: dict[str, str]) -> set[str]:
    """What the file's non-slow tests reach (nothing when every test is slow)."""
    tree = ast.parse(path.read_text())
    file_slow = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark"
                                                     for t in n.targets)
                    and "slow" in ast.unparse(n.value) for n in tree.body)
    def is_test(node: ast.AST) -> bool:
        return isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name.lower().startswith(
            "test")

    # the module level (run at collection), the helpers and the tests not marked slow
    fast = [n for n in tree.body if not (is_test(n) and (file_slow or _is_slow(n)))]
    if not any(is_test(n) for n in fast):
        return set()
    return _referenced(fast, "tests", exports)


def _top_level_imports(module: str) -> set[str]:
    """The package modules ``module`` imports when it is imported (its top level, not inside
    functions), with its parent packages."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top = [n for n in ast.parse(path.read_text()).body
           if isinstance(n, ast.Import | ast.ImportFrom)]
    out = _referenced(top, package, {})
    parts = module.split(".")
    out.update(".".join(parts[:k]) for k in range(1, len(parts)))
    return out


def fast_closure() -> set[str]:
    exports = _exports()
    reached = set().union(*(_fast_references(p, exports) for p in TESTS.glob("test_*.py")))
    todo = list(reached)
    while todo:
        for m in _top_level_imports(todo.pop()) - reached:
            reached.add(m)
            todo.append(m)
    return reached


def test_every_module_has_a_fast_test():
    missing = sorted(MODULES - fast_closure())
    assert not missing, (f"{missing} are imported only by tests marked slow: keep at least one "
                         "fast test that imports each (see tests/test_fast_loop.py)")


def test_the_check_sees_a_module_only_a_slow_test_imports(tmp_path, monkeypatch):
    """The check can fail: a file whose only test is slow reaches nothing."""
    exports = _exports()
    slow = tmp_path / "test_x.py"
    slow.write_text("import pytest\n\n@pytest.mark.slow\ndef test_a():\n"
                    "    from ray_robust.studies import driver\n")
    assert _fast_references(slow, exports) == set()
    fast = tmp_path / "test_y.py"
    fast.write_text("import ray_robust as rr\n\ndef test_b():\n    rr.train\n"
                    "    import subprocess; subprocess.run(['python', '-m', 'ray_robust.cli'])\n")
    assert {"ray_robust.api", "ray_robust.cli", "ray_robust"} <= _fast_references(fast, exports)
