"""Per-task evaluation: Recall@K (retrieval), VQA accuracy (vqa), BLEU-4 and CIDEr-D (caption)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader

from vlmtl.data import AnswerVocab, MultiTaskCollator, MultiTaskDataset, Sample
from vlmtl.metrics import bleu4, cider, recall_at_k, vqa_accuracy

from .vl_model import VLMultiTaskModel, decode_tokens


def _loader(samples: Sequence[Sample], transform, tokenizer, batch_size: int, workers: int) -> DataLoader:
    dataset = MultiTaskDataset(samples, transform, tasks=sorted({s.task for s in samples}))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=MultiTaskCollator(tokenizer))


@torch.no_grad()
def evaluate_retrieval(model: VLMultiTaskModel, samples: Sequence[Sample], transform, batch_size: int = 128,
                       workers: int = 0, device: torch.device | str = "cpu") -> dict[str, float]:
    """Every caption against every distinct image of the split (several captions per image)."""
    clip = model.clip
    first_of_image: dict[str, Sample] = {}
    for s in samples:
        first_of_image.setdefault(s.image_id, s)
    image_row = {image_id: i for i, image_id in enumerate(first_of_image)}
    image_embs = [clip.encode_image(b["images"].to(device), task="retrieval", normalize=True)
                  for b in _loader(list(first_of_image.values()), transform, clip.tokenizer, batch_size, workers)]
    text_embs = [clip.encode_text(b["text_tokens"].to(device), task="retrieval", normalize=True)
                 for b in _loader(samples, transform, clip.tokenizer, batch_size, workers)]
    similarity = torch.cat(image_embs) @ torch.cat(text_embs).T
    return recall_at_k(similarity.cpu(), [image_row[s.image_id] for s in samples])


@torch.no_grad()
def evaluate_vqa(model: VLMultiTaskModel, samples: Sequence[Sample], transform, answers: AnswerVocab,
                 batch_size: int = 128, workers: int = 0, device: torch.device | str = "cpu") -> dict[str, float]:
    """Official VQA accuracy (normalised answers, leave-one-out over the 10 humans), in percent."""
    clip, head = model.clip, model.heads["vqa"]
    scores = []
    for batch in _loader(samples, transform, clip.tokenizer, batch_size, workers):
        image_emb = clip.encode_image(batch["images"].to(device), task="vqa")
        text_emb = clip.encode_text(batch["text_tokens"].to(device), task="vqa")
        predictions = head.predict(head(image_emb, text_emb)).tolist()
        for index, truth in zip(predictions, batch["vqa_answers"]):
            scores.append(vqa_accuracy(answers.decode(index), truth))
    return {"accuracy": 100.0 * sum(scores) / len(scores)}


@torch.no_grad()
def evaluate_caption(model: VLMultiTaskModel, samples: Sequence[Sample], transform, num_beams: int = 1,
                     batch_size: int = 64, workers: int = 0, device: torch.device | str = "cpu",
                     on_prediction: Callable[[str, str], None] | None = None) -> dict[str, float]:
    """Generate one caption per distinct image; BLEU-4 and CIDEr-D against all its references."""
    clip, decoder = model.clip, model.heads["caption"]
    per_image: dict[str, Sample] = {}
    references: dict[str, list[str]] = {}
    for s in samples:
        per_image.setdefault(s.image_id, s)
        references.setdefault(s.image_id, [])
        for ref in s.references or [s.text]:
            if ref not in references[s.image_id]:
                references[s.image_id].append(ref)
    candidates: dict[str, str] = {}
    for batch in _loader(list(per_image.values()), transform, clip.tokenizer, batch_size, workers):
        _, tokens = clip.encode_image(batch["images"].to(device), task="caption", return_tokens=True)
        generated = decoder.generate(tokens, num_beams=num_beams)
        for image_id, ids in zip(batch["image_ids"], generated.tolist()):
            candidates[image_id] = decode_tokens(clip.tokenizer, ids)
            if on_prediction is not None:
                on_prediction(image_id, candidates[image_id])
    return {"BLEU-4": 100.0 * bleu4(candidates, references), "CIDEr": 100.0 * cider(candidates, references)}


def evaluate(model: VLMultiTaskModel, samples: Sequence[Sample], transform, answers: AnswerVocab | None,
             num_beams: int = 1, workers: int = 0, device: torch.device | str = "cpu",
             max_samples: int | None = None) -> dict[str, dict[str, float]]:
    """Metrics of every task of ``model`` on ``samples`` (its own task's samples each)."""
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, float]] = {}
    for task in model.tasks:
        own = [s for s in samples if s.task == task][:max_samples]
        if task == "retrieval":
            results[task] = evaluate_retrieval(model, own, transform, workers=workers, device=device)
        elif task == "vqa":
            results[task] = evaluate_vqa(model, own, transform, answers, workers=workers, device=device)
        else:
            results[task] = evaluate_caption(model, own, transform, num_beams, workers=workers, device=device)
    model.train(was_training)
    return results
