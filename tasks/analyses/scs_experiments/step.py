"""The experiments behind the default's Table 3 (issue #26; science in
:mod:`tasks.analyses.scs_experiments.science` and :mod:`lineargan.analyses.scs`).

On the targets Table 3 uses (the same seeded draw), for each protocol: every few-shot LSE,
the full baseline UNet at several seeds and the weakened UNets matched to each LSE's mIoU
run Algorithm 3 (:func:`lineargan.analyses.scs.conditional_sample`, the predictors of
:mod:`tasks.analyses.semantic_predictors`); the reference scores the chosen candidate (no
optimisation) and the optimised sample, and every candidate of the shared seeded pool (the
oracle and first-candidate arms). Each (protocol, predictor) is a partial unit, so a killed
run resumes after the last finished one.

Tables (every row also has ``profile``, ``run_id``, ``code_version``, ``created_at``, ``key``):

- ``scs_experiment_predictors``: family ("LSE", "UNet", "UNet-weakened"), n_shot (LSE: its
  N; a weakened UNet: the N it is matched to, null if unused), member (LSE repeat or UNet
  seed), steps (UNet training steps), miou (against the reference on the training images no
  predictor trained on: the UNet's held-out part less the few-shot images; never the
  evaluation split the targets come from).
- ``scs_experiment_samples`` (one row per protocol, family, n_shot, member, arm, target,
  sample): arm ("optimised", "chosen": before optimisation, "oracle": the candidate the
  reference scores best, "first": candidate 0), target, target_index, sample, candidate,
  n_init, agreement (the pair's Eq. 7 term), inter / union / predicted (per-class counts).
- ``scs_experiment_summary``: protocol, family, n_shot, arm ("gain": optimised − chosen),
  members, pairs, p_miou (mean mIoU of the family's members), agreement (Eq. 7, mean over
  members) with lo / hi (95 % paired bootstrap over targets), authors (``aggregate_iou``)
  with authors_lo / authors_hi, vs_unet (Eq. 7 difference to the full UNet's same arm; the
  optimised one for oracle/first) with vs_unet_lo / vs_unet_hi, vs_matched (an LSE's Eq. 7
  difference to the UNet weakened to its mIoU, same arm) with vs_matched_lo / _hi, bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from lineargan.analyses.scs import (
    SCSParams,
    candidate_latents,
    choose_targets,
    conditional_sample,
    oracle_candidates,
    pair_miou,
)
from lineargan.models import GeneratorAdapter, Segmenter
from lineargan.predictors import SemanticPredictor, freeze
from storage.tables import MODELS, schema
from tasks.analyses.contract import Inputs, Output
from tasks.analyses.scs.step import reference_counts
from tasks.analyses.scs_experiments.science import (
    SCSExperimentParams,
    match_steps,
    matching_images,
    predictor_miou,
    summarize_experiments,
)
from tasks.analyses.semantic_predictors import (
    baseline_predictor,
    edit_generator,
    fewshot_predictors,
)
from tasks.run_context import RunContext

PREDICTORS_TABLE = "scs_experiment_predictors"
SAMPLES_TABLE = "scs_experiment_samples"
SUMMARY_TABLE = "scs_experiment_summary"
ARMS = ("chosen", "optimised", "oracle", "first")

_WHO = {**MODELS, "family": pa.string(), "n_shot": pa.int64()}
TABLES = {
    PREDICTORS_TABLE: schema(
        **_WHO, member=pa.int64(), steps=pa.int64(), miou=pa.float64(), key=pa.string()
    ),
    SAMPLES_TABLE: schema(
        **MODELS,
        protocol=pa.string(),
        family=pa.string(),
        n_shot=pa.int64(),
        member=pa.int64(),
        arm=pa.string(),
        target=pa.int64(),
        target_index=pa.int64(),
        sample=pa.int64(),
        candidate=pa.int64(),
        n_init=pa.int64(),
        agreement=pa.float64(),
        inter=pa.list_(pa.int64()),
        union=pa.list_(pa.int64()),
        predicted=pa.list_(pa.int64()),
        key=pa.string(),
    ),
    SUMMARY_TABLE: schema(
        **MODELS,
        protocol=pa.string(),
        family=pa.string(),
        n_shot=pa.int64(),
        arm=pa.string(),
        members=pa.int64(),
        pairs=pa.int64(),
        p_miou=pa.float64(),
        agreement=pa.float64(),
        lo=pa.float64(),
        hi=pa.float64(),
        authors=pa.float64(),
        authors_lo=pa.float64(),
        authors_hi=pa.float64(),
        vs_unet=pa.float64(),
        vs_unet_lo=pa.float64(),
        vs_unet_hi=pa.float64(),
        vs_matched=pa.float64(),
        vs_matched_lo=pa.float64(),
        vs_matched_hi=pa.float64(),
        bootstrap=pa.int64(),
        key=pa.string(),
    ),
}


@dataclass
class ArmPredictor:
    """One P of the experiments: ``family`` "LSE" (``member``: its repeat), "UNet" or
    "UNet-weakened" (``member``: its seed; ``n_shot``: the LSE it is matched to)."""

    family: str
    predictor: SemanticPredictor | None
    n_shot: int | None
    member: int
    steps: int | None
    miou: float
    fit_dir: str = ""

    @property
    def slug(self) -> str:
        return f"{self.family.lower()}-n{self.n_shot}-m{self.member}-s{self.steps}"


def _predictors(
    ctx: RunContext, params: SCSExperimentParams, inputs: Inputs, device: torch.device
) -> tuple[list[ArmPredictor], list[ArmPredictor]]:
    """The predictors that run SCS (LSEs, full UNets, the matched weakened UNets) and every
    weakened UNet trained (for the record), each with its mIoU against the reference on the
    training images none of them trained on (:func:`matching_images`)."""
    scs, train = params.scs, inputs.train
    generator = freeze(inputs.generator)
    ids = matching_images(train.spec.n, scs.unet, scs.fewshot)
    held_out = train.read_selection(ids, images=False)
    latents = torch.from_numpy(np.asarray(held_out.latents, dtype=np.float32))

    def miou(predictor: SemanticPredictor) -> float:
        return predictor_miou(
            generator, predictor, latents, held_out.labels, train.spec.class_names, scs.batch
        )

    def unet(steps: int, seed: int):
        return baseline_predictor(
            ctx, train, scs.unet.model_copy(update={"steps": steps, "seed": seed}), device
        )

    lses = fewshot_predictors(
        ctx, train, scs.fewshot, scs.shots, scs.repeats, scs.fit_method, device
    )
    out = [
        ArmPredictor("LSE", e.predictor, e.n_shot, e.repeat, None, miou(e.predictor), e.fit_dir)
        for e in lses
    ]
    for seed in params.unet_seeds:
        e = unet(scs.unet.steps, seed)
        out.append(
            ArmPredictor(
                "UNet", e.predictor, None, seed, scs.unet.steps, miou(e.predictor), e.fit_dir
            )
        )
    weak = {}
    for steps in params.matched_steps:
        for seed in params.matched_seeds:
            e = unet(steps, seed)
            weak[steps, seed] = ArmPredictor(
                "UNet-weakened", e.predictor, None, seed, steps, miou(e.predictor), e.fit_dir
            )
    lse_miou = {n: np.mean([p.miou for p in out if p.n_shot == n]) for n in scs.shots}
    weak_miou = {
        k: np.mean([weak[k, s].miou for s in params.matched_seeds]) for k in params.matched_steps
    }
    matched = match_steps(lse_miou, weak_miou)
    record = []
    for (steps, seed), p in weak.items():
        for n in [n for n, k in matched.items() if k == steps] or [None]:
            record.append(ArmPredictor(p.family, p.predictor, n, seed, steps, p.miou, p.fit_dir))
    used = [p for p in record if p.n_shot is not None]
    return out + used, out + record


def _pairs(params: SCSParams, n_targets: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    pairs = [(t, s) for t in range(n_targets) for s in range(params.samples)]
    return pairs, np.array([t for t, _ in pairs])


def _rows(
    arm: str,
    counts: tuple[np.ndarray, np.ndarray, np.ndarray],
    candidate: np.ndarray,
    pairs: list[tuple[int, int]],
    **who,
) -> pd.DataFrame:
    """One arm's rows: a pair's reference counts and its Eq. 7 term."""
    inter, union, predicted = counts
    return pd.DataFrame(
        {
            **who,
            "arm": arm,
            "target": [t for t, _ in pairs],
            "sample": [s for _, s in pairs],
            "candidate": candidate,
            "agreement": pair_miou(inter, union),
            "inter": list(inter),
            "union": list(union),
            "predicted": list(predicted),
        }
    )


def _predictor_rows(
    p: ArmPredictor,
    generator: GeneratorAdapter,
    reference: Segmenter,
    targets: torch.Tensor,
    params: SCSParams,
    n_class: int,
) -> pd.DataFrame:
    """Algorithm 3 under one P: the chosen candidate and the optimised sample, scored by P*."""
    pairs, owner = _pairs(params, len(targets))
    run = conditional_sample(generator, p.predictor, targets, pairs, params)
    masks = targets.cpu().numpy()[owner]
    who = dict(family=p.family, n_shot=p.n_shot, member=p.member)
    chosen = run.chosen.numpy()
    return pd.concat(
        [
            _rows(
                arm,
                reference_counts(generator, reference, z, masks, n_class, params.batch),
                chosen,
                pairs,
                **who,
            )
            for arm, z in (("chosen", run.initial), ("optimised", run.final))
        ],
        ignore_index=True,
    )


def _candidate_rows(
    generator: GeneratorAdapter,
    reference: Segmenter,
    targets: torch.Tensor,
    params: SCSParams,
    n_class: int,
) -> pd.DataFrame:
    """The reference's view of every candidate of the shared seeded pool: the one it scores
    best (oracle) and candidate 0 (first: a choice that ignores the target)."""
    pairs, owner = _pairs(params, len(targets))
    n_init = params.candidates()
    cands = candidate_latents(generator, pairs, n_init, params.seed).flatten(0, 1)
    masks = targets.cpu().numpy()[np.repeat(owner, n_init)]
    counts = reference_counts(generator, reference, cands, masks, n_class, params.batch)
    inter, union, predicted = (c.reshape(len(pairs), n_init, n_class) for c in counts)
    best = oracle_candidates(inter, union)
    who = dict(family="candidates", n_shot=None, member=0)
    rows = np.arange(len(pairs))
    return pd.concat(
        [
            _rows(arm, tuple(c[rows, pick] for c in (inter, union, predicted)), pick, pairs, **who)
            for arm, pick in (("oracle", best), ("first", np.zeros(len(pairs), np.int64)))
        ],
        ignore_index=True,
    )


def compute(ctx: RunContext, params: SCSExperimentParams, inputs: Inputs) -> Output:
    """Every arm under every protocol on Table 3's targets, with paired intervals."""
    scs, evals, reference = params.scs, inputs.evals, inputs.segmenter
    assert reference is not None and inputs.generator is not None
    device = next(inputs.generator.parameters()).device
    arms, record = _predictors(ctx, params, inputs, device)
    target_ids = choose_targets(
        evals.spec.n, evals.detected_flags(), scs.targets, scs.target_source, scs.seed
    )
    targets = torch.from_numpy(evals.read_selection(target_ids, images=False).labels)
    targets = targets.long().to(device)
    n_class = len(evals.spec.class_names)
    frames = []
    for protocol in params.protocols:
        settings = scs.model_copy(update={"protocol": protocol})
        generator, _ = edit_generator(ctx, inputs, settings.space(), required=False)
        common = (generator, reference, targets, settings, n_class)
        units = [("candidates", partial(_candidate_rows, *common))]
        units += [(p.slug, partial(_predictor_rows, p, *common)) for p in arms]
        for j, (slug, work) in enumerate(units, 1):
            rows, seconds = inputs.units.load_or_compute(f"{protocol}-{slug}", work)
            if seconds is not None:
                mean = rows.groupby("arm")["agreement"].mean()
                print(
                    f"scs_experiments {protocol} {j}/{len(units)} {slug}: Eq. 7 "
                    + ", ".join(f"{a} {100 * v:.1f}%" for a, v in mean.items())
                    + f", {seconds:.0f} s"
                )
            frames.append(rows.assign(protocol=protocol, n_init=settings.candidates()))
    samples = pd.concat(frames, ignore_index=True).astype({"n_shot": "Int64", "member": "Int64"})
    samples["target_index"] = target_ids[samples["target"].to_numpy()]
    predictors = pd.DataFrame(
        [
            dict(family=p.family, n_shot=p.n_shot, member=p.member, steps=p.steps, miou=p.miou)
            for p in record
        ]
    ).astype({"n_shot": "Int64", "steps": "Int64"})
    summary = summarize_experiments(samples, predictors, len(target_ids), scs.bootstrap, scs.seed)
    models = {"generator": inputs.train.spec.generator, "segmenter": inputs.train.spec.segmenter}
    return Output(
        tables={
            PREDICTORS_TABLE: predictors.assign(**models),
            SAMPLES_TABLE: samples.assign(**models),
            SUMMARY_TABLE: summary.assign(**models),
        },
        fits=sorted({p.fit_dir for p in record if p.fit_dir}),
    )
