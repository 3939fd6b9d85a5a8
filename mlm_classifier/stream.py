"""A table read a chunk of rows at a time, each cell as data.read_table reads it, and checked in one such pass by
every rule of read_table and splits.take_columns, with the same errors in the same order.
"""

import codecs
import itertools
from collections import namedtuple

from .data import (CSV_OPTIONS, check_table_file, check_unique_columns, csv_header, fields_checked, jsonl_records,
                   read_json_records, reading_errors, records_to_columns)
from .errors import InputError
from .prompts import TEXT_FIELD
from .splits import take_columns, without_text_error

CHUNK_ROWS = 10000  # rows per chunk: memory holds one chunk's texts, token ids and records


# Rows `first_row` on (counted from 0, as the output's `row`); `table` is {column: values} of the wanted columns, or
# None for a chunk passed over.
Chunk = namedtuple("Chunk", "index first_row size table")


class TableChunks:
    """A table file's rows, `chunk_rows` at a time, with the columns `wanted` (a column a row lacks is None there).
    `columns` are the file's: the header's once the first chunk is read, or the keys of the JSON records so far."""

    def __init__(self, path, flag, chunk_rows=CHUNK_ROWS, wanted=()):
        self.path, self.chunk_rows, self.source = path, chunk_rows, f"{flag} {path}"
        self.wanted = [column for column in wanted if column is not None]
        self.extension = check_table_file(path, flag)
        self.columns = None

    def chunks(self, keep=None):
        """The Chunks in order; one that `keep(index)` refuses has table None, and is read only as far as need be."""
        read = {".csv": self._csv, ".parquet": self._parquet, ".jsonl": self._jsonl, ".json": self._json}
        with reading_errors(self.source, self.extension):
            yield from read[self.extension](keep or (lambda index: True))

    __iter__ = chunks

    def _csv(self, keep):
        import pandas

        check_unique_columns(csv_header(self.path), self.source)
        self.columns = [str(c) for c in pandas.read_csv(self.path, nrows=0, **CSV_OPTIONS).columns]
        first_row = index = 0
        frames = pandas.read_csv(self.path, chunksize=self.chunk_rows, **CSV_OPTIONS)
        while True:
            with fields_checked(self.path, self.source):
                frame = next(frames, None)
            if frame is None:
                return
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
        """The wanted columns of JSON records, whose keys join `columns`."""
        table = records_to_columns(records, self.source, first_row, self.wanted)
        self.columns = list(dict.fromkeys([*self.columns, *(key for record in records for key in record)]))
        return table

    def _json(self, keep):
        records, self.columns = read_json_records(self.path, self.source), []
        for index, first_row in enumerate(range(0, len(records), self.chunk_rows)):
            part = records[first_row:first_row + self.chunk_rows]
            yield Chunk(index, first_row, len(part), self._records_table(part, first_row) if keep(index) else None)

    def _jsonl(self, keep):
        """As data.read_jsonl, with its errors, a line at a time; the lines of a chunk passed over are not parsed."""
        def lines(f):
            offset = 0
            for line, raw in enumerate(f, start=1):
                if line == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"{self.source}: not UTF-8 text (line {line}, byte {offset + e.start}); "
                                     "save it as UTF-8") from None
                offset += len(raw)
                yield text

        self.columns = []
        with open(self.path, "rb") as f:
            rows = jsonl_records(lines(f), self.source, lambda row: keep(row // self.chunk_rows))
            for index, (first_row, part) in enumerate(batches_of((record for _, _, record in rows), self.chunk_rows)):
                yield Chunk(index, first_row, len(part), self._records_table(part, first_row) if keep(index) else None)


InputSummary = namedtuple("InputSummary", "rows chunk_sizes without_text chunks")  # what check_input found


def check_input(path, flag, text_column, id_column=None, allow_empty=False, chunk_rows=CHUNK_ROWS, fields=None,
                fields_source="the prompt"):
    """Every rule of read_table and take_columns in one pass holding one chunk, errors in a whole-file read's order:
    the file's own; a missing column (csv and parquet at the first chunk, so that a typo costs no pass); the first
    row whose text or id breaks a rule; the rows without a text, over the whole file; no rows."""
    fields = {TEXT_FIELD: text_column} if fields is None else dict(fields)
    options = dict(fields=fields, fields_source=fields_source, id_column=id_column)

    def check_columns(columns):  # take_columns' error for a column the file lacks
        take_columns({column: [] for column in columns}, path, text_column, **options)

    table = TableChunks(path, flag, chunk_rows, [*fields.values(), id_column])
    sizes, without, first_without, first_error = [], 0, [], None
    for chunk in table:
        if not sizes and table.extension in (".csv", ".parquet"):
            check_columns(table.columns)
        sizes.append(chunk.size)
        if first_error is not None:
            continue  # read on all the same: a bad line further on is reported first, as a whole-file read does
        try:
            split = take_columns(chunk.table, path, text_column, allow_empty=True, first_row=chunk.first_row,
                                 **options)
        except InputError as e:
            first_error = e
            continue
        missing = [row for row, text in zip(split.rows, split.texts) if text is None]
        without += len(missing)
        first_without += missing[:5 - len(first_without)]
    check_columns(table.columns or [])
    if first_error is not None:
        raise first_error
    if without and not allow_empty:
        raise without_text_error(path, fields, first_without, without)
    if not sizes:
        raise InputError(f"{flag} {path}: no rows")
    return InputSummary(sum(sizes), sizes, without, len(sizes))


def batches_of(iterable, size):
    """(position of the first, list) for consecutive runs of `size` items of any iterable, the last one shorter."""
    iterator, first = iter(iterable), 0
    while True:
        part = list(itertools.islice(iterator, size))
        if not part:
            return
        yield first, part
        first += len(part)
