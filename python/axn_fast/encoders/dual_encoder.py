"""Dual-encoder (DE): one embedding per text, scores are inner products.

:class:`HFDualEncoder` mean-pools the last hidden states over the attention
mask (the [CLS]/[SEP] tokens included, padding excluded): the pooling that
sentence-transformers' ``Pooling(mean)`` applies for all-MiniLM-L6-v2.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from axn_fast.encoders import _hf
from axn_fast._progress import progress
from axn_fast._validation import check_int


class HFDualEncoder:
    """A transformers encoder from a local directory that embeds texts.

    model_path: directory with config.json, safetensors weights and tokenizer;
    device: "auto" | "cpu" | "cuda[:N]"; dtype: None (bf16/fp16 on GPU, fp32 on
    CPU) or a name; max_length: tokens per text (default: the checkpoint's
    sentence-transformers ``max_seq_length`` when present, else 512).
    """

    def __init__(self, model_path: Union[str, "os.PathLike[str]"], *, device: Any = "auto", dtype: Any = None,
                 max_length: Optional[int] = None, show_progress_bar: Optional[bool] = None) -> None:
        path = _hf.check_model_dir(model_path)
        torch, transformers = _hf.import_torch_transformers("HFDualEncoder")
        self._torch = torch
        self.model_path = path
        self.device = _hf.resolve_device(device, torch)
        self.dtype = _hf.resolve_dtype(dtype, self.device, torch)
        self.show_progress_bar = show_progress_bar
        self.tokenizer = _hf.load_tokenizer(path, transformers)
        model = transformers.AutoModel.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True,
            **_hf.dtype_kwarg(transformers, self.dtype))
        _hf.check_vocab(self.tokenizer, model, path)
        self.model = model.to(self.device).eval()
        if max_length is None:
            st_cfg = path / "sentence_bert_config.json"
            max_length = 512
            if st_cfg.is_file():
                max_length = int(json.loads(st_cfg.read_text()).get("max_seq_length", 512))
            max_length = min(max_length, int(model.config.max_position_embeddings))
        self.max_length = check_int(max_length, "max_length", minimum=2)
        self._token_types = _hf.accepts_token_type_ids(self.model)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, normalize: bool = True,
               show_progress_bar: Optional[bool] = None) -> np.ndarray:
        """Embed ``texts``: (n,) str -> (n, dim) float32, L2-normalised when ``normalize``.

        Texts are sorted by length so each batch pads little; the output keeps
        the input order.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a sequence of str, got {type(texts).__name__}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
            if not t.strip():
                raise ValueError(f"texts[{i}] must be a non-empty text, got {t!r}")
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([-len(e) for e in enc], kind="stable")
        show = self.show_progress_bar if show_progress_bar is None else show_progress_bar
        bar = progress(total=len(texts), desc="DE encode", unit="text",
                       show=show if len(texts) > batch_size else False)
        pad = self.tokenizer.pad_token_id
        for s in range(0, len(texts), batch_size):
            rows = order[s:s + batch_size]
            L = max(len(enc[r]) for r in rows)
            ids = np.full((len(rows), L), pad, dtype=np.int64)
            mask = np.zeros((len(rows), L), dtype=np.int64)
            for b, r in enumerate(rows):
                ids[b, :len(enc[r])] = enc[r]
                mask[b, :len(enc[r])] = 1
            kwargs: Dict[str, Any] = {"input_ids": torch.from_numpy(ids).to(self.device),
                      "attention_mask": torch.from_numpy(mask).to(self.device)}
            if self._token_types:
                kwargs["token_type_ids"] = torch.zeros_like(kwargs["input_ids"])
            with torch.inference_mode():
                h = self.model(**kwargs).last_hidden_state.float()
                m = kwargs["attention_mask"].to(h.dtype)
                e = torch.einsum("bl,bld->bd", m, h) / m.sum(1, keepdim=True)
                if normalize:
                    e = torch.nn.functional.normalize(e, p=2, dim=1)
            out[rows] = e.cpu().numpy()
            bar.update(len(rows))
        bar.close()
        return out
