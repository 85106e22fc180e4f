"""Training TopK SAEs: the activations it reads, a seed that fixes the result, a killed run that resumes to the
same SAE, the scale folded into the weights, quality figures measured right, and the command line."""

from __future__ import annotations

import json

import pytest
import torch

from mechir_axioms import MechirError, load_sae
from mechir_axioms.cli import main
from mechir_axioms.features import training
from mechir_axioms.features.activations import site_rows
from mechir_axioms.features.training import TrainingSettings, quality, train_sae

SITE = "blocks.1.hook_resid_post"
SMALL = TrainingSettings(latents=256, k=4, steps=6, batch_tokens=64, max_pairs=40, checkpoint_every=2, dead_tokens=1)
"""A latent silent for one batch is dead: AuxK runs from the first step, so a resumed run must restore the counts."""


@pytest.fixture(scope="module")
def ranker(tiny):
    return tiny("bert", "bi")[0]


def test_rows_are_the_unpadded_tokens_of_both_sides_of_a_two_tower_ranker(ranker):
    queries, documents = ["short query", "short query", "a longer query than the first"], ["one", "two words", "x"]
    rows = torch.cat(list(site_rows(ranker, SITE, queries, documents, batch_size=2)))
    document_tokens = int(ranker.tokenize(queries, documents).tokens["attention_mask"].sum())
    distinct = list(dict.fromkeys(queries))
    query_tokens = int(ranker.tokenize(distinct, [""] * len(distinct)).query_tokens["attention_mask"].sum())
    assert rows.shape == (document_tokens + query_tokens, ranker.model.config.hidden_size)


def test_rows_of_a_cross_encoder_are_its_joint_inputs(tiny):
    cross = tiny("bert", "cross")[0]
    queries, documents = ["a query", "another query here"], ["its passage", "a much longer passage than that"]
    rows = torch.cat(list(site_rows(cross, SITE, queries, documents)))
    assert len(rows) == int(cross.tokenize(queries, documents).tokens["attention_mask"].sum())


def same_weights(first, second) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))


def test_a_seed_fixes_the_sae_and_the_folder_reads_back(ranker, tmp_path):
    first, facts = train_sae(ranker, SITE, settings=SMALL, out=tmp_path / "a", progress=False)
    second, _ = train_sae(ranker, SITE, settings=SMALL, out=tmp_path / "b", progress=False)
    assert same_weights(first, second)
    other, _ = train_sae(ranker, SITE, settings=TrainingSettings(**{**SMALL.__dict__, "seed": 1}), progress=False)
    assert not same_weights(first, other)
    loaded = load_sae(tmp_path / "a")
    assert same_weights(first, loaded) and loaded.config.k == 4 and loaded.hook_name == SITE
    written = json.loads((tmp_path / "a" / "training.json").read_text())
    assert written["held_out"] == pytest.approx(facts["held_out"]) and written["held_out"]["tokens"] > 0
    assert written["held_out"]["l0"] <= 4


def test_a_killed_run_resumes_to_the_same_sae(ranker, tmp_path, monkeypatch):
    whole, _ = train_sae(ranker, SITE, settings=SMALL, out=tmp_path / "whole", progress=False)
    step, calls = training._step, {"n": 0}

    def dies_at_the_fifth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(training, "_step", dies_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        train_sae(ranker, SITE, settings=SMALL, out=tmp_path / "killed", progress=False)
    monkeypatch.setattr(training, "_step", step)
    assert (tmp_path / "killed" / training.CHECKPOINT).is_file()  # steps 1-4 kept
    kept = torch.load(tmp_path / "killed" / training.CHECKPOINT, weights_only=True)
    assert (kept["since_fired"] > SMALL.dead_tokens).any(), "some latent is dead at the checkpoint: AuxK ran"
    with pytest.raises(MechirError, match="add --resume"):
        train_sae(ranker, SITE, settings=SMALL, out=tmp_path / "killed", progress=False)
    with pytest.raises(MechirError, match="trained with other settings"):
        train_sae(ranker, SITE, settings=TrainingSettings(**{**SMALL.__dict__, "k": 5}), out=tmp_path / "killed",
                  resume=True, progress=False)
    resumed, _ = train_sae(ranker, SITE, settings=SMALL, out=tmp_path / "killed", resume=True, progress=False)
    assert same_weights(whole, resumed)


def test_training_lowers_the_unexplained_variance_and_folds_the_scale(ranker):
    """Trained on scaled inputs, the saved SAE reads raw ones: its held-out FVU is far below the untrained one's."""
    settings = TrainingSettings(latents=64, k=8, steps=60, batch_tokens=128, max_pairs=60)
    sae, facts = train_sae(ranker, SITE, settings=settings, progress=False)
    frame, _ = training.load_data(None)
    _, held = training.split_queries(frame.sample(n=60, random_state=0), settings.held_out, settings.seed)
    rows = training.gather(ranker, SITE, held, False, "")
    assert quality(sae, rows)["fvu"] == pytest.approx(facts["held_out"]["fvu"], rel=1e-6)
    untrained = training.initial_sae(SITE, rows.shape[1], settings, rows.mean(0), torch.Generator().manual_seed(0))
    assert facts["held_out"]["fvu"] < 0.8 * quality(untrained, rows)["fvu"]


def test_quality_is_measured_as_defined():
    sae = training.initial_sae("s", 3, TrainingSettings(latents=4, k=1), torch.zeros(3), torch.Generator().manual_seed(0))
    rows = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0.5], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        latents = sae.encode(rows)
        expected_fvu = float(((sae.decode(latents) - rows) ** 2).sum() / ((rows - rows.mean(0)) ** 2).sum())
    measured = quality(sae, rows)
    assert measured["fvu"] == pytest.approx(expected_fvu)
    assert measured["l0"] == pytest.approx(float((latents > 0).sum()) / 4)
    assert measured["dead_share"] == pytest.approx(1 - float((latents > 0).any(0).float().mean()))


def test_the_fold_of_the_training_scale_is_exact():
    sae = training.initial_sae("s", 5, TrainingSettings(latents=8, k=3), torch.randn(5), torch.Generator().manual_seed(2))
    x = torch.randn(7, 5, dtype=torch.float64)
    expected = sae.double()(x * 1.7) / 1.7
    training._fold_scale(sae, 1.7)
    assert torch.allclose(sae(x), expected, atol=1e-12)


@pytest.mark.parametrize("change, message", [
    ({"k": 0}, "k=0 is not valid for training an SAE; use between 1 and latents"),
    ({"held_out": 1.0}, "held_out=1.0 is not valid"),
    ({"steps": 0}, "steps=0 is not valid"),
    ({"batch_tokens": 1}, "batch_tokens=1 is not valid"),
])
def test_bad_training_settings_are_named(change, message):
    with pytest.raises(MechirError, match=message):
        TrainingSettings(**{**SMALL.__dict__, **change})


def test_the_command_trains_and_refuses_to_overwrite(tiny, tmp_path, capsys):
    _, folder = tiny("bert", "bi")
    command = ["sae", "train", "--model", str(folder), "--site", SITE, "--latents", "64", "--k", "4", "--steps", "4",
               "--batch-tokens", "64", "--max-pairs", "30", "--out", str(tmp_path / "sae")]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "fraction of variance unexplained" in out and f"sae: {tmp_path / 'sae'}" in out
    assert load_sae(tmp_path / "sae").config.d_sae == 64
    assert main(command) == 2
    assert "add --resume to continue it" in capsys.readouterr().err
    assert main(["sae", "train", "--model", str(folder), "--site", "blocks.9.hook_resid_post", "--out",
                 str(tmp_path / "other")]) == 2
    assert "is not a hook of" in capsys.readouterr().err


def test_training_and_splicing_keep_every_tensor_on_the_rankers_device(ranker):
    """On the emulated accelerator (tests/virtual_device.py): activations, training and the spliced forward pass
    mix no host tensor into the model's device, as on a GPU."""
    from virtual_device import VirtualDevice

    from mechir_axioms.features.splice import spliced

    with VirtualDevice(ranker.model):
        sae, _ = train_sae(ranker, SITE, settings=SMALL, progress=False)
        with spliced(ranker, [sae]):
            scores = ranker.score(["a query"], ["a passage about it"])
    assert scores.shape == (1,)


@pytest.mark.parametrize("flag, value", [
    ("--latents", "-1"), ("--latents", "99999999999"), ("--k", "0"), ("--steps", "0"), ("--batch-tokens", "0"),
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"), ("--aux-k", "0"), ("--aux-coefficient", "nan"),
    ("--dead-tokens", "0"), ("--held-out", "1"), ("--held-out", "nan"), ("--max-pairs", "1"),
    ("--checkpoint-every", "0"),
])
def test_bad_numbers_on_the_command_line_are_one_sentence(tiny, tmp_path, capsys, flag, value):
    _, folder = tiny("bert", "bi")
    code = main(["sae", "train", "--model", str(folder), "--site", SITE, "--out", str(tmp_path / "sae"), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mechir-axioms: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "sae").exists()


def test_data_of_one_query_is_refused(ranker, tmp_path):
    frame, _ = training.load_data(None)
    one = frame[frame["qid"] == frame["qid"].iloc[0]]
    with pytest.raises(MechirError, match="at least two"):
        train_sae(ranker, SITE, one, SMALL, progress=False)


def test_auxk_has_dead_latents_reconstruct_the_error():
    """A latent dead for longer than dead_tokens takes part in AuxK: the loss grows by the auxiliary term and the
    dead latents' decoder rows get a gradient; with none dead the loss is the normalised MSE alone."""
    settings = TrainingSettings(latents=64, k=1, dead_tokens=10, aux_k=4)  # 8 tokens fire at most 8 latents
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, generator=generator)
    sae = training.initial_sae("s", 6, settings, x.mean(0), generator)
    counts = torch.zeros(64, dtype=torch.long)
    plain = training._step(sae, x, counts, TrainingSettings(latents=64, k=1, dead_tokens=10**9), 4)
    fired = (sae.encode(x) > 0).any(0)
    assert (counts == 8).sum() == (~fired).sum() and (counts[fired] == 0).all()  # tokens since each last fired
    with_aux = training._step(sae, x, torch.full((64,), 1000, dtype=torch.long), settings, 4)
    with_aux.backward()
    assert with_aux.item() > plain.item()
    assert (sae.W_dec.grad[~fired].abs().sum(-1) > 0).any(), "no dead latent's row learned from the error"
