"""Whether a model's training fits in this machine's memory, estimated before it starts.

Training holds the parameters, their gradients and the optimiser's state (Adam: two
more copies, SGD with momentum: one), plus the activations of one batch kept for the
backward pass. The activations are measured by one forward pass of a single image
with hooks on every module (outputs summed), then scaled by the batch size; the
estimate doubles them for the gradients of the backward pass (our choice: a bound
that holds for the project's models without running a batch). The memory available is
the kernel's MemAvailable (Linux); elsewhere nothing is refused.
"""

from __future__ import annotations

import torch

from testbed.errors import ConfigError


def available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def training_bytes(model: torch.nn.Module, input_shape, batch_size: int, optimizer: str) -> int:
    """The estimate of the module docstring, in bytes."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    copies = 4 if optimizer == "adam" else 3  # weights, gradients, optimiser state
    activations = 0

    def count(_module, _inputs, output):
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules() if m is not model]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return copies * params + 2 * activations * batch_size


def check_fits(model: torch.nn.Module, input_shape, batch_size: int, optimizer: str, what: str) -> None:
    """Refuse, in one line, a training that would not fit in the memory available now."""
    need = training_bytes(model, input_shape, batch_size, optimizer)
    have = available_bytes()
    if have is not None and need > have:
        raise ConfigError(
            f"{what}: training needs about {need / 2**30:.1f} GiB (model, gradients, optimiser state and a batch of "
            f"{batch_size}), {have / 2**30:.1f} GiB is available; lower model.width or model.train.batch_size"
        )
