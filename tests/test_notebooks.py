"""The tutorials in notebooks/ run top to bottom and are committed clean.

Each notebook is executed by nbclient in a real ipykernel ("python3") in quick mode
(``RAY_ROBUST_QUICK=1``: small grids, few rounds, one seed); any cell error fails the test,
and so does a notebook that runs past :data:`NOTEBOOK_TIMEOUT`. The kernel is a separate
process: a notebook starts (and shuts down) its own Ray, never the test session's. A second
test checks that every committed notebook holds no outputs and no execution counts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
#: The committed tutorials (``jupyter execute --output='{notebook_name}_executed'`` copies
#: are left out).
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb")
                   if not p.stem.endswith("_executed"))
EXPECTED = {"01_quickstart", "02_table1", "03_tune_studies", "04_breakpoint_and_theory",
            "05_cluster"}
KERNEL = "python3"
#: Wall-clock limit per notebook (quick mode takes ≈ 10–90 s each on 2 busy cores); it only
#: stops a hung notebook, it is not a speed check.
NOTEBOOK_TIMEOUT = 900
IDS = [p.stem for p in NOTEBOOKS]


@pytest.fixture(scope="session")
def kernel_env(data_dir, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The kernels' environment: quick mode, the data folder, and a "python3" kernelspec.

    The kernelspec is installed into a temporary Jupyter data folder put first on
    ``JUPYTER_PATH`` and runs this interpreter (``sys.executable``), so the kernel finds the
    same ``ray_robust`` as the tests on a clean machine and never a stale user kernelspec.
    """
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name=KERNEL, prefix=str(prefix))
    jupyter_path = str(prefix / "share" / "jupyter")
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([jupyter_path, *([old] if old else [])])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster to join
    # The kernels run in notebooks/: a relative data folder (CI passes ../shared/data) must be
    # made absolute.
    env.update(RAY_ROBUST_QUICK="1", RAY_ROBUST_DATA_DIR=str(Path(data_dir).resolve()),
               RAY_USAGE_STATS_ENABLED="0", PYDEVD_DISABLE_FILE_VALIDATION="1")
    yield env
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def test_the_five_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} >= EXPECTED, f"notebooks/ holds {IDS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.outputs or c.execution_count is not None or "execution" in c.metadata)]
    assert not dirty, (
        f"{path.name}: code cells {dirty} hold outputs or execution counts; commit it with "
        "all outputs cleared (Jupyter: Edit > Clear Outputs of All Cells, then save)."
    )
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "RAY_ROBUST_QUICK=0" in first.source, (
        f"{path.name}: the first cell must say what the notebook answers and how to run it "
        "in full."
    )
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any('os.environ.get("RAY_ROBUST_QUICK", "1") == "1"' in s for s in code), (
        f"{path.name}: no parameters cell reading RAY_ROBUST_QUICK."
    )
    if any("import ray\n" in s + "\n" for s in code):
        assert "ray.shutdown()" in code[-1], (
            f"{path.name}: a notebook that uses Ray must end with ray.shutdown()."
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_in_quick_mode(path: Path, kernel_env: dict[str, str]):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=NOTEBOOK_TIMEOUT,
        resources={"metadata": {"path": str(path.parent)}},  # Jupyter's cwd: the notebook's
    )
    try:
        asyncio.run(asyncio.wait_for(client.async_execute(env=kernel_env), NOTEBOOK_TIMEOUT))
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed in quick mode:\n{exc}", pytrace=False)
    except asyncio.TimeoutError:  # TimeoutError on Python >= 3.11
        pytest.fail(f"{path.name}: did not finish within {NOTEBOOK_TIMEOUT} s.", pytrace=False)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_notebooks_extra_installs_jupyterlab_and_ipywidgets():
    """``pip install -e ".[notebooks]"`` brings what opening the tutorials needs: JupyterLab,
    and ipywidgets for Ray Tune's notebook output (without it Ray prints "Missing packages:
    ['ipywidgets']"); the progress bars' tqdm is a dependency of the package itself."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=~! ;]", r, maxsplit=1)[0].lower() for r in requirements}

    assert {"jupyterlab", "ipywidgets", "ipykernel"} <= names(
        project["optional-dependencies"]["notebooks"])
    assert "tqdm" in names(project["dependencies"])
