"""A trained cross-encoder stored as a delta: only what training changed, over a named base.

A delta directory holds ``delta.safetensors`` (the trained parameters under
their names in the full model, nothing else) and ``manifest.json`` (the base
model's name, path and the SHA-256 of its weights, the head, the emb heads'
pooling (absent in deltas written before it existed: "mean"), max_length and
how it was trained). Loading verifies the base's hash before applying the
delta, so a delta is never applied to the wrong model. Nothing here unpickles.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

DELTA_FILE = "delta.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT = "axn_fast.ce-delta"
FORMAT_VERSION = 1


def weights_sha256(model: Any) -> str:
    """SHA-256 of the encoder's own weights (``model.base_model``: every parameter, by name, as float32).

    A sequence-classification model and the plain encoder of the same
    checkpoint hash the same: the head on top is not part of the base.
    """
    import torch

    h = hashlib.sha256()
    for name, p in sorted(model.base_model.named_parameters(), key=lambda kv: kv[0]):
        t = p.detach().to(device="cpu", dtype=torch.float32).contiguous()
        h.update(name.encode("utf-8"))
        h.update(str(tuple(t.shape)).encode("ascii"))
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def write_delta(out_dir: Union[str, "os.PathLike[str]"], model: Any, names: Sequence[str], manifest: Dict[str, Any],
                *, dtype: Optional[Any] = None) -> Path:
    """Write ``model``'s parameters ``names`` and ``manifest`` into ``out_dir`` (atomically per file).

    dtype: None keeps the parameters' dtype, or a torch dtype (e.g. float16 for shipping).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no parameters named {missing[:3]}")
    tensors = {n: params[n].detach().to("cpu").contiguous() for n in names}
    if dtype is not None:
        tensors = {n: t.to(dtype) for n, t in tensors.items()}
    doc = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION, parameters=sorted(names))
    tmp = out / (DELTA_FILE + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, out / DELTA_FILE)
    tmp = out / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, out / MANIFEST_FILE)
    return out


def read_delta(path: Union[str, "os.PathLike[str]"]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(manifest, tensors)`` of a delta directory; ValueError naming what is wrong."""
    from safetensors.torch import load_file

    d = Path(path).expanduser()
    if not (d / MANIFEST_FILE).is_file() or not (d / DELTA_FILE).is_file():
        raise FileNotFoundError(f"{str(d)!r} is not a trained-CE delta: expected {MANIFEST_FILE} and {DELTA_FILE}")
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{str(d / MANIFEST_FILE)!r} is not a {FORMAT} v{FORMAT_VERSION} manifest")
    for key in ("head", "base"):
        if key not in manifest:
            raise ValueError(f"{str(d / MANIFEST_FILE)!r} lacks {key!r}")
    tensors = load_file(str(d / DELTA_FILE))
    if sorted(tensors) != sorted(manifest.get("parameters", [])):
        raise ValueError(f"{str(d)!r}: the delta's tensors do not match the manifest's parameter list")
    return manifest, tensors


def apply_delta(model: Any, manifest: Dict[str, Any], tensors: Dict[str, Any]) -> None:
    """Check that ``model`` is the manifest's base (SHA-256 of its weights), then load the trained tensors.

    Raises ValueError when the base differs or a tensor has no place in the model.
    """
    want = manifest["base"].get("sha256")
    got = weights_sha256(model)
    if want != got:
        raise ValueError(
            f"this delta was trained on base {manifest['base'].get('name')!r} with weights sha256 {want}, "
            f"but the model given has sha256 {got}: refusing to apply it to a different base")
    params = dict(model.named_parameters())
    for name, t in tensors.items():
        p = params.get(name)
        if p is None:
            raise ValueError(f"the delta's parameter {name!r} does not exist in the base model "
                             f"({type(model).__name__}); was it trained with another head?")
        if tuple(p.shape) != tuple(t.shape):
            raise ValueError(f"the delta's {name!r} has shape {tuple(t.shape)}, the model's {tuple(p.shape)}")
    import torch

    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t.to(dtype=params[name].dtype, device=params[name].device))
