"""A small transformer caption decoder over image patch tokens, with greedy and beam search."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CaptionDecoder(nn.Module):
    """Causal transformer decoder that cross-attends to the image tower's patch tokens.

    Pre-norm (``norm_first``) layers train stably without warm-up at this small size;
    positions are learnt (``max_len`` of them, bos included). With ``tie_embeddings``
    the output projection reuses the token embedding, which halves the parameters of
    a CLIP-sized (49k) vocabulary.

    Token layout everywhere (``forward``, ``loss``, ``generate``): ``[bos, w1, ..., eos,
    pad, ...]``. Generation needs ``.eval()`` first, or dropout makes it random.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        context_dim: int,
        num_layers: int = 2,
        num_heads: int = 4,
        max_len: int = 32,
        *,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        dropout: float = 0.1,
        tie_embeddings: bool = True,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        for name, idx in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= idx < vocab_size:
                raise ValueError(f"{name}={idx} is outside the vocabulary [0, {vocab_size})")
        if bos_id == eos_id:
            raise ValueError("bos_id and eos_id must differ")
        self.vocab_size, self.embed_dim, self.max_len = vocab_size, embed_dim, max_len
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

        self.token_embed = nn.Embedding(vocab_size, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, embed_dim))
        self.drop = nn.Dropout(dropout)
        # LayerNorm first: patch tokens of a frozen tower come at their own scale.
        self.context_proj = nn.Sequential(nn.LayerNorm(context_dim), nn.Linear(context_dim, embed_dim))
        layer = nn.TransformerDecoderLayer(
            embed_dim,
            num_heads,
            dim_feedforward=int(mlp_ratio * embed_dim),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Pre-norm layers leave the residual stream un-normalised: hence the final norm.
        self.decoder = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(embed_dim))
        self.head = nn.Linear(embed_dim, vocab_size, bias=False)
        self._init_weights()
        if tie_embeddings:
            self.head.weight = self.token_embed.weight
        # Never generated: bos and pad (unless pad doubles as eos).
        self._banned = sorted({bos_id, pad_id} - {eos_id})

    def _init_weights(self) -> None:
        # Small embeddings: with N(0, 1) a tied head would start with huge logits.
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)

    # ------------------------------------------------------------------ forward / loss

    def encode_context(
        self, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Project context to the decoder width; (B, C) is taken as one token.

        ``context_mask`` is (B, N), True/1 for real tokens and False/0 for padding
        (the Hugging Face ``attention_mask`` convention); it is turned into PyTorch's
        key-padding mask (True = ignore).
        """
        if context.dim() == 2:
            context = context.unsqueeze(1)
        memory = self.context_proj(context)
        padding = None if context_mask is None else ~context_mask.to(device=memory.device, dtype=torch.bool)
        return memory, padding

    def decode(
        self, tokens: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, L, V) for already projected memory (see ``encode_context``)."""
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        x = self.drop(self.token_embed(tokens) + self.pos_embed[:, :length])
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=x.dtype)
        h = self.decoder(x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=memory_padding)
        return self.head(h)

    def forward(
        self, tokens: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """tokens (B, L), context (B, N, C) → next-token logits (B, L, V); position i sees tokens ≤ i."""
        memory, padding = self.encode_context(context, context_mask)
        return self.decode(tokens, memory, padding)

    def target_mask(self, targets: torch.Tensor) -> torch.Tensor:
        """Which target positions count: not pad and not after the first eos.

        The first eos always counts (the model must learn to stop), also when
        ``pad_id == eos_id`` as in GPT-2-style tokenizers.
        """
        is_eos = targets == self.eos_id
        after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
        return ~after_eos & ((targets != self.pad_id) | is_eos)

    def loss(
        self, tokens: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy: inputs tokens[:, :-1], targets tokens[:, 1:],
        averaged over the counted target tokens of the whole batch (see ``target_mask``)."""
        logits = self(tokens[:, :-1], context, context_mask)
        targets = tokens[:, 1:].masked_fill(~self.target_mask(tokens[:, 1:]), -100)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)

    def score(
        self, tokens: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Summed log-probability (B,) of each sequence's counted targets: the quantity
        beam search maximises (with ``length_penalty=0``)."""
        logp = self(tokens[:, :-1], context, context_mask).float().log_softmax(-1)
        targets = tokens[:, 1:]
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (token_logp * self.target_mask(targets)).sum(1)

    # ------------------------------------------------------------------ generation

    def _next_logprobs(
        self, seqs: torch.Tensor, memory: torch.Tensor, padding: torch.Tensor | None
    ) -> torch.Tensor:
        """Log-probabilities (B, V) of the next token; banned tokens at −inf (not renormalised,
        so scores stay the model's own log-probabilities)."""
        logp = self.decode(seqs, memory, padding)[:, -1].float().log_softmax(-1)
        logp[:, self._banned] = float("-inf")
        return logp

    def _check_max_len(self, max_len: int | None) -> int:
        max_len = self.max_len if max_len is None else max_len
        if not 1 <= max_len <= self.max_len:
            raise ValueError(f"max_len must be in [1, {self.max_len}], got {max_len}")
        return max_len

    @torch.no_grad()
    def generate(
        self,
        context: torch.Tensor,
        max_len: int | None = None,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Captions (B, L) starting with bos, pad_id after eos, L ≤ max_len (bos included).

        Greedy when ``num_beams == 1`` (``length_penalty`` then has no effect),
        beam search otherwise (see ``beam_search``).
        """
        if num_beams == 1:
            return self.greedy(context, max_len, context_mask)
        return self.beam_search(context, max_len, num_beams, length_penalty, context_mask)

    @torch.no_grad()
    def greedy(
        self, context: torch.Tensor, max_len: int | None = None, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Most likely next token at each step; stops once every sample has emitted eos."""
        max_len = self._check_max_len(max_len)
        memory, padding = self.encode_context(context, context_mask)
        seqs = torch.full((memory.shape[0], 1), self.bos_id, dtype=torch.long, device=memory.device)
        finished = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        for _ in range(max_len - 1):
            nxt = self._next_logprobs(seqs, memory, padding).argmax(-1)
            nxt = nxt.masked_fill(finished, self.pad_id)
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            finished |= nxt == self.eos_id
            if finished.all():
                break
        return seqs

    @torch.no_grad()
    def beam_search(
        self,
        context: torch.Tensor,
        max_len: int | None = None,
        num_beams: int = 4,
        length_penalty: float = 1.0,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-sample beam search with a shrinking beam; returns the best hypothesis per sample.

        Each step keeps, per sample, the top ``width`` continuations (by summed
        log-probability) of its live beams, ``width`` starting at K. A continuation
        ending in eos closes a hypothesis and narrows that sample's beam by one, so
        the best beam is never dropped because weaker ones finished first; a sample
        is done when no beam is live, and at ``max_len`` its live beams are closed as
        they are. Closed hypotheses are ranked by summed log-probability divided by
        ``generated_len ** length_penalty`` (eos counted, bos not): 0 compares raw
        sums, > 0 favours longer captions. With ``num_beams=1`` this is exactly greedy.
        """
        max_len = self._check_max_len(max_len)
        k = int(num_beams)
        if k < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        memory, padding = self.encode_context(context, context_mask)
        batch, vocab, device = memory.shape[0], self.vocab_size, memory.device
        # Sample b owns rows b*K .. b*K+K-1: repeat_interleave, not repeat (which would tile the batch).
        memory = memory.repeat_interleave(k, dim=0)
        padding = None if padding is None else padding.repeat_interleave(k, dim=0)
        seqs = torch.full((batch * k, 1), self.bos_id, dtype=torch.long, device=device)
        scores = torch.full((batch, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        closed: list[list[tuple[float, torch.Tensor]]] = [[] for _ in range(batch)]
        width = [k] * batch  # beam width per sample: K minus the hypotheses it has closed
        alive = [True] * batch

        def close(b: int, seq: torch.Tensor, raw: float, gen_len: int) -> None:
            closed[b].append((raw / gen_len**length_penalty, seq))

        n_cand = min(k, k * vocab)
        for step in range(max_len - 1):
            logp = self._next_logprobs(seqs, memory, padding).view(batch, k, vocab)
            cand = (scores[:, :, None] + logp).view(batch, k * vocab)
            top_scores, top_idx = cand.topk(n_cand, dim=1)
            top_scores_l, top_idx_l = top_scores.tolist(), top_idx.tolist()
            src_rows, next_tokens = [], []
            next_scores = torch.full((batch, k), float("-inf"), device=device)
            for b in range(batch):
                live: list[tuple[int, int, float]] = []  # (source beam, token, score)
                n_closed = 0
                for s, idx in zip(top_scores_l[b][: width[b]], top_idx_l[b][: width[b]]):
                    if s == float("-inf"):
                        break
                    beam, tok = divmod(idx, vocab)
                    if tok == self.eos_id:
                        eos = seqs.new_tensor([self.eos_id])
                        close(b, torch.cat([seqs[b * k + beam], eos]), s, step + 1)
                        n_closed += 1
                    else:
                        live.append((beam, tok, s))
                width[b] -= n_closed
                alive[b] = bool(live)
                live += [(0, self.pad_id, float("-inf"))] * (k - len(live))  # dead filler beams
                for j, (beam, tok, s) in enumerate(live):
                    src_rows.append(b * k + beam)
                    next_tokens.append(tok)
                    next_scores[b, j] = s
            seqs = torch.cat([seqs[src_rows], seqs.new_tensor(next_tokens)[:, None]], dim=1)
            scores = next_scores
            if not any(alive):
                break
        for b in range(batch):  # beams still live at max_len close without eos
            for j, s in enumerate(scores[b].tolist()):
                if s > float("-inf"):
                    close(b, seqs[b * k + j], s, max(seqs.shape[1] - 1, 1))

        best = []
        for b in range(batch):
            if closed[b]:
                best.append(max(closed[b], key=lambda h: h[0])[1])
            else:  # max_len == 1, or every continuation banned
                best.append(seqs.new_tensor([self.bos_id]))
        longest = max(len(s) for s in best)
        out = torch.full((batch, longest), self.pad_id, dtype=torch.long, device=device)
        for b, s in enumerate(best):
            out[b, : len(s)] = s
        return out
