"""Roles and what each may do. Routes require permissions, never role names in ``if`` chains."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    PROVIDER = "provider"
    CLIENT = "client"
    EVALUATOR = "evaluator"
    OPERATOR = "operator"
    GUEST = "guest"


class Permission(StrEnum):
    PREDICT = "predict"  # request predictions
    READ_MODELS = "read_models"  # the public catalogue
    MANAGE_USERS = "manage_users"
    READ_LOGS = "read_logs"  # audit log, request logs
    READ_USAGE = "read_usage"  # anyone's usage
    READ_METRICS = "read_metrics"
    MANAGE_MODELS = "manage_models"  # load/unload, own models and pricing
    EVALUATE = "evaluate"  # claim and score prediction requests
    BILLING_OVERSIGHT = "billing_oversight"  # read the ledger, anyone's invoices; finalize invoices
    READ_BILLING_SUMMARY = "read_billing_summary"  # totals, not anyone's individual rows
    MANAGE_WALLETS = "manage_wallets"  # deposit to and withdraw from anyone's wallet (admins only)
    READ_ALL_JOBS = "read_all_jobs"  # see every user's prediction jobs
    MANAGE_ALL_JOBS = "manage_all_jobs"  # change or cancel anyone's jobs
    # Open and edit one's own trading accounts and positions (anyone's: MANAGE_USERS too).
    MANAGE_TRADING_ACCOUNTS = "manage_trading_accounts"
    # Set the signal predictor's noise (POST /api/v1/predict/set_noise): it changes every caller's answers.
    TUNE_SIGNAL_NOISE = "tune_signal_noise"
    RUN_SCORING = "run_scoring"  # run a scoring pass or a common round now (admins, operators)
    # Experiments, ensembles, resilience, breaker controls, drift references and alias moves.
    OPERATE_MODELS = "operate_models"
    READ_RECORDS = "read_records"  # experiment prediction records (they may hold features)
    INJECT_FAULTS = "inject_faults"  # chaos rules (admins only, and only with PP_CHAOS=1)


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.PROVIDER: frozenset(
        {
            Permission.READ_MODELS,
            Permission.MANAGE_MODELS,
            Permission.PREDICT,
            Permission.MANAGE_TRADING_ACCOUNTS,
        }
    ),
    Role.CLIENT: frozenset({Permission.READ_MODELS, Permission.PREDICT, Permission.MANAGE_TRADING_ACCOUNTS}),
    Role.EVALUATOR: frozenset({Permission.READ_MODELS, Permission.EVALUATE}),
    Role.OPERATOR: frozenset(
        {
            Permission.READ_MODELS,
            Permission.READ_LOGS,
            Permission.READ_USAGE,
            Permission.READ_METRICS,
            Permission.READ_ALL_JOBS,
            Permission.TUNE_SIGNAL_NOISE,
            Permission.READ_BILLING_SUMMARY,
            Permission.RUN_SCORING,
            Permission.OPERATE_MODELS,
            Permission.READ_RECORDS,
        }
    ),
    Role.GUEST: frozenset({Permission.READ_MODELS}),
}


def allows(role: Role | str, permission: Permission) -> bool:
    return permission in PERMISSIONS.get(Role(role), frozenset())
