"""Shard a frozen Hugging Face causal LM across processes with FSDP2 (memory, not speed).

Each process keeps ``1/world`` of every LLM weight and all-gathers a unit's weights just
before the unit runs (and again in backward, where the gradient flows through the frozen
weights to ``inputs_embeds`` and so to the projector). The projector is not sharded: it
stays replicated, and the trainer sums its gradients as before. Units::

    llm (root, no weights of its own)
      body = llm.<base_model_prefix>: final norm and whatever else is left
        each decoder layer (llm._no_split_modules)
      input embedding  \\ one unit when tied (lm_head.weight is embed_tokens.weight),
      lm_head          /  else one each

:class:`~ecgqa.models.fusion.EcgQaModel` calls the embedding, the body and the lm_head
directly (not ``llm.forward``); each is a unit, so each call unshards what it needs.

FSDP is SPMD: every process must call the units the same number of times in the same
order, or the collectives pair up wrongly (gloo aborts: "Is there a distributed collective
mismatch", NCCL hangs). The call sequence depends only on the episode's size (every
episode has the same number of support and query samples), not on its prompts: the
fusion model embeds a batch's text in one call whatever the number of pieces and ECGs,
the trainer gives every process the same number of episodes, and ``generate`` runs
synced (``synced_gpus``) until every process is done. Tensor shapes may differ.
Second-order meta-gradients (double backward) do not work: the graph of the inner
gradient holds LLM weights that FSDP has freed again (torch 2.14: a segfault).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ShardSummary:
    """What one process holds of the LLM after sharding."""

    local_bytes: int     # this process's shards
    total_bytes: int     # the whole LLM
    units: int           # fully_shard units (all-gathers per full forward, roughly)


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The LLM's repeated blocks: modules whose class is in ``llm._no_split_modules``."""
    names = set(getattr(llm, "_no_split_modules", None) or ())
    layers = [m for m in llm.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(llm).__name__}: no decoder layers found "
                         f"(_no_split_modules={sorted(names)})")
    return layers


def shard_frozen_llm(llm: nn.Module, mesh=None, reshard_after_forward: bool = True
                     ) -> ShardSummary:
    """Apply FSDP2 ``fully_shard`` to a frozen causal LM, in place.

    Args:
        llm: a ``transformers`` causal LM whose parameters all have ``requires_grad=False``.
        mesh: a 1-D ``DeviceMesh``, or a device (``"cpu"``, ``torch.device("cuda")``) for a
            mesh over the whole default process group (which must be initialised).
        reshard_after_forward: free the gathered weights after each unit's forward (and
            gather again in backward); ``False`` keeps them until the backward is done.

    Returns:
        The bytes this process holds, and the whole LLM's.

    Example:
        >>> summary = shard_frozen_llm(model.llm, "cpu")      # inside a gloo process group
    """
    from torch.distributed.fsdp import fully_shard

    trainable = [n for n, p in llm.named_parameters() if p.requires_grad]
    if trainable:
        raise ValueError(f"shard_frozen_llm shards frozen weights only; {trainable[0]} "
                         "requires grad (its gradient would not be reduced)")
    mesh = _mesh(mesh)
    total = sum(p.numel() * p.element_size() for p in llm.parameters())
    embed, head = llm.get_input_embeddings(), llm.get_output_embeddings()
    units = decoder_layers(llm)
    if head is not None and head.weight is embed.weight:     # tied: shard the weight once
        units.append([embed, head])
    else:
        units += [embed] + ([head] if head is not None else [])
    units += [getattr(llm, llm.base_model_prefix), llm]
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward)
    # FSDP2 makes the first unit to run forward the root; EcgQaModel calls the embedding
    # first, so initialise from the real root now (what its first forward would do).
    llm._get_fsdp_state()._lazy_init()
    llm._is_fsdp_managed_module = True    # transformers' generate then syncs the processes
    local = sum(p.to_local().numel() * p.element_size() for p in llm.parameters())
    return ShardSummary(local, total, len(units))


def _mesh(mesh):
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

    if isinstance(mesh, DeviceMesh):
        return mesh
    if not torch.distributed.is_initialized():
        raise RuntimeError("shard_frozen_llm needs an initialised process group "
                           "(launch with `accelerate launch` or torchrun)")
    device = torch.device(mesh if mesh is not None else "cpu")
    return init_device_mesh(device.type, (torch.distributed.get_world_size(),))
