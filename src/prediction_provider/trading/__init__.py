"""Trading decisions on top of model outputs: regimes, specialists, sizing, risk checks, accounts."""
