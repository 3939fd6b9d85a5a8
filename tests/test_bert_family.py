"""BERT- and RoBERTa-style masked LMs: the head at labelled rows, the [unused0] anchor, uncased letters, and
train.py, classify.py and eval.py end to end on tiny models built offline (conftest.py)."""

import json
import os
import re

import pytest
import torch
from conftest import LABEL_MAP, PROMPT, base_args, build_bert_tokenizer, build_tiny_bert, color_rows, make_mmlu_dir
from transformers import AutoModelForMaskedLM, AutoTokenizer

import classify
import eval
import mlm_classifier as core
from mlm_classifier import prompts, scoring
import train
from mlm_classifier import objectives
from mlm_classifier import InputError, MLMClassifier

ARCHITECTURES = {"modernbert": "tiny_model_dir", "bert": "tiny_bert_dir", "roberta": "tiny_roberta_dir"}
NEWS = ["World", "Sports", "Business", "Science"]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def mixed_batch(tokenizer, seed=0):
    """A padded batch of colour prompts, some rows ATP (one target) and some MLM (several targets)."""
    template = core.parse_prompt(PROMPT)
    rows = color_rows(6, seed)
    sequences, positions, _ = prompts.encode_prompts(tokenizer, template, [r["text"] for r in rows],
                                                  [LABEL_MAP[r["label_text"]] for r in rows], "", 64)
    collate = objectives.ObjectiveCollator(tokenizer.mask_token_id, tokenizer.pad_token_id,
                                      frozenset(tokenizer.all_special_ids), mlm_proportion=0.5)
    torch.manual_seed(seed)
    batch = collate([{"input_ids": s, "answer_position": p} for s, p in zip(sequences, positions)])
    targets = (batch["labels"] != -100).sum(dim=1)
    assert (targets == 1).any() and (targets > 1).any() and (batch["attention_mask"] == 0).any()
    return batch, positions


# -----------------------------------------------------------------------------
# The MLM head only where it is read


def assert_same_loss_and_gradients(model, batch):
    """core.labelled_loss equals the model's own loss from full logits, to 1e-5, and so does every gradient: the head
    called on the encoder's rows, and the same steps through the model's own forward (how a DDP wrapper runs it)."""
    assert type(model).__name__ in scoring.MLM_HEADS  # a known head, not the fallback to full logits
    theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    theirs.backward()
    their_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for call in (None, model):
        model.zero_grad()
        ours = core.labelled_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"], call=call)
        ours.backward()
        assert abs(ours.item() - theirs.item()) < 1e-5
        our_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert our_grads.keys() == their_grads.keys()
        for name, grad in their_grads.items():
            torch.testing.assert_close(our_grads[name], grad, atol=1e-6, rtol=1e-4, msg=name)
    assert not model.base_model._forward_hooks  # the hook of the wrapped path is gone after the call


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_head_at_labelled_rows_gives_the_models_own_loss_and_gradients(architecture, request):
    folder = request.getfixturevalue(ARCHITECTURES[architecture])
    tokenizer = core.load_tokenizer(folder)
    model = AutoModelForMaskedLM.from_pretrained(folder, dtype=torch.float32).eval()
    batch, positions = mixed_batch(tokenizer)
    assert_same_loss_and_gradients(model, batch)

    # Scoring reads the same head at one position per row.
    with torch.no_grad():
        everywhere = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        rows = torch.arange(len(positions))
        at = core.head_logits(model, batch["input_ids"], batch["attention_mask"], (rows, torch.tensor(positions)))
    torch.testing.assert_close(at, everywhere[torch.arange(len(positions)), positions], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, config", [
    ("DebertaV2", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, legacy=True)),
    ("DebertaV2", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, legacy=False,
                       relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"])),
    ("Deberta", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, legacy=True)),
    ("Deberta", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, legacy=False)),
    ("DistilBert", dict(dim=32, hidden_dim=64, n_layers=2, n_heads=2)),
    ("Electra", dict(embedding_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2)),
    ("XLMRoberta", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        max_position_embeddings=514)),
    ("Camembert", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       max_position_embeddings=514)),
])
def test_every_other_listed_head_gives_the_models_own_loss_and_gradients(name, config, tiny_bert_dir):
    """The classes of scoring.MLM_HEADS that no tiny model here is trained as, random and tiny, on BERT's token ids."""
    import transformers

    tokenizer = core.load_tokenizer(tiny_bert_dir)
    torch.manual_seed(0)
    model = getattr(transformers, f"{name}ForMaskedLM")(getattr(transformers, f"{name}Config")(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **config)).eval()
    assert_same_loss_and_gradients(model, mixed_batch(tokenizer)[0])


def test_an_unknown_architecture_falls_back_to_full_logits(tiny_bert_dir):
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir, dtype=torch.float32).eval()
    unknown = type("MyMaskedLM", (type(model),), {})  # a subclass may change forward: not trusted
    model.__class__ = unknown
    assert type(model).__name__ not in scoring.MLM_HEADS
    batch, _ = mixed_batch(core.load_tokenizer(tiny_bert_dir))
    with torch.no_grad():
        ours = core.labelled_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        theirs = model(**batch).loss
    assert abs(ours.item() - theirs.item()) < 1e-5


def test_accumulated_micro_batches_give_the_gradient_of_the_whole_batch(tiny_bert_dir):
    """What ATPTrainer.compute_loss gets from Trainer: each micro-batch's sum over the count of the whole batch."""
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir, dtype=torch.float32).eval()
    batch, _ = mixed_batch(core.load_tokenizer(tiny_bert_dir))
    core.labelled_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"]).backward()
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    n = (batch["labels"] != -100).sum()
    for rows in (slice(0, 2), slice(2, None)):  # unequal numbers of targets, as MLM rows make them
        core.labelled_loss(model, batch["input_ids"][rows], batch["attention_mask"][rows], batch["labels"][rows],
                            num_items=n).backward()
    for accumulated, grad in zip((p.grad for p in model.parameters()), whole):
        torch.testing.assert_close(accumulated, grad, atol=1e-6, rtol=1e-4)


# -----------------------------------------------------------------------------
# The [unused0] anchor


def test_anchor_in_the_vocabulary_is_registered_as_one_token_with_its_id(tiny_bert_dir, capsys):
    raw = AutoTokenizer.from_pretrained(tiny_bert_dir)
    assert "[unused0]" in raw.get_vocab() and "[unused0]" not in raw.tokenize("Answer: [unused0] [MASK]")
    with pytest.raises(InputError, match=r"splits \[unused0\] into pieces.*load_tokenizer"):
        prompts.answer_token_ids(raw, core.parse_prompt(PROMPT), LABEL_MAP, "")

    tokenizer = core.load_tokenizer(tiny_bert_dir)
    note = capsys.readouterr().out
    assert note.startswith(f"note: {tiny_bert_dir}: the tokenizer split [unused0] into pieces")
    assert "(id 1); registered it as one special token with that id" in note
    assert len(tokenizer) == len(raw) and tokenizer.convert_tokens_to_ids("[unused0]") == 1  # no new embedding
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Text: A RED City\nAnswer: [unused0] [MASK]")["input_ids"])
    assert tokens == ["[CLS]", "text", ":", "a", "red", "city", "answer", ":", "[unused0]", "[MASK]", "[SEP]"]


def test_tokenizer_without_the_anchor_says_how_to_add_one_and_the_recipe_works(tmp_path):
    folder = str(tmp_path / "no-anchor")
    build_tiny_bert(folder, build_bert_tokenizer(folder, anchor=False))
    with pytest.raises(InputError) as error:
        core.load_tokenizer(folder)
    message = str(error.value)
    assert message.startswith(f"--model {folder}: no [unused0] in the vocabulary")
    assert 'tokenizer.add_tokens(["[unused0]"], special_tokens=True)' in message
    assert "model.resize_token_embeddings(len(tokenizer))" in message

    # The recipe in the message, as written.
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForMaskedLM.from_pretrained(folder)
    tokenizer.add_tokens(["[unused0]"], special_tokens=True)
    model.resize_token_embeddings(len(tokenizer))
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    anchor_id = core.load_tokenizer(folder).convert_tokens_to_ids("[unused0]")
    assert anchor_id == len(tokenizer) - 1 == AutoModelForMaskedLM.from_pretrained(folder).config.vocab_size - 1


# -----------------------------------------------------------------------------
# Uncased letters


def test_uncased_letters_are_one_token_each_and_score_once(tiny_bert_dir):
    tokenizer = core.load_tokenizer(tiny_bert_dir)
    assert scoring.letters_that_fit(tokenizer) == 26
    assert scoring.letter_token_ids(tokenizer, "ABC") == [[tokenizer.convert_tokens_to_ids(c)] for c in "abc"]
    clf = MLMClassifier.from_pretrained(tiny_bert_dir, labels=NEWS)
    assert clf.plan.option_ids == [[tokenizer.convert_tokens_to_ids(c)] for c in "abcd"]
    assert "labels : - a : world - b : sports" in tokenizer.decode(clf.encode(["the city"])[0])
    with pytest.raises(InputError, match=r"labels 'warm' and 'hot' both answer with the token 'red'"):
        prompts.answer_token_ids(tokenizer, core.parse_prompt(PROMPT), {"warm": "Red", "hot": "red"}, "")


# -----------------------------------------------------------------------------
# train.py, classify.py and eval.py on BERT and RoBERTa


@pytest.fixture(scope="module", params=["bert", "roberta"])
def trained_family(request, files):
    """(architecture, base folder, trained folder, metrics): train.py on the colour task, a few seconds each."""
    base = request.getfixturevalue(ARCHITECTURES[request.param])
    output_dir = files["dir"] / f"run-{request.param}"
    metrics = train.main(base_args(base, files, output_dir, "--test_file", files["test"], "--predict_file",
                                   files["predict"], "--max_steps", "300", "--learning_rate", "5e-3"))
    return request.param, base, str(output_dir), metrics


def test_train_learns_the_task(trained_family):
    _, _, folder, metrics = trained_family
    assert metrics["test_accuracy"] >= 0.9


def test_saved_folder_keeps_the_anchor_as_one_token(trained_family, capsys):
    _, base, folder, _ = trained_family
    capsys.readouterr()
    tokenizer = core.load_tokenizer(folder)
    assert "note:" not in capsys.readouterr().out  # registered in the saved tokenizer already
    reloaded = AutoTokenizer.from_pretrained(folder)
    ids = reloaded(f"Answer: [unused0] {reloaded.mask_token}")["input_ids"]
    assert reloaded.convert_ids_to_tokens(ids)[-3:-1] == ["[unused0]", reloaded.mask_token]
    assert len(reloaded) == len(tokenizer) == len(AutoTokenizer.from_pretrained(base))  # no new embedding
    with open(os.path.join(base, "config.json")) as f, open(os.path.join(folder, "config.json")) as g:
        base_config, saved_config = json.load(f), json.load(g)
    base_config.pop("use_cache", None), saved_config.pop("use_cache", None)  # Trainer turns the KV cache off
    assert saved_config == base_config  # the base model's config otherwise: a plain masked LM


def test_classify_uses_the_trained_folder_as_train_py_did(trained_family, files, tmp_path):
    _, _, folder, _ = trained_family
    out = tmp_path / "labelled.jsonl"
    classify.main(["--model", folder, "--input", files["predict"], "--output", str(out), "--no_progress"])
    ours, theirs = read_jsonl(out), read_jsonl(os.path.join(folder, "predictions.jsonl"))
    assert [o["label"] for o in ours] == [t["label"] for t in theirs] and len(ours) == 20
    for o, t in zip(ours, theirs):
        assert o["probabilities"] == pytest.approx(t["probabilities"], abs=1e-4)


def test_model_card_fill_mask_snippet_agrees(trained_family):
    _, _, folder, _ = trained_family
    card = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    snippet = re.findall(r"```python\n(.*?)```", card, flags=re.S)[1]
    text = "a red city by the river"
    namespace = {}
    exec(snippet.replace("path/to/this/folder", folder).replace("your text here", text), namespace)
    expected = MLMClassifier.from_pretrained(folder)(text)
    assert namespace["label"] == expected["label"]
    assert namespace["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)


@pytest.mark.parametrize("architecture", ["bert", "roberta"])
def test_classify_zero_shot(architecture, request, files, tmp_path):
    folder = request.getfixturevalue(ARCHITECTURES[architecture])
    out = tmp_path / "zero.jsonl"
    classify.main(["--model", folder, "--labels", ",".join(NEWS), "--input", files["predict"], "--output", str(out),
                   "--no_progress"])
    records = read_jsonl(out)
    assert len(records) == 20 and all(r["label"] in NEWS for r in records)
    assert all(sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5) for r in records)


@pytest.mark.parametrize("architecture", ["bert", "roberta"])
def test_eval_runs_and_reports_uppercase_letters(architecture, request, tmp_path):
    folder = request.getfixturevalue(ARCHITECTURES[architecture])
    out = tmp_path / "results"
    eval.main(["--model", folder, "--data_dir", make_mmlu_dir(tmp_path / "mmlu"), "--output_dir", str(out),
             "--no_progress"])
    with open(out / "results.json") as f:
        results = json.load(f)
    assert results["n"] == 21 and set(results["predicted_letters"]) <= set("ABCD")
    for record in read_jsonl(out / "predictions.jsonl"):
        assert set(record["probs"]) == set("ABCD") and sum(record["probs"].values()) == pytest.approx(1, abs=1e-5)
