"""plot_task_features.py on a LoRA and an MTL-LoRA run trained through the real CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

from ..conftest import ROOT, run_script

pytest.importorskip("sklearn")

TASKS = ["vqa", "retrieval", "caption"]


def train(tmp_path, method: str):
    out = tmp_path / method
    done = run_script("train_vl.py", "--tasks", ",".join(TASKS), "--method", method, "--max-steps", "2",
                      "--synthetic-train-images", "24", "--synthetic-val-images", "8",
                      "--data-root", str(tmp_path / "data"), "--save-every", "0", "--workers", "0",
                      "--eval-max-samples", "8", "--batch-size", "8", "--output", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def plot_main():
    """The script's ``main(argv) -> exit status``, imported in-process (the error cases need no new process)."""
    path = list(sys.path)
    spec = importlib.util.spec_from_file_location("plot_task_features", ROOT / "scripts" / "plot_task_features.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module.main
    finally:
        sys.modules.pop(spec.name, None)
        sys.path[:] = path  # the script puts the checkout first on the path when imported


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("task_features")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # tiny models: on a small shared CPU, more threads only wait on each other
        return train(tmp_path, "lora"), train(tmp_path, "mtl_lora")


def no_nan(value, where="") -> None:
    if isinstance(value, float):
        assert not math.isnan(value) and not math.isinf(value), where
    elif isinstance(value, dict):
        for k, v in value.items():
            no_nan(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            no_nan(v, f"{where}[{i}]")


def test_figures_and_numbers_of_a_lora_and_an_mtl_lora_run(runs, tmp_path, monkeypatch):
    lora, mtl = runs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "figures"
    done = run_script("plot_task_features.py", str(lora), str(mtl), "--images", "8", "--perplexity", "5",
                      "--output", str(out), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("tsne.png", "mixing_weights.png", "spectra.png", "subspace_overlap.png"):
        assert (out / name).stat().st_size > 5_000, name
    document = json.loads((out / "task_features.json").read_text())
    no_nan(document)
    assert len(document["images"]) == 8
    assert set(document["runs"]) == {"lora", "mtl_lora"}
    for name, run in document["runs"].items():
        overlap = run["subspace"]["overlap"]
        assert run["tasks"] == TASKS
        assert len(overlap) == len(TASKS) and all(len(row) == len(TASKS) for row in overlap), name
        for a, row in enumerate(overlap):
            for b, value in enumerate(row):
                assert value is not None and 0.0 <= value <= 1.0, (name, a, b, value)
            assert abs(row[a] - 1.0) < 1e-5, (name, a, row[a])
        assert len(run["tsne"]["points"]) == 8 * len(TASKS)
        spectra = run["subspace"]["mean_normalised_spectrum"]
        assert set(spectra) == set(TASKS) and all(abs(s[0] - 1.0) < 1e-9 for s in spectra.values())
    lora_run, mtl_run = document["runs"]["lora"], document["runs"]["mtl_lora"]
    assert all(abs(v - 1.0) < 1e-5 for row in lora_run["subspace"]["overlap"] for v in row)  # one shared ΔW
    assert lora_run["mixing_weights"] is None
    assert lora_run["feature_separation"]["same_image_cross_task_cosine"] == pytest.approx(1.0, abs=1e-5)
    mixing = mtl_run["mixing_weights"]
    assert mixing["tasks"] == TASKS and len(mixing["layers"]) == len(mixing["weights"]) > 0
    for layer in mixing["weights"]:
        assert len(layer) == len(TASKS)
        for row in layer:
            assert len(row) == mixing["n_up"] and abs(sum(row) - 1.0) < 1e-5 and min(row) >= 0
    # the same layers, in the same short names, in the mixing heat map and the spectra
    assert list(mtl_run["subspace"]["layers"]) == mixing["layers"]
    assert any(name.startswith("img") for name in mixing["layers"])
    assert any(name.startswith("txt") for name in mixing["layers"])


def test_a_folder_that_is_not_a_run_is_a_clear_error(runs, plot_main, tmp_path, capsys):
    lora, _ = runs
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    assert plot_main([str(lora), str(empty), "--output", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "not_a_run" in err and "config.yaml" in err
    assert not (tmp_path / "out").exists()

    no_adapters = tmp_path / "no_adapters"
    no_adapters.mkdir()
    (no_adapters / "config.yaml").write_text((lora / "config.yaml").read_text())
    assert plot_main([str(no_adapters)]) != 0
    err = capsys.readouterr().err
    assert "no_adapters" in err and "adapters/" in err
    assert not (no_adapters / "task_features").exists()


def test_nan_in_a_run_is_an_error_naming_the_run_and_the_tensor(runs, plot_main, tmp_path, capsys):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    _, mtl = runs
    broken = tmp_path / "broken"
    shutil.copytree(mtl, broken)
    weights = broken / "adapters" / "vlmtl_adapter_model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.endswith(".w"))  # one layer's MTL-LoRA mixing logits
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(weights), metadata={"method": "mtl_lora", "tasks": json.dumps(TASKS), "format": "pt"})
    assert plot_main([str(broken), "--images", "4", "--output", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert str(broken) in err and "NaN" in err
    assert not (tmp_path / "out").exists()
