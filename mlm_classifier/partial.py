"""An output written as it goes, resumable, owned by one run at a time (`<output>.lock`).

Each process appends its chunks' records to `<output>.partial` (`.partial.rank<k>` under torchrun, process k taking
chunks k, k + world, ...), and only then counts them in `<partial>.progress.json` (chunks, rows, the byte length after
each chunk, counts, settings): a resume cuts whatever a kill left after the last chunk counted, so nothing is lost or
written twice. Only a finished run makes the output from the partials, so a file at its name is always complete.
"""

import contextlib
import json
import os
import re
import socket
from datetime import datetime

from .data import check_same_settings, error_reason, recorded_settings, say, write_atomic
from .errors import InputError

TOTALS = {"counts": {}, "null": 0, "without_text": 0, "abstained": 0, "none": 0}  # what a run counts as it goes


def progress_path(path):
    return path + ".progress.json"


def settings_path(output):  # after the whole output name: `preds.csv` and `preds.jsonl` keep one each
    return output + ".settings.json"


def partial_paths(output, world):
    return [output + ".partial"] if world == 1 else [f"{output}.partial.rank{k}" for k in range(world)]


def written_paths(output, world):
    """Every file a run writes for `output`, beside the lock."""
    return [output, settings_path(output)] + [path for part in partial_paths(output, world)
                                              for path in (part, progress_path(part))]


def shown(key, value):
    """A setting as a resume error shows it: the input's modification time as a date, a long text cut."""
    if key == "input_modified" and isinstance(value, int):
        return datetime.fromtimestamp(value / 1e9).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]!r}... ({len(value)} characters)"
    return repr(value)


@contextlib.contextmanager
def owned(output, first_process=True):
    """`output` owned by this run (by its first process under torchrun) while the block runs: `<output>.lock`, made
    exclusively with this process's host and id. A live run's lock is refused; a killed run's is taken over."""
    path = output + ".lock"
    if first_process:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        except OSError as e:
            raise InputError(f"--output {output}: cannot be written ({error_reason(e)})") from None
        for _ in range(2):
            try:
                with open(path, "x", encoding="utf-8") as f:
                    f.write(f"{socket.gethostname()} {os.getpid()}\n")
                break
            except FileExistsError:
                host, _, pid = open(path, encoding="utf-8").read().strip().partition(" ")
                if host == socket.gethostname() and pid.isdigit() and not alive(int(pid)):
                    os.remove(path)  # left by a run that was killed: it owns nothing any more
                    continue
                raise InputError(f"--output {output}: another run (process {pid} on {host}) is writing it, as {path} "
                                 "says; wait for it to finish, or, if no such run is left, delete that file") from None
            except OSError as e:
                raise InputError(f"--output {output}: cannot be written ({error_reason(e)})") from None
        else:
            raise InputError(f"--output {output}: {path} keeps coming back; another run is starting on it")
    try:
        yield
    finally:
        if first_process and os.path.exists(path):
            os.remove(path)


def alive(pid):
    """Whether process `pid` runs: it exists and is no zombie (a killed process may linger as one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class Partial:
    """One process's records so far (`path`) and its progress record; `progress` is None until opened."""

    def __init__(self, path):
        self.path, self.progress = path, None

    @property
    def size(self):
        return self.progress["ends"][-1] if self.progress["ends"] else 0

    def load(self):
        """The progress record, refused when this code did not write it or it does not add up with the partial
        (edited, truncated); a torn tail after the last chunk it counts is cut when the run carries on."""
        record, fix = progress_path(self.path), f"delete {self.path} and {progress_path(self.path)} to start over"
        try:
            with open(record, encoding="utf-8") as f:
                progress = json.load(f)
        except FileNotFoundError:
            raise InputError(f"--resume: {self.path} has no progress record {record}, so where its last whole chunk "
                             f"ends cannot be told; {fix}") from None
        except (OSError, ValueError) as e:
            raise InputError(f"--resume: {record}: cannot be read ({error_reason(e)}); {fix}") from None
        ends = progress.get("ends") if isinstance(progress, dict) else None
        if (not isinstance(ends, list) or not all(type(e) is int for e in ends) or ends != sorted(set(ends))
                or progress.get("chunks") != len(ends) or type(progress.get("rows")) is not int
                or not isinstance(progress.get("totals"), dict) or "settings" not in progress):
            raise InputError(f"--resume: {record} is not a progress record this script wrote, or was changed; {fix}")
        self.progress = progress
        whole = (os.path.getsize(self.path) if os.path.exists(self.path) else 0) >= self.size
        if whole and self.size:
            with open(self.path, "rb") as f:
                f.seek(self.size - 1)
                whole = f.read(1) == b"\n"
        if not whole:
            raise InputError(f"--resume: {self.path} does not hold the {self.size} bytes of whole records its "
                             f"progress record counts: it was changed; {fix}")
        return progress

    def append(self, data, rows, output):
        """The chunk's records, on disk, then counted; a failed write (a full disk) is cut off and refused."""
        try:
            with open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            os.truncate(self.path, self.size)
            raise InputError(f"--output {output}: writing {self.path} failed ({error_reason(e)}); the "
                             f"{self.progress['rows']} rows before it are kept there: make room, then run the same "
                             "command with --resume") from None
        self.progress["ends"].append(self.size + len(data))
        self.progress["chunks"] += 1
        self.progress["rows"] += rows
        self.save()

    def save(self):
        write_atomic(progress_path(self.path), json.dumps(self.progress, ensure_ascii=False) + "\n", sync=True)

    def remove(self):
        for path in (self.path, progress_path(self.path)):
            if os.path.exists(path):
                os.remove(path)


def holds_rows(path):
    """Whether a partial file holds any row: a run stopped before its first chunk was written left nothing to keep."""
    if not os.path.exists(progress_path(path)):
        return os.path.getsize(path) > 0
    try:
        return Partial(path).load()["rows"] > 0
    except InputError:
        return True  # unreadable: kept, and named when resumed


def open_partials(output, world, settings, resume):
    """(this run's Partials, one per process, loaded where they carry on; the empty partials of a run stopped before
    its first chunk). Refused: rows left without `resume`; `resume` with other settings, or after a finished run."""
    folder, name = os.path.split(output)
    pattern = re.compile(re.escape(name) + r"\.partial(\.rank\d+)?")
    found = sorted(os.path.join(folder, n) for n in os.listdir(folder or ".") if pattern.fullmatch(n)) \
        if os.path.isdir(folder or ".") else []
    kept = {path: Partial(path) for path in found if holds_rows(path)}
    partials = [kept.get(path) or Partial(path) for path in partial_paths(output, world)]
    if kept and not resume:
        raise InputError(f"--output {output}: a run that did not finish left its rows in {', '.join(kept)}; add "
                         f"--resume to carry on from there, or delete {output}.partial* to start over")
    if not kept:
        if resume and os.path.exists(output):
            raise InputError(f"--resume: there is no {partials[0].path} to carry on from, and {output} is there: its "
                             "run finished (leave out --resume to label again)")
        if resume:
            say(f"note: --resume: no rows of an earlier run in {partials[0].path}; starting from the first row")
        return partials, found
    for path, part in kept.items():
        check_same_settings(part.load()["settings"], settings, f"--resume: {path} was written",
                            f"Resume with the settings it was started with, or delete {output}.partial* to start "
                            "over", shown)
    return partials, [path for path in found if path not in kept]


def check_replaceable(output, settings, overwrite):
    """The settings a finished output records as what made it: those of a resume, less what only the resume needs (the
    input's size and date, chunks, processes). An output made otherwise is an InputError unless `overwrite`."""
    defining = {k: v for k, v in settings.items()
                if k not in ("input_bytes", "input_modified", "chunk_rows", "processes")}
    if os.path.exists(output) and not overwrite:
        check_same_settings(recorded_settings(settings_path(output)), defining, f"--output {output}: it was written",
                            "Give another --output, or add --overwrite_output to replace it")
    return defining


def check_rows(partials, chunk_sizes):
    """An InputError when the rows a progress record counts are not those of the input's chunks it says it did."""
    for rank, part in enumerate(partials):
        if part.progress:
            mine = range(rank, len(chunk_sizes), len(partials))[:part.progress["chunks"]]
            expected = sum(chunk_sizes[i] for i in mine)
            if part.progress["rows"] != expected:
                raise InputError(f"--resume: {progress_path(part.path)} counts {part.progress['rows']} rows in "
                                 f"{part.progress['chunks']} chunks, where the input's chunks hold {expected}: it "
                                 f"does not belong to this input; delete {part.path} and {progress_path(part.path)} "
                                 "to start over")


def begin(partials, empty, rank, settings, views):
    """This process's Partial, started afresh or carried on (a torn tail cut); the first process removes `empty`."""
    if rank == 0:
        for path in set(empty) - {part.path for part in partials}:
            Partial(path).remove()
    mine = partials[rank]
    if mine.progress is None:
        mine.progress = {"settings": settings, "chunks": 0, "rows": 0, "ends": [],
                         "totals": {**TOTALS, "counts": {}, "cut_by_view": [0] * views}}
        mine.save()  # first: a partial file never exists without its record
        open(mine.path, "wb").close()
    elif os.path.getsize(mine.path) > mine.size:
        os.truncate(mine.path, mine.size)
    return mine


def finish(output, partials, chunks, settings):
    """The output and its settings file from the partials (one renamed, or all joined in input order: chunk c is
    process c % world's), both whole on disk before either replaces the old pair; then the partials go."""
    world, finished = len(partials), partials[0].path
    if world > 1:
        files, finished = [open(part.path, "rb") for part in partials], f"{output}.tmp{os.getpid()}"
        try:
            with open(finished, "wb") as out:
                for index in range(chunks):
                    ends = partials[index % world].progress["ends"]
                    k = index // world
                    out.write(files[index % world].read(ends[k] - (ends[k - 1] if k else 0)))
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.remove(finished)
            raise
        finally:
            for f in files:
                f.close()
    write_atomic(settings_path(output) + ".new", json.dumps(settings, indent=2, ensure_ascii=False) + "\n", sync=True)
    os.replace(finished, output)
    os.replace(settings_path(output) + ".new", settings_path(output))
    for part in partials:
        part.remove()


def merged_totals(partials):
    """The counts of every process's chunks, added up."""
    totals = {**TOTALS, "counts": {}}
    for partial in partials:
        part = partial.progress["totals"]
        for label, n in part["counts"].items():
            totals["counts"][label] = totals["counts"].get(label, 0) + n
        for key in ("null", "without_text", "abstained", "none"):
            totals[key] += part.get(key, 0)
    totals["cut_by_view"] = [sum(cut) for cut in zip(*(p.progress["totals"]["cut_by_view"] for p in partials))]
    return totals
