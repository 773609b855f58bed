"""Market data and the features computed from OHLCV bars.

``feeders`` yields bars from pluggable sources, ``pipeline`` declares the
features the models are trained on, and ``point_in_time`` serves them as of a
time from the bars known then, cached.
"""
