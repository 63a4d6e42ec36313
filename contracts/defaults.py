"""Alliance parameters used when a deployment does not set its own (kept light: the CLI imports it)."""

CONTRACTS_VERSION = "2"  # the alliance contracts' version: their EIP-712 domain version and the manifest's
VALUE_PER_POINT = 10_000  # settlement-token units per AP: 1 AP = 0.01 of a 6-decimal settlement dollar
RATE_NOTICE_S = 7 * 24 * 3600  # a new brand rate takes effect a week after it is published
ADMIN_DELAY_S = 3 * 24 * 3600  # a transfer of the admin role waits three days before it can be accepted
MIN_EPOCH_S = 3600  # no epoch closes within an hour of opening
EPOCH_S = 24 * 3600  # after a day open, anyone may close an epoch (the settler role may close earlier)
REFUND_WINDOW_S = 30 * 24 * 3600  # a redemption may be refunded for 30 days
EMBEDDED = "embedded"  # the chain URL of the in-process chain
