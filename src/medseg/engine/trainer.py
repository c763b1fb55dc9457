"""The training loop: exact resume, crash-safe checkpoints, mixed precision, DDP, logs.

``train_run(cfg)`` trains one run folder (``ARCHITECTURE.md``). A checkpoint holds model, optimiser,
scheduler, AMP scaler, epoch/step, the RNG states, the validated config and the best-metric tracker.
Each epoch's data order and augmentation are a pure function of ``(seed, epoch)``, so a run resumed
from a checkpoint ends with the same weights as an uninterrupted one (deterministic mode), whether the
checkpoint was written at an epoch boundary or mid-epoch by SIGINT/SIGTERM: a resumed epoch skips the
batches already trained on without loading them, and the RNG states (dropout, random losses, anything
drawn from the global generators) are restored right before the next batch.
"""
from __future__ import annotations

import itertools
import json
import math
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from medseg.config import ConfigError, RunConfig, build_config, config_diff, dump_config, model_kwargs
from medseg.engine import checkpoint as ckpt
from medseg.engine.infer import case_logits, labels_from_probabilities, probabilities
from medseg.engine.logs import RunLogger, environment_record, memory_mb
from medseg.engine.optim import build_optimizer, build_scheduler, freeze_encoder
from medseg.engine.runtime import (Runtime, eval_mode, init_distributed, make_runtime, memory_format,
                                   rng_state, seed_everything, set_rng_state)
from medseg.errors import CheckpointError, TrainingError
from medseg.log import logger as log
from medseg.losses import create_loss
from medseg.losses.deep_supervision import with_deep_supervision
from medseg.metrics import batch_dice
from medseg.models import create_model


# ----------------------------------------------------------------------------- construction
def build_model(cfg: RunConfig) -> nn.Module:
    """The model of a config; ``in_channels``/``out_channels`` default to the data's (:func:`model_kwargs`)."""
    return create_model(cfg.model.name, **model_kwargs(cfg))


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def load_model_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with an error naming the mismatched keys (a checkpoint from another model)."""
    own = unwrap(model).state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def few(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8})" if len(items) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {few(shapes)}")
        raise CheckpointError(f"{source} does not match model {type(unwrap(model)).__name__}: "
                              + "; ".join(parts))
    unwrap(model).load_state_dict(state_dict)


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """Rebuild a model from a checkpoint alone (its config is inside), loaded weights-only."""
    state = ckpt.load_checkpoint(path)
    cfg = config_of_checkpoint(state, path)
    model = build_model(cfg)
    load_model_weights(model, state["model"], str(path))
    return model.to(device).eval(), cfg


# ------------------------------------------------------------------------------ run folder
def config_of_checkpoint(state: dict[str, Any], path: str | Path) -> RunConfig:
    """The validated config stored in a checkpoint; a missing or no longer valid one is a CheckpointError."""
    raw = ckpt.checkpoint_config(state, path)
    try:
        return build_config(raw)
    except ConfigError as err:
        raise CheckpointError(f"the config saved in {path} does not validate with this medseg version: {err}") from None


def prepare_run_dir(run_dir: Path, cfg: RunConfig, *, resume: bool, overwrite: bool, force: bool,
                    is_main: bool, resume_from: str | None = None) -> dict[str, Any] | None:
    """Create or check the run folder; on resume return the checkpoint state to continue from.

    A folder holds a run once it has a checkpoint: a folder that a failed start left with only
    ``config.yaml``/logs is reused by the next start (saying so) and cannot be resumed. ``resume_from``
    (``best``, ``epoch_NNN``) continues from another checkpoint than ``last.pt`` (:func:`ckpt.branch_from`).
    """
    ckpt_dir = run_dir / "checkpoints"
    has_run = bool(ckpt.checkpoint_files(ckpt_dir))
    if resume:
        if not has_run:
            if (run_dir / "config.yaml").is_file():
                raise CheckpointError(f"--resume: {run_dir} has no checkpoint (the start that wrote its config.yaml "
                                      "stopped before saving one); start it again without --resume, e.g. "
                                      f"medseg train CONFIG --output {run_dir}")
            raise CheckpointError(f"--resume: {run_dir} holds no run (no config.yaml or checkpoints/)")
        source = ckpt.run_checkpoint(run_dir, resume_from)
        state = ckpt.load_checkpoint(source)
        diff = config_diff(ckpt.checkpoint_config(state, source), cfg.model_dump(mode="json"))
        if diff and not force:
            raise ConfigError("the config differs from the run being resumed:\n  " + "\n  ".join(diff)
                              + "\nresume with the run's own config, or pass --force to accept the changes")
        if diff and is_main:
            log.info("resuming with a changed config (--force):\n  " + "\n  ".join(diff))
        if resume_from is not None and is_main:
            moved, dest = ckpt.branch_from(source, state)
            log.info(f"resuming from {source} (epoch {state.get('epoch')}, step {state.get('step_in_epoch', 0)})"
                  + (f"; the later checkpoints {', '.join(p.name for p in moved)} were moved to {dest}"
                     if moved else ""))
        return state
    if has_run and not overwrite:
        raise ConfigError(f"{run_dir} already holds a run; use --resume to continue it or --overwrite to "
                          "replace it (or choose another --output / name)")
    if has_run and overwrite and is_main:
        for sub in ("checkpoints", "logs", "predictions", "metrics"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
    elif is_main and ((run_dir / "config.yaml").is_file() or (run_dir / "logs").is_dir()):
        log.info(f"note: {run_dir} holds no checkpoint (an earlier start stopped before saving one); "
              "starting the run there afresh")
        shutil.rmtree(run_dir / "logs", ignore_errors=True)
    return None


# ----------------------------------------------------------------------------------- trainer
class StopFlag:
    """SIGINT/SIGTERM -> save at the next step boundary and exit cleanly (second Ctrl-C aborts)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        log.info(f"\n{self.requested} received: saving a checkpoint after the next optimiser step "
              "(Ctrl-C again to abort without saving)")

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, rt: Runtime, state: dict[str, Any] | None) -> None:
        self.cfg, self.run_dir, self.rt = cfg, run_dir, rt
        self.dims = cfg.spatial_dims
        self.ckpt_dir = run_dir / "checkpoints"
        seed_everything(cfg.train.seed, cfg.train.deterministic)  # same seed on every rank: identical init
        model = build_model(cfg)
        if cfg.train.freeze_encoder:
            freeze_encoder(model)
        if cfg.train.sync_bn and rt.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(rt.device)
        if self.dims in (2, 3):
            model = model.to(memory_format=memory_format(rt, self.dims))
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.train.epochs)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.use_scaler)
        self.loss_fn = with_deep_supervision(create_loss(cfg.loss, num_classes=cfg.data.num_classes), model)
        self.loss_fn = self.loss_fn.to(rt.device)
        self.requires = set(getattr(self.loss_fn, "requires", set()) or set())
        # distance-based targets are built by the loader (in its workers when data.num_workers > 0);
        # contours are cheap min-pool erosions done on the device
        self.loader_targets = {r for r in self.requires if not r.startswith("contour")}
        self.model = model
        if rt.distributed:
            ids = [rt.device.index] if rt.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best = {"metric": cfg.train.best_metric, "mode": cfg.train.best_mode, "value": None, "epoch": None}
        self._rng_to_restore: dict[str, Any] | None = None  # set by _restore, applied before the next batch
        self._partial: dict[str, Any] | None = None  # the interrupted epoch's loss sums (mid-epoch checkpoint)
        if state is not None:
            self._restore(state)
        self.logger = RunLogger(run_dir / "logs", enabled=rt.is_main, tensorboard=cfg.train.tensorboard)
        if state is not None:
            self.logger.resume(self.epoch, self.global_step)
            if rt.is_main:
                remove_partial_writes(self.ckpt_dir)

    # ---------------------------------------------------------------- state
    def state_dict(self, rng_ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint; ``rng_ranks``: every rank's RNG states (DDP, from :meth:`_rng_of_ranks`)."""
        return {
            "format": "medseg-checkpoint-1",
            "model_name": self.cfg.model.name,
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "rng": rng_state(),
            "rng_ranks": rng_ranks,
            "epoch_partial": self._partial,
            "config": self.cfg.model_dump(mode="json"),
            "best": dict(self.best),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("model_name") != self.cfg.model.name:
            raise CheckpointError(f"the checkpoint is of model '{state.get('model_name')}', the config asks "
                                  f"for '{self.cfg.model.name}'")
        load_model_weights(self.model, state["model"], "the checkpoint")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.best = state["best"]
        ranks = state.get("rng_ranks")
        same_world = isinstance(ranks, list) and len(ranks) == self.rt.world_size
        # each DDP rank continues from its own generators (validation shards, per-rank batch sizes and
        # anything else rank-dependent make them differ); another world size gets rank 0's
        self._rng_to_restore = ranks[self.rt.rank] if same_world else state["rng"]
        self._partial = state.get("epoch_partial")

    def _rng_of_ranks(self) -> list[dict[str, Any]] | None:
        """Every rank's RNG states, gathered on all ranks (a collective: every rank calls it), or None."""
        if not self.rt.distributed:
            return None
        gathered: list[Any] = [None] * self.rt.world_size
        dist.all_gather_object(gathered, rng_state())
        return gathered

    def save(self, tag: str | None = None, best: bool = False) -> None:
        """Write the checkpoint(s) from rank 0; every rank calls it (the RNG states are gathered)."""
        rng_ranks = self._rng_of_ranks()
        if not self.rt.is_main:
            return
        state = self.state_dict(rng_ranks)
        ckpt.save_checkpoint(state, self.ckpt_dir / "last.pt")
        if tag:
            ckpt.save_checkpoint(state, self.ckpt_dir / f"{tag}.pt")
            ckpt.prune_epoch_checkpoints(self.ckpt_dir, self.cfg.train.keep_last)
        if best:
            ckpt.save_checkpoint(state, self.ckpt_dir / "best.pt")

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict[str, Any]:
        from medseg.data import build_loader
        from medseg.data.loader import cached_dataset, require_cases

        cfg, rt = self.cfg, self.rt
        sampler = None
        probe = build_loader(cfg.data, "train", seed=cfg.train.seed, epoch=0)
        require_cases(cached_dataset(cfg.data, "val"), "val", cfg.data)  # no val split = no best.pt: stop now
        if rt.distributed:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(probe.dataset, num_replicas=rt.world_size, rank=rt.rank,
                                         shuffle=True, seed=cfg.train.seed, drop_last=True)
        steps = len(probe) if sampler is None else math.ceil(len(sampler) / cfg.data.batch_size)
        if cfg.train.max_steps_per_epoch:
            steps = min(steps, cfg.train.max_steps_per_epoch)
        del probe
        bar = self._progress(total=steps * cfg.train.epochs, initial=steps * self.epoch + self.step_in_epoch)
        status = "finished"
        stop_at = cfg.train.epochs if not cfg.train.session_epochs else min(
            cfg.train.epochs, self.epoch + cfg.train.session_epochs)
        with StopFlag() as stop:
            while self.epoch < stop_at:
                if hasattr(self.loss_fn, "set_epoch"):
                    self.loss_fn.set_epoch(self.epoch)
                if sampler is not None:
                    sampler.set_epoch(self.epoch)
                loader = build_loader(cfg.data, "train", seed=cfg.train.seed, epoch=self.epoch, sampler=sampler,
                                      targets=self.loader_targets)
                interrupted = self._train_epoch(loader, steps, bar, stop)
                if interrupted:
                    self.save()
                    status = "interrupted"
                    if rt.is_main:
                        log.info(f"checkpoint saved to {self.ckpt_dir / 'last.pt'} (epoch {self.epoch}, step "
                              f"{self.step_in_epoch}); continue with: medseg train --resume {self.run_dir}")
                    break
                self._end_epoch(steps)
        if status == "finished" and self.epoch < cfg.train.epochs:
            status = "paused"
            if rt.is_main:
                log.info(f"stopped after train.session_epochs; continue with: medseg train --resume {self.run_dir}")
        bar.close()
        self.logger.close()
        return {"run_dir": str(self.run_dir), "status": status, "best_metric": self.best["value"],
                "best_epoch": self.best["epoch"], "metric": self.best["metric"], "epochs": self.epoch}

    def _progress(self, total: int, initial: int):
        from medseg.engine.runtime import progress

        return progress(total=total, initial=initial, disable=not (self.rt.is_main and self.cfg.train.progress),
                        desc="train", unit="step", leave=True)

    def _train_epoch(self, loader, steps: int, bar, stop: StopFlag) -> bool:
        """Train one epoch, or its rest after a mid-epoch checkpoint; True when a signal stopped it.

        Resumed, the epoch's batches after ``step_in_epoch`` come from the same data order (the done ones
        are never loaded, :func:`skip_batches`), the checkpoint's RNG states are restored right before the
        next batch, and the loss averages continue from the saved sums. A signal stops the epoch only after
        an optimiser step, never inside a gradient-accumulation window (a checkpoint holds no gradients).
        """
        cfg, rt = self.cfg, self.rt
        self.model.train()
        skip = self.step_in_epoch
        done = (self._partial or {}) if skip else {}
        self._partial = None
        sums: dict[str, float] = dict(done.get("sums", {}))
        count, images_seen = int(done.get("count", 0)), int(done.get("images", 0))
        t0 = time.perf_counter() - float(done.get("time_s", 0.0))
        batches = iter(skip_batches(loader, skip))
        if self._rng_to_restore is not None:  # resumed: the generators exactly as the checkpoint left them
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        for step, batch in enumerate(batches, start=skip):
            if step >= steps:
                break
            update = (step + 1) % cfg.train.accumulate == 0 or step + 1 == steps
            terms = self._train_step(batch, step, last=(step + 1 == steps))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            images_seen += batch["image"].shape[0]
            self.step_in_epoch = step + 1
            self.global_step += 1
            bar.update(1)
            bar.set_postfix(epoch=self.epoch, loss=f"{terms['loss']:.4f}", refresh=False)
            if self.global_step % cfg.train.log_every == 0:
                elapsed = time.perf_counter() - t0
                self.logger.step({"epoch": self.epoch, "step": step, "global_step": self.global_step,
                                  **{f"loss/{k}" if k != "loss" else k: v for k, v in terms.items()},
                                  "lr": self.optimizer.param_groups[0]["lr"],
                                  "images_per_s": images_seen * rt.world_size / max(elapsed, 1e-9),
                                  "memory_mb": memory_mb(rt.device)})
            if update and self._stop_everywhere(stop):
                self._partial = {"sums": sums, "count": count, "images": images_seen,
                                 "time_s": time.perf_counter() - t0}
                return True
        self._epoch_train = {k: v / max(count, 1) for k, v in sums.items()}
        self._epoch_time = time.perf_counter() - t0
        self._epoch_images = images_seen * rt.world_size
        return False

    def _stop_everywhere(self, stop: StopFlag) -> bool:
        flag = stop.requested is not None
        if self.rt.distributed:
            t = torch.tensor([float(flag)], device=self.rt.device)
            dist.all_reduce(t)
            flag = bool(t.item() > 0)
        return flag

    def _train_step(self, batch: dict[str, Any], step: int, last: bool) -> dict[str, float]:
        cfg, rt = self.cfg, self.rt
        images = batch["image"].to(rt.device, non_blocking=True).contiguous(
            memory_format=memory_format(rt, self.dims))
        batch = {**batch, "image": images, "label": batch["label"].to(rt.device, non_blocking=True)}
        for key in self.requires:
            if key in batch and torch.is_tensor(batch[key]):
                batch[key] = batch[key].to(rt.device, non_blocking=True)
        if self.requires:
            from medseg.ops import prepare_targets

            batch = prepare_targets(batch, self.requires, num_classes=cfg.data.num_classes)
        with rt.autocast():
            outputs = self.model(images)
        terms = self.loss_fn(outputs, batch)
        loss = terms["loss"]
        self._check_finite(loss, batch, step)
        (self.scaler.scale(loss / cfg.train.accumulate)).backward()
        if (step + 1) % cfg.train.accumulate == 0 or last:
            if cfg.train.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return {k: float(v.detach()) for k, v in terms.items()}

    def _check_finite(self, loss: torch.Tensor, batch: dict[str, Any], step: int) -> None:
        ok = torch.isfinite(loss.detach()).float()
        if self.rt.distributed:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() < 1:
            ids = [m.get("id") for m in batch.get("meta", [])]
            last = self.ckpt_dir / "last.pt"
            kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
            raise TrainingError(f"non-finite loss ({float(loss.detach()):.4g}) at epoch {self.epoch}, step {step} "
                                f"(global step {self.global_step}), batch cases {ids}; training stopped, {kept}. "
                                "Lower optim.lr, set train.grad_clip, or check these cases.")

    def _end_epoch(self, steps: int) -> None:
        cfg, rt = self.cfg, self.rt
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trained with
        self.scheduler.step()
        record: dict[str, Any] = {"epoch": self.epoch, "lr": lr,
                                  **{f"train_{k}": v for k, v in self._epoch_train.items()},
                                  "train_time_s": round(self._epoch_time, 3),
                                  "images_per_s": round(self._epoch_images / max(self._epoch_time, 1e-9), 3),
                                  "memory_mb": round(memory_mb(rt.device), 1)}
        is_best = False
        if (self.epoch + 1) % cfg.train.val_every == 0 or self.epoch + 1 == cfg.train.epochs:
            val = validate(self.model, cfg, rt, self.loss_fn)
            record.update({f"val_{k}": v for k, v in val.items()})
            is_best = self._update_best(val)
        self.epoch += 1
        self.step_in_epoch = 0
        self.logger.epoch(record)
        tag = f"epoch_{self.epoch:03d}" if self.epoch % cfg.train.save_every == 0 else None
        self.save(tag=tag, best=is_best)

    def _update_best(self, val: dict[str, float]) -> bool:
        name = self.best["metric"]
        if name not in val:
            raise ConfigError(f"train.best_metric '{name}' is not computed in validation; "
                              f"choose one of {sorted(val)}")
        value = val[name]
        if value is None or not np.isfinite(value):
            return False
        current = self.best["value"]
        better = current is None or (value > current if self.best["mode"] == "max" else value < current)
        if better:
            self.best.update(value=float(value), epoch=self.epoch)
        return better


def remove_partial_writes(folder: Path) -> None:
    """Delete the temporary files (``.NAME.XXXX.tmp``) that a process killed while writing a checkpoint left
    in ``folder``: never valid checkpoints, each as large as one."""
    for tmp in folder.glob(".*.pt.*.tmp"):
        tmp.unlink(missing_ok=True)


class _SkipBatches(torch.utils.data.Sampler):
    """A batch sampler without its first ``n`` batches (only their indices are drawn, nothing is loaded)."""

    def __init__(self, batches: torch.utils.data.Sampler, n: int) -> None:
        self.batches, self.n = batches, n

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.n, None)

    def __len__(self) -> int:
        return max(len(self.batches) - self.n, 0)


def skip_batches(loader: torch.utils.data.DataLoader, n: int) -> torch.utils.data.DataLoader:
    """``loader`` without its first ``n`` batches: the same keys (order, augmentation and per-batch size
    seeds) for the batches after them, and the skipped ones are never read or augmented."""
    if n == 0:
        return loader
    return torch.utils.data.DataLoader(
        loader.dataset, batch_sampler=_SkipBatches(loader.batch_sampler, n), num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator, prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers)


# ------------------------------------------------------------------------------- validation
def validation_loss(loss_fn: nn.Module, logits: torch.Tensor, batch: dict[str, Any], num_classes: int) -> float:
    """The training loss on the main output; NaN for losses that need auxiliary outputs (deep supervision,
    MLN branches) which the main logits alone do not provide."""
    from medseg.losses._common import LossInputError

    requires = set(getattr(loss_fn, "requires", set()) or set())
    try:
        if requires:
            from medseg.ops import prepare_targets

            batch = prepare_targets(batch, requires, num_classes=num_classes)
        return float(loss_fn(logits, batch)["loss"])
    except LossInputError:
        return float("nan")


class _RankSubset(torch.utils.data.Sampler):
    """Cases rank, rank + world, ...: every validation case exactly once across ranks (no padding)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def validate(model: nn.Module, cfg: RunConfig, rt: Runtime, loss_fn: nn.Module | None = None) -> dict[str, float]:
    """Mean per-case Dice (foreground classes, NaN-aware) and loss on the validation split."""
    from medseg.data import build_loader, cached_dataset

    dataset = cached_dataset(cfg.data, "val")
    loader = build_loader(cfg.data, "val", seed=cfg.train.seed, dataset=dataset,
                          sampler=_RankSubset(len(dataset), rt.rank, rt.world_size))
    rows: list[tuple[str, list[float], float]] = []
    with eval_mode(model):
        for batch in loader:
            logits = case_logits(model, batch["image"], cfg, rt)
            label = batch["label"].to(rt.device)
            loss = float("nan")
            if loss_fn is not None:
                loss = validation_loss(loss_fn, logits, {**batch, "label": label}, cfg.data.num_classes)
            if cfg.data.nifti.regions:  # sigmoid WT/TC/ET outputs vs region targets, no argmax (docs/cwcd.md)
                from medseg.metrics.regions import region_batch_dice

                dice = region_batch_dice(torch.sigmoid(logits) >= cfg.eval.threshold, label > 0.5).cpu().numpy()
            else:
                pred = labels_from_probabilities(probabilities(logits), cfg.eval.threshold)
                gt = label[:, 0].long() if cfg.data.num_classes == 1 else label.long()
                dice = batch_dice(pred, gt, cfg.data.num_classes).cpu().numpy()
            for m, d in zip(batch["meta"], dice):
                rows.append((str(m.get("id")), [float(x) for x in d], loss))
    if rt.distributed:
        gathered: list[Any] = [None] * rt.world_size
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    per_case = np.array([np.nanmean(d) if not np.all(np.isnan(d)) else np.nan for _, d, _ in rows])
    # a binary case with empty prediction and empty GT is a perfect 1 (metrics-policy)
    if cfg.data.num_classes == 1:
        per_case = np.where(np.isnan(per_case), 1.0, per_case)
    losses = np.array([loss for _, _, loss in rows])
    return {"dice": float(np.nanmean(per_case)) if per_case.size else float("nan"),
            "loss": float(np.nanmean(losses)) if np.isfinite(losses).any() else float("nan"),
            "cases": len(rows)}


# ------------------------------------------------------------------------------------ entry
def train_run(cfg: RunConfig, run_dir: str | Path | None = None, *, resume: bool = False,
              overwrite: bool = False, force: bool = False, resume_from: str | None = None) -> dict[str, Any]:
    """Train the run described by ``cfg`` into ``run_dir`` (default ``output_dir/name``).

    ``resume`` continues from ``checkpoints/last.pt`` (or ``resume_from``: ``best``, ``epoch_NNN``), loaded
    weights-only (:func:`ckpt.load_checkpoint`).
    """
    rt = make_runtime(cfg.train, 2)
    init_distributed(rt)
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / cfg.name
    try:
        state = prepare_run_dir(run_dir, cfg, resume=resume, overwrite=overwrite, force=force,
                                is_main=rt.is_main, resume_from=resume_from)
        if rt.distributed:
            dist.barrier()  # every rank has checked the folder before rank 0 writes into it
        if rt.is_main:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_text(dump_config(cfg), run_dir / "config.yaml")
            env = environment_record(rt.describe(), cfg.train.seed, {"world_size": rt.world_size})
            ckpt.atomic_write_text(json.dumps(env, indent=2), run_dir / "env.json")
        if rt.distributed:
            dist.barrier()
        trainer = Trainer(cfg, run_dir, rt, state)
        if rt.is_main and cfg.train.progress:
            log.info(f"training {cfg.model.name} on {cfg.data.kind} ({rt.describe()}) -> {run_dir}")
        result = trainer.fit()
        if rt.distributed:
            dist.barrier()
        return result
    finally:
        if rt.distributed and dist.is_initialized():
            dist.destroy_process_group()
