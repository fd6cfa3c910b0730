"""One split of a dataset repo, written as its rows arrive: `<split>-NNNNN-of-NNNNN.parquet` shards in row groups.

Parquet as `datasets` writes it: features in the schema metadata, a page index, content-defined chunking (so the Hub's
Xet storage deduplicates re-uploads), and no timestamps, so the same rows give the same bytes. A row group is encoded
on a thread of its own (Parquet encoding and compression release the GIL) while the caller prepares the next rows.
"""

import json
import math
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Row groups of 10k rows stay well under the 100 MB that `datasets` aims at, for the Hub viewer's random access.
ROW_GROUP_ROWS = 10_000


class ShardWriter:
    """The `total` rows of `split`, in shards of `shard_rows` rows cut into row groups of ROW_GROUP_ROWS rows (counted
    from the start of each shard); `add` them in order, then `close`, which returns their size in Arrow bytes."""

    def __init__(self, folder: Path, split: str, total: int, shard_rows: int, schema: pa.Schema):
        from datasets import config

        if total < 1:
            raise ValueError(f"split {split!r}: no rows to write")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.split, self.total, self.shard_rows, self.schema = folder, split, total, shard_rows, schema
        self.shards = max(1, math.ceil(total / shard_rows))
        self.nbytes = 0
        self._cdc = config.DEFAULT_CDC_OPTIONS
        self._buffer: list[pa.Table] = []
        self._buffered = self._written = 0
        self._writer: pq.ParquetWriter | None = None
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"parquet-{split}")
        self._pending: Future | None = None

    def add(self, rows: pa.Table) -> None:
        self._buffer.append(rows)
        self._buffered += len(rows)
        while self._written < self.total and self._buffered >= self._group_rows():
            self._write_group(self._group_rows())

    def close(self) -> int:
        if self._written != self.total or self._buffered:
            raise ValueError(f"split {self.split!r}: {self._written + self._buffered} rows given for {self.total}")
        if self._pending is not None:
            self._pending.result()
        self._encoder.shutdown()
        return self.nbytes

    def _group_rows(self) -> int:
        shard_end = min((self._written // self.shard_rows + 1) * self.shard_rows, self.total)
        return min(ROW_GROUP_ROWS, shard_end - self._written)

    def _write_group(self, size: int) -> None:
        rows = pa.concat_tables(self._buffer)
        group = rows.take(np.arange(size)).cast(self.schema)  # fresh buffers: `nbytes` counts these rows only
        rest = rows.slice(size)
        self._buffer, self._buffered = ([rest] if len(rest) else []), self._buffered - size
        shard, offset = divmod(self._written, self.shard_rows)
        self._written += size
        last = self._written == min((shard + 1) * self.shard_rows, self.total)
        self.nbytes += group.nbytes
        if self._pending is not None:  # one group in flight: memory stays bounded when encoding is the slower side
            self._pending.result()
        self._pending = self._encoder.submit(self._encode, shard, offset == 0, group, last)

    def _encode(self, shard: int, first: bool, group: pa.Table, last: bool) -> None:
        if first:
            path = self.folder / f"{self.split}-{shard:05d}-of-{self.shards:05d}.parquet"
            self._writer = pq.ParquetWriter(
                path, self.schema, compression="snappy", write_page_index=True, use_content_defined_chunking=self._cdc
            )
        self._writer.write_table(group, row_group_size=len(group))
        if last:
            self._writer.add_key_value_metadata({"content_defined_chunking": json.dumps(self._cdc)})
            self._writer.close()
            self._writer = None
