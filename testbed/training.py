"""Training and evaluation: central training with a checkpoint cache, and local rounds.

All shuffling comes from a ``torch.Generator`` seeded by the caller, and model
initialisation from a seed derived from the run seed, so a seeded run is
reproducible. A module may ask for gradient-norm clipping by carrying a
``grad_clip_norm`` attribute (MonoConv2d layers carry 5); the loop clips the
whole model's gradient at the smallest value any of its modules asks for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from testbed.checkpoints import checkpoint_key, checkpoint_path, load_checkpoint, save_checkpoint
from testbed.memory import check_fits
from testbed.models import build_model
from testbed.rng import derive_seed

Progress = Callable[[int, int, float], None]  # (step, total steps, loss of the step)


# Forward batches are padded to at least this many rows: CPU kernels sum in another order for a
# handful of rows (batches of 1 to 5 differ in the last bit here), and a device's metrics must not
# depend on which other devices share its evaluation (testbed.shared_evaluation).
MIN_BATCH = 16
# Rows per forward pass when scoring: wide convolutions are faster in batches whose activations
# stay in the cache (scripts/bench_fleet.py, DeepCNN width 32: 2.94 s a round with batches of
# 1,000, 2.55 s with 128; docs/ORCHESTRATOR.md). Logits do not depend on it (tests/test_scale.py).
FORWARD_BATCH = 128


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = FORWARD_BATCH) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, ``batch_size`` rows at a time (each row's logits
    are the same whatever the other rows of its batch)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                batch = x[start : start + batch_size]
                n = len(batch)
                if n < MIN_BATCH:
                    batch = torch.cat([batch, batch[:1].expand(MIN_BATCH - n, *batch.shape[1:])])
                out.append(model(batch)[:n])
    finally:
        model.train(was_training)
    return torch.cat(out)


def scores(logits: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``logits`` against ``y`` (float32 sums per ``batch_size`` rows)."""
    correct, loss_sum = 0, 0.0
    for start in range(0, len(y), batch_size):
        part, target = logits[start : start + batch_size], y[start : start + batch_size]
        loss_sum += F.cross_entropy(part, target, reduction="sum").item()
        correct += (part.argmax(1) == target).sum().item()
    n = max(len(y), 1)
    return correct / n, loss_sum / n


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``x``, ``y``, in eval mode (the loss summed
    in float32 per ``batch_size`` rows, as :func:`scores` sums it)."""
    if len(x) == 0:
        return 0.0, 0.0
    return scores(predict(model, x), y, batch_size)


def grad_clip_norm(model: nn.Module) -> float | None:
    """The gradient-norm bound the model's modules ask for (their ``grad_clip_norm``), None if none does."""
    bounds = [m.grad_clip_norm for m in model.modules() if getattr(m, "grad_clip_norm", None) is not None]
    return min(bounds) if bounds else None


def _optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _scheduler(opt, schedule: str, cfg, total: int):
    if schedule == "onecycle" and total >= 10:  # shorter runs cannot hold its warm-up phase
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.25)
    if schedule == "cosine" and total >= 2:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    return None


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """``steps`` index batches over seeded epochs; a final batch of one (BatchNorm cannot train on it) is skipped."""
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            batch = perm[start : start + batch_size]
            if len(batch) < 2 and n > 1:
                continue
            yield batch
            done += 1
            if done == steps:
                return


def _train(model, x, y, cfg, seed: int, schedule: str, progress: Progress | None) -> float:
    n = len(x)
    if n < 2:
        raise ValueError(f"cannot train on {n} image(s): BatchNorm needs batches of at least 2")
    batch_size = min(cfg.batch_size, n)
    steps_per_epoch = n // batch_size + (1 if n % batch_size >= 2 else 0)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, schedule, cfg, total)
    clip = grad_clip_norm(model)
    gen = torch.Generator().manual_seed(int(seed))
    model.train()
    loss_sum = 0.0
    for step, idx in enumerate(_batches(n, batch_size, total, gen), 1):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if sched is not None:
            sched.step()
        value = loss.item()
        loss_sum += value
        if progress is not None:
            progress(step, total, value)
    return loss_sum / total


def train_epochs(model: nn.Module, x, y, cfg, seed: int, progress: Progress | None = None) -> float:
    """Train ``model`` in place for ``cfg.epochs`` (may be fractional) with ``cfg.schedule``; mean loss."""
    return _train(model, x, y, cfg, seed, cfg.schedule, progress)


def train_local(model: nn.Module, x, y, cfg, seed: int) -> float:
    """One federated round of local training at a constant learning rate; mean training loss."""
    return _train(model, x, y, cfg, seed, "constant", None)


# ---- central training with the checkpoint cache --------------------------------------


def initial_model(strategy, model_cfg, input_shape, num_classes: int, seed: int) -> nn.Module:
    """The untrained model a strategy trains: built from a seed, then ``strategy.prepare_model``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "model-init"))
        model = build_model(model_cfg, input_shape, num_classes)
        return strategy.prepare_model(model)


def _trained_form(strategy, model_cfg, input_shape, num_classes: int, seed: int) -> nn.Module:
    """A model with the architecture of what ``strategy`` trains and caches (BatchNorm not folded)."""
    model = initial_model(strategy, model_cfg, input_shape, num_classes, seed)
    return strategy.after_training(model, finetune=lambda m: None)


def deployed(model: nn.Module, model_cfg) -> nn.Module:
    """The trained model as it is sent for inference: BatchNorm folded when ``model.fold_batchnorm``."""
    if model_cfg.fold_batchnorm:
        from testbed.models.batchnorm import fold_batchnorm

        return fold_batchnorm(model)
    return model


def model_template(strategy, model_cfg, input_shape, num_classes: int, seed: int = 0) -> nn.Module:
    """A model with the architecture (state names, shapes) of what ``strategy`` sends."""
    return deployed(_trained_form(strategy, model_cfg, input_shape, num_classes, seed), model_cfg)


def receiver_model(strategy, config, dataset) -> nn.Module:
    """The model a device decodes ``strategy``'s payload into (names and shapes of what it sends),
    in eval mode. Its values are the seeded initial model (the federated starting model)."""
    model = model_template(strategy, config.model, dataset.input_shape, dataset.num_classes, config.seed)
    return model.eval()


def training_parts(strategy, model_cfg, dataset, seed: int) -> dict:
    """Everything that determines a centrally trained model (the checkpoint key's input)."""
    return {
        "dataset": dataset.name,
        "data": dataset.fingerprint(),
        # folding BatchNorm happens after training: the same trained model, the same key
        "model": model_cfg.model_dump(mode="json", exclude={"fold_batchnorm"}),
        "strategy": strategy.training_key(),
        "seed": seed,
    }


class _Bar:
    """A rich progress bar fed by the training loop's progress callback."""

    def __init__(self, description: str):
        from rich.markup import escape

        from testbed.progress import progress_bar

        self.progress = progress_bar("loss {task.fields[loss]:.4f}")
        self.description = escape(description)  # "[plain]" is text, not rich markup
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, step: int, total: int, loss: float) -> None:
        if self.task is None:
            self.task = self.progress.add_task(self.description, total=total, loss=loss)
        self.progress.update(self.task, completed=step, loss=loss)


def central_model(strategy, model_cfg, dataset, seed: int, cache_dir=None, progress: bool = True) -> nn.Module:
    """The model ``strategy`` sends, trained on the dataset's training set, from the cache when there.

    The returned model (eval mode) carries ``checkpoint_info``: key, training
    time, test accuracy and whether it came from the cache.
    """
    cfg = model_cfg.train
    parts = training_parts(strategy, model_cfg, dataset, seed)
    key = checkpoint_key(parts)
    path = checkpoint_path(key, cache_dir)
    cached = load_checkpoint(path)
    if cached is not None:
        state, meta = cached
        model = _trained_form(strategy, model_cfg, dataset.input_shape, dataset.num_classes, seed)
        model.load_state_dict(state)
        model = deployed(model.eval(), model_cfg)
        model.checkpoint_info = {**meta, "key": key, "path": str(path), "cached": True}
        return model.eval()

    x, y = dataset.train_x, dataset.train_y
    if cfg.train_subset is not None:
        x, y = x[: cfg.train_subset], y[: cfg.train_subset]
    model = initial_model(strategy, model_cfg, dataset.input_shape, dataset.num_classes, seed)
    label = f"{model_cfg.arch} [{strategy.training_key()}] on {dataset.name}"
    check_fits(model, dataset.input_shape, min(cfg.batch_size, len(x)), cfg.optimizer, f"model {label}")
    # Fine-tuning inside the recipe's budget: the first epochs train, the last ones fine-tune.
    shared = strategy.finetune_epochs_within_budget()
    if shared is not None and not 0 < shared < cfg.epochs:
        raise ValueError(f"model {label}: fine-tuning within the budget needs 0 < {shared:g} < model.train.epochs ({cfg.epochs:g})")
    pre_cfg = cfg if shared is None else cfg.model_copy(update={"epochs": cfg.epochs - shared})
    tune_cfg = cfg if shared is None else cfg.model_copy(update={"epochs": shared})
    start = time.perf_counter()
    if progress:
        with _Bar(f"training {label}") as bar:
            loss = train_epochs(model, x, y, pre_cfg, derive_seed(seed, "central-train"), bar)
    else:
        loss = train_epochs(model, x, y, pre_cfg, derive_seed(seed, "central-train"))
    model = strategy.after_training(
        model, finetune=lambda m: train_epochs(m, x, y, tune_cfg, derive_seed(seed, "central-finetune"))
    )
    seconds = time.perf_counter() - start
    accuracy, test_loss = evaluate(model, dataset.test_x, dataset.test_y)
    meta = {
        "parts": parts,
        "train_seconds": seconds,
        "train_loss": loss,
        "test_accuracy": accuracy,
        "test_loss": test_loss,
        "threads": torch.get_num_threads(),
    }
    save_checkpoint(path, model.state_dict(), meta)
    model = deployed(model.eval(), model_cfg)
    model.checkpoint_info = {**meta, "key": key, "path": str(path), "cached": False}
    return model.eval()
