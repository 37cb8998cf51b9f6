"""SwAV pretraining loop: data -> model -> swapped-prediction loss -> LARS step, with
atomic checkpoints, exact resume, JSON-lines + TensorBoard logs and collapse detection."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pretrain.batch_augment import BatchAugment
from pretrain.checkpoint import (
    FORMAT,
    Resumable,
    abandoned_epoch_checkpoints,
    discard_run,
    model_state_dict,
    newest_valid_checkpoint,
    release_state_dict,
    run_files,
)
from pretrain.config import DataConfig, PretrainConfig, config_from_dict, plan_batch
from pretrain.data import (
    DataGuard,
    EmptyDatasetError,
    EncodedBatch,
    EpochSampler,
    MultiCropDataset,
    collate_crops,
    color_placement,
    decode_crops,
    describe_pipeline,
)
from pretrain.loss import swav_loss
from pretrain.model import SwAVModel, build_trunk
from pretrain.optim import build_optimizer, lr_at
from pretrain.queue import EmbeddingQueue
from pretrain.synthetic import generate_dataset
from swavbench.core import durable, interrupt, ranks
from swavbench.core.config import differences
from swavbench.core.data_root import existing, resolve
from swavbench.core.distributed import DistInfo, cleanup, init_distributed
from swavbench.core.epochs import EpochLoop
from swavbench.core.paths import CHECKPOINT, RUN_CONFIG, TRAIN_LOG, epoch_checkpoint
from swavbench.core.state import CheckpointError, load_checkpoint, save_rotating
from swavbench.core.tracking import Tracker

log = logging.getLogger("swavbench.pretrain")

AUTO_DATASET = "cifar10-subset/train"  # data.path 'auto': this dataset under the data root, if present


class TrainingStopped(RuntimeError):
    """Training stopped on purpose (NaN/inf loss or collapse); the last good checkpoint is kept."""


class DataVanished(TrainingStopped):
    """The data went away mid-run (pretrain.data.DataGuard): every process stops before training on
    nothing, and the last checkpoint stays as it was."""


@dataclass
class RunState:
    epoch: int = 0  # epoch in progress
    batch: int = 0  # batches of ``epoch`` already done
    iteration: int = 0  # global optimisation steps done
    images_seen: int = 0  # images the steps trained on, over all processes
    images_skipped: int = 0  # images drawn but unreadable, over all processes


def resolve_data_path(cfg: DataConfig, out_dir: Path, seed: int = 0) -> Path:
    """'auto' -> the CIFAR-10 subset under the data root when present, else the generated set;
    'generated' -> generate; anything else -> a dataset under the data root (or an absolute path)."""
    if cfg.path == "auto" and resolve(AUTO_DATASET).is_dir():
        return resolve(AUTO_DATASET)
    if cfg.path in ("auto", "generated"):
        return (
            generate_dataset(out_dir / "generated-data", cfg.generated_images, cfg.generated_size, seed=seed)
            / "train"
        )
    return existing(cfg.path, "pretraining images (data.path)")


def build_model(cfg: PretrainConfig) -> SwAVModel:
    m = cfg.model
    return SwAVModel(
        build_trunk(m.arch, small_stem=m.small_stem, width_multiplier=m.width_multiplier),
        m.hidden_mlp,
        m.feat_dim,
        n_prototypes=m.n_prototypes,
    )


def _rng_state() -> dict:
    """Every generator's state as tensors and plain data (checkpoints are read with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# fields that may differ between a run and its resumption: how it runs, not what it computes
RESUMABLE_CHANGES = (
    "data.num_workers",
    "optim.epochs",  # extending a run: allowed, with a warning (the schedule changes from there)
    "run.precision",  # e.g. fp32 after a NaN in bf16, as the NaN error suggests
    "run.compile",
    "run.channels_last",
    "run.checkpoint_every_iters",
    "run.keep_epoch_checkpoints",
    "run.log_every_iters",
    "run.collapse_patience",
    "run.collapse_tol",
    "run.deterministic",
    "run.max_iters",
    "run.max_unreadable",
    "run.max_empty_batches",
    "run.wandb",
)


def resume_conflicts(saved: dict, wanted: PretrainConfig) -> list[str]:
    """``key: saved -> wanted`` for every setting that differs and would make a resumed run a hybrid
    (``saved``: the checkpoint's config dict; keys it predates are not conflicts)."""
    return differences(saved, wanted.to_dict(), ignore=RESUMABLE_CHANGES)


def read_log(path: Path) -> tuple[list[dict], int]:
    """(records, number of lines that do not parse): a crash or a full disk can tear the last line."""
    records, torn = [], 0
    if path.is_file():
        for ln in path.read_text(errors="replace").splitlines():
            if not ln.strip():
                continue
            try:
                records.append(json.loads(ln))
            except json.JSONDecodeError:
                torn += 1
    return records, torn


def _truncate_log(path: Path, iteration: int) -> None:
    """Drop log lines written after the checkpoint being resumed (they will be redone) and torn lines."""
    if not path.is_file():
        return
    records, torn = read_log(path)
    if torn:
        log.warning("%s: dropped %d torn line(s) (an interrupted write)", path, torn)
    keep = [r for r in records if r.get("iteration", 0) <= iteration]
    durable.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def mixed_precision(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of ``run.precision`` (fp32: none)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


class Trainer:
    """Owns one pretraining run in ``out_dir``; ``fit()`` trains to the end, returns the checkpoint path."""

    def __init__(
        self,
        cfg: PretrainConfig,
        out_dir: str | Path,
        *,
        resume: str | Path | bool = False,
        restart: bool = False,
        progress: bool = True,
    ):
        """``resume``: True continues from the newest readable checkpoint in ``out_dir``, a path from that
        file; ``restart`` discards the run in ``out_dir`` first. With neither, an existing run is an error."""
        self.cfg, self.out_dir, self.progress = cfg, Path(out_dir), progress
        self.info: DistInfo = init_distributed()
        self.device = ranks.local_device(self.info.local_rank)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        durable.remove_stale_temps(self.out_dir)
        self.ckpt_path = self.out_dir / CHECKPOINT
        resuming = self._find_resume(resume=resume, restart=restart)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(cfg.run.seed)
        np.random.seed(cfg.run.seed)
        random.seed(cfg.run.seed)

        self._build_data()
        self._build_model()
        self.state = RunState()
        self._stuck = 0  # steps in a row near ln K (the collapse check)
        self.wandb_id = ""  # the W&B run of this training run (swavbench.core.tracking), kept in checkpoints
        if resuming is not None:
            self._load(resuming)
        elif self.info.is_main:
            _truncate_log(self.out_dir / TRAIN_LOG, 0)
        if self.info.is_main:
            resolved = {**cfg.to_dict(), "resolved": asdict(self.plan)}  # what this run trains with
            durable.write_text(self.out_dir / RUN_CONFIG, yaml.safe_dump(resolved, sort_keys=False))

    def _build_data(self) -> None:
        """The multi-crop dataset, its batch plan and sampler, the vanished-data guard and the loader."""
        cfg = self.cfg
        self.data_root = resolve_data_path(cfg.data, self.out_dir, cfg.run.seed)
        self.color_on = color_placement(cfg.data, self.device)
        self.dataset = MultiCropDataset(
            self.data_root, cfg.data, cfg.run.seed, colour_in_workers=self.color_on == "workers"
        )
        bs, ws = cfg.optim.batch_size, self.info.world_size
        self.plan = plan_batch(cfg, ws)
        if self.info.is_main:
            log.info(
                "global batch %d (%d process(es) x %d; published: %d, lr scaling: %s): lr %.4g -> %.4g, "
                "prototypes frozen for %d iterations",
                self.plan.global_batch,
                ws,
                bs,
                self.plan.published_global_batch,
                self.plan.lr_scaling,
                self.plan.base_lr,
                self.plan.final_lr,
                self.plan.freeze_prototypes_niters,
            )
        self.sampler = EpochSampler(len(self.dataset), bs, cfg.run.seed, rank=self.info.rank, world_size=ws)
        self.iters_per_epoch = self.sampler.batches_per_epoch()
        if self.iters_per_epoch == 0:
            raise EmptyDatasetError(
                f"{self.data_root} has {len(self.dataset)} images, fewer than one batch of "
                f"{bs} x {ws} processes: lower optim.batch_size or add images"
            )
        self.guard = DataGuard(
            self.data_root,
            self.iters_per_epoch * bs * ws,
            cfg.run.max_unreadable,
            cfg.run.max_empty_batches,
        )
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            self.dataset,
            batch_size=bs,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate_crops,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            multiprocessing_context="fork" if workers > 0 and os.name == "posix" else None,
            worker_init_fn=interrupt.quiet_worker,
        )

    def _build_model(self) -> None:
        """The model (SyncBN and DDP in a group), its optimiser, AMP scaler, queue and batch augmentation."""
        cfg, bs, ws = self.cfg, self.cfg.optim.batch_size, self.info.world_size
        model = build_model(cfg)
        grouped = ws > 1 or (dist.is_available() and dist.is_initialized())  # a group of one: the GPU check
        if grouped and cfg.run.sync_bn:  # statistics over the global batch, on GPUs and on CPU (gloo)
            model = ranks.sync_batchnorm(model)
        self.channels_last = cfg.run.channels_last and self.device.type == "cuda"
        self.model = model.to(
            self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format
        )
        if cfg.run.compile:  # in place: state-dict keys stay those of the plain trunk
            self.model.trunk.compile()
        self.ddp: nn.Module = ranks.data_parallel(self.model, self.device, grouped=grouped)
        o = cfg.optim
        self.optimizer = build_optimizer(
            self.model,
            o.base_lr,
            o.momentum,
            weight_decay=o.weight_decay,
            lars=o.lars,
            trust=o.lars_trust,
            exclude_bias_bn=o.lars_exclude_bias_bn,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.run.precision == "fp16")
        self.queue = None
        if cfg.swav.queue_length > 0:
            length = max(bs, cfg.swav.queue_length // ws // bs * bs)
            self.queue = EmbeddingQueue(
                len(cfg.swav.crops_for_assign),
                length,
                cfg.model.feat_dim,
                start_epoch=cfg.swav.epoch_queue_starts,
                device=self.device,
            )
        self.augment = (
            BatchAugment(cfg.data, colour=self.color_on == "device")
            if cfg.data.pipeline != "reference"
            else None
        )
        if self.info.is_main:
            log.info("multi-crop pipeline: %s", describe_pipeline(cfg.data, self.color_on, self.device))

    # -- checkpoints -------------------------------------------------------------------
    def _find_resume(self, *, resume: str | Path | bool, restart: bool) -> Resumable | None:
        """The checkpoint to continue from (None: start at iteration 0), without changing any file
        unless ``restart`` (then the old run's checkpoints and log are deleted, by the main process)."""
        if restart:
            if self.info.is_main:
                gone = discard_run(self.out_dir)
                if gone:
                    log.warning("--restart: discarded %s", ", ".join(p.name for p in gone))
            return None
        if resume and resume is not True:  # a branch: epoch checkpoints past it belong to the old one
            found = Resumable(Path(resume), load_checkpoint(resume, map_location="cpu"), {})
            if self.info.is_main:
                for p in abandoned_epoch_checkpoints(self.out_dir, found):
                    log.warning("resuming from %s: %s is renamed %s.abandoned", found.path, p.name, p.name)
                    durable.move_aside(p, p.with_name(p.name + ".abandoned"))
            return found
        if not resume:
            if found := run_files(self.out_dir):
                raise CheckpointError(
                    f"{self.out_dir} already holds a run ({', '.join(p.name for p in found)}): "
                    "pass --resume to continue it, --restart to discard it, or another --out"
                )
            return None
        # the first process chooses (its view of the files decides), every other loads the same file; any
        # process that cannot read it stops them all. On the CPU: RNG states must stay CPU tensors
        found, mine = None, None
        if self.info.is_main:
            try:
                found = newest_valid_checkpoint(self.out_dir, map_location="cpu")
            except CheckpointError as e:
                mine = e
        path, error = ranks.all_gather_objects((found and str(found.path), mine and str(mine)))[0]
        if path is not None and found is None and not error:
            try:
                found = Resumable(Path(path), load_checkpoint(path, map_location="cpu"), {})
            except CheckpointError as e:
                mine = e
        if errors := [e for e in ranks.all_gather_objects(mine and str(mine)) if e]:
            raise mine or CheckpointError(errors[0])
        if found is None and (self.out_dir / TRAIN_LOG).is_file() and self.info.is_main:
            log.info("no checkpoint in %s yet: starting at iteration 0 (logged steps redone)", self.out_dir)
        return found

    def _load(self, found: Resumable) -> None:
        path, ckpt = found.path, found.ckpt
        if ckpt.get("format") != FORMAT:
            raise CheckpointError(
                f"{path} is not a swav-bench training checkpoint (format {ckpt.get('format')!r}); "
                "to start from released weights, load them as a trunk instead"
            )
        if ckpt.get("supervised"):
            raise CheckpointError(f"{path} is a supervised baseline checkpoint, not a SwAV run")
        saved = config_from_dict(ckpt["config"])
        changed = resume_conflicts(ckpt["config"], self.cfg)
        if changed:
            raise CheckpointError(
                f"{path} was trained with another configuration ({'; '.join(changed)}): resuming would mix "
                "two runs. Use the run's own settings (its config.yaml), another --out, or --restart"
            )
        plan = ckpt.get("batch_plan")
        if plan and plan.get("global_batch") != self.plan.global_batch and self.info.is_main:
            log.warning(
                "resuming at global batch %d (%d processes); the run so far trained at %d: lr %.4g -> %.4g",
                self.plan.global_batch,
                self.plan.world_size,
                plan["global_batch"],
                plan.get("base_lr", float("nan")),
                self.plan.base_lr,
            )
        if saved.optim.epochs != self.cfg.optim.epochs and self.info.is_main:
            log.warning(
                "optim.epochs changed from %d to %d: the rest of the run follows the new lr schedule",
                saved.optim.epochs,
                self.cfg.optim.epochs,
            )
        self.model.load_state_dict(model_state_dict(ckpt["state_dict"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        queues = ckpt.get("queue")
        if self.queue is not None and queues:
            if len(queues) != self.info.world_size:
                raise CheckpointError(
                    f"{path} holds queues of {len(queues)} processes, this run has {self.info.world_size}"
                )
            self.queue.load_state_dict(queues[self.info.rank])
        self.state = RunState(
            ckpt["epoch"],
            ckpt["batch"],
            ckpt["iteration"],
            ckpt.get("images_seen", 0),
            ckpt.get("images_skipped", 0),
        )
        if ckpt.get("rng"):
            _set_rng_state(ckpt["rng"])
        self.wandb_id = str(ckpt.get("wandb_id") or "")
        if self.info.is_main:
            moved = found.set_aside_unreadable()
            if path.resolve() != self.ckpt_path.resolve():  # the run's latest is the one it goes on from
                save_rotating(ckpt, self.ckpt_path)
            _truncate_log(self.out_dir / TRAIN_LOG, self.state.iteration)
            log.info(
                "resumed from %s at epoch %d, batch %d (iteration %d)%s",
                found.describe(),
                self.state.epoch,
                self.state.batch,
                self.state.iteration,
                f"; unreadable files kept as {', '.join(p.name for p in moved)}" if moved else "",
            )

    def save(self) -> None:
        queues = None
        if self.queue is not None:
            mine = self.queue.state_dict()
            if self.info.world_size > 1:
                queues = [None] * self.info.world_size
                dist.all_gather_object(queues, mine)
            else:
                queues = [mine]
        if not self.info.is_main:
            return
        s = self.state
        ckpt = {
            "format": FORMAT,
            "state_dict": release_state_dict(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "queue": queues,
            "epoch": s.epoch,
            "batch": s.batch,
            "iteration": s.iteration,
            "images_seen": s.images_seen,
            "images_skipped": s.images_skipped,
            "wandb_id": self.wandb_id,
            "config": self.cfg.to_dict(),
            "batch_plan": asdict(self.plan),
            "rng": _rng_state(),
        }
        save_rotating(ckpt, self.ckpt_path)
        keep = self.cfg.run.keep_epoch_checkpoints
        if s.batch == 0 and keep and s.epoch % keep == 0 and s.epoch > 0:
            save_rotating(ckpt, self.out_dir / epoch_checkpoint(s.epoch))

    # -- training ----------------------------------------------------------------------
    def step(self, crops: list[torch.Tensor], epoch: int) -> float:
        """One optimisation step on a multi-crop batch; returns the loss."""
        cfg, sw = self.cfg, self.cfg.swav
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(
                self.state.iteration,
                self.iters_per_epoch,
                cfg.optim.epochs,
                base_lr=self.plan.base_lr,
                final_lr=self.plan.final_lr,
                warmup_epochs=cfg.optim.warmup_epochs,
                start_warmup=self.plan.start_warmup,
            )
        self.model.normalize_prototypes()
        crops = [c.to(self.device, non_blocking=True) for c in crops]
        if self.augment is not None:  # fast pipeline: colour, grayscale, blur, normalisation here
            g = torch.Generator().manual_seed(
                (cfg.run.seed * 1_000_003 + self.state.iteration) * 997 + self.info.rank
            )
            crops = [self.augment(c, g) for c in crops]
        if self.channels_last:
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        batch = crops[0].shape[0]
        with mixed_precision(self.device, cfg.run.precision):
            z = self.ddp(crops)
        z = z.float()
        queue = self.queue.active(epoch) if self.queue is not None else None
        heads = self.model.prototype_weights()
        loss = sum(
            swav_loss(
                z,
                w.float(),
                len(crops),
                crops_for_assign=sw.crops_for_assign,
                temperature=sw.temperature,
                epsilon=sw.epsilon,
                iterations=sw.sinkhorn_iterations,
                queue=queue,
            )
            for w in heads
        ) / len(heads)
        if not ranks.all_ranks(bool(torch.isfinite(loss))):
            raise TrainingStopped(
                f"loss is {loss.item()} at iteration {self.state.iteration} (epoch {epoch}); "
                "stopped before the update. "
                f"The last good checkpoint is {self.ckpt_path}. "
                "Lower optim.base_lr, use run.precision=fp32, or check the data."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.state.iteration < self.plan.freeze_prototypes_niters:
            for w in heads:
                w.grad = None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.queue is not None:
            self.queue.push(z, sw.crops_for_assign, batch, epoch=epoch)
        return loss.item()

    def fit(self) -> Path:
        """Train from where the run stands to ``optim.epochs`` (or ``run.max_iters``) on the one step loop:
        its writer is the rotating checkpoint, its hooks the vanished-data guard, the collapse check and
        the training log."""
        cfg, s = self.cfg, self.state
        loop = EpochLoop(
            None,
            None,
            epochs=cfg.optim.epochs,
            per_epoch=self.iters_per_epoch,
            total=cfg.run.max_iters,
            every=cfg.run.checkpoint_every_iters,
            writer=self._write,
            desc=f"SwAV {cfg.model.arch}",
            progress=self.progress,
        )
        if s.iteration >= loop.total:
            log.info("run in %s is already complete (%d iterations)", self.out_dir, s.iteration)
            return self.ckpt_path
        loop.start, loop.start_batch = s.epoch, s.batch
        # TensorBoard, and W&B with run.wandb: a resumed or requeued run continues its W&B run
        tracker = Tracker(
            self.out_dir,
            name=self.out_dir.name,
            kind="pretrain",
            project=cfg.run.wandb,
            run_id=self.wandb_id,
            config=cfg.to_dict(),
            purge_step=s.iteration,
        )
        self.wandb_id = tracker.id or self.wandb_id
        steps = StepLog(
            self.out_dir / TRAIN_LOG, tracker, every=cfg.run.log_every_iters, main=self.info.is_main
        )
        skipped_before = s.images_skipped
        try:
            for epoch, first in loop.run():
                self.sampler.set_epoch(epoch, first)
                self.guard.new_epoch()
                for b, (crops, skipped) in enumerate(self.loader, start=first):
                    crops, read = self._guarded(crops, skipped, epoch)
                    if crops:
                        loss = self.step(crops, epoch)
                        s.images_seen += read
                        self._collapse_check(loss)
                        steps.add(loss, read)
                    s.batch, s.iteration = b + 1, s.iteration + 1
                    last = loop.finished(epoch, b)
                    steps.write(
                        s,
                        epoch + s.batch / self.iters_per_epoch,
                        lr=self.optimizer.param_groups[0]["lr"],
                        bar=loop.bar,
                        last=last,
                    )
                    loop.stepped(epoch, b)
                    if last:
                        break
                if s.batch == self.iters_per_epoch:
                    loop.epoch_done(epoch)
                if s.images_skipped > skipped_before and self.info.is_main:
                    log.warning(
                        "%d unreadable images skipped so far (see warnings above for the files)",
                        s.images_skipped,
                    )
        finally:
            if loop.bar is not None:  # also when a stop escapes the loop
                loop.bar.close()
            tracker.close()
        return self.ckpt_path

    def _write(self, epoch: int, batch: int) -> None:
        """The step loop's writer: the position, then the rotating checkpoint (``save``)."""
        self.state.epoch, self.state.batch = epoch, batch
        self.save()

    def _guarded(self, crops: list, skipped: int, epoch: int) -> tuple[list, int]:
        """The batch's crops (decoded here with device-decode; none when any process has nothing readable:
        every process skips the step together) and the images read over all processes. Stops the run when
        the data vanished (``DataGuard``)."""
        s = self.state
        if isinstance(crops, EncodedBatch):  # device-decode: decode and cut here
            crops, lost = decode_crops(crops, self.dataset.specs, self.device)
            skipped += lost
        read, skipped, empty = map(
            int, ranks.all_sum([crops[0].shape[0] if crops else 0, skipped, not crops])
        )
        s.images_skipped += skipped
        if why := self.guard.check(skipped, empty=bool(empty)):
            kept = (
                f"the last checkpoint is {self.ckpt_path}"
                if self.ckpt_path.is_file()
                else "no checkpoint was saved yet"
            )
            raise DataVanished(
                f"{why}. Stopped at iteration {s.iteration} (epoch {epoch}) after training on "
                f"{s.images_seen} images; {kept}"
            )
        return ([] if empty else crops), read

    def _collapse_check(self, loss: float) -> None:
        """Stops the run when the loss stays within ``run.collapse_tol`` of ln K for ``run.collapse_patience``
        steps past the frozen prototypes (every sample gets the uniform code)."""
        cfg = self.cfg
        ln_k = sum(math.log(k) for k in cfg.model.n_prototypes) / len(cfg.model.n_prototypes)
        near = abs(loss - ln_k) < cfg.run.collapse_tol
        self._stuck = (
            self._stuck + 1 if near and self.state.iteration >= self.plan.freeze_prototypes_niters else 0
        )
        if ranks.any_rank(self._stuck >= cfg.run.collapse_patience):  # every process stops together
            raise TrainingStopped(
                f"collapse: loss stayed within {cfg.run.collapse_tol} of ln K = {ln_k:.3f} "
                f"for {self._stuck} iterations (every sample gets the uniform code). "
                f"Last good checkpoint: {self.ckpt_path}. Try a lower optim.base_lr, a longer "
                "swav.freeze_prototypes_niters, a larger swav.epsilon or a queue."
            )


class StepLog:
    """The training log of the first process: every ``every`` iterations and at the last, the mean loss of
    the steps since, lr, speed and skipped images to train_log.jsonl, the tracker and the progress bar."""

    def __init__(self, path: Path, tracker: Tracker, *, every: int, main: bool):
        self.path, self.tracker, self.every, self.main = path, tracker, every, main
        self.window: list[float] = []
        self.since, self.images = time.perf_counter(), 0

    def add(self, loss: float, images: int) -> None:
        self.window.append(loss)
        self.images += images

    def write(self, s: RunState, epoch: float, *, lr: float, bar: tqdm, last: bool) -> None:
        if not (self.main and self.window and (s.iteration % self.every == 0 or last)):
            return
        dt = time.perf_counter() - self.since
        rec = {
            "iteration": s.iteration,
            "epoch": epoch,
            "loss": sum(self.window) / len(self.window),
            "lr": lr,
            "images_per_s": self.images / dt,
            "ms_per_step": 1000 * dt / len(self.window),
            "skipped_images": s.images_skipped,
            "time": time.time(),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.tracker.log(
            {f"train/{k}": rec[k] for k in ("loss", "lr", "images_per_s", "ms_per_step")}, s.iteration
        )
        bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.3g}", img_s=f"{rec['images_per_s']:.0f}")
        self.window, self.since, self.images = [], time.perf_counter(), 0


def pretrain(
    cfg: PretrainConfig,
    out_dir: str | Path,
    *,
    resume: str | Path | bool = False,
    restart: bool = False,
    progress: bool = True,
) -> Path:
    """Run (or resume) SwAV pretraining into ``out_dir``; returns the final checkpoint path.

    Under torch.distributed every process waits for the others (rank 0 writes the last
    checkpoint) and leaves the process group before returning: a process that exits with
    live gloo connections can abort."""
    started_here = not (dist.is_available() and dist.is_initialized())
    try:
        path = Trainer(cfg, out_dir, resume=resume, restart=restart, progress=progress).fit()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return path
    finally:
        if started_here:
            cleanup()
