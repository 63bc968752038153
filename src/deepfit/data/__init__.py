"""Datasets: strict configs, offline sources, prepared splits with a verified sha256 manifest."""

from deepfit.data.config import DatasetConfig, dataset_kind_and_task
from deepfit.data.errors import DataError
from deepfit.data.io import Prepared, check_batch_size, load_prepared
from deepfit.data.prepare import prepare_dataset

__all__ = [
    "DataError",
    "DatasetConfig",
    "Prepared",
    "check_batch_size",
    "dataset_kind_and_task",
    "load_prepared",
    "prepare_dataset",
]
