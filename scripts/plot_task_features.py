"""How task-specific are the features and updates of trained LoRA / MTL-LoRA CLIP runs?

    python scripts/plot_task_features.py runs/feat_lora runs/feat_mtl_lora
    python scripts/plot_task_features.py RUN_DIR [RUN_DIR...] --images 200 --output figs/ --top-k 4

Every RUN_DIR is a finished ``scripts/train_vl.py --output RUN_DIR`` folder of a CLIP run
(``config.yaml``, ``adapters/``, ``heads.safetensors``); its model is rebuilt from the config and
loaded with the run's weights. Writes into ``--output`` (default ``<first RUN_DIR>/task_features``):

- ``tsne.png``: t-SNE (scikit-learn) of the image features of the same N validation images
  (``--images``, taken from the first run's validation set), encoded once per task of the run
  (``clip.encode_image(images, task_ids=task)``, L2-normalised), coloured by task; one panel per
  run, as Figure 1 of the MTL-LoRA paper. A plain LoRA routes no task, so its tasks coincide.
- ``mixing_weights.png``: softmax(w_t/τ) of every MTL-LoRA layer: rows = layers, columns =
  task × up-projection B_i (MTL-LoRA runs only).
- ``spectra.png``: singular values of each task's ΔW_t (for LoRA the one ΔW all tasks share):
  σ_i/σ_1 averaged over the adapted layers, and σ_i of three representative layers.
- ``subspace_overlap.png``: per run, the task × task matrix of ||U_aᵀ U_b||_F² / k averaged over
  layers, U_t the top-k left singular vectors of ΔW_t (1: same subspace, 0: orthogonal).
- ``task_features.json``: the numbers behind the figures (overlap matrices, spectra, mixing
  weights, and per run a t-SNE-independent measure of how far the tasks' features move apart).

Layer names are shortened: ``img3.attn.in`` is the fused q/k/v input projection of block 3 of the
image tower, ``txt0.mlp.c_fc`` the first MLP layer of block 0 of the text tower.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vlmtl.adapters import AdapterLayer, LoRALinear, MTLLoRALinear  # noqa: E402
from vlmtl.adapters.io import CONFIG_NAME, LEGACY_NAMES  # noqa: E402
from vlmtl.data import AnswerVocab, load_image  # noqa: E402
from vlmtl.metrics import normalize_answer  # noqa: E402
from vlmtl.train.run_weights import load_run_weights  # noqa: E402
from vlmtl.train.vl_add_task import trained_config  # noqa: E402
from vlmtl.train.vl_data import load_samples  # noqa: E402
from vlmtl.train.vl_trainer import build_model  # noqa: E402

logger = logging.getLogger("plot_task_features")

TASK_COLORS = {"vqa": "tab:blue", "retrieval": "tab:orange", "caption": "tab:green"}
SHORT_NAMES = [  # (full-name prefix regex, short tower prefix)
    (r"visual\.transformer\.resblocks\.(\d+)\.", "img"),
    (r"transformer\.resblocks\.(\d+)\.", "txt"),
    (r"vision_model\.encoder\.layers\.(\d+)\.", "img"),
    (r"text_model\.encoder\.layers\.(\d+)\.", "txt"),
]
RANK_TOL = 1e-6  # singular values below RANK_TOL·σ_1 count as zero


class InputError(ValueError):
    """A run folder or its contents that this script cannot use; the message names the run."""


class NonFiniteError(InputError):
    """NaN or inf in a run's features or weights; the message names the run and the quantity."""


@dataclass
class Run:
    """One rebuilt run: its name, config, tasks, model and adapter layers (short name -> layer)."""

    path: Path
    name: str
    cfg: object
    tasks: list[str]
    model: torch.nn.Module
    layers: dict[str, AdapterLayer] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.cfg.method

    @property
    def label(self) -> str:
        return f"{self.name} ({'MTL-LoRA' if self.method == 'mtl_lora' else 'LoRA'})"


def short_name(name: str) -> str:
    """``visual.transformer.resblocks.3.attn.in_proj`` -> ``img3.attn.in``."""
    for pattern, tower in SHORT_NAMES:
        match = re.match(pattern, name)
        if match:
            name = f"{tower}{match.group(1)}.{name[match.end():]}"
            break
    return name.replace("in_proj", "in").replace("out_proj", "out")


def run_names(paths: list[Path]) -> list[str]:
    """Folder names, made unique with their parents when two runs share a name."""
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.name}" for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    if len(set(names)) < len(names):  # one folder given twice
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    return names


def check_run_dir(path: Path) -> None:
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (expected a run folder written by scripts/train_vl.py --output)")
    if not (path / "config.yaml").is_file():
        raise InputError(f"{path}: no config.yaml, so not a finished scripts/train_vl.py run folder")
    adapters = path / "adapters"
    if not adapters.is_dir() or not ((adapters / CONFIG_NAME).is_file() or (adapters / LEGACY_NAMES[0]).is_file()):
        raise InputError(f"{path}: no adapters/ folder with {CONFIG_NAME}; this script reads LoRA and MTL-LoRA "
                         "runs (a heads_only or full run has no adapters)")


def load_run(path: Path, name: str, device: torch.device) -> Run:
    """The run's model rebuilt from its config.yaml, with its adapters and heads loaded."""
    check_run_dir(path)
    cfg = trained_config(path)
    if cfg.backbone == "llava":
        raise InputError(f"{path}: a LLaVA run; this script reads CLIP runs (backbone open_clip or hf)")
    if cfg.method not in ("lora", "mtl_lora"):
        raise InputError(f"{path}: method {cfg.method!r}; this script compares 'lora' and 'mtl_lora' runs")
    answers = None
    if "vqa" in cfg.tasks:
        vocab = path / "answer_vocab.json"
        if not vocab.is_file():
            raise InputError(f"{path}: the run trains vqa but has no answer_vocab.json")
        answers = AnswerVocab.load(vocab, normalize=normalize_answer)
    model = build_model(cfg, answers)
    try:
        load_run_weights(path, model.adapted, model.heads)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"{path}: cannot load the run's weights: {err}") from err
    model.to(device).eval()
    layers = {short_name(n): m for n, m in model.adapted.named_modules() if isinstance(m, (LoRALinear, MTLLoRALinear))}
    if not layers:
        raise InputError(f"{path}: the rebuilt model has no LoRA / MTL-LoRA layers")
    return Run(path=path, name=name, cfg=cfg, tasks=list(model.tasks), model=model, layers=layers)


def check_finite(values: torch.Tensor | np.ndarray, run: Run, what: str) -> None:
    """A clear error naming the run and the quantity when ``values`` holds NaN or inf."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    bad = ~np.isfinite(array)
    if bad.any():
        kind = "NaN" if np.isnan(array).any() else "inf"
        raise NonFiniteError(f"run {run.path}: {what} holds {kind} ({int(bad.sum())} of {array.size} values); "
                         "the run's weights are broken (a diverged training?)")


# --------------------------------------------------------------------------- features / t-SNE


def validation_images(run_dir: Path, cfg, count: int) -> list[str]:
    """The first ``count`` distinct images of the run's validation samples, in file order."""
    _, val = load_samples(cfg)
    images = list(dict.fromkeys(s.image for s in val))
    if not images:
        raise InputError(f"{run_dir}: no validation images")
    if count > len(images):
        logger.warning("asked for %d images; the validation set has %d: using all", count, len(images))
    return images[:count]


@torch.no_grad()
def encode_per_task(run: Run, images: list[str], device: torch.device, batch_size: int) -> dict[str, np.ndarray]:
    """task -> (N, D) L2-normalised image features of every image routed through that task."""
    preprocess = run.model.preprocess
    pixels = torch.stack([preprocess(load_image(p)) for p in images])
    features = {}
    for task in run.tasks:
        parts = [run.model.clip.encode_image(pixels[i:i + batch_size].to(device), task_ids=task, normalize=True)
                 for i in range(0, len(pixels), batch_size)]
        feats = torch.cat(parts).float().cpu()
        check_finite(feats, run, f"the image features of task {task!r}")
        features[task] = feats.numpy().astype(np.float64)
    return features


def feature_separation(features: dict[str, np.ndarray]) -> dict:
    """How far the tasks move one image's feature apart, next to how far images lie apart:
    mean cosine similarity of the same image under two tasks, of two images under one task,
    and the silhouette of the task labels (−1..1; near 0 or below: tasks not separated)."""
    from sklearn.metrics import silhouette_score

    tasks = list(features)
    out: dict = {}
    same_image = [float(np.mean(np.sum(features[a] * features[b], axis=1)))
                  for i, a in enumerate(tasks) for b in tasks[i + 1:]]
    if same_image:
        out["same_image_cross_task_cosine"] = float(np.mean(same_image))
    between = []
    for f in features.values():
        sim = f @ f.T
        n = len(f)
        if n > 1:
            between.append(float((sim.sum() - np.trace(sim)) / (n * (n - 1))))
    if between:
        out["same_task_cross_image_cosine"] = float(np.mean(between))
    if len(tasks) > 1:
        points = np.concatenate([features[t] for t in tasks])
        labels = np.repeat(np.arange(len(tasks)), [len(features[t]) for t in tasks])
        if len(points) > len(tasks):
            out["task_silhouette"] = float(silhouette_score(points, labels, metric="cosine"))
    return out


def tsne_embed(features: dict[str, np.ndarray], perplexity: float, seed: int) -> tuple[np.ndarray, float]:
    """2-D t-SNE of all (image × task) features; perplexity capped below the point count."""
    from sklearn.manifold import TSNE

    points = np.concatenate(list(features.values()))
    used = float(min(perplexity, max(1.0, (len(points) - 1) / 3)))
    # the features are L2-normalised: Euclidean distances order pairs as cosine similarities do
    embedding = TSNE(n_components=2, perplexity=used, init="pca", random_state=seed).fit_transform(points)
    return embedding, used


def plot_tsne(runs: list[Run], embeddings: list[np.ndarray], counts: list[list[int]], separation: list[dict],
              out: Path) -> Path:
    fig, axes = plt.subplots(1, len(runs), figsize=(4.8 * len(runs), 4.9), squeeze=False)
    for ax, run, points, sizes, sep in zip(axes[0], runs, embeddings, counts, separation):
        start = 0
        for i, (task, n) in enumerate(zip(run.tasks, sizes)):
            xy = points[start:start + n]
            # shrinking markers: where tasks give one image the same feature (LoRA) the dots nest
            ax.scatter(xy[:, 0], xy[:, 1], s=30 / (1 + 0.9 * i), alpha=0.75, color=TASK_COLORS.get(task), label=task,
                       linewidths=0)
            start += n
        notes = []
        if "same_image_cross_task_cosine" in sep:
            notes.append(f"same image, two tasks: cos {sep['same_image_cross_task_cosine']:.3f}")
        if "same_task_cross_image_cosine" in sep:
            notes.append(f"two images, one task: cos {sep['same_task_cross_image_cosine']:.3f}")
        ax.set_title(run.label + ("\n" + "; ".join(notes) if notes else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="best", fontsize=8, markerscale=1.5)
    fig.suptitle(f"t-SNE of image features, the same {counts[0][0]} validation images encoded once per task")
    fig.tight_layout()
    path = out / "tsne.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- mixing weights


def mixing_weights(run: Run) -> dict | None:
    """Per layer softmax(w_t/τ) (tasks × n_up), with two summaries of how peaked they are."""
    if run.method != "mtl_lora":
        return None
    names, weights = [], []
    for name, layer in run.layers.items():
        w = layer.mixing_weights().detach().cpu()
        check_finite(layer.w, run, f"the mixing logits w of layer {name}")
        check_finite(w, run, f"the mixing weights of layer {name}")
        names.append(name)
        weights.append(w.numpy().astype(np.float64))
    stack = np.stack(weights)  # layers × tasks × n_up
    n_up = stack.shape[-1]
    entropy = -(stack * np.log(np.clip(stack, 1e-12, None))).sum(-1)
    return {
        "layers": names,
        "tasks": run.tasks,
        "n_up": int(n_up),
        "temperature": float(next(iter(run.layers.values())).temperature),
        "weights": stack.tolist(),
        "mean_max_weight": {t: float(stack[:, i].max(-1).mean()) for i, t in enumerate(run.tasks)},
        # 1: uniform over the B_i, 0: every layer picks a single B_i (collapse)
        "mean_normalised_entropy": {t: float(entropy[:, i].mean() / math.log(n_up)) if n_up > 1 else 0.0
                                    for i, t in enumerate(run.tasks)},
    }


def plot_mixing(runs: list[Run], mixing: list[dict | None], out: Path) -> Path:
    shown = [(run, m) for run, m in zip(runs, mixing) if m is not None]
    path = out / "mixing_weights.png"
    if not shown:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no MTL-LoRA run among the inputs: no mixing weights", ha="center", va="center")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path
    height = max(3.0, 0.22 * max(len(m["layers"]) for _, m in shown) + 1.6)
    widths = [max(3.0, 0.45 * len(m["tasks"]) * m["n_up"] + 2.0) for _, m in shown]
    fig, axes = plt.subplots(1, len(shown), figsize=(sum(widths) + 1.2, height), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    image = None
    for ax, (run, m) in zip(axes[0], shown):
        stack = np.asarray(m["weights"])  # layers × tasks × n_up
        grid = stack.reshape(len(m["layers"]), -1)
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_yticks(range(len(m["layers"])), m["layers"], fontsize=7)
        ax.set_xticks(range(grid.shape[1]), [f"{t}·B{i}" for t in m["tasks"] for i in range(m["n_up"])],
                      rotation=90, fontsize=7)
        for k in range(1, len(m["tasks"])):
            ax.axvline(k * m["n_up"] - 0.5, color="white", linewidth=1.5)
        ax.set_title(f"{run.label}\nsoftmax(w_t/τ), τ={m['temperature']:g}", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.03, pad=0.02)
    path = out / "mixing_weights.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- ΔW spectra, subspace overlap


def task_deltas(run: Run, name: str, layer: AdapterLayer) -> list[torch.Tensor]:
    """ΔW_t (fp64, CPU) per task; a LoRA layer's one ΔW is shared by all tasks (the same tensor)."""
    with torch.no_grad():
        if isinstance(layer, MTLLoRALinear):
            deltas = [layer.delta_weight(t).detach().double().cpu() for t in range(len(run.tasks))]
        else:
            shared = layer.delta_weight().detach().double().cpu()
            deltas = [shared] * len(run.tasks)
    for task, delta in zip(run.tasks, deltas):
        check_finite(delta, run, f"ΔW of task {task!r} in layer {name}")
    return deltas


def spectra_and_overlap(run: Run, top_k: int) -> dict:
    """Per layer the singular values of each task's ΔW_t and the task × task subspace overlap
    of their top-k left singular vectors; both summarised over layers."""
    tasks = run.tasks
    n = len(tasks)
    overlap_sum = np.zeros((n, n))
    overlap_count = np.zeros((n, n))
    per_layer: dict[str, dict] = {}
    normalised: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    zero_layers = []
    for name, layer in run.layers.items():
        deltas = task_deltas(run, name, layer)
        svds = {}  # LoRA: one SVD for the one ΔW all tasks share
        for delta in deltas:
            if id(delta) not in svds:
                u, s, _ = torch.linalg.svd(delta, full_matrices=False)
                svds[id(delta)] = (u.numpy(), s.numpy())
        singular = [svds[id(d)][1][:layer.r] for d in deltas]
        ranks = [int((s > RANK_TOL * s[0]).sum()) if s[0] > 0 else 0 for s in singular]
        matrix = np.full((n, n), np.nan)
        for a in range(n):
            for b in range(n):
                k = min(top_k, ranks[a], ranks[b])
                if k == 0:
                    continue  # a zero ΔW has no subspace
                ua, ub = svds[id(deltas[a])][0][:, :k], svds[id(deltas[b])][0][:, :k]
                matrix[a, b] = float(np.linalg.norm(ua.T @ ub) ** 2 / k)
        finite = np.isfinite(matrix)
        overlap_sum[finite] += matrix[finite]
        overlap_count += finite
        if not any(ranks):
            zero_layers.append(name)
        for t, s in zip(tasks, singular):
            if s[0] > 0:
                normalised[t].append(s / s[0])
        per_layer[name] = {
            "singular_values": {t: s.tolist() for t, s in zip(tasks, singular)},
            "rank": dict(zip(tasks, ranks)),
            "overlap": [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()],
        }
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_overlap = np.where(overlap_count > 0, overlap_sum / np.maximum(overlap_count, 1), np.nan)
    mean_overlap = np.clip(mean_overlap, 0.0, 1.0)  # rounding can put a diagonal at 1 + 1e-16
    mean_spectrum = {t: np.mean(v, axis=0).tolist() for t, v in normalised.items() if v}
    return {
        "tasks": tasks,
        "top_k": top_k,
        "overlap": [[None if math.isnan(v) else float(v) for v in row] for row in mean_overlap.tolist()],
        "overlap_layers_counted": overlap_count.astype(int).tolist(),
        "zero_delta_layers": zero_layers,
        "mean_normalised_spectrum": mean_spectrum,
        "layers": per_layer,
    }


def representative_layers(names: list[str], count: int = 3) -> list[str]:
    """First, middle and last adapted layer of the image tower (of all layers if it has none)."""
    image = [n for n in names if n.startswith("img")] or names
    picks = [image[round(i * (len(image) - 1) / max(1, count - 1))] for i in range(count)]
    return list(dict.fromkeys(picks))


def plot_spectra(runs: list[Run], stats: list[dict], out: Path) -> Path:
    chosen = [representative_layers(list(s["layers"])) for s in stats]
    cols = 1 + max(len(c) for c in chosen)
    fig, axes = plt.subplots(len(runs), cols, figsize=(3.6 * cols, 3.0 * len(runs)), squeeze=False)
    for row, (run, s, layers) in enumerate(zip(runs, stats, chosen)):
        ax = axes[row][0]
        for task, spectrum in s["mean_normalised_spectrum"].items():
            ax.plot(range(1, len(spectrum) + 1), spectrum, marker="o", ms=3, color=TASK_COLORS.get(task), label=task)
        ax.set_title(f"{run.label}\nσ_i/σ_1 of ΔW_t, mean of {len(s['layers'])} layers", fontsize=9)
        ax.set_xlabel("i")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        for col in range(1, cols):
            ax = axes[row][col]
            if col - 1 >= len(layers):
                ax.axis("off")
                continue
            name = layers[col - 1]
            for task, values in s["layers"][name]["singular_values"].items():
                values = np.asarray(values)
                if values.size and values[0] > 0:
                    ax.semilogy(range(1, len(values) + 1), np.clip(values, values[0] * 1e-8, None), marker="o",
                                ms=3, color=TASK_COLORS.get(task), label=task)
            ax.set_title(f"{run.name}: σ_i of ΔW_t, {name}", fontsize=9)
            ax.set_xlabel("i")
    fig.tight_layout()
    path = out / "spectra.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_overlap(runs: list[Run], stats: list[dict], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(runs), figsize=(3.9 * len(runs) + 0.8, 3.7), squeeze=False)
    image = None
    for ax, run, s in zip(axes[0], runs, stats):
        matrix = np.array([[np.nan if v is None else v for v in row] for row in s["overlap"]], dtype=float)
        image = ax.imshow(matrix, cmap="magma", vmin=0.0, vmax=1.0)
        ticks = range(len(s["tasks"]))
        ax.set_xticks(ticks, s["tasks"], rotation=30, fontsize=8)
        ax.set_yticks(ticks, s["tasks"], fontsize=8)
        for (a, b), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(b, a, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if value > 0.6 else "white")
        ax.set_title(f"{run.label}\n‖U_aᵀU_b‖²_F/k, k≤{s['top_k']}, mean of layers", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.04, pad=0.03)
    path = out / "subspace_overlap.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="train_vl.py run folders")
    parser.add_argument("--output", type=Path, help="default: <first RUN_DIR>/task_features")
    parser.add_argument("--images", type=int, default=200, help="validation images encoded per task (default 200)")
    parser.add_argument("--perplexity", type=float, default=30.0,
                        help="t-SNE perplexity, capped at (points - 1) / 3 (default 30)")
    parser.add_argument("--top-k", type=int, default=4,
                        help="singular vectors per ΔW_t in the subspace overlap (capped at its rank; default 4)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder forward")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE seed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's setting)")
    args = parser.parse_args(argv)
    if args.images < 2:
        parser.error("--images must be at least 2")
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        parser.error("scikit-learn is needed for t-SNE: pip install scikit-learn (or pip install -e '.[analysis]')")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)

    try:
        for path in args.runs:  # every folder checked before any model is built
            check_run_dir(path)
        device = torch.device(args.device)
        names = run_names(args.runs)
        runs = [load_run(p, n, device) for p, n in zip(args.runs, names)]
        images = validation_images(runs[0].path, runs[0].cfg, args.images)
        logger.info("%d validation images, %d run(s): %s", len(images), len(runs), ", ".join(r.label for r in runs))

        document: dict = {"images": images, "runs": {}}
        embeddings, counts, mixing, stats = [], [], [], []
        for run in runs:
            mixing.append(mixing_weights(run))  # the weights first: they are checked for NaN before any encoding
            stats.append(spectra_and_overlap(run, args.top_k))
            features = encode_per_task(run, images, device, args.batch_size)
            embedding, perplexity = tsne_embed(features, args.perplexity, args.seed)
            check_finite(embedding, run, "the t-SNE embedding")
            embeddings.append(embedding)
            counts.append([len(f) for f in features.values()])
            document["runs"][run.name] = {
                "path": str(run.path),
                "method": run.method,
                "tasks": run.tasks,
                "tsne": {"perplexity": perplexity, "points": embedding.tolist(),
                         "task_of_point": [t for t, n in zip(run.tasks, counts[-1]) for _ in range(n)]},
                "feature_separation": feature_separation(features),
                "subspace": stats[-1],
                "mixing_weights": mixing[-1],
            }
            logger.info("%s: mean overlap %s, separation %s", run.label, stats[-1]["overlap"],
                        document["runs"][run.name]["feature_separation"])
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    out = args.output or args.runs[0] / "task_features"
    out.mkdir(parents=True, exist_ok=True)
    separation = [document["runs"][run.name]["feature_separation"] for run in runs]
    written = [plot_tsne(runs, embeddings, counts, separation, out), plot_mixing(runs, mixing, out),
               plot_spectra(runs, stats, out), plot_overlap(runs, stats, out)]
    (out / "task_features.json").write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
    for path in [*written, out / "task_features.json"]:
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    sys.exit(main())
