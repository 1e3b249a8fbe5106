"""Reviews in: file readers (formats recognised by content), the md5 splits, the streaming path.

``from pipeline import data`` gives the readers' and splits' public API; the streaming path
(TensorFlow) is :mod:`pipeline.data.stream`.
"""

from pipeline.data.readers import (
    FORMAT_HELP,
    FORMATS,
    DataError,
    EmptyDatasetError,
    FileStats,
    Record,
    UnknownFormatError,
    detect_format,
    iter_records,
    iter_reviews,
    iter_three_star,
    review_string,
)
from pipeline.data.splits import (
    SPLITS,
    bounded_sample,
    build_dataset,
    iter_jsonl,
    load_splits,
    read_jsonl,
    split_of,
    write_jsonl,
)

__all__ = ["FORMATS", "FORMAT_HELP", "SPLITS", "DataError", "EmptyDatasetError", "FileStats",
           "Record", "UnknownFormatError", "bounded_sample", "build_dataset", "detect_format",
           "iter_jsonl", "iter_records", "iter_reviews", "iter_three_star", "load_splits", "read_jsonl",
           "review_string", "split_of", "write_jsonl"]
