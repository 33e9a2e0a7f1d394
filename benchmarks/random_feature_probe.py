"""The linear probe of a model's features at random initialisation: the baseline a pretrained
encoder's probe (``fastnet pretrain``'s last line) is to be read against.

    python benchmarks/random_feature_probe.py --dataset mnist --model cnn --data-dir DIR

Same seed, input normalisation and probe (``fastnet.pretrain_monitors.linear_probe``: all
training labels, 10 epochs) as ``fastnet pretrain``, with the encoder left as initialised.
"""

from __future__ import annotations

import argparse

from fastnet import backend, models
from fastnet import random as fn_random
from fastnet.pretrain import _input_preparation
from fastnet.pretrain_monitors import encode, linear_probe
from fastnet.run_config import build_datasets, model_kwargs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist", "cifar10"))
    parser.add_argument("--model", default="cnn", choices=models.names())
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, test = build_datasets(args.dataset, args.data_dir, download=False)
    fn_random.manual_seed(args.seed)
    encoder = models.create(args.model, **model_kwargs(args.model, train.images)).features
    prepare = _input_preparation(args.dataset, backend.get_device("cpu"))
    probe = linear_probe(
        encode(encoder, train.images, "cpu", prepare),
        train.labels,
        encode(encoder, test.images, "cpu", prepare),
        test.labels,
        epochs=10,
        seed=args.seed,
    )
    print(
        f"{args.model} features at random initialisation, linear probe on {args.dataset} "
        f"({len(train.labels):,} labels): {100 * probe:.2f}%"
    )


if __name__ == "__main__":
    main()
