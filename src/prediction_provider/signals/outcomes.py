"""Was the target reached before the stop? The scan behind the oracle and the models' labels.

Bars are scanned in time order from the bar after the entry bar to the end of
the horizon; within one bar the stop is checked before the target, because a
bar's path between its open and close is unknown and the cautious reading is
that the stop came first. Buy: LOW <= SL stops it, else CLOSE >= TP reaches
the target; sell: HIGH >= SL stops it, else CLOSE <= TP. Neither within the
horizon counts as not reached. The target is judged on the close, not on the
high or low, so a wick through the target alone does not count.
"""

from __future__ import annotations

import numpy as np

from prediction_provider.signals.bars import PriceBars
from prediction_provider.signals.horizon import Horizon
from prediction_provider.signals.levels import Direction, Levels


def target_first(bars: PriceBars, horizon: Horizon, levels: Levels) -> bool:
    start, stop = horizon.entry + 1, horizon.last + 1
    if start >= stop:
        return False
    closes = bars.close[start:stop]
    if levels.direction is Direction.BUY:
        reached = closes >= levels.take_profit
    else:
        reached = closes <= levels.take_profit
    first_target = int(np.argmax(reached))
    if not reached[first_target]:
        return False
    # Only bars up to and including the target's bar matter; a stop in that same bar wins.
    end = start + first_target + 1
    if levels.direction is Direction.BUY:
        stopped = bars.low[start:end] <= levels.stop_loss
    else:
        stopped = bars.high[start:end] >= levels.stop_loss
    return not bool(stopped.any())
