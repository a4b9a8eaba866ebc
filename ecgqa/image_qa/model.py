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

from ecgqa.config import (
    ConfigError,
    expand_path,
    field,
    from_dict,
    parse_yaml,
    read_text,
    save_config,
    short,
)
from ecgqa.errors import EcgqaError
from ecgqa.image_qa.encoders import ConvImageEncoder  # noqa: F401 - registers the encoders
from ecgqa.image_qa.warmstart import encoder_arch, initial_weights, load_initial
from ecgqa.models.fusion import pad_embeddings, pad_scores
from ecgqa.models.llm import LlmConfig, load_llm
from ecgqa.models.projectors import build_projector
from ecgqa.registry import IMAGE_ENCODERS, PROJECTORS

FORMAT_VERSION = 1
MARKER = "<image>"
DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "prompts" / "image_qa.yaml"
SHIPPED_IMAGE_ADAPTER = Path(__file__).resolve().parents[1] / "assets" / "adapter-image"
IMAGE_ADAPTER_NAMES = ("image", "default")     # names of the shipped image adapter
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NEVER_ADAPTED = ("lm_head", "embed_tokens")


@dataclass
class LoraSettings:
    rank: int = field(8, help="LoRA rank r")
    alpha: float = field(16.0, help="LoRA alpha (scale alpha / r)")
    dropout: float = field(0.05, help="dropout on the LoRA input")
    target_modules: list[str] = field(LORA_TARGETS, help="module names that get an adapter "
                                      "(attention and MLP projections; never lm_head or "
                                      "embed_tokens)")


@dataclass
class ImageQaConfig:
    llm: LlmConfig = field(LlmConfig(), help="the language model (frozen base, LoRA on top)")
    image_size: list[int] = field([256, 512], help="[height, width] images are resized to")
    image_encoder: str = field("cnn", help="registered image encoder (cnn)")
    encoder_kwargs: dict = field({}, help="image encoder arguments (widths, out_dim)")
    projector: str = field("attention", help="linear, mlp, attention or qformer")
    projector_kwargs: dict = field({}, help="extra projector arguments (dim, heads, ...)")
    n_image_tokens: int = field(16, help="image tokens spliced into the prompt")
    lora: LoraSettings = field(LoraSettings(), help="the LoRA adapter on the LLM")
    image_encoder_init: str | None = field(None, help="folder written by `ecgqa encoder "
                                           "distill-image`: the image encoder's architecture "
                                           "(image_encoder, encoder_kwargs) and first weights "
                                           "come from it (the saved adapter keeps the weights)")
    freeze_encoder: bool = field(False, help="keep the image encoder's weights as they start "
                                 "(a distilled encoder); the projector still trains with "
                                 "train_vision")
    projector_init: str | None = field(None, help="a train-meta adapter ('default', "
                                       "'heldout' or a folder) whose projector starts this "
                                       "one: with a distilled encoder, the signal path's "
                                       "projector reads image tokens as it reads signal "
                                       "tokens; projector, projector_kwargs and "
                                       "n_image_tokens must match the adapter's")
    train_vision: bool = field(True, help="train the image encoder and projector too (needed "
                               "when they start random); false: LoRA weights only")
    hf_multimodal: str | None = field(None, help="local folder of a LLaVA or Mllama model: its "
                                      "own vision tower and processor replace the small "
                                      "encoder (llm.dtype/quantization still apply)")
    prompt_file: str | None = field(None, help="prompt YAML (default prompts/image_qa.yaml)")
    score_normalise: str = field("mean", help="option scores: mean (length-normalised) or sum "
                                 "of token log-probabilities")
    max_new_tokens: int = field(24, help="generation length limit")


def validate_model(cfg: ImageQaConfig) -> None:
    """Check values that would fail late, before any model is loaded."""
    if len(cfg.image_size) != 2 or min(cfg.image_size) < 8:
        raise ConfigError(f"model.image_size {cfg.image_size}: give [height, width], each >= 8")
    if cfg.hf_multimodal is None and cfg.image_encoder not in IMAGE_ENCODERS:
        raise ConfigError(f"model.image_encoder {cfg.image_encoder!r}: use one of "
                          f"{', '.join(IMAGE_ENCODERS.names())}")
    if cfg.hf_multimodal is None and cfg.projector not in PROJECTORS:
        raise ConfigError(f"model.projector {cfg.projector!r}: use one of "
                          f"{', '.join(PROJECTORS.names())}")
    if cfg.hf_multimodal is not None and not (expand_path(cfg.hf_multimodal)
                                              / "config.json").is_file():
        raise ConfigError(f"model.hf_multimodal {cfg.hf_multimodal}: no config.json there; "
                          "give a local LLaVA / Mllama folder saved with save_pretrained")
    bad = [t for t in cfg.lora.target_modules if t.split(".")[-1] in NEVER_ADAPTED]
    if bad:
        raise ConfigError(f"model.lora.target_modules {bad}: lm_head and embed_tokens stay "
                          "frozen without adapters; remove them")
    if not cfg.lora.target_modules or cfg.lora.rank < 1 or not 0 <= cfg.lora.dropout < 1:
        raise ConfigError("model.lora needs target_modules, rank >= 1 and 0 <= dropout < 1")
    if cfg.score_normalise not in ("mean", "sum"):
        raise ConfigError("model.score_normalise must be mean or sum")
    if cfg.n_image_tokens < 1:
        raise ConfigError("model.n_image_tokens must be >= 1")
    if cfg.hf_multimodal is not None and (cfg.image_encoder_init or cfg.projector_init):
        raise ConfigError("model.image_encoder_init / projector_init are for the small "
                          "encoder; a model.hf_multimodal folder brings its own vision tower")


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class ImagePrompt:
    """The prompt YAML: first turn (with the image slot), later turns, answer format."""

    first: str
    next: str
    system: str = ""
    answer: str = " {answer}"

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> ImagePrompt:
        p = Path(path) if path else DEFAULT_PROMPTS
        return cls.from_dict(parse_yaml(read_text(p), str(p)), str(p))

    @classmethod
    def from_dict(cls, data, where: str) -> ImagePrompt:
        """The prompt from a mapping of texts (``first``, ``next``, ``system``, ``answer``);
        anything else is a :class:`ConfigError` naming ``where``."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not {"first", "next"} <= set(data) or any(
                k not in names or not isinstance(v, str) for k, v in data.items()):
            raise ConfigError(f"{where}: a prompt needs the texts 'first' and 'next' (and "
                              "optionally 'system', 'answer')")
        out = cls(**data)
        if out.first.count(MARKER) != 1:
            raise ConfigError(f"{where}: 'first' must hold {MARKER} exactly once")
        return out

    def turn_text(self, question: str, index: int) -> str:
        body = self.first if index == 0 else self.next
        question = " ".join(question.replace(MARKER, " ").split())
        return body.replace("{system}", self.system).replace("{question}", question)

    def answer_text(self, answer: str | Sequence[str]) -> str:
        return self.answer.replace("{answer}", answer if isinstance(answer, str)
                                   else ", ".join(answer))


@dataclass(frozen=True)
class Conversation:
    """Token ids of one conversation: the image goes between ``pieces[0]`` and ``pieces[1]``;
    ``targets[i]`` says whether piece ``i`` is an answer (trained on)."""

    pieces: tuple[tuple[int, ...], ...]
    targets: tuple[bool, ...]


def encode_conversation(prompt: ImagePrompt, tokenizer, turns: Sequence[tuple[str, str | None]]
                        ) -> Conversation:
    """Tokenise ``(human, gpt)`` turns; a last answer of None leaves the prompt open."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    pieces, targets = [], []
    for i, (human, answer) in enumerate(turns):
        text = prompt.turn_text(human, i)
        parts = text.split(MARKER) if i == 0 else [text]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in parts]
        if i == 0:
            ids[0] = bos + ids[0]
        pieces += ids
        targets += [False] * len(ids)
        if answer is not None:
            pieces.append(encode_answer(prompt, tokenizer, answer))
            targets.append(True)
    return Conversation(tuple(tuple(p) for p in pieces), tuple(targets))


def encode_answer(prompt: ImagePrompt, tokenizer, answer: str | Sequence[str]) -> list[int]:
    """Answer tokens followed by EOS."""
    ids = tokenizer(prompt.answer_text(answer), add_special_tokens=False)["input_ids"]
    return list(ids) + [tokenizer.eos_token_id]


# --------------------------------------------------------------------------- image side


def load_image(image):
    """A PIL image, or a path to one, as RGB."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                return im.convert("RGB")
        except Exception as err:   # noqa: BLE001 - Pillow's decoders raise OSError,
            # ValueError, SyntaxError, DecompressionBombError ... on a bad file
            why = " ".join(str(err).split())[:200] or type(err).__name__
            raise ConfigError(f"{image}: cannot read image ({why})") from None
    return image.convert("RGB")


def preprocess(images: Sequence, size: Sequence[int]) -> torch.Tensor:
    """PIL images (or paths) -> ``(B, 3, H, W)`` float in [-1, 1], resized to ``size``."""
    import numpy as np
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    out = []
    for im in images:
        arr = np.asarray(load_image(im).resize((w, h), Image.BILINEAR), dtype=np.float32)
        out.append(torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0)   # (3, H, W)
    return torch.stack(out)


# --------------------------------------------------------------------------- LoRA


def add_lora(llm: nn.Module, settings: LoraSettings, target_modules=None,
             modules_to_save=None):
    """Wrap ``llm`` with a fresh peft LoRA adapter; nothing on lm_head / embed_tokens.

    Args:
        target_modules: module names or a regex (default ``settings.target_modules``).
        modules_to_save: whole modules trained and saved with the adapter.
    """
    from peft import LoraConfig, get_peft_model

    conf = LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                      lora_dropout=settings.dropout, task_type="CAUSAL_LM", bias="none",
                      target_modules=target_modules or list(settings.target_modules),
                      modules_to_save=modules_to_save)
    model = get_peft_model(llm, conf)
    check_lora_placement(model)
    return model


def lora_module_names(model: nn.Module) -> list[str]:
    """Names of modules that carry a LoRA adapter."""
    from peft.tuners.lora import LoraLayer

    return [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def check_lora_placement(model: nn.Module) -> None:
    names = lora_module_names(model)
    if not names:
        raise ConfigError("model.lora.target_modules matched no module of the LLM; use names "
                          "such as q_proj, v_proj, gate_proj")
    bad = [n for n in names if any(part in NEVER_ADAPTED for part in n.split("."))]
    if bad:
        raise ConfigError(f"LoRA on {bad[0]}: lm_head and embed_tokens must stay without "
                          "adapters")


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
        trainable = not _inference_mode(llm)        # False: loaded for inference only
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
            from ecgqa.image_qa.hf_multimodal import HfImageQaModel

            return HfImageQaModel.build(cfg, adapter, trainable)
        init = None if vision is not None else initial_weights(cfg)     # checked first
        llm, tok = load_llm(cfg.llm)
        name, kwargs = encoder_arch(cfg)
        encoder = _fitting(lambda: IMAGE_ENCODERS.build(name, **kwargs), vision, "encoder")
        projector = _fitting(lambda: build_projector(
            cfg.projector, d_enc=encoder.out_dim, d_llm=llm.config.hidden_size,
            n_tokens=cfg.n_image_tokens, **cfg.projector_kwargs), vision, "projector")
        if init is not None:
            load_initial(encoder, projector, *init)
        llm = _wrap_lora(llm, cfg, adapter, trainable)
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
        state = _read_vision(path) if state is None else state
        for name in ("encoder", "projector"):
            part = _part(state, name)
            module = getattr(self, name)
            why = state_mismatch(module.state_dict(), part)
            if why:
                raise ConfigError(f"{path}: the {name} weights do not fit model.{name} in "
                                  f"config.yaml: {why}")
            module.load_state_dict(part)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, trainable: bool = False,
                        **llm_overrides) -> ImageQaModel:
        """Rebuild from a folder written by :meth:`save_pretrained` alone: the base LLM from
        the saved config, then the peft adapter (``PeftModel.from_pretrained``); in eval
        mode and frozen unless ``trainable``."""
        from ecgqa.models.fusion import check_saved_llm

        folder = resolve_image_adapter(folder)
        cfg, prompt = load_saved_config(folder)
        if llm_overrides:
            cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, **llm_overrides))
        check_saved_llm(cfg.llm, folder / "config.yaml", ConfigError)
        check_adapter_files(folder, cfg)
        vision = None
        if cfg.hf_multimodal is None:
            vision = _read_vision(folder / "vision.safetensors")
        try:
            model = cls.build(cfg, adapter=folder, trainable=trainable,
                              vision=None if vision is None else (vision,
                                                                  folder / "vision.safetensors"))
        except EcgqaError:
            raise
        except (ValueError, TypeError, LookupError, AttributeError, RuntimeError) as err:
            # peft and transformers on an adapter_config.json or weights they cannot use
            why = " ".join(str(err).split())[:200] or type(err).__name__
            raise ConfigError(f"{folder}: cannot build the saved model or its LoRA adapter "
                              f"({why})") from None
        model.prompt = prompt
        if cfg.hf_multimodal is None:
            model._load_vision(folder, vision)
        elif (folder / "vision.safetensors").exists():
            model._load_vision(folder)
        return model.train(trainable)


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


def _read_vision(path: Path) -> dict[str, torch.Tensor]:
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


MAX_LORA_RANK = 4096


def check_adapter_files(folder: Path, cfg: ImageQaConfig) -> None:
    """What peft will read, checked first: ``adapter_config.json`` is a LoRA config whose
    rank its weights have, and the weights are ``adapter_model.safetensors`` (a pickled
    ``adapter_model.bin`` is never loaded)."""
    from ecgqa.models.encoders.checkpoint import read_json, read_safetensors

    path = folder / "adapter_config.json"
    conf = read_json(path, ConfigError)
    if not isinstance(conf, dict) or conf.get("peft_type") != "LORA":
        raise ConfigError(f"{path}: not a peft LoRA config (peft_type must be LORA)")
    rank = conf.get("r")
    if type(rank) is not int or not 1 <= rank <= MAX_LORA_RANK:
        raise ConfigError(f"{path}: r must be a rank in 1..{MAX_LORA_RANK}, got {short(rank)}")
    for key in ("rank_pattern", "alpha_pattern", "layer_replication"):
        if conf.get(key):
            raise ConfigError(f"{path}: {key} is not supported by ecgqa's LoRA adapters")
    weights = folder / "adapter_model.safetensors"
    if not weights.exists() and not weights.is_symlink():
        raise ConfigError(f"{weights}: missing (peft's pickled adapter_model.bin is never "
                          "loaded; save the adapter with safe_serialization)")
    state = read_safetensors(weights, ConfigError)
    bad = [k for k, v in state.items() if k.endswith("lora_A.weight")
           and (v.dim() != 2 or v.shape[0] != rank)]
    if bad or not state:
        raise ConfigError(f"{weights}: its LoRA weights do not have rank r={rank} of "
                          f"adapter_config.json{f' (e.g. {short(bad[0])})' if bad else ''}")


def _wrap_lora(llm, cfg: ImageQaConfig, adapter, trainable: bool, target_modules=None,
               modules_to_save=None):
    if cfg.llm.quantization not in (None, "none") and trainable:
        # on the CPU, load_llm has made the bitsandbytes layers de-quantise per call
        # (ecgqa.models.quantized), so gradients reach the LoRA weights exactly
        from peft import prepare_model_for_kbit_training

        llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=False)
    if adapter is None:
        return add_lora(llm, cfg.lora, target_modules, modules_to_save)
    from peft import PeftModel

    model = PeftModel.from_pretrained(llm, str(adapter), is_trainable=trainable)
    check_lora_placement(model)
    return model


def _inference_mode(llm) -> bool:
    """Whether the peft adapter was loaded for inference only (``is_trainable=False``)."""
    conf = getattr(llm, "peft_config", {}).get("default")
    return bool(getattr(conf, "inference_mode", False))
