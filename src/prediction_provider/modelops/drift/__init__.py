"""Drift monitoring (design §3.9): a reference profile per model version, live rows binned on its
fixed edges into mergeable counters, and PSI / Jensen-Shannon / binned KS / Wasserstein / chi² of
windows of those counters against the reference."""
