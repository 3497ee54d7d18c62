"""Adapter layers: each wraps a frozen linear map and adds a low-rank update.

``LoRALinear``      plain LoRA, the single-task baseline.
``MTLLoRALinear``   MTL-LoRA: shared A, task transform Λ_t, n shared B_i mixed per task.
``MTLoRALinear``    MTLoRA: task-agnostic LoRA plus one LoRA per task on per-task streams.
``AdaptedMultiheadAttention``  puts any of them on ``nn.MultiheadAttention``'s fused
input projection and its output projection (which MHA never calls as a module).

The wrapped layer is kept as ``base_layer`` (PEFT's convention); its weight and bias
are never replaced, so a bias-free layer stays bias-free.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import LoRADropout, dropout_down_projection
from .fused_linear import fuses, lora_linear
from .routing import TaskRoutedMixin


class ParamLinear(nn.Module):
    """A linear map over existing parameters (MHA's fused ``in_proj_weight``/``in_proj_bias``),
    so adapter layers can wrap it like an ``nn.Linear``. The parameters stay shared."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None) -> None:
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def _add_low_rank(out: torch.Tensor, h: torch.Tensor, up_t: torch.Tensor) -> torch.Tensor:
    """``out + h @ up_t`` over the last dimension, in one fused, out-of-place ``addmm``.

    Out of place on purpose: adding in place into the base output (a view of the linear's
    2-D result) makes autograd copy the whole output gradient in backward (CopySlices)."""
    # ``up_t`` is usually a transposed (column-major) view; autograd then computes its gradient
    # as (grad^T h)^T, an output-sized matrix times an r-column one, several times slower on
    # CPU than h^T grad. A row-major copy (r × d_out numbers) gets the fast orientation.
    up_t = up_t.to(out.dtype).contiguous()
    summed = torch.addmm(out.reshape(-1, out.shape[-1]), h.to(out.dtype).reshape(-1, h.shape[-1]), up_t)
    return summed.view(out.shape)


def _add_lora(
    out: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float, dropout: nn.Module | None = None
) -> torch.Tensor:
    """``out + scale · b a dropout(x)``: the down-projection (``dropout_down_projection``: the
    dropped input is not materialised), then the scale folded into the r-column up-projection
    and the add fused (``_add_low_rank``)."""
    h = F.linear(x.to(a.dtype), a) if dropout is None else dropout_down_projection(dropout, x, a)
    return _add_low_rank(out, h, (b * scale).t())


def _is_plain_linear(base: nn.Module) -> bool:
    """``base(x)`` is exactly ``F.linear(x, base.weight, base.bias)``: an ``nn.Linear`` or a
    ``ParamLinear`` without forward hooks (which a direct call would skip)."""
    from torch.nn.modules import module as module_state

    return type(base) in (nn.Linear, ParamLinear) and not (
        base._forward_hooks or base._forward_pre_hooks
        or module_state._global_forward_hooks or module_state._global_forward_pre_hooks
    )


def _lora_linear(
    base: nn.Module, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float, dropout: nn.Module | None = None
) -> torch.Tensor:
    """``_add_lora(base(x), x, a, b, scale, dropout)``: a frozen linear plus its LoRA, as one
    autograd function (``fused_linear.lora_linear``: one output-sized tensor in forward, the two
    input gradients summed in place) where the base is a plain linear and ``fused_linear.fuses``."""
    if _is_plain_linear(base) and fuses(base.weight, x, a, b, dropout):
        return lora_linear(x, base.weight, base.bias, a, b, scale, dropout)
    return _add_lora(base(x), x, a, b, scale, dropout)


def _check_linear(base: nn.Module) -> tuple[int, int]:
    weight = getattr(base, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise TypeError(f"adapter layers wrap a linear layer with a 2-D weight, got {type(base).__name__}")
    d_out, d_in = weight.shape
    return int(d_out), int(d_in)


def _kaiming(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Kaiming-uniform (a=√5) over the last dim, as nn.Linear initialises its weight."""
    tensor = torch.empty(shape, device=like.device, dtype=_param_dtype(like))
    for row in tensor.view(-1, shape[-2], shape[-1]):
        nn.init.kaiming_uniform_(row, a=math.sqrt(5))
    return tensor


def _param_dtype(like: torch.Tensor) -> torch.dtype:
    return like.dtype if like.is_floating_point() else torch.float32


class WrapsBaseLayer(nn.Module):
    """A module standing in for ``base_layer``: attributes it lacks are read off the base,
    as models read e.g. ``.weight.dtype`` or ``.batch_first`` off the layers they own."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)


class AdapterLayer(WrapsBaseLayer):
    """Common part of the linear adapters: the frozen base, dropout, merge/unmerge."""

    def __init__(self, base: nn.Module, dropout: float) -> None:
        super().__init__()
        self.out_features, self.in_features = _check_linear(base)
        self.base_layer = base
        self.dropout = LoRADropout(dropout) if dropout > 0 else nn.Identity()
        self.merged_task: int | None = None
        self._unmerged_weight: torch.Tensor | None = None


    @property
    def merged(self) -> bool:
        return self._unmerged_weight is not None

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        """ΔW (d_out × d_in, fp32) that merging ``task`` adds to the base weight."""
        raise NotImplementedError

    @torch.no_grad()
    def merge(self, task: int | None = None) -> None:
        """Add ΔW_task to the frozen weight, keeping the original for an exact unmerge."""
        if self.merged:
            raise RuntimeError(f"{type(self).__name__} is already merged (task {self.merged_task}); unmerge first")
        weight = self.base_layer.weight
        delta = self.delta_weight(task)
        self._unmerged_weight = weight.detach().clone()
        weight.copy_((weight.float() + delta).to(weight.dtype))
        self.merged_task = task

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            return
        original = self._unmerged_weight
        self.base_layer.weight.copy_(original.to(self.base_layer.weight.device))
        self._unmerged_weight = None
        self.merged_task = None


class LoRALinear(AdapterLayer):
    """LoRA: ``W x + b + (alpha/r) · B A dropout(x)``, A Kaiming, B zeros."""

    num_tasks = 0

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(base, dropout)
        weight = base.weight
        self.r = int(r)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.r
        self.A = nn.Parameter(_kaiming((self.r, self.in_features), weight))
        self.B = nn.Parameter(torch.zeros(self.out_features, self.r, device=weight.device, dtype=_param_dtype(weight)))

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        return self.scaling * (self.B.float() @ self.A.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        return _lora_linear(self.base_layer, x, self.A, self.B, self.scaling, self.dropout)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha}"


class MTLLoRALinear(TaskRoutedMixin, AdapterLayer):
    """MTL-LoRA. For a sample of task t:
    ``W x + b + scaling · (Σ_i softmax(w_t/τ)_i B_i) Λ_t A dropout(x)``.

    Per forward the tiny per-task up-projections U_t = scaling·B̃_t·Λ_t (T × d_out × r)
    are built once; the input is projected by A once for all tokens, and each sample
    adds ``h · U_tᵀ`` (one matmul for a single-task batch, a batched matmul when mixed),
    so a token costs about what plain LoRA costs."""

    def __init__(
        self,
        base: nn.Module,
        num_tasks: int,
        r: int,
        alpha: float,
        n_up: int,
        temperature: float,
        lambda_type: str = "full",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(base, dropout)
        if num_tasks <= 0 or r <= 0 or n_up <= 0:
            raise ValueError(f"num_tasks, r and n_up must be positive, got {num_tasks}, {r}, {n_up}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if lambda_type not in ("full", "diagonal"):
            raise ValueError(f"lambda_type must be 'full' or 'diagonal', got {lambda_type!r}")
        weight = base.weight
        dtype, device = _param_dtype(weight), weight.device
        self.num_tasks = int(num_tasks)
        self.r = int(r)
        self.alpha = float(alpha)
        self.scaling = self.alpha / self.r
        self.n_up = int(n_up)
        self.temperature = float(temperature)
        self.lambda_type = lambda_type
        self.A = nn.Parameter(_kaiming((self.r, self.in_features), weight))
        if lambda_type == "full":
            eye = torch.eye(self.r, device=device, dtype=dtype)
            self.Lambda = nn.Parameter(eye.expand(self.num_tasks, self.r, self.r).clone())
        else:
            self.Lambda = nn.Parameter(torch.ones(self.num_tasks, self.r, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(self.n_up, self.out_features, self.r, device=device, dtype=dtype))
        bound = 1.0 / math.sqrt(self.n_up)
        logits = torch.empty(self.num_tasks, self.n_up, device=device, dtype=dtype)
        self.w = nn.Parameter(logits.uniform_(-bound, bound))

    def mixing_weights(self) -> torch.Tensor:
        """softmax(w_t/τ) per task (T × n), in fp32: stable for fp16/bf16 and small τ."""
        return torch.softmax(self.w.float() / self.temperature, dim=-1)

    def task_up_projections(self) -> torch.Tensor:
        """U_t = scaling · B̃_t · Λ_t for every task (T × d_out × r, fp32)."""
        mixed_b = torch.einsum("tn,nor->tor", self.mixing_weights(), self.B.float())
        if self.lambda_type == "full":
            up = torch.bmm(mixed_b, self.Lambda.float())
        else:
            up = mixed_b * self.Lambda.float().unsqueeze(1)
        return self.scaling * up

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        if task is None:
            raise ValueError("MTL-LoRA merges one task: pass its index")
        return self.task_up_projections()[task] @ self.A.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            routing = self.current_routing(required=False)
            if routing is not None and routing.uniform != self.merged_task:
                raise RuntimeError(
                    f"layer is merged for task {self.merged_task} but this batch asks for "
                    f"{'a mix of tasks' if routing.uniform is None else f'task {routing.uniform}'}; unmerge first"
                )
            return out
        routing = self.current_routing()
        up = self.task_up_projections()
        h = dropout_down_projection(self.dropout, x, self.A)
        if routing.uniform is not None:
            if routing.ids is not None and x.dim() > 1:
                self.rows_per_sample(routing, x.shape[0])  # length check only
            return _add_low_rank(out, h, up[routing.uniform].t())
        if x.dim() < 2:
            raise ValueError("a mixed-task batch needs inputs with a leading batch dimension")
        # One up-projection per sample, over all of its rows: under fold_batch (Swin windows) a
        # sample's k rows are consecutive, so gathering one per row would copy U_t k times.
        self.rows_per_sample(routing, x.shape[0])  # length check only
        ids = routing.ids_on(x.device)
        # (samples, r, d_out), row-major for the fast gradient orientation (see _add_low_rank)
        per_sample_up = up.to(out.dtype).index_select(0, ids).transpose(1, 2).contiguous()
        samples = ids.numel()
        summed = torch.baddbmm(
            out.reshape(samples, -1, self.out_features), h.to(out.dtype).reshape(samples, -1, self.r), per_sample_up
        )
        return summed.view(out.shape)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, tasks={self.num_tasks}, r={self.r}, "
            f"alpha={self.alpha}, n_up={self.n_up}, temperature={self.temperature}, lambda={self.lambda_type}"
        )


class MTLoRALinear(AdapterLayer):
    """MTLoRA: a task-agnostic LoRA (rank r) shared by all tasks plus one task-specific
    LoRA per task (rank r_task), with a raw ``scale`` multiplier (not alpha/r).

    ``forward(x)`` returns the shared stream ``W x + b + s·B A x`` (a drop-in linear);
    ``forward_streams(x, task_inputs)`` also returns each task's stream
    ``W x + b + s·B_t A_t u_t``: the frozen W sees the shared input x, only the task's
    low-rank update sees the task's own input u_t (x when not given).

    ``merge()`` folds only the task-agnostic LoRA into W (task-specific ones read u_t, not
    W's input x); a merged layer's task streams take ``s·B A x`` back out of the base output.

    Dropout as the official implementation: one mask on the shared input x, used by the
    task-agnostic LoRA and by the task-specific ones that read x; a task's own input u_t
    is never dropped."""

    def __init__(
        self, base: nn.Module, num_tasks: int, r: int, r_task: int, scale: float, dropout: float = 0.0
    ) -> None:
        super().__init__(base, dropout)
        weight = base.weight
        dtype, device = _param_dtype(weight), weight.device
        self.num_tasks = int(num_tasks) if r_task > 0 else 0
        self.r = int(r)
        self.r_task = int(r_task)
        self.scale = float(scale)
        self.A = nn.Parameter(_kaiming((self.r, self.in_features), weight))
        self.B = nn.Parameter(torch.zeros(self.out_features, self.r, device=device, dtype=dtype))
        if self.num_tasks:
            self.task_A = nn.Parameter(_kaiming((self.num_tasks, self.r_task, self.in_features), weight))
            self.task_B = nn.Parameter(
                torch.zeros(self.num_tasks, self.out_features, self.r_task, device=device, dtype=dtype)
            )
        else:
            self.register_parameter("task_A", None)
            self.register_parameter("task_B", None)

    def delta_weight(self, task: int | None = None) -> torch.Tensor:
        if task is not None:
            raise ValueError(
                "MTLoRA has no per-task merge: its task-specific LoRAs act on each task's own stream input, "
                "not on W's input; merge with task=None (the task-agnostic LoRA only)"
            )
        return self.scale * (self.B.float() @ self.A.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        return _lora_linear(self.base_layer, x, self.A, self.B, self.scale, self.dropout)

    def check_streams(self, x: torch.Tensor, task_inputs: list[torch.Tensor] | None) -> None:
        """Refuse stream inputs this layer can't take: no task LoRAs, a wrong count, a wrong shape."""
        if not self.num_tasks:
            raise RuntimeError("this MTLoRALinear has no task-specific LoRA (num_tasks=0 or r_task=0)")
        if task_inputs is not None and len(task_inputs) != self.num_tasks:
            raise ValueError(f"got {len(task_inputs)} task streams for {self.num_tasks} tasks")
        for t, u in enumerate(task_inputs or ()):
            if u.shape != x.shape:
                raise ValueError(f"task {t} stream has shape {tuple(u.shape)}, expected {tuple(x.shape)}")

    def forward_streams(
        self, x: torch.Tensor, task_inputs: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.check_streams(x, task_inputs)
        base_out = self.base_layer(x)
        if self.merged:  # the base weight holds W + s·B·A: task streams must not see the shared LoRA
            dropped = self.dropout(x)
            frozen = _add_lora(base_out, x, self.A, self.B, -self.scale)  # undropped, as merged
            inputs = [dropped] * self.num_tasks if task_inputs is None else task_inputs
            pairs = zip(inputs, self.task_A, self.task_B)
            return base_out, [_add_lora(frozen, u, a, b, self.scale) for u, a, b in pairs]
        if task_inputs is not None:
            shared = _add_lora(base_out, x, self.A, self.B, self.scale, self.dropout)
            pairs = zip(task_inputs, self.task_A, self.task_B)
            return shared, [_add_lora(base_out, u, a, b, self.scale) for u, a, b in pairs]
        # Every LoRA reads the dropped x: one mask, one down-projection by all their A's stacked.
        down = torch.cat([self.A, self.task_A.flatten(0, 1)])
        h = dropout_down_projection(self.dropout, x, down)
        r, rt = self.r, self.r_task
        shared = _add_low_rank(base_out, h[..., :r], (self.B * self.scale).t())
        streams = [_add_low_rank(base_out, h[..., r + t * rt : r + (t + 1) * rt], (b * self.scale).t())
                   for t, b in enumerate(self.task_B)]
        return shared, streams

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, r={self.r}, tasks={self.num_tasks}, "
            f"r_task={self.r_task}, scale={self.scale}"
        )


class AdaptedMultiheadAttention(WrapsBaseLayer):
    """``nn.MultiheadAttention`` with adapters on its fused q/k/v input projection
    (``in_proj``) and/or its output projection (``out_proj``).

    MHA's own forward reads ``in_proj_weight`` and ``out_proj.weight`` directly and never
    calls ``out_proj`` as a module, so a LoRA hooked on ``out_proj`` would do nothing.
    This module re-implements the attention with the adapted projections; with zero
    adapters it matches MHA (masks, key padding, batch_first, need_weights)."""

    def __init__(self, base: nn.MultiheadAttention, make_adapter, adapt_in: bool = True, adapt_out: bool = True):
        super().__init__()
        if not base._qkv_same_embed_dim:
            raise NotImplementedError("MultiheadAttention with kdim/vdim != embed_dim is not supported by adapters")
        if base.bias_k is not None or base.add_zero_attn:
            raise NotImplementedError("MultiheadAttention with add_bias_kv or add_zero_attn is not supported")
        self.base_layer = base
        in_proj = ParamLinear(base.in_proj_weight, base.in_proj_bias)
        self.in_proj = make_adapter(in_proj) if adapt_in else in_proj
        self.out_proj = make_adapter(base.out_proj) if adapt_out else base.out_proj


    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mha = self.base_layer
        self_attention = key is query and value is query
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
            batch_first = False
        else:
            batch_first = mha.batch_first
        if not batch_first:  # adapters read the batch on dim 0
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        bsz, tgt_len, embed = query.shape
        src_len = key.shape[1]
        heads, head_dim = mha.num_heads, embed // mha.num_heads

        if self_attention:
            q, k, v = self.in_proj(query).chunk(3, dim=-1)
        else:
            q = self.in_proj(query)[..., :embed]
            k = self.in_proj(key)[..., embed : 2 * embed]
            v = self.in_proj(value)[..., 2 * embed :]
        q, k, v = (t.reshape(bsz, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))

        mask = _attention_bias(attn_mask, key_padding_mask, bsz, heads, tgt_len, src_len, q.dtype)
        causal = is_causal and mask is None
        dropout = mha.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * head_dim**-0.5) @ k.transpose(-2, -1)
            if causal:
                scores = scores.masked_fill(
                    torch.ones(tgt_len, src_len, dtype=torch.bool, device=q.device).triu(1), float("-inf")
                )
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            attn = F.dropout(weights, p=dropout) @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)
        attn = attn.transpose(1, 2).reshape(bsz, tgt_len, embed)
        out = self.out_proj(attn)
        if not batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
            if weights is not None:
                weights = weights.squeeze(0)
        return out, weights


def _attention_bias(
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    bsz: int,
    heads: int,
    tgt_len: int,
    src_len: int,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """MHA's masks (bool: True = masked out; float: added) as one additive float bias."""

    def additive(mask: torch.Tensor) -> torch.Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    bias = None
    if attn_mask is not None:
        bias = additive(attn_mask)
        if bias.dim() == 2:
            bias = bias.view(1, 1, tgt_len, src_len)
        elif bias.dim() == 3:
            bias = bias.view(bsz, heads, tgt_len, src_len)
        else:
            raise ValueError(f"attn_mask must be 2-D or 3-D, got shape {tuple(attn_mask.shape)}")
    if key_padding_mask is not None:
        padding = additive(key_padding_mask).view(bsz, 1, 1, src_len)
        bias = padding if bias is None else bias + padding
    return bias
