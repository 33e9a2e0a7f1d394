"""The linear probe of an encoder: at random initialisation, the baseline a pretrained
encoder's probe (``fastnet pretrain``'s last line) is to be read against, or from a file.

    python benchmarks/linear_probe.py --method simclr --dataset mnist --model cnn --data-dir DIR
    python benchmarks/linear_probe.py --from runs/mnist-simclr/encoder.safetensors --data-dir DIR

Same seed, the same part of the model (``fastnet.pretrain.pretrained_part``: the method's
encoder, or ``--encoder``), input normalisation and probe
(``fastnet.pretrain_monitors.linear_probe``: all training labels, 10 epochs) as ``fastnet
pretrain``. With ``--from``, the encoder file's weights, method, encoder and model replace the
initial ones.
"""

from __future__ import annotations

import argparse

from fastnet import backend, load, load_checkpoint, models
from fastnet import random as fn_random
from fastnet.pretrain import ENCODERS, METHOD_DEFAULTS, METHODS, _input_preparation, pretrained_part
from fastnet.pretrain_monitors import encode, linear_probe
from fastnet.run_config import build_datasets, model_kwargs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", default=None, help="an encoder file to probe")
    parser.add_argument("--method", default="simclr", choices=METHODS)
    parser.add_argument("--encoder", default=None, choices=ENCODERS, help="default: the method's")
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist", "cifar10"))
    parser.add_argument("--model", default="cnn", choices=models.names())
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kwargs, weights, what = None, None, "at random initialisation"
    if args.source is not None:
        saved = load_checkpoint(args.source)["config"]
        args.method, args.model = saved["pretrain"]["method"], saved["model"]
        args.encoder = saved["pretrain"].get("encoder")
        args.dataset, kwargs = saved["pretrain"]["dataset"], saved["kwargs"]
        weights, what = load(args.source), f"from {args.source}"
    train, test = build_datasets(args.dataset, args.data_dir, download=False)
    fn_random.manual_seed(args.seed)
    classifier = models.create(args.model, **(kwargs or model_kwargs(args.model, train.images)))
    args.encoder = args.encoder or METHOD_DEFAULTS[args.method]["encoder"]
    encoder = pretrained_part(args.encoder, classifier)
    if weights is not None:
        classifier.load_state_dict(weights)
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
        f"{args.model} {args.encoder} encoder of {args.method} {what}, linear probe on "
        f"{args.dataset} "
        f"({len(train.labels):,} labels): {100 * probe:.2f}%"
    )


if __name__ == "__main__":
    main()
