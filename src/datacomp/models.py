"""open_clip models the project uses: our model configs, checkpoint loading, packaged reference weights.

The project's model configs (the ``tiny`` scale's model and the embedded world's reference models)
are JSON files in ``model_configs/``, registered with open_clip on first use, so they are created
with ``open_clip.create_model_and_transforms`` like any built-in architecture.

:func:`resolve_model` turns a model *spec* into a loaded model for embedding and evaluation:

- ``ViT-B-32:openai``, ``ViT-L-14:datacomp_xl_s13b_b90k``: an open_clip architecture with a
  pretrained tag, downloaded once into open_clip's / Hugging Face's cache (``HF_HUB_OFFLINE=1``:
  only the cache is read);
- ``ViT-B-32:/path/to/epoch_latest.pt`` (or ``.safetensors``): the architecture with a local
  checkpoint (read with ``weights_only=True``);
- ``hf-hub:org/name`` (config + weights from the hub or its cache) and ``local-dir:/path``;
- ``datacomp-ref-b32`` / ``datacomp-ref-l14``: the embedded world's reference models with their
  packaged weights (``model_weights/``), only when asked by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from datacomp.errors import DataCompError

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
REFERENCE_WEIGHTS_DIR = Path(__file__).parent / "model_weights"
# The embedded world's reference models: npz key -> open_clip config name (weights in model_weights/<key>).
REFERENCE_MODELS: dict[str, str] = {"b32": "datacomp-ref-b32", "l14": "datacomp-ref-l14"}
# Every packaged world model: the two scorers plus the filtering network ("dfn": the l14 architecture
# trained on curated pairs only, the default of the ``dfn`` filter; it writes no npz key).
WORLD_MODELS: dict[str, str] = {**REFERENCE_MODELS, "dfn": "datacomp-ref-dfn"}


@cache
def register_model_configs() -> None:
    """Make our JSON configs known to open_clip (idempotent)."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class LoadedModel:
    name: str
    model: Any  # open_clip.CLIP
    preprocess_train: Any
    preprocess_val: Any
    tokenizer: Any
    device: str

    def __iter__(self) -> Iterator[Any]:
        """``model, preprocess, tokenizer = resolve_model(spec)``."""
        return iter((self.model, self.preprocess_val, self.tokenizer))


def available_models() -> list[str]:
    import open_clip

    register_model_configs()
    return open_clip.list_models()


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Weights from an open_clip checkpoint (``.pt`` with ``state_dict``, DDP prefixes) or ``.safetensors``.

    ``.pt`` files are read with ``torch.load(weights_only=True)``: tensors and plain values only, so a
    crafted checkpoint cannot run code; anything else in it is refused in one line.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise DataCompError(f"{p}: checkpoint not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise DataCompError(f"{p}: not a readable .safetensors file ({type(e).__name__})") from None
    else:
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            import re

            m = re.search(r"GLOBAL ([\w.]+)", str(e))
            detail = f" (e.g. {m.group(1)[:80]})" if m else ""
            raise DataCompError(
                f"{p}: refused: the checkpoint holds objects other than tensors and plain values{detail}, and "
                "loading them could run code; re-save its state_dict (or use .safetensors)"
            ) from None
        except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
            why = str(e).splitlines()[0][:160] if str(e) else ""
            raise DataCompError(f"{p}: not a readable checkpoint ({type(e).__name__}: {why})") from None
        sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DataCompError(f"{p}: checkpoint holds no state_dict of tensors")
    if next(iter(sd), "").startswith("module."):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def check_state_dict(model: Any, sd: dict[str, Any], checkpoint: Any, name: str) -> None:
    """One line when a checkpoint does not fit ``model`` (other keys or other tensor shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise DataCompError(
            f"{checkpoint}: does not match model {name!r} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys); pass the model it was trained as"
        )
    shapes = [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
    if shapes:
        k = shapes[0]
        raise DataCompError(
            f"{checkpoint}: a checkpoint of another architecture than model {name!r} ({len(shapes)} tensor(s) "
            f"differ in shape, e.g. {k}: {list(sd[k].shape)} here, {list(own[k].shape)} expected); "
            "pass the model it was trained as"
        )


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def quiet_random_init(active: bool = True) -> Iterator[None]:
    """Drop open_clip's "initialized randomly" warning where random init is intended or weights follow."""
    if not active:
        yield
        return
    f = _DropRandomInitWarning()
    logging.getLogger().addFilter(f)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(f)


def is_pretrained_spec(name: str) -> bool:
    """``NAME:TAG``, ``hf-hub:...``, ``local-dir:...``: a spec carrying its weights (see :func:`resolve_model`)."""
    return ":" in str(name)


def load_model(name: str, checkpoint: str | os.PathLike[str] | None = None, device: str = "cpu") -> LoadedModel:
    """Create an open_clip model by config name and load ``checkpoint`` (None: random init).

    A spec with its weights (``ViT-B-32:openai``, ``hf-hub:org/name``) goes through :func:`resolve_model`.
    """
    import open_clip

    if is_pretrained_spec(name) and checkpoint is None:
        return resolve_model(name, device=device)
    register_model_configs()
    if name not in open_clip.list_models():
        raise DataCompError(
            f"unknown model {name!r}: use an open_clip architecture (e.g. ViT-B-32) or one of "
            f"{', '.join(sorted(p.stem for p in MODEL_CONFIG_DIR.glob('*.json')))}"
        )
    with quiet_random_init(checkpoint is not None):
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(name, device=device)
    if checkpoint is not None:
        sd = load_state_dict(checkpoint)
        check_state_dict(model, sd, checkpoint, name)
        model.load_state_dict(sd)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    return LoadedModel(name, model, preprocess_train, preprocess_val, tokenizer, device)


def reference_weights_path(which: str) -> Path:
    """Packaged fp16 weights of a world model (``b32`` / ``l14`` / ``dfn``)."""
    return REFERENCE_WEIGHTS_DIR / f"{which}.safetensors"


@cache
def load_reference(which: str) -> LoadedModel:
    """A reference model with its packaged weights (cached per process).

    Without the weights file (only while retraining them from scratch) a fixed-seed random
    initialisation is used so formats stay right.
    """
    import torch

    if which not in WORLD_MODELS:
        raise DataCompError(f"unknown reference model {which!r}: choose one of {', '.join(WORLD_MODELS)}")
    path = reference_weights_path(which)
    if path.is_file():
        return load_model(WORLD_MODELS[which], checkpoint=path)
    log.warning("%s: no reference weights, using a fixed-seed random initialisation", path)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        return load_model(WORLD_MODELS[which])
    finally:
        torch.random.set_rng_state(state)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz"))


def resolve_model(spec: str, checkpoint: str | os.PathLike[str] | None = None,
                  device: str | None = None) -> LoadedModel:
    """Load a model spec (see the module docstring) through open_clip's own factory and cache.

    ``checkpoint``: weights for a bare architecture name (same as ``NAME:PATH``). A bare name
    without weights is refused (random weights would embed nothing), except our own configs
    (``datacomp-tiny-rn``) that are trained from scratch. Unpacks as ``model, preprocess, tokenizer``.
    """
    import open_clip

    register_model_configs()
    spec = str(spec).strip()
    if not spec:
        raise DataCompError("empty model spec: use e.g. ViT-B-32:openai, hf-hub:ORG/NAME or a checkpoint path")
    by_name = {v: k for k, v in WORLD_MODELS.items()}
    if spec in by_name and checkpoint is None:
        return load_reference(by_name[spec])
    dev = device or default_device()
    if spec.startswith(("hf-hub:", "local-dir:")):
        if checkpoint is not None:
            raise DataCompError(f"{spec}: the hub/local-dir model carries its weights; drop the checkpoint")
        if spec.startswith("hf-hub:"):
            _check_hub_weights(spec[len("hf-hub:"):])
        return _create(spec, None, dev, spec)
    name, sep, pretrained = spec.partition(":")
    if checkpoint is not None:
        if sep:
            raise DataCompError(f"{spec}: give the weights once (NAME:PATH or a checkpoint), not both")
        pretrained = str(checkpoint)
    if name not in open_clip.list_models():
        raise DataCompError(
            f"unknown model {name!r}: use an open_clip architecture with a pretrained tag (e.g. ViT-B-32:openai), "
            f"hf-hub:ORG/NAME, or one of {', '.join(sorted(p.stem for p in MODEL_CONFIG_DIR.glob('*.json')))}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not pretrained:
        if (MODEL_CONFIG_DIR / f"{name}.json").is_file():
            return load_model(name, None, dev)
        raise DataCompError(
            f"model {name!r} has no weights: give a pretrained tag ({name}:{tags[0] if tags else 'TAG'}"
            f"{'; tags: ' + ', '.join(tags) if tags else ''}), a checkpoint ({name}:/path/model.pt) or hf-hub:ORG/NAME")
    if pretrained in tags:
        return _create(name, pretrained, dev, spec)
    if Path(pretrained).is_file():
        return _create(name, str(Path(pretrained)), dev, spec)
    if _looks_like_path(pretrained):
        raise DataCompError(f"{pretrained}: checkpoint not found (model spec {spec!r})")
    raise DataCompError(f"{spec}: unknown pretrained tag {pretrained!r} for {name}; "
                        f"tags: {', '.join(tags) or 'none (pass a checkpoint path)'}")


def _check_hub_weights(repo: str) -> None:
    """The hub repo's weights are reachable (downloaded or in the cache); open_clip would fall back to random ones."""
    from open_clip.pretrained import download_pretrained_from_hf

    try:
        download_pretrained_from_hf(repo)
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises many types (offline, missing, auth)
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        where = "the local hub cache (HF_HUB_OFFLINE is set)" if offline else "the hub"
        raise DataCompError(f"hf-hub:{repo}: no open_clip weights found in {where} "
                            f"({type(e).__name__}); check the id, HF_HUB_CACHE, or download it once online") from None


def _create(name: str, pretrained: str | None, device: str, spec: str) -> LoadedModel:
    import open_clip

    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # noqa: BLE001 - open_clip wraps download/config/shape errors in several types
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataCompError(f"model {spec!r} could not be loaded: {msg[:300]}") from None
    model.eval()
    return LoadedModel(spec, model, preprocess_train, preprocess_val, tokenizer, device)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch threads, then restore the caller's setting.

    Small models on a shared 2-core machine run many times faster on one thread than on two that
    spin-wait for each other (measured: 300 vs 14 samples/s under load), so embedding uses one.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _autocast(lm: LoadedModel) -> Any:
    import torch

    if str(lm.device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def embed_texts(lm: LoadedModel, texts: list[str], batch: int = 1024) -> np.ndarray:
    """L2-normalised float32 text embeddings; each distinct caption is encoded once (AMP on a GPU)."""
    import torch

    uniq, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    out = []
    with torch.no_grad(), _autocast(lm):
        for a in range(0, len(uniq), batch):
            tok = lm.tokenizer(list(uniq[a: a + batch])).to(lm.device)
            f = lm.model.encode_text(tok)
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
    emb = np.concatenate(out) if out else np.zeros((0, embedding_dim(lm)), np.float32)
    return emb[inverse.reshape(-1)]


def embed_pixels(lm: LoadedModel, batches: Iterator[Any]) -> np.ndarray:
    """L2-normalised float32 image embeddings of preprocessed ``(n, 3, h, w)`` tensors (AMP on a GPU)."""
    import torch

    out = []
    with torch.no_grad(), _autocast(lm):
        for x in batches:
            f = lm.model.encode_image(x.to(lm.device, non_blocking=True))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, embedding_dim(lm)), np.float32)


def embedding_dim(lm: LoadedModel) -> int:
    proj = getattr(lm.model, "text_projection", None)
    if proj is not None and hasattr(proj, "shape"):
        return int(proj.shape[1])
    return int(getattr(lm.model, "embed_dim", 0) or lm.model.visual.output_dim)
