"""ImageQaModel: an ECG image -> image tokens in an LLM's prompt, the LLM tuned with LoRA.

Data flow of one batch (shapes at each step)::

    PIL images --preprocess--> pixels (B, 3, H, W) in [-1, 1]
    pixels --image encoder (small CNN; cnn_tokens: distilled from the signal encoder,
             model.image_encoder_init)--> feats (B, n, d_enc)   [train_vision, freeze_encoder]
    feats --projector--> image tokens (B, m, d_llm)                      [train_vision]
    prompt pieces + image tokens + answers --splice--> inputs_embeds (B, T, d_llm)
    --LLM body with LoRA on q/k/v/o/gate/up/down--> hidden (B, T, d_llm)
    --lm_head at answer positions only--> log p(answer tokens)

The LLM is wrapped by ``peft`` (``LoraConfig(task_type="CAUSAL_LM")``); its base weights,
``lm_head`` and ``embed_tokens`` stay frozen and carry no adapter. A local Hugging Face
multimodal model (LLaVA, Mllama) replaces the small encoder with its own vision tower and
processor (:mod:`ecgqa.image_qa.hf_multimodal`); LoRA then goes on its language model only.

Which parts train is decided in the constructor alone: LoRA weights always, the image
encoder (unless ``freeze_encoder``) and projector when ``train_vision`` is true.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ecgqa.assets import IMAGE_ADAPTER
from ecgqa.config import (
    ConfigError,
    expand_path,
    from_dict,
    parse_yaml,
    read_text,
    save_config,
    short,
)
from ecgqa.errors import EcgqaError
from ecgqa.image_qa.inputs import Conversation, ImagePrompt, encode_conversation, preprocess
from ecgqa.image_qa.lora import inference_mode, wrap_lora
from ecgqa.image_qa.settings import ImageQaConfig, validate_model
from ecgqa.image_qa.warmstart import encoder_arch, initial_weights, load_initial
from ecgqa.models.fusion import pad_embeddings, pad_scores
from ecgqa.models.llm import load_llm
from ecgqa.models.projectors import build_projector
from ecgqa.registry import IMAGE_ENCODERS

FORMAT_VERSION = 1
SHIPPED_IMAGE_ADAPTER = IMAGE_ADAPTER
IMAGE_ADAPTER_NAMES = ("image", "default")     # names of the shipped image adapter


# --------------------------------------------------------------------------- the model


@dataclass
class ImageBatch:
    """Model-ready inputs: pixels and tokenised conversations."""

    pixels: torch.Tensor                 # (B, 3, H, W)
    conversations: list[Conversation]


class ImageQaModel(nn.Module):
    """Small image encoder + projector + LoRA-wrapped LLM."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, llm, tokenizer,
                 cfg: ImageQaConfig, prompt: ImagePrompt):
        super().__init__()
        self.encoder, self.projector, self.llm = encoder, projector, llm
        self.tokenizer, self.cfg, self.prompt = tokenizer, cfg, prompt
        trainable = not inference_mode(llm)        # False: loaded for inference only
        for p in self.encoder.parameters():
            p.requires_grad_(trainable and cfg.train_vision and not cfg.freeze_encoder)
        for p in self.projector.parameters():
            p.requires_grad_(trainable and cfg.train_vision)
        for name, p in self.llm.named_parameters():
            p.requires_grad_(trainable and "lora_" in name)
        causal = self.causal_lm
        scale = getattr(causal.get_input_embeddings(), "embed_scale", None)
        self.embed_scale = float(scale) if scale is not None else 1.0
        self.softcap = getattr(causal.config, "final_logit_softcapping", None)

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, cfg: ImageQaConfig, adapter: str | os.PathLike | None = None,
              trainable: bool = True, vision: tuple[dict, Path] | None = None
              ) -> ImageQaModel:
        """Load the LLM, add LoRA (fresh, or from ``adapter``), build encoder + projector.

        ``vision``: the saved ``(state, path)`` of ``vision.safetensors``; encoder and
        projector are then built only once those weights are known to fit them (a config
        asking for a huge network is refused, not allocated)."""
        validate_model(cfg)
        if cfg.hf_multimodal:
            raise ConfigError("model.hf_multimodal: build it with "
                              "ecgqa.image_qa.loading.build_image_qa")
        init = None if vision is not None else initial_weights(cfg)     # checked first
        llm, tok = load_llm(cfg.llm)
        name, kwargs = encoder_arch(cfg)
        encoder = _fitting(lambda: IMAGE_ENCODERS.build(name, **kwargs), vision, "encoder")
        projector = _fitting(lambda: build_projector(
            cfg.projector, d_enc=encoder.out_dim, d_llm=llm.config.hidden_size,
            n_tokens=cfg.n_image_tokens, **cfg.projector_kwargs), vision, "projector")
        if init is not None:
            load_initial(encoder, projector, *init)
        llm = wrap_lora(llm, cfg, adapter, trainable)
        encoder.to(llm.device)
        projector.to(llm.device)
        return cls(encoder, projector, llm, tok, cfg, ImagePrompt.load(cfg.prompt_file))

    @property
    def causal_lm(self) -> nn.Module:
        """The causal LM inside the peft wrapper (LoRA layers injected in place)."""
        return self.llm.get_base_model()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    @property
    def device(self) -> torch.device:
        return self.causal_lm.get_input_embeddings().weight.device

    @property
    def _dtype(self) -> torch.dtype:
        return self.causal_lm.get_input_embeddings().weight.dtype

    # ------------------------------------------------------------------ inputs

    def make_batch(self, images: Sequence, turns: Sequence[Sequence[tuple[str, str | None]]]
                   ) -> ImageBatch:
        """Preprocess images (PIL or paths) and tokenise conversations (one per image)."""
        pixels = preprocess(images, self.cfg.image_size)
        convs = [encode_conversation(self.prompt, self.tokenizer, t) for t in turns]
        return ImageBatch(pixels, convs)

    def image_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, m, d_llm)`` at the LLM's embedding scale."""
        dev = next(self.encoder.parameters()).device
        with torch.set_grad_enabled(torch.is_grad_enabled() and any(
                p.requires_grad for p in self.projector.parameters())):
            feats = self.encoder(pixels.to(dev))                        # (B, n, d_enc)
            tokens = self.projector(feats)                              # (B, m, d_llm)
        return (tokens * self.embed_scale).to(self._dtype)

    def splice(self, batch: ImageBatch, img_tok: torch.Tensor):
        """Text pieces with the image tokens after piece 0; right-padded.

        Returns:
            inputs_embeds (B, T, d), attention_mask (B, T), targets (B, T): the token each
            position must predict, -100 where there is no loss (only answer tokens have one).
        """
        lengths = [len(p) for c in batch.conversations for p in c.pieces]
        flat = [i for c in batch.conversations for p in c.pieces for i in p]
        emb = self.causal_lm.get_input_embeddings()(
            torch.as_tensor(flat, dtype=torch.long, device=self.device))
        embedded = iter(emb.split(lengths))                                  # (len, d) each
        rows, labels = [], []
        for b, conv in enumerate(batch.conversations):
            parts, lab = [], []
            for i, (piece, is_target) in enumerate(zip(conv.pieces, conv.targets)):
                if i == 1:
                    parts.append(img_tok[b])
                    lab.append(torch.full((img_tok.shape[1],), -100))
                parts.append(next(embedded))
                lab.append(torch.tensor(piece, dtype=torch.long) if is_target
                           else torch.full((len(piece),), -100))
            rows.append(torch.cat(parts))                                    # (T_b, d)
            lab = torch.cat(lab)
            labels.append(torch.cat([lab[1:], torch.tensor([-100])]))        # next token
        return pad_embeddings(rows, [t.to(self.device) for t in labels])

    # ------------------------------------------------------------------ LLM side

    def _body(self):
        causal = self.causal_lm
        return getattr(causal, causal.base_model_prefix)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.causal_lm.get_output_embeddings()(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def token_logprobs(self, emb, att, tgt) -> torch.Tensor:
        """log p(target) where there is a target (lm_head only there). ``(N,)``"""
        hidden = self._body()(inputs_embeds=emb, attention_mask=att,
                              use_cache=False).last_hidden_state             # (B, T, d)
        where = tgt != -100
        logp = torch.log_softmax(self._logits(hidden[where]), dim=-1)        # (N, V)
        return logp.gather(1, tgt[where].unsqueeze(1)).squeeze(1)

    def loss(self, batch: ImageBatch) -> torch.Tensor:
        """Mean negative log-likelihood of the answer tokens (teacher forcing)."""
        emb, att, tgt = self.splice(batch, self.image_tokens(batch.pixels))
        return -self.token_logprobs(emb, att, tgt).mean()

    # ------------------------------------------------------------------ answering

    @torch.no_grad()
    def option_logprobs(self, images: Sequence, questions: Sequence[str],
                        options: Sequence[Sequence]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed and mean log p of each option's tokens (+EOS) after the whole prompt.

        Returns:
            ``(logp_sum, logp_mean)``, each ``(B, K)`` (-inf where sample b has fewer options).
        """
        sums, means = [], []
        for b, (image, q) in enumerate(zip(images, questions)):
            opts = options[b]
            batch = self.make_batch([image] * len(opts), [[(q, o)] for o in opts])
            emb, att, tgt = self.splice(batch, self.image_tokens(batch.pixels))
            tok = self.token_logprobs(emb, att, tgt)                          # (N,)
            counts = (tgt != -100).sum(1)                                     # (K,)
            per = torch.stack([s.sum() for s in tok.split(counts.tolist())])
            sums.append(per)
            means.append(per / counts)
        return pad_scores(sums), pad_scores(means)

    def score_options(self, images: Sequence, questions: Sequence[str],
                      options: Sequence[Sequence]) -> torch.Tensor:
        """Probabilities over each sample's options ``(B, K)`` (softmax of the
        ``score_normalise`` log-probabilities); an option is a string or a list of terms."""
        logp_sum, logp_mean = self.option_logprobs(images, questions, options)
        return torch.softmax(logp_mean if self.cfg.score_normalise == "mean" else logp_sum, -1)

    @torch.no_grad()
    def generate(self, image, question: str, streamer=None,
                 max_new_tokens: int | None = None) -> str:
        """Greedy answer to one question about one image (``streamer`` gets text as it comes)."""
        batch = self.make_batch([image], [[(question, None)]])
        emb, att, _ = self.splice(batch, self.image_tokens(batch.pixels))
        out = self.causal_lm.generate(inputs_embeds=emb, attention_mask=att, do_sample=False,
                                      max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      streamer=streamer)
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, out: str | os.PathLike) -> Path:
        """Write the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``),
        ``vision.safetensors`` (image encoder + projector) and ``config.yaml``. No pickles."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.llm.save_pretrained(str(out), safe_serialization=True)
        self._save_vision(out)
        save_config(SavedImageQa(model=self.saved_config(), prompt=dataclasses.asdict(self.prompt),
                                 format_version=FORMAT_VERSION), out / "config.yaml")
        return out

    def saved_config(self) -> ImageQaConfig:
        """The config a saved adapter is rebuilt from: the encoder's real architecture, and
        no init folders (their weights are in ``vision.safetensors``)."""
        name, kwargs = encoder_arch(self.cfg)
        return dataclasses.replace(self.cfg, image_encoder=name, encoder_kwargs=kwargs,
                                   image_encoder_init=None, projector_init=None)

    def _save_vision(self, out: Path) -> None:
        from safetensors.torch import save_file

        state = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        state |= {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        tmp = out / f".vision.{os.getpid()}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
        os.replace(tmp, out / "vision.safetensors")

    def _load_vision(self, folder: Path, state: dict | None = None) -> None:
        from ecgqa.models.encoders.checkpoint import state_mismatch

        path = folder / "vision.safetensors"
        state = read_vision(path) if state is None else state
        for name in ("encoder", "projector"):
            part = _part(state, name)
            module = getattr(self, name)
            why = state_mismatch(module.state_dict(), part)
            if why:
                raise ConfigError(f"{path}: the {name} weights do not fit model.{name} in "
                                  f"config.yaml: {why}")
            module.load_state_dict(part)



@dataclass
class SavedImageQa:
    model: ImageQaConfig
    prompt: dict
    format_version: int = FORMAT_VERSION


def shipped_image_adapter(error: type[EcgqaError] = ConfigError) -> Path:
    """:data:`SHIPPED_IMAGE_ADAPTER`, or ``error`` (one line) when a broken install lacks it."""
    if not (SHIPPED_IMAGE_ADAPTER / "adapter_config.json").is_file():
        raise error(f"{SHIPPED_IMAGE_ADAPTER}: the shipped image adapter is missing (a broken "
                    "install); give --adapter DIR, a train-lora adapter")
    return SHIPPED_IMAGE_ADAPTER


def resolve_image_adapter(source: str | os.PathLike) -> Path:
    """The folder of a saved LoRA image adapter: ``"image"`` or ``"default"`` name the
    shipped one (:data:`SHIPPED_IMAGE_ADAPTER`), anything else is a path."""
    return SHIPPED_IMAGE_ADAPTER if str(source) in IMAGE_ADAPTER_NAMES else expand_path(source)


def load_saved_config(folder: Path) -> tuple[ImageQaConfig, ImagePrompt]:
    """The model config and prompt of a saved LoRA adapter's ``config.yaml``, checked.

    Raises:
        ConfigError: naming the file: missing, not YAML, or values the model cannot take.
    """
    if not (folder / "config.yaml").is_file() or not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{folder}: no config.yaml + adapter_config.json (not a saved "
                          "ecgqa LoRA adapter)")
    path = folder / "config.yaml"
    data = parse_yaml(read_text(path), str(path))
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ConfigError(f"{path}: expected the mappings 'model' and 'prompt' written by "
                          "save_pretrained")
    try:
        cfg = from_dict(ImageQaConfig, data["model"], "model.")
        validate_model(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return cfg, ImagePrompt.from_dict(data.get("prompt"), f"{path} prompt")


def read_vision(path: Path) -> dict[str, torch.Tensor]:
    """``vision.safetensors``: the image encoder's and the projector's tensors only."""
    from ecgqa.models.encoders.checkpoint import read_safetensors

    state = read_safetensors(path, ConfigError)
    odd = [k for k in state if not k.startswith(("encoder.", "projector."))]
    if odd:
        raise ConfigError(f"{path}: tensor {short(odd[0])} is neither the image encoder's "
                          "nor the projector's")
    return state


def _part(state: dict, name: str) -> dict:
    return {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(name + ".")}


def _fitting(build, vision: tuple[dict, Path] | None, name: str) -> nn.Module:
    """``build()``, checked against the saved weights of ``name`` when there are some."""
    if vision is None:
        return build()
    from ecgqa.models.encoders.checkpoint import build_fitting

    state, path = vision
    return build_fitting(build, _part(state, name), path, ConfigError, prefixes=False,
                         what=f"model.{name} in config.yaml")

