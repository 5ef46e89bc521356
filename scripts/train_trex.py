"""Learn a reward function from ranked demonstrations with T-REX (Brown et al., ICML 2019), small and on CPU.

    pip install -r requirements-trex.txt          # PyTorch (CPU) and the other optional research packages
    python scripts/train_trex.py --store ./recordings --game spaceinvaders

The demonstrations of a game are ranked by final score. Some of them (spread over the ranking) are held out; snippet
pairs are sampled from the rest as T-REX samples them, and a small convolutional network learns a per-observation
reward r(s) such that the better snippet gets the larger sum: the Bradley-Terry loss
-log(exp(R_better) / (exp(R_better) + exp(R_worse))), R the sum of r over a snippet. The report is the pairwise
accuracy on snippet pairs drawn only from the held-out demonstrations. The network is T-REX's own (4 conv layers,
2 dense); observations are T-REX's (84x84 grayscale, frame skip 4 with max-pooling, stacks of 4, score masked).

Each pair also carries what the demonstrator said during its snippets (`pair.better.words`, `.voiced`, `.pitch_hz`
once scripts/annotate_speech.py has run), the place to add speech as a teaching signal; this example prints how many
training snippets contain speech but does not use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.dataset import Dataset, SnippetPair, TrexPreprocessing
from server.dataset.observations import DEFAULT_CACHE_DIR
from server.store import open_store

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("train_trex.py needs PyTorch: pip install -r requirements-trex.txt (or pip install torch)")


@dataclass
class Args:
    store: str = "./recordings"
    """store URL or directory holding the recordings"""
    game: str = "spaceinvaders"
    """the game whose demonstrations are ranked"""
    train_pairs: int = 3000
    """snippet pairs to train on"""
    test_pairs: int = 500
    """snippet pairs from held-out demonstrations to measure accuracy on"""
    snippet_min: int = 50
    """shortest snippet, in observations (T-REX: 50)"""
    snippet_max: int = 100
    """longest snippet + 1 (T-REX: 100)"""
    stride: int = 2
    """keep every stride-th observation of a snippet (T-REX: 2)"""
    held_out: int = 3
    """every held_out-th demonstration by rank is held out for testing"""
    epochs: int = 2
    """passes over the training pairs"""
    batch: int = 8
    """pairs per optimiser step"""
    lr: float = 1e-4
    """Adam learning rate"""
    seed: int = 0
    """seed of pair sampling and network initialisation"""
    threads: int = 2
    """CPU threads for PyTorch"""
    cache_dir: str = str(DEFAULT_CACHE_DIR)
    """cache of preprocessed observations"""
    save: str = ""
    """write the trained network's state_dict here"""
    metrics: str = ""
    """write the results as JSON here"""


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(Args):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    return Args(**vars(p.parse_args(argv)))


class RewardNet(nn.Module):
    """T-REX's reward network: an (84, 84, 4) observation in [0, 1] -> a scalar reward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 16, 7, stride=3)
        self.conv2 = nn.Conv2d(16, 16, 5, stride=2)
        self.conv3 = nn.Conv2d(16, 16, 3, stride=1)
        self.conv4 = nn.Conv2d(16, 16, 3, stride=1)
        self.fc1 = nn.Linear(784, 64)
        self.fc2 = nn.Linear(64, 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.permute(0, 3, 1, 2)  # NHWC -> NCHW
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = F.leaky_relu(conv(x))
        x = F.leaky_relu(self.fc1(x.reshape(x.shape[0], -1)))
        return self.fc2(x).squeeze(1)


def snippet_returns(net: RewardNet, pairs: list[SnippetPair]) -> torch.Tensor:
    """(len(pairs), 2): the predicted return of each snippet, all snippets in one forward pass."""
    obs, owner = [], []
    for i, pair in enumerate(pairs):
        for side, snippet in enumerate(pair.snippets):
            o = snippet.obs
            obs.append(o)
            owner += [2 * i + side] * len(o)
    x = torch.from_numpy(np.concatenate(obs)).float().div_(255.0)
    r = net(x)
    returns = torch.zeros(2 * len(pairs)).index_add_(0, torch.tensor(owner), r)
    return returns.view(len(pairs), 2)


def accuracy(net: RewardNet, pairs: list[SnippetPair], batch: int = 32) -> float:
    correct = 0
    with torch.no_grad():
        for b in range(0, len(pairs), batch):
            chunk = pairs[b : b + batch]
            pred = snippet_returns(net, chunk).argmax(dim=1)
            correct += int((pred == torch.tensor([p.label for p in chunk])).sum())
    return correct / len(pairs)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.monotonic()

    ds = Dataset(open_store(args.store), TrexPreprocessing(), args.cache_dir)
    demos = ds.ranked_demonstrations(args.game)
    if len(demos) < 4:
        sys.exit(f"need at least 4 complete demonstrations of {args.game} in {args.store}, found {len(demos)}")
    test = [d for i, d in enumerate(demos) if i % args.held_out == 1]
    train = [d for i, d in enumerate(demos) if i % args.held_out != 1]
    print(
        f"{len(demos)} demonstrations, scores {[d.final_score for d in demos]}; "
        f"{len(train)} for training, {len(test)} held out"
    )
    for d in demos:
        ds.observations(d.traj_id)  # re-simulate and cache now, so timings below are training only
    lengths = (args.snippet_min, args.snippet_max)
    train_pairs = ds.trex_pairs(args.train_pairs, lengths, rng, demos=train, stride=args.stride)
    test_pairs = ds.trex_pairs(args.test_pairs, lengths, rng, demos=test, stride=args.stride)
    with_speech = sum(bool(s.words) for p in train_pairs for s in p.snippets)
    print(
        f"{len(train_pairs)} training pairs ({with_speech} snippets with words), {len(test_pairs)} test pairs; "
        f"data ready in {time.monotonic() - t0:.1f} s"
    )

    net = RewardNet()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    t1 = time.monotonic()
    for epoch in range(args.epochs):
        order = rng.permutation(len(train_pairs))
        total = 0.0
        for b in range(0, len(order), args.batch):
            batch = [train_pairs[i] for i in order[b : b + args.batch]]
            labels = torch.tensor([p.label for p in batch])
            loss = F.cross_entropy(snippet_returns(net, batch), labels)  # Bradley-Terry over the two returns
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        print(
            f"epoch {epoch + 1}: loss {total / len(order):.4f}, "
            f"training accuracy {accuracy(net, train_pairs[:200]):.3f}"
        )
    result = {
        "held_out_accuracy": accuracy(net, test_pairs),
        "train_accuracy": accuracy(net, train_pairs),
        "train_demonstrations": [d.traj_id for d in train],
        "test_demonstrations": [d.traj_id for d in test],
        "train_pairs": len(train_pairs),
        "test_pairs": len(test_pairs),
        "train_seconds": round(time.monotonic() - t1, 1),
    }
    print(
        f"held-out pairwise accuracy: {result['held_out_accuracy']:.3f} "
        f"(training {result['train_accuracy']:.3f}; {result['train_seconds']} s of training)"
    )
    if args.save:
        torch.save(net.state_dict(), args.save)
    if args.metrics:
        Path(args.metrics).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
