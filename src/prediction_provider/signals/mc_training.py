"""Training the ``mc_dropout`` network on the oracle-labelled trades.

Minibatches and dropout masks come from one seeded generator and the weight
initialisation from a forked, seeded torch random state, so training is
reproducible and leaves the process-wide random state as it was. Adam is
written out here: ``torch.optim`` imports ``torch._dynamo`` on first use,
which takes two to five seconds, longer than this whole training.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from prediction_provider.signals.dataset import SignalDataset, SignalTrainingConfig, classification_metrics
from prediction_provider.signals.mc_dropout import (
    DROPOUT_RATE,
    HIDDEN_LAYERS,
    Standardizer,
    build_layers,
    dropout_masks,
    forward,
)

EVALUATION_PASSES = 30


class Adam:
    """Kingma and Ba's Adam with bias correction; clears the gradients it used."""

    def __init__(
        self,
        parameters: Iterable[Any],
        rate: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        import torch

        self.parameters = list(parameters)
        self.rate = rate
        self.betas = betas
        self.eps = eps
        self.steps = 0
        self.first = [torch.zeros_like(parameter) for parameter in self.parameters]
        self.second = [torch.zeros_like(parameter) for parameter in self.parameters]

    def step(self) -> None:
        import torch

        self.steps += 1
        beta1, beta2 = self.betas
        first_correction = 1 - beta1**self.steps
        second_correction = 1 - beta2**self.steps
        with torch.no_grad():
            for parameter, first, second in zip(self.parameters, self.first, self.second, strict=True):
                gradient = parameter.grad
                if gradient is None:
                    continue
                first.mul_(beta1).add_(gradient, alpha=1 - beta1)
                second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
                denominator = (second / second_correction).sqrt_().add_(self.eps)
                parameter.addcdiv_(first, denominator, value=-self.rate / first_correction)
                parameter.grad = None


def fit_mc_dropout(
    data: SignalDataset, config: SignalTrainingConfig
) -> tuple[Any, Standardizer, dict[str, float]]:
    """The network, its input standardizer, and its metrics on the test trades."""
    import torch

    # Matrices this small gain nothing from intra-op threads, which spin-wait on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_mc_dropout(data, config)
    finally:
        torch.set_num_threads(threads)


def _fit_mc_dropout(
    data: SignalDataset, config: SignalTrainingConfig
) -> tuple[Any, Standardizer, dict[str, float]]:
    import torch

    x_train, y_train = data.part(False)
    standardizer = Standardizer.fit(x_train)
    inputs = torch.from_numpy(standardizer.transform(x_train))
    targets = torch.from_numpy(y_train.astype(np.float32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        layers = build_layers(inputs.shape[1], HIDDEN_LAYERS)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = Adam(layers.parameters(), config.learning_rate)
    loss_function = torch.nn.BCEWithLogitsLoss()
    layers.train()
    for _ in range(config.mlp_steps):
        batch = torch.randint(0, len(inputs), (config.batch_size,), generator=generator)
        masks = dropout_masks((config.batch_size,), HIDDEN_LAYERS, DROPOUT_RATE, generator)
        loss = loss_function(forward(layers, inputs[batch], masks), targets[batch])
        loss.backward()
        optimizer.step()
    layers.eval()
    x_test, y_test = data.part(True)
    masks = dropout_masks((EVALUATION_PASSES,), HIDDEN_LAYERS, DROPOUT_RATE, generator)
    with torch.inference_mode():
        test_inputs = torch.from_numpy(standardizer.transform(x_test)).unsqueeze(1)
        mean = torch.sigmoid(forward(layers, test_inputs, masks)).mean(dim=1).numpy()
    return layers, standardizer, classification_metrics(np.asarray(mean, dtype=np.float64), y_test)
