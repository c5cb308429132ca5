"""``train()``: the fixed DataComp recipe on open_clip, one loop for every scale and for the synth models.

Model, transforms, tokenizer, loss (``ClipLoss`` with local loss + gather with grad) and the cosine
schedule (``open_clip_train.scheduler.cosine_lr``) come from open_clip; the AdamW parameter groups and
the step mirror ``open_clip_train.train.train_one_epoch`` (spec §5.2). What differs from the original
is in the weak spots it fixes (spec §7.3): an exact step count and global batch, step-level
checkpoints with an exact resume, and refusing to resume a different run under the same name.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datacomp.errors import DataCompError, MissingDependencyError
from datacomp.io import write_record
from datacomp.train import distributed as D
from datacomp.train.checkpoint import (
    FORMAT_VERSION,
    identity_diff,
    link_or_copy,
    load_checkpoint,
    save_checkpoint,
    write_info_pkl,
    write_params,
)
from datacomp.train.config import Layout, TrainConfig, plan_layout
from datacomp.train.data import (
    BatchStream,
    SampleReader,
    StreamPlan,
    make_loader,
    next_batch,
    resolve_sources,
    split_data_arg,
)

log = logging.getLogger("datacomp.train")


@dataclass
class TrainResult:
    exp_dir: Path
    checkpoint: Path  # <exp_dir>/checkpoints/epoch_latest.pt
    record: Path  # <exp_dir>/train_record.json
    info: Path  # <exp_dir>/info.pkl
    steps: int  # optimiser steps of the whole run
    global_batch: int
    samples_seen: int
    seconds: float  # wall time of this call
    samples_per_second: float  # training throughput of this call (0 if nothing was left to do)
    start_step: int = 0  # > 0 when this call resumed a run
    losses: list[float] = field(default_factory=list)  # loss per step run by this call (rank 0)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's split: no weight decay on gains, biases, norms and ``logit_scale``."""
    def exclude(n: str, p: torch.Tensor) -> bool:
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": weight_decay},
    ]


def _effective_precision(precision: str, device: torch.device) -> str:
    if device.type == "cpu" and precision in ("amp", "fp16"):
        log.warning("precision %s needs a GPU; training in fp32 on the CPU", precision)
        return "fp32"
    return precision


def _identity(config: TrainConfig, sources: list[Any], layout: Layout) -> dict[str, Any]:
    """What must match for a resume: the recipe, the data, and the process layout the streams depend on."""
    return {
        "config": config.to_dict(),
        "data": [s.describe() for s in sources],
        "layout": {"world_size": layout.world_size, "accum_freq": layout.accum_freq},
    }


class _Reporter:
    """Optional TensorBoard / wandb scalars (only when asked for; never required)."""

    def __init__(self, report_to: tuple[str, ...], exp_dir: Path, name: str, params: dict[str, Any]):
        self.tb = self.wandb = None
        for target in report_to:
            if target == "tensorboard":
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise MissingDependencyError("tensorboard", why="--report-to tensorboard") from None
                self.tb = SummaryWriter(str(exp_dir / "tensorboard"))
            elif target == "wandb":
                try:
                    import wandb
                except ImportError:
                    raise MissingDependencyError("wandb", why="--report-to wandb") from None
                self.wandb = wandb
                wandb.init(project="datacomp", name=name, id=name, resume="auto", config=params,
                           dir=str(exp_dir))
            else:
                raise DataCompError(f"--report-to {target!r}: choose tensorboard or wandb")

    def log(self, values: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _train_step(model: Any, loss_fn: Any, optimizer: Any, scaler: Any, micro: list[tuple[Any, Any]],
                autocast: Any, grad_clip_norm: float | None, unwrapped: Any) -> float:
    """One optimiser step over ``accum_freq`` micro-batches (open_clip's feature-caching accumulation)."""
    optimizer.zero_grad(set_to_none=True)

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    if len(micro) == 1:
        images, texts = micro[0]
        with autocast():
            out = model(images, texts)
            total = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        backward(total)
    else:
        with torch.no_grad(), autocast():
            cached = [model(i, t) for i, t in micro]
        img_f = [c["image_features"] for c in cached]
        txt_f = [c["text_features"] for c in cached]
        for j, (images, texts) in enumerate(micro):
            with autocast():
                out = model(images, texts)
                imgs = torch.cat(img_f[:j] + [out["image_features"]] + img_f[j + 1:])
                txts = torch.cat(txt_f[:j] + [out["text_features"]] + txt_f[j + 1:])
                total = loss_fn(imgs, txts, out["logit_scale"])
            backward(total)
    if scaler is not None:
        if grad_clip_norm is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm, norm_type=2.0)
        scaler.step(optimizer)
        scaler.update()
    else:
        if grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm, norm_type=2.0)
        optimizer.step()
    with torch.no_grad():
        unwrapped.logit_scale.clamp_(0, math.log(100))  # ln(100), as in the CLIP paper
    return float(total.detach())


def _launch_rank() -> int:
    """This process's global rank as the launcher set it (torchrun, SLURM); 0 when not distributed."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def train(
    data: str | list[str],
    output_dir: str | Path,
    exp_name: str,
    config: TrainConfig,
    data_weights: str | list[float] | None = None,
    uid_filter: str | Path | None = None,
    *,
    resume: bool = True,
    checkpoint_every_steps: int | None = None,
    checkpoint_minutes: float = 10.0,
    save_frequency: int = 0,
    report_to: tuple[str, ...] | list[str] = (),
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    log_every_n_steps: int = 100,
) -> TrainResult:
    """Train ``config`` on ``data`` (shard dirs/tars, ``::``-separated or a list) into ``output_dir/exp_name``.

    Resumes from ``checkpoints/epoch_latest.pt`` when it exists and the recipe and data match (refuses
    otherwise). Besides every "epoch" (``num_checkpoints``), ``epoch_latest.pt`` is rewritten every
    ``checkpoint_every_steps`` steps and at least every ``checkpoint_minutes``, so a killed run loses little.

    ``output_dir`` may be a storage URL (``s3://bucket/runs``): the run then works in a staged local
    copy (:func:`datacomp.storage.staged_dir`, filled from the URL first, so it resumes from what an
    earlier run uploaded), and rank 0 uploads the run folder when training ends or fails.
    """
    from datacomp import storage

    if storage.is_url(output_dir):
        args = dict(locals())
        del args["storage"]
        dest = storage.as_location(output_dir) / exp_name
        with storage.staged_dir(dest, upload=_launch_rank() == 0) as local:
            args["output_dir"] = str(local.parent)
            return train(**args)
    import open_clip
    from open_clip_train.precision import get_autocast
    from open_clip_train.scheduler import cosine_lr

    from datacomp.models import register_model_configs

    started = time.time()
    if not exp_name or "/" in exp_name:
        raise DataCompError(f"--exp-name {exp_name!r}: give a non-empty name without '/'")
    register_model_configs()
    if config.model not in open_clip.list_models():
        raise DataCompError(f"unknown model {config.model!r}: not an open_clip or datacomp model config")
    sources = resolve_sources(data, data_weights, uid_filter)
    info = D.init_distributed(device)
    layout = plan_layout(config, info.world_size)
    exp_dir = Path(output_dir) / exp_name
    ckpt_dir = exp_dir / "checkpoints"
    latest = ckpt_dir / "epoch_latest.pt"
    identity = _identity(config, sources, layout)
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    elif info.device.type == "cpu" and info.world_size > 1:
        import os

        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))

    ckpt: dict[str, Any] | None = None
    if latest.exists():
        if not resume:
            raise DataCompError(f"{exp_dir}: experiment already exists; resume it or pick another --exp-name")
        ckpt = load_checkpoint(latest)
        saved = ckpt.get("datacomp", {}).get("identity")
        if saved is None:
            raise DataCompError(
                f"{latest}: not written by datacomp train, cannot resume it exactly; pick another --exp-name"
            )
        diff = identity_diff(saved, identity)
        if diff:
            raise DataCompError(
                f"{exp_dir}: experiment exists with a different configuration ({'; '.join(diff[:3])}); "
                "pick another --exp-name or delete the directory"
            )

    handlers: list[logging.Handler] = []
    reporter = None
    level_before, propagate_before = log.level, log.propagate
    try:
        record = exp_dir / "train_record.json"
        counts = _record_counts(record) if record.is_file() else None
        if ckpt is not None and int(ckpt["datacomp"]["step"]) >= layout.total_steps and counts is not None:
            return _finished(exp_dir, latest, record, layout, started, counts)  # nothing left: keep the record
        if info.is_master:
            exp_dir.mkdir(parents=True, exist_ok=True)
            ckpt_dir.mkdir(exist_ok=True)
            file_handler = logging.FileHandler(exp_dir / "out.log")
            file_handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(message)s"))
            handlers.append(file_handler)
            log.addHandler(file_handler)
            if log.getEffectiveLevel() > logging.INFO:
                # out.log always gets the INFO lines; the console keeps the quieter level it had.
                console = logging.StreamHandler()
                console.setLevel(log.getEffectiveLevel())
                console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
                handlers.append(console)
                log.addHandler(console)
                log.propagate = False
                log.setLevel(logging.INFO)
            params = {**config.to_dict(), "data": "::".join(split_data_arg(data)), "data_weights": data_weights,
                      "uid_filter": uid_filter, "name": exp_name, "logs": str(output_dir),
                      "world_size": info.world_size, "per_device_batch": layout.per_device_batch,
                      "steps": layout.total_steps, "device": str(info.device)}
            write_params(exp_dir / "params.txt", params)
            reporter = _Reporter(tuple(report_to), exp_dir, exp_name, params)
        return _run(config, layout, sources, info, exp_dir, exp_name, latest, ckpt, identity, started,
                    data, data_weights, uid_filter, checkpoint_every_steps, checkpoint_minutes,
                    save_frequency, reporter, progress, log_every_n_steps, get_autocast, cosine_lr, open_clip)
    finally:
        torch.set_num_threads(threads_before)
        log.setLevel(level_before)
        log.propagate = propagate_before
        if reporter is not None:
            reporter.close()
        for h in handlers:
            log.removeHandler(h)
            h.close()
        D.teardown(info)


def _record_counts(record: Path) -> dict[str, Any] | None:
    """The ``counts`` of an existing record; None when it is damaged (the finishing pass rewrites it)."""
    import json

    try:
        rec = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    counts = rec.get("counts", {}) if isinstance(rec, dict) else None
    return counts if isinstance(counts, dict) else None


def _finished(exp_dir: Path, latest: Path, record: Path, layout: Layout, started: float,
              counts: dict[str, Any]) -> TrainResult:
    log.info("%s: already trained (%d steps); nothing to do", exp_dir, layout.total_steps)
    rate = counts.get("samples_per_second")
    rate = float(rate) if isinstance(rate, int | float) else 0.0
    return TrainResult(exp_dir, latest, record, exp_dir / "info.pkl", layout.total_steps, layout.global_batch,
                       layout.samples_seen, time.time() - started, rate, layout.total_steps, [])


def _run(config: TrainConfig, layout: Layout, sources: list[Any], info: D.DistInfo, exp_dir: Path,
         exp_name: str, latest: Path, ckpt: dict[str, Any] | None, identity: dict[str, Any], started: float,
         data: Any, data_weights: Any, uid_filter: Any, every_steps: int | None, every_minutes: float,
         save_frequency: int, reporter: _Reporter | None, progress: bool, log_every: int,
         get_autocast: Any, cosine_lr: Any, open_clip: Any) -> TrainResult:
    # Same init on every rank (DDP would broadcast it anyway), as open_clip_train seeds before creation.
    random.seed(config.seed)
    np.random.seed(config.seed % (1 << 32))
    torch.manual_seed(config.seed)
    precision = _effective_precision(config.precision, info.device)
    from datacomp.models import quiet_random_init

    with quiet_random_init():  # training starts from random init by design (no --pretrained)
        model, preprocess_train, _ = open_clip.create_model_and_transforms(
            config.model, precision=precision, device=info.device, output_dict=True,
        )
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    tokenizer = open_clip.get_tokenizer(config.model)
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.lr,
        betas=(config.beta1, 0.98 if config.beta2 is None else config.beta2), eps=config.eps,
    )
    scaler = torch.amp.GradScaler("cuda") if precision == "amp" and info.device.type == "cuda" else None
    scheduler = cosine_lr(optimizer, config.lr, config.warmup, layout.total_steps)
    autocast = get_autocast(precision, device_type=info.device.type)
    input_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)  # open_clip's get_input_dtype
    loss_fn = open_clip.loss.ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True,
                                      rank=info.rank, world_size=info.world_size)

    step = 0
    positions: dict[int, int] | None = None
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        extra = ckpt["datacomp"]
        step = int(extra["step"])
        positions = {int(k): int(v) for k, v in extra["positions"].get(str(info.rank), {}).items()} or None
        torch.set_rng_state(extra["torch_rng"])
        log.info("resuming %s at step %d of %d", exp_name, step, layout.total_steps)
    start_step = step

    unwrapped = model
    if info.world_size > 1:
        ddp_args = {"device_ids": [info.device.index]} if info.device.type == "cuda" else {}
        model = torch.nn.parallel.DistributedDataParallel(model, static_graph=True, **ddp_args)

    reader = SampleReader(sources, config.shuffle_buffer, config.shuffle_initial)
    spe, accum = layout.steps_per_epoch, layout.accum_freq
    streams = max(config.workers, 1)
    losses: list[float] = []
    if info.is_master:
        log.info("training %s: %s, %d steps x global batch %d (%d per device x %d devices x accum %d), %d shard(s)",
                 exp_name, config.model, layout.total_steps, layout.global_batch, layout.per_device_batch,
                 layout.world_size, accum, sum(len(s.shards) for s in sources))

    def save(epoch_done: int, stream_pos: dict[int, int]) -> None:
        all_pos = D.gather_object(stream_pos, info)  # collective: every rank calls save together
        if not info.is_master:
            return
        state = {
            "epoch": epoch_done, "name": exp_name, "state_dict": unwrapped.state_dict(),
            "optimizer": optimizer.state_dict(),
            "datacomp": {
                "version": FORMAT_VERSION, "step": step, "identity": identity,
                "positions": {str(r): {str(k): int(v) for k, v in p.items()} for r, p in enumerate(all_pos)},
                "torch_rng": torch.get_rng_state(),
            },
        }
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        save_checkpoint(latest, state)

    bar = None
    if info.is_master and progress and step < layout.total_steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=layout.total_steps, initial=step, desc=f"train {exp_name}", unit="step", dynamic_ncols=True)
    model.train()
    t_train = time.time()
    last_save = time.time()
    try:
        for epoch in range(step // spe, config.num_checkpoints):
            plan = StreamPlan(config.seed, info.rank, epoch, streams, spe * accum, (step - epoch * spe) * accum,
                              layout.per_device_batch)
            stream_pos = dict(positions or {})
            loader = iter(make_loader(BatchStream(reader, plan, preprocess_train, tokenizer, positions),
                                      config.workers))
            positions = None
            while step < (epoch + 1) * spe:
                lr = scheduler(step)
                micro = []
                for _ in range(accum):
                    images, texts, s, n = next_batch(loader)
                    stream_pos[s] = n
                    micro.append((images.to(info.device, dtype=input_dtype, non_blocking=True),
                                  texts.to(info.device, non_blocking=True)))
                loss = _train_step(model, loss_fn, optimizer, scaler, micro, autocast, config.grad_clip_norm, unwrapped)
                step += 1
                losses.append(loss)
                if bar is not None:
                    rate = (step - start_step) * layout.global_batch / max(time.time() - t_train, 1e-9)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", samples_s=f"{rate:.0f}", refresh=False)
                    bar.update(1)
                if info.is_master and (step % log_every == 0 or step == layout.total_steps):
                    rate = (step - start_step) * layout.global_batch / max(time.time() - t_train, 1e-9)
                    log.info("step %d/%d epoch %d loss %.4f lr %.3e logit_scale %.3f samples/s %.1f", step,
                             layout.total_steps, epoch, loss, lr, float(unwrapped.logit_scale.detach().exp()), rate)
                    if reporter is not None:
                        reporter.log({"loss": loss, "lr": lr, "samples_per_second": rate,
                                      "scale": float(unwrapped.logit_scale.detach().exp())}, step)
                epoch_end = step == (epoch + 1) * spe
                due = (every_steps is not None and step % every_steps == 0) or (
                    time.time() - last_save >= every_minutes * 60)
                if not epoch_end and D.broadcast_flag(due, info):
                    save(epoch, stream_pos)
                    last_save = time.time()
            save(epoch + 1, {})
            last_save = time.time()
            if info.is_master and save_frequency > 0 and (epoch + 1) % save_frequency == 0:
                link_or_copy(latest, latest.with_name(f"epoch_{epoch + 1}.pt"))
    finally:
        if bar is not None:
            bar.close()
    train_seconds = time.time() - t_train
    D.barrier(info)
    final = latest.with_name(f"epoch_{config.num_checkpoints}.pt")
    rate = (step - start_step) * layout.global_batch / train_seconds if step > start_step else 0.0
    record = exp_dir / "train_record.json"
    info_pkl = exp_dir / "info.pkl"
    if info.is_master:
        if not final.exists():
            link_or_copy(latest, final)
        data_dir = "::".join(split_data_arg(data))
        write_info_pkl(info_pkl, config.scale, latest, config.scale_config(), data_dir)
        write_record(
            record, "train", config.to_dict(),
            counts={"steps": layout.total_steps, "steps_this_call": step - start_step, "start_step": start_step,
                    "global_batch": layout.global_batch, "per_device_batch": layout.per_device_batch,
                    "world_size": layout.world_size, "samples_seen": layout.samples_seen,
                    "samples_per_second": round(rate, 2), "train_seconds": round(train_seconds, 3),
                    "final_loss": losses[-1] if losses else None},
            inputs=[s.describe() for s in sources], started=started,
            scale=config.scale, checkpoint=str(latest), final_checkpoint=str(final),
            data_dir=data_dir, data_weights=data_weights, uid_filter=str(uid_filter) if uid_filter else None,
            precision=precision, device=str(info.device),
        )
        log.info("done: %s (%.1f samples/s)", latest, rate)
    return TrainResult(exp_dir, latest, record, info_pkl, layout.total_steps, layout.global_batch,
                       layout.samples_seen, time.time() - started, rate, start_step, losses)

