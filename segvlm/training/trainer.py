"""Train a mask-aware VLM on region captions with accelerate.

:class:`Trainer` loads a :class:`segvlm.vlm.MaskAwareVLM`, freezes what :class:`TrainableConfig` does not
name, optionally adds LoRA adapters (peft), and optimises the answer-token cross-entropy of region
examples. Mixed precision and gradient accumulation come from accelerate, so the same code runs on one
CPU, one GPU or several GPUs under ``accelerate launch`` (each process reads its own slice of every
global batch).

Checkpoints (``checkpoint-<step>/``) hold only the trainable tensors, the optimizer and scheduler state,
the step, and every process's RNG states; the data order is a pure function of ``(seed, step)``
(:func:`segvlm.training.data.example_order`), so a resumed run takes the same next batch and computes
the same next loss as an uninterrupted one.

With ``report=True`` (what ``segvlm train`` passes) the main process shows a progress bar with the loss on
stderr and says when a run resumes, and from which step.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segvlm.training.config import TrainConfig
from segvlm.training.data import RegionBatch, RegionExamples, example_order, load_region_dataset, split_by_source
from segvlm.vlm.families import CONNECTOR_MODULES, VISION_MODULES, VLMFamily

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "trainable.safetensors"


@dataclass
class EncodedBatch:
    """A batch after the mask tokenizer and the processor.

    Attributes:
        inputs: the processor's tensors (``input_ids`` (B, S), ``attention_mask`` (B, S), pixels...).
        tokens: the mask tokenizer's output (region embeddings or mask maps the adapters inject).
        labels: (B, S) target ids at the answer positions, -100 elsewhere; None for prompt-only batches.
    """

    inputs: dict[str, torch.Tensor]
    tokens: Any
    labels: torch.Tensor | None


@dataclass
class EvalResult:
    """Held-out metrics at one step.

    Attributes:
        step: optimizer steps done.
        loss: mean answer-token cross-entropy.
        choice_accuracy: share of examples whose answer wins the argmax over the choices' first tokens
            (None when the config lists no choices).
        examples: how many held-out examples were scored.
    """

    step: int
    loss: float
    choice_accuracy: float | None
    examples: int


@dataclass
class TrainResult:
    """What a run did: steps, time, the final evaluation and every evaluation on the way.

    ``resumed_from`` is the step of the checkpoint the run continued from (None for a fresh start).
    """

    steps: int
    seconds: float
    final: EvalResult | None
    history: list[EvalResult] = field(default_factory=list)
    train_losses: list[tuple[int, float]] = field(default_factory=list)
    output_dir: str = ""
    resumed_from: int | None = None


def param_group(name: str, family: VLMFamily | None = None) -> str:
    """``"connector"``, ``"vision"`` or ``"lm"``: which part of a VLM a parameter name belongs to.

    The family's record names its connector and vision modules; without a family (a model segvlm has no
    record of) the names of every known family are tried.
    """
    if family is not None and (family.connector_modules or family.vision_modules):
        return family.param_group(name) or "lm"
    if any(part in name for part in CONNECTOR_MODULES):
        return "connector"
    if any(part in name for part in VISION_MODULES):
        return "vision"
    return "lm"


def encode_batch(vlm, batch: RegionBatch, with_answers: bool) -> EncodedBatch:
    """Encode regions, write prompts (plus answer and end-of-sequence when ``with_answers``), run the processor.

    The labels are the last ``len(answer ids)`` non-padding tokens of each row; that the full text ends in
    exactly the answer's own tokens is checked, so a tokenizer that merges across the prompt/answer
    boundary fails loudly (fix it with ``data.answer_prefix``) instead of training on shifted targets.
    """
    tokens = vlm.mask_tokenizer.encode(batch.images, batch.regions)
    prompts = [vlm.render(p) for p in tokens.prompts(batch.prompts)]
    eos = vlm.tokenizer.eos_token or ""
    texts = [p + a + eos for p, a in zip(prompts, batch.answers, strict=True)] if with_answers else prompts
    images = [[img] for img in tokens.images] if vlm.prompt_format.nested_images else tokens.images
    inputs = vlm.processor(text=texts, images=images, return_tensors="pt", padding=True)
    inputs = {k: v.to(vlm.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    labels = None
    if with_answers:
        ids, attention = inputs["input_ids"], inputs["attention_mask"]  # (B, S), (B, S)
        labels = torch.full_like(ids, -100)  # (B, S)
        for row, answer in enumerate(batch.answers):
            target = vlm.tokenizer(answer + eos, add_special_tokens=False)["input_ids"]
            where = attention[row].nonzero().squeeze(-1)[-len(target) :]  # (T,) positions of the answer
            if ids[row, where].tolist() != target:
                raise ValueError(
                    f"the answer {answer!r} does not tokenize the same inside the prompt as alone; set "
                    "data.answer_prefix (e.g. ' ') so the answer starts a new token"
                )
            labels[row, where] = ids[row, where]
    return EncodedBatch(inputs=inputs, tokens=tokens, labels=labels)


class RegionCaptioner(nn.Module):
    """The VLM and its mask tokenizer as one module, so accelerate (DDP, mixed precision) wraps both.

    ``forward(batch)`` returns the mean cross-entropy over answer tokens.
    """

    def __init__(self, vlm):
        super().__init__()
        self.vlm = vlm
        self.model = vlm.model
        self.mask_tokenizer = vlm.mask_tokenizer if isinstance(vlm.mask_tokenizer, nn.Module) else None

    def forward(self, batch: RegionBatch, first_logits: bool = False):
        """The answer loss; with ``first_logits`` also the (B, V) logits that predict each answer's first token
        (the same as the next-token logits after the bare prompt, since the model is causal)."""
        encoded = encode_batch(self.vlm, batch, with_answers=True)
        with self.vlm.adapters(encoded.tokens):
            logits = self.model(**encoded.inputs).logits  # (B, S, V)
        loss = answer_loss(logits, encoded.labels)
        if not first_logits:
            return loss
        first = (encoded.labels != -100).float().argmax(-1)  # (B,) position of each answer's first token
        rows = torch.arange(logits.shape[0], device=logits.device)  # (B,)
        return loss, logits[rows, first - 1]  # (B, V)


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy at the labelled positions: logits (B, S, V), labels (B, S)."""
    shifted = logits[:, :-1].float()  # (B, S-1, V) position t predicts token t+1
    targets = labels[:, 1:]  # (B, S-1)
    return nn.functional.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=-100)


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


class Trainer:
    """One training run of :class:`TrainConfig`.

    Args:
        config: the run's settings.
        on_eval: called with each :class:`EvalResult` on the main process (e.g. to record a curve).
        report: show a progress bar with the loss, the evaluations and any resume on stderr (main process only).
    """

    def __init__(self, config: TrainConfig, on_eval: Callable[[EvalResult], None] | None = None, report: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.config, self.on_eval, self.report = config, on_eval, report
        self._progress: Any = None  # the rich progress bar while train() runs
        self.accelerator = Accelerator(
            mixed_precision=_mixed_precision(config.mixed_precision),
            gradient_accumulation_steps=config.optim.grad_accum,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.output_dir = Path(config.output_dir)
        self.step = 0
        self._seed_everything(config.seed)
        self.vlm = self._load_vlm()
        self.train_examples, self.eval_examples = self._load_data()
        self.module = RegionCaptioner(self.vlm)
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(
                "nothing to train: enable trainable.mask_tokenizer (with a trained design), "
                "trainable.lora, trainable.lm, trainable.connector or trainable.vision"
            )
        optim = config.optim
        optimizer = torch.optim.AdamW(trainable, lr=optim.lr, weight_decay=optim.weight_decay, betas=optim.betas)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        self.module, self.optimizer = self.accelerator.prepare(self.module, optimizer)
        self._choice_ids = self._first_tokens(config.data.choices) if config.data.choices else None

    # -- setup -----------------------------------------------------------------------------------------------
    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _load_vlm(self):
        from segvlm.masktok import make_mask_tokenizer
        from segvlm.vlm import MaskAwareVLM

        cfg = self.config
        tokenizer = make_mask_tokenizer(cfg.model.mask_tokenizer, **cfg.model.mask_tokenizer_args)
        vlm = MaskAwareVLM.from_pretrained(cfg.model.model, mask_tokenizer=tokenizer)
        lora = cfg.trainable.lora
        if lora.enabled:
            from peft import LoraConfig, inject_adapter_in_model

            self.lora_config = LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
            )
            inject_adapter_in_model(self.lora_config, vlm.model)  # in place: the model keeps its class
        wanted = {"lm": cfg.trainable.lm, "connector": cfg.trainable.connector, "vision": cfg.trainable.vision}
        for name, param in vlm.model.named_parameters():
            param.requires_grad = ("lora_" in name and lora.enabled) or wanted[param_group(name, vlm.family)]
        if isinstance(tokenizer, nn.Module):
            for param in tokenizer.parameters():
                param.requires_grad = cfg.trainable.mask_tokenizer
        vlm.model.train()
        return vlm

    def _load_data(self) -> tuple[RegionExamples, RegionExamples]:
        data = self.config.data
        train_ds = load_region_dataset(data.train, data.scene_config)
        if data.eval is not None:
            eval_ds = load_region_dataset(data.eval, data.scene_config)
            train, held = RegionExamples(train_ds, data), RegionExamples(eval_ds, data)
        else:
            train_rows, eval_rows = split_by_source(train_ds, data.eval_fraction, self.config.seed)
            train, held = RegionExamples(train_ds, data, train_rows), RegionExamples(train_ds, data, eval_rows)
        if data.max_eval_examples is not None:
            held.index = held.index[: data.max_eval_examples]
        return train, held

    def _lr_factor(self, step: int) -> float:
        optim = self.config.optim
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "cosine":
            progress = (step - optim.warmup_steps) / max(1, optim.max_steps - optim.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    def _first_tokens(self, choices: list[str]) -> list[int]:
        prefix = self.config.data.answer_prefix
        ids = [self.vlm.tokenizer(prefix + c, add_special_tokens=False)["input_ids"][0] for c in choices]
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"choices {choices} do not all start with different tokens; choice accuracy "
                "is an argmax over first tokens, so pick choices whose first tokens differ"
            )
        return ids

    # -- the loop --------------------------------------------------------------------------------------------
    def micro_batch(self, step: int, micro: int) -> RegionBatch:
        """This process's slice of micro-batch ``micro`` of optimizer step ``step`` (deterministic)."""
        optim, acc = self.config.optim, self.accelerator
        per_step = optim.batch_size * acc.num_processes * optim.grad_accum
        start = step * per_step + (micro * acc.num_processes + acc.process_index) * optim.batch_size
        order = example_order(len(self.train_examples), self.config.seed, start, optim.batch_size)
        return self.train_examples.batch(order)

    def train_step(self) -> float:
        """One optimizer step (``grad_accum`` micro-batches); returns the mean micro-batch loss."""
        acc, optim = self.accelerator, self.config.optim
        losses = []
        for micro in range(optim.grad_accum):
            batch = self.micro_batch(self.step, micro)
            with acc.accumulate(self.module):
                loss = self.module(batch)
                acc.backward(loss)
                if acc.sync_gradients:
                    if optim.max_grad_norm > 0:
                        acc.clip_grad_norm_(self.module.parameters(), optim.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().float().item())
        self.step += 1
        return float(np.mean(losses))

    def train(self) -> TrainResult:
        """Run to ``optim.max_steps``, resuming from the newest checkpoint when ``resume`` is set."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        cfg, acc = self.config, self.accelerator
        result = TrainResult(steps=self.step, seconds=0.0, final=None, output_dir=str(self.output_dir.resolve()))
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not (self.report and acc.is_main_process),
        )
        self._progress = progress
        self._say(
            f"training {cfg.model.model} ({cfg.model.mask_tokenizer} regions) for {cfg.optim.max_steps} steps; "
            f"checkpoints and metrics go to {result.output_dir}"
        )
        if cfg.resume:
            latest = latest_checkpoint(self.output_dir)
            if latest is not None:
                self.load_checkpoint(latest)
                result.resumed_from = self.step
                left = "nothing left to train" if self.step >= cfg.optim.max_steps else "continuing"
                self._say(f"resumed from step {self.step} of {cfg.optim.max_steps} ({latest}); {left}")
        started = time.perf_counter()
        with progress:
            task = progress.add_task("training", total=cfg.optim.max_steps, completed=self.step, loss="-")
            while self.step < cfg.optim.max_steps:
                loss = self.train_step()
                progress.update(task, completed=self.step, loss=f"{loss:.4f}")
                if cfg.log_every and self.step % cfg.log_every == 0:
                    result.train_losses.append((self.step, loss))
                    self._log({"step": self.step, "train_loss": loss, "lr": self.scheduler.get_last_lr()[0]})
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.optim.max_steps:
                    result.history.append(self._evaluate_and_report())
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.optim.max_steps:
                    self.save_checkpoint()
            progress.update(task, description="evaluating")
            result.final = self._evaluate_and_report()
            result.history.append(result.final)
            progress.update(task, description="saving")
            self.save_checkpoint()
            self.save_final()
            progress.update(task, description="done")
        acc.wait_for_everyone()
        result.steps, result.seconds = self.step, time.perf_counter() - started
        return result

    def _say(self, message: str) -> None:
        """Print a line above the progress bar (main process, with ``report`` only)."""
        if self.report and self.accelerator.is_main_process and self._progress is not None:
            self._progress.console.print(message)

    def _evaluate_and_report(self) -> EvalResult:
        evaluation = self.evaluate()
        accuracy = "" if evaluation.choice_accuracy is None else f", choice accuracy {evaluation.choice_accuracy:.3f}"
        self._say(
            f"step {evaluation.step}: held-out loss {evaluation.loss:.4f} on {evaluation.examples} examples{accuracy}"
        )
        self._log({"eval": asdict(evaluation)})
        if self.on_eval is not None and self.accelerator.is_main_process:
            self.on_eval(evaluation)
        return evaluation

    def _log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with (self.output_dir / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps(record) + "\n")

    # -- evaluation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batch_size: int | None = None) -> EvalResult:
        """Held-out answer loss and (with ``data.choices``) choice accuracy; each process scores its share,
        the sums are reduced across processes."""
        acc = self.accelerator
        model = acc.unwrap_model(self.module)
        model.eval()
        size = batch_size or max(self.config.optim.batch_size, 32)
        mine = list(range(acc.process_index, len(self.eval_examples), acc.num_processes))
        totals = torch.zeros(4, dtype=torch.float64, device=acc.device)  # loss*n, n, correct, counted
        for start in range(0, len(mine), size):
            batch = self.eval_examples.batch(mine[start : start + size])
            with acc.autocast():
                loss, first = model(batch, first_logits=True)  # (), (B, V)
            totals[0] += loss.double() * len(batch)
            totals[1] += len(batch)
            if self._choice_ids is not None:
                totals[2] += self._choice_hits(first, batch.answers)
                totals[3] += len(batch)
        model.train()
        totals = acc.reduce(totals, reduction="sum") if acc.num_processes > 1 else totals
        loss_sum, n, correct, counted = totals.tolist()
        accuracy = correct / counted if counted else None
        return EvalResult(step=self.step, loss=loss_sum / max(n, 1), choice_accuracy=accuracy, examples=int(n))

    def _choice_hits(self, first: torch.Tensor, answers: list[str]) -> int:
        """How many rows of ``first`` (B, V) rank their own answer's first token highest among the choices."""
        choices, prefix = self.config.data.choices, self.config.data.answer_prefix
        choice_ids = torch.tensor(self._choice_ids, device=first.device)  # (C,)
        picked = first[:, choice_ids].argmax(-1).cpu()  # (B,)
        truth = torch.tensor([choices.index(a[len(prefix) :]) if a[len(prefix) :] in choices else -1 for a in answers])
        return int((picked == truth).sum())

    # -- checkpoints -----------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors that learn, by parameter name in :class:`RegionCaptioner`."""
        module = self.accelerator.unwrap_model(self.module)
        return {name: p.detach().cpu().contiguous() for name, p in module.named_parameters() if p.requires_grad}

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>/`` (trainable tensors, optimizer, scheduler, step, RNG per process)."""
        from safetensors.torch import save_file

        acc = self.accelerator
        folder = self.output_dir / f"{CHECKPOINT_PREFIX}{self.step}"
        acc.wait_for_everyone()
        if acc.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            save_file(self.trainable_state(), str(folder / WEIGHTS_FILE))
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                },
                folder / "optimizer.pt",
            )
        acc.wait_for_everyone()
        rng = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        torch.save(rng, folder / f"rng-{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:  # written last: a folder without it is an interrupted save and is skipped
            (folder / STATE_FILE).write_text(json.dumps({"step": self.step, "config": self.config.to_dict()}, indent=2))
        acc.wait_for_everyone()
        if acc.is_main_process and self.config.keep_checkpoints > 0:
            for old in list_checkpoints(self.output_dir)[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def load_checkpoint(self, folder: str | Path) -> None:
        """Restore a :meth:`save_checkpoint` folder: the next step continues exactly where it stopped."""
        from safetensors.torch import load_file

        folder, acc = Path(folder), self.accelerator
        state = json.loads((folder / STATE_FILE).read_text())
        module = acc.unwrap_model(self.module)
        missing = set(self.trainable_state())
        tensors = load_file(str(folder / WEIGHTS_FILE))
        if set(tensors) != missing:
            raise ValueError(
                f"{folder} was trained with other trainable parameters "
                f"({len(tensors)} tensors, expected {len(missing)}); resume with the same config"
            )
        with torch.no_grad():
            params = dict(module.named_parameters())
            for name, value in tensors.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))
        saved = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved["scaler"] is not None and acc.scaler is not None:
            acc.scaler.load_state_dict(saved["scaler"])
        rng_path = folder / f"rng-{acc.process_index}.pt"
        if rng_path.is_file():
            rng = torch.load(rng_path, map_location="cpu", weights_only=False)
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(state["step"])

    def save_final(self) -> Path:
        """Write ``final/``: the mask tokenizer (reload with ``MaskAwareVLM.from_pretrained``), LoRA adapters
        in ``final/lora`` (peft format), other trained base-model tensors in ``base_model_trained.safetensors``."""
        from safetensors.torch import save_file

        acc = self.accelerator
        folder = self.output_dir / "final"
        if acc.is_main_process:
            self.vlm.save_pretrained(folder)
            if self.config.trainable.lora.enabled:
                from peft import get_peft_model_state_dict

                (folder / "lora").mkdir(parents=True, exist_ok=True)
                self.lora_config.save_pretrained(str(folder / "lora"))
                adapters = get_peft_model_state_dict(self.vlm.model)
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in adapters.items()},
                    str(folder / "lora" / "adapter_model.safetensors"),
                )
            base = {
                name[len("model.") :]: tensor
                for name, tensor in self.trainable_state().items()
                if name.startswith("model.") and "lora_" not in name
            }
            if base:
                save_file(base, str(folder / "base_model_trained.safetensors"))
        acc.wait_for_everyone()
        return folder


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-<step>`` folders of a run, oldest first."""

    def step_of(path: Path) -> str:
        return path.name[len(CHECKPOINT_PREFIX) :]

    folders = [p for p in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*") if step_of(p).isdigit()]
    return sorted((p for p in folders if (p / STATE_FILE).is_file()), key=lambda p: int(step_of(p)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def train(
    config: TrainConfig, on_eval: Callable[[EvalResult], None] | None = None, report: bool = False
) -> TrainResult:
    """Build a :class:`Trainer` for ``config`` and run it (``report``: progress bar and messages on stderr)."""
    return Trainer(config, on_eval=on_eval, report=report).train()
