"""The settlement service and the compliance audit: an event indexer (indexer, store), epoch derivation
and closing with proofs (epochs), ledger-to-chain reconciliation (reconcile), settlement reports
(reports), auditor verification (audit), the auditor console (console) and their CLI (cli).
simulate drives a synthetic alliance for benchmarks and tests."""
