"""Records spilled to disk in sorted runs and read back in one global order: the external sort that keeps
`infir build-repo`'s memory bounded whatever the size of its inputs.

`RunWriter` takes rows a batch at a time; every `run_rows` rows it sorts them on their sort keys and writes them to an
Arrow IPC file in batches of RUN_BATCH_ROWS rows. Once the output position of every row is known, `in_order` reads
the runs side by side and yields the rows in that order, a window at a time. Within a run the rows must already come
in output order (the sort keys must agree with it). Memory holds one run while writing, and while reading one window
and the few batches of each run that it needs.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

RUN_ROWS = 50_000
RUN_BATCH_ROWS = 1_000


@dataclass
class Run:
    """A sorted run on disk: its k-th row is row `rows[k]` of the input (counting the rows given to `add`)."""

    path: Path
    rows: np.ndarray


class RunWriter:
    """Sorted runs of the rows given to `add`, written to `folder` as they fill."""

    def __init__(self, folder: str | os.PathLike, run_rows: int | None = None):
        self.folder, self.run_rows = Path(folder), run_rows or RUN_ROWS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.runs: list[Run] = []
        self._rows: list[pa.Table] = []
        self._keys: list[pa.Table] = []
        self._buffered = self._written = 0

    def add(self, rows: pa.Table, keys: pa.Table) -> None:
        """The next rows, with their sort keys (columns compared in order, all ascending; ties keep input order)."""
        self._rows.append(rows)
        self._keys.append(keys)
        self._buffered += len(rows)
        if self._buffered >= self.run_rows:
            self._flush()

    def close(self) -> list[Run]:
        if self._buffered:
            self._flush()
        return self.runs

    def _flush(self) -> None:
        keys = pa.concat_tables(self._keys)
        order = pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in keys.column_names])
        rows = pa.concat_tables(self._rows).take(order).combine_chunks()  # one chunk: batches of exactly RUN_BATCH_ROWS
        self._rows, self._keys = [], []
        path = self.folder / f"run-{len(self.runs):05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
            writer.write_table(rows, max_chunksize=RUN_BATCH_ROWS)
        self.runs.append(Run(path, self._written + order.to_numpy()))
        self._written += self._buffered
        self._buffered = 0


class _RunReader:
    """Rows of one run at increasing offsets, each batch read from the file once (plain reads, not a memory map,
    so the pages read do not stay in the process's resident memory)."""

    def __init__(self, run: Run):
        self._source = pa.OSFile(str(run.path))
        self._file = pa.ipc.open_file(self._source)
        self._last: tuple[int, pa.RecordBatch] | None = None

    def take(self, offsets: np.ndarray) -> pa.Table:
        """The rows at `offsets` (increasing), read a batch at a time."""
        numbers = offsets // RUN_BATCH_ROWS
        pieces = []
        for number in np.unique(numbers):
            a, b = np.searchsorted(numbers, [number, number + 1])
            batch = self._batch(int(number))
            pieces.append(batch.take(offsets[a:b] - number * RUN_BATCH_ROWS))
        self._last = (int(number), batch)  # the next offsets start in this batch or after it
        return pa.Table.from_batches(pieces)

    def _batch(self, number: int) -> pa.RecordBatch:
        if self._last is not None and self._last[0] == number:
            return self._last[1]
        return self._file.get_batch(number)

    def close(self) -> None:
        self._source.close()


def in_order(runs: list[Run], positions: np.ndarray, window_rows: int) -> Iterator[pa.Table]:
    """The rows whose output position is 0, 1, 2, ..., `window_rows` at a time. `positions[i]` is the position of
    input row i, or -1 for a row left out."""
    total = int(np.count_nonzero(positions >= 0))
    placed = []
    for run in runs:
        where = positions[run.rows]
        offsets = np.flatnonzero(where >= 0)
        where = where[offsets]
        if np.any(np.diff(where) < 0):
            raise ValueError(f"{run.path.name}: its rows are not in output order")
        placed.append((offsets, where))
    readers = [_RunReader(run) for run in runs]
    try:
        for start in range(0, total, window_rows):
            stop = min(start + window_rows, total)
            pieces, where = [], []
            for reader, (offsets, run_positions) in zip(readers, placed, strict=True):
                a, b = np.searchsorted(run_positions, [start, stop])
                if a < b:
                    pieces.append(reader.take(offsets[a:b]))
                    where.append(run_positions[a:b])
            yield pa.concat_tables(pieces).take(np.argsort(np.concatenate(where)))
    finally:
        for reader in readers:
            reader.close()


def scan(runs: list[Run], rows: np.ndarray) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """Input rows `rows` (in any order), a run at a time: (their input indices, the rows)."""
    wanted = np.zeros(sum(len(run.rows) for run in runs), dtype=bool)
    wanted[rows] = True
    for run in runs:
        offsets = np.flatnonzero(wanted[run.rows])
        if len(offsets):
            reader = _RunReader(run)
            try:
                yield run.rows[offsets], reader.take(offsets)
            finally:
                reader.close()


def gather(runs: list[Run], rows: np.ndarray) -> pa.Table:
    """Input rows `rows`, in that order: all in memory at once, so for a few rows."""
    position = np.full(sum(len(run.rows) for run in runs), -1)
    position[rows] = np.arange(len(rows))
    found = list(scan(runs, rows))
    where = position[np.concatenate([index for index, _ in found])]
    return pa.concat_tables([table for _, table in found]).take(np.argsort(where))
