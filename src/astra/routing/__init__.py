"""Smart order routing on ``SMART-…`` markets: the plan (a pure function: books, fees and
balances in, child legs out) and, above it, its execution."""

from .plan import Leg, Plan, VenueInput, consolidated_mid, plan_order
from .router import DEFAULT_ROUNDS, DEFAULT_SLIPPAGE_BPS, SmartRouter

__all__ = [
    "DEFAULT_ROUNDS",
    "DEFAULT_SLIPPAGE_BPS",
    "Leg",
    "Plan",
    "SmartRouter",
    "VenueInput",
    "consolidated_mid",
    "plan_order",
]
