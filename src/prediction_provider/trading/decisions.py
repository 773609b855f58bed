"""A trading decision: features as of a time, the regime, a specialist's call, a size, risk checks.

The steps, in order:

1. the point-in-time feature vector of the symbol as of the request's time
   (its ``data_as_of`` is the last bar it read);
2. the filtered regime posterior over the bars up to that bar, cached per
   ``(symbol, data_as_of)`` (and feature values, so a corrected bar is not
   served from the cache) with the price and volatility read beside it;
3. strategy weights = the regime posterior; the highest-weighted specialist
   decides, unless the caller names a strategy; a specialist that was never
   trained is replaced by the universal model, and the decision says so;
4. BUY / SELL / HOLD from the model's most likely class (up / down / flat),
   with that class's probability as confidence;
5. the quantity (``sizing``) from the account's equity, and the risk checks
   (``risk``) against its stored positions and P&L.
6. the decision, approved or not, is queued to the recorder (``records``),
   with a SHA-256 of the feature vector the model saw; a background thread
   stores it, so no request waits for the database.

Only work that takes a millisecond or more leaves the event loop: features and
regime of a given time, the first request on a new latest bar, an account not
read in the last ``account_cache_seconds``, and explanations. A decision on the
latest bar with everything cached is about 0.2 ms of Python, which a thread hop
would roughly double.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio.to_thread

from prediction_provider.accounts.principal import Principal
from prediction_provider.config import Settings
from prediction_provider.errors import ModelNotFound, UnknownStrategy
from prediction_provider.serving.explanations import Explanation
from prediction_provider.trading.accounts import TradingAccountService
from prediction_provider.trading.market import FeatureSource, Snapshot
from prediction_provider.trading.records import DecisionRecorder, feature_hash
from prediction_provider.trading.regime import RegimeProbabilities
from prediction_provider.trading.risk import AccountState, ProposedTrade, RiskLimits, RiskValidation, validate
from prediction_provider.trading.sizing import SizingPolicy, annualised_volatility, recommended_quantity
from prediction_provider.trading.specialists import (
    SPECIALISTS,
    STRATEGIES,
    UNIVERSAL,
    DecisionModels,
    DirectionModel,
    FloatArray,
    SymbolModels,
)

ACTIONS = {"up": "BUY", "down": "SELL", "flat": "HOLD"}
MAX_CACHED_VIEWS = 4096
ViewKey = tuple[str, datetime, int]


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    symbol: str
    timestamp: datetime | None = None
    strategy_override: str | None = None
    risk_check: bool = True
    explain: bool = False
    account: str | None = None


@dataclass(frozen=True, slots=True)
class MarketView:
    """What a decision reads from the bars up to ``data_as_of``, beyond the features themselves."""

    regime: RegimeProbabilities
    price: float
    volatility: float
    # Each model's class probabilities on this bar's features, by model identity: a model and
    # its inputs fix its output, so a later decision on the same bar need not run it again.
    calls: dict[str, FloatArray] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    symbol: str
    action: str
    confidence: float
    quantity: Decimal
    regime: RegimeProbabilities
    strategy_weights: dict[str, float]
    strategy: str
    model: DirectionModel
    risk: RiskValidation
    decided_at: datetime
    data_as_of: datetime
    latency_ms: float
    feature_hash: str
    explanation: Explanation | None = None

    @property
    def approved(self) -> bool:
        return self.risk.approved


@dataclass
class ViewCache:
    """A bounded LRU of market views; a new bar is a new key, so nothing needs invalidating."""

    capacity: int = MAX_CACHED_VIEWS
    _views: OrderedDict[ViewKey, MarketView] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: ViewKey) -> MarketView | None:
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
            return view

    def put(self, key: ViewKey, view: MarketView) -> None:
        with self._lock:
            self._views[key] = view
            self._views.move_to_end(key)
            while len(self._views) > self.capacity:
                self._views.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._views)


class DecisionService:
    def __init__(
        self,
        models: DecisionModels,
        market: FeatureSource,
        accounts: TradingAccountService,
        settings: Settings,
        recorder: DecisionRecorder | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.models = models
        # The one clock (the market replay's when it runs): a decision is dated when it is made.
        self.clock = clock or (lambda: datetime.now(UTC))
        # Every decision made here is queued to the recorder, refused ones too; None records nothing.
        self.recorder = recorder
        self.market = market
        self.accounts = accounts
        self.sizing = SizingPolicy(
            settings.risk_budget, settings.target_volatility, lot_step=settings.lot_step
        )
        self.limits = RiskLimits(
            settings.risk_max_position,
            settings.risk_max_sector,
            settings.risk_max_leverage,
            settings.risk_max_daily_loss,
        )
        self.paper_equity = settings.paper_equity
        self.sectors = {symbol.upper(): sector for symbol, sector in settings.symbol_sectors.items()}
        self.lookback = settings.regime_lookback_bars
        self.views = ViewCache()

    def market_view(self, symbol: str, models: SymbolModels, snapshot: Snapshot) -> MarketView:
        """Regime, price and volatility at the snapshot's bar; blocking on a miss (bars, HMM filter)."""
        key = view_key(symbol, snapshot)
        view = self.views.get(key)
        if view is None:
            bars = self.market.bars(symbol, snapshot.data_as_of, self.lookback)
            view = MarketView(
                regime=models.regime.posterior(bars),
                price=float(bars["close"].iloc[-1]),
                volatility=annualised_volatility(bars),
            )
            self.views.put(key, view)
        return view

    def _as_of(self, symbol: str, models: SymbolModels, timestamp: datetime) -> tuple[Snapshot, MarketView]:
        snapshot = self.market.snapshot(symbol, timestamp)
        return snapshot, self.market_view(symbol, models, snapshot)

    async def decide(self, request: DecisionRequest, principal: Principal) -> Decision:
        started = time.perf_counter()
        models = self.models.for_symbol(request.symbol)
        if request.strategy_override is not None and request.strategy_override not in STRATEGIES:
            raise UnknownStrategy(
                f"unknown strategy {request.strategy_override!r}",
                {"strategy_override": request.strategy_override, "known": list(STRATEGIES)},
            )
        if request.timestamp is None:
            # The latest bar's snapshot is cached after its first request (tens of microseconds):
            # not worth a thread hop.
            snapshot = self.market.snapshot(request.symbol, None)
            cached = self.views.get(view_key(request.symbol, snapshot))
            if cached is None:
                cached = await anyio.to_thread.run_sync(self.market_view, request.symbol, models, snapshot)
            view = cached
        else:
            # Arbitrary times are mostly new bars: features and regime cost a millisecond or more.
            snapshot, view = await anyio.to_thread.run_sync(
                self._as_of, request.symbol, models, request.timestamp
            )
        weights = {
            "bull_specialist": view.regime.bull,
            "bear_specialist": view.regime.bear,
            "sideways_specialist": view.regime.sideways,
        }
        strategy = request.strategy_override or max(SPECIALISTS, key=lambda name: weights[name])
        notes: list[str] = []
        model = self._model_for(models, strategy, notes)
        row = model.row(snapshot.values)
        digest = feature_hash(row)
        probabilities = view.calls.get(model.identity)
        if probabilities is None:
            probabilities = view.calls[model.identity] = model.probabilities(row)
        best = int(probabilities.argmax())
        action = ACTIONS.get(model.classes[best], "HOLD")
        confidence = float(probabilities[best])

        account = await self._account(request, principal)
        quantity = recommended_quantity(
            trades=action != "HOLD",
            equity=account.equity,
            price=view.price,
            volatility=view.volatility,
            confidence=confidence,
            entropy=view.regime.entropy,
            policy=self.sizing,
        )
        if action != "HOLD" and quantity == 0:
            notes.append(
                f"{action} sized to 0: below one lot ({self.sizing.lot_step}) or no volatility estimate"
            )
        signed = quantity if action == "BUY" else -quantity if action == "SELL" else Decimal(0)
        trade = ProposedTrade(
            request.symbol,
            self.sectors.get(request.symbol),
            signed,
            _decimal(view.price),
            self.sizing.lot_step,
        )
        if request.risk_check:
            risk = validate(trade, account, self.limits, notes)
        else:
            risk = RiskValidation(True, (*notes, "risk checks skipped (risk_check=false)"), {})
        explanation = None
        if request.explain:
            explanation = await anyio.to_thread.run_sync(model.explain, row, best)
        decision = Decision(
            decision_id=new_decision_id(),
            symbol=request.symbol,
            action=action,
            confidence=confidence,
            quantity=quantity,
            regime=view.regime,
            strategy_weights=weights,
            strategy=strategy,
            model=model,
            risk=risk,
            decided_at=self.clock(),
            data_as_of=snapshot.data_as_of,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            feature_hash=digest,
            explanation=explanation,
        )
        if self.recorder is not None:
            self.recorder.record_decision(decision, principal, request.account)
        return decision

    def close(self) -> None:
        """Write the decisions still queued (shutdown)."""
        if self.recorder is not None:
            self.recorder.close()

    def _model_for(self, models: SymbolModels, strategy: str, notes: list[str]) -> DirectionModel:
        model = models.strategies.get(strategy)
        if model is not None:
            return model
        universal = models.universal
        if universal is None:
            raise ModelNotFound(
                f"{models.symbol} has neither a {strategy} nor a universal model",
                {"symbol": models.symbol, "strategy": strategy},
            )
        if strategy != UNIVERSAL:
            notes.append(f"{strategy} is not trained for {models.symbol}: fell back to the universal model")
        return universal

    async def _account(self, request: DecisionRequest, principal: Principal) -> AccountState:
        if request.account is None:
            return AccountState("paper", self.paper_equity, self.paper_equity, Decimal(0))
        remembered = self.accounts.cached_state(request.account, principal)
        if remembered is not None:
            return remembered
        return await anyio.to_thread.run_sync(self.accounts.state, request.account, principal)


_ID_BYTES = 16
_IDS_PER_READ = 256
_spare_ids: deque[str] = deque()


def new_decision_id() -> str:
    """128 random bits in hex, as ``uuid4().hex`` but read from the OS 256 ids at a time: one
    ``getrandom`` call per decision took ~4 % of a decision's time. ``deque`` pops are atomic."""
    try:
        return _spare_ids.popleft()
    except IndexError:
        block = os.urandom(_ID_BYTES * _IDS_PER_READ).hex()
        width = _ID_BYTES * 2
        _spare_ids.extend(block[start : start + width] for start in range(width, len(block), width))
        return block[:width]


def view_key(symbol: str, snapshot: Snapshot) -> ViewKey:
    """The bar, and its feature values: a corrected bar changes them, so its view is not reused."""
    return (symbol, snapshot.data_as_of, hash(tuple(snapshot.values.values())))


def _decimal(price: float) -> Decimal:
    return Decimal(repr(price))


def decision_payload(decision: Decision) -> dict[str, Any]:
    """The response body of ``POST /api/v1/predict``."""
    payload: dict[str, Any] = {
        "decision_id": decision.decision_id,
        "symbol": decision.symbol,
        "action": decision.action,
        "confidence": decision.confidence,
        "recommended_quantity": float(decision.quantity),
        "regime_probabilities": decision.regime.as_dict(),
        "strategy_weights": decision.strategy_weights,
        "risk_validation": decision.risk.as_dict(),
        "metadata": {
            "model_version": decision.model.identity,
            "latency_ms": round(decision.latency_ms, 3),
            "timestamp": decision.decided_at.isoformat(),
            "data_as_of": decision.data_as_of.isoformat(),
            "feature_hash": decision.feature_hash,
        },
    }
    if decision.explanation is not None:
        payload["explanation"] = decision.explanation.as_dict()
    return payload
