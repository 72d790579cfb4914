"""Operators of the grade DAG: rule verifiers (verify), the model judge (judge), multiple choice to fill-in (mc), rollout generation (rollouts), pass@k tiers (tiers)."""
