"""Follow the alliance contracts' events into the settlement store.

- **Batched**: one ``eth_getLogs`` per block range over all four contracts (registry, points,
  settlement, anchor), the range adapting to how many logs come back; block timestamps fetched in
  JSON-RPC batches, only for blocks that hold events.
- **Resumable**: each range commits its events together with the cursor (last block and its hash), so a
  run that stops anywhere resumes at the next block and loses nothing.
- **Idempotent**: a row is unique on (tx hash, log index) and inserted with ON CONFLICT DO NOTHING, so
  indexing a range twice (two runs, a crash between commit and cursor, two indexers) leaves the same rows.
- **Reorg-aware**: before a run the cursor's block hash is compared with the chain's; when the chain
  changed underneath, rows after the last block that still matches are dropped and read again.
  ``confirmations`` keeps the indexer that many blocks behind the head on chains that reorganise.

Decoding is done here rather than through web3's contract objects: it is what makes 100,000 events
take seconds (web3's per-log event processing runs at a few thousand logs a second on its own).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from contracts.artifacts import load_artifact
from contracts.client import Alliance

from .store import ChainEvent, IndexedBlock, IndexerState, Store

INDEXED_CONTRACTS = ("AllianceRegistry", "Settlement", "AlliancePoints", "ConsentAnchor")

checksum = lru_cache(maxsize=1 << 17)(to_checksum_address)


class IndexerError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class EventSpec:
    contract: str
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type) in topic order
    data: tuple[tuple[str, str], ...]  # (name, type) in data order

    @property
    def data_types(self) -> list[str]:
        return [t for _, t in self.data]


def _signature(event: dict) -> str:
    return f"{event['name']}({','.join(_canonical_type(i) for i in event['inputs'])})"


def _canonical_type(item: dict) -> str:
    t = item["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_canonical_type(c) for c in item["components"]) + ")" + t[5:]
    return t


@lru_cache(maxsize=None)
def event_specs(contract: str) -> dict[str, EventSpec]:
    """topic0 (0x-hex) -> spec, for every event in the contract's ABI (inherited ones included)."""
    specs = {}
    for item in load_artifact(contract)["abi"]:
        if item["type"] != "event" or item.get("anonymous"):
            continue
        topic = "0x" + keccak(text=_signature(item)).hex()
        specs[topic] = EventSpec(contract, item["name"],
                                 tuple((i["name"], i["type"]) for i in item["inputs"] if i["indexed"]),
                                 tuple((i["name"], i["type"]) for i in item["inputs"] if not i["indexed"]))
    return specs


def _hex(value: Any) -> str:
    """0x-hex from whatever a provider returns (str, bytes, HexBytes)."""
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()


def _int(value: Any) -> int:
    return value if isinstance(value, int) else int(_hex(value), 16)


def _topic_value(typ: str, topic: str) -> Any:
    if typ == "address":
        return checksum("0x" + topic[-40:])
    if typ.startswith("uint"):
        return int(topic, 16)
    if typ.startswith("int"):
        v = int(topic, 16)
        return v - (1 << 256) if v >> 255 else v
    if typ == "bool":
        return int(topic, 16) != 0
    return topic[2:]  # bytes32, and hashes of indexed dynamic types


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)  # exact in JSON whatever its size
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return checksum(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


#: event name -> (brand arg, account arg, counterparty arg, ref arg, nonce arg, amount arg, epoch arg)
COLUMNS: dict[str, tuple[str | None, ...]] = {
    "Issued": ("brand", "to", None, "ref", None, "amount", None),
    "Redeemed": ("brand", "owner", None, None, "nonce", "amount", "epoch"),
    "Refunded": ("brand", "owner", None, None, "nonce", "amount", "epoch"),
    "AuthorizationCancelled": ("brand", "owner", None, None, "nonce", None, None),
    "Transfer": (None, "from", "to", None, None, "value", None),
    "BrandSettled": ("brand", None, None, None, None, "netValue", "epoch"),
    "EpochClosed": (None, None, None, None, None, "pool", "epoch"),
    "CollateralDeposited": ("brand", None, None, None, None, "amount", None),
    "CollateralWithdrawn": ("brand", None, None, None, None, "amount", None),
    "CreditLimitSet": ("brand", None, None, None, None, "limit", None),
    "BrandAdmitted": ("brand", None, None, None, None, "rate", None),
    "BrandSuspended": ("brand", None, None, None, None, None, None),
    "BrandReinstated": ("brand", None, None, None, None, None, None),
    "BrandRotated": ("account", "previous", None, None, None, None, None),
    "RateScheduled": ("brand", None, None, None, None, "rate", None),
    "Anchored": ("brand", None, None, "root", None, "size", "period"),
}

_INT64 = (1 << 63) - 1


def decode_log(log: dict, spec: EventSpec) -> dict[str, Any]:
    topics = [_hex(t) for t in log["topics"]]
    args: dict[str, Any] = {}
    for (name, typ), topic in zip(spec.indexed, topics[1:]):
        args[name] = _topic_value(typ, topic)
    if spec.data:
        data = _hex(log["data"])
        if len(spec.data) == 1 and spec.data[0][1] == "uint256":
            args[spec.data[0][0]] = int(data, 16)
        else:
            for (name, _), value in zip(spec.data, abi_decode(spec.data_types, bytes.fromhex(data[2:]))):
                args[name] = value
    return args


ROW_FIELDS = ("block_number", "block_time", "tx_hash", "log_index", "contract", "name", "brand", "account", "counterparty",
              "ref", "nonce", "amount", "epoch", "args")


def to_row(log: dict, spec: EventSpec, block_time: int) -> tuple:
    """One log as a tuple in ROW_FIELDS order."""
    topics = log["topics"]
    block_number, tx_hash, log_index = _int(log["blockNumber"]), _hex(log["transactionHash"]), _int(log["logIndex"])
    name = spec.name
    # The two events that make up nearly all the volume, decoded without the general machinery.
    if name == "Transfer" and spec.contract == "AlliancePoints" and isinstance(topics[1], str):
        frm, to, value = checksum("0x" + topics[1][-40:]), checksum("0x" + topics[2][-40:]), int(log["data"], 16)
        return (block_number, block_time, tx_hash, log_index, spec.contract, name, None, frm, to, None, None,
                value if value <= _INT64 else None, None, f'{{"from":"{frm}","to":"{to}","value":"{value}"}}')
    if name == "Issued" and isinstance(topics[1], str):
        brand, to, ref = checksum("0x" + topics[1][-40:]), checksum("0x" + topics[2][-40:]), topics[3][2:]
        data = _hex(log["data"])
        amount, version = int(data[2:66], 16), int(data[66:130], 16)  # (amount, rateVersion)
        return (block_number, block_time, tx_hash, log_index, spec.contract, name, brand, to, None, ref, None,
                amount if amount <= _INT64 else None, None,
                f'{{"brand":"{brand}","to":"{to}","ref":"0x{ref}","amount":"{amount}","rateVersion":{version}}}')
    args = decode_log(log, spec)
    brand, account, counterparty, ref, nonce, amount, epoch = COLUMNS.get(name, (None,) * 7)
    amount_value = args.get(amount) if amount else None
    if amount_value is not None and not -_INT64 <= amount_value <= _INT64:
        amount_value = None  # exact value stays in args
    ref_value = args.get(ref) if ref else None
    return (block_number, block_time, tx_hash, log_index, spec.contract, name,
            args.get(brand) if brand else None, args.get(account) if account else None,
            args.get(counterparty) if counterparty else None,
            ref_value.hex() if isinstance(ref_value, bytes) else ref_value,
            str(args[nonce]) if nonce else None, amount_value, args.get(epoch) if epoch else None,
            json.dumps({k: _plain(v) for k, v in args.items()}, separators=(",", ":")))


# ---------------------------------------------------------------------------------------- JSON-RPC


class Rpc:
    """Raw JSON-RPC through the web3 provider (no result formatting), with batches where the
    provider supports them."""

    def __init__(self, w3):
        self.w3 = w3
        self.provider = w3.provider
        # The embedded provider takes web3's formatted requests only; JSON-RPC nodes take raw ones.
        self.raw = type(self.provider).__name__ in ("HTTPProvider", "IPCProvider", "LegacyWebSocketProvider")
        self._batch = hasattr(self.provider, "make_batch_request") and type(self.provider).__name__ == "HTTPProvider"

    def call(self, method: str, params: list) -> Any:
        if self.raw and hasattr(self.provider, "endpoint_uri"):
            return self._post(method, params)
        response = self.provider.make_request(method, params)
        if "error" in response and response["error"]:
            raise IndexerError(f"{method}: {response['error']}")
        return response["result"]

    def _post(self, method: str, params: list) -> Any:
        import requests

        if not hasattr(self, "_session"):
            self._session = requests.Session()
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        r = self._session.post(str(self.provider.endpoint_uri), data=body, headers={"Content-Type": "application/json"}, timeout=120)
        r.raise_for_status()
        response = json.loads(r.content)
        if response.get("error"):
            raise IndexerError(f"{method}: {response['error']}")
        return response["result"]

    def batch(self, calls: list[tuple[str, list]]) -> list[Any]:
        if not self._batch:
            return [self.call(m, p) for m, p in calls]
        out = []
        for start in range(0, len(calls), 500):
            responses = self.provider.make_batch_request(calls[start:start + 500])
            if isinstance(responses, dict):  # the node refused the whole batch
                raise IndexerError(f"batch request failed: {responses.get('error')}")
            for r in sorted(responses, key=lambda r: r["id"]):
                if r.get("error"):
                    raise IndexerError(f"batch item failed: {r['error']}")
                out.append(r["result"])
        return out

    def block_number(self) -> int:
        if not self.raw:
            return self.w3.eth.block_number
        return _int(self.call("eth_blockNumber", []))

    def blocks(self, numbers: Iterable[int]) -> dict[int, tuple[str, int]]:
        """number -> (hash, timestamp)."""
        numbers = sorted(set(numbers))
        if not self.raw:
            return {n: (_hex(b["hash"]), int(b["timestamp"])) for n in numbers for b in [self.w3.eth.get_block(n)]}
        results = self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        return {n: (_hex(b["hash"]), _int(b["timestamp"])) for n, b in zip(numbers, results)}

    def logs(self, addresses: list[str], from_block: int, to_block: int) -> list[dict]:
        if not self.raw:
            return list(self.w3.eth.get_logs({"fromBlock": from_block, "toBlock": to_block, "address": addresses}))
        return self.call("eth_getLogs", [{"fromBlock": hex(from_block), "toBlock": hex(to_block), "address": addresses}])


# ---------------------------------------------------------------------------------------- indexer


@dataclass
class IndexRun:
    from_block: int
    to_block: int
    events: int  # logs read and stored (or already present)
    ranges: int
    seconds: float
    rewound_to: int | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"from_block": self.from_block, "to_block": self.to_block, "events": self.events, "ranges": self.ranges,
                "seconds": round(self.seconds, 3), "events_per_s": round(self.events_per_s, 1), "rewound_to": self.rewound_to}


class Indexer:
    """Reads one deployment's events into a Store."""

    TARGET_LOGS = 5_000  # logs per eth_getLogs call, roughly

    def __init__(self, alliance: Alliance, store: Store, *, confirmations: int = 0, chunk_blocks: int = 100,
                 reorg_depth: int = 64):
        self.alliance = alliance
        self.store = store
        self.rpc = Rpc(alliance.chain.w3)
        self.confirmations = confirmations
        self.chunk_blocks = chunk_blocks
        self.reorg_depth = reorg_depth
        self.specs: dict[str, dict[str, EventSpec]] = {}
        addresses = alliance.manifest.addresses
        for name in INDEXED_CONTRACTS:
            self.specs[addresses[name].lower()] = event_specs(name)
        self.addresses = [to_checksum_address(addresses[name]) for name in INDEXED_CONTRACTS]
        self.key = f"{alliance.chain.chain_id}:{addresses['AlliancePoints'].lower()}"
        self._insert = pg_insert if store.engine.dialect.name == "postgresql" else sqlite_insert
        mark = "?" if store.engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_events_sql = (f"INSERT INTO chain_events ({', '.join(ROW_FIELDS)}) VALUES ({', '.join([mark] * len(ROW_FIELDS))}) "
                                   "ON CONFLICT (tx_hash, log_index) DO NOTHING")

    # -- cursor

    def cursor(self, session: Session) -> IndexerState | None:
        return session.get(IndexerState, self.key)

    def last_block(self) -> int | None:
        with self.store.session() as session:
            state = self.cursor(session)
            return state.last_block if state else None

    def _check_reorg(self) -> int | None:
        """Rewind past blocks the chain no longer has; the block rewound to, or None."""
        with self.store.transaction() as session:
            state = self.cursor(session)
            if state is None:
                return None
            if self._hash_at(state.last_block) == state.last_hash:
                return None
            known = session.execute(select(IndexedBlock.number, IndexedBlock.hash).where(
                IndexedBlock.number < state.last_block).order_by(IndexedBlock.number.desc()).limit(self.reorg_depth)).all()
            good = self.alliance.manifest.deployed_block - 1
            if known:
                for number, block_hash in known:
                    if self._hash_at(number) == block_hash:
                        good = number
                        break
            session.execute(delete(ChainEvent).where(ChainEvent.block_number > good))
            session.execute(delete(IndexedBlock).where(IndexedBlock.number > good))
            if good < self.alliance.manifest.deployed_block:
                session.delete(state)
            else:
                state.last_block, state.last_hash = good, self.rpc.blocks([good])[good][0]
            return good

    def _hash_at(self, number: int) -> str | None:
        """The chain's hash of block ``number``; None when the chain is not that long (any more)."""
        if number > self.rpc.block_number():
            return None
        try:
            return self.rpc.blocks([number])[number][0]
        except Exception:  # block not found (a node that reorganised or was reverted)
            return None

    # -- run

    def run(self, to_block: int | None = None, progress: Callable[[int, int], None] | None = None) -> IndexRun:
        """Index from the cursor (or the deployment block) up to ``to_block`` (default: head minus
        confirmations). Safe to call any number of times.

        One thread reads ranges of logs from the node while this one decodes and stores the previous
        range, so the node's time and ours overlap."""
        started = time.perf_counter()
        rewound = self._check_reorg()
        head = self.rpc.block_number() - self.confirmations
        target = head if to_block is None else min(to_block, head)
        last = self.last_block()
        start = self.alliance.manifest.deployed_block if last is None else last + 1
        events = ranges = 0
        ready: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()
        reader = threading.Thread(target=self._read_ranges, args=(start, target, ready, stop), daemon=True)
        reader.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                logs, hi = item
                self._store(logs, hi)
                events += len(logs)
                ranges += 1
                if progress:
                    progress(hi, target)
        finally:
            stop.set()
            while reader.is_alive():
                try:
                    ready.get_nowait()
                except queue.Empty:
                    reader.join(0.05)
        return IndexRun(start, target, events, ranges, time.perf_counter() - started, rewound)

    def _read_ranges(self, start: int, target: int, out: queue.Queue, stop: threading.Event) -> None:
        """Producer: ranges sized to hold about TARGET_LOGS logs, judged from the density so far."""
        try:
            lo, chunk = start, self.chunk_blocks
            while lo <= target and not stop.is_set():
                hi = min(lo + chunk - 1, target)
                try:
                    logs = self.rpc.logs(self.addresses, lo, hi)
                except (IndexerError, ValueError) as exc:
                    if chunk == 1:
                        raise IndexerError(f"cannot read logs of block {lo}: {exc}") from exc
                    chunk = max(1, chunk // 4)  # the node limits results or response size: smaller ranges
                    continue
                out.put((logs, hi))
                span = hi - lo + 1
                lo = hi + 1
                density = len(logs) / span
                chunk = max(1, min(int(self.TARGET_LOGS / density) if density else chunk * 4, 1_000_000))
            out.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            out.put(exc)

    def _store(self, logs: list[dict], range_end: int) -> None:
        numbers = {_int(log["blockNumber"]) for log in logs} | {range_end}
        blocks = self.rpc.blocks(numbers)
        rows = []
        for log in logs:
            if log.get("removed"):
                continue
            spec = self.specs.get(_hex(log["address"]).lower(), {}).get(_hex(log["topics"][0]) if log["topics"] else "")
            if spec is None:
                continue  # an event of no contract ABI we know (cannot happen for our own contracts)
            rows.append(to_row(log, spec, blocks[_int(log["blockNumber"])][1]))
        with self.store.transaction() as session:
            if rows:
                conn = session.connection()
                conn.exec_driver_sql(self._insert_events_sql, rows)
            block_rows = [{"number": n, "hash": h, "timestamp": t} for n, (h, t) in blocks.items()]
            session.connection().execute(self._insert(IndexedBlock).on_conflict_do_nothing(index_elements=["number"]), block_rows)
            # One statement, and only ever forward: two indexers on one store (two runs of `settle
            # index`, or `follow` beside one) neither collide creating the cursor nor move it back.
            cursor = self._insert(IndexerState).values(key=self.key, last_block=range_end, last_hash=blocks[range_end][0])
            session.execute(cursor.on_conflict_do_update(
                index_elements=["key"], set_={"last_block": cursor.excluded.last_block, "last_hash": cursor.excluded.last_hash},
                where=IndexerState.last_block < cursor.excluded.last_block))

    def follow(self, interval_s: float = 2.0, stop: Callable[[], bool] = lambda: False) -> None:
        """Index forever (until ``stop()``), every ``interval_s`` seconds."""
        while not stop():
            self.run()
            time.sleep(interval_s)


# ---------------------------------------------------------------------------------------- reads


def event_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ChainEvent)) or 0


def events(session: Session, *names: str, brand: str | None = None, until: tuple[int, int] | None = None) -> list[ChainEvent]:
    """Events of the given names (all when none), in chain order, optionally up to (block, log index)."""
    query = select(ChainEvent)
    if names:
        query = query.where(ChainEvent.name.in_(names))
    if brand is not None:
        query = query.where(ChainEvent.brand == brand)
    if until is not None:
        b, i = until
        query = query.where((ChainEvent.block_number < b) | ((ChainEvent.block_number == b) & (ChainEvent.log_index <= i)))
    return list(session.scalars(query.order_by(ChainEvent.block_number, ChainEvent.log_index)))


@lru_cache(maxsize=None)
def _int_args(contract: str, name: str) -> frozenset[str]:
    for spec in event_specs(contract).values():
        if spec.name == name:
            return frozenset(n for n, t in spec.indexed + spec.data if t.startswith(("uint", "int")))
    return frozenset()


def args_of(event: ChainEvent) -> dict[str, Any]:
    """The event's arguments with integers back as ints (bytes stay 0x-hex, addresses checksummed)."""
    ints = _int_args(event.contract, event.name)
    return {k: int(v) if k in ints else v for k, v in json.loads(event.args).items()}
