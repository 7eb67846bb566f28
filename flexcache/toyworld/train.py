"""Train the toy-world model on CPU: ``python -m flexcache.toyworld.train``.

Flow matching (rectified flow): x_s = (1 - s) x0 + s eps with s drawn from a
logit-normal, the transformer predicts eps - x0 at timestep 1000 s, which is
what `FlowMatchEulerDiscreteScheduler` integrates. Clips of the training
combinations only (`world.training_specs`), pre-rendered at `--positions`
random start positions each, captioned with random prompt templates (token
embeddings precomputed once); a `--drop-caption` share of captions is
replaced by zeros so classifier-free guidance works. Stops after `--minutes`
or `--steps`, saving the EMA weights (and every `--checkpoint-minutes`).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from flexcache.toyworld.model import (
    TRANSFORMER_CONFIG,
    WEIGHTS,
    PromptEncoder,
    build_transformer,
    weights_config,
)
from flexcache.toyworld.world import prompt_for, render, training_specs

PROMPTS_PER_SPEC = 6


def save_weights(path: Path, ema: dict[str, torch.Tensor], config: dict, summary: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.items()}, str(path),
              metadata={"transformer_config": json.dumps(config)})
    path.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=55.0)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--drop-caption", type=float, default=0.1)
    parser.add_argument("--positions", type=int, default=24, help="pre-rendered start positions per combination")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0)
    parser.add_argument("--init", default=None, help="start from these weights instead of random ones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(WEIGHTS))
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    specs = training_specs()
    encoder = PromptEncoder()
    prompts = [[prompt_for(spec, rng) for _ in range(PROMPTS_PER_SPEC)] for spec in specs]
    flat = [p for group in prompts for p in group]
    bank = torch.cat([encoder(flat[i:i + 256]) for i in range(0, len(flat), 256)])
    bank = bank.view(len(specs), PROMPTS_PER_SPEC, *bank.shape[1:])
    clips = torch.stack([torch.stack([render(spec, seed=rng.randrange(1 << 30)) for _ in range(args.positions)])
                         for spec in specs])

    config = dict(TRANSFORMER_CONFIG) if args.init is None else weights_config(args.init)
    model = build_transformer(config)
    if args.init is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(args.init))
    model.train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    started = time.monotonic()
    deadline = started + args.minutes * 60
    next_checkpoint = started + args.checkpoint_minutes * 60
    losses: list[float] = []
    step = 0
    out = Path(args.out)

    def summary() -> dict:
        recent = losses[-200:]
        return {"steps": step, "minutes": round((time.monotonic() - started) / 60, 2), "parameters": params,
                "final_loss_last_200": sum(recent) / max(1, len(recent)), "batch": args.batch, "lr": args.lr,
                "drop_caption": args.drop_caption, "positions": args.positions, "seed": args.seed,
                "init": args.init, "transformer_config": config}

    while step < args.steps and time.monotonic() < deadline:
        progress = min(1.0, (time.monotonic() - started) / (args.minutes * 60))
        for group in optimizer.param_groups:  # cosine decay over the time budget
            group["lr"] = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        picks = torch.randint(len(specs), (args.batch,))
        x0 = clips[picks, torch.randint(args.positions, (args.batch,))]
        text = bank[picks, torch.randint(PROMPTS_PER_SPEC, (args.batch,))]
        keep = (torch.rand(args.batch) >= args.drop_caption).float().view(-1, 1, 1)
        text = text * keep
        s = torch.sigmoid(torch.randn(args.batch)).view(-1, 1, 1, 1, 1)
        eps = torch.randn_like(x0)
        xs = (1 - s) * x0 + s * eps
        pred = model(hidden_states=xs, timestep=(s.view(-1) * 1000), encoder_hidden_states=text,
                     return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred, eps - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(0.995).add_(v.detach(), alpha=0.005)
        losses.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            recent = sum(losses[-50:]) / 50
            print(f"step {step} loss {recent:.4f} ({(time.monotonic() - started) / 60:.1f} min)", flush=True)
        if time.monotonic() >= next_checkpoint:
            save_weights(out, ema, config, summary())
            next_checkpoint += args.checkpoint_minutes * 60

    save_weights(out, ema, config, summary())
    print(json.dumps(summary(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
