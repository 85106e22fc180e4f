"""Benchmark: this package's TopK SAE trainer against EleutherAI sparsify's, on the same activations.

The rows are the packaged MiniLM's blocks.3.hook_resid_post over the bundled sample, split by whole queries as
`train_sae` splits them (the held-out queries' texts measure every SAE). Ours is `train_sae` with its defaults;
sparsify's is its SparseCoder with its default recipe (benchmarks/sparsify_train.py, run in an environment that
has eai-sparsify: it is not a dependency here), once as it comes (no AuxK) and once with AuxK as ours uses it.
Each SAE has 2,048 latents, k = 64, 1,500 steps of 1,024 tokens. sparsify's saved folder is then read back by
`load_sae`, whose held-out FVU must equal sparsify's own.

    python benchmarks/sae_trainers.py --sparsify-python /path/to/sparsify-env/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from record import ROOT, machine, markdown, write_record

from mechir_axioms import load_ranker, load_sae
from mechir_axioms.features.training import TrainingSettings, gather, quality, split_queries, train_sae
from mechir_axioms.passages.loading import load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsify-python", required=True, help="the Python of an environment with eai-sparsify")
    parser.add_argument("--site", default="blocks.3.hook_resid_post")
    args = parser.parse_args()
    settings = TrainingSettings()
    ranker = load_ranker()
    frame, _ = load_data(None)
    training, held = split_queries(frame, settings.held_out, settings.seed)
    started = time.perf_counter()
    train_rows = gather(ranker, args.site, training, True, "training rows")
    held_rows = gather(ranker, args.site, held, True, "held-out rows")
    activation_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ours, facts = train_sae(ranker, args.site, None, settings)
    our_seconds = time.perf_counter() - started
    assert facts["held_out"]["tokens"] == len(held_rows), "train_sae saw other held-out rows"
    rows = [{"trainer": "mechir-axioms train_sae", "optimiser": f"Adam, lr {settings.learning_rate():.2e}",
             "AuxK": f"1/32, dead after {settings.dead_tokens} tokens",
             "seconds (training)": round(our_seconds - activation_seconds, 1),
             "held-out FVU": round(facts["held_out"]["fvu"], 4), "L0": round(facts["held_out"]["l0"], 1),
             "dead latents": f"{facts['held_out']['dead_share']:.1%}", "read back by load_sae": ""}]
    with tempfile.TemporaryDirectory() as temporary:
        saved = Path(temporary) / "rows.pt"
        torch.save({"train": train_rows, "held": held_rows}, saved)
        for auxk, dead in ((0.0, 10_000_000), (1 / 32, settings.dead_tokens)):
            out = Path(temporary) / f"sparsify-{auxk:g}"
            printed = subprocess.run(
                [args.sparsify_python, str(ROOT / "benchmarks" / "sparsify_train.py"), str(saved), str(out),
                 "--auxk", str(auxk), "--dead-tokens", str(dead), "--latents", str(settings.latents), "--k",
                 str(settings.k), "--steps", str(settings.steps), "--batch-tokens", str(settings.batch_tokens)],
                check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            theirs = json.loads(printed)
            loaded = load_sae(out, hook_name=args.site)
            read = quality(loaded, held_rows)
            rows.append({"trainer": "sparsify SparseCoder", "optimiser": "SignSGD, schedule-free (its default)",
                         "AuxK": "none (its default)" if auxk == 0 else f"1/32, dead after {dead} tokens",
                         "seconds (training)": theirs["seconds"], "held-out FVU": round(theirs["fvu"], 4),
                         "L0": round(theirs["l0"], 1), "dead latents": f"{theirs['dead_share']:.1%}",
                         "read back by load_sae": f"FVU {read['fvu']:.4f} (|diff| {abs(read['fvu'] - theirs['fvu']):.1e})"})
    columns = list(rows[0])
    print(markdown(columns, rows))
    write_record("sae-trainers", rows, columns, title="TopK SAE trainers on the same activations: ours and sparsify's",
                 notes=[f"The packaged MiniLM's {args.site} over the bundled sample: {len(train_rows)} training rows, "
                        f"{len(held_rows)} held-out rows of whole held-out queries; {settings.latents} latents, k = "
                        f"{settings.k}, {settings.steps} steps of {settings.batch_tokens} tokens for every trainer, on "
                        f"{machine()}, torch threads {torch.get_num_threads()}.",
                        f"Ours: seconds end to end minus the {activation_seconds:.1f} s the activations take. "
                        "sparsify: its SparseCoder with its default optimiser, run by benchmarks/sparsify_train.py "
                        "(sparsify's Trainer step on rows instead of a model), on its eager CPU decoder.",
                        "Read back: sparsify's saved folder loaded by load_sae and measured on the same held-out rows."],
                 details={"activation_seconds": activation_seconds})


if __name__ == "__main__":
    main()
