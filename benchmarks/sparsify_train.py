"""Train EleutherAI sparsify's SparseCoder on activation rows saved by benchmarks/sae_trainers.py; run it with the
Python of an environment that has eai-sparsify (it is not one of this project's dependencies).

The loop is sparsify's Trainer step for one hook point on rows instead of a model: b_dec set to the first batch's
mean, the decoder kept at unit norm with the gradient along its rows removed, loss = FVU (+ auxk_alpha x AuxK with
its dead-latent mask), and its default optimiser (SignSGD in a schedule-free wrapper, momentum 0.95, learning rate
5e-3 / sqrt(latents / 2^14)); the evaluated weights are the schedule-free average (optimizer.eval()), as sparsify
saves them. Prints one JSON line: seconds and held-out FVU, L0 and dead share; saves the coder with
`save_to_disk` so that mechir-axioms's load_sae can read a folder sparsify itself wrote.

    SPARSIFY_DISABLE_TRITON=1 /path/to/sparsify-env/bin/python benchmarks/sparsify_train.py rows.pt OUT [--auxk 0]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # the CPU: sparsify's eager decoder

import torch  # noqa: E402
from schedulefree import ScheduleFreeWrapper  # noqa: E402
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402
from sparsify.sign_sgd import SignSGD  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows")
    parser.add_argument("out")
    parser.add_argument("--latents", type=int, default=2048)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--auxk", type=float, default=0.0, help="sparsify's auxk_alpha (its default: 0)")
    parser.add_argument("--dead-tokens", type=int, default=10_000_000, help="its dead_feature_threshold")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    saved = torch.load(args.rows, weights_only=True)
    train, held = saved["train"].float(), saved["held"].float()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    coder = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=args.latents, k=args.k))
    optimizer = ScheduleFreeWrapper(SignSGD([{"params": coder.parameters(),
                                             "lr": 5e-3 / (args.latents / 2**14) ** 0.5}]), momentum=0.95)
    optimizer.train()
    since_fired = torch.zeros(args.latents, dtype=torch.long)
    generator = torch.Generator().manual_seed(args.seed + 1)
    order = torch.empty(0, dtype=torch.long)
    for step in range(args.steps):
        if len(order) < args.batch_tokens:
            order = torch.cat([order, torch.randperm(len(train), generator=generator)])
        batch, order = train[order[: args.batch_tokens]], order[args.batch_tokens :]
        if step == 0:
            coder.b_dec.data = batch.mean(0)
        coder.set_decoder_norm_to_unit_norm()
        out = coder(batch, dead_mask=since_fired > args.dead_tokens if args.auxk > 0 else None)
        loss = out.fvu + args.auxk * out.auxk_loss
        loss.backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            since_fired += len(batch)
            since_fired[out.latent_indices.flatten()] = 0
    optimizer.eval()  # the schedule-free average, which sparsify's Trainer.save writes
    seconds = time.perf_counter() - started
    with torch.no_grad():
        top_acts, top_indices, _ = coder.encode(held)
        reconstruction = coder.decode(top_acts, top_indices)
        fvu = float(((reconstruction - held) ** 2).sum() / ((held - held.mean(0)) ** 2).sum())
        fired = torch.zeros(args.latents, dtype=torch.bool)
        fired[top_indices[top_acts > 0]] = True
        l0 = float((top_acts > 0).sum(-1).float().mean())
    coder.save_to_disk(args.out)
    print(json.dumps({"seconds": round(seconds, 1), "fvu": fvu, "l0": l0, "dead_share": 1 - float(fired.float().mean()),
                      "tokens": len(held), "auxk": args.auxk}))


if __name__ == "__main__":
    main()
