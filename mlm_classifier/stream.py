"""Streaming input: a table read a chunk of rows at a time and checked in one pass; any iterable in chunks.

`TableChunks` reads a csv, jsonl or parquet file `chunk_rows` rows at a time (pandas' chunked CSV reader, JSON
lines a line at a time, pyarrow's batch reader), each cell as data.read_table reads it; a .json file (one JSON
array) is read whole, then handed out in chunks. `check_input` runs every rule of read_table and
splits.take_columns over a whole file in one such pass, holding one chunk, and says the same errors in the same
order as a whole-file read would; `batches_of` cuts any iterable into chunks.
"""

import codecs
import itertools
import json
from dataclasses import dataclass

from .data import check_table_file, check_unique_columns, csv_header, read_json_records, reading_errors, row_and_line
from .errors import InputError
from .prompts import TEXT_FIELD
from .splits import lacking, take_columns, without_text_error

CHUNK_ROWS = 10000  # rows per chunk: memory holds one chunk's texts, token ids and records


@dataclass
class Chunk:
    """Rows `first_row` to `first_row + size - 1` of a table (rows count from 0, as the output's `row`)."""
    index: int
    first_row: int
    size: int
    table: dict | None  # {column: values} of the wanted columns, None where absent; None for a chunk passed over


class TableChunks:
    """A table file's rows, `chunk_rows` at a time, with the columns `wanted` (a column a row lacks is None there).

    `columns` are the file's columns: for csv and parquet the header's, known once the first chunk is read; for
    json and jsonl the keys of the records read so far, in the order first seen (read_table's columns at the end).
    Errors are InputErrors naming `flag` and the path, and the row (and line) where there is one.
    """

    def __init__(self, path, flag, chunk_rows=CHUNK_ROWS, wanted=()):
        self.path, self.chunk_rows, self.source = path, chunk_rows, f"{flag} {path}"
        self.wanted = [column for column in wanted if column is not None]
        self.extension = check_table_file(path, flag)
        self.columns = None
        self.header_columns = self.extension in (".csv", ".parquet")

    def __iter__(self):
        return self.chunks()

    def chunks(self, keep=None):
        """The Chunks in order; one whose index `keep(index)` refuses comes with table None, read only as far as its
        format needs to find where the next chunk starts (a JSON line is then not even parsed)."""
        formats = {".csv": self._csv, ".parquet": self._parquet, ".jsonl": self._jsonl, ".json": self._json}
        read = formats[self.extension]
        with reading_errors(self.source, self.extension):
            yield from read(keep or (lambda index: True))

    def _csv(self, keep):
        import pandas

        check_unique_columns(csv_header(self.path), self.source)
        options = dict(dtype=str, keep_default_na=False, encoding="utf-8-sig")  # as read_table: every cell a text
        self.columns = [str(c) for c in pandas.read_csv(self.path, nrows=0, **options).columns]
        first_row = index = 0
        for frame in pandas.read_csv(self.path, chunksize=self.chunk_rows, **options):
            if len(frame):
                table = None
                if keep(index):
                    frame.columns = [str(c) for c in frame.columns]
                    table = {c: frame[c].tolist() if c in frame else [None] * len(frame) for c in self.wanted}
                yield Chunk(index, first_row, len(frame), table)
                first_row, index = first_row + len(frame), index + 1

    def _parquet(self, keep):
        import pyarrow
        import pyarrow.parquet

        file = pyarrow.parquet.ParquetFile(self.path)
        self.columns = list(file.schema_arrow.names)
        check_unique_columns(self.columns, self.source)
        present = [c for c in self.wanted if c in self.columns]  # only these are read: a wide file costs no memory
        first_row = 0
        for index, batch in enumerate(file.iter_batches(batch_size=self.chunk_rows, columns=present or None)):
            table = None
            if keep(index):
                values = batch.to_pydict()
                table = {c: values[c] if c in values else [None] * batch.num_rows for c in self.wanted}
            yield Chunk(index, first_row, batch.num_rows, table)
            first_row += batch.num_rows
            # pyarrow's allocator keeps what the reader freed for reuse: given back after each batch, it does not
            # grow with the rows read (about 40 MiB more after 100,000 rows than after 10,000 otherwise).
            pyarrow.default_memory_pool().release_unused()

    def _records_table(self, records, first_row):
        """{column: values} of the wanted columns of JSON records; the keys join `columns`."""
        for row, record in enumerate(records, start=first_row):
            if not isinstance(record, dict):
                raise InputError(f"{self.source}: row {row} is {type(record).__name__}, not a JSON object")
            self._keys.update(dict.fromkeys(record))
        self.columns = list(self._keys)
        return {c: [record.get(c) for record in records] for c in self.wanted}

    def _json(self, keep):
        records, self._keys = read_json_records(self.path, self.source), {}
        self.columns = []
        for index, first_row in enumerate(range(0, len(records), self.chunk_rows)):
            part = records[first_row:first_row + self.chunk_rows]
            yield Chunk(index, first_row, len(part), self._records_table(part, first_row) if keep(index) else None)

    def _jsonl(self, keep):
        """As data.read_jsonl: records are the non-blank lines, split at \\n only (JSON may hold U+2028); `row` counts
        records from 0 and `line` is 1-based; a byte-order mark is dropped; a byte that is not UTF-8 names its line."""
        self._keys, self.columns = {}, []
        index = first_row = offset = 0
        parsed, size = [], 0
        with open(self.path, "rb") as f:
            for line, raw in enumerate(f, start=1):
                if line == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"{self.source}: not UTF-8 text (line {line}, byte {offset + e.start}); "
                                     "save it as UTF-8") from None
                offset += len(raw)
                if not text.strip():
                    continue
                if keep(index):
                    try:
                        parsed.append(json.loads(text))
                    except json.JSONDecodeError as e:
                        raise InputError(f"{self.source}: {row_and_line(first_row + size, line)}: "
                                         f"not valid JSON ({e.msg})") from None
                size += 1
                if size == self.chunk_rows:
                    yield Chunk(index, first_row, size, self._records_table(parsed, first_row) if keep(index) else None)
                    index, first_row, parsed, size = index + 1, first_row + size, [], 0
        if size:
            yield Chunk(index, first_row, size, self._records_table(parsed, first_row) if keep(index) else None)


@dataclass
class InputSummary:
    """What the checking pass found: rows in all, each chunk's rows, and rows without a text (--allow_empty_texts)."""
    rows: int
    chunk_sizes: list
    without_text: int

    @property
    def chunks(self):
        return len(self.chunk_sizes)


def check_input(path, flag, text_column, id_column=None, allow_empty=False, chunk_rows=CHUNK_ROWS, fields=None,
                fields_source="the prompt"):
    """Every rule of data.read_table and splits.take_columns, in one pass over the file that holds one chunk.

    Errors come in the order a whole-file read gives them: the file's own (unreadable, a bad JSON line, a record
    that is no object) where they are met; then a missing column (for json and jsonl the columns are known only
    at the end; csv and parquet are checked at the first chunk, so that a typo costs no pass); then the first row
    whose text or id breaks a rule; then the rows without a text, named and counted over the whole file; then
    an input without rows. Messages start with `path`, as take_columns' do, or with `flag` and the path.
    `fields` ({field: column}, from prompts.template_columns) are the columns a prompt fills, as take_columns has.
    """
    fields = {TEXT_FIELD: text_column} if fields is None else dict(fields)
    columns = dict(fields=fields, fields_source=fields_source, id_column=id_column)
    table = TableChunks(path, flag, chunk_rows, [*fields.values(), id_column])
    sizes, without, first_without, first_error = [], 0, [], None
    for chunk in table:
        if not sizes and table.header_columns:
            check_columns(table.columns, path, text_column, **columns)
        sizes.append(chunk.size)
        if first_error is not None:
            continue  # read on all the same: a bad line further on is reported first, as a whole-file read does
        try:
            split = take_columns(chunk.table, path, text_column, allow_empty=True, first_row=chunk.first_row,
                                 **columns)
        except InputError as e:
            first_error = e
            continue
        missing = [row for row, text in zip(split.rows, split.texts) if text is None]
        without += len(missing)
        first_without += missing[:5 - len(first_without)]
    check_columns(table.columns or [], path, text_column, **columns)
    if first_error is not None:
        raise first_error
    if without and not allow_empty:
        raise without_text_error(path, text_column, first_without, without, what=lacking(fields))
    if not sizes:
        raise InputError(f"{flag} {path}: no rows")
    return InputSummary(sum(sizes), sizes, without)


def check_columns(columns, source, text_column, id_column=None, fields=None, fields_source="the prompt"):
    """take_columns' InputError for a column (text, id, or a prompt's field) that `columns` lacks."""
    take_columns({column: [] for column in columns}, source, text_column, id_column=id_column, fields=fields,
                 fields_source=fields_source)


def batches_of(iterable, size):
    """(position of the first, list) for consecutive runs of `size` items of any iterable, the last one shorter."""
    iterator, first = iter(iterable), 0
    while True:
        part = list(itertools.islice(iterator, size))
        if not part:
            return
        yield first, part
        first += len(part)

