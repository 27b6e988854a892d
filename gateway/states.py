"""The gateway's vocabulary, defined once: order statuses, callback verdicts, event statuses.

The schema's CHECK constraints, the CLI's choices and the money rules all read these tuples.
"""

# What an order can be; `review` is a flag beside the status, never a status.
ORDER_STATUSES = ("pending", "declined", "paid", "refunded", "chargeback")
UNPAID = ("pending", "declined")
REVERSALS = ("refunded", "chargeback")

# Verdicts of a callback that went through cleanly (the journal's partial index skips them).
CLEAN_VERDICTS = ("applied", "duplicate", "ignored")
# Verdicts of a verified callback that needs a person or waits: still answered 200.
ATTENTION_VERDICTS = ("held", "review", "replay")
# Verdicts of a callback refused before it could touch an order: answered 403.
REFUSED_VERDICTS = ("forbidden_ip", "malformed", "bad_sign")
VERDICTS = CLEAN_VERDICTS + ATTENTION_VERDICTS + REFUSED_VERDICTS

EVENT_STATUSES = ("pending", "delivered", "dead")


def sql_list(values):
    """A tuple of our own words as an SQL list literal: ('a', 'b')."""
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"
