"""The virtual-device mode itself: it must flag host/device mixes that a GPU rejects, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BatchEncoding, BertConfig, BertModel, T5Config, T5ForConditionalGeneration

from virtual_device import DeviceMismatch, VirtualDevice

DEVICE = torch.device("cpu")  # the stand-in for the model's device


@pytest.fixture(scope="module")
def bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    return BertModel(config).eval()


@pytest.fixture(scope="module")
def t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)
    return T5ForConditionalGeneration(config).eval()


def _batch() -> dict[str, torch.Tensor]:
    input_ids = torch.randint(1, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, 5:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def test_linear_flags_host_input_and_accepts_moved_input() -> None:
    linear = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with VirtualDevice(linear) as vd:
        with pytest.raises(DeviceMismatch, match=r"linear.*\(3, 4\).*host tensors \(2, 4\)"):
            linear(x)
        moved = x.to(DEVICE)
        assert vd.on_device(moved) and not vd.on_device(x)  # the move copies; x itself stays on the host
        assert moved is not x
        y = linear(moved)
        assert vd.on_device(y)
        result = y.detach().cpu().numpy()
        assert not vd.on_device(y.cpu()) and vd.on_device(y)
        assert y.detach().tolist() == result.tolist()
        with pytest.raises(DeviceMismatch, match="numpy"):
            y.detach().numpy()  # a CUDA tensor cannot become a numpy array without .cpu()
        with pytest.raises(DeviceMismatch):
            np.asarray(y.detach())
        assert isinstance(y.sum().item(), float)
    np.testing.assert_allclose(result, (x @ linear.weight.T + linear.bias).detach().numpy(), rtol=1e-6)
    linear(x)  # the mode is gone after exit


def test_where_with_host_mask_raises_and_device_mask_passes() -> None:
    weights = torch.nn.Linear(3, 3)
    with VirtualDevice(weights) as vd:
        scores = weights(torch.eye(3).to(DEVICE))
        with pytest.raises(DeviceMismatch, match="where"):
            torch.where(torch.tensor([True, False, True]), scores, 0.0)
        mask = torch.tensor([True, False, True], device=DEVICE)
        assert vd.on_device(torch.where(mask, scores, 0.0))
        assert vd.on_device(torch.where(scores > 0, scores, torch.zeros_like(scores)))
        with pytest.raises(DeviceMismatch):
            torch.where(scores > 0, scores, torch.zeros(3, 3))


def test_zero_dim_host_scalars_mix_with_device_tensors_but_not_the_reverse() -> None:
    linear = torch.nn.Linear(2, 2)
    with VirtualDevice(linear) as vd:
        assert vd.on_device(torch.tensor(2.0) * linear.weight)
        assert vd.on_device(linear.weight + torch.tensor(1.0))
        with pytest.raises(DeviceMismatch):
            torch.ones(2, 2) * linear.bias[0]  # a 0-dim CUDA tensor is no scalar for a CPU op
        with pytest.raises(DeviceMismatch):
            torch.tensor(0.0).add_(linear.bias.sum())  # writing device results into a host tensor


def test_setitem_and_indexing_rules() -> None:
    linear = torch.nn.Linear(2, 4)
    with VirtualDevice(linear) as vd:
        device_t = linear.bias.detach().clone()
        host_mask = torch.tensor([True, False, True, False])
        with pytest.raises(DeviceMismatch, match="__setitem__"):
            device_t[host_mask] = torch.ones(2)
        with pytest.raises(DeviceMismatch, match="__setitem__"):
            torch.zeros(4)[torch.tensor([0, 1])] = device_t[:2]
        with pytest.raises(DeviceMismatch, match="device indices"):
            torch.zeros(4)[device_t > 0]
        device_t[host_mask] = 0.0  # CUDA accepts host index tensors and Python or 0-dim values
        device_t[torch.tensor([1, 3])] = torch.tensor(5.0)
        assert vd.on_device(device_t[host_mask]) and device_t.tolist()[::2] == [0.0, 0.0]
        with pytest.raises(DeviceMismatch, match="add_"):
            device_t.add_(torch.ones(4))
        device_t.copy_(torch.ones(4))  # copies across devices are allowed
        assert vd.on_device(device_t)


def test_tags_follow_views_containers_factories_and_moves() -> None:
    linear = torch.nn.Linear(3, 4)
    with VirtualDevice(linear, raise_on_mismatch=False) as vd:
        weight = linear.weight
        assert vd.on_device(weight.T) and vd.on_device(weight.view(-1)[2:]) and vd.on_device(weight.data)
        values, indices = torch.max(weight, dim=1)
        assert vd.on_device(values) and vd.on_device(indices)
        assert all(vd.on_device(part) for part in torch.split(weight, 2))
        assert not vd.on_device(torch.zeros(3)) and vd.on_device(torch.zeros(3, device=DEVICE))
        assert vd.on_device(torch.zeros_like(weight)) and not vd.on_device(torch.ones_like(torch.ones(2)))
        assert vd.on_device(torch.ones_like(torch.ones(2), device=DEVICE)) and vd.on_device(weight.new_zeros(2))
        assert not vd.on_device(torch.arange(3)) and vd.on_device(torch.arange(3, device=DEVICE))
        assert not vd.on_device(torch.tensor([v for v in weight[0].detach()]))  # built from 0-dim items, as on CUDA
        assert vd.on_device(torch.ones(2).to("cpu"))  # any explicit device is the model's: use .cpu() instead
        assert not vd.on_device(torch.ones(2).to(torch.float64)) and vd.on_device(weight.to(torch.float64))
        assert vd.on_device(torch.ones(2).to(weight)) and vd.on_device(torch.ones(2).type_as(weight))
        assert vd.on_device(torch.ones(2).cuda())
        batch = BatchEncoding(_batch()).to(DEVICE)
        assert all(vd.on_device(t) for t in batch.values())
        host = torch.ones(4)
        vd.place({"cached": host})
        assert vd.on_device(host)
        assert vd.mismatches == []
        torch.cat([weight[0], torch.ones(3)])
        weight.sum() * torch.ones(2)
    assert len(vd.mismatches) == 2 and "cat" in vd.mismatches[0] and "mul" in vd.mismatches[1]


def test_bert_forward_is_clean_with_moved_inputs_and_flags_host_inputs(bert: BertModel) -> None:
    batch = _batch()
    with VirtualDevice(bert) as vd:
        moved = BatchEncoding(batch).to(DEVICE)
        hidden = bert(**moved, output_hidden_states=True, output_attentions=True)
        assert all(vd.on_device(h) for h in (hidden.last_hidden_state, hidden.pooler_output, *hidden.hidden_states))
        scores = hidden.pooler_output[:, 0].detach().cpu().numpy()
        with pytest.raises(DeviceMismatch, match="embedding"):
            bert(**batch)
        with pytest.raises(DeviceMismatch, match="embedding"):
            bert(input_ids=moved["input_ids"], token_type_ids=torch.zeros(2, 7, dtype=torch.long))
    np.testing.assert_allclose(scores, bert(**batch).pooler_output[:, 0].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_bert_patching_hook_must_move_cached_activations(bert: BertModel) -> None:
    batch = _batch()
    cached = bert.encoder.layer[0].output.dense(torch.randn(2, 7, 64)).detach()  # made outside: host

    def patch(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, 1] = replacement[:, 1]
        return output

    handle = bert.encoder.layer[0].output.dense.register_forward_hook(patch)
    try:
        with VirtualDevice(bert):
            moved = {k: v.to(DEVICE) for k, v in batch.items()}
            replacement = cached
            with pytest.raises(DeviceMismatch, match="__setitem__"):
                bert(**moved)
            replacement = cached.to(DEVICE)
            bert(**moved)
    finally:
        handle.remove()


def test_t5_forward_is_clean_with_moved_inputs_and_flags_host_inputs(t5: T5ForConditionalGeneration) -> None:
    batch = {**_batch(), "decoder_input_ids": torch.zeros(2, 3, dtype=torch.long)}
    with VirtualDevice(t5) as vd:
        moved = {k: v.to(DEVICE) for k, v in batch.items()}
        out = t5(**moved)
        assert vd.on_device(out.logits) and vd.on_device(out.encoder_last_hidden_state)
        logits = out.logits.log_softmax(-1)[:, -1, :5].detach().cpu().numpy()
        labels = torch.randint(1, 100, (2, 3)).to(DEVICE)
        assert vd.on_device(t5(input_ids=moved["input_ids"], labels=labels).loss)
        with pytest.raises(DeviceMismatch, match="embedding"):
            t5(**batch)
        with pytest.raises(DeviceMismatch, match=r"embedding.*host tensors \(2, 3\)"):
            t5(input_ids=moved["input_ids"], decoder_input_ids=batch["decoder_input_ids"])
    expected = t5(**batch).logits.log_softmax(-1)[:, -1, :5].detach().numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
