"""The contract every analysis step of the full-table reproduction follows.

An analysis reads the cached stores (never the GAN), writes its own Parquet table(s) through
``storage.tables`` and a paper-style markdown report (plus PNGs where the paper has a figure),
and is keyed by its parameters and the digests of the stores it read: rerunning with the same
key returns the stored result (``reused=True``) instead of recomputing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from pydantic import BaseModel

from storage.feature_store import FeatureStore, check_same_models
from storage.layout import manifest_target, report_target
from storage.target import Target


@dataclass(frozen=True)
class AnalysisContext:
    """Where an analysis reads and writes, and the run it belongs to."""

    train_url: str
    eval_url: str
    results_root: str
    profile: str
    run_id: str
    device: str = "auto"

    def train_store(self) -> FeatureStore:
        return FeatureStore.open(Target(self.train_url), require_complete=True)

    def eval_store(self) -> FeatureStore:
        return FeatureStore.open(Target(self.eval_url), require_complete=True)

    def stores(self) -> tuple[FeatureStore, FeatureStore]:
        """(train, eval), checked to come from the same models before any work starts."""
        train, evals = self.train_store(), self.eval_store()
        check_same_models(train.spec, evals.spec)
        return train, evals


@dataclass
class AnalysisResult:
    """What an analysis produced: table parts written, its markdown, its figures."""

    name: str
    key: str
    tables: dict[str, str] = field(default_factory=dict)  # table name -> part URL
    figures: list[str] = field(default_factory=list)
    markdown: str = ""
    reused: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def analysis_key(name: str, params: BaseModel, ctx: AnalysisContext) -> str:
    """sha256 over the analysis name, its parameters and the digests of both stores."""
    blob = json.dumps(
        {
            "analysis": name,
            "params": params.model_dump(mode="json"),
            "train": ctx.train_store().spec.digest(),
            "eval": ctx.eval_store().spec.digest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_finished(ctx: AnalysisContext, name: str, key: str) -> AnalysisResult | None:
    """The stored result of a finished analysis with this key, if any."""
    target = manifest_target(ctx.results_root, f"{name}-{key}")
    if not target.exists():
        return None
    data = json.loads(target.read_bytes())
    return AnalysisResult(**{**data, "reused": True})


def save_finished(ctx: AnalysisContext, result: AnalysisResult) -> AnalysisResult:
    """Write the markdown report and, last, the manifest that marks the analysis finished."""
    report_target(ctx.results_root, f"{result.name}-{ctx.profile}").write_bytes_atomic(
        result.markdown.encode()
    )
    manifest_target(ctx.results_root, f"{result.name}-{result.key}").write_bytes_atomic(
        json.dumps(result.to_dict(), indent=2).encode()
    )
    return result


def figure_name(stem: str, ctx: AnalysisContext, key: str) -> str:
    """``<stem>-<profile>-<key[:8]>``: a run with other parameters (``analysis_params``) writes
    its own figure instead of replacing the one of the defaults."""
    return f"{stem}-{ctx.profile}-{key[:8]}"
