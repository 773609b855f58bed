"""Entry/exit signals for strategy clients: ``/api/v1/predict/entry``, ``/exit`` and ``/model/info``.

A signal says whether a trade's take-profit is reached before its stop-loss
within the trading week. Three predictors answer it: ``binary_ideal_oracle``
reads the future bars (explicitly look-ahead, for backtests), ``lightgbm`` and
``mc_dropout`` are models trained by the demo on the oracle's answers, from
point-in-time features only. More can be plugged in through the
``prediction_provider.predictors`` entry point group.
"""
