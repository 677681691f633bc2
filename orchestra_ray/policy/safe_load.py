"""Loading a checkpoint never runs code from it.

A checkpoint may come from someone else. `torch.load` is called with `weights_only=True` (tensors,
numbers, strings and containers only). DCP's own reader unpickles its `.metadata` file, and its
planner unpickles non-tensor entries, both with plain pickle; here they go through an unpickler
that builds only DCP's metadata records, torch sizes, dtypes and layouts, and paths. A file that
asks for anything else is refused with `UnsafeCheckpoint`, naming it.
"""

from __future__ import annotations

import io
import pathlib
import pickle
from typing import Any

import torch

from orchestra_ray.errors import DataError


class UnsafeCheckpoint(DataError):
    """A checkpoint file that holds more than data: loading it would run code."""


_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
           "complex64", "complex128", "float8_e4m3fn", "float8_e5m2"}
_DCP = "torch.distributed.checkpoint.metadata"
# What DCP's metadata names, and nothing else: checked before any module is imported.
_ALLOWED = {(_DCP, n) for n in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                               "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch.serialization", "_get_layout"),
    ("torch", "Size"), ("collections", "OrderedDict"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"), ("pathlib", "Path"),
} | {("torch", d) for d in _DTYPES}


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, f, name: str):
        super().__init__(f)
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafeCheckpoint(f"{self.name} asks to load {module}.{name}: a checkpoint holds data only, and "
                                   f"loading this one would run code; it is refused")
        return super().find_class(module, name)


def load_metadata(path: str, name: str) -> Any:
    with open(path, "rb") as f:
        return _MetadataUnpickler(f, name).load()


def torch_load(path: str) -> Any:
    """`torch.load` of a checkpoint file on the CPU, data only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpoint(f"{path} holds more than tensors and numbers (loading it would run code: "
                               f"{(str(exc).splitlines() or [type(exc).__name__])[0][:200]}); it is refused") from None


def dcp_reader_and_planner(path: str):
    """A DCP storage reader and load planner for the checkpoint at `path` that load data only."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    class Reader(dcp.FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            metadata = load_metadata(str(pathlib.Path(path) / ".metadata"), f"{path}/.metadata")
            if getattr(metadata, "storage_meta", None) is None:
                from torch.distributed.checkpoint.metadata import StorageMeta

                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            try:
                loaded = torch.load(value, weights_only=True)
            except pickle.UnpicklingError as exc:
                raise UnsafeCheckpoint(f"{path}: entry {read_item.dest_index.fqn} holds more than data "
                                       f"({(str(exc).splitlines() or [type(exc).__name__])[0][:160]}); it is refused") from None
            if self.flatten_state_dict:  # as DefaultLoadPlanner.load_bytes does
                from torch.distributed.checkpoint._traverse import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    return Reader(path), Planner()
