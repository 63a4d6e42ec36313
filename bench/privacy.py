"""Benchmark of the privacy primitives; prints one JSON object.

Run from the repository root:  .venv/bin/python bench/privacy.py

Keys (targets in brackets):
  pseudonymise_per_s                   keyed hash of normalised identifiers  [>= 200,000]
  normalise_and_pseudonymise_per_s     the same from raw phone/e-mail input  (no target)
  vault_fields_per_s                   encrypt+decrypt pairs                 [>= 20,000]
  merkle_root_1m_s                     root of 1,000,000 leaves              [<= 5 s]
  proof_verify_us                      one inclusion proof, 1M-leaf tree     [<= 50 us]
  receipts_per_s                       sign+verify pairs, one thread         [>= 5,000]
  receipts_per_s_all_cores             the same, one thread per core         (throughput of a gateway)
  receipts_jws_per_s                   the same for the receipts a gateway issues now: Kantara CR
                                       v1.1 claims as a compact JWS, one thread (no target)
  rekey_identifiers_per_s              pepper rotation: identifiers re-keyed to the new pepper from the
                                       members' encrypted personal data (a gateway on SQLite, 10,000
                                       members with a phone and an e-mail)   [>= 5,000]
  kek_rotation_s_100k                  re-wrap 100,000 data keys in the local key store under a new
                                       KEK and destroy the old one           [<= 10 s]
Each figure is the best of a few repeats, so a busy machine shows up as noise
rather than as a systematic bias; ``load_avg_1m`` records how busy it was.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# This file is named privacy.py: drop bench/ from the path so that
# ``import privacy`` finds the package, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from privacy.keys import SigningKey  # noqa: E402
from privacy.merkle import MerkleTree, merkle_root, verify_inclusion  # noqa: E402
from privacy.pseudonyms import Pseudonymiser  # noqa: E402
from privacy.receipts import ConsentReceipt, policy_digest, sign_receipt, verify_receipt  # noqa: E402
from privacy.vault import KeyEncryptionKey, Vault  # noqa: E402


def best_seconds(fn: Callable[[], None], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_pseudonyms(rng: random.Random) -> tuple[float, float]:
    p = Pseudonymiser({1: os.urandom(32), 2: os.urandom(32)}, current_version=2, default_region="CN")
    n = 200_000
    normalised = [f"+86138{rng.randrange(10**8):08d}" for _ in range(n // 2)]
    normalised += [f"member{rng.randrange(10**9)}@example.com" for _ in range(n // 2)]
    kinds = ["phone"] * (n // 2) + ["email"] * (n // 2)
    pairs = list(zip(kinds, normalised, strict=True))
    hash_fn = p.pseudonym_of_normalised

    def run_hash() -> None:
        for kind, value in pairs:
            hash_fn(kind, value)

    hashed = n / best_seconds(run_hash)

    m = 20_000
    raw = [("phone", f"138 {rng.randrange(10**4):04d} {rng.randrange(10**4):04d}") for _ in range(m // 2)]
    raw += [("email", f"  Member{rng.randrange(10**9)}@Example.COM ") for _ in range(m // 2)]

    def run_full() -> None:
        for kind, value in raw:
            p.pseudonym(kind, value)

    full = m / best_seconds(run_full)
    return hashed, full


def bench_vault(rng: random.Random) -> float:
    vault = Vault({"k1": KeyEncryptionKey.generate("k1")}, "k1")
    members = [f"v1.{rng.randrange(16**64):064x}" for _ in range(1_000)]
    keys = {m: vault.new_data_key(m) for m in members}
    fields = {
        "name": "Alice Example",
        "phone": "+8613812345678",
        "email": "alice@example.com",
        "birthday": "1990-04-01",
        "address": "1 Example Road, Example City",
    }
    pairs = 0

    def run() -> None:
        nonlocal pairs
        pairs = 0
        for m in members:
            wrapped = keys[m]
            for name, value in fields.items():
                ct = vault.encrypt_field(wrapped, m, name, value)
                vault.decrypt_field(wrapped, m, name, ct)
                pairs += 1

    vault.clear_cache()  # first round includes one unwrap per member, as in a real batch
    seconds = best_seconds(run)
    return pairs / seconds


def bench_merkle(rng: random.Random) -> tuple[float, float]:
    n = 1_000_000
    leaves = [rng.randbytes(64) for _ in range(n)]
    root_seconds = best_seconds(lambda: merkle_root(leaves), repeats=2)
    tree = MerkleTree(leaves)
    root = tree.root()
    picks = [rng.randrange(n) for _ in range(2_000)]
    cases = [(leaves[i], i, tree.inclusion_proof(i)) for i in picks]

    def run() -> None:
        for leaf, index, proof in cases:
            if not verify_inclusion(leaf, index, n, proof, root):
                raise AssertionError("benchmark proof failed to verify")

    verify_us = best_seconds(run) / len(cases) * 1e6
    return root_seconds, verify_us


def bench_receipts(threads: int = 1, jws: bool = False) -> float:
    from privacy.receipts import Controller, sign_kantara

    key = SigningKey.generate()
    controller = Controller("Brand A", "privacy@brand-a.example", "https://brand-a.example", "https://brand-a.example/privacy")
    public = key.public_key
    digest = policy_digest("Privacy policy v3: we process your points and purchases to run the programme.")
    receipts = [
        ConsentReceipt.create(
            pseudonym=f"v1.{i:064x}",
            purpose="marketing",
            state="granted",
            policy_version="3",
            policy_sha256=digest,
            lawful_basis="consent",
            jurisdiction="CN",
            channel="app",
            issuer="brand-a",
            key_id=key.key_id,
        )
        for i in range(2_000)
    ]

    def work(chunk) -> None:
        for receipt in chunk:
            verify_receipt(sign_kantara(receipt, controller, key) if jws else sign_receipt(receipt, key), public)

    def run() -> None:
        # cryptography releases the GIL while signing and verifying, so the gateway's request threads
        # sign receipts on every core; one thread per core measures that throughput.
        workers = [threading.Thread(target=work, args=(receipts[i::threads],)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return len(receipts) / best_seconds(run)


def bench_kek_rotation(count: int = 100_000) -> float:
    """One rotation of a LocalKeyStore holding `count` data keys (seconds; one run: it is long)."""
    import tempfile

    from privacy.keystore import LocalKeyStore

    with tempfile.TemporaryDirectory() as tmp:
        store = LocalKeyStore(Path(tmp))
        vault = Vault(*store.keks(), reload=store.keks)
        store.put_many([(f"member-{i}", vault.new_data_key(f"member-{i}")) for i in range(count)])
        start = time.perf_counter()
        rotation = store.rotate(vault)
        seconds = time.perf_counter() - start
        assert rotation is not None and rotation.rewrapped == count and store.keks()[1] == rotation.new_kek_id
        return seconds


def bench_rekey(members: int = 10_000) -> float:
    """Identifiers re-keyed per second after a pepper rotation (one run)."""
    import tempfile

    from gateway.db import transaction
    from gateway.runtime import build_gateway
    from gateway.services import members as member_service
    from gateway.services import peppers
    from gateway.settings import GatewaySettings

    with tempfile.TemporaryDirectory() as tmp:
        gw = build_gateway(GatewaySettings(brand_id="rekey-bench", database_url=f"sqlite:///{tmp}/gw.sqlite", keys_dir=Path(tmp) / "keys"))
        now = gw.now()
        refs = [f"member-{i:06d}" for i in range(members)]
        ids = [{"phone": f"+8613{i:09d}", "email": f"m{i}@bench.example"} for i in range(members)]
        # Sealed in bulk (one key-store transaction), as a migration would: the bench times the re-keying.
        keys = [(ref, gw.vault.new_data_key(ref)) for ref in refs]
        gw.keystore.put_many(keys)
        with transaction(gw.sessions) as session:
            for (ref, wrapped), identifiers in zip(keys, ids, strict=True):
                pii = {kind: gw.pseudonymiser.normalise(kind, value) for kind, value in identifiers.items()} | {"name": "Bench"}
                member_service.create(session, gw, member_ref=ref, pseudonyms=member_service.pseudonymise(gw, identifiers),
                                      ciphertexts=gw.vault.encrypt_fields(wrapped, ref, pii), birth_month=None, passphrase_hash=None,
                                      jurisdiction=None, channel="api", identity_proof="staff", now=now)
        peppers.rotate(gw, "bench")
        start = time.perf_counter()
        done = peppers.rekey(gw)
        seconds = time.perf_counter() - start
        assert done.rekeyed == 2 * members and done.left == 0, done
        gw.engine.dispose()
        return done.rekeyed / seconds


def main() -> None:
    rng = random.Random(20250101)
    hashed, full = bench_pseudonyms(rng)
    vault = bench_vault(rng)
    root_s, verify_us = bench_merkle(rng)
    receipts = bench_receipts()
    receipts_cores = bench_receipts(threads=os.cpu_count() or 1)
    receipts_jws = bench_receipts(jws=True)
    rotation_s = bench_kek_rotation()
    rekey_per_s = bench_rekey()
    print(
        json.dumps(
            {
                "pseudonymise_per_s": round(hashed),
                "normalise_and_pseudonymise_per_s": round(full),
                "vault_fields_per_s": round(vault),
                "merkle_root_1m_s": round(root_s, 3),
                "proof_verify_us": round(verify_us, 2),
                "receipts_per_s": round(receipts),  # one thread
                "receipts_per_s_all_cores": round(receipts_cores),
                "receipts_jws_per_s": round(receipts_jws),
                "kek_rotation_s_100k": round(rotation_s, 2),
                "rekey_identifiers_per_s": round(rekey_per_s),
                "cores": os.cpu_count(),
                # Context for the figures: on a shared 2-core machine other jobs move them.
                "load_avg_1m": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
