"""A transformer learns a task beyond images: reversing sequences of eight digits.

The model (embedding, learned positions, one post-norm encoder layer with four heads, a Linear
per position) must output at position i the digit at position 7 − i. Nothing but attention moves
information between positions, so the model has to learn to attend from each query to one
position-determined key; with wrong attention gradients it stays near chance (10% per digit).
"""

import numpy as np

import fastnet as fn
import fastnet.functional as F
import fastnet.nn as nn
from fastnet import optim
from fastnet.bench import pinned_threads

DIGITS, LENGTH, WIDTH = 10, 8, 32


class Reverser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(DIGITS, WIDTH)
        self.positions = nn.PositionalEmbedding(LENGTH, WIDTH)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(WIDTH, 4, 2 * WIDTH, dropout=0.0, batch_first=True), 1
        )
        self.out = nn.Linear(WIDTH, DIGITS)

    def forward(self, sequences: np.ndarray) -> fn.Tensor:
        return self.out(self.encoder(self.positions(self.tokens(sequences))))


def test_transformer_learns_to_reverse_sequences():
    # One thread: these 8-token matrices are far too small to pay for a thread pool's wake-ups, and
    # on a shared, oversubscribed machine each BLAS or Numba parallel call can wait ~10 ms for its
    # threads (measured: 9 ms a step on one thread, up to 0.8 s on two)
    with pinned_threads(1):
        train_and_check()


def train_and_check() -> None:
    fn.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Reverser()
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        sequences = rng.integers(0, DIGITS, (64, LENGTH))
        loss = F.cross_entropy(model(sequences).reshape(-1, DIGITS), sequences[:, ::-1].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    sequences = rng.integers(0, DIGITS, (1000, LENGTH))
    with fn.no_grad():
        predicted = model(sequences).numpy().argmax(-1)
    accuracy = (predicted == sequences[:, ::-1]).mean()
    assert accuracy >= 0.99, (
        f"reversal accuracy {accuracy:.4f} after 200 steps (final training loss {loss.item():.4f})"
    )
