"""Hugging Face ``datasets`` as a source of task-tagged samples, and the way back.

A ``datasets.Dataset`` with columns ``image``, ``task``, ``text`` (and, by task, ``answers``,
``references``; optionally ``image_id``, ``sample_id``, ``answer_type``) becomes a list of
:class:`Sample`, which then goes through the same mixed-task dataset, sampler and collator as
every other source. Images stay where the dataset keeps them:

- a string column, or an ``Image`` feature that points at files: the files are read directly;
- an ``Image`` feature with the bytes inside the dataset (what ``save_to_disk`` writes): each
  sample refers to its row of the saved dataset (``hf-dataset://<folder>#<row>``) and
  :func:`load_dataset_image` decodes it when the loader asks, from the memory-mapped Arrow
  files. A dataset held only in memory is saved once into the cache folder first.

:func:`to_hf_dataset` goes the other way (e.g. the embedded synthetic set), with the image
bytes embedded, so ``save_to_disk`` writes a self-contained copy.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from .samples import Sample

IMAGE_REFERENCE = "hf-dataset://"
REQUIRED_COLUMNS = ("image", "task", "text")
OPTIONAL_COLUMNS = ("answers", "references", "image_id", "sample_id", "answer_type")


def image_reference(folder: str | Path, row: int) -> str:
    """How a sample names row ``row`` of the dataset saved in ``folder``."""
    return f"{IMAGE_REFERENCE}{Path(folder).resolve()}#{int(row)}"


@functools.lru_cache(maxsize=16)
def _saved_dataset(folder: str):
    """The saved dataset of ``folder``, memory-mapped once per process (and per loader worker)."""
    import datasets

    return datasets.load_from_disk(folder)


def load_dataset_image(reference: str, column: str = "image") -> Image.Image:
    """Decode the image of a :func:`image_reference` (RGB); errors name the reference."""
    from .images import ImageLoadError  # images imports this module

    try:
        folder, row = reference[len(IMAGE_REFERENCE):].rsplit("#", 1)
        record = _saved_dataset(folder)[int(row)][column]
        image = record if isinstance(record, Image.Image) else Image.open(io.BytesIO(record["bytes"]))
        image.load()
        return image.convert("RGB")
    except Exception as err:  # a missing folder, a row out of range, undecodable bytes
        raise ImageLoadError(f"cannot read image {reference}: {type(err).__name__}: {err}") from err


def _saved_folder(dataset) -> Path | None:
    """The ``save_to_disk`` folder that ``dataset`` is, row for row; None if it is not one."""
    files = [Path(f["filename"]) for f in dataset.cache_files]
    if not files or getattr(dataset, "_indices", None) is not None:
        return None
    folder = files[0].parent
    on_disk = sorted(folder.glob("data-*.arrow"))
    return folder if (folder / "state.json").is_file() and sorted(files) == on_disk else None


def _save_into_cache(dataset, cache_dir: Path) -> Path:
    """A copy of ``dataset`` as ``save_to_disk`` writes it, saved once into ``cache_dir`` (named
    and recognised by the dataset's fingerprint)."""
    from .cache import cached_dataset

    fingerprint = dataset._fingerprint
    return cached_dataset(f"hf-{fingerprint}", {"kind": "hf_dataset", "fingerprint": fingerprint},
                          lambda target: dataset.save_to_disk(str(target)), Path(cache_dir) / f"hf-{fingerprint}")


def _check_columns(dataset, image_column: str) -> None:
    columns = set(dataset.column_names)
    missing = [c for c in (image_column, "task", "text") if c not in columns]
    if missing:
        raise ValueError(f"the dataset has no column(s) {missing}; it has {sorted(columns)} "
                         f"(needed: {image_column}, task, text; by task: answers, references)")


def samples_from_hf(dataset, image_column: str = "image", image_dir: str | Path | None = None,
                    cache_dir: str | Path | None = None, name: str = "dataset") -> list[Sample]:
    """The samples of a ``datasets.Dataset`` (see the module docstring for the columns).

    String image paths are relative to ``image_dir`` (default: as given). Embedded image
    bytes are read from the dataset's own ``save_to_disk`` folder, or from a copy saved under
    ``cache_dir`` when it has none. A bad row raises ValueError naming ``name`` and the row."""
    _check_columns(dataset, image_column)
    is_path, files = _image_files(dataset, image_column)
    folder = None
    if not is_path and any(f is None for f in files):
        folder = _saved_folder(dataset)
        if folder is None and cache_dir is None:
            raise ValueError(f"{name} holds its images as bytes: pass cache_dir (or save it with save_to_disk)")
        folder = folder or _save_into_cache(dataset, Path(cache_dir))
    columns = [c for c in ("task", "text", *OPTIONAL_COLUMNS) if c in dataset.column_names]
    rows = dataset.select_columns(columns).to_list()
    samples = []
    for index, (row, file) in enumerate(zip(rows, files)):
        if not is_path:
            path = file or image_reference(folder, index)
        elif isinstance(file, str) and file:
            path = str(Path(image_dir) / file) if image_dir is not None and not Path(file).is_absolute() else file
        else:
            raise ValueError(f"{name}: row {index}: column {image_column!r} has no image path")
        fields = {k: row.get(k) for k in OPTIONAL_COLUMNS if row.get(k) is not None}
        fields.setdefault("image_id", Path(path).stem if not path.startswith(IMAGE_REFERENCE) else str(index))
        fields.setdefault("sample_id", f"{name}-{index}")
        try:
            samples.append(Sample(task=row["task"], image=path, text=row["text"], **fields))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{name}: row {index}: {err}") from err
    return samples


def _image_files(dataset, column: str) -> tuple[bool, list[str | None]]:
    """(whether ``column`` holds path strings, the path of each row's image file). For an
    ``Image`` feature a row whose bytes are inside the dataset gets None. Read from the Arrow
    columns, so embedded image bytes are neither copied nor decoded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = dataset.with_format("arrow")[column]
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return True, values.to_pylist()
    if not pa.types.is_struct(values.type) or {"bytes", "path"} - {f.name for f in values.type}:
        raise ValueError(f"column {column!r} is {values.type}: expected image paths or a datasets Image feature")
    paths = pc.struct_field(values, "path").to_pylist()
    embedded = pc.is_valid(pc.struct_field(values, "bytes")).to_pylist()
    return False, [p if not b and p and Path(p).is_file() else None for p, b in zip(paths, embedded)]


def to_hf_dataset(samples: Sequence[Sample]):
    """A ``datasets.Dataset`` of ``samples`` with their image bytes embedded (``Image``
    feature), so ``save_to_disk`` gives a self-contained copy that :func:`samples_from_hf`
    reads back to the same samples."""
    import datasets

    from .images import load_image

    def image_bytes(path: str) -> dict[str, Any]:
        if path.startswith(IMAGE_REFERENCE):
            buffer = io.BytesIO()
            load_dataset_image(path).save(buffer, format="PNG")
            return {"bytes": buffer.getvalue(), "path": None}
        load_image(path)  # a missing or corrupt file fails here, naming it
        return {"bytes": Path(path).read_bytes(), "path": Path(path).name}

    columns: dict[str, list[Any]] = {"image": [image_bytes(s.image) for s in samples]}
    for key in ("task", "text", "image_id", "sample_id", "answers", "references", "answer_type"):
        columns[key] = [getattr(s, key) for s in samples]
    features = datasets.Features({
        "image": datasets.Image(), "task": datasets.Value("string"), "text": datasets.Value("string"),
        "image_id": datasets.Value("string"), "sample_id": datasets.Value("string"),
        "answers": datasets.Sequence(datasets.Value("string")),
        "references": datasets.Sequence(datasets.Value("string")), "answer_type": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict(columns, features=features)


def open_hf_source(source: str | Path | Mapping[str, str]):
    """A ``DatasetDict`` from what ``--data hf`` names: a ``save_to_disk`` folder; a folder in
    the ``imagefolder`` layout (images + ``metadata.jsonl``); a JSON/JSONL file, or a mapping
    split → JSON/JSONL file (``load_dataset("json", data_files=...)``)."""
    import datasets

    if isinstance(source, Mapping):
        files = {split: str(path) for split, path in source.items()}
        missing = [p for p in files.values() if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"hf_dataset file(s) not found: {missing}")
        return datasets.load_dataset("json", data_files=files)
    path = Path(source).expanduser()
    if path.is_file():
        return datasets.load_dataset("json", data_files={"train": str(path)})
    if not path.is_dir():
        raise FileNotFoundError(f"hf_dataset not found: {path} (a save_to_disk folder, an imagefolder folder, "
                                "a JSON/JSONL file or {split: file})")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    return datasets.load_dataset("imagefolder", data_dir=str(path))
