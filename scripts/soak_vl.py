"""Soak test of the embedded default: train for many steps and watch the memory.

    python scripts/soak_vl.py --steps 2000 --output runs/soak
    python scripts/soak_vl.py --steps 20 --every 2 --warmup 10 --output /tmp/soak   # smoke run

Runs ``vlmtl.train.train_vl`` unchanged on the default config (configs/vl_default.yaml: the
embedded base model, the synthetic data set, DataLoader workers), with checkpoints as
configured. Why: a leak (tensors kept alive by the loss history, worker processes that grow,
growing caches) does not show in a 100-step test but kills a day-long run. Every ``--every``
optimizer steps (a global optimizer step hook, so the trainer itself is untouched) it records
the RSS of this process (VmRSS of /proc/self/status) and of its child processes (the
DataLoader workers; listed with psutil when installed, else from /proc).

Writes to --output: rss.csv (step, seconds, main/children/total RSS in MB), rss.png, and the
training run itself under run/. Prints the RSS at the start, after warm-up and at the end,
and exits 1 when, from the warm-up step to the last step, the main-process RSS or the total
(main + workers) grew by more than --max-growth-pct percent or --max-growth-mb MB.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from vlmtl.train import VLTrainConfig, train_vl  # noqa: E402

# ----------------------------------------------------------------------------- memory sampling


def rss_mb(pid: int | str = "self") -> float:
    """VmRSS of a process in MB (0 when it has just exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def child_pids(pid: int) -> list[int]:
    """All descendants of ``pid`` (DataLoader workers and anything they start)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    parent_of: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"; comm may hold spaces
            parent_of[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parent_of.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


@dataclass
class RssSample:
    step: int
    seconds: float
    main_rss_mb: float
    children_rss_mb: float
    children: int
    total_rss_mb: float


class RssRecorder:
    """Samples memory at step 0 and every ``every`` optimizer steps (and at ``last_step``)."""

    def __init__(self, every: int, last_step: int) -> None:
        self.every = every
        self.last_step = last_step
        self.step = 0
        self.start = time.time()
        self.samples: list[RssSample] = []
        self.pid = os.getpid()

    def sample(self) -> None:
        main = rss_mb()
        kids = child_pids(self.pid)
        children = sum(rss_mb(p) for p in kids)
        self.samples.append(RssSample(self.step, round(time.time() - self.start, 2), round(main, 1),
                                      round(children, 1), len(kids), round(main + children, 1)))

    def on_optimizer_step(self, optimizer, args, kwargs) -> None:
        self.step += 1
        if self.step % self.every == 0 or self.step == self.last_step:
            self.sample()


# ----------------------------------------------------------------------------- report


def growth(samples: list[RssSample], warmup: int, key: str) -> tuple[RssSample, RssSample, float, float]:
    """(baseline sample, last sample, growth in MB, growth in %) from the first sample at or after
    ``warmup`` to the last one."""
    base = next((s for s in samples if s.step >= warmup), samples[-1])
    end = samples[-1]
    before, after = getattr(base, key), getattr(end, key)
    return base, end, after - before, 100.0 * (after - before) / max(before, 1e-9)


def write_csv(samples: list[RssSample], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(samples[0])))
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)


def plot(samples: list[RssSample], warmup_step: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s.step for s in samples]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, [s.total_rss_mb for s in samples], label="total (main + workers)")
    ax.plot(steps, [s.main_rss_mb for s in samples], label="main process")
    ax.plot(steps, [s.children_rss_mb for s in samples], label="workers", alpha=0.7)
    ax.axvline(warmup_step, color="grey", linestyle="--", linewidth=1, label=f"end of warm-up (step {warmup_step})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(samples: list[RssSample], warmup: int, max_pct: float, max_mb: float) -> tuple[bool, str, int]:
    """Human-readable summary; ok is False when main or total RSS grew past a limit after warm-up."""
    lines, ok = [], True
    base_step = warmup
    for key, name in (("main_rss_mb", "main process"), ("total_rss_mb", "main + workers")):
        base, end, mb, pct = growth(samples, warmup, key)
        base_step = base.step
        peak = max(getattr(s, key) for s in samples)
        over = mb > max_mb or pct > max_pct
        ok &= not over
        lines.append(f"RSS {name}: start {getattr(samples[0], key):.1f} MB (step {samples[0].step}), "
                     f"{getattr(base, key):.1f} MB at step {base.step} (after warm-up), "
                     f"end {getattr(end, key):.1f} MB (step {end.step}), peak {peak:.1f} MB; "
                     f"growth after warm-up {mb:+.1f} MB ({pct:+.1f}%){'  <-- over the limit' if over else ''}")
    lines.append(("OK" if ok else "FAIL") + f": limit {max_pct:g}% or {max_mb:g} MB of growth after warm-up")
    return ok, "\n".join(lines), base_step


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps to train")
    parser.add_argument("--output", default="runs/soak")
    parser.add_argument("--every", type=int, default=10, help="sample RSS every this many steps")
    parser.add_argument("--warmup", type=int, default=200,
                        help="growth is measured from this step (at most half of --steps) to the last")
    parser.add_argument("--max-growth-pct", type=float, default=10.0, dest="max_growth_pct")
    parser.add_argument("--max-growth-mb", type=float, default=100.0, dest="max_growth_mb")
    parser.add_argument("--config", help="training YAML (default: the config layer's, configs/vl_default.yaml)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: the config's)")
    parser.add_argument("--eval-max-samples", type=int, default=64, dest="eval_max_samples",
                        help="validation samples per task evaluated at the end (the soak is about training)")
    parser.add_argument("--overwrite", action="store_true", help="delete <output>/run from an earlier soak first")
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.every <= 0:
        parser.error("--steps and --every must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    out = Path(args.output)
    run_dir = out / "run"
    if run_dir.exists() and any(run_dir.iterdir()):
        if not args.overwrite:
            print(f"{run_dir} holds an earlier run; pass --overwrite to delete it", file=sys.stderr)
            return 2
        shutil.rmtree(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = VLTrainConfig.from_sources(args.config or VLTrainConfig.default_yaml({}), max_steps=args.steps,
                                     output=str(run_dir), resume="never", workers=args.workers,
                                     eval_max_samples=args.eval_max_samples)
    warmup = min(args.warmup, args.steps // 2)
    recorder = RssRecorder(args.every, cfg.max_steps)
    recorder.sample()  # step 0: after imports, before data, model and workers
    handle = register_optimizer_step_post_hook(recorder.on_optimizer_step)
    try:
        train_vl(cfg)
    finally:  # a crash mid-soak still leaves the curve so far
        handle.remove()
        if len(recorder.samples) > 1:
            write_csv(recorder.samples, out / "rss.csv")
    if recorder.step != cfg.max_steps:
        print(f"expected {cfg.max_steps} optimizer steps, saw {recorder.step}", file=sys.stderr)
        return 1
    ok, text, base_step = report(recorder.samples, warmup, args.max_growth_pct, args.max_growth_mb)
    plot(recorder.samples, base_step, out / "rss.png",
         f"soak: {cfg.method} on {cfg.model}, {cfg.max_steps} steps, batch {cfg.batch_size}, {cfg.workers} workers")
    print(text)
    print(f"wrote {out / 'rss.csv'} and {out / 'rss.png'} ({len(recorder.samples)} samples); run in {run_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
