"""The MLM head as a generative classifier (Clavié, Cooper, Warner, 2025, *It's All in The [MASK]*).

A prompt ends with `Answer: [unused0] [MASK]`, and a masked LM's plain MLM head, read at that [MASK] over the
option tokens (letters `A`, `B`, ... or single-token label words), picks the answer in one forward pass.
minimal.py shows the method on one screen; this package is the same method, batched and checked:

- scoring.py: the idea: answer tokens, length-sorted batches, the MLM head only at [MASK], bias controls;
- prompts.py: template rules (a {text} or columns such as {premise}), filling a template, cutting only the text to
  fit, [unused0] as one token;
- spec.py: what a classifier answers, from a trained folder or zero-shot labels (ClassifierSpec, load_spec);
- classifier.py: how a spec is scored (its views, checked against the tokenizer) and MLMClassifier, for notebooks;
- multilabel.py: texts with any number of labels, each label a yes/no question;
- objectives.py: the training objectives, ATP and (dummy) MLM, drawn per example;
- data.py: reading tables and text files, prediction records, atomic writes;
- splits.py: a table's texts, labels and ids, checked row by row; a training run's splits;
- stream.py: tables read a chunk of rows at a time and checked in one pass; any iterable of texts in chunks;
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
from .anchor import (ANCHOR, register_anchor, vocabulary_anchor_id)
from .prompts import (PLACEHOLDER, Template, TEXT_FIELD, TEXT_PLACEHOLDERS, ZERO_SHOT_PROMPT, answer_token_ids,
                      as_template, check_fixed_length, cut_to_fit, empty_fields, encode_prompts, fill_prompt,
                      fill_template, kept_lengths, letter_suggestion, mask_answers, option_lines, options_block,
                      parse_prompt, placeholder_list, template_columns, template_parts)
from .spec import (ClassifierSpec, SETTINGS_FILE, folder_spec, load_spec, model_file, read_settings)
from .classifier import (CONTENT_FREE_TEXT, MLMClassifier, ScoringPlan, View, check_abstention, make_views,
                         plan_scoring)
from .multilabel import (ANSWERS, MULTI_LABEL_PROMPT, OPTIONS, THRESHOLD, check_multi_label_prompt, chosen_labels,
                         encode_pairs, label_lists, multi_label_metrics, multi_label_record, pair_answers,
                         plan_questions, question_template, question_templates, yes_probabilities)
from .objectives import (ObjectiveCollator, atp_example, draw_objective, make_example, mlm_example)
from .data import (NO_ID, TABLE_FORMATS, accuracy_table, check_labels_list, check_table_file, check_unique_columns,
                   csv_header, load_hub_dataset, parse_labels, prediction_record, read_json_records, read_jsonl,
                   read_label_map, read_prompt, read_table, read_text, reading_errors, records_to_columns,
                   records_to_csv, records_to_jsonl, unique_keys, write_atomic)
from .splits import (Split, check_labels, hold_out, id_value, load_splits, some_rows, subsample,
                     take_columns, template_inputs, text_value, without_text_error)
from .stream import (Chunk, CHUNK_ROWS, InputSummary, TableChunks, batches_of, check_columns, check_input,
                     stream_results)
from .recipes import (AG_NEWS_LABEL_MAP, AG_NEWS_PROMPT, IMDB_LABELS, IMDB_PROMPT, LABEL_KEY, MNLI_LABELS, MNLI_PROMPT,
                      NEWSGROUPS, NEWSGROUPS_PROMPT, OURS, PAPER_AVERAGE, PAPER_TABLE_3, Recipe, RECIPES, SST2_LABELS,
                      SST2_PROMPT, SST5_LABELS, SST5_PROMPT, YAHOO_LABELS, YAHOO_PROMPT, instructions_prompt,
                      letter_map, letter_options, load_rows, local_split_file, read_local_rows, recipe_fields,
                      recipe_row, strip_post)
from .cli import (ArgumentParser, HelpFormatter, InputError, INTERRUPTED, add_flag, add_scoring_flags,
                  check_output_path, check_positive, check_spares_inputs, differences, error_reason, make_parser,
                  on_interrupt, row_and_line, run_command, say, short)
from .models import (TOKENIZER_FILES, WEIGHT_FILES, batch_defaults, check_max_length, check_model_source, current_shard,
                     end_distributed, gather_scores, hide_progress_bars, init_distributed, load_masked_lm,
                     load_pretrained, load_tokenizer, looks_local, max_positions, require_mask_token,
                     resolve_attn_implementation, resolve_device, resolve_dtype)
from .checkpoints import (CHECKPOINT_FILES, WRITTEN_FILES, check_inputs_are_spared, checkpoint_global_step,
                          checkpoint_step, loss_since_resume, missing_from_checkpoint, remove_checkpoints,
                          resolve_checkpoint, whole_run_loss)
