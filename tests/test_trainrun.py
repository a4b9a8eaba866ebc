"""What the two training recipes share: tracker options, and gradients added across processes
in task order (the same bits whatever the number of processes)."""

from __future__ import annotations

import json
import sys
import threading
import types

import pytest
import torch
from torch import nn

from ecgqa.config import ConfigError
from ecgqa.trainrun import (
    REPORT_TO,
    flat_gradients,
    flatten_config,
    gather_tasks,
    init_trackers,
    make_accelerator,
    ordered_sum,
    set_gradients,
    sum_across,
    validate_report_to,
    wandb_mode,
)

# --------------------------------------------------------------------------- report_to


@pytest.mark.parametrize("value", ["wandb", "none"])
def test_known_trackers_pass(value):
    validate_report_to(value)


@pytest.mark.parametrize("value", ["mlflow", "WandB", "", "tensorboard "])
def test_unknown_trackers_name_the_choices(value):
    with pytest.raises(ConfigError, match="use one of wandb, tensorboard, none"):
        validate_report_to(value)


def test_tensorboard_needs_tensorboard_or_tensorboardx(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)      # None: `import` fails
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        validate_report_to("tensorboard")
    monkeypatch.setitem(sys.modules, "tensorboardX", types.ModuleType("tensorboardX"))
    validate_report_to("tensorboard")                          # either one will do
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "tensorboard", types.ModuleType("tensorboard"))
    validate_report_to("tensorboard")
    assert REPORT_TO == ("wandb", "tensorboard", "none")


# --------------------------------------------------------------------------- wandb mode


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home folder without a .netrc and no WANDB_* settings."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    return tmp_path


def _netrc(home, text, mode=0o600):
    f = home / ".netrc"
    f.write_text(text)
    f.chmod(mode)


def test_wandb_is_offline_unless_logged_in(home):
    assert wandb_mode() == "offline"
    _netrc(home, "machine example.org login me password secret\n")
    assert wandb_mode() == "offline"


def test_a_wandb_login_in_netrc_or_the_environment_means_online(home, monkeypatch):
    _netrc(home, "machine api.wandb.ai login user password 0123abcd\n")
    assert wandb_mode() == "online"
    (home / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0123abcd")
    assert wandb_mode() == "online"


def test_wandb_mode_in_the_environment_wins(home, monkeypatch):
    _netrc(home, "machine api.wandb.ai login user password 0123abcd\n")
    monkeypatch.setenv("WANDB_API_KEY", "0123abcd")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    monkeypatch.setenv("WANDB_MODE", "")                # empty counts as unset
    assert wandb_mode() == "online"


def test_an_unreadable_or_malformed_netrc_is_no_login(home):
    _netrc(home, "machine api.wandb.ai login user bogus 0123abcd\n")      # not netrc syntax
    assert wandb_mode() == "offline"
    # Python refuses a netrc with a password that others can read: no login either
    _netrc(home, "machine api.wandb.ai login user password 0123abcd\n", mode=0o644)
    assert wandb_mode() == "offline"
    (home / ".netrc").unlink()
    (home / ".netrc").mkdir()                                             # not a file
    assert wandb_mode() == "offline"


def test_a_netrc_entry_without_an_api_key_is_no_login(home):
    _netrc(home, "machine api.wandb.ai login user\n")
    assert wandb_mode() == "offline"


def test_a_default_netrc_entry_is_no_wandb_login(home):
    _netrc(home, "default login me password secret\n")
    assert wandb_mode() == "offline"
    _netrc(home, "machine example.org login me password secret\n"
                 "machine api.wandb.ai login user password 0123abcd\n"
                 "default login me password secret\n")
    assert wandb_mode() == "online"


def test_a_wandb_server_of_ones_own_is_read_from_wandb_base_url(home, monkeypatch):
    _netrc(home, "machine wandb.example.org login user password 0123abcd\n")
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_mode() == "online"


# --------------------------------------------------------------------------- flatten_config


def test_flatten_config_dots_nested_sections_and_keeps_scalars():
    cfg = {"model": {"llm": {"source": "tiny-llama", "tiny_layers": 2, "dtype": None},
                     "projector": "attention", "measurements": False},
           "meta": {"inner_lr": 0.05}, "seed": 0}
    assert flatten_config(cfg) == {
        "model.llm.source": "tiny-llama", "model.llm.tiny_layers": 2, "model.llm.dtype": None,
        "model.projector": "attention", "model.measurements": False,
        "meta.inner_lr": 0.05, "seed": 0}


def test_flatten_config_writes_other_values_as_json():
    cfg = {"model": {"encoder_kwargs": {}, "widths": [8, 16], "blocks": (1, 1),
                     "by_id": {1: "a"}, "nested": [{"a": 1}]}}
    flat = flatten_config(cfg)
    assert set(flat) == {f"model.{k}" for k in cfg["model"]}
    assert all(isinstance(v, str) for v in flat.values())
    assert json.loads(flat["model.encoder_kwargs"]) == {}          # an empty section
    assert json.loads(flat["model.widths"]) == [8, 16]
    assert json.loads(flat["model.blocks"]) == [1, 1]
    assert json.loads(flat["model.by_id"]) == {"1": "a"}           # non-text keys: JSON
    assert json.loads(flat["model.nested"]) == [{"a": 1}]


def test_flatten_config_of_a_real_run_config_gives_tracker_values():
    """The meta trainer flattens ``dataclasses.asdict`` of its config; every value must be
    a scalar or JSON text (what wandb and tensorboard accept)."""
    import dataclasses

    from ecgqa.config import load_config
    from ecgqa.models.fusion import ModelConfig
    from tests.conftest import ROOT

    cfg = load_config(ModelConfig, ROOT / "configs" / "model" / "tiny.yaml", [])
    flat = flatten_config({"model": dataclasses.asdict(cfg)})
    assert flat["model.llm.source"] == "tiny-llama" and flat["model.projector"] == "attention"
    assert flat["model.projector_kwargs.dim"] == 16
    assert json.loads(flat["model.encoder_kwargs.widths"]) == [8, 8, 16, 16]
    for key, value in flat.items():
        assert isinstance(value, (int, float, str, bool, type(None))), key


# --------------------------------------------------------------------------- gradients


def _params():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
    return list(net.parameters())


def test_flat_gradients_and_set_gradients_round_trip():
    params = _params()
    sum(p.sum() * (i + 1) for i, p in enumerate(params)).backward()
    flat = flat_gradients(params)
    assert flat.shape == (sum(p.numel() for p in params),)
    i = 0
    for k, p in enumerate(params):                       # parameter order, row-major
        assert torch.equal(flat[i: i + p.numel()], torch.full((p.numel(),), float(k + 1)))
        i += p.numel()
    new = torch.randn_like(flat)
    set_gradients(params, new)
    assert torch.equal(flat_gradients(params), new)
    new.zero_()                                          # the gradients are copies
    assert flat_gradients(params).abs().max() > 0


def test_a_missing_gradient_counts_as_zeros():
    params = _params()
    params[0].sum().backward()
    flat = flat_gradients(params)
    n0 = params[0].numel()
    assert torch.equal(flat[:n0], torch.ones(n0)) and not flat[n0:].any()


def test_set_gradients_casts_to_each_parameters_dtype():
    params = [nn.Parameter(torch.zeros(2, 2, dtype=torch.bfloat16)), nn.Parameter(torch.zeros(3))]
    set_gradients(params, torch.arange(7, dtype=torch.float64))
    assert params[0].grad.dtype == torch.bfloat16 and params[1].grad.dtype == torch.float32
    assert params[0].grad.tolist() == [[0, 1], [2, 3]] and params[1].grad.tolist() == [4, 5, 6]


def test_set_gradients_refuses_a_vector_of_another_size():
    params = _params()
    total = sum(p.numel() for p in params)
    for flat in (torch.zeros(total - 1), torch.zeros(total + 1), torch.zeros(1, total)):
        with pytest.raises(ValueError, match=f"parameters of {total} values"):
            set_gradients(params, flat)
    assert all(p.grad is None for p in params)


def test_ordered_sum_adds_rows_one_at_a_time_in_float64():
    # 1 + 2**-24 + 2**-24 is 1 in float32 added pairwise left to right, but 1 + 2**-23 in
    # float64, which float32 represents exactly: the sum is done in float64, then cast.
    rows = torch.tensor([[1.0], [2.0 ** -24], [2.0 ** -24]], dtype=torch.float32)
    in_float32 = rows[0].clone()
    for row in rows[1:]:
        in_float32 += row
    assert in_float32.item() == 1.0                       # what float32 additions would give
    assert ordered_sum(rows).item() == 1.0 + 2.0 ** -23
    assert ordered_sum(rows).dtype == torch.float32
    assert torch.equal(ordered_sum(torch.zeros(0, 3)), torch.zeros(3))   # no tasks here
    x = torch.randn(5, 4, dtype=torch.float64)
    expected = x[0] + x[1] + x[2] + x[3] + x[4]           # the same additions in float64
    assert torch.equal(ordered_sum(x), expected)


# --------------------------------------------------------------------------- processes


def test_one_process_gathers_and_sums_its_own_rows(tmp_path):
    from accelerate.state import AcceleratorState

    cfg = types.SimpleNamespace(train=types.SimpleNamespace(report_to="none", out=str(tmp_path)))
    fresh = not AcceleratorState._shared_state
    acc = make_accelerator(cfg)
    try:
        assert acc.num_processes == 1 and str(acc.project_dir) == str(tmp_path)
        init_trackers(acc, "test", cfg)                   # report_to none: no tracker
        assert acc.trackers == [] and list(tmp_path.iterdir()) == []
        rows = torch.randn(3, 5)
        assert gather_tasks(acc, rows, 3) is rows
        assert sum_across(acc, rows) is rows
    finally:
        if fresh:
            AcceleratorState._reset_state(True)


class _Group:
    """``world`` threads standing in for processes: ``gather`` and ``reduce`` are the
    collectives (all-gather in rank order, all-reduce sum), the rest is accelerate's API."""

    def __init__(self, world: int):
        self.world = world
        self.barrier = threading.Barrier(world)
        self.slots: list = [None] * world

    def member(self, rank: int):
        group = self

        class _Acc:
            num_processes, process_index, device = group.world, rank, torch.device("cpu")

            def gather(self, t):
                return group._exchange(rank, t, torch.cat)

            def reduce(self, t, reduction):
                assert reduction == "sum"
                return group._exchange(rank, t, lambda ts: sum(ts[1:], ts[0].clone()))

        return _Acc()

    def _exchange(self, rank, t, combine):
        self.slots[rank] = t.clone()
        self.barrier.wait()                    # every member has put its tensor
        out = combine(list(self.slots))
        self.barrier.wait()                    # every member has read them all
        return out

    def run(self, fn):
        results: list = [None] * self.world
        errors: list = []

        def target(rank):
            try:
                results[rank] = fn(self.member(rank), rank)
            except BaseException as err:                  # noqa: BLE001 - re-raised below
                errors.append(err)
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        if errors:
            raise errors[0]
        return results


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("count", [1, 2, 5, 7, 8])
def test_tasks_gathered_from_every_process_come_back_in_task_order(world, count):
    """Process ``r`` runs tasks ``r, r + P, ...`` (none when ``r >= count``); every process
    gets all rows in task order, so ordered_sum gives one process's bits everywhere."""
    torch.manual_seed(count)
    tasks = torch.randn(count, 6)                         # row j: task j's gradient

    def step(acc, rank):
        mine = tasks[rank::world]                          # (my tasks, n), maybe (0, n)
        return gather_tasks(acc, mine, count)

    for got in _Group(world).run(step):
        assert torch.equal(got, tasks)
    single = ordered_sum(tasks)
    for got in _Group(world).run(lambda acc, rank: ordered_sum(
            gather_tasks(acc, tasks[rank::world], count))):
        assert torch.equal(got, single)


def test_sum_across_adds_every_process_value():
    got = _Group(3).run(lambda acc, rank: sum_across(acc, torch.tensor([1.0, rank])))
    for x in got:
        assert x.tolist() == [3.0, 3.0]
