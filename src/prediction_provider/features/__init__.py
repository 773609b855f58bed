"""Market data and the features computed from OHLCV bars."""
