"""Every Python snippet of README.md and docs/ runs as written, with local paths for the hub's names: the model a
tiny local one, a trained folder one laid out as train.py lays it out, the data small local copies."""

import json
import os
import re
import shutil

import pytest
from conftest import LABEL_MAP, PROMPT, REPO, make_mmlu_dir, write

from mlm_classifier.mmlu import MMLU_SUBJECTS

HUB_MODEL = "answerdotai/ModernBERT-Large-Instruct"


def snippets():
    """(page, index, code) of each ```python block."""
    pages = ["README.md"] + [os.path.join("docs", name) for name in sorted(os.listdir(os.path.join(REPO, "docs")))]
    found = []
    for page in pages:
        text = open(os.path.join(REPO, page), encoding="utf-8").read()
        found += [(page, k, code) for k, code in enumerate(re.findall(r"```python\n(.*?)```", text, flags=re.S))]
    return found


def folder_like_train_py(model, path, prompt, label_map, columns=()):
    """The files a folder written by train.py holds, around the tiny model's weights (untrained for the task: the
    snippets only have to run)."""
    shutil.copytree(model, path)
    write(os.path.join(path, "prompt.txt"), prompt)
    write(os.path.join(path, "label_map.json"), json.dumps(label_map))
    write(os.path.join(path, "classifier.json"), json.dumps({"max_length": 64, "columns": list(columns)}))
    return str(path)


@pytest.fixture(scope="module")
def places(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("snippets")
    mmlu = make_mmlu_dir(root / "mmlu", subjects=MMLU_SUBJECTS, per_subject=1)  # every subject: the whole mmlu_mask
    return {
        HUB_MODEL: tiny_model_dir,
        "my-classifier": folder_like_train_py(tiny_model_dir, root / "my-classifier", PROMPT, LABEL_MAP),
        "my-nli-classifier": folder_like_train_py(
            tiny_model_dir, root / "nli", "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer: [unused0] {label}",
            LABEL_MAP, ("premise", "hypothesis")),
        "~/mmlu": mmlu, "DIR/": str(root) + "/", "texts.txt": write(root / "texts.txt", "a red city\n\nthe sea\n"),
    }


def prelude(page, places, monkeypatch):
    """What a snippet that is a fragment of a longer recipe assumes already exists."""
    if page.endswith("other-models.md"):  # a tokenizer and model without [unused0], and where to save them
        from conftest import build_bert_tokenizer, build_tiny_bert

        folder = places["DIR/"] + "with-anchor"
        tokenizer = build_bert_tokenizer(places["DIR/"] + "no-anchor", anchor=False)
        return {"tokenizer": tokenizer, "model": build_tiny_bert(places["DIR/"] + "no-anchor", tokenizer),
                "folder": folder}
    if page.endswith("sweep.md"):  # the posts would come from the internet: a few written here instead
        import sklearn.datasets

        class Posts:
            data, target, target_names = ["From: a\n\nWheels and brakes."], [0], ["rec.autos"]

        os.makedirs(places["DIR/"] + "20newsgroups", exist_ok=True)
        monkeypatch.setattr(sklearn.datasets, "fetch_20newsgroups", lambda subset: Posts)
    return {}


@pytest.mark.parametrize("page, index, code", snippets(), ids=lambda v: str(v)[:40].replace("\n", " "))
def test_the_snippet_runs(page, index, code, places, monkeypatch):
    if "lm_eval" in code:
        pytest.importorskip("lm_eval", reason="the harness snippet needs lm-evaluation-harness")
    for name, local in places.items():
        code = code.replace(name, local)
    monkeypatch.chdir(places["DIR/"])
    exec(compile(code, f"{page} snippet {index}", "exec"), prelude(page, places, monkeypatch))
