"""`distill(student, teacher, train, val, DistillConfig(...))`: knowledge distillation on the CleanAI Trainer.

The Trainer trains a small wrapper holding the student (and the learned projections of intermediate
distillation). In training mode the wrapper also runs the teacher (frozen: no gradients, eval mode, not a
submodule, so it is neither optimised nor checkpointed) or reads its logits from the cache, and the loss
reads what the wrapper saw for that batch. In eval mode the wrapper is the bare student, so validation
metrics and `val_loss` (cross-entropy) are the student's own. Checkpoints and resume are the Trainer's.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from cleanai._batches import logits_of
from cleanai.distillation.config import DistillationError, DistillConfig
from cleanai.distillation.losses import IntermediateLoss, kd_loss, uniform_layer_map
from cleanai.io import save_safetensors
from cleanai.training import Callback, History, Trainer


class TeacherModeWarning(UserWarning):
    """The teacher was in training mode; `distill` put it in eval mode (dropout off, BatchNorm statistics fixed)."""


class TeacherLogitCache:
    """Teacher logits per example, kept in memory and in one safetensors file per teacher under `directory`.

    An example's key is a hash of its own inputs (padding removed by the attention mask, so the same text
    batched differently hits the same entry); the file's name is a hash of the teacher's weights, so another
    teacher never reads these logits. `hits` and `misses` count examples served from the cache or computed.
    """

    def __init__(self, directory: str | Path, teacher: nn.Module) -> None:
        self.path = Path(directory) / f"teacher-{_fingerprint(teacher)}.safetensors"
        self._logits: dict[bytes, torch.Tensor] = {}
        if self.path.is_file():
            stored = load_file(str(self.path))
            self._logits = {bytes(k.tolist()): v for k, v in zip(stored["keys"], stored["logits"])}
        self._dirty = False
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._logits)

    def get(self, teacher: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        """The teacher's logits for the batch (args, kwargs): cached rows as stored, the batch run if any row is new."""
        keys = _row_keys(args, kwargs)
        if all(k in self._logits for k in keys):
            self.hits += len(keys)
            device = _first_tensor(args, kwargs).device
            return torch.stack([self._logits[k] for k in keys]).to(device)
        logits = _teacher_logits(teacher, args, kwargs)
        for key, row in zip(keys, logits.detach().float().cpu()):
            if key not in self._logits:
                self._logits[key] = row.clone()
                self.misses += 1
                self._dirty = True
            else:
                self.hits += 1
        return logits

    def flush(self) -> None:
        """Write new entries to disk (atomically); nothing is written when nothing changed."""
        if not self._dirty:
            return
        keys = torch.tensor([list(k) for k in self._logits], dtype=torch.uint8)
        save_safetensors({"keys": keys, "logits": torch.stack(list(self._logits.values()))}, self.path)
        self._dirty = False


class _FlushCache(Callback):
    def __init__(self, cache: TeacherLogitCache) -> None:
        self.cache = cache

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        self.cache.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        self.cache.flush()


class _Distillation(nn.Module):
    """The module the Trainer trains: the student plus intermediate projections; the teacher rides along unregistered."""

    def __init__(self, student: nn.Module, teacher: nn.Module, config: DistillConfig,
                 cache: TeacherLogitCache | None) -> None:
        super().__init__()
        self.student = student
        self.intermediate = _intermediate_loss(student, teacher, config) if config.intermediate else None
        object.__setattr__(self, "teacher", teacher)  # not a submodule: not trained, not saved, not moved to train()
        self.cache = cache
        self.config = config
        self.pending: tuple[torch.Tensor, torch.Tensor | None] | None = None  # teacher logits, intermediate loss

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.training:
            return logits_of(self.student(*args, **kwargs))
        if self.intermediate is None:
            logits = logits_of(self.student(*args, **kwargs))
            with torch.no_grad():
                teacher = (self.cache.get(self.teacher, args, kwargs) if self.cache is not None
                           else _teacher_logits(self.teacher, args, kwargs))
            extra = None
        else:
            logits, teacher, extra = self._with_intermediate(kwargs)
        if teacher.shape != logits.shape:
            raise DistillationError(f"the teacher gives {teacher.shape[-1]} logits per sample but the student "
                                    f"{logits.shape[-1]}: they must predict the same classes")
        self.pending = (teacher, extra)
        return logits

    def _with_intermediate(self, kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self.intermediate is not None
        attn = bool(self.config.attention_weight)
        s_out = _hf(self.student)(**kwargs, output_hidden_states=True, output_attentions=attn)
        with torch.no_grad():
            t_out = _hf(self.teacher)(**kwargs, output_hidden_states=True, output_attentions=attn)
        extra = self.intermediate(s_out.hidden_states, t_out.hidden_states, s_out.attentions if attn else None,
                                  t_out.attentions if attn else None, kwargs.get("attention_mask"))
        return s_out.logits, t_out.logits, extra


class _KDObjective:
    """The Trainer's loss: KD (+ intermediate terms) on the batch the wrapper just ran; plain CE in evaluation."""

    def __init__(self, wrapper: _Distillation) -> None:
        self.wrapper = wrapper

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pending, self.wrapper.pending = self.wrapper.pending, None
        if not self.wrapper.training or pending is None:
            return F.cross_entropy(logits, targets)
        teacher, extra = pending
        cfg = self.wrapper.config
        loss = kd_loss(logits, teacher, targets, cfg.alpha, cfg.temperature)
        return loss if extra is None else loss + extra.to(loss.device)


def distill(student: nn.Module, teacher: nn.Module, train: Iterable[Any], val: Iterable[Any] | None = None,
            config: DistillConfig | dict[str, Any] | None = None, *,
            callbacks: Sequence[Callback] = ()) -> tuple[nn.Module, History]:
    """Train `student` to match `teacher` on `train` (batches `(inputs, targets)`); return (student, history).

    The student is copied unless `config.inplace`. The teacher is not trained; one in training mode is put in
    eval mode with a `TeacherModeWarning`. Teacher and student must share label names and (for text models)
    the vocabulary, else `DistillationError` summarises both. `val` is evaluated after each epoch with the
    student alone (`val_loss` is its cross-entropy).
    """
    config = config if isinstance(config, DistillConfig) else DistillConfig.model_validate(config or {})
    check_compatible(student, teacher)
    if teacher.training:
        warnings.warn("the teacher was in training mode; distill() put it in eval mode (teacher.eval()) so dropout "
                      "and BatchNorm updates do not disturb its targets", TeacherModeWarning, stacklevel=2)
        teacher.eval()
    work = student if config.inplace else copy.deepcopy(student)
    cache = TeacherLogitCache(config.cache_dir, teacher) if config.cache_dir is not None else None
    wrapper = _Distillation(work, teacher, config, cache)
    trainer = Trainer(wrapper, loss=_KDObjective(wrapper), config=config.train,
                      callbacks=[*callbacks, *([_FlushCache(cache)] if cache is not None else [])])
    teacher.to(trainer.device)
    history = trainer.fit(train, val)
    return work, history


def check_compatible(student: nn.Module, teacher: nn.Module) -> None:
    """Refuse teacher/student pairs with different label names or vocabularies, summarising both sides."""
    for what, read in (("label set", _label_names), ("vocabulary", _vocabulary)):
        s, t = read(student), read(teacher)
        if s is None or t is None:
            continue
        if (s != t) if type(s) is type(t) else _size(s) != _size(t):  # a tokenizer's vocabulary vs a vocab_size
            raise DistillationError(f"teacher and student have different {what}s: teacher {_summary(t)}; "
                                    f"student {_summary(s)}. Build the student from the teacher (same tokenizer and "
                                    f"labels), or distil before pruning the vocabulary")


def _label_names(model: nn.Module) -> list[str] | None:
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None)
    return [str(id2label[i]) for i in range(len(id2label))] if isinstance(id2label, Mapping) else None


def _vocabulary(model: nn.Module) -> dict[str, int] | int | None:
    """The tokenizer's token -> id map, else the config's vocab_size, else None (not a text model)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        return dict(tokenizer.get_vocab())
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) else None


def _size(vocabulary: dict[str, int] | int) -> int:
    return len(vocabulary) if isinstance(vocabulary, dict) else vocabulary


def _summary(value: list[str] | dict[str, int] | int) -> str:
    if isinstance(value, list):
        shown = ", ".join(value[:3]) + (f", ..., {value[-1]}" if len(value) > 3 else "")
        return f"{len(value)} labels ({shown})"
    return f"{_size(value):,} tokens"


def _hf(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a TextClassifier (or the model itself if it is one)."""
    inner = getattr(model, "hf_model", model)
    if not hasattr(inner, "config") or not hasattr(inner.config, "num_hidden_layers"):
        raise DistillationError(f"intermediate distillation needs Hugging Face transformer models (a TextClassifier "
                                f"or a PreTrainedModel); got {type(model).__name__}")
    return inner


def _intermediate_loss(student: nn.Module, teacher: nn.Module, config: DistillConfig) -> IntermediateLoss:
    s_cfg, t_cfg = _hf(student).config, _hf(teacher).config
    layer_map = config.layer_map or uniform_layer_map(s_cfg.num_hidden_layers, t_cfg.num_hidden_layers)
    if len(layer_map) != s_cfg.num_hidden_layers or not all(0 <= t < t_cfg.num_hidden_layers for t in layer_map):
        raise DistillationError(f"layer_map {layer_map} must give one teacher layer in [0, {t_cfg.num_hidden_layers}) "
                                f"for each of the student's {s_cfg.num_hidden_layers} layers")
    if config.attention_weight:
        for who, cfg in (("student", s_cfg), ("teacher", t_cfg)):
            if getattr(cfg, "_attn_implementation", "eager") != "eager":
                raise DistillationError(f"attention distillation needs attention maps, which the {who}'s "
                                        f"{cfg._attn_implementation!r} attention does not return; build it with "
                                        f"attn_implementation='eager'")
    return IntermediateLoss(s_cfg.hidden_size, t_cfg.hidden_size, layer_map, config.projection,
                            config.hidden_weight, config.attention_weight)


def _teacher_logits(teacher: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(teacher(*args, **kwargs)).detach()


def _first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return next(t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor))


def _row_keys(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[bytes]:
    """One 16-byte digest per example of the batch, over its input tensors (padding dropped by attention_mask)."""
    named = [(str(i), a) for i, a in enumerate(args)] + sorted(kwargs.items())
    tensors = [(n, t) for n, t in named if isinstance(t, torch.Tensor)]
    mask = kwargs.get("attention_mask")
    rows = tensors[0][1].shape[0]
    keys = []
    for i in range(rows):
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in tensors:
            row = tensor[i].detach().cpu()
            if mask is not None and row.dim() >= 1 and row.shape[0] == mask.shape[1]:
                row = row[mask[i].detach().cpu().bool()]
            digest.update(f"{name}:{row.dtype}:{tuple(row.shape)}".encode())
            digest.update(row.contiguous().numpy().tobytes())
        keys.append(digest.digest())
    return keys


def _fingerprint(model: nn.Module) -> str:
    """A hash of the model's class and weights: the cache file is per teacher."""
    digest = hashlib.blake2b(type(model).__qualname__.encode(), digest_size=12)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()
