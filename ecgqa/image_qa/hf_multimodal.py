"""A local Hugging Face multimodal model (LLaVA, Mllama / LLaMA 3.2 Vision) on the LoRA path.

Its own vision tower and processor read the image; LoRA goes on the language model's
attention and MLP projections only (a regex under ``language_model``), never on the vision
tower, ``lm_head`` or ``embed_tokens``. With ``train_vision`` the multimodal projector is
trained too and saved in the peft adapter (``modules_to_save``).

Data flow of one conversation::

    processor(image, first prompt with the model's image token)
        -> input_ids (1, T0), pixel_values, [+ Mllama: aspect_ratio_*, cross_attention_mask]
    + answer / later-turn ids (tokenizer) -> input_ids (1, T), targets (1, T)
    model(**inputs) -> logits (1, T, V) -> log p at answer positions

The model class is chosen by the folder's ``config.json`` ``model_type`` (a registry), not
by its name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ecgqa.config import ConfigError
from ecgqa.image_qa.inputs import MARKER, ImagePrompt, encode_answer, load_image
from ecgqa.image_qa.lora import inference_mode, wrap_lora
from ecgqa.image_qa.model import ImageQaModel
from ecgqa.image_qa.settings import ImageQaConfig
from ecgqa.models.errors import LlmError
from ecgqa.models.fusion import pad_scores
from ecgqa.models.llm import quantization_config, torch_dtype
from ecgqa.registry import Registry

HF_MULTIMODAL: Registry = Registry("multimodal model_type")


@HF_MULTIMODAL.register("llava")
def _llava():
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration


@HF_MULTIMODAL.register("mllama")
def _mllama():
    from transformers import MllamaForConditionalGeneration

    return MllamaForConditionalGeneration


def language_lora_targets(names: Sequence[str]) -> str:
    """A peft regex: the named projections inside the language model only."""
    return rf".*language_model.*\.({'|'.join(names)})"


@dataclass
class HfBatch:
    """Processor outputs of each conversation (kept unpadded: image tensors differ per
    model) and the token each position must predict (-100: no loss)."""

    inputs: list[dict]
    targets: list[torch.Tensor]          # (1, T_b) each


class HfImageQaModel(ImageQaModel):
    """LLaVA / Mllama with LoRA on its language model; same interface as ImageQaModel."""

    def __init__(self, llm, processor, cfg: ImageQaConfig, prompt: ImagePrompt):
        torch.nn.Module.__init__(self)
        self.llm, self.processor, self.cfg, self.prompt = llm, processor, cfg, prompt
        self.tokenizer = processor.tokenizer
        train = not inference_mode(llm)
        for name, p in self.llm.named_parameters():
            p.requires_grad_(train and ("lora_" in name or "modules_to_save" in name))

    @classmethod
    def build(cls, cfg: ImageQaConfig, adapter=None, trainable: bool = True) -> HfImageQaModel:
        from transformers import AutoConfig, AutoProcessor

        folder = Path(cfg.hf_multimodal).expanduser()
        kind = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
        if kind not in HF_MULTIMODAL:
            raise ConfigError(f"model.hf_multimodal {folder}: model_type {kind!r} is not "
                              f"supported; use one of {', '.join(HF_MULTIMODAL.names())}")
        kwargs = dict(dtype=torch_dtype(cfg.llm.dtype), local_files_only=True,
                      attn_implementation=cfg.llm.attn_implementation)
        if quantization_config(cfg.llm) is not None:
            kwargs["quantization_config"] = quantization_config(cfg.llm)
        try:
            base = HF_MULTIMODAL.build(kind).from_pretrained(folder, **kwargs)
            processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise LlmError(f"{folder}: cannot load model ({str(err).splitlines()[0]})") from None
        base.eval()
        for p in base.parameters():
            p.requires_grad_(False)
        if quantization_config(cfg.llm) is not None:
            from ecgqa.models.quantized import make_cpu_trainable

            make_cpu_trainable(base)            # CPU bitsandbytes layers: exact gradients
        llm = wrap_lora(base, cfg, adapter, trainable,
                         target_modules=language_lora_targets(cfg.lora.target_modules),
                         modules_to_save=["multi_modal_projector"] if cfg.train_vision else None)
        if processor.tokenizer.pad_token_id is None:
            processor.tokenizer.pad_token = processor.tokenizer.eos_token
        return cls(llm, processor, cfg, ImagePrompt.load(cfg.prompt_file))

    @property
    def device(self) -> torch.device:
        return self.causal_lm.get_input_embeddings().weight.device

    # ------------------------------------------------------------------ inputs

    def make_batch(self, images: Sequence, turns: Sequence[Sequence[tuple[str, str | None]]]
                   ) -> HfBatch:
        inputs, targets = [], []
        for image, conv in zip(images, turns):
            x, t = self._encode_one(load_image(image), conv)
            inputs.append(x)
            targets.append(t)
        return HfBatch(inputs, targets)

    def _encode_one(self, image, turns) -> tuple[dict, torch.Tensor]:
        first = self.prompt.turn_text(turns[0][0], 0).replace(MARKER, self.processor.image_token)
        x = dict(self.processor(images=[image], text=[first], return_tensors="pt"))
        ids, labels = [x["input_ids"][0].tolist()], [[-100] * x["input_ids"].shape[1]]
        for i, (human, answer) in enumerate(turns):
            if i > 0:
                more = self.tokenizer(self.prompt.turn_text(human, i),
                                      add_special_tokens=False)["input_ids"]
                ids.append(more)
                labels.append([-100] * len(more))
            if answer is not None:
                ans = encode_answer(self.prompt, self.tokenizer, answer)
                ids.append(ans)
                labels.append(ans)
        ids = torch.tensor([[i for p in ids for i in p]])                  # (1, T)
        lab = torch.tensor([i for p in labels for i in p])
        x = _extend(x, ids)
        return x, torch.cat([lab[1:], torch.tensor([-100])]).unsqueeze(0)  # next token

    # ------------------------------------------------------------------ LLM side

    def _forward_logp(self, batch: HfBatch) -> list[torch.Tensor]:
        """log p(target) per conversation, at its target positions."""
        out = []
        for x, tgt in zip(batch.inputs, batch.targets):
            x = {k: v.to(self.device) for k, v in x.items()}
            if "pixel_values" in x:
                x["pixel_values"] = x["pixel_values"].to(self._dtype)
            logits = self.llm(**x, use_cache=False).logits.float()           # (1, T, V)
            tgt = tgt.to(self.device)
            where = tgt != -100
            logp = torch.log_softmax(logits[where], dim=-1)
            out.append(logp.gather(1, tgt[where].unsqueeze(1)).squeeze(1))
        return out

    def loss(self, batch: HfBatch) -> torch.Tensor:
        return -torch.cat(self._forward_logp(batch)).mean()

    @torch.no_grad()
    def option_logprobs(self, images, questions, options):
        sums, means = [], []
        for image, q, opts in zip(images, questions, options):
            per = [x.sum() for x in self._forward_logp(
                self.make_batch([image] * len(opts), [[(q, o)] for o in opts]))]
            counts = [len(a) for a in (encode_answer(self.prompt, self.tokenizer, o)
                                       for o in opts)]
            sums.append(torch.stack(per))
            means.append(torch.stack(per) / torch.tensor(counts, device=self.device))
        return pad_scores(sums), pad_scores(means)

    @torch.no_grad()
    def generate(self, image, question: str, streamer=None,
                 max_new_tokens: int | None = None) -> str:
        x, _ = self._encode_one(load_image(image), [(question, None)])
        x = {k: v.to(self.device) for k, v in x.items()}
        x["pixel_values"] = x["pixel_values"].to(self._dtype)
        out = self.causal_lm.generate(**x, do_sample=False, streamer=streamer,
                                      max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[0, x["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()

    # ------------------------------------------------------------------ persistence

    def _save_vision(self, out: Path) -> None:
        """The vision tower is the base model's; a trained projector is in the adapter."""

    def _load_vision(self, folder: os.PathLike) -> None:
        pass


def _extend(x: dict, ids: torch.Tensor) -> dict:
    """Processor outputs for the prompt, lengthened to ``ids`` (answers, later turns)."""
    t0, t = x["input_ids"].shape[1], ids.shape[1]
    x = dict(x, input_ids=ids, attention_mask=torch.ones_like(ids))
    if "cross_attention_mask" in x:                 # Mllama: later tokens see the image too
        cam = x["cross_attention_mask"]                                  # (1, T0, n_img, tiles)
        x["cross_attention_mask"] = torch.cat(
            [cam, cam[:, -1:].expand(-1, t - t0, -1, -1)], dim=1)
    return x
