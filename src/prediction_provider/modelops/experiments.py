"""Experiments: the stored resource, its lifecycle, and the routing book every worker serves from.

The database is the truth. Every change writes the experiment row, an ``experiment_transitions``
row (who, from, to, why: the audit trail of state changes) and bumps the ops stamp in one
transaction; each process's ``StampFollower`` then reloads the book (``reload``), so a change is
live in every worker within a second. The book maps a model's default route (its bare name and
``models:/<name>@champion``) to the running experiment, so a request with no experiment costs one
dictionary lookup.

States: ``draft → running ⇄ paused → promoted | rolled_back | stopped``; a rollout at its last
step whose promotion is manual waits in ``awaiting_promotion``. Paused experiments keep serving
their current split (nothing moves while an operator edits weights or a rollout holds).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from prediction_provider.clock import Clock
from prediction_provider.db.modelops_models import Experiment, ExperimentTransition
from prediction_provider.db.models import PredictionRecord
from prediction_provider.db.session import Database
from prediction_provider.errors import (
    ExperimentConflict,
    ExperimentNotFound,
    InvalidExperiment,
    PredictionProviderError,
)
from prediction_provider.modelops import stamp
from prediction_provider.modelops.assignment import BUCKETS, Layout, basis_points
from prediction_provider.modelops.experiment_config import (
    STATES,
    TERMINAL,
    ExperimentCreate,
    ExperimentPatch,
)
from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.serving.cache import CachedModel

log = logging.getLogger(__name__)

LIVE = frozenset({"running", "paused", "awaiting_promotion"})
ENSEMBLE_PREFIX = "ensemble:"

# target text → the CachedModel it answers with (blocking; ensembles included)
TargetLoader = Callable[[str], CachedModel]


@dataclass(frozen=True, slots=True)
class ShadowPlan:
    target: str  # frozen reference
    percent: float
    timeout_ms: int
    max_inflight: int
    queue: int
    sample_by: str


@dataclass(frozen=True, slots=True)
class LiveExperiment:
    """What the request path needs of one live experiment, compiled once per change."""

    id: str
    name: str
    model: str
    state: str
    salt: str
    unit: str
    allow_forcing: bool
    control: str
    order: tuple[str, ...]
    layout: Layout
    targets: Mapping[str, str]  # variant → frozen reference (models:/name/3, ensemble:x)
    compare_with_control: frozenset[str]
    shadow: ShadowPlan | None
    record_sample: float
    record_features: bool
    rollout: Mapping[str, Any] | None

    @property
    def pure_shadow(self) -> bool:
        return len(self.order) == 1


def route_keys(model: str) -> tuple[str, ...]:
    """The references that mean "this model's default": what an experiment splits."""
    return (model, f"models:/{model}@champion")


def frozen_reference(cached: CachedModel, target: str) -> str:
    if target.startswith(ENSEMBLE_PREFIX):
        return target
    if cached.resolved.version:
        return f"models:/{cached.resolved.name}/{cached.resolved.version}"
    return target


class Experiments:
    """Create, change and read experiments; ``book`` is this process's routing table."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        metrics: OpsMetrics,
        load_target: TargetLoader,
        set_alias: Callable[[str, str, str], None] | None = None,
        get_alias: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.metrics = metrics
        self.load_target = load_target
        self.set_alias = set_alias
        self.get_alias = get_alias
        self.book: dict[str, LiveExperiment] = {}  # replaced whole: read without a lock
        self.by_name: dict[str, LiveExperiment] = {}
        self.follower: stamp.StampFollower | None = None

    # -- the book -------------------------------------------------------------------------

    def reload(self, session: Session) -> None:
        rows = session.scalars(select(Experiment).where(Experiment.state.in_(LIVE))).all()
        book: dict[str, LiveExperiment] = {}
        by_name: dict[str, LiveExperiment] = {}
        for row in rows:
            try:
                live = compile_experiment(row)
            except Exception:  # a bad row must not stop the others from serving
                log.exception("experiment %s could not be compiled", row.name)
                continue
            by_name[live.name] = live
            for key in route_keys(live.model):
                book[key] = live
        retired = set(self.by_name) - set(by_name)
        for name in retired:
            for metric in ("experiment_weight_ratio", "experiment_state"):
                self.metrics.drop(metric, (name,))
        for live in by_name.values():
            self.metrics.set_state("experiment_state", (live.name,), STATES, live.state)
            points = dict(zip(live.order, _points_of(live), strict=True))
            for variant, value in points.items():
                self.metrics.set("experiment_weight_ratio", (live.name, variant), value / BUCKETS)
        self.book, self.by_name = book, by_name

    def _changed(self) -> None:
        """After this process's own change: serve it here at once (others follow the stamp)."""
        if self.follower is not None:
            try:
                self.follower.refresh(force=True)
            except Exception:
                log.exception("could not reload experiments after a change")
        else:
            with self.db.session() as session:
                self.reload(session)

    # -- writes ---------------------------------------------------------------------------

    def create(self, body: ExperimentCreate, actor: str | None) -> dict[str, Any]:
        self._validate_targets(body)
        if body.rollout is not None:
            from prediction_provider.modelops.canary import RolloutConfig

            try:
                RolloutConfig.model_validate(body.rollout)
            except ValueError as exc:
                raise InvalidExperiment(f"rollout: {exc}", {"field": "rollout"}) from exc
        now = self.clock.now()
        with self.db.session() as session:
            if session.scalar(select(Experiment.id).where(Experiment.name == body.name)):
                raise ExperimentConflict(f"an experiment named {body.name!r} exists", {"name": body.name})
            self._refuse_second_running(session, body.model, None)
            row = Experiment(
                id=str(uuid.uuid4()),
                name=body.name,
                model=body.model,
                state="draft",
                config=body.model_dump(mode="json"),
                resolved={},
                weights={},
                evaluations={},
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            self._transition(session, row, None, "draft", "created", actor)
            stamp.bump(session)
            session.commit()
            view = self._view(session, row)
        return view

    def start(self, name: str, actor: str | None, reason: str | None = None) -> dict[str, Any]:
        with self.db.session() as session:
            row = self._row(session, name, lock=True)
            if row.state != "draft":
                raise ExperimentConflict(
                    f"only a draft starts; {name!r} is {row.state}", {"state": row.state}
                )
            self._refuse_second_running(session, row.model, row.id)
            body = ExperimentCreate.model_validate(row.config)
            resolved: dict[str, Any] = {}
            for variant in body.variants:
                resolved[variant.name] = self._freeze(variant.target)
            if body.shadow is not None:
                resolved["__shadow__"] = self._freeze(body.shadow.target)
            now = self.clock.now()
            row.resolved = resolved
            row.weights = initial_weights(body)
            if body.rollout is not None:
                row.step = 0
                row.step_started_at = now
                row.evaluations = {"successful": 0, "failed": 0, "inconclusive": 0}
            row.started_at = now
            self._set_state(session, row, "running", reason or "started", actor)
            session.commit()
            view = self._view(session, row)
        self._changed()
        return view

    def change_state(self, name: str, action: str, actor: str | None, reason: str | None) -> dict[str, Any]:
        """pause | resume | stop | promote | rollback, by an operator."""
        with self.db.session() as session:
            row = self._row(session, name, lock=True)
            if action == "pause":
                self._need(row, {"running"}, action)
                self._set_state(session, row, "paused", reason or "paused by an operator", actor)
            elif action == "resume":
                self._need(row, {"paused"}, action)
                if row.step is not None:
                    row.step_started_at = self.clock.now()
                    row.evaluations = {"successful": 0, "failed": 0, "inconclusive": 0}
                self._set_state(session, row, "running", reason or "resumed by an operator", actor)
            elif action == "stop":
                self._need(row, LIVE, action)
                self._set_state(session, row, "stopped", reason or "stopped by an operator", actor)
            elif action == "promote":
                self._need(row, LIVE, action)
                self.promote(session, row, reason or "promoted by an operator", actor)
            elif action == "rollback":
                self._need(row, LIVE, action)
                self.roll_back(session, row, reason or "rolled back by an operator", actor)
            else:  # pragma: no cover - the router only routes the five
                raise ValueError(action)
            session.commit()
            view = self._view(session, row)
        self._changed()
        return view

    def patch(self, name: str, body: ExperimentPatch, actor: str | None) -> dict[str, Any]:
        with self.db.session() as session:
            row = self._row(session, name, lock=True)
            if row.state in TERMINAL:
                raise ExperimentConflict(f"{name!r} has ended ({row.state})", {"state": row.state})
            config = ExperimentCreate.model_validate(row.config)
            if body.weights is not None:
                if config.rollout is not None:
                    raise ExperimentConflict(
                        "the rollout controller owns this experiment's weights", {"name": name}
                    )
                unknown = set(body.weights) - {variant.name for variant in config.variants}
                if unknown:
                    raise InvalidExperiment(
                        f"unknown variants {sorted(unknown)}", {"variants": sorted(unknown)}
                    )
                weights = {variant.name: variant.weight for variant in config.variants}
                weights.update(body.weights)
                if sum(weights.values()) <= 0:
                    raise InvalidExperiment("weights must not all be zero", {"weights": "zero"})
                for variant in config.variants:
                    variant.weight = weights[variant.name]
                row.weights = initial_weights(config)
            if body.shadow_percent is not None:
                if config.shadow is None:
                    raise InvalidExperiment("this experiment has no shadow", {"shadow": None})
                config.shadow.percent = body.shadow_percent
            row.config = config.model_dump(mode="json")
            row.updated_at = self.clock.now()
            self._transition(
                session, row, row.state, row.state, "edited", actor, body.model_dump(mode="json")
            )
            stamp.bump(session)
            session.commit()
            view = self._view(session, row)
        self._changed()
        return view

    def delete(self, name: str, actor: str | None) -> None:
        with self.db.session() as session:
            row = self._row(session, name, lock=True)
            if row.state in LIVE:
                raise ExperimentConflict(
                    f"{name!r} is {row.state}: stop it before deleting it", {"state": row.state}
                )
            session.execute(delete(ExperimentTransition).where(ExperimentTransition.experiment_id == row.id))
            session.delete(row)
            stamp.bump(session)
            session.commit()
        self._changed()

    # -- transitions the rollout controller shares ----------------------------------------

    def promote(self, session: Session, row: Experiment, reason: str, actor: str | None) -> None:
        """Move the alias (``on_promote``, default ``champion``) to the candidate's version, point
        ``keep_previous_as`` (default ``previous-champion``) at the old one, end the experiment."""
        config = ExperimentCreate.model_validate(row.config)
        candidate = next((v for v in config.variants if not v.control), config.control)
        frozen = (row.resolved or {}).get(candidate.name) or {}
        on_promote = dict((config.rollout or {}).get("on_promote") or {})
        alias = on_promote.get("alias", "champion")
        keep = on_promote.get("keep_previous_as", "previous-champion")
        detail: dict[str, Any] = {"variant": candidate.name}
        if frozen.get("name") == row.model and frozen.get("version") and self.set_alias is not None:
            previous = self.get_alias(row.model, alias) if self.get_alias is not None else None
            if previous and keep and previous != frozen["version"]:
                self.set_alias(row.model, keep, previous)
            self.set_alias(row.model, alias, str(frozen["version"]))
            detail.update({"alias": alias, "version": frozen["version"], "previous": previous})
        self._set_state(session, row, "promoted", reason, actor, detail)

    def roll_back(self, session: Session, row: Experiment, reason: str, actor: str | None) -> None:
        """The candidate's weight goes to 0 and the experiment ends; aliases are left alone."""
        config = ExperimentCreate.model_validate(row.config)
        row.weights = {variant.name: (BUCKETS if variant.control else 0) for variant in config.variants}
        self._set_state(session, row, "rolled_back", reason, actor)

    def set_step(self, session: Session, row: Experiment, step: int, weight_bp: int, reason: str) -> None:
        config = ExperimentCreate.model_validate(row.config)
        candidate = next(v for v in config.variants if not v.control)
        row.step = step
        row.step_started_at = self.clock.now()
        row.evaluations = {"successful": 0, "failed": 0, "inconclusive": 0}
        row.weights = {config.control.name: BUCKETS - weight_bp, candidate.name: weight_bp}
        self._transition(
            session, row, row.state, row.state, reason, None, {"step": step, "weight_bp": weight_bp}
        )
        row.updated_at = self.clock.now()
        stamp.bump(session)

    def _set_state(
        self,
        session: Session,
        row: Experiment,
        state: str,
        reason: str,
        actor: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        previous = row.state
        row.state = state
        row.updated_at = self.clock.now()
        if state in TERMINAL:
            row.ended_at = row.updated_at
        self._transition(session, row, previous, state, reason, actor, detail)
        stamp.bump(session)

    def _transition(
        self,
        session: Session,
        row: Experiment,
        previous: str | None,
        state: str,
        reason: str,
        actor: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        session.add(
            ExperimentTransition(
                experiment_id=row.id,
                from_state=previous,
                to_state=state,
                reason=reason[:256],
                actor=actor,
                detail=detail,
                at=self.clock.now(),
            )
        )
        if previous != state:
            self.metrics.inc("rollout_transitions", (row.name, previous or "", state, reason[:64]))

    # -- reads ----------------------------------------------------------------------------

    def get(self, name: str) -> dict[str, Any]:
        with self.db.session() as session:
            return self._view(session, self._row(session, name))

    def row(self, session: Session, name: str) -> Experiment:
        return self._row(session, name)

    def list(self, model: str | None, state: str | None, limit: int, offset: int) -> dict[str, Any]:
        with self.db.session() as session:
            query = select(Experiment)
            if model:
                query = query.where(Experiment.model == model)
            if state:
                query = query.where(Experiment.state == state)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(
                query.order_by(Experiment.created_at.desc(), Experiment.name).limit(limit).offset(offset)
            ).all()
            return {
                "items": [self._view(session, row, transitions=False) for row in rows],
                "total": total,
                "limit": limit,
                "offset": offset,
            }

    def _view(self, session: Session, row: Experiment, transitions: bool = True) -> dict[str, Any]:
        config = row.config
        view: dict[str, Any] = {
            "id": row.id,
            "name": row.name,
            "model": row.model,
            "state": row.state,
            "config": config,
            "resolved": {k: v for k, v in (row.resolved or {}).items() if k != "__shadow__"},
            "shadow_target": (row.resolved or {}).get("__shadow__"),
            "weights": {name: points / BUCKETS for name, points in (row.weights or {}).items()},
            "weights_bp": dict(row.weights or {}),
            "step": row.step,
            "step_started_at": row.step_started_at.isoformat() if row.step_started_at else None,
            "evaluations": row.evaluations or {},
            "created_by": row.created_by,
            "created_at": row.created_at.isoformat(),
            "started_at": row.started_at.isoformat() if row.started_at else None,
            "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        }
        if transitions:
            counts = session.execute(
                select(PredictionRecord.variant, PredictionRecord.status, func.count())
                .where(PredictionRecord.experiment == row.name)
                .group_by(PredictionRecord.variant, PredictionRecord.status)
            ).all()
            per_variant: dict[str, dict[str, int]] = {}
            for variant, status, count in counts:
                per_variant.setdefault(variant or "", {})[status] = int(count)
            view["counts"] = per_variant
            history = session.scalars(
                select(ExperimentTransition)
                .where(ExperimentTransition.experiment_id == row.id)
                .order_by(ExperimentTransition.id.desc())
                .limit(20)
            ).all()
            view["transitions"] = [
                {
                    "from": item.from_state,
                    "to": item.to_state,
                    "reason": item.reason,
                    "actor": item.actor,
                    "detail": item.detail,
                    "at": item.at.isoformat(),
                }
                for item in history
            ]
        return view

    def _row(self, session: Session, name: str, lock: bool = False) -> Experiment:
        query = select(Experiment).where(Experiment.name == name)
        if lock:
            query = query.with_for_update()
        row = session.scalar(query)
        if row is None:
            raise ExperimentNotFound(f"no experiment named {name!r}", {"name": name})
        return row

    def _need(self, row: Experiment, states: frozenset[str] | set[str], action: str) -> None:
        if row.state not in states:
            raise ExperimentConflict(
                f"cannot {action} {row.name!r}: it is {row.state}", {"state": row.state, "action": action}
            )

    def _refuse_second_running(self, session: Session, model: str, own_id: str | None) -> None:
        query = select(Experiment.name).where(Experiment.model == model, Experiment.state.in_(LIVE))
        if own_id is not None:
            query = query.where(Experiment.id != own_id)
        other = session.scalar(query)
        if other is not None:
            raise ExperimentConflict(
                f"model {model!r} already has a running experiment ({other!r})",
                {"model": model, "experiment": other},
            )

    def _freeze(self, target: str) -> dict[str, Any]:
        try:
            cached = self.load_target(target)
        except PredictionProviderError as exc:
            raise InvalidExperiment(f"target {target!r}: {exc.message}", {"target": target}) from exc
        return {
            "target": target,
            "reference": frozen_reference(cached, target),
            "name": cached.resolved.name,
            "version": cached.resolved.version,
        }

    def _validate_targets(self, body: ExperimentCreate) -> None:
        """Every target exists; all agree on class labels (as sets) and feature names."""
        targets = [variant.target for variant in body.variants]
        if body.shadow is not None:
            targets.append(body.shadow.target)
        signatures = []
        for target in targets:
            try:
                cached = self.load_target(target)
            except PredictionProviderError as exc:
                raise InvalidExperiment(f"target {target!r}: {exc.message}", {"target": target}) from exc
            signatures.append((target, cached.model.signature))
        first_target, first = signatures[0]
        for target, signature in signatures[1:]:
            if set(signature.classes or ()) != set(first.classes or ()):
                raise InvalidExperiment(
                    f"{target!r} predicts classes {list(signature.classes or ())}, "
                    f"{first_target!r} predicts {list(first.classes or ())}",
                    {"target": target, "classes": list(signature.classes or ())},
                )
            if set(signature.feature_names) != set(first.feature_names):
                raise InvalidExperiment(
                    f"{target!r} and {first_target!r} read different features",
                    {
                        "target": target,
                        "missing": sorted(set(first.feature_names) - set(signature.feature_names)),
                        "extra": sorted(set(signature.feature_names) - set(first.feature_names)),
                    },
                )


def initial_weights(body: ExperimentCreate) -> dict[str, int]:
    """Basis points: a rollout starts its candidate at ``steps[0]`` %; A/B uses the weights."""
    order = [variant.name for variant in body.variants]
    control = body.control.name
    if len(order) == 1:
        return {control: BUCKETS}
    if body.rollout is not None:
        candidate = next(name for name in order if name != control)
        first = float((body.rollout.get("steps") or [0])[0])
        points = round(first * 100)
        return {control: BUCKETS - points, candidate: points}
    return basis_points({v.name: float(v.weight) for v in body.variants}, control, order)


def _points_of(live: LiveExperiment) -> list[int]:
    owned = {name: end - start for name, start, end in live.layout.ranges}
    owned[live.control] = BUCKETS - sum(owned.values())
    return [owned.get(name, 0) for name in live.order]


def compile_experiment(row: Experiment) -> LiveExperiment:
    config = ExperimentCreate.model_validate(row.config)
    order = tuple(variant.name for variant in config.variants)
    control = config.control.name
    resolved = row.resolved or {}
    shadow = None
    if config.shadow is not None and "__shadow__" in resolved:
        shadow = ShadowPlan(
            target=resolved["__shadow__"]["reference"],
            percent=config.shadow.percent,
            timeout_ms=config.shadow.timeout_ms,
            max_inflight=config.shadow.max_inflight,
            queue=config.shadow.queue,
            sample_by=config.shadow.sample_by,
        )
    return LiveExperiment(
        id=row.id,
        name=row.name,
        model=row.model,
        state=row.state,
        salt=config.salt or row.id,
        unit=config.unit,
        allow_forcing=config.allow_forcing,
        control=control,
        order=order,
        layout=Layout.of(order, control, row.weights or {}),
        targets={name: resolved[name]["reference"] for name in order},
        compare_with_control=frozenset(v.name for v in config.variants if v.compare_with_control),
        shadow=shadow,
        record_sample=config.record.sample,
        record_features=config.record.features,
        rollout=config.rollout,
    )
