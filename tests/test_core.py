"""mlm_classifier.py, the core: prompt rules, cutting, answer tokens, batching, bias controls, tables, paths."""

import json
import os
import random

import pytest
from conftest import LABEL_MAP, PROMPT, WORDS, write

import mlm_classifier as core
from mlm_classifier import data, models, prompts, scoring


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def encode(tokenizer, texts, labels, prompt=PROMPT, label_map=LABEL_MAP, max_length=512):
    return prompts.encode_prompts(tokenizer, core.parse_prompt(prompt), texts, [label_map[label] for label in labels],
                               prompts.options_block(label_map), max_length)


# --- answer tokens and batches


def test_letter_ids_are_both_single_token_spellings(tokenizer):
    ids = scoring.letter_token_ids(tokenizer, "ABCD")
    for letter, pair in zip("ABCD", ids):
        assert pair == sorted([tokenizer.convert_tokens_to_ids(letter), tokenizer.convert_tokens_to_ids("Ġ" + letter)])


def test_multi_token_spelling_is_an_error_naming_it(tokenizer):
    with pytest.raises(core.InputError, match="'Ω'.*2 tokens"):
        scoring.letter_token_ids(tokenizer, ["Ω"])


def test_tokenizer_without_mask_token_is_an_error():
    class NoMask:
        mask_token_id = None

    with pytest.raises(core.InputError, match="no mask token"):
        models.require_mask_token(NoMask(), "some/bert")


def test_batches_cover_every_index_once_within_the_budget():
    lengths = [5, 90, 17, 17, 64, 3, 40, 200, 8, 33]
    batches = scoring.length_sorted_batches(lengths, batch_tokens=128, pad_to_multiple_of=8)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        width = -(-max(lengths[i] for i in batch) // 8) * 8
        assert len(batch) == 1 or len(batch) * width <= 128


def test_padding_keeps_each_rows_ids_in_order_then_pads_to_the_multiple():
    sequences = [[5, 6, 7], [9], [1, 2, 3, 4, 8, 10, 11, 12, 13]]
    input_ids, attention_mask = scoring.pad_batch(sequences, pad_token_id=0, pad_to_multiple_of=8)
    assert input_ids.shape == attention_mask.shape == (3, 16)
    for row, ids in enumerate(sequences):
        assert input_ids[row].tolist() == ids + [0] * (16 - len(ids))
        assert attention_mask[row].tolist() == [1] * len(ids) + [0] * (16 - len(ids))

# --- prompt rules and cutting


def test_options_fill_and_published_txt_placeholder():
    prompt = "Pick one:\n{options}\nText: {txt}\nAnswer: [unused0]{label}"
    label_map = {"RED": "A", "GREEN": "B"}
    filled, [(t0, t1)] = prompts.fill_template(core.parse_prompt(prompt), "the sky", "B", prompts.options_block(label_map))
    assert filled == "Pick one:\n- A: RED\n- B: GREEN\nText: the sky\nAnswer: [unused0]B"
    assert filled[t0:t1] == "the sky"


def test_truncation_cuts_only_the_text_and_counts_the_cuts(tokenizer):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(n)) for n in (3, 40, 5, 90, 60)]
    labels = ["RED", "GREEN", "BLUE", "YELLOW", "RED"]
    full, full_positions, _ = encode(tokenizer, texts, labels)
    max_length = 30
    cut, positions, n_cut = encode(tokenizer, texts, labels, max_length=max_length)
    too_long = [len(ids) > max_length for ids in full]
    assert n_cut == sum(too_long) == 3
    for ids, position, whole, whole_position, long, label in zip(cut, positions, full, full_positions, too_long,
                                                                 labels):
        assert len(ids) == (max_length if long else len(whole))
        # What follows the text ("\nAnswer: [unused0] red" and [SEP]) is kept whole, the answer at its place.
        suffix = len(tokenizer("\nAnswer: [unused0] " + LABEL_MAP[label], add_special_tokens=False)["input_ids"]) + 1
        assert ids[-suffix:] == whole[-suffix:] and len(ids) - position == len(whole) - whole_position
        # Before it: the prompt's prefix and the head of the text, token for token.
        assert ids[:-suffix] == whole[: len(ids) - suffix]


def test_text_that_cannot_fit_names_the_row(tokenizer):
    template = core.parse_prompt(PROMPT)
    with pytest.raises(core.InputError, match="row 7"):
        prompts.encode_prompts(tokenizer, template, ["a b c"], ["red"], "", 5, rows=[7], source="f.csv")


# --- bias controls


def test_rotations_show_every_option_once_at_every_position():
    orders = scoring.rotations(4, 4)
    assert orders[0] == [0, 1, 2, 3] and orders[1] == [1, 2, 3, 0]
    for position in range(4):
        assert sorted(order[position] for order in orders) == [0, 1, 2, 3]
    assert scoring.rotations(4, 2) == orders[:2]
    with pytest.raises(core.InputError, match="--permutations 5 must be between 1 and the number of options \\(4\\)"):
        scoring.rotations(4, 5)


def test_slot_probabilities_follow_the_option_shown_in_each_slot():
    log_probs = [0.0, -1.0, -2.0]  # slot 0 likeliest
    assert scoring.slot_probabilities(log_probs, [0, 1, 2]) == pytest.approx([0.665241, 0.244728, 0.090031], abs=1e-6)
    assert scoring.slot_probabilities(log_probs, [2, 0, 1]) == pytest.approx([0.244728, 0.090031, 0.665241], abs=1e-6)


def test_calibration_divides_by_the_content_free_probabilities():
    assert scoring.calibrate([0.5, 0.3, 0.2], [0.5, 0.3, 0.2]) == pytest.approx([1 / 3] * 3)
    assert scoring.calibrate([0.6, 0.4], [0.75, 0.25]) == pytest.approx([0.8 / 2.4, 1.6 / 2.4])
    views = [[0.6, 0.4], [0.2, 0.8]]
    assert scoring.combine_views(views) == pytest.approx([0.4, 0.6])
    assert scoring.combine_views(views, content_free=views) == pytest.approx([0.5, 0.5])


def test_ties_go_to_the_earliest_option():
    assert scoring.first_max([0.2, 0.4, 0.4]) == 1
    assert scoring.first_max(scoring.slot_probabilities([-1.0, -1.0])) == 0


# --- labels, tables and output paths


def test_labels_from_a_comma_list_or_a_file(tmp_path):
    assert data.parse_labels(" World, Sports ,Sci/Tech") == ["World", "Sports", "Sci/Tech"]
    path = write(tmp_path / "labels.txt", "spam\n\nnot spam\n")
    assert data.parse_labels(path) == ["spam", "not spam"]
    with pytest.raises(core.InputError, match="'spam' given more than once"):
        data.parse_labels("spam,ham,spam")


def test_every_table_format_reads_the_same_rows(tmp_path):
    import pandas

    rows = [{"text": "first, with a comma", "label": "A", "n": "1"}, {"text": "second", "label": "B", "n": "2"}]
    pandas.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    pandas.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    write(tmp_path / "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(tmp_path / "t.json", json.dumps(rows))
    for extension in ("csv", "parquet", "jsonl", "json"):
        table = core.read_table(str(tmp_path / f"t.{extension}"), "--input")
        split = core.take_columns(table, "t", "text", "label", id_column="n")
        assert (split.texts, split.labels, split.ids, split.rows) == (
            ["first, with a comma", "second"], ["A", "B"], ["1", "2"], [0, 1]), extension


def test_a_missing_cell_is_an_error_naming_the_row(tmp_path):
    write(tmp_path / "t.csv", "text,label\na,X\n,Y\n")
    with pytest.raises(core.InputError, match="t.csv: row 1 has no text in column 'text'"):
        core.take_columns(core.read_table(str(tmp_path / "t.csv"), "--input"), str(tmp_path / "t.csv"), "text", "label")


@pytest.mark.parametrize("name, content, expected", [
    ("t.jsonl", '{"text": "a"}\n\n{"text": \n', r"row 1 \(line 3\): not valid JSON"),
    ("t.jsonl", '{"text": "a"}\n["text"]\n', "row 1 is list, not a JSON object"),
    ("t.csv", "", "the file is empty"),
    ("t.csv", "text,label\n\"unclosed,A\n", "cannot be read as csv"),
    ("t.parquet", "not parquet at all", "cannot be read as parquet"),
])
def test_unreadable_tables_name_the_file(tmp_path, name, content, expected):
    path = write(tmp_path / name, content)
    with pytest.raises(core.InputError, match=expected) as error:
        core.read_table(path, "--input")
    assert str(error.value).startswith(f"--input {path}: ")


def test_latin1_file_is_named_as_not_utf8(tmp_path):
    (tmp_path / "t.csv").write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(core.InputError, match="not UTF-8"):
        core.read_table(str(tmp_path / "t.csv"), "--input")


def test_output_paths_are_checked_before_any_work(tmp_path):
    a_file = write(tmp_path / "a_file", "x")
    data.check_output_path(str(tmp_path / "new" / "deeper" / "out.jsonl"), "--output")  # folders get made later
    with pytest.raises(core.InputError, match="is a file, so nothing can be written under it"):
        data.check_output_path(os.path.join(a_file, "out.jsonl"), "--output")
    with pytest.raises(core.InputError, match="is a folder"):
        data.check_output_path(str(tmp_path), "--output")
    with pytest.raises(core.InputError, match="is a file; give a folder"):
        data.check_output_path(a_file, "--output_dir", folder=True)


def test_no_row_is_padded_beyond_the_local_window_and_answers_do_not_depend_on_padding(tiny_model_dir):
    """In ModernBERT's local layers a padded position further than half the window from every real token sees no key:
    some GPU kernels return NaN there, and the next layer spreads it into the real positions. So batches keep each
    row within that bound of its width, and a batch's answers are each prompt's own, alone."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir).eval()
    bound = scoring.padding_bound(model)
    assert bound == model.config.local_attention // 2 == 8
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(n)) + " Answer: [unused0] [MASK]" for n in (2, 5, 30, 90, 3, 60)]
    sequences = tokenizer(texts)["input_ids"]
    lengths = [len(s) for s in sequences]
    for batch in scoring.length_sorted_batches(lengths, 10_000, 8, bound):
        width = scoring.padded_width(max(lengths[i] for i in batch), 8)
        assert all(width - lengths[i] <= bound for i in batch)
    letters = scoring.letter_token_ids(tokenizer, "ABCD")
    mask, pad = tokenizer.mask_token_id, tokenizer.pad_token_id
    batched = scoring.score_sequences(model, sequences, mask, pad, letters, batch_tokens=10_000, pad_to_multiple_of=64)
    for k, ids in enumerate(sequences):
        alone = scoring.score_sequences(model, [ids], mask, pad, letters, batch_tokens=10_000, pad_to_multiple_of=1)
        assert batched[k] == pytest.approx(alone[0], abs=1e-5)
