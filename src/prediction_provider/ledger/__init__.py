"""Where money lives: accounts, an append-only hash-chained journal of transfers (single-phase,
and two-phase holds that are posted, voided or expired exactly once), and the checks that
recompute every balance from the journal."""
