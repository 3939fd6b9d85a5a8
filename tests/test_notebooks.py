"""minimal.py and minimal_train.py run as notebooks, as README says: each executed cell by cell in a Jupyter kernel
(where sys.argv is the kernel's own), on a tiny local model in place of the hub's."""

import os

import pytest
from conftest import REPO

jupytext = pytest.importorskip("jupytext", reason="running the files as notebooks needs jupytext (requirements.txt)")
nbclient = pytest.importorskip("nbclient", reason="running the files as notebooks needs nbclient (requirements.txt)")

HUB_NAME = '"answerdotai/ModernBERT-Large-Instruct"'


@pytest.mark.parametrize("script, printed", [("minimal.py", 2), ("minimal_train.py", 2)])
def test_runs_as_a_notebook(script, printed, tiny_model_dir):
    notebook = jupytext.read(os.path.join(REPO, script))
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(cells) >= 3 and sum(HUB_NAME in cell.source for cell in cells) == 1  # one name to change
    for cell in cells:
        cell.source = cell.source.replace(HUB_NAME, repr(tiny_model_dir))
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": REPO}}).execute()
    outputs = [out for out in cells[-1].outputs if out.output_type == "stream" and out.name == "stdout"]
    lines = "".join(out.text for out in outputs).splitlines()
    assert len(lines) == printed and all(line.startswith("{") for line in lines), lines
