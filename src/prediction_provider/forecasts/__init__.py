"""Forecasts by symbol: multi-horizon forecast models, the service that answers them from market
data, and the record of every forecast served."""
