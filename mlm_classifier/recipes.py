"""The seven fine-tuning tasks of the paper's Table 3 as recipes (hub dataset, columns, labels, label map, prompt,
max_length), their rows read from the hub or local files in its layout (`load_rows`), and the paper's figures.
Where AnswerDotAI's ModernBERT-Instruct mini cookbook has a prompt for a task (AG News, 20 Newsgroups), the recipe
uses it character for character; the others are ours, in the published prompts' layout.

    rows = load_rows(RECIPES["mnli"], "~/data/mnli")   # {"train": [{"premise": ..., "label_text": ...}], ...}
"""

import os
from dataclasses import dataclass

from .data import load_hub_dataset, read_jsonl, read_table, row_and_line
from .errors import InputError
from .scoring import LETTERS

LABEL_KEY = "label_text"  # the key of a row's label name in the rows load_rows returns


@dataclass(frozen=True)
class Recipe:
    """One task of Table 3. `columns` are a row's text columns in the order the classification head reads them; a
    prompt's `{name}` placeholders name them, and `{text}` names `text_column` (None: no single text). `labels` are
    in the dataset's order: with `label_is_index`, `label_column` holds an index into them, else the name itself."""
    name: str  # the name --tasks takes
    title: str  # as Table 3 names the task
    dataset: str
    config: str | None
    splits: dict  # {"train": hub split, "test": hub split}
    columns: tuple
    text_column: str | None
    label_column: str
    labels: tuple
    label_is_index: bool
    label_map: dict  # label name -> verbalizer (its answer token after [unused0])
    prompt: str
    published: bool  # the cookbook's prompt, character for character (else ours)
    max_length: int
    cls_pair: bool = False  # the classification head reads columns[0] and columns[1] as a sentence pair
    strip_headers: bool = False  # its local posts carry headers, signatures and quotes that --strip_headers removes
    label_phrase: str = ""  # how an error names the labels; default: from `labels`

    @property
    def prompt_source(self):
        return f"the published {self.title} prompt" if self.published else f"our {self.title} prompt"

    @property
    def hub_name(self):
        """The dataset as settings record it, with [test split] when the test split is not "test"."""
        return self.hub_split(self.splits["test"] if self.splits["test"] != "test" else None)

    def hub_split(self, split=None):
        """`name/config[split]`: how errors name one of the hub's splits (or, without one, the dataset)."""
        return self.dataset + (f"/{self.config}" if self.config else "") + (f"[{split}]" if split else "")

    def label_name(self, value):
        """The label name that `value` (from label_column) stands for, or None when it is none of them."""
        if not self.label_is_index:
            return value if isinstance(value, str) and value in self.labels else None
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(self.labels):
            return None
        return self.labels[value]

    def describe_labels(self):
        if self.label_phrase:
            return self.label_phrase
        if self.label_is_index:
            return f"the class ids 0-{len(self.labels) - 1} of {self.title} ({', '.join(self.labels)})"
        return f"the {len(self.labels)} labels of {self.title} ({', '.join(repr(label) for label in self.labels)})"


def letter_map(labels):
    """{label: letter} in the labels' order: A, B, C, ..."""
    return {label: letter for label, letter in zip(labels, LETTERS)}


def letter_options(pairs):
    """`A: name` or `A: name, description` lines, as the published 20 Newsgroups prompt writes its options."""
    return "\n".join(f"{letter}: {text}" for letter, text in pairs)


def instructions_prompt(instruction, content, question, options):
    """A prompt in the layout of the published fine-tuning prompts: instructions, the content, the question, the
    options and the answer slot. (The published ones have four spaces after `** Instructions **`; ours do not.)"""
    return (f"** Instructions **\n{instruction}\n** Content **\n{content}\n{question}\n** Options **\n{options}\n"
            "** Answer **\nAnswer: [unused0] {label}")


# The published prompts (AnswerDotAI's ModernBERT-Instruct mini cookbook), character for character.

# train.py's AG News prompt, trailing spaces on the first line included. `{txt}` is the published spelling of `{text}`.
AG_NEWS_PROMPT = (
    "** Instructions **    \n"
    "Given a short news report, determine which news category it belongs to.\n"
    "** Content **\n"
    "What is the category of the following news report?\n"
    "News Report: {txt}\n"
    "** Options **\n"
    "- Business: It is about business or financial news.\n"
    "- World: It's about world news.\n"
    "- Sports: It's about sports.\n"
    "- Tech: It's about Science or Technology, or related companies.\n"
    "** Answer **\n"
    "Answer: [unused0] {label}"
)
# The published agnews_label_map.json: SetFit/ag_news's label_text -> verbalizer.
AG_NEWS_LABEL_MAP = {"Business": "Business", "World": "World", "Sports": "Sports", "Sci/Tech": "Tech"}

NEWSGROUPS = [  # label index = position (alphabetical, as sklearn and SetFit number them), published description
    ("alt.atheism", "Discussion of atheism and criticism of religion"),
    ("comp.graphics", "Computer graphics, rendering, and visualization"),
    ("comp.os.ms-windows.misc", "General Microsoft Windows topics and issues"),
    ("comp.sys.ibm.pc.hardware", "IBM PC compatible hardware and components"),
    ("comp.sys.mac.hardware", "Apple Macintosh hardware and components"),
    ("comp.windows.x", "X Window System software and configuration"),
    ("misc.forsale", "General marketplace for selling items"),
    ("rec.autos", "Cars, automotive repair and motorsports"),
    ("rec.motorcycles", "Motorcycles, riding and maintenance"),
    ("rec.sport.baseball", "Baseball discussion and news"),
    ("rec.sport.hockey", "Hockey discussion and news"),
    ("sci.crypt", "Cryptography and data security"),
    ("sci.electronics", "Electronics and electrical engineering"),
    ("sci.med", "Medicine, health and medical science"),
    ("sci.space", "Space exploration and astronomy"),
    ("soc.religion.christian", "Christianity-specific religious discussion"),
    ("talk.politics.guns", "Gun politics and firearm regulations"),
    ("talk.politics.mideast", "Middle East politics and current events"),
    ("talk.politics.misc", "General political discussion and debate"),
    ("talk.religion.misc", "General religious discussion across faiths"),
]
# The published sweep's template (`newsgroup_template`), Table 3's setting: its `A: alt.atheism, <description>` option
# lines are written in, as their format is not `{options}`' (`- A: alt.atheism`); only the post and the answer vary.
NEWSGROUPS_PROMPT = (
    "** Instructions **    \n"
    "Given a short post from an online forum, determine which newsgroup category it belongs to.\n"
    "** Content **\n"
    "{text}\n"
    "What's the category of the post above?\n"
    "** Options **\n"
    + letter_options(zip(LETTERS, (f"{name}, {about}" for name, about in NEWSGROUPS))) + "\n"
    "** Answer **\n"
    "Answer: [unused0] {label}"
)

# Ours, in the published layout, answering with letters (the cookbook: "this is how we perform most tasks").

MNLI_LABELS = ("entailment", "neutral", "contradiction")  # nyu-mll/glue mnli's class ids 0, 1, 2
MNLI_PROMPT = instructions_prompt(
    "Given a premise and a hypothesis, determine whether the premise entails the hypothesis, contradicts it, or "
    "neither.",
    "Premise: {premise}\nHypothesis: {hypothesis}",
    "What is the relation between the premise and the hypothesis?",
    letter_options(zip(LETTERS, ("entailment, the hypothesis must be true if the premise is true",
                                 "neutral, the hypothesis may or may not be true given the premise",
                                 "contradiction, the hypothesis cannot be true if the premise is true"))))

YAHOO_LABELS = ("Society & Culture", "Science & Mathematics", "Health", "Education & Reference",
                "Computers & Internet", "Sports", "Business & Finance", "Entertainment & Music",
                "Family & Relationships", "Politics & Government")  # yahoo_answers_topics' class ids 0-9
YAHOO_PROMPT = instructions_prompt(
    "Given a question from a question-answering forum and its best answer, determine which topic it belongs to.",
    "Title: {question_title}\nQuestion: {question_content}\nBest answer: {best_answer}",
    "What is the topic of the question above?",
    letter_options(zip(LETTERS, YAHOO_LABELS)))

SST2_LABELS = ("negative", "positive")  # SetFit/sst2's label_text
SST2_PROMPT = instructions_prompt(
    "Given a sentence from a movie review, determine whether its sentiment is negative or positive.",
    "{text}", "What is the sentiment of the sentence above?", letter_options(zip(LETTERS, SST2_LABELS)))

IMDB_LABELS = ("negative", "positive")  # stanfordnlp/imdb's class ids 0, 1
IMDB_PROMPT = instructions_prompt(
    "Given a movie review, determine whether its sentiment is negative or positive.",
    "{text}", "What is the sentiment of the review above?", letter_options(zip(LETTERS, IMDB_LABELS)))

SST5_LABELS = ("very negative", "negative", "neutral", "positive", "very positive")  # SetFit/sst5's label_text
SST5_PROMPT = instructions_prompt(
    "Given a sentence from a movie review, determine its sentiment, from very negative to very positive.",
    "{text}", "What is the sentiment of the sentence above?", letter_options(zip(LETTERS, SST5_LABELS)))

# Table 3's order. max_length: 20 Newsgroups' is the published sweep's, AG News' the published train.py's; the others
# are ours (most texts fit, at a fraction of the published 4096).
RECIPES = {recipe.name: recipe for recipe in (
    Recipe("mnli", "MNLI", "nyu-mll/glue", "mnli", {"train": "train", "test": "validation_matched"},
           ("premise", "hypothesis"), None, "label", MNLI_LABELS, True, letter_map(MNLI_LABELS), MNLI_PROMPT,
           False, 512, cls_pair=True),
    Recipe("yahoo", "Yahoo! Answers", "community-datasets/yahoo_answers_topics", None,
           {"train": "train", "test": "test"}, ("question_title", "question_content", "best_answer"), None, "topic",
           YAHOO_LABELS, True, letter_map(YAHOO_LABELS), YAHOO_PROMPT, False, 1024),
    Recipe("20newsgroups", "20 Newsgroups", "SetFit/20_newsgroups", None, {"train": "train", "test": "test"},
           ("text",), "text", "label_text", tuple(name for name, _ in NEWSGROUPS), False,
           letter_map([name for name, _ in NEWSGROUPS]), NEWSGROUPS_PROMPT, True, 4096, strip_headers=True,
           label_phrase="the 20 newsgroups"),
    Recipe("ag_news", "AG News", "SetFit/ag_news", None, {"train": "train", "test": "test"}, ("text",), "text",
           "label_text", ("World", "Sports", "Business", "Sci/Tech"), False, AG_NEWS_LABEL_MAP, AG_NEWS_PROMPT,
           True, 512),
    Recipe("sst2", "SST-2", "SetFit/sst2", None, {"train": "train", "test": "test"}, ("text",), "text",
           "label_text", SST2_LABELS, False, letter_map(SST2_LABELS), SST2_PROMPT, False, 512),
    Recipe("imdb", "IMDB", "stanfordnlp/imdb", None, {"train": "train", "test": "test"}, ("text",), "text", "label",
           IMDB_LABELS, True, letter_map(IMDB_LABELS), IMDB_PROMPT, False, 2048),
    Recipe("sst5", "SST-5", "SetFit/sst5", None, {"train": "train", "test": "test"}, ("text",), "text",
           "label_text", SST5_LABELS, False, letter_map(SST5_LABELS), SST5_PROMPT, False, 512),
)}

# The paper's Table 3 (Clavié, Cooper, Warner, 2025, "It's All in The [MASK]", arXiv 2502.03793, Table 3), as printed:
# accuracy (%) of ModernBERT-Large-Instruct fine-tuned through its MLM head ("mlm", 100% ATP) and of ModernBERT-Large
# with a classification head ("cls"). The paper states neither the metric nor the split (MNLI and SST-2 are usually
# reported on dev, their test labels being hidden).
PAPER_TABLE_3 = {
    "mnli": {"mlm": 91.03, "cls": 90.8},  # the classification head's MNLI and SST-2 figures are the ModernBERT
    "yahoo": {"mlm": 77.88, "cls": 77.75},  # paper's (Warner et al., arXiv 2412.13663), as Table 3 marks them
    "20newsgroups": {"mlm": 73.96, "cls": 73.96},
    "ag_news": {"mlm": 95.24, "cls": 95.34},
    "sst2": {"mlm": 96.22, "cls": 97.1},
    "imdb": {"mlm": 97.2, "cls": 96.52},
    "sst5": {"mlm": 61.13, "cls": 59.28},
}
PAPER_AVERAGE = {"mlm": 84.67, "cls": 84.39}  # Table 3's averages over all seven tasks, as cited


def recipe_row(recipe, record, where):
    """A checked row {column: text, ..., "label_text": label name} from a record in the hub's layout."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: a {type(record).__name__}, not a JSON object")
    for column in recipe.columns:
        if not isinstance(record.get(column), str):
            raise InputError(f"{where}: `{column}` is {record.get(column)!r:.40}, not a string")
    label = recipe.label_name(record.get(recipe.label_column))
    if label is None:
        raise InputError(f"{where}: `{recipe.label_column}` {record.get(recipe.label_column)!r} is not one of "
                         f"{recipe.describe_labels()}")
    return {**{column: record[column] for column in recipe.columns}, LABEL_KEY: label}


def table_rows(recipe, table, where):
    """The checked rows of a {column: values} table; errors name `where` and the row."""
    return [recipe_row(recipe, {name: values[k] for name, values in table.items()}, f"{where}: row {k}")
            for k in range(len(next(iter(table.values()), [])))]


def strip_post(text):
    """Remove headers, signature and quoted replies as `fetch_20newsgroups(remove=('headers', 'footers', 'quotes'))`."""
    from sklearn.datasets._twenty_newsgroups import (strip_newsgroup_footer, strip_newsgroup_header,
                                                     strip_newsgroup_quoting)

    return strip_newsgroup_quoting(strip_newsgroup_footer(strip_newsgroup_header(text)))


def load_rows(recipe, data_dir=None, strip_headers=False, flag="--data_dir"):
    """{"train": rows, "test": rows} of a recipe, each row {column: text, ..., "label_text": label name}, checked: from
    the hub, or from local files in its layout in `data_dir` (`<split>.jsonl`, or .parquet, .csv, .json, the first
    there). `strip_headers` strips 20 Newsgroups' local posts as the hub copy has them stripped."""
    if strip_headers and not recipe.strip_headers:
        raise InputError(f"--strip_headers: {recipe.title}'s texts have no headers to strip (only 20newsgroups' do)")
    rows, columns = {}, ", ".join(f"`{c}`" for c in recipe.columns + (recipe.label_column,))
    if data_dir:
        if not os.path.isdir(data_dir):
            raise InputError(f"{flag} {data_dir}: no such folder")
        for name, split in recipe.splits.items():
            stem = os.path.join(data_dir, split)
            path = next((stem + e for e in (".jsonl", ".parquet", ".csv", ".json") if os.path.isfile(stem + e)), None)
            if path is None:
                raise InputError(f"{stem}.jsonl: no such file (nor {split}.parquet, {split}.csv or {split}.json); the "
                                 f"{recipe.title} recipe reads its {split} split there, one row per line with "
                                 f"{columns}, as the hub's {recipe.dataset} has them")
            rows[name] = ([recipe_row(recipe, record, f"{path}: {row_and_line(row, line)}")
                           for row, line, record in read_jsonl(path)] if path.endswith(".jsonl")
                          else table_rows(recipe, read_table(path, "--data_dir"), path))
        if strip_headers:
            for row in rows["train"] + rows["test"]:
                row["text"] = strip_post(row["text"])
        return rows
    hub = load_hub_dataset(recipe.dataset, f"give local files with --data_dir ({', '.join(recipe.splits.values())}, "
                           f"{columns} per row)", recipe.config)
    for name, split in recipe.splits.items():
        if split not in hub:
            raise InputError(f"{recipe.hub_split(split)}: no such split on the hub (it has {', '.join(hub)})")
        names = getattr(hub[split].features.get(recipe.label_column), "names", None)
        if recipe.label_is_index and names is not None and list(names) != list(recipe.labels):
            raise InputError(f"{recipe.hub_split(split)}: the hub's classes {list(names)} are not the recipe's "
                             f"{list(recipe.labels)}, in that order; the labels would be read wrong")
        needed = list(recipe.columns) + [recipe.label_column]
        missing = [column for column in needed if column not in hub[split].column_names]
        if missing:
            raise InputError(f"{recipe.hub_split(split)}: no column {', '.join(repr(c) for c in missing)}; it has "
                             f"{', '.join(repr(c) for c in hub[split].column_names)}")
        rows[name] = table_rows(recipe, hub[split].select_columns(needed).to_dict(), recipe.hub_split(split))
    return rows


def recipe_fields(template, recipe):
    """{field: column} for a template used with `recipe`; an InputError when a placeholder names no column."""
    fields = {}
    for field in template.fields:
        column = recipe.text_column if field == "text" else field
        if column is None or column not in recipe.columns:
            what = "{text}" if field == "text" else f"{{{field}}}"
            has = ", ".join("{" + c + "}" for c in recipe.columns)
            raise InputError(f"{template.source}: {what} is no column of the {recipe.title} rows; they fill {has}"
                             + (" ({text} is not one of them)" if field == "text" and column is None else ""))
        fields[field] = column
    return fields

