"""Alliance parameters used when a deployment does not set its own (kept light: the CLI imports it)."""

VALUE_PER_POINT = 10_000  # settlement-token units per AP: 1 AP = 0.01 of a 6-decimal settlement dollar
RATE_NOTICE_S = 7 * 24 * 3600  # a new brand rate takes effect a week after it is published
EMBEDDED = "embedded"  # the chain URL of the in-process chain
