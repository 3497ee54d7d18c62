"""LLaVA with MTL-LoRA: inputs, image-token count, mixed-task generation, beams, training, save/load."""

from __future__ import annotations

import pytest
import torch

from vlmtl.adapters import MTLLoRAConfig, load_adapters, save_adapters, use_tasks
from vlmtl.models import llava as llava_module
from vlmtl.models.llava import (
    VISION_TARGETS,
    MultiTaskLlava,
    create_multitask_llava,
    llava_target_regex,
    vision_layers_used,
)
from vlmtl.models.llava_build import load_llava, num_image_tokens, save_llava, tiny_llava_for
from vlmtl.models.llava_text import LlavaWordTokenizer, build_inputs, format_prompt
from vlmtl.registry import LM_IGNORE_INDEX as IGNORE_INDEX

TASKS = ("vqa", "caption")
TEXTS = ["what color is the cube", "a red cube on a table", "how many balls are there"]
TASK_OF = ["vqa", "caption", "vqa"]
HPARAMS = dict(r=4, alpha=8.0, n_up=2, temperature=0.5)
TINY = dict(image_size=32, patch_size=8, hidden=32, layers=2, heads=2)


def make_tokenizer() -> LlavaWordTokenizer:
    return LlavaWordTokenizer.build(TEXTS + ["red blue green two three a sphere"])


def make_model(seed: int = 0, randomize: bool = True, **kwargs) -> MultiTaskLlava:
    """A tiny adapted LLaVA. ``randomize`` gives every task its own non-zero update
    (B starts at zero, which would make all tasks identical and the tests vacuous)."""
    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    base = tiny_llava_for(tokenizer, **TINY)
    model = create_multitask_llava(tasks=TASKS, model=base, tokenizer=tokenizer, **{**HPARAMS, **kwargs})
    if randomize:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith((".B", ".Lambda", ".w")):
                    param.copy_(torch.randn(param.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def model() -> MultiTaskLlava:
    return make_model(vision_targets=VISION_TARGETS)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def generate_rows(model: MultiTaskLlava, images, tasks, texts, **kwargs) -> list[list[int]]:
    out = model.generate(images, tasks, texts=texts, **kwargs)
    return [until_eos(row, model.tokenizer.eos_id) for row in out.tolist()]


def one_by_one(model: MultiTaskLlava, images, tasks, texts, **kwargs) -> list[list[int]]:
    pairs = enumerate(zip(tasks, texts))
    return [generate_rows(model, images[i : i + 1], [t], [x], **kwargs)[0] for i, (t, x) in pairs]


# --------------------------------------------------------------------------- inputs


def test_labels_mask_prompt_image_and_padding():
    tokenizer = make_tokenizer()
    prompts = [format_prompt("vqa", "what color is the cube"), format_prompt("caption")]
    targets = ["red", "a red cube on a table"]
    batch = build_inputs(prompts, targets, tokenizer, num_image_tokens=4)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == labels.shape == mask.shape
    for row, (prompt, target) in enumerate(zip(prompts, targets)):
        prompt_len = 1 + 4 + len(tokenizer.encode(prompt))
        answer = tokenizer.encode(target) + [tokenizer.eos_id]
        length = prompt_len + len(answer)
        assert ids[row, 0] == tokenizer.bos_id
        assert (ids[row, 1:5] == tokenizer.image_token_id).all()
        assert (labels[row, :prompt_len] == IGNORE_INDEX).all()  # bos, image and prompt
        assert labels[row, prompt_len:length].tolist() == answer  # answer and eos kept
        assert ids[row, prompt_len:length].tolist() == answer
        assert (labels[row, length:] == IGNORE_INDEX).all() and (mask[row, length:] == 0).all()  # right padding
        assert (ids[row, length:] == tokenizer.pad_id).all() and (mask[row, :length] == 1).all()


def test_generation_inputs_are_left_padded_without_labels():
    tokenizer = make_tokenizer()
    batch = build_inputs([format_prompt("vqa", "what color is the cube"), format_prompt("caption")], None, tokenizer, 4)
    assert "labels" not in batch
    assert (batch["attention_mask"][:, -1] == 1).all()
    assert batch["attention_mask"][1, 0] == 0 and batch["input_ids"][1, 0] == tokenizer.pad_id


def test_image_tokens_match_patches_the_model_expects(model, images):
    config = model.model.config
    assert config.vision_feature_select_strategy == "default"  # CLS dropped
    assert model.num_image_tokens == num_image_tokens(config) == (32 // 8) ** 2
    batch = model.encode(TEXTS[:2], TASK_OF[:2], targets=["red", "a cube"])
    assert ((batch["input_ids"] == config.image_token_id).sum(1) == 16).all()
    # The raw HF model accepts exactly this count ...
    plain = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with use_tasks(model.model, ["vqa", "caption"]):
        logits = model.model(pixel_values=images[:2], **plain).logits
        assert logits.shape[:2] == batch["input_ids"].shape
        # ... and fails with one image token fewer or more (HF's own check).
        for wrong in (15, 17):
            bad = build_inputs(["describe the image", "describe the image"], None, model.tokenizer, wrong)
            with pytest.raises(ValueError, match="Image features and image tokens do not match"):
                model.model(pixel_values=images[:2], **bad)
    # The wrapper says why before reaching the model.
    bad = build_inputs(["describe the image"] * 2, None, model.tokenizer, 15)
    with pytest.raises(ValueError, match="16 image tokens"):
        model(images[:2], **bad, task_ids=["vqa", "caption"])


def test_full_strategy_counts_cls():
    tokenizer = make_tokenizer()
    base = tiny_llava_for(tokenizer, vision_feature_select_strategy="full", **TINY)
    assert num_image_tokens(base.config) == 17
    batch = build_inputs(["describe the image"], None, tokenizer, 17)
    base(pixel_values=torch.randn(1, 3, 32, 32), **batch)


def test_targets_decoder_and_only_vision_layers_that_feed_the_projector(model):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert vision_layers_used(model.model.config) == [0]  # vision_feature_layer=-2 of 2 layers
    assert any("vision_tower.encoder.layers.0.self_attn.q_proj.A" in n for n in names)
    assert not any("vision_tower.encoder.layers.1." in n for n in names)
    for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        assert any(f"language_model.layers.1.{proj}.A" in n for n in names)
    assert any("multi_modal_projector" in n for n in names)  # trainable by default
    assert not any("lm_head" in n or "embed_tokens" in n for n in names)
    regex = llava_target_regex(model.model.config)
    assert "vision_tower" not in regex


def test_projector_can_be_frozen():
    model = make_model(randomize=False, train_projector=False)
    assert not any(p.requires_grad for p in model.model.model.multi_modal_projector.parameters())


# --------------------------------------------------------------------------- generation


def test_tasks_change_generation(model, images):
    """Guard against vacuous routing tests: the same sample generates differently per task."""
    vqa = generate_rows(model, images[:1], "vqa", TEXTS[:1], max_new_tokens=6)
    caption = generate_rows(model, images[:1], "caption", TEXTS[:1], max_new_tokens=6)
    assert vqa != caption


def test_first_generated_token_matches_forward(model, images):
    batch = model.encode(TEXTS, TASK_OF, padding_side="left")
    logits = model(images, **batch, task_ids=TASK_OF).logits
    out = model.generate(images, TASK_OF, **batch, max_new_tokens=1)
    assert out[:, 0].tolist() == logits[:, -1].argmax(-1).tolist()


def test_mixed_batch_greedy_equals_each_sample_alone(model, images):
    batched = generate_rows(model, images, TASK_OF, TEXTS, max_new_tokens=6)
    assert batched == one_by_one(model, images, TASK_OF, TEXTS, max_new_tokens=6)


def test_mixed_batch_beam_search_equals_each_sample_alone(model, images):
    batched = generate_rows(model, images, TASK_OF, TEXTS, max_new_tokens=5, num_beams=3)
    assert batched == one_by_one(model, images, TASK_OF, TEXTS, max_new_tokens=5, num_beams=3)


def test_beam_ids_follow_their_samples_not_repeat(model, images, monkeypatch):
    """Two samples with different tasks and 3 beams: HF lays rows out as s0 s0 s0 s1 s1 s1.
    Expanding ids with ``repeat`` (t0 t1 t0 t1 t0 t1) hands beams the other task."""
    imgs, tasks, texts = images[:2], ["vqa", "caption"], TEXTS[:2]
    alone = one_by_one(model, imgs, tasks, texts, max_new_tokens=5, num_beams=3)
    assert generate_rows(model, imgs, tasks, texts, max_new_tokens=5, num_beams=3) == alone

    def wrong(routing, expand):
        return routing.uniform if routing.ids is None else routing.ids.repeat(expand)

    monkeypatch.setattr(llava_module, "expand_task_ids", wrong)
    assert generate_rows(model, imgs, tasks, texts, max_new_tokens=5, num_beams=3) != alone


def test_num_return_sequences_follow_their_samples(model, images):
    out = model.generate(images[:2], ["vqa", "caption"], texts=TEXTS[:2], max_new_tokens=4, num_beams=3,
                         num_return_sequences=2)
    assert out.shape[0] == 4
    for i, task in enumerate(("vqa", "caption")):
        alone = model.generate(images[i : i + 1], task, texts=TEXTS[i : i + 1], max_new_tokens=4, num_beams=3,
                               num_return_sequences=2)
        rows = [until_eos(r, model.tokenizer.eos_id) for r in out[2 * i : 2 * i + 2].tolist()]
        assert rows == [until_eos(r, model.tokenizer.eos_id) for r in alone.tolist()]


# --------------------------------------------------------------------------- training, save/load


def test_training_step_changes_only_trainable_and_lowers_loss(images):
    model = make_model(seed=3, randomize=False).train()
    batch = model.encode(TEXTS, TASK_OF, targets=["red", "a red cube on a table", "two"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(images, **batch, task_ids=TASK_OF).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert any(n.endswith(".B") for n in changed) and any("multi_modal_projector" in n for n in changed)


def test_save_and_load_adapters_gives_identical_generations(tmp_path, images):
    tokenizer = make_tokenizer()
    torch.manual_seed(5)
    save_llava(tiny_llava_for(tokenizer, **TINY), tokenizer, tmp_path / "base")
    base, loaded_tokenizer = load_llava(tmp_path / "base")
    model = create_multitask_llava(tasks=TASKS, model=base, tokenizer=loaded_tokenizer, vision_targets=VISION_TARGETS,
                                   **HPARAMS)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.5 * torch.randn_like(param))
    model.eval()
    expected = model.generate(images, TASK_OF, texts=TEXTS, max_new_tokens=5, num_beams=2)
    save_adapters(model.model, tmp_path / "adapters")

    fresh, fresh_tokenizer = load_llava(tmp_path / "base")
    assert fresh_tokenizer.words.vocab == tokenizer.words.vocab
    restored = create_multitask_llava(fresh, tasks=TASKS, tokenizer=fresh_tokenizer, vision_targets=VISION_TARGETS,
                                      **HPARAMS).eval()
    assert not torch.equal(restored.generate(images, TASK_OF, texts=TEXTS, max_new_tokens=5, num_beams=2), expected)
    load_adapters(restored.model, tmp_path / "adapters")
    assert torch.equal(restored.generate(images, TASK_OF, texts=TEXTS, max_new_tokens=5, num_beams=2), expected)

    # A plain loaded model gets the adapters injected from the saved config.
    plain, _ = load_llava(tmp_path / "base")
    wrapped = MultiTaskLlava(load_adapters(plain, tmp_path / "adapters"), fresh_tokenizer).eval()
    assert wrapped.tasks == list(TASKS)
    assert torch.equal(wrapped.generate(images, TASK_OF, texts=TEXTS, max_new_tokens=5, num_beams=2), expected)


# --------------------------------------------------------------------------- bad input


def test_bad_task_ids_are_rejected(model, images):
    batch = model.encode(TEXTS, TASK_OF, targets=["a", "b", "c"])
    with pytest.raises(ValueError, match="2 task ids for a batch of 3"):
        model(images, **batch, task_ids=["vqa", "caption"])
    with pytest.raises(ValueError, match="unknown task 'retrieval'"):
        model(images, **batch, task_ids=["vqa", "retrieval", "vqa"])
    with pytest.raises(ValueError, match="needs task_ids"):
        model(images, **batch)
    with pytest.raises(ValueError, match="4 task ids for a batch of 3"):
        model.generate(images, ["vqa"] * 4, texts=TEXTS)
    with pytest.raises(ValueError, match="unknown task"):
        model.generate(images, "segmentation", texts=TEXTS)
    with pytest.raises(ValueError, match="no prompt template"):
        format_prompt("retrieval", "x")


def test_plain_lora_validates_ids_too(images):
    model = make_model(randomize=False, method="lora")
    batch = model.encode(TEXTS, TASK_OF, targets=["a", "b", "c"])
    assert model(images, **batch, task_ids=TASK_OF).loss.isfinite()
    with pytest.raises(ValueError, match="2 task ids for a batch of 3"):
        model(images, **batch, task_ids=["vqa", "caption"])


def test_right_padded_prompts_rejected_for_generation(model, images):
    batch = model.encode(TEXTS, TASK_OF, padding_side="right")
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(images, TASK_OF, **batch)


def test_config_must_match_tasks():
    tokenizer = make_tokenizer()
    base = tiny_llava_for(tokenizer, **TINY)
    config = MTLLoRAConfig(tasks=["vqa"], target_modules=llava_target_regex(base.config))
    with pytest.raises(ValueError, match="differ"):
        MultiTaskLlava(base, tokenizer, config, tasks=["vqa", "caption"])


# --------------------------------------------------------------------------- the embedded base


def test_embedded_llava_loads_offline_and_covers_the_synthetic_vocabulary(tmp_path):
    import json

    from PIL import Image

    import vlmtl
    from vlmtl.data import read_jsonl, write_synthetic_dataset
    from vlmtl.models import DEFAULT_LLAVA_DIR

    card = json.loads((DEFAULT_LLAVA_DIR / "pretrain_card.json").read_text())
    assert card["made_by"].startswith("python scripts/pretrain_llava.py")
    model = vlmtl.create_multitask_llava(DEFAULT_LLAVA_DIR, tasks=("vqa", "caption"), r=4).eval()
    write_synthetic_dataset(tmp_path, n_train=4, n_val=0, seed=5)
    samples = read_jsonl(tmp_path / "train.jsonl", tmp_path)
    tokenizer = model.tokenizer
    words = [w for s in samples for text in [s.text, *(s.answers or [])] for w in tokenizer.encode(text)]
    assert tokenizer.unk_id not in words
    pixels = model.preprocess(Image.open(samples[0].image))
    size = model.model.config.vision_config.image_size
    assert pixels.shape == (3, size, size)
    caption = model.generate_text(pixels[None], "caption", texts=[""], max_new_tokens=48)[0]
    assert len(caption.split()) >= 3  # the base was pre-trained to describe scenes
    assert set(caption.split()) <= set(tokenizer.words.vocab)


def test_a_folder_saved_with_a_whole_llava_processor_keeps_its_image_processor(tmp_path):
    """transformers 5 saves a ``LlavaProcessor`` as one ``processor_config.json`` (no
    ``preprocessor_config.json``): its image processor is read, not replaced by defaults;
    an unreadable processor file is an error, never a silent fallback."""
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    from ..conftest import write_hf_llava_dir

    folder = write_hf_llava_dir(tmp_path / "llava", TEXTS)
    (folder / "preprocessor_config.json").unlink()
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.5, 0.5])
    LlavaProcessor(image_processor=images, tokenizer=AutoTokenizer.from_pretrained(folder), patch_size=8,
                   image_token="<image>").save_pretrained(folder)
    assert (folder / "processor_config.json").is_file() and not (folder / "preprocessor_config.json").exists()
    llava = create_multitask_llava(folder, tasks=["vqa"], r=2)
    assert tuple(llava.preprocess.processor.image_mean) == (0.1, 0.2, 0.3)

    (folder / "processor_config.json").write_text("{not json")
    with pytest.raises(OSError, match="processor_config.json' is not a valid JSON file"):
        create_multitask_llava(folder, tasks=["vqa"], r=2)
