"""Billing-side receiver of the gateway's events: credits the billing exactly once."""
