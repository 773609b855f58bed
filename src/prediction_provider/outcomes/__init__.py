"""Realized outcomes: per-forecast scoring against what the market then did, and the leaderboard."""
