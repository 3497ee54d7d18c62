"""Multi-task Swin Transformer for dense prediction (MTLoRA, Agiza et al., CVPR 2024) on timm.

``create_multitask_swin(...)`` builds a timm Swin, puts the chosen adapters in with the
adapter core, adds one :class:`~vlmtl.heads.dense.DenseDecoder` per task and returns a
:class:`MultiTaskSwin` whose ``forward(images)`` gives ``{task: (B, C_task, H, W)}``.

How the official (Microsoft-layout) MTLoRA Swin maps onto timm:

* timm runs channels-last (NHWC) and puts patch merging at the *start* of the next stage
  (``layers[i + 1].downsample``), where the official code has it at the end of stage i.
  Stage i's per-task feature is therefore ``layers[i + 1].downsample(stage-i output)``; the
  last stage has no merging. The shared stream's merged output is reused as the next stage's
  input, so merging runs once per stream. In ``forward`` a task stream's merging and its
  decoder's first 1×1 reduction run as one composed linear map (``merged_reduction``).
* timm's Swin has a final ``norm`` and a classifier head; the official features-only backbone
  has neither, so both are pruned (the frozen count then equals timm's ``features_only``).
* Adapted linears keep timm's names: ``attn.qkv`` (fused q/k/v), ``attn.proj``, ``mlp.fc1``,
  ``mlp.fc2``, ``downsample.reduction``.

MTLoRA placement: a task-agnostic LoRA (TA-LoRA, rank ``r``) on qkv, proj, fc1 and fc2 of
every block; in the last block of each stage proj, fc1 and fc2 also carry one task-specific
LoRA per task (TS-LoRA, rank ``r_task``). In that block the shared attention output ``o``
goes through proj as the shared stream ``o_s`` and per task ``o_t``; ``a_s = x + o_s``,
``a_t = x + o_t``; fc1/fc2 run on ``norm2(a_s)`` with task inputs ``norm2(a_t)`` (the frozen
weights see the shared stream, each TS-LoRA its task's stream); ``out_t = a_t + mlp_t``.
Only the shared stream continues to the next stage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlmtl.adapters import inject, use_tasks
from vlmtl.adapters.config import AdapterConfig
from vlmtl.adapters.layers import AdapterLayer, MTLoRALinear
from vlmtl.adapters.recompute import recompute_adapter_inputs
from vlmtl.adapters.routing import routed_layers
from vlmtl.adapters.stream_mlp import mlp_task_streams
from vlmtl.heads.dense import DECODER_CHANNELS, DenseDecoder, pointwise_conv
from vlmtl.registry import DENSE_METHODS, DENSE_TASKS, resolve_method

from .adapter_config import build_adapter_config

DEFAULT_SWIN = "swin_tiny_patch4_window7_224"
BLOCK_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
TASK_SPECIFIC_TARGETS = ("attn.proj", "mlp.fc1", "mlp.fc2")  # qkv stays shared (paper, Fig. 2)
MERGING_TARGET = r"layers\.\d+\.downsample\.reduction"
PARAMETER_GROUPS = ("adapters", "decoders", "patch_merging", "rel_pos", "norms", "patch_embed", "backbone")


def load_timm_swin(
    name: str = DEFAULT_SWIN, img_size: int = 448, pretrained: str | Path | bool | None = None, **timm_kwargs
) -> nn.Module:
    """A headless timm Swin (no final norm, no classifier), as the official features backbone.

    ``pretrained``: None/False for random weights; a local checkpoint file (timm layout or
    the original Microsoft one, which timm's Swin filter remaps: merging moves to the next
    stage, rel-pos tables are resized); True for timm's hub (needs the internet). A local
    file is loaded strictly: any missing or unexpected key outside ``norm``/``head`` fails."""
    import timm
    from timm.models.swin_transformer import SwinTransformer

    kwargs = dict(img_size=img_size, num_classes=0, **timm_kwargs)
    model = timm.create_model(name, pretrained=pretrained is True, **kwargs)
    if not isinstance(model, SwinTransformer):
        raise TypeError(f"{name} builds a {type(model).__name__}; MTLoRA here supports timm's SwinTransformer (v1)")
    if pretrained not in (None, False, True):
        _load_swin_checkpoint(model, Path(pretrained))
    model.prune_intermediate_layers(indices=len(model.layers), prune_norm=True, prune_head=True)
    return model


def _load_swin_checkpoint(model: nn.Module, path: Path) -> None:
    from timm.models import load_state_dict
    from timm.models.swin_transformer import checkpoint_filter_fn

    if not path.is_file():
        raise FileNotFoundError(f"Swin checkpoint not found: {path}")
    state = checkpoint_filter_fn(load_state_dict(str(path)), model)
    result = model.load_state_dict(state, strict=False)
    pruned = ("head.", "norm.")  # removed right after loading
    missing = [k for k in result.missing_keys if not k.startswith(pruned)]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(pruned)]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit this Swin: missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}"
        )


def stage_feature_channels(backbone: nn.Module) -> list[int]:
    """Channels of the per-stage features fed to the decoders: stage i after the next
    stage's patch merging, the last stage as is (Swin-T: 192, 384, 768, 768)."""
    dims = [int(info["num_chs"]) for info in backbone.feature_info]
    return dims[1:] + dims[-1:]


def _block_regex(suffixes: Sequence[str], blocks: str = r"\d+", stages: str = r"\d+") -> str:
    names = "|".join(re.escape(s) for s in suffixes)
    return rf"layers\.(?:{stages})\.blocks\.(?:{blocks})\.(?:{names})"


def last_block_regex(backbone: nn.Module, suffixes: Sequence[str] = TASK_SPECIFIC_TARGETS) -> str:
    """Full-name regex for ``suffixes`` in the last block of every stage."""
    parts = [_block_regex(suffixes, blocks=str(len(stage.blocks) - 1), stages=str(i))
             for i, stage in enumerate(backbone.layers)]
    return "|".join(f"(?:{p})" for p in parts)


def swin_adapter_config(
    method: str,
    backbone: nn.Module,
    tasks: Sequence[str],
    mtlora_plus: bool = False,
    **hparams,
) -> AdapterConfig | None:
    """The core's adapter config for ``method`` on a timm Swin (None: no adapters):
    qkv/proj/fc1/fc2 of every block (plus the patch-merging reductions for MTLoRA+);
    MTLoRA's task-specific LoRAs in the last block of every stage."""
    if method in ("heads_only", "full"):
        if mtlora_plus:
            raise ValueError(f"mtlora_plus adapts patch merging with LoRA; method {method!r} has no adapters")
        return None
    targets = _block_regex(BLOCK_TARGETS)
    if mtlora_plus:
        targets = f"(?:{targets})|(?:{MERGING_TARGET})"
    core = "lora" if method == "single_task" else method
    return build_adapter_config(core, tasks, targets, task_specific_modules=last_block_regex(backbone), **hparams)


def _window_attention_core(attn: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """timm ``WindowAttention.forward`` up to (not including) the output projection."""
    B_, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B_, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = attn._get_rel_pos_bias()
    if attn.fused_attn:
        if mask is not None:
            num_win = mask.shape[0]
            mask = mask.view(1, num_win, 1, N, N).expand(B_ // num_win, -1, attn.num_heads, -1, -1)
            bias = bias + mask.reshape(-1, attn.num_heads, N, N)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=attn.attn_drop.p if attn.training else 0.0
        )
    else:
        scores = (q * attn.scale) @ k.transpose(-2, -1) + bias
        if mask is not None:
            num_win = mask.shape[0]
            scores = scores.view(-1, num_win, attn.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            scores = scores.view(-1, attn.num_heads, N, N)
        out = attn.attn_drop(attn.softmax(scores)) @ v
    return out.transpose(1, 2).reshape(B_, N, -1)


def _attention_streams(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """timm ``SwinTransformerBlock._attn`` with a stream-aware proj: returns the shared
    attention output and one per task, each in (B, H, W, C) layout.

    The attention output goes back from windows to the image layout *before* proj, where timm
    projects first: proj (and its dropouts) act on each token alone, so the order does not
    change the result, and one tensor is un-windowed and un-shifted instead of one per stream."""
    from timm.models.swin_transformer import window_partition, window_reverse

    B, H, W, C = x.shape
    ws, shift = block.window_size, block.shift_size
    has_shift = any(shift)
    shifted = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2)) if has_shift else x
    pad_h, pad_w = (ws[0] - H % ws[0]) % ws[0], (ws[1] - W % ws[1]) % ws[1]
    if pad_h or pad_w:  # F.pad copies even when it adds nothing
        shifted = F.pad(shifted, (0, 0, 0, pad_w, 0, pad_h))
    _, Hp, Wp, _ = shifted.shape
    windows = window_partition(shifted, ws).view(-1, block.window_area, C)
    mask = block.get_attn_mask(shifted) if getattr(block, "dynamic_mask", False) else block.attn_mask
    core = _window_attention_core(block.attn, windows, mask).view(-1, ws[0], ws[1], C)
    core = window_reverse(core, ws, Hp, Wp)[:, :H, :W, :]
    if has_shift:
        core = torch.roll(core, shifts=shift, dims=(1, 2))
    shared, tasks = block.attn.proj.forward_streams(core)
    return block.attn.proj_drop(shared), [block.attn.proj_drop(t) for t in tasks]


def stream_block_forward(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A timm Swin block whose proj/fc1/fc2 are task-specific MTLoRA layers: (out_s, [out_t])."""
    B, H, W, C = x.shape
    o_s, o_tasks = _attention_streams(block, block.norm1(x))
    a_s = (x + block.drop_path1(o_s)).reshape(B, -1, C)
    a_tasks = [(x + block.drop_path1(o)).reshape(B, -1, C) for o in o_tasks]
    mlp = block.mlp
    n_s, n_tasks = block.norm2(a_s), [block.norm2(a) for a in a_tasks]
    if isinstance(mlp.norm, nn.Identity) and (mlp.drop1.p == 0 or not mlp.training):  # timm's Swin MLP
        m_s, m_tasks = mlp_task_streams(mlp.fc1, mlp.act, mlp.fc2, n_s, n_tasks)
    else:
        h_s, h_tasks = mlp.fc1.forward_streams(n_s, n_tasks)

        def hidden(h: torch.Tensor) -> torch.Tensor:
            return mlp.norm(mlp.drop1(mlp.act(h)))

        m_s, m_tasks = mlp.fc2.forward_streams(hidden(h_s), [hidden(h) for h in h_tasks])
    out_s = a_s + block.drop_path2(mlp.drop2(m_s))
    out_tasks = [a + block.drop_path2(mlp.drop2(m)) for a, m in zip(a_tasks, m_tasks)]
    return out_s.reshape(B, H, W, C), [o.reshape(B, H, W, C) for o in out_tasks]


def _is_stream_block(block: nn.Module) -> bool:
    proj = block.attn.proj
    return isinstance(proj, MTLoRALinear) and proj.num_tasks > 0


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """NHWC → NCHW as a view: channels-last strides, which the decoders work in (no copy)."""
    return x.permute(0, 3, 1, 2)


def _merge_norm(merge: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``PatchMerging.forward`` up to its reduction: each 2×2 neighbourhood's channels
    concatenated (B, H/2, W/2, 4C) and layer-normalised. (Tested equal to the module's own
    forward, so a timm that changed the layout would fail the test, not the numbers.)"""
    B, H, W, C = x.shape
    if H % 2 or W % 2:  # F.pad copies even when it adds nothing
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        _, H, W, _ = x.shape
    return merge.norm(x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3))


def merged_reduction(merge: nn.Module, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``pointwise_conv(conv, _nchw(merge(x)))``: a task stream's patch merging (``merge``, the
    next stage's, or ``nn.Identity`` after the last stage) followed by its decoder's 1×1 reduction.

    After merging's layer norm both are linear maps with nothing between them, so they compose
    into one (conv channels × 4C) weight: on Swin-T's first stage the 384-wide merged pixels go
    straight to the decoder's 18 channels instead of through a 192-wide merged feature, in
    forward and in the input and weight gradients (autograd takes the composed weight's gradient
    back to both factors, a few small matmuls). Same values and gradients up to float rounding
    (tested). The composition runs when the reduction is a plain ``nn.Linear`` of timm's
    ``PatchMerging`` (not an adapter: MTLoRA+) and the conv is the narrower map."""
    from timm.models.swin_transformer import PatchMerging

    if isinstance(merge, nn.Identity):
        return pointwise_conv(conv, _nchw(x))
    reduction = getattr(merge, "reduction", None)
    if not (type(merge) is PatchMerging and type(reduction) is nn.Linear
            and conv.out_channels < reduction.out_features):
        return pointwise_conv(conv, _nchw(merge(x)))
    outer = conv.weight.flatten(1)
    bias = conv.bias
    if reduction.bias is not None:
        bias = outer @ reduction.bias if bias is None else bias + outer @ reduction.bias
    return F.linear(_merge_norm(merge, x), outer @ reduction.weight, bias).permute(0, 3, 1, 2)


class MultiTaskSwin(nn.Module):
    """A (adapted) timm Swin backbone plus one dense decoder per task.

    ``encode(images)`` gives each task's four NCHW feature maps (finest first);
    ``forward(images)`` each task's prediction at the input size."""

    TASK_PASSES = ("batched", "sequential")

    def __init__(self, backbone: nn.Module, tasks: Sequence[str], num_outputs: dict[str, int], method: str,
                 task_pass: str = "sequential", recompute_adapter_inputs: bool = True) -> None:
        super().__init__()
        if task_pass not in self.TASK_PASSES:
            raise ValueError(f"task_pass must be one of {list(self.TASK_PASSES)}, got {task_pass!r}")
        self.backbone = backbone
        self.tasks = tuple(tasks)
        self.method = method
        self.task_pass = task_pass
        self.grad_checkpointing = False
        # Adapter inputs made by an activation, a layer norm or dropout are recomputed in backward, not kept
        # (vlmtl.adapters.recompute): same gradients, less activation memory.
        self.recompute_adapter_inputs = bool(recompute_adapter_inputs)
        self.feature_channels = stage_feature_channels(backbone)
        self.decoders = nn.ModuleDict(
            {t: DenseDecoder(self.feature_channels, num_outputs[t], DECODER_CHANNELS) for t in self.tasks}
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each backbone block in backward (saves activation memory at 448 px)."""
        self.grad_checkpointing = bool(enable)

    def _run(self, fn, *args):
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _merges(self) -> list[nn.Module]:
        """Stage i's patch merging: the next stage's downsample; the last stage has none."""
        layers = self.backbone.layers
        return [layers[i + 1].downsample for i in range(len(layers) - 1)] + [nn.Identity()]

    def _stages(self, images: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, list[torch.Tensor]] | None]:
        """Run the backbone: (per-stage shared features, NCHW and merged as the decoders take
        them; None), or under MTLoRA ([], per task the stream outputs of each stage's last
        block, NHWC, before patch merging: ``encode`` merges them, ``forward`` merges and
        reduces them in one map, ``merged_reduction``)."""
        layers = self.backbone.layers
        merges = self._merges()
        x = layers[0].downsample(self.backbone.patch_embed(images))
        shared: list[torch.Tensor] = []  # NHWC; made NCHW only when the decoders read them
        task_streams: dict[str, list[torch.Tensor]] | None = None
        for stage, merge in zip(layers, merges):
            last = stage.blocks[-1]
            if _is_stream_block(last):
                for blk in stage.blocks[:-1]:
                    x = self._run(blk, x)
                x, streams = self._run(stream_block_forward, last, x)
                if task_streams is None:
                    task_streams = {t: [] for t in self.tasks}
                for t, s in zip(self.tasks, streams):
                    task_streams[t].append(s)
            else:
                for blk in stage.blocks:
                    x = self._run(blk, x)
            x = merge(x)  # the next stage's input: its patch merging runs here, once
            shared.append(x)
        if task_streams is not None:
            return [], task_streams
        return [_nchw(f) for f in shared], None

    def _features_or_streams(
        self, images: torch.Tensor
    ) -> tuple[dict[str, list[torch.Tensor]] | None, dict[str, list[torch.Tensor]] | None]:
        """(each task's features, None), or under MTLoRA (None, each task's unmerged streams)."""
        if self.method == "mtl_lora":
            return self._encode_each_task(images), None
        shared, task_streams = self._stages(images)
        if task_streams is not None:
            return None, task_streams
        return {t: shared for t in self.tasks}, None

    def encode(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Each task's multi-scale features (NCHW, finest first) as its decoder sees them."""
        feats, task_streams = self._features_or_streams(images)
        if task_streams is None:
            return feats
        merges = self._merges()
        return {t: [_nchw(m(s)) for m, s in zip(merges, streams)] for t, streams in task_streams.items()}

    def _reduced_features(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Each task's features through its decoder's per-scale reductions: what ``forward``
        feeds ``DenseDecoder.predict``. MTLoRA's task streams are merged and reduced at once."""
        feats, task_streams = self._features_or_streams(images)
        if task_streams is None:
            return {t: self.decoders[t].reduce_features(feats[t]) for t in self.tasks}
        merges = self._merges()
        return {
            t: [merged_reduction(m, conv, s) for m, conv, s in zip(merges, self.decoders[t].reduce, streams)]
            for t, streams in task_streams.items()
        }

    def _encode_each_task(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """MTL-LoRA adapts every layer per task, so each task needs the backbone to itself.
        ``task_pass="sequential"`` (default): one pass per task; ``"batched"``: one pass over
        the images repeated once per task, each copy routed to its task (per-sample routing).
        Same features and gradients. Batched is 1.2× slower on CPU at Swin-T 448² today
        (scripts/bench_swin.py, 5 % less memory): the repeated batch's larger matrices gain
        less than the per-sample routing costs."""
        if self.task_pass == "sequential":
            feats = {}
            for t in self.tasks:
                with use_tasks(self.backbone, t):
                    feats[t] = self._stages(images)[0]
            return feats
        n = images.shape[0]
        task_ids = torch.arange(len(self.tasks), device=images.device).repeat_interleave(n)
        for layer in routed_layers(self.backbone):  # here, so adapters loaded later fold too
            layer.fold_batch = True  # window attention folds (B · windows) into the batch dim
        with use_tasks(self.backbone, task_ids):
            stacked = self._stages(images.repeat(len(self.tasks), 1, 1, 1))[0]
        return {t: [f[i * n : (i + 1) * n] for f in stacked] for i, t in enumerate(self.tasks)}

    def _recording(self):
        if (self.recompute_adapter_inputs and self.training and torch.is_grad_enabled()
                and not torch.compiler.is_compiling()):
            return recompute_adapter_inputs(self.backbone)
        return nullcontext()

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        size = tuple(images.shape[-2:])
        with self._recording():
            reduced = self._reduced_features(images)
        return {t: self.decoders[t].predict(reduced[t], size) for t in self.tasks}

    def parameter_groups(self, trainable_only: bool = True) -> dict[str, int]:
        """Parameter counts by role (see ``PARAMETER_GROUPS``), to check what a method trains."""
        adapter_ids = {
            id(p) for m in self.modules() if isinstance(m, AdapterLayer)
            for n, p in m.named_parameters() if not n.startswith("base_layer.")
        }
        norm_ids = {id(p) for m in self.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
        counts = dict.fromkeys(PARAMETER_GROUPS, 0)
        for name, p in self.named_parameters():
            if trainable_only and not p.requires_grad:
                continue
            if id(p) in adapter_ids:
                group = "adapters"
            elif name.startswith("decoders."):
                group = "decoders"
            elif name.startswith("backbone.patch_embed."):
                group = "patch_embed"
            elif "relative_position_bias_table" in name:
                group = "rel_pos"
            elif id(p) in norm_ids:
                group = "norms"
            elif ".downsample.reduction." in name:
                group = "patch_merging"
            else:
                group = "backbone"
            counts[group] += p.numel()
        return counts


def _set_trainable(model: MultiTaskSwin, method: str) -> None:
    """The paper's trainable set. Adapter methods: adapters, patch embedding, every LayerNorm,
    relative-position tables, patch-merging reductions (unless adapted: MTLoRA+), decoders.
    ``heads_only``: decoders. ``full``: everything."""
    backbone = model.backbone
    for p in model.decoders.parameters():
        p.requires_grad_(True)
    if method == "full":
        for p in backbone.parameters():
            p.requires_grad_(True)
        return
    if method == "heads_only":
        for p in backbone.parameters():
            p.requires_grad_(False)
        return
    # inject() already froze the backbone and left the adapters trainable.
    for p in backbone.patch_embed.parameters():
        p.requires_grad_(True)
    for name, module in backbone.named_modules():
        if isinstance(module, nn.LayerNorm):
            for p in module.parameters():
                p.requires_grad_(True)
        elif name.endswith("downsample.reduction") and isinstance(module, nn.Linear):
            module.weight.requires_grad_(True)  # a plain (not adapted) merging reduction
        elif hasattr(module, "relative_position_bias_table"):
            module.relative_position_bias_table.requires_grad_(True)


def create_multitask_swin(
    model: str = DEFAULT_SWIN,
    *,
    tasks: Sequence[str] = tuple(DENSE_TASKS),
    method: str = "mtlora",
    img_size: int = 448,
    pretrained: str | Path | bool | None = None,
    r: int = 16,
    alpha: float | None = None,
    dropout: float = 0.05,
    r_task: int = 4,
    scale: float = 4.0,
    mtlora_plus: bool = False,
    num_outputs: dict[str, int] | None = None,
    drop_path_rate: float = 0.2,
    adapter_kwargs: dict | None = None,
    task_pass: str = "sequential",
    **timm_kwargs,
) -> MultiTaskSwin:
    """Build a timm Swin (``model``, a timm SwinTransformer name) with adapters for dense
    prediction and one decoder per task.

    method (one of ``DENSE_METHODS``): ``mtlora`` (TA-LoRA everywhere + TS-LoRA in each
    stage's last block), ``lora`` (one shared LoRA on qkv/proj/fc1/fc2, rank r),
    ``mtl_lora`` (the core's MTL-LoRA on the same layers; each task needs its own backbone
    pass: see ``task_pass``),
    ``single_task`` (one task, LoRA as ``lora``), ``heads_only`` (frozen backbone, decoders
    train), ``full`` (everything trainable).

    Scaling as in the adapter core: LoRA and MTL-LoRA multiply their update by alpha / r
    (``alpha`` None: ``scale · r``, so every method uses the same raw multiplier as
    MTLoRA's ``scale``, the paper's 4.0). ``mtlora_plus``: MTLoRA+ as in the official
    configs (``DOWNSAMPLER_ENABLED``): the patch-merging reductions get a TA-LoRA (rank r)
    and are frozen instead of fully trained. ``drop_path_rate`` defaults to the official
    configs' 0.2. ``num_outputs`` maps task → channels (default ``DENSE_TASKS``).
    ``adapter_kwargs`` add adapter-config fields (e.g. ``n_up``, ``temperature`` for
    MTL-LoRA); ``task_pass`` (MTL-LoRA): its per-task backbone passes as one batched pass
    (``"batched"``) or one after another (``"sequential"``); ``timm_kwargs`` go to
    ``timm.create_model`` (e.g. ``embed_dim``, ``depths``,
    ``num_heads`` for a small Swin)."""
    method = resolve_method(method, DENSE_METHODS)
    tasks = tuple(tasks)
    if not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be non-empty and unique, got {list(tasks)}")
    if method == "single_task" and len(tasks) != 1:
        raise ValueError(f"single_task trains one task, got {list(tasks)}")
    outputs = dict(DENSE_TASKS if num_outputs is None else num_outputs)
    missing = [t for t in tasks if t not in outputs]
    if missing:
        raise ValueError(f"unknown output channels for tasks {missing}: pass num_outputs={{task: channels}}")

    backbone = load_timm_swin(model, img_size, pretrained, drop_path_rate=drop_path_rate, **timm_kwargs)
    alpha = scale * r if alpha is None else alpha
    config = swin_adapter_config(method, backbone, tasks, mtlora_plus=mtlora_plus, r=r, alpha=alpha,
                                 dropout=dropout, r_task=r_task, scale=scale, **(adapter_kwargs or {}))
    if config is not None:
        inject(backbone, config)
    swin = MultiTaskSwin(backbone, tasks, outputs, method, task_pass=task_pass)
    _set_trainable(swin, method)
    return swin
