"""Drift from the base model, with no benchmark labels: how far a fine-tune moved its predictions.

Two probes, each one teacher-forced forward pass per model over a fixed set of sequences:

* **text**: general text (by default 128 passages shipped with s3ft: Wikipedia paragraphs and
  exam questions from 57 subjects, see ``s3ft/data/README.md``). The measure is the change in
  per-token NLL, tuned minus base: positive = the model predicts general text worse. PEFT's
  method comparison measures forgetting the same way, since generation-based metrics are noisier.
* **response**: the base model's own greedy responses to general instructions (IFEval prompts).
  The measure is the per-token KL(base || tuned) at every response token: how far the tuned
  model's next-token distribution moved exactly where the base model speaks in its own words.
  The tuned model's NLL change on those responses is reported beside it.

Base and tuned log-probabilities come from the same batch on one PeftModel (adapter disabled,
then enabled), so a model compared with itself reads exactly 0 and padding or batch effects
cannot masquerade as drift. Each item's sums are kept, so estimates are token-weighted means
(total over items / total tokens) whose CIs resample items (and seeds, when pooled).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from ..artifacts import iter_jsonl, read_jsonl
from ..config import ModelConfig
from ..errors import S3FTError
from ..models import load_model, load_tokenizer
from .scoring import Encoded, completion_logprobs, token_nll

PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_TEXT = PACKAGE_DATA / "general_text.jsonl"
DEFAULT_PROMPTS = PACKAGE_DATA / "ifeval_prompts.jsonl"
SCORING_VERSION = "drift-v1"


@dataclass
class DriftRow:
    """One probe item scored under one model; NLL and KL are sums over the item's scored tokens."""

    id: str
    kind: str  # "text" or "response"
    tokens: int
    base_nll: float
    nll: float
    kl: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProbeItem:
    id: str
    kind: str
    encoded: Encoded  # context + scored tokens


def _read_probe_file(path: Path, field: str, id_field: str, limit: int | None) -> list[dict]:
    if not path.is_file():
        raise S3FTError(f"{path}: probe file not found")
    rows, seen = [], set()
    for lineno, row in enumerate(iter_jsonl(path), 1):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise S3FTError(f"{path}:{lineno}: needs a non-empty string field '{field}'")
        rid = str(row.get(id_field, lineno))
        if rid in seen:
            raise S3FTError(f"{path}:{lineno}: duplicate {id_field} {rid!r}")
        seen.add(rid)
        rows.append({"id": rid, field: row[field]})
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise S3FTError(f"{path}: no probe rows")
    return rows


def load_text_probe(path: str | None, limit: int | None) -> list[dict]:
    """[{id, text}] of general text; the shipped passages by default."""
    return _read_probe_file(Path(path).expanduser() if path else DEFAULT_TEXT, "text", "id", limit)


def load_prompt_probe(path: str | None, limit: int | None) -> list[dict]:
    """[{id, prompt}] of general instructions (google/IFEval rows); the shipped sample by default."""
    return _read_probe_file(Path(path).expanduser() if path else DEFAULT_PROMPTS, "prompt", "key", limit)


def encode_text(tok, text: str, max_tokens: int) -> Encoded:
    """A passage scored from its second token on (the first has no context)."""
    ids = list(tok(text, add_special_tokens=True)["input_ids"])[:max_tokens]
    return ids, 1


class DriftScorer:
    """Base model loaded once; every adapter attached to it, so base and tuned share each batch."""

    def __init__(self, model_path: str, model_cfg: ModelConfig, batch_size: int = 4):
        self.tok = load_tokenizer(model_path, model_cfg.trust_remote_code)
        self.model = load_model(model_path, model_cfg)
        self.model.eval()
        self.batch_size = batch_size
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0

    def score(self, items: list[ProbeItem], adapters: dict[str, str | None]) -> Iterator[tuple[int, dict[str, list[DriftRow]]]]:
        """Yield (items done, {label: rows}) batch by batch; a label whose adapter is None is the base
        model itself (the null control: it must read exactly 0)."""
        import torch
        from peft import PeftModel
        model = self.model
        for label, path in adapters.items():
            if path is None:
                continue
            try:
                if isinstance(model, PeftModel):
                    model.load_adapter(path, adapter_name=label)
                else:
                    model = PeftModel.from_pretrained(model, path, adapter_name=label)
            except Exception as e:  # shapes or module names that do not fit this base
                raise S3FTError(f"adapter {path} does not fit the base model: {e}") from None
        model.eval()
        peft = isinstance(model, PeftModel)
        order = sorted(range(len(items)), key=lambda k: -len(items[k].encoded[0]))  # similar lengths share a batch
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                batch = [items[k] for k in order[s:s + self.batch_size]]
                enc = [it.encoded for it in batch]
                with model.disable_adapter() if peft else nullcontext():
                    base = completion_logprobs(model, enc, self.pad)
                out: dict[str, list[DriftRow]] = {}
                for label, path in adapters.items():
                    if path is None:
                        tuned = base
                    else:
                        model.set_adapter(label)
                        tuned = completion_logprobs(model, enc, self.pad)
                    rows = []
                    for it, b, t in zip(batch, base, tuned):
                        ids, start = it.encoded
                        if b is None:
                            rows.append(DriftRow(it.id, it.kind, 0, 0.0, 0.0, 0.0))
                            continue
                        kl = (b.exp() * (b - t)).sum(-1).clamp(min=0)  # rounding can dip a hair below 0
                        rows.append(DriftRow(it.id, it.kind, len(ids) - start, float(token_nll(b, ids, start).sum()),
                                             float(token_nll(t, ids, start).sum()), float(kl.sum())))
                    out[label] = rows
                yield len(batch), out
        if peft:
            self.model = model.unload()  # the bare base model again, for the next caller


MEASURES = {
    "text_nll_delta": "per-token NLL change on general text, tuned - base (nats/token; > 0 = forgetting)",
    "response_kl": "per-token KL(base || tuned) on the base model's own responses to general instructions "
                   "(nats/token; 0 = unchanged)",
    "response_nll_delta": "per-token NLL change on those responses, tuned - base (nats/token)",
}


def paired_items(rows: list[DriftRow]) -> dict[str, tuple[list[float], list[float]]]:
    """{measure: (per-item numerators, per-item token counts)} for the MEASURES."""
    text = [r for r in rows if r.kind == "text" and r.tokens > 0]
    resp = [r for r in rows if r.kind == "response" and r.tokens > 0]
    out = {}
    if text:
        out["text_nll_delta"] = ([r.nll - r.base_nll for r in text], [float(r.tokens) for r in text])
    if resp:
        out["response_kl"] = ([r.kl for r in resp], [float(r.tokens) for r in resp])
        out["response_nll_delta"] = ([r.nll - r.base_nll for r in resp], [float(r.tokens) for r in resp])
    return out


def read_rows(path: Path) -> list[DriftRow]:
    return [DriftRow(**{k: r[k] for k in DriftRow.__dataclass_fields__}) for r in read_jsonl(path)]
