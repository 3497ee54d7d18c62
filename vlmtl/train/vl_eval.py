"""Per-task evaluation: Recall@K (retrieval), VQA accuracy (vqa), BLEU-4 and CIDEr-D (caption).

CLIP models answer vqa with their classifier head and caption with their decoder head; a
LLaVA generates both (greedy or beam search), its vqa answers scored like any other
answer string (official normalisation, leave-one-out accuracy).

Under data parallelism each rank encodes or generates for its contiguous part of the samples
(:func:`vlmtl.distributed.shard`) and the parts are gathered in order, so every rank scores
the whole split and reports the same numbers as one process."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader

from vlmtl import distributed
from vlmtl.data import AnswerVocab, MultiTaskCollator, MultiTaskDataset, Sample
from vlmtl.metrics import accuracy_by_answer_type, bleu4, cider, recall_at_k, vqa_accuracy

from .llava_model import VLLlavaModel
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
    images = distributed.shard(list(first_of_image.values()))
    texts = distributed.shard(samples)
    image_embs = [clip.encode_image(b["images"].to(device), task_ids="retrieval", normalize=True).cpu()
                  for b in _loader(images, transform, clip.tokenizer, batch_size, workers)] if images else []
    text_embs = [clip.encode_text(b["text_tokens"].to(device), task_ids="retrieval", normalize=True).cpu()
                 for b in _loader(texts, transform, clip.tokenizer, batch_size, workers)] if texts else []
    image_embs, text_embs = distributed.gather_shards(image_embs), distributed.gather_shards(text_embs)
    similarity = torch.cat(image_embs) @ torch.cat(text_embs).T
    return recall_at_k(similarity, [image_row[s.image_id] for s in samples])


@torch.no_grad()
def evaluate_vqa(model: VLMultiTaskModel, samples: Sequence[Sample], transform, answers: AnswerVocab,
                 batch_size: int = 128, workers: int = 0, device: torch.device | str = "cpu") -> dict[str, float]:
    """Official VQA accuracy (normalised answers, leave-one-out over the 10 humans), in percent,
    overall and per answer type."""
    clip, head = model.clip, model.heads["vqa"]
    scores = []
    own = distributed.shard(samples)
    for batch in _loader(own, transform, clip.tokenizer, batch_size, workers) if own else []:
        image_emb = clip.encode_image(batch["images"].to(device), task_ids="vqa")
        text_emb = clip.encode_text(batch["text_tokens"].to(device), task_ids="vqa")
        predictions = head.predict(head(image_emb, text_emb)).tolist()
        for index, truth in zip(predictions, batch["vqa_answers"]):
            scores.append(vqa_accuracy(answers.decode(index), truth))
    scores = distributed.gather_shards(scores)
    return accuracy_by_answer_type(scores, [s.answer_type for s in samples])  # the loader keeps their order


@torch.no_grad()
def evaluate_caption(model: VLMultiTaskModel, samples: Sequence[Sample], transform, num_beams: int = 1,
                     batch_size: int = 64, workers: int = 0, device: torch.device | str = "cpu",
                     on_prediction: Callable[[str, str], None] | None = None) -> dict[str, float]:
    """Generate one caption per distinct image; BLEU-4 and CIDEr-D against all its references."""
    clip, decoder = model.clip, model.heads["caption"]
    per_image, references = _one_sample_per_image(samples)
    own = distributed.shard(per_image)
    generated_captions: list[tuple[str, str]] = []
    for batch in _loader(own, transform, clip.tokenizer, batch_size, workers) if own else []:
        _, tokens = clip.encode_image(batch["images"].to(device), task_ids="caption", return_tokens=True)
        generated = decoder.generate(tokens, num_beams=num_beams)
        for image_id, ids in zip(batch["image_ids"], generated.tolist()):
            generated_captions.append((image_id, decode_tokens(clip.tokenizer, ids)))
            if on_prediction is not None:
                on_prediction(*generated_captions[-1])
    candidates = dict(distributed.gather_shards(generated_captions))
    return {"BLEU-4": 100.0 * bleu4(candidates, references), "CIDEr": 100.0 * cider(candidates, references)}


def _one_sample_per_image(samples: Sequence[Sample]) -> tuple[list[Sample], dict[str, list[str]]]:
    """A caption is generated once per image and scored against all of that image's references."""
    per_image: dict[str, Sample] = {}
    references: dict[str, list[str]] = {}
    for s in samples:
        per_image.setdefault(s.image_id, s)
        references.setdefault(s.image_id, [])
        for ref in s.references or [s.text]:
            if ref not in references[s.image_id]:
                references[s.image_id].append(ref)
    return list(per_image.values()), references


@torch.no_grad()
def evaluate_llava(model: VLLlavaModel, samples: Sequence[Sample], task: str, num_beams: int = 1,
                   max_new_tokens: int = 48, batch_size: int = 64, workers: int = 0,
                   device: torch.device | str = "cpu",
                   on_prediction: Callable[[str, str], None] | None = None) -> dict[str, float]:
    """Generated vqa answers (VQA accuracy, in percent) or captions (BLEU-4 and CIDEr-D,
    one per distinct image), each sample prompted with its task's template."""
    llava = model.llava
    if task == "caption":
        samples, references = _one_sample_per_image(samples)
    own = distributed.shard(samples)
    loader = DataLoader(MultiTaskDataset(own, model.preprocess, tasks=[task]), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=model.collator(with_targets=False)) if own else []
    scores: list[float] = []
    generated_captions: list[tuple[str, str]] = []
    for batch in loader:
        generated = llava.generate(batch["pixel_values"].to(device), task, input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"], num_beams=num_beams,
                                   max_new_tokens=max_new_tokens)
        texts = [llava.tokenizer.decode(row) for row in generated.tolist()]
        for i, text in enumerate(texts):
            if on_prediction is not None:
                on_prediction(batch["sample_ids"][i], text)
            if task == "vqa":
                scores.append(vqa_accuracy(text, batch["vqa_answers"][i]))
            else:
                generated_captions.append((batch["image_ids"][i], text))
    if task == "vqa":
        scores = distributed.gather_shards(scores)
        return accuracy_by_answer_type(scores, [s.answer_type for s in samples])  # the loader keeps their order
    candidates = dict(distributed.gather_shards(generated_captions))
    return {"BLEU-4": 100.0 * bleu4(candidates, references), "CIDEr": 100.0 * cider(candidates, references)}


def evaluate(model: VLMultiTaskModel | VLLlavaModel, samples: Sequence[Sample], transform,
             answers: AnswerVocab | None, num_beams: int = 1, workers: int = 0, device: torch.device | str = "cpu",
             max_samples: int | None = None, max_new_tokens: int = 48) -> dict[str, dict[str, float]]:
    """Metrics of every task of ``model`` on ``samples`` (its own task's samples each)."""
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, float]] = {}
    for task in model.tasks:
        own = [s for s in samples if s.task == task][:max_samples]
        if isinstance(model, VLLlavaModel):
            results[task] = evaluate_llava(model, own, task, num_beams, max_new_tokens, workers=workers,
                                           device=device)
        elif task == "retrieval":
            results[task] = evaluate_retrieval(model, own, transform, workers=workers, device=device)
        elif task == "vqa":
            results[task] = evaluate_vqa(model, own, transform, answers, workers=workers, device=device)
        else:
            results[task] = evaluate_caption(model, own, transform, num_beams, workers=workers, device=device)
    model.train(was_training)
    return results
