"""The MLM head as a generative classifier (Clavié, Cooper, Warner, 2025, *It's All in The [MASK]*).

A prompt ends with `Answer: [unused0] [MASK]`, and a masked LM's plain MLM head, read at that [MASK] over the
option tokens (letters `A`, `B`, ... or single-token label words), picks the answer in one forward pass.
minimal.py shows the method on one screen; this package is the same method, batched and checked:

- scoring.py: the idea: answer tokens, length-sorted batches, the MLM head only at [MASK], bias controls;
- prompts.py: template rules (a {text} or columns such as {premise}), filling a template, cutting only the text to
  fit, [unused0] as one token;
- classifier.py: ClassifierSpec, trained folders, and MLMClassifier, for notebooks;
- data.py: reading tables and text files, prediction records, atomic writes;
- splits.py: a table's texts, labels and ids, checked row by row; a training run's splits;
- cli.py: InputError and one-line errors, the shared flags;
- models.py: devices, dtypes, loading models and tokenizers, torchrun;
- recipes.py: the seven fine-tuning tasks of the paper's Table 3 (data, columns, labels, prompt) and its figures;
- checkpoints.py: resuming a training run; trainer.py: train.py's Trainer (imported there, not here: Trainer takes
  seconds to import).

    from mlm_classifier import MLMClassifier
    clf = MLMClassifier.from_pretrained("answerdotai/ModernBERT-Large-Instruct", labels=["spam", "not spam"])
    clf("Win a free cruise!")  # {"label": "spam", "probabilities": {"spam": 0.93, "not spam": 0.07}}

Every name of the modules below is importable from here (trainer.py and reference.py by their module).
"""

from .scoring import (LETTERS, MLM_HEAD_ENTRIES, calibrate, combine_views, first_max, head_logits, labelled_loss,
                      last_index, length_sorted_batches, letter_token_ids, letters_that_fit, logits_at, mlm_head_entry,
                      option_log_probs, pad_batch, padded_width, predict_option, rotations, score_sequences,
                      single_token_id, slot_probabilities)
from .prompts import (ANCHOR, PLACEHOLDER, TEXT_FIELD, TEXT_PLACEHOLDERS, ZERO_SHOT_PROMPT, Template, answer_token_ids,
                      as_template, check_fixed_length, cut_to_fit, empty_fields, encode_prompts, fill_prompt,
                      fill_template, kept_lengths, letter_suggestion, mask_answers, option_lines, options_block,
                      parse_prompt, placeholder_list, register_anchor, template_columns, template_parts,
                      vocabulary_anchor_id)
from .classifier import (ClassifierSpec, CONTENT_FREE_TEXT, MLMClassifier, ScoringPlan, SETTINGS_FILE, View,
                         check_labels_list, checked_texts, load_spec, make_views, model_file, parse_labels,
                         plan_scoring, read_settings)
from .data import (NO_ID, TABLE_FORMATS, accuracy_table, check_unique_columns, csv_header, load_hub_dataset,
                   prediction_record, read_json_records, read_jsonl, read_label_map, read_prompt, read_table, read_text,
                   records_to_columns, records_to_csv, records_to_jsonl, unique_keys, write_atomic)
from .splits import (Split, check_labels, hold_out, id_value, load_splits, some_rows, subsample, take_columns,
                     template_inputs, text_value)
from .cli import (ArgumentParser, HelpFormatter, InputError, INTERRUPTED, add_flag, add_scoring_flags,
                  check_output_path, check_positive, check_spares_inputs, differences, error_reason, make_parser,
                  on_interrupt, row_and_line, run_command, say, short)
from .models import (TOKENIZER_FILES, WEIGHT_FILES, batch_defaults, check_model_source, current_shard, end_distributed,
                     gather_scores, hide_progress_bars, init_distributed, load_masked_lm, load_pretrained,
                     load_tokenizer, looks_local, max_positions, require_mask_token, resolve_attn_implementation,
                     resolve_device, resolve_dtype)
from .checkpoints import (CHECKPOINT_FILES, WRITTEN_FILES, check_inputs_are_spared, checkpoint_global_step,
                          checkpoint_step, loss_since_resume, missing_from_checkpoint, remove_checkpoints,
                          resolve_checkpoint, whole_run_loss)
from .recipes import (AG_NEWS_LABEL_MAP, AG_NEWS_PROMPT, NEWSGROUPS, NEWSGROUPS_PROMPT, PAPER_AVERAGE, PAPER_TABLE_3,
                      RECIPES, Recipe, load_rows, recipe_fields, recipe_row)
