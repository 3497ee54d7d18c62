from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from vlmtl.heads import CaptionDecoder

PAD, BOS, EOS = 0, 1, 2


def _decoder(vocab: int = 20, max_len: int = 8, seed: int = 0, tie_embeddings: bool = False) -> CaptionDecoder:
    """A random model whose captions depend on the context and sometimes end early: larger
    weights than the default init, which gives near-uniform, context-blind predictions."""
    torch.manual_seed(seed)
    dec = CaptionDecoder(vocab, 32, 16, num_layers=2, num_heads=4, max_len=max_len,
                         pad_id=PAD, bos_id=BOS, eos_id=EOS, dropout=0.0, tie_embeddings=tie_embeddings)
    nn.init.normal_(dec.token_embed.weight, std=1.0)
    if not tie_embeddings:
        nn.init.normal_(dec.head.weight, std=0.5)
    return dec.eval()


def _padded(seqs: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(seqs, (0, width - seqs.shape[1]), value=PAD)


def test_forward_shapes_and_pooled_context():
    dec = _decoder()
    tokens = torch.randint(3, 20, (3, 6))
    assert dec(tokens, torch.randn(3, 5, 16)).shape == (3, 6, 20)
    assert dec(tokens, torch.randn(3, 16)).shape == (3, 6, 20)  # pooled embedding = one token
    with pytest.raises(ValueError):
        dec(torch.randint(3, 20, (1, 9)), torch.randn(1, 5, 16))


def test_tied_and_untied_output_projection():
    tied = _decoder(tie_embeddings=True)
    untied = _decoder(tie_embeddings=False)
    assert tied.head.weight is tied.token_embed.weight
    assert untied.head.weight is not untied.token_embed.weight


def test_causal_mask():
    dec = _decoder()
    ctx = torch.randn(2, 5, 16)
    a = torch.randint(3, 20, (2, 7))
    b = a.clone()
    b[:, 4:] = torch.randint(3, 20, (2, 3))
    la, lb = dec(a, ctx), dec(b, ctx)
    torch.testing.assert_close(la[:, :4], lb[:, :4])
    assert not torch.allclose(la[:, 4:], lb[:, 4:])


def test_context_mask_hides_padded_tokens():
    dec = _decoder()
    tokens, ctx = torch.randint(3, 20, (1, 5)), torch.randn(1, 4, 16)
    changed = ctx.clone()
    changed[:, 3] = torch.randn(16)
    keep = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(dec(tokens, ctx, keep), dec(tokens, changed, keep))
    assert not torch.allclose(dec(tokens, ctx), dec(tokens, changed))


def test_loss_ignores_pad_and_tokens_after_eos():
    dec = _decoder()
    ctx = torch.randn(1, 5, 16)
    caption = torch.tensor([[BOS, 5, 6, 7, EOS]])
    padded = torch.tensor([[BOS, 5, 6, 7, EOS, PAD, PAD]])
    junk = torch.tensor([[BOS, 5, 6, 7, EOS, 9, 11]])
    ref = dec.loss(caption, ctx)
    torch.testing.assert_close(dec.loss(padded, ctx), ref)
    torch.testing.assert_close(dec.loss(junk, ctx), ref)
    # by hand: mean CE over the 4 real targets 5, 6, 7, eos
    logp = dec(caption[:, :-1], ctx).log_softmax(-1)[0]
    by_hand = -torch.stack([logp[i, t] for i, t in enumerate([5, 6, 7, EOS])]).mean()
    torch.testing.assert_close(ref, by_hand)
    # a batch mixing lengths: token-level mean over both captions' real targets
    batch = torch.tensor([[BOS, 5, EOS, PAD, PAD], [BOS, 5, 6, 7, EOS]])
    ctx2 = ctx.expand(2, 5, 16)
    n1, n2 = 2, 4
    mixed = (dec.loss(batch[:1, :3], ctx) * n1 + dec.loss(batch[1:], ctx) * n2) / (n1 + n2)
    torch.testing.assert_close(dec.loss(batch, ctx2), mixed)


def test_loss_counts_eos_when_pad_equals_eos():
    torch.manual_seed(0)
    dec = CaptionDecoder(20, 32, 16, max_len=8, pad_id=EOS, bos_id=BOS, eos_id=EOS, dropout=0.0)
    tgt = torch.tensor([[5, 6, EOS, EOS, EOS]])
    assert dec.target_mask(tgt).tolist() == [[True, True, True, False, False]]


def _train(dec: CaptionDecoder, captions: torch.Tensor, ctx: torch.Tensor, steps: int) -> float:
    dec.train()
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = dec.loss(captions, ctx)
        loss.backward()
        opt.step()
    dec.eval()
    return loss.item()


@pytest.fixture(scope="module")
def overfit():
    """A tiny decoder trained to map two contexts to two captions of different lengths."""
    torch.manual_seed(0)
    dec = CaptionDecoder(16, 32, 8, num_layers=1, num_heads=2, max_len=10,
                         pad_id=PAD, bos_id=BOS, eos_id=EOS, dropout=0.0)
    captions = torch.tensor([[BOS, 5, 9, 3, EOS, PAD, PAD, PAD],
                             [BOS, 7, 7, 12, 4, 11, 6, EOS]])
    ctx = torch.randn(2, 3, 8)
    loss = _train(dec, captions, ctx, steps=300)
    return dec, captions, ctx, loss


def test_overfit_and_greedy_reproduces_captions(overfit):
    dec, captions, ctx, loss = overfit
    assert loss < 0.05
    out = dec.generate(ctx)
    assert out.shape == captions.shape
    torch.testing.assert_close(out, captions)  # short caption padded after its eos
    torch.testing.assert_close(dec.generate(ctx, num_beams=3), captions)
    torch.testing.assert_close(dec.generate(ctx[:1]), captions[:1, :5])  # trimmed to the longest


def test_output_padded_after_eos(overfit):
    dec, _, ctx, _ = overfit
    for out in (dec.generate(ctx), dec.generate(ctx, num_beams=4)):
        assert (out[:, 0] == BOS).all()
        for row in out.tolist():
            assert EOS in row
            assert all(t == PAD for t in row[row.index(EOS) + 1:])
            assert PAD not in row[: row.index(EOS)] and BOS not in row[1:]


def test_one_beam_equals_greedy():
    for seed in range(3):
        dec = _decoder(seed=seed)
        ctx = torch.randn(6, 5, 16)
        greedy = dec.generate(ctx)
        torch.testing.assert_close(dec.beam_search(ctx, num_beams=1, length_penalty=1.0), greedy)
        torch.testing.assert_close(dec.beam_search(ctx, num_beams=1, length_penalty=0.0), greedy)


def test_beam_logprob_at_least_greedy():
    dec = _decoder(seed=1)
    ctx = torch.randn(8, 5, 16)
    greedy = dec.generate(ctx)
    beam = dec.generate(ctx, num_beams=4, length_penalty=0.0)
    g, b = dec.score(greedy, ctx), dec.score(beam, ctx)
    assert (b >= g - 1e-5).all()
    assert (b > g + 1e-3).any()  # beam search actually found something better somewhere


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_is_exhaustive(length_penalty):
    # 2 content tokens, max 3 generated: beams wider than the search tree make beam search exact.
    dec = _decoder(vocab=5, max_len=4, seed=2)
    ctx = torch.randn(3, 5, 16)
    candidates = [[BOS, EOS]] + [[BOS, a, EOS] for a in (3, 4)]
    candidates += [[BOS, a, b, EOS] for a, b in itertools.product((3, 4), repeat=2)]
    candidates += [[BOS, a, b, c] for a, b, c in itertools.product((3, 4), repeat=3)]
    beam = dec.generate(ctx, num_beams=16, length_penalty=length_penalty)
    for i in range(3):
        def norm(seq: list[int], i: int = i) -> float:
            raw = dec.score(torch.tensor([seq]), ctx[i : i + 1]).item()
            return raw / (len(seq) - 1) ** length_penalty
        best = max(candidates, key=norm)
        assert beam[i].tolist() == best + [PAD] * (beam.shape[1] - len(best))


def test_batched_beam_search_matches_single_samples():
    dec = _decoder(seed=5)
    ctx = torch.randn(5, 5, 16)
    for beams in (1, 4):
        batched = dec.generate(ctx, num_beams=beams, length_penalty=0.7)
        for i in range(5):
            alone = dec.generate(ctx[i : i + 1], num_beams=beams, length_penalty=0.7)
            torch.testing.assert_close(_padded(alone, batched.shape[1]), batched[i : i + 1])
        assert len({tuple(r) for r in batched.tolist()}) >= 3  # the contexts matter
        ended = [r for r in batched.tolist() if EOS in r and r.index(EOS) < len(r) - 1]
        assert ended and all(t == PAD for r in ended for t in r[r.index(EOS) + 1:])
