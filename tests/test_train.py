"""train.py offline: example construction, input checks, and short CPU runs of a tiny ModernBERT."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from conftest import COLORS, ENV, LABEL_MAP, PROMPT, REPO, WORDS, base_args, write, write_csv

import mlm_classifier as core
from mlm_classifier import prompts
import train
from mlm_classifier import cli, objectives, trainer
from mlm_classifier import InputError, score_sequences

@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def encode(tokenizer, texts, labels, prompt=PROMPT, label_map=LABEL_MAP, max_length=512):
    options = prompts.options_block(label_map)
    return prompts.encode_prompts(tokenizer, core.parse_prompt(prompt), texts, [label_map[label] for label in labels],
                                  options, max_length)


# -----------------------------------------------------------------------------
# Examples


def test_atp_masks_exactly_the_answer_token_after_the_anchor(tokenizer):
    texts = ["the river red city", "a b", "market team law cell"]
    labels = ["RED", "BLUE", "YELLOW"]
    sequences, positions, n_cut = encode(tokenizer, texts, labels)
    answer_ids = prompts.answer_token_ids(tokenizer, core.parse_prompt(PROMPT), LABEL_MAP, "")
    anchor = tokenizer.convert_tokens_to_ids("[unused0]")
    assert n_cut == 0
    for text, label, ids, position in zip(texts, labels, sequences, positions):
        whole = tokenizer(PROMPT.rstrip().replace("{text}", text).replace("{label}", LABEL_MAP[label]))["input_ids"]
        assert ids == whole  # an example that fits is tokenised exactly as the whole prompt
        assert ids[position - 1] == anchor and ids[position] == answer_ids[list(LABEL_MAP).index(label)]
        input_ids, target = objectives.atp_example(ids, position, tokenizer.mask_token_id)
        assert input_ids[position] == tokenizer.mask_token_id
        assert [t for t in target if t != -100] == [ids[position]] and target[position] == ids[position]
        assert input_ids[:position] == ids[:position] and input_ids[position + 1:] == ids[position + 1:]








def test_mlm_masks_30_percent_with_mask_only_and_original_labels(tokenizer):
    ids = [tokenizer.cls_token_id] + tokenizer(" ".join(WORDS * 40), add_special_tokens=False)["input_ids"] + [
        tokenizer.sep_token_id]
    special = frozenset(tokenizer.all_special_ids)
    g = torch.Generator().manual_seed(0)
    input_ids, labels = objectives.mlm_example(ids, special, tokenizer.mask_token_id, 0.3, dummy=False, generator=g)
    masked = [i for i, t in enumerate(labels) if t != -100]
    assert 0.27 < len(masked) / (len(ids) - 2) < 0.33
    assert all(input_ids[i] == tokenizer.mask_token_id and labels[i] == ids[i] for i in masked)
    assert all(input_ids[i] == ids[i] for i in range(len(ids)) if labels[i] == -100)  # no 10% random, no 10% kept
    assert labels[0] == labels[-1] == -100


def test_dummy_mlm_labels_are_the_mask_id(tokenizer):
    ids = tokenizer(" ".join(WORDS * 10))["input_ids"]
    g = torch.Generator().manual_seed(1)
    input_ids, labels = objectives.mlm_example(ids, frozenset(tokenizer.all_special_ids), tokenizer.mask_token_id,
                                          0.3, dummy=True, generator=g)
    masked = [i for i, t in enumerate(labels) if t != -100]
    assert 0.2 < len(masked) / len(ids) < 0.4
    assert {labels[i] for i in masked} == {tokenizer.mask_token_id}
    assert all(input_ids[i] == tokenizer.mask_token_id for i in masked)


def test_short_mlm_example_always_has_a_target(tokenizer):
    ids = tokenizer("a")["input_ids"]  # [CLS] a [SEP]
    for seed in range(20):
        _, labels = objectives.mlm_example(ids, frozenset(tokenizer.all_special_ids), tokenizer.mask_token_id, 0.3,
                                      generator=torch.Generator().manual_seed(seed))
        assert labels == [-100, ids[1], -100]


def test_objective_mix_follows_the_proportions():
    g = torch.Generator().manual_seed(0)
    draws = [objectives.draw_objective(0.2, 0.3, g) for _ in range(20000)]
    for objective, share in (("mlm", 0.2), ("dummy", 0.3), ("atp", 0.5)):
        assert abs(draws.count(objective) / len(draws) - share) < 0.015


def test_collator_pads_to_a_multiple_and_mixes_objectives(tokenizer):
    texts, labels = ["the red city"] * 3 + ["a blue b c d e f"] * 3, ["RED"] * 3 + ["BLUE"] * 3
    sequences, positions, _ = encode(tokenizer, texts, labels)
    features = [{"input_ids": s, "answer_position": p} for s, p in zip(sequences, positions)]
    collate = objectives.ObjectiveCollator(tokenizer.mask_token_id, tokenizer.pad_token_id,
                                      frozenset(tokenizer.all_special_ids), pad_to_multiple_of=8)
    batch = collate(features)
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["input_ids"].shape[1] >= max(map(len, sequences))
    assert ((batch["labels"] != -100).sum(dim=1) == 1).all()  # ATP only: one target per row
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    torch.manual_seed(0)
    mixed = objectives.ObjectiveCollator(tokenizer.mask_token_id, tokenizer.pad_token_id,
                                    frozenset(tokenizer.all_special_ids), 0.5, 0.5)
    counts = [int((mixed(features)["labels"] != -100).sum()) for _ in range(5)]
    assert max(counts) > len(features)  # MLM rows carry several targets


def test_token_budget_batches_cover_every_example_once_within_budget():
    rng = random.Random(0)
    lengths = [rng.choice([10, 30, 200, 500]) for _ in range(300)]
    sampler = trainer.TokenBudgetBatchSampler(lengths, max_examples=8, max_tokens=1024, pad_to_multiple_of=64, seed=3)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(300))
    for batch in first:
        width = -(-max(lengths[i] for i in batch) // 64) * 64
        assert len(batch) <= 8 and (len(batch) == 1 or len(batch) * width <= 1024)
    sampler.set_epoch(1)
    second = list(sampler)
    assert len(second) == len(first) == len(sampler) and second != first
    assert sorted(map(sorted, second)) == sorted(map(sorted, first))  # same grouping, new order
    assert first[0] == second[0]  # the biggest batch comes first
    short = trainer.TokenBudgetBatchSampler([10] * 300, max_examples=8, max_tokens=4096, pad_to_multiple_of=8)
    assert len(short) == 38  # short examples fill whole batches: ceil(300 / 8)


# -----------------------------------------------------------------------------
# Flags


def parse(*flags):
    return cli.parse(train.build_parser(), list(flags))


def test_every_flag_has_both_spellings():
    parser = train.build_parser()
    options = {o for action in parser._actions for o in action.option_strings}
    for option in options:
        if "_" in option:
            assert option.replace("_", "-") in options, option
    args, settings = parse("--save-strategy", "no", "--eval-steps", "7", "--save-total-limit", "2",
                           "--per-device-train-batch-size", "4", "--true-mlm-proportion", "0.2")
    assert (settings.save_strategy, settings.eval_steps, settings.save_total_limit,
            settings.per_device_train_batch_size, args.true_mlm_proportion) == ("no", 7, 2, 4, 0.2)


def test_published_objective_flags_map_onto_the_new_ones():
    def shares(*flags):
        args, settings = parse(*flags)
        settings = args.objectives(settings)
        return settings.mlm_proportion, settings.dummy_mlm_proportion

    assert shares("--true_mlm_proportion", "0.2") == (0.2, 0.0)
    assert shares("--true_mlm_proportion", "0.2", "--dummy_examples") == (0.0, 0.2)
    assert shares("--mlm_proportion", "0.1", "--dummy_mlm_proportion", "0.3") == (0.1, 0.3)
    assert shares() == (0.0, 0.0)
    with pytest.raises(InputError, match="--true_mlm_proportion"):
        shares("--mlm_proportion", "0.1", "--true_mlm_proportion", "0.2")
    with pytest.raises(InputError, match="at most 1"):
        shares("--mlm_proportion", "0.6", "--dummy_mlm_proportion", "0.6")


def test_a_validation_set_keeps_the_best_checkpoint_by_accuracy(tmp_path):
    _, settings = parse("--output_dir", str(tmp_path), "--validation_fraction", "0.1")
    training_args = trainer.training_arguments(settings, validating=True, bf16=False)
    assert training_args.load_best_model_at_end and training_args.metric_for_best_model == "accuracy"
    assert training_args.eval_strategy == "steps" and training_args.save_strategy == "best"
    plain = trainer.training_arguments(parse("--output_dir", str(tmp_path))[1], validating=False, bf16=False)
    assert not plain.load_best_model_at_end and plain.eval_strategy == "no" and plain.save_strategy == "no"


# -----------------------------------------------------------------------------
# Bad input: an error naming the culprit, before any training


@pytest.mark.parametrize("change, expected", [
    ({"train": [{"text": "a red b", "label_text": "RED"}] * 3 + [{"text": "x", "label_text": "PURPLE"}]},
     ["'PURPLE' (row 3)", "'RED'"]),
    ({"label_map": {"RED": "crimson", "GREEN": "green"}}, ["'RED'", "'crimson'", "tokens", "letters", '"RED": "A"']),
    ({"label_map": {"RED": "red", "GREEN": "red"}}, ["'RED' and 'GREEN' both answer with the token"]),
    ({"prompt": "Answer: [unused0] {label}"}, ["{text}"]),
    ({"prompt": "Text: {text} {text}\nAnswer: [unused0] {label}"}, ["2 text placeholders"]),
    ({"prompt": "Text: {text}\nAnswer: [unused0]"}, ["{label}"]),
    ({"prompt": "Text: {text}\nAnswer: {label}"}, ["[unused0] must come right before {label}"]),
    ({"prompt": "Text: {text}\nAnswer: [unused0] {label}."}, ["only white space may follow {label}", "'.'"]),
    ({"flags": ["--max_length", "6"]}, ["needs", "tokens without any text", "--max_length 6"]),
    ({"flags": ["--text_column", "body"]}, ["'body'", "--text_column", "'text'", "'label_text'"]),
    ({"flags": ["--mlm_proportion", "0.1", "--true_mlm_proportion", "0.1"]},
     ["--true_mlm_proportion", "--mlm_proportion"]),
    ({"flags": ["--eval_strategy", "steps"]}, ["--eval_strategy steps", "validation"]),
])
def test_bad_input_names_the_culprit(tiny_model_dir, tmp_path, change, expected):
    files = {
        "train": write_csv(tmp_path / "train.csv", change.get("train", [{"text": "a red b", "label_text": "RED"}])),
        "label_map": write(tmp_path / "labels.json", json.dumps(change.get("label_map", LABEL_MAP))),
        "prompt": write(tmp_path / "prompt.txt", change.get("prompt", PROMPT)),
    }
    args = base_args(tiny_model_dir, files, tmp_path / "out")
    args += change.get("flags", [])
    with pytest.raises(InputError) as error:
        train.main(args)
    for part in expected:
        assert part in str(error.value)
    assert not os.path.exists(tmp_path / "out")  # stopped before any training


def test_command_line_error_exits_1_with_one_line(tiny_model_dir, tmp_path):
    files = {"train": write_csv(tmp_path / "train.csv", [{"text": "a red b", "label": "RED"}]),
             "label_map": write(tmp_path / "labels.json", json.dumps(LABEL_MAP)),
             "prompt": write(tmp_path / "prompt.txt", PROMPT)}
    done = subprocess.run([sys.executable, os.path.join(REPO, "train.py"),
                           *base_args(tiny_model_dir, files, tmp_path / "out")],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "'label_text'" in done.stderr and "'label'" in done.stderr


# -----------------------------------------------------------------------------
# End to end: a tiny ModernBERT from scratch learns to name the colour in the text


def test_tiny_model_learns_the_task_and_writes_every_output(trained):
    output_dir, metrics = trained
    assert metrics["test_accuracy"] >= 0.9 and metrics["validation_accuracy"] >= 0.9
    assert metrics["truncated"] == {"train": 6, "validation": 0, "test": 0, "predict": 4}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "label_map.json", "prompt.txt", "README.md",
                 "metrics.json", "trainer_state.json", "predictions.jsonl"):
        assert os.path.exists(os.path.join(output_dir, name)), name
    # the best checkpoint was reloaded and saved as the model: its optimizer state is gone (no --keep_checkpoints)
    assert metrics["best_step"] and not [n for n in os.listdir(output_dir) if n.startswith("checkpoint-")]
    with open(os.path.join(output_dir, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    for split in ("validation", "test"):
        assert 0 <= saved[f"{split}_macro_f1"] <= 1 and saved[f"{split}_n"] == 80
        matrix = saved[f"{split}_confusion_matrix"]
        assert len(matrix) == 4 and sum(map(sum, matrix)) == 80
        assert sum(matrix[k][k] for k in range(4)) / 80 == saved[f"{split}_accuracy"]
        assert set(saved[f"{split}_per_class"]) <= set(LABEL_MAP)
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        state = json.load(f)
    assert state["best_metric"] == saved["validation_accuracy"]  # the best checkpoint is the one kept
    assert any("eval_accuracy" in entry for entry in state["log_history"])
    with open(os.path.join(output_dir, "config.json")) as f:
        assert json.load(f)["sparse_prediction"] is False
    with open(os.path.join(output_dir, "label_map.json")) as f:
        assert json.load(f) == LABEL_MAP
    with open(os.path.join(output_dir, "prompt.txt")) as f:
        assert f.read() == PROMPT


def test_saved_folder_reloads_and_predicts_the_same(trained, files):
    """predictions.jsonl is consistent, and a plain reload of the folder scores the texts that fit the same way."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    output_dir, _ = trained
    with open(os.path.join(output_dir, "predictions.jsonl")) as f:
        predictions = [json.loads(line) for line in f]
    with open(files["predict"]) as f:
        texts = [json.loads(line)["text"] for line in f]
    assert [p["row"] for p in predictions] == list(range(20)) and [p["text"] for p in predictions] == texts
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in predictions)
    assert all(p["label"] == max(p["probabilities"], key=p["probabilities"].get) for p in predictions)
    assert sum(p["label"].lower() in p["text"].split() for p in predictions) >= 18

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    model = AutoModelForMaskedLM.from_pretrained(output_dir).eval()
    fits = [i for i in range(20) if i % 5]  # every 5th text is longer than --max_length 48 and was cut
    prompts = [PROMPT.rstrip().replace("{text}", texts[i]).replace("{label}", tokenizer.mask_token) for i in fits]
    answer_ids = [[tokenizer(" " + c, add_special_tokens=False)["input_ids"][0]] for c in COLORS]
    scores = score_sequences(model, tokenizer(prompts)["input_ids"], tokenizer.mask_token_id, tokenizer.pad_token_id,
                             answer_ids, batch_tokens=4096)
    assert [list(LABEL_MAP)[max(range(4), key=scores[k].__getitem__)] for k in range(len(fits))] == [
        predictions[i]["label"] for i in fits]


def test_dummy_mlm_loss_collapses_while_standard_mlm_loss_does_not(tiny_model_dir, files, tmp_path):
    def final_loss(*flags):
        output_dir = tmp_path / "_".join(flags).replace("-", "")
        train.main(base_args(tiny_model_dir, files, output_dir, "--max_steps", "60", *flags))
        with open(output_dir / "trainer_state.json") as f:
            return [e["loss"] for e in json.load(f)["log_history"] if "loss" in e][-1]

    dummy = final_loss("--true_mlm_proportion", "1", "--dummy_examples")  # the published spelling of 100% dummy
    standard = final_loss("--mlm_proportion", "1")
    assert dummy < 0.05
    assert standard > 1.0


def test_two_process_torchrun(tiny_model_dir, files, tmp_path):
    output_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               os.path.join(REPO, "train.py"),
               *base_args(tiny_model_dir, files, output_dir, "--validation_file", files["validation"],
                          "--test_file", files["test"], "--predict_file", files["predict"], "--max_steps", "30",
                          "--eval_steps", "10", "--mlm_proportion", "0.2")]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(output_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["test_n"] == metrics["validation_n"] == 80  # every row scored, the shards gathered
    with open(output_dir / "trainer_state.json") as f:
        state = json.load(f)
    # 600 rows make at least 38 batches: 30 steps are under one epoch for one process, over 1.5 for two.
    assert state["global_step"] == 30 and state["epoch"] > 1.5
    assert state["best_metric"] == metrics["validation_accuracy"]
    with open(output_dir / "predictions.jsonl") as f:
        assert [json.loads(line)["row"] for line in f] == list(range(20))
