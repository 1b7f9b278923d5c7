"""Billing: Stripe checkout for HD results (not built yet)."""
