"""Datasets for batch scoring: where they may come from, how they are read in chunks, how results are written.

A dataset is a CSV or Parquet file under one of the configured data roots (an
upload lands in ``data_dir/uploads``). Chunks are row ranges, so every worker
reads only its slice (Parquet by row group, CSV by skipping rows). Results are
written to a temporary name and renamed, so a crash never leaves a half file
under the name a client downloads.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prediction_provider.errors import DatasetNotFound, InvalidFeatures, InvalidInput
from prediction_provider.serving.loaders.base import ModelOutput
from prediction_provider.serving.signature import ModelSignature
from prediction_provider.serving.trust import is_under_roots

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
RESULT_FILE = "predictions.parquet"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def dataset_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(
            f"unsupported dataset type {path.suffix!r}: use .csv or .parquet",
            [{"field": "dataset", "error": "unsupported file type"}],
        )
    return fmt


def resolve_dataset(path: str, roots: Iterable[Path]) -> Path:
    """A dataset path, confined to the data roots before anything opens it."""
    roots = tuple(roots)
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    if not is_under_roots(candidate, roots):
        raise InvalidInput(
            "dataset path is outside the configured data roots",
            [{"field": "dataset_path", "error": "not under PP_DATA_ROOTS"}],
        )
    resolved = candidate.resolve()
    dataset_format(resolved)
    if not resolved.is_file():
        raise DatasetNotFound(f"no dataset at {path}", {"path": path})
    return resolved


def store_upload(uploads_dir: Path, filename: str, source: BinaryIO) -> tuple[Path, str]:
    """Copy an uploaded dataset under a fresh name (the client's name only picks the format);
    returns the path and the SHA-256 of its content."""
    fmt = dataset_format(Path(filename or ""))
    uploads_dir.mkdir(parents=True, exist_ok=True)
    target = uploads_dir / f"{uuid.uuid4().hex}.{'csv' if fmt == 'csv' else 'parquet'}"
    digest = hashlib.sha256()
    with target.open("wb") as sink:
        while block := source.read(1 << 20):
            digest.update(block)
            sink.write(block)
    return target, digest.hexdigest()


def path_digest(path: Path) -> str:
    """Identity of a dataset given by path: its name, size and modification time."""
    stat = path.stat()
    return hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()


def count_rows(path: Path) -> int:
    if dataset_format(path) == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return max(0, lines - 1)  # the header


def chunk_ranges(rows: int, chunk_rows: int) -> list[dict[str, int]]:
    return [{"start": start, "stop": min(rows, start + chunk_rows)} for start in range(0, rows, chunk_rows)]


def read_rows(path: Path, start: int, stop: int) -> pd.DataFrame:
    """Rows ``[start, stop)`` of a dataset, without reading the rest into memory at once."""
    if dataset_format(path) == "parquet":
        parquet = pq.ParquetFile(path)
        pieces, offset = [], 0
        for group in range(parquet.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if offset + size > start and offset < stop:
                table = parquet.read_row_group(group)
                pieces.append(
                    table.slice(max(0, start - offset), min(stop, offset + size) - max(start, offset))
                )
            offset += size
        if not pieces:
            return pd.DataFrame()
        frame: pd.DataFrame = pa.concat_tables(pieces).to_pandas()
        return frame
    return pd.read_csv(path, skiprows=range(1, start + 1), nrows=stop - start)


def feature_matrix(frame: pd.DataFrame, signature: ModelSignature, first_row: int) -> np.ndarray:
    """The model's features from a chunk; missing columns and non-numeric cells are named."""
    missing = [name for name in signature.feature_names if name not in frame.columns]
    if missing:
        raise InvalidFeatures(
            f"dataset lacks {len(missing)} feature column(s) the model needs",
            {"errors": [{"field": f"columns.{name}", "error": "missing"} for name in missing]},
        )
    features = frame.loc[:, list(signature.feature_names)]
    numeric = features.apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(numeric)
    if bad.any():
        rows, cols = np.nonzero(bad)
        errors = [
            {
                "field": f"rows[{first_row + int(r)}].{signature.feature_names[int(c)]}",
                "error": "not a finite number",
            }
            for r, c in zip(rows[:20], cols[:20], strict=True)
        ]
        raise InvalidFeatures(f"{int(bad.sum())} cell(s) are not finite numbers", {"errors": errors})
    return np.ascontiguousarray(numeric)


def scored_frame(frame: pd.DataFrame, signature: ModelSignature, output: ModelOutput) -> pd.DataFrame:
    """The input's non-feature columns (keys, timestamps) with the prediction and class probabilities."""
    keep = [column for column in frame.columns if column not in signature.feature_index]
    scored = frame.loc[:, keep].reset_index(drop=True)
    scored["prediction"] = pd.Series(output.predictions)
    if output.probabilities is not None and signature.classes:
        for i, label in enumerate(signature.classes):
            scored[f"proba_{label}"] = output.probabilities[:, i]
    return scored


def write_parquet_atomically(frame: pd.DataFrame | pa.Table, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, temporary)
    os.replace(temporary, target)


def merge_parts(parts: list[Path], target: Path) -> int:
    """Concatenate chunk results in order into ``target``; returns the row count."""
    tables = [pq.read_table(part) for part in parts]
    merged = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
    write_parquet_atomically(merged, target)
    return int(merged.num_rows)


def job_results_dir(results_dir: Path, job_id: str) -> Path:
    return results_dir / job_id


def result_file(results_dir: Path, job_id: str, name: str) -> Path:
    """A downloadable file of a job; the name is checked, never joined blindly."""
    if not _SAFE_NAME.match(name) or name.startswith("."):
        raise DatasetNotFound(f"no result file {name!r}", {"file": name})
    path = (job_results_dir(results_dir, job_id) / name).resolve()
    if not path.is_relative_to(results_dir.resolve()) or not path.is_file():
        raise DatasetNotFound(f"no result file {name!r}", {"file": name})
    return path
