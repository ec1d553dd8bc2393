"""Loading transformers checkpoints from a local directory, shared by the CE and DE.

Nothing here ever downloads: every load is ``local_files_only=True`` and only
safetensors weights are read (pickle-based ``.bin`` checkpoints are refused).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Tuple, Union

_SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")


def import_torch_transformers(what: str) -> Tuple[Any, Any]:
    """Import torch and transformers, or raise ImportError naming the extra to install."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(
            f"{what} needs torch and transformers: pip install 'axn_fast[ce]' ({exc})"
        ) from exc
    return torch, transformers


def check_model_dir(model_path: Union[str, "os.PathLike[str]"]) -> Path:
    """Return ``model_path`` as a Path to a directory holding a config and safetensors weights."""
    if not isinstance(model_path, (str, os.PathLike)):
        raise TypeError(f"model_path must be a path to a local model directory, got {type(model_path).__name__}")
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model_path {str(path)!r} is not a directory (models are loaded from local files only)")
    if not (path / "config.json").is_file():
        raise ValueError(f"model_path {str(path)!r} has no config.json; expected a transformers checkpoint directory")
    if not any((path / name).is_file() for name in _SAFETENSORS):
        raise ValueError(
            f"model_path {str(path)!r} holds no weights: expected model.safetensors "
            "(pickle-based pytorch_model.bin checkpoints are not loaded)"
        )
    return path


def resolve_device(device: Any, torch: Any) -> Any:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return dev


def resolve_dtype(dtype: Any, device: Any, torch: Any) -> Any:
    """``None`` -> bf16 (or fp16) on GPU, fp32 on CPU; accepts names or torch dtypes."""
    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if isinstance(dtype, str):
        if dtype not in names:
            raise ValueError(f"dtype must be one of {sorted(names)} or a torch dtype, got {dtype!r}")
        return names[dtype]
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        return dtype
    raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")


def dtype_kwarg(transformers: Any, dtype: Any) -> Dict[str, Any]:
    """``from_pretrained``'s precision argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def is_local(source: Union[str, Path]) -> bool:
    """A local checkpoint directory (as opposed to a hub id)."""
    return isinstance(source, Path)


def resolve_source(model: Union[str, "os.PathLike[str]"]) -> Union[str, Path]:
    """A local directory (as a checked Path) or a hub id (as a str).

    A str or path naming an existing directory, or holding a path separator,
    is a local checkpoint and is checked like :func:`check_model_dir`; any
    other str (``"org/name"`` with one slash, no such directory) is a hub id,
    loaded by transformers only where a hub is reachable.
    """
    if isinstance(model, str) and not Path(model).expanduser().exists() and _looks_like_hub_id(model):
        return model
    return check_model_dir(model)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return (0 < len(parts) <= 2 and all(parts) and not name.startswith((".", "~"))
            and all(c.isalnum() or c in "-_." for p in parts for c in p))


def load_tokenizer(path: Union[str, Path], transformers: Any) -> Any:
    tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=is_local(path))
    if tok.pad_token_id is None:
        raise ValueError(f"the tokenizer in {str(path)!r} has no padding token")
    return tok


def check_loaded(model: Any, tokenizer: Any) -> None:
    """An already-loaded (model, tokenizer) pair: a torch transformers model and a callable tokenizer."""
    torch, _ = import_torch_transformers("a loaded model")
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model must be a transformers model (torch.nn.Module with a config), "
                        f"got {type(model).__name__}")
    if not callable(tokenizer) or not hasattr(tokenizer, "num_special_tokens_to_add"):
        raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("tokenizer must be a fast (tokenizers-backed) tokenizer: the pair spans come "
                        "from sequence_ids()")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no padding token")
    check_vocab(tokenizer, model, "the loaded model")


def uses_token_types(model: Any) -> bool:
    """Whether to pass token_type_ids: the forward takes them and the model has a segment table for them."""
    return accepts_token_type_ids(model) and int(getattr(model.config, "type_vocab_size", 0) or 0) >= 2


def check_vocab(tokenizer: Any, model: Any, path: Any) -> None:
    """A tokenizer that emits ids the model's embedding table lacks is a mismatch."""
    n_tok = len(tokenizer)
    n_emb = model.get_input_embeddings().num_embeddings
    if n_tok > n_emb:
        raise ValueError(
            f"tokenizer/model mismatch in {str(path)!r}: the tokenizer has {n_tok} tokens "
            f"but the model's embedding table has {n_emb} rows"
        )


def accepts_token_type_ids(model: Any) -> bool:
    import inspect

    try:
        return "token_type_ids" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
